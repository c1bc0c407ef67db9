# suite_dicom_folder.sh - the `folder` data source and the DICOM worker
# (sourced by run.sh: uses ok/bad/json_check, $BIN, $BUILD, $WORK, $ROOT, $PY).
#
# medfed-dicom-fixture makes 40 labelled CR files from PneumoniaMNIST plus its
# variants (MONOCHROME1, 16-bit rescaled, JPEG 2000, truncated, garbage,
# burned-in, RGB, unlabelled), and the suite adds a file that makes GDCM
# assert. Then:
#   - every file is decoded or skipped with the reason the manifest names, and
#     the worker crash costs that one file only;
#   - decoded images are, float for float, the IDX source's images;
#   - pydicom, as a reference decoder, gives the same pixels (uncompressed
#     files; JPEG 2000 too when pydicom can decode it here);
#   - medfed-client --check reports found / labelled / decoded / skipped;
#   - the canary PatientName / PatientID and the accession numbers appear in
#     no log line.

df_suite() {
    DF="$WORK/dicom-folder"
    DF_CANARY_NAME="ZZCANARY^FOLDERPATIENT"
    DF_CANARY_ID="ZZCANARYID77"
    mkdir -p "$DF"
    export MEDFED_DICOM_WORKER="$BIN/medfed-dicom-worker"

    t=dicom_fixture_variants
    if "$BIN/medfed-dicom-fixture" --images "$ROOT/data/pneumoniamnist/val-images-idx3-ubyte.gz" \
            --labels "$ROOT/data/pneumoniamnist/val-labels-idx1-ubyte.gz" --out "$DF/images" \
            --count 40 --start 100 --variants --canary-name "$DF_CANARY_NAME" \
            --canary-id "$DF_CANARY_ID" > "$DF/fixture.out" 2>&1 &&
       head -c 200 "$DF/images/img-00100.dcm" > "$DF/images/var-gdcm-assert.dcm"
    then ok $t; else bad $t "see $DF/fixture.out"; cat "$DF/fixture.out"; return; fi

    t=dicom_folder_decodes_or_skips_each_variant
    "$BUILD/tests/data_dump" "$DF/dump" source=folder path="$DF/images" \
        labels="$DF/images/labels.csv" val_fraction=0 log_level=debug > "$DF/dump.json" 2> "$DF/dump.log"
    if json_check "$DF/dump.json" 'rows[0]["train"] == 43 and rows[0]["val"] == 0 and rows[0]["found"] == 49 and rows[0]["decoded"] == 43 and rows[0]["labelled"] == 46 and rows[0]["skipped"] == {"burned_in_annotation": 1, "malformed": 2, "unsupported": 1, "worker_crashed": 1, "unlabelled": 1, "fetch_failed": 0}'
    then ok $t; else bad $t "see $DF/dump.log"; fi

    t=dicom_folder_equals_idx_and_pydicom
    if "$PY" - "$DF" "$ROOT/data/pneumoniamnist/val-images-idx3-ubyte.gz" > "$DF/compare.out" 2>&1 <<'PYEOF'
import gzip, json, os, sys
import numpy as np
import pydicom
d, idx = sys.argv[1], sys.argv[2]
man = json.load(open(d + "/images/manifest.json"))
raw = gzip.open(idx).read()
imgs = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
f32 = np.float32
ok = sorted(k for k in man if man[k]["expect"] == "ok")
x = np.fromfile(d + "/dump-train-x.f32", f32).reshape(-1, 28, 28)
y = np.fromfile(d + "/dump-train-y.i32", np.int32)
assert len(x) == len(ok), (len(x), len(ok))
# 1. the IDX source's floats, bit for bit (dataset_normalise_u8 in float32)
for i, k in enumerate(ok):
    ref = (imgs[man[k]["index"]].astype(f32) / f32(255) - f32(0.5)) / f32(0.5)
    assert np.array_equal(x[i], ref), k
    assert y[i] == man[k]["label"], k
# 2. pydicom decodes the same pixels: modality LUT, VOI window, MONOCHROME1
from pydicom.pixel_data_handlers.util import apply_modality_lut
checked, skipped = 0, []
for i, k in enumerate(ok):
    ds = pydicom.dcmread(os.path.join(d, "images", k))
    try:
        arr = ds.pixel_array
    except Exception as e:  # no handler for this transfer syntax here
        skipped.append("%s (%s)" % (k, type(e).__name__)); continue
    v = apply_modality_lut(arr, ds).astype(np.float64)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    v = (hi - v) / (hi - lo) if ds.PhotometricInterpretation == "MONOCHROME1" else (v - lo) / (hi - lo)
    ref = (np.clip(v, 0, 1).astype(f32) - f32(0.5)) / f32(0.5)
    assert np.array_equal(x[i], ref), k
    checked += 1
print("compared with pydicom %s: %d files; not decodable by pydicom here: %s" %
      (pydicom.__version__, checked, skipped or "none"))
assert checked >= len(ok) - 1
PYEOF
    then ok "$t ($(tail -1 "$DF/compare.out"))"; else bad $t "see $DF/compare.out"; cat "$DF/compare.out"; fi

    t=dicom_folder_client_check
    {
        echo "[client]"
        echo "site = site-dicom"
        echo "coordinator = tcp://127.0.0.1:1"
        echo "log_level = debug"
        echo
        echo "[data]"
        echo "source = folder"
        echo "path = $DF/images"
        echo "labels = $DF/images/labels.csv"
        echo "label_key = accession"
        echo "val_fraction = 0.2"
        echo "window = auto"
    } > "$DF/client.ini"
    # the coordinator is unreachable on purpose: only the data member counts here
    "$BIN/medfed-client" --config "$DF/client.ini" --check --json > "$DF/check.json" 2> "$DF/check.log"
    if json_check "$DF/check.json" '[d["ok"] and d["source"] == "folder" and d["found"] == 49 and d["decoded"] == 43 and d["train"] + d["val"] == 43 and d["val"] > 0 and d["size"] == [1, 28, 28] and d["skipped"]["worker_crashed"] == 1 and d["skipped"]["malformed"] == 2 for d in [rows[0]["data"]]][0]'
    then ok $t; else bad $t "see $DF/check.json $DF/check.log"; cat "$DF/check.json"; fi

    t=dicom_folder_logs_carry_no_identifier
    if grep -q "skipped: worker_crashed" "$DF/dump.log" &&
       ! grep -q -e "ZZCANARY" -e "ACC0000" -e "FOLDERPATIENT" -e "1\.2\.826\.0\.1\.3680043" \
            "$DF/dump.log" "$DF/check.log" "$DF/check.json"
    then ok $t; else bad $t "an identifier in $DF/dump.log or $DF/check.log"; fi
    unset MEDFED_DICOM_WORKER
}

df_suite
