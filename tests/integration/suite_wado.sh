# suite_wado.sh - WADO-RS retrieval of compressed images as the PACS stores
# them, and the progress a long pull logs (sourced by run.sh: uses ok/bad/
# json_check/free_port, $BIN, $WORK, $ROOT, $PY).
#
# A private Orthanc holds 24 labelled CR images: 6 each in JPEG 2000 lossless,
# JPEG-LS lossless, RLE lossless (gdcmconv) and uncompressed. The client asks
# for transfer-syntax=* (no transcoding in the PACS), the worker decodes every
# syntax, and the pull, paced at 4 requests a second, logs "n of N" lines.
#
#   wado_compressed_syntaxes_decoded
#   wado_pull_logs_progress

. "$ROOT/tests/lib/orthanc.sh"

wado_suite() {
    P="$WORK/wado"
    PW_USER=medfed-wado
    PW_PASS=$("$PY" -c 'import secrets; print(secrets.token_hex(12))')
    mkdir -p "$P/secrets" "$P/pacs" "$P/site"
    chmod 700 "$P/secrets"
    t=wado_compressed_syntaxes_decoded
    command -v gdcmconv > /dev/null || { bad $t "no gdcmconv (libgdcm-tools)"; return; }
    "$BIN/medfed-dicom-fixture" --images "$ROOT/data/pneumoniamnist/train-images-idx3-ubyte.gz" \
        --labels "$ROOT/data/pneumoniamnist/train-labels-idx1-ubyte.gz" --out "$P/src" --count 24 \
        --start 3000 > "$P/fixture.log" 2>&1 || { bad $t "fixture tool failed"; return; }
    mv "$P/src/labels.csv" "$P/site/labels.csv"
    i=0
    for f in "$P"/src/img-*.dcm; do
        case $((i % 4)) in
        0) gdcmconv --j2k "$f" "$P/pacs/${f##*/}" ;;
        1) gdcmconv --jpegls "$f" "$P/pacs/${f##*/}" ;;
        2) gdcmconv --rle "$f" "$P/pacs/${f##*/}" ;;
        3) cp "$f" "$P/pacs/" ;;
        esac || { bad $t "gdcmconv failed on $f"; return; }
        i=$((i + 1))
    done
    orthanc_start "$P" medfed-wado "$PW_USER" "$PW_PASS" || { bad $t "$ORTHANC_WHY"; return; }
    n=$(orthanc_upload "$P/pacs" "$PW_USER" "$PW_PASS")
    [ "$n" = 24 ] || { bad $t "upload: Orthanc holds ${n:-?} instances, not 24"; orthanc_stop; return; }
    printf '%s\n' "$PW_PASS" > "$P/secrets/pacs.pw"
    chmod 600 "$P/secrets/pacs.pw"
    { printf '[client]\nsite = wado-site\ncoordinator = tcp://127.0.0.1:%s\n' "$(free_port)"
      printf '[data]\nsource = dicomweb\nurl = %s/dicom-web\nmodality = CR\n' "$ORTHANC_BASE"
      printf 'labels = %s/site/labels.csv\nauth = basic\nusername = %s\n' "$P" "$PW_USER"
      printf 'password_file = %s/secrets/pacs.pw\nmax_requests_per_second = 4\n' "$P"
      printf 'val_fraction = 0.2\n'; } > "$P/client.ini"
    "$BIN/medfed-client" --config "$P/client.ini" --check --json > "$P/check.json" 2> "$P/check.log"
    orthanc_stop
    # Each compressed syntax arrived as stored (not transcoded to explicit VR
    # little endian) and every image decoded.
    if json_check "$P/check.json" 'rows[0]["data"]["ok"] and rows[0]["data"]["decoded"] == 24 and rows[0]["data"]["train"] + rows[0]["data"]["val"] == 24' &&
       grep -q 'transfer syntaxes as the PACS sent them: .*JPEG 2000 lossless (1.2.840.10008.1.2.4.90) x6' "$P/check.log" &&
       grep -q 'JPEG-LS lossless (1.2.840.10008.1.2.4.80) x6' "$P/check.log" &&
       grep -q 'RLE lossless (1.2.840.10008.1.2.5) x6' "$P/check.log" &&
       grep -q 'explicit VR little endian (1.2.840.10008.1.2.1) x6' "$P/check.log"
    then ok $t; else bad $t "see $P/check.log"; grep dicomweb "$P/check.log" | tail -5; fi

    # 24 images at 4 requests a second take about 6 s: a line every 5 s.
    t=wado_pull_logs_progress
    if grep -Eq 'dicomweb: [0-9]+ of 24 images \([0-9]+%\), [0-9.]+ images/s, about [0-9]+ s left' "$P/check.log"
    then ok $t; else bad $t "no progress line in $P/check.log"; fi
}

wado_suite
