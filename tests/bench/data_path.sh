#!/bin/sh
# The hospital data path (called by run.sh; runs alone too): adds "data_path"
# to OUT/bench.json (made if missing). Side by side in one run:
#   1. decode throughput: N labelled DICOM files (medfed-dicom-fixture, from
#      PneumoniaMNIST) through the `folder` source and its DICOM worker, vs the
#      same N images from IDX files with the `idx` source, alternately;
#      and a few 2048x2048 16-bit files (pydicom) resized to 28x28;
#   2. DICOMweb: a private Orthanc (as tests/integration/suite_dicomweb.sh
#      starts it) holding the N files, loaded through the `dicomweb` source
#      twice: fetched (WADO-RS), then from the tensor cache.
# Each load opens the source, loads both splits and closes it (bench_data.c).
# usage: data_path.sh BIN_DIR BUILD_DIR OUT_DIR
#   BENCH_DICOM_IMAGES (2000), BENCH_DICOM_LARGE (6), BENCH_DICOM_REPS (3)
set -eu
BIN=$1
BUILD=$2
OUT=$3
N=${BENCH_DICOM_IMAGES:-2000}
NL=${BENCH_DICOM_LARGE:-6}
REPS=${BENCH_DICOM_REPS:-3}
PY=/usr/bin/python3
ROOT=$(pwd)
mkdir -p "$OUT" "$BUILD/tests"
tstart=$(date +%s.%N)

# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE -O2 -I. tests/bench/bench_data.c "$BUILD/libmedfed.a" \
    -o "$BUILD/tests/bench_data" \
    $(pkg-config --libs libzmq libsodium libssl libcrypto msgpack inih zlib libcurl) -lm -lpthread
BD="$BUILD/tests/bench_data"
export MEDFED_DICOM_WORKER="$ROOT/$BIN/medfed-dicom-worker"
case $BIN in /*) MEDFED_DICOM_WORKER="$BIN/medfed-dicom-worker" ;; esac

W=$(mktemp -d /tmp/medfed-bench-data.XXXXXX)
. "$ROOT/tests/lib/orthanc.sh"
cleanup() {
    orthanc_stop
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

imgs="$ROOT/data/pneumoniamnist/train-images-idx3-ubyte.gz"
labs="$ROOT/data/pneumoniamnist/train-labels-idx1-ubyte.gz"

# ---- 1. folder (DICOM worker) vs idx, the same N images -----------------------------
echo "bench: data path: $N DICOM fixtures (folder source) vs the same images from IDX"
"$BIN/medfed-dicom-fixture" --images "$imgs" --labels "$labs" --out "$W/folder" --count "$N" \
    > "$W/fixture.log" 2>&1 || { cat "$W/fixture.log"; exit 1; }
# The same N images (IDX indices 0..N-1) as IDX files of their own, gzip like data/.
"$PY" - "$imgs" "$labs" "$N" "$W" <<'PYEOF'
import gzip, struct, sys
imgs, labs, n, w = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
raw = gzip.open(imgs).read(); _, cnt, r, c = struct.unpack(">IIII", raw[:16])
assert n <= cnt
with gzip.open(w + "/idx-images.gz", "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, r, c) + raw[16:16 + n * r * c])
raw = gzip.open(labs).read()
with gzip.open(w + "/idx-labels.gz", "wb") as f:
    f.write(struct.pack(">II", 0x801, n) + raw[8:8 + n])
PYEOF
folder_args="source=folder path=$W/folder labels=$W/folder/labels.csv val_fraction=0.2"
idx_args="source=idx train_images=$W/idx-images.gz train_labels=$W/idx-labels.gz"
# shellcheck disable=SC2086
{
    f1=$("$BD" "$REPS" $folder_args)
    i1=$("$BD" $((REPS * 5)) $idx_args)
    f2=$("$BD" "$REPS" $folder_args)
    i2=$("$BD" $((REPS * 5)) $idx_args)
}

# ---- large images: 2048x2048, 16 bits (12 stored) -> 28x28 --------------------------
echo "bench: data path: $NL DICOM files of 2048x2048 16-bit resized to 28x28"
"$PY" - "$W/large" "$NL" "$imgs" "$labs" <<'PYEOF'
import os, sys
import numpy as np
sys.path.insert(0, "tests/fixtures")
import dicom_fixture as fx
out, n, imgs, labs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
images, labels = fx.read_idx(imgs, 0x803), fx.read_idx(labs, 0x801)
os.makedirs(out, exist_ok=True)
rows = []
class A: canary_name, canary_id = "BENCH^LARGE", "BENCH-LARGE"
for i in range(n):
    # an IDX image blown up to 2048x2048 (73x, edge-padded), 12-bit, with noise
    big = np.kron(images[i].astype(np.uint16) * 16, np.ones((73, 73), np.uint16))
    big = np.pad(big, ((0, 2048 - big.shape[0]), (0, 2048 - big.shape[1])), mode="edge")
    big = big + np.random.default_rng(i).integers(0, 16, big.shape, dtype=np.uint16)
    ds = fx.make_dataset("", big, 900000 + i, A, "large")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.PixelData = big.astype("<u2").tobytes()
    fx.save(ds, os.path.join(out, "large-%02d.dcm" % i))
    rows.append("%s,%d" % (ds.AccessionNumber, labels[i]))
open(os.path.join(out, "labels.csv"), "w").write("AccessionNumber,label\n" + "\n".join(rows) + "\n")
PYEOF
# shellcheck disable=SC2086
large=$("$BD" "$REPS" source=folder path="$W/large" labels="$W/large/labels.csv" val_fraction=0 height=28 width=28)

# ---- 2. DICOMweb: fetched vs from the tensor cache ----------------------------------
# A private Orthanc exactly as suite_dicomweb.sh starts it (loopback ports, its own
# storage, DICOMweb plugin, basic auth), stopped by the trap.
dw=null
DW_USER=medfed-bench
DW_PASS=$("$PY" -c 'import secrets; print(secrets.token_hex(12))')
if ! orthanc_start "$W" medfed-bench "$DW_USER" "$DW_PASS"; then
    echo "bench: data path: $ORTHANC_WHY; DICOMweb part skipped"
else
    echo "bench: data path: DICOMweb (private Orthanc), $N images fetched, then from the cache"
    base=$ORTHANC_BASE
    mkdir -p "$W/secrets"
    chmod 700 "$W/secrets"
    printf '%s\n' "$DW_PASS" > "$W/secrets/pacs.pw"
    chmod 600 "$W/secrets/pacs.pw"
    n=$(orthanc_upload "$W/folder" "$DW_USER" "$DW_PASS")
    [ "$n" = "$N" ] || { echo "bench: Orthanc holds $n instances, not $N"; exit 1; }
    dw_args="source=dicomweb url=$base/dicom-web modality=CR max_images=$((N + 1000))
             labels=$W/folder/labels.csv auth=basic username=$DW_USER
             password_file=$W/secrets/pacs.pw max_requests_per_second=1000 timeout=30
             cache_dir=$W/cache cache_max_mb=256 val_fraction=0.2"
    # WADO-RS retrieves Orthanc has served so far (its --verbose log).
    wado_gets() { grep -c '(http) GET /dicom-web/studies/' "$W/orthanc.log" || true; }
    # shellcheck disable=SC2086
    {
        dfetch=$("$BD" 1 $dw_args)
        g1=$(wado_gets)
        dcache=$("$BD" "$REPS" $dw_args)
        g2=$(wado_gets)
    }
    dw="{\"fetched\":$dfetch,\"cached\":$dcache,\"gets\":[$g1,$g2]}"
    orthanc_stop
fi

tend=$(date +%s.%N)
"$PY" - "$OUT" "[$f1,$f2]" "[$i1,$i2]" "$large" "$dw" "$tstart" "$tend" "$REPS" <<'PYEOF'
import json, os, sys, statistics as st
out, folder, idx, large, dw = sys.argv[1], *map(json.loads, sys.argv[2:6])
secs, reps = float(sys.argv[7]) - float(sys.argv[6]), int(sys.argv[8])
def rate(runs):  # median images/s over every repetition of every run
    return st.median(r for run in runs for r in run["images_per_s"])
for run in folder + ([large] + ([dw["fetched"], dw["cached"]] if dw else [])):
    assert run["decoded"] == run["images"] and not any(run["skipped"].values()), run
rf, ri = rate(folder), rate(idx)
res = {"note": ("a load = open the source, load both splits, close it (worker start, "
                "QIDO-RS search included); median images/s over %d loads per run (idx: %d, "
                "a load takes milliseconds); runs of compared sources alternate; the dicomweb "
                "loads are paced at most at max_requests_per_second" % (reps, 5 * reps)),
       "decode": {"images": folder[0]["images"], "image_size": "28x28 8-bit CR, explicit VR LE",
                  "folder_images_per_s": round(rf, 1), "idx_images_per_s": round(ri, 1),
                  "folder_over_idx": round(rf / ri, 4)},
       "large_images": {"images": large["images"], "image_size": "2048x2048 16-bit (12 stored)",
                        "resized_to": "28x28", "folder_images_per_s": round(rate([large]), 2),
                        "source_megapixels_per_s": round(rate([large]) * 2048 * 2048 / 1e6, 1)}}
if dw:
    fe, ca = rate([dw["fetched"]]), rate([dw["cached"]])
    res["dicomweb"] = {"images": dw["fetched"]["images"], "server": "Orthanc (loopback, basic auth)",
                       "max_requests_per_second": 1000,
                       "fetched_images_per_s": round(fe, 1), "cached_images_per_s": round(ca, 1),
                       "cached_over_fetched": round(ca / fe, 2),
                       "fetched_over_folder": round(fe / rf, 4),
                       "cached_over_folder": round(ca / rf, 4),
                       "wado_rs_gets_fetched": dw["gets"][0],
                       "wado_rs_gets_cached": dw["gets"][1] - dw["gets"][0]}
    assert dw["gets"][0] >= dw["fetched"]["images"] and dw["gets"][1] == dw["gets"][0], dw["gets"]
res["wall_seconds"] = round(secs, 1)
path = os.path.join(out, "bench.json")
allres = json.load(open(path)) if os.path.exists(path) else {}
allres["data_path"] = res
json.dump(allres, open(path, "w"), indent=1)
print(json.dumps(res, indent=1))
PYEOF
