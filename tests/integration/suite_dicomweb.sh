# suite_dicomweb.sh - the hospital data path against a real PACS (sourced by
# run.sh: uses ok/bad/json_check/free_port, $BIN, $HBIN (the test build),
# $BUILD, $WORK, $ROOT, $PY).
#
# A private Orthanc (loopback ports, its own storage, DICOMweb plugin, basic
# auth) holds labelled CR images made from PneumoniaMNIST with a canary
# PatientName / PatientID. One site reads them over DICOMweb, one from a DICOM
# folder, one from IDX files; a 2-round federation must complete with all
# three, the canary must appear in no log line and in no byte a site sends,
# and a second load must come from the tensor cache (no WADO-RS request).

. "$ROOT/tests/lib/orthanc.sh"

# dw_wado_gets: WADO-RS retrieves Orthanc has served so far.
dw_wado_gets() { grep -c '(http) GET /dicom-web/studies/' "$DW/orthanc.log"; }

# dw_ini TEMPLATE OUT PORT: a site's client.ini from the first run, pointed at
# PORT, with its [data] section replaced by the lines on stdin.
dw_ini() {
    awk '/^\[data\]/{skip=1; next} /^\[/{skip=0} !skip' "$1" |
        sed "s|tcp://127.0.0.1:[0-9]*|tcp://127.0.0.1:$3|" > "$2"
    { echo; echo "[data]"; cat; } >> "$2"
}

dw_stop_orthanc() { orthanc_stop; }

dw_suite() {
    DW="$WORK/dicomweb"
    DW_USER=medfed-test
    DW_PASS=$("$PY" -c 'import secrets; print(secrets.token_hex(12))')
    CANARY_NAME='ZZCANARY^PATIENTNAME'
    CANARY_ID='ZZCANARYID4242'
    mkdir -p "$DW/db" "$DW/secrets"
    chmod 700 "$DW/secrets"
    t=dicomweb_setup
    [ -x "$BIN/medfed-dicom-fixture" ] && [ -x "$BIN/medfed-dicom-worker" ] ||
        { bad $t "medfed-dicom-fixture / medfed-dicom-worker not built"; return; }
    [ -f "$WORK/a/sites/site-02/client.ini" ] || { bad $t "no site kits from the first run"; return; }
    tstart=$(date +%s.%N)

    # Images: 240 in the PACS (site-00), 200 in a folder (site-01).
    imgs="$ROOT/data/pneumoniamnist/train-images-idx3-ubyte.gz"
    labs="$ROOT/data/pneumoniamnist/train-labels-idx1-ubyte.gz"
    "$BIN/medfed-dicom-fixture" --images "$imgs" --labels "$labs" --out "$DW/pacs" --count 240 \
        --start 1000 --canary-name "$CANARY_NAME" --canary-id "$CANARY_ID" > "$DW/fixture.log" 2>&1 &&
    "$BIN/medfed-dicom-fixture" --images "$imgs" --labels "$labs" --out "$DW/folder" --count 200 \
        --start 2000 --canary-name "$CANARY_NAME" --canary-id "$CANARY_ID" >> "$DW/fixture.log" 2>&1 ||
        { bad $t "fixture tool failed"; cat "$DW/fixture.log"; return; }
    # The labels lists live apart from the images (the PACS holds only DICOM).
    mkdir -p "$DW/site0" "$DW/site1"
    mv "$DW/pacs/labels.csv" "$DW/site0/labels.csv"
    cp "$DW/folder/labels.csv" "$DW/site1/labels.csv"
    rm -f "$DW/pacs/manifest.json" "$DW/folder/manifest.json"

    # Orthanc, on loopback ports of its own, basic auth, DICOMweb on.
    orthanc_start "$DW" medfed-it "$DW_USER" "$DW_PASS" || { bad $t "$ORTHANC_WHY"; tail "$DW/orthanc.log" 2>/dev/null; return; }
    base=$ORTHANC_BASE
    n=$(orthanc_upload "$DW/pacs" "$DW_USER" "$DW_PASS")
    [ "$n" = 240 ] || { bad $t "upload: Orthanc holds ${n:-?} instances, not 240"; dw_stop_orthanc; return; }
    tup=$(date +%s.%N)
    ok "$t (Orthanc at $base, 240 instances in $("$PY" -c "print('%.1f' % ($tup - $tstart))") s)"

    # Site configs. site-00: dicomweb; site-01: DICOM folder; site-02: its IDX files.
    port=$(free_port)
    printf '%s\n' "$DW_PASS" > "$DW/secrets/pacs.pw"
    chmod 600 "$DW/secrets/pacs.pw"
    dw_ini "$WORK/a/sites/site-00/client.ini" "$DW/c0.ini" "$port" <<EOF
source = dicomweb
url = $base/dicom-web
modality = CR
body_part = CHEST
study_description = CHEST*
max_images = 1000
labels = $DW/site0/labels.csv
auth = basic
username = $DW_USER
password_file = $DW/secrets/pacs.pw
max_requests_per_second = 200
timeout = 30
cache_dir = $DW/site0/cache
cache_max_mb = 64
val_fraction = 0.2
EOF
    dw_ini "$WORK/a/sites/site-01/client.ini" "$DW/c1.ini" "$port" <<EOF
source = folder
path = $DW/folder
labels = $DW/site1/labels.csv
val_fraction = 0.2
EOF
    sed "s|tcp://127.0.0.1:[0-9]*|tcp://127.0.0.1:$port|" "$WORK/a/sites/site-02/client.ini" > "$DW/c2.ini"

    # 1. First load through DICOMweb (the coordinator is not up: --check says
    #    so, the data part is what counts): every image fetched once.
    t=dicomweb_first_load
    "$BIN/medfed-client" --config "$DW/c0.ini" --check --json > "$DW/check1.json" 2> "$DW/check1.log"
    gets1=$(dw_wado_gets)
    if "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1]))["data"]; sys.exit(0 if d["ok"] and d["source"]=="dicomweb" and d["train"]+d["val"]==240 and d["val"]>0 and d["size"]==[1,28,28] and d["found"]==d["labelled"]==d["decoded"]==240 and not any(d["skipped"].values()) else 1)' "$DW/check1.json" &&
       [ "$gets1" -eq 240 ]
    then ok "$t ($gets1 WADO-RS GETs; $(grep -o '[0-9]* fetched, .* s$' "$DW/check1.log"))"
    else bad $t "gets=$gets1"; cat "$DW/check1.json" "$DW/check1.log" | tail -20; fi

    # 2. The same load again (a daemon restart): all from the cache.
    t=dicomweb_second_load_from_cache
    "$BIN/medfed-client" --config "$DW/c0.ini" --check --json > "$DW/check2.json" 2> "$DW/check2.log"
    gets2=$(dw_wado_gets)
    if "$PY" -c 'import json,sys; a=json.load(open(sys.argv[1]))["data"]; b=json.load(open(sys.argv[2]))["data"]; sys.exit(0 if b["ok"] and (a["train"],a["val"])==(b["train"],b["val"]) else 1)' "$DW/check1.json" "$DW/check2.json" &&
       [ "$gets2" -eq "$gets1" ] && grep -q '0 fetched, 240 from cache' "$DW/check2.log"
    then ok "$t (0 WADO-RS GETs; $(grep -o '[0-9]* fetched, .* s$' "$DW/check2.log"))"
    else bad $t "gets $gets1 -> $gets2"; tail -5 "$DW/check2.log"; fi

    # 3. Two rounds: the dicomweb site, the folder site and an IDX site.
    t=dicomweb_folder_idx_federation
    d="$DW/fed"
    mkdir -p "$d"
    "$BIN/medfed-coordinator" --bind "tcp://127.0.0.1:$port" --init "$WORK/a/init.safetensors" \
        --out "$d" --roster "$WORK/a/roster.txt" --curve-secret "$WORK/a/coordinator.key" \
        --rounds 2 --wait-for 3 --local-epochs 1 --heartbeat-timeout 30 --wait-timeout 60 \
        > "$d/coord.log" 2>&1 &
    cpid=$!
    pids=
    for k in 0 1 2; do
        MEDFED_TEST_SEND_DUMP="$d/sent-c$k.bin" "$HBIN/medfed-client" --config "$DW/c$k.ini" \
            > "$d/c$k.log" 2>&1 &
        pids="$pids $!"
    done
    wait $cpid
    crc=$?
    for p in $pids; do wait $p; done
    gets3=$(dw_wado_gets)
    if [ $crc -eq 0 ] &&
       json_check "$d/metrics.jsonl" 'len(rows) == 2 and all(r["participants"] == 3 and not r["aborted"] and r["val_accuracy"] is not None for r in rows)' &&
       [ "$gets3" -eq "$gets1" ] && [ -s "$d/sent-c0.bin" ] && [ -s "$d/sent-c1.bin" ]
    then ok "$t"
    else bad $t "coord=$crc gets=$gets1->$gets3"; grep -i 'warn\|error' "$d"/*.log | head; fi

    # 4. The canary (and the accession numbers) appear in no log line and in no
    #    byte a site sent; the cache holds no identifier either.
    t=dicomweb_canary_never_leaves
    leak=$(cat "$d"/*.log "$DW"/check*.log "$DW"/check*.json | grep -c -e "$CANARY_ID" -e 'ZZCANARY' -e 'ACC000[0-9]')
    sent=$(cat "$d"/sent-c*.bin "$DW"/site0/cache/* 2> /dev/null | grep -a -c -e "$CANARY_ID" -e 'ZZCANARY' -e 'ACC000[0-9]')
    # the check is live: the canary is in what the PACS serves
    live=$(grep -a -c "$CANARY_ID" "$DW/pacs/img-01000.dcm")
    if [ "$leak" -eq 0 ] && [ "$sent" -eq 0 ] && [ "$live" -gt 0 ] && ! grep -q "$DW_PASS" "$d"/*.log "$DW"/check*.log
    then ok "$t"
    else bad $t "log lines=$leak sent/cache hits=$sent live=$live"; fi

    # A busy PACS: a front (a small HTTP proxy) answers the first search 503
    # without Retry-After and the first WADO-RS retrieve of three images 429
    # with "Retry-After: 1". The site must wait (0.5 s back-off; 1 s as told),
    # retry the same request, and load every image.
    t=dicomweb_429_503_backoff
    cat > "$DW/front.py" <<'PYEOF'
import http.server, socketserver, sys, threading, time, urllib.request, urllib.error
upstream, log = sys.argv[1], open(sys.argv[2], "w", buffering=1)
lock, seen, busy = threading.Lock(), {}, {"search": 0, "retrieve": 0}
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        kind = "retrieve" if "/instances/" in self.path else "search"
        with lock:
            n = seen.get(self.path, 0); seen[self.path] = n + 1
            refuse = n == 0 and ((kind == "search" and busy["search"] < 1) or
                                 (kind == "retrieve" and busy["retrieve"] < 3))
            if refuse: busy[kind] += 1
        log.write("%.3f %s %s %s\n" % (time.time(), kind, 503 if refuse and kind == "search" else 429 if refuse else 200, self.path))
        if refuse:
            self.send_response(503 if kind == "search" else 429)
            if kind == "retrieve": self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0"); self.end_headers(); return
        req = urllib.request.Request(upstream + self.path, headers={k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept")})
        try:
            r = urllib.request.urlopen(req, timeout=30); code, body, hdrs = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            code, body, hdrs = e.code, e.read(), e.headers
        self.send_response(code)
        for k in ("Content-Type",):
            if hdrs.get(k): self.send_header(k, hdrs[k])
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
srv = S(("127.0.0.1", int(sys.argv[3])), H)
print("ready", flush=True)
srv.serve_forever()
PYEOF
    fport=$(free_port)
    "$PY" "$DW/front.py" "$base" "$DW/front.log" "$fport" > "$DW/front.out" 2>&1 &
    fpid=$!
    for _ in $(seq 50); do grep -q ready "$DW/front.out" 2>/dev/null && break; sleep 0.1; done
    sed "s|^url = .*|url = http://127.0.0.1:$fport/dicom-web|; s|^cache_dir = .*|cache_dir = $DW/cache-busy|" \
        "$DW/c0.ini" > "$DW/busy.ini"
    "$BIN/medfed-client" --config "$DW/busy.ini" --check --json > "$DW/busy.json" 2> "$DW/busy.log"
    kill $fpid 2>/dev/null; wait $fpid 2>/dev/null
    if json_check "$DW/busy.json" 'rows[0]["data"]["ok"] and rows[0]["data"]["decoded"] == 240 and rows[0]["data"]["train"] + rows[0]["data"]["val"] == 240' &&
       "$PY" - "$DW/front.log" <<'PYEOF'
import sys
rows = [l.split() for l in open(sys.argv[1])]
refused = [(float(t), k, c, p) for t, k, c, p in rows if c != "200"]
assert [c for _, _, c, _ in refused].count("503") == 1 and [c for _, _, c, _ in refused].count("429") == 3, refused
for t, kind, code, path in refused:
    retry = [float(u) for u, k, c, q in rows if q == path and c == "200" and float(u) > t]
    assert retry, "no retry of " + path
    wait = min(retry) - t
    assert wait >= (0.45 if code == "503" else 0.95), "%s retried after %.2f s" % (code, wait)
    assert wait < 10, "%s retried after %.2f s" % (code, wait)
print("waits ok")
PYEOF
    then ok "$t"
    else bad $t "see $DW/busy.log $DW/front.log"; tail -5 "$DW/busy.log"; cat "$DW/front.out"; fi

    # 5. Refusals: a password file others can read, a wrong password, a PACS
    #    that is down (the message names the URL, never the password).
    t=dicomweb_refusals
    cp "$DW/secrets/pacs.pw" "$DW/secrets/open.pw"
    chmod 644 "$DW/secrets/open.pw"
    sed "s|^password_file = .*|password_file = $DW/secrets/open.pw|" "$DW/c0.ini" > "$DW/open.ini"
    echo WrongPass123x > "$DW/secrets/wrong.pw"
    chmod 600 "$DW/secrets/wrong.pw"
    sed "s|^password_file = .*|password_file = $DW/secrets/wrong.pw|; s|^cache_dir = .*|cache_dir = $DW/cache-wrong|" \
        "$DW/c0.ini" > "$DW/wrong.ini"
    "$BIN/medfed-client" --config "$DW/open.ini" --check > "$DW/open.out" 2>&1
    "$BIN/medfed-client" --config "$DW/wrong.ini" --check > "$DW/wrong.out" 2>&1
    dw_stop_orthanc
    # PACS down, no cache to fall back on: the error names the URL.
    sed "s|^cache_dir = .*|cache_dir = $DW/cache-empty|" "$DW/c0.ini" > "$DW/nocache.ini"
    "$BIN/medfed-client" --config "$DW/nocache.ini" --check > "$DW/down.out" 2>&1
    if grep -q 'chmod 600' "$DW/open.out" && grep -q 'refused the credentials' "$DW/wrong.out" &&
       grep -q "search at $base/dicom-web/instances failed" "$DW/down.out" &&
       ! grep -q -e "$DW_PASS" -e WrongPass123x "$DW/down.out" "$DW/wrong.out"
    then ok "$t"
    else bad $t "see $DW/open.out wrong.out down.out"; cat "$DW/open.out" "$DW/wrong.out" "$DW/down.out" | head -20; fi
    # PACS down, the cache holds the last search: the site trains from it.
    t=dicomweb_pacs_down_trains_from_cache
    "$BIN/medfed-client" --config "$DW/c0.ini" --check --json > "$DW/offline.json" 2> "$DW/offline.log"
    if grep -q 'training from the 240 cached images of the last search' "$DW/offline.log" &&
       json_check "$DW/offline.json" 'rows[0]["data"]["ok"] and rows[0]["data"]["decoded"] == 240 and rows[0]["data"]["train"] + rows[0]["data"]["val"] == 240' &&
       ! grep -q -e "$CANARY_NAME" -e "$CANARY_ID" "$DW/site0/cache"/index-* "$DW/offline.log"
    then ok $t; else bad $t "see $DW/offline.log"; cat "$DW/offline.log" "$DW/offline.json" | head; fi
    t=dicomweb_no_sanitizer_reports
    if ! grep -q -e 'Sanitizer' -e 'runtime error' "$DW"/*.log "$DW"/*.out "$d"/*.log
    then ok $t
    else bad $t "$(grep -l -e 'Sanitizer' -e 'runtime error' "$DW"/*.log "$DW"/*.out "$d"/*.log | head -3)"; fi
    tend=$(date +%s.%N)
    echo "integration: dicomweb suite took $("$PY" -c "print('%.1f' % ($tend - $tstart))") s"
}

dw_suite
dw_stop_orthanc
