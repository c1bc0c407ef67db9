# The protocol-only swarm, for scale (sourced by run.sh: ok/bad/json_check,
# $BIN, $HBIN, $WORK, $ROOT; MEDFED_IT_ONLY=swarm runs it alone): medfed-sim --swarm runs the real
# coordinator and medfed-swarm processes whose sites run the daemon's client
# code over a synthetic model (no LibTorch, no images), CURVE on.
#   swarm_exact_sum
#     200 sites x 10,000 parameters in two medfed-swarm processes, two secure
#     rounds with a SecAgg+ graph (collusion 0: degree 72, t = 37): every site
#     in every round, each site on its own CURVE key and roster line, and each
#     round's unmasked sum exactly the sum of the 200 sites' encoded updates
#     (the test build's MEDFED_TEST_DUMP_DIR, tests/lib/exact_sum.py).
#   swarm_zero_updates
#     --local-epochs 0: every site sends a zero update; the sum is zero in
#     every element and carries the sites' weights, and the model after two
#     rounds is the initial one, bit for bit.
#   swarm_site_configs
#     medfed-swarm runs only sites whose [data] source is synthetic, and the
#     daemon refuses such a site (it has no images to train on).

SW="$WORK/swarm"
mkdir -p "$SW"

# model_tensor FILE: the safetensors file's data section as hex (header skipped).
model_tensor() {
    "$PY" -c 'import struct,sys; b=open(sys.argv[1],"rb").read(); n=struct.unpack("<Q",b[:8])[0]; print(b[8+n:].hex())' "$1"
}

t=swarm_exact_sum
d="$SW/sum"
mkdir -p "$d/dump"
if MEDFED_TEST_DUMP_DIR="$d/dump" "$HBIN/medfed-sim" --swarm --swarm-procs 2 --clients 200 \
        --params 10000 --rounds 2 --collusion 0 --seed 11 --out "$d/run" > "$d/out" 2>&1 &&
   json_check "$d/run/metrics.jsonl" 'len(rows) == 2 and all(not r["aborted"] and r["secagg"] and r["participants"] == 200 and r["survivors"] == 200 and sorted(r["included"]) == list(range(200)) and r["neighbors"] == 72 and r["threshold"] == 37 and r["val_n"] > 0 for r in rows)' &&
   "$PY" "$ROOT/tests/lib/exact_sum.py" --metrics "$d/run/metrics.jsonl" --dump "$d/dump" \
        --log "$d/run/logs/coordinator.log" --all --quiet &&
   # two processes of 100 sites, each site on CURVE with its own keys
   [ "$(cat "$d"/run/logs/swarm-*.log | grep -c 'INFO transport: CURVE')" -eq 200 ] &&
   grep -q 'swarm: 100 sites done .* 0 failed' "$d/run/logs/swarm-0.log" &&
   grep -q 'swarm: 100 sites done .* 0 failed' "$d/run/logs/swarm-1.log" &&
   grep -q 'transport: CURVE, 200 sites on the roster' "$d/run/logs/coordinator.log" &&
   [ "$(cut -d' ' -f2 "$d/run/roster.txt" | sort -u | wc -l)" -eq 200 ] &&
   [ "$(cut -d' ' -f3 "$d/run/roster.txt" | sort -u | wc -l)" -eq 200 ] &&
   [ "$(ls "$d/dump" | grep -c '^encoded-site-.*-r2\.bin$')" -eq 200 ] &&
   [ "$(model_tensor "$d/run/model.safetensors")" != "$(model_tensor "$d/run/init.safetensors")" ] &&
   "$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["swarm_procs"] == 2 and s["params"] == 10000 and s["swarm_peak_rss_kb"] > 0 else 1)' "$d/run/summary.json"
then ok $t; else bad $t "see $d/out"; cat "$d/out"; grep -h 'WARN\|ERROR' "$d"/run/logs/*.log | head -20; fi

t=swarm_zero_updates
d="$SW/zero"
mkdir -p "$d/dump"
if MEDFED_TEST_DUMP_DIR="$d/dump" "$HBIN/medfed-sim" --swarm --clients 12 --params 3000 \
        --rounds 2 --local-epochs 0 --collusion 0 --dropout 0 --seed 12 --out "$d/run" > "$d/out" 2>&1 &&
   json_check "$d/run/metrics.jsonl" 'len(rows) == 2 and all(not r["aborted"] and r["participants"] == 12 for r in rows)' &&
   "$PY" "$ROOT/tests/lib/exact_sum.py" --metrics "$d/run/metrics.jsonl" --dump "$d/dump" \
        --log "$d/run/logs/coordinator.log" --all --quiet &&
   "$PY" - "$d" <<'PYEOF' &&
import array, re, sys
d = sys.argv[1]
weights = sum(int(x) for x in re.findall(r"^train = (\d+)$", "".join(
    open("%s/run/sites/site-%02d/client.ini" % (d, k)).read() for k in range(12)), re.M))
for r in (1, 2):
    a = array.array("I"); a.frombytes(open("%s/dump/unmasked-r%d.bin" % (d, r), "rb").read())
    bits = int(re.search(r"round=%d phase=advertise event=keys-relayed .* bits=(\d+)" % r,
                         open(d + "/run/logs/coordinator.log").read()).group(1))
    if len(a) != 3002 or any(x & ((1 << bits) - 1) for x in a[:-2]) or a[-2] != weights:
        sys.exit("round %d: the sum of zero updates is not zero with weight %d" % (r, weights))
PYEOF
   [ "$(model_tensor "$d/run/model.safetensors")" = "$(model_tensor "$d/run/init.safetensors")" ]
then ok $t; else bad $t "see $d/out"; cat "$d/out"; fi

t=swarm_site_configs
d="$SW/conf"
mkdir -p "$d"
if [ -f "$SW/zero/run/sites/site-00/client.ini" ]; then site="$SW/zero/run/sites/site-00"
else "$BIN/medfed-sim" --swarm --clients 3 --params 100 --rounds 1 --collusion 0 --dropout 0 \
        --out "$d/run" > "$d/run.out" 2>&1; site="$d/run/sites/site-00"; fi
sed 's/^source = synthetic$/source = idx/' "$site/client.ini" > "$d/idx.ini"
"$BIN/medfed-swarm" "$d/idx.ini" > "$d/swarm.out" 2>&1
src=$?
"$BIN/medfed-client" --config "$site/client.ini" > "$d/client.out" 2>&1
crc=$?
if [ $src -eq 2 ] && grep -q 'idx.ini: \[data\] source must be synthetic' "$d/swarm.out" &&
   [ $crc -ne 0 ] && grep -qi 'synthetic' "$d/client.out"
then ok $t; else bad $t "swarm=$src client=$crc"; cat "$d/swarm.out" "$d/client.out"; fi
