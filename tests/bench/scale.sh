#!/bin/sh
# make bench-scale: what a round costs the coordinator as the model and the
# federation grow, side by side in one run, into OUT/scale.json.
#   1. 10 real client daemons (LibTorch), no local training (--local-epochs 0:
#      zero updates, every byte and every mask still moves): cnn (1.66M
#      parameters) and resnet18 (11.2M), plaintext and secure, CURVE on and
#      off. Per round: wall time, the coordinator's CPU seconds (all its
#      threads) and peak RSS, bytes each way.
#   2. The protocol-only swarm (medfed-sim --swarm): 100, 300 and 1,000 sites
#      x 1M parameters, secure, CURVE on, collusion 0 (the SecAgg+ degree rule
#      then allows sparse graphs); 10,000 x 100K if SCALE_HUGE=1.
# Run names: MODEL-SECAGG-curve / -nocurve (secagg off = plaintext FedAvg).
# Figures are medians over rounds 2.. (round 1 includes the first model
# download and the sites' start-up). usage: scale.sh BIN_DIR OUT_DIR
# (SCALE_ROUNDS, SCALE_SWARM="100 300 1000", SCALE_PARAMS, SCALE_HUGE=1)
set -eu
BIN=$1
OUT=$2
ROUNDS=${SCALE_ROUNDS:-4}
SWARM=${SCALE_SWARM:-100 300 1000}
PARAMS=${SCALE_PARAMS:-1000000}
PY=/usr/bin/python3
mkdir -p "$OUT"
runs=""

real() { # NAME MODEL SECAGG CURVE
    echo "bench-scale: 10 clients, $2, secagg $3, CURVE $4"
    "$BIN/medfed-sim" --clients 10 --rounds "$ROUNDS" --model "$2" --secagg "$3" --curve "$4" \
        --max-train 20 --max-val 20 --local-epochs 0 --partition iid --heartbeat-timeout 60 \
        --out "$OUT/scale-$1" > "$OUT/scale-$1.log" 2>&1 ||
        { echo "bench-scale: run $1 failed, see $OUT/scale-$1.log"; exit 1; }
    runs="$runs $1"
}
# Interleaved, so that the machine's load falls on every configuration alike.
for model in cnn resnet18; do
    for sa in off on; do
        real "$model-$sa-curve" "$model" "$sa" on
        real "$model-$sa-nocurve" "$model" "$sa" off
    done
done

swarm() { # NAME N PARAMS
    echo "bench-scale: swarm, $2 sites x $3 parameters, secure, CURVE on"
    "$BIN/medfed-sim" --swarm --clients "$2" --params "$3" --rounds "$ROUNDS" --collusion 0 \
        --dropout 0.05 --local-epochs 0 --out "$OUT/scale-$1" > "$OUT/scale-$1.log" 2>&1 ||
        { echo "bench-scale: run $1 failed, see $OUT/scale-$1.log"; exit 1; }
    runs="$runs $1"
}
for n in $SWARM; do swarm "swarm-$n" "$n" "$PARAMS"; done
[ "${SCALE_HUGE:-0}" = 1 ] && swarm swarm-10000 10000 100000

# What CURVE's cipher costs against the alternatives for bulk payloads, one
# core, 1 MiB messages (tests/bench/bench_aead.c).
echo "bench-scale: AEAD speed on 1 MiB messages"
cc -std=c11 -D_GNU_SOURCE -O2 -I. tests/bench/bench_aead.c common/util.c \
    -o "$OUT/bench_aead" $(pkg-config --cflags --libs libsodium libcrypto)
"$OUT/bench_aead" 256 > "$OUT/aead.json"

"$PY" - "$OUT" $runs <<'PYEOF'
import json, os, re, statistics as st, sys
out, names = sys.argv[1], sys.argv[2:]
def med(xs): return st.median(xs) if xs else None
res = {"runs": [], "note": "medians over rounds 2..; no local training; coordinator CPU = all its "
       "threads (ZeroMQ I/O included), from getrusage per round; peak RSS = the process's so far"}
by = {}
for name in names:
    d = os.path.join(out, "scale-" + name)
    rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    log = open(os.path.join(d, "logs", "coordinator.log")).read()
    m = re.search(r"params=(\d+)", log)
    params = int(m.group(1)) if m else None
    later = [r for r in rows[1:] if not r["aborted"]] or [r for r in rows if not r["aborted"]]
    secs = med([r["seconds"] for r in later])
    cpu = med([r["coordinator_cpu_s"] for r in later])
    gb = med([(r["bytes_up"] + r["bytes_down"]) / 1e9 for r in later])
    rss = max(r["coordinator_peak_rss_kb"] for r in rows) * 1024
    n = rows[-1]["cohort"]
    run = {"name": name, "sites": n, "params": params, "secagg": rows[-1]["secagg"],
           "curve": not name.endswith("-nocurve"), "rounds": len(rows),
           "aborted": sum(r["aborted"] for r in rows),
           "round_s": round(secs, 3), "coordinator_cpu_s_per_round": round(cpu, 3),
           "gb_moved_per_round": round(gb, 4),
           "coordinator_cpu_s_per_gb": round(cpu / gb, 3) if gb else None,
           "coordinator_peak_rss_mb": round(rss / 2**20, 1),
           "rss_over_model": round(rss / (4 * params), 2) if params else None,
           "rss_minus_3_models_per_site_kb": round((rss - 3 * 4 * params) / n / 1024, 1) if params else None,
           "neighbors": rows[-1].get("neighbors"), "threshold": rows[-1].get("threshold"),
           "bits": rows[-1].get("bits")}
    res["runs"].append(run)
    by[name] = run
t = {}
r18 = lambda k: by.get("resnet18-" + k)
if r18("off-curve") and r18("off-nocurve") and r18("on-curve"):
    t["resnet18_plain_round_s"] = {"value": r18("off-curve")["round_s"], "target": 3.5,
                                   "met": r18("off-curve")["round_s"] <= 3.5}
    ratio = r18("off-curve")["round_s"] / r18("off-nocurve")["round_s"]
    t["resnet18_curve_on_over_off"] = {"value": round(ratio, 3), "target": 1.2, "met": ratio <= 1.2}
    ratio = r18("on-curve")["round_s"] / r18("off-curve")["round_s"]
    t["resnet18_secure_over_plain"] = {"value": round(ratio, 3), "target": 1.1, "met": ratio <= 1.1}
worst = max((r["coordinator_cpu_s_per_gb"] or 0) for r in res["runs"] if r["sites"] <= 10)
t["coordinator_cpu_s_per_gb_worst_of_10_site_runs"] = {"value": worst, "target": 1.0, "met": worst <= 1.0}
ten = [r for r in res["runs"] if r["sites"] <= 10 and r["rss_over_model"]]
if ten:
    w = max(r["rss_over_model"] for r in ten)
    t["rss_over_model_at_10_sites_worst"] = {"value": w, "target": 3.0, "met": w <= 3.0}
big = by.get("swarm-1000")
if big:
    t["swarm_1000_rss_minus_3_models_per_site_kb"] = {"value": big["rss_minus_3_models_per_site_kb"],
                                                       "target": 2.0, "met": big["rss_minus_3_models_per_site_kb"] <= 2.0}
    t["swarm_1000_secure_round_s"] = {"value": big["round_s"], "target": 60, "met": big["round_s"] < 60}
res["targets"] = t
sw = [r for r in res["runs"] if r["name"].startswith("swarm-")]
if len(sw) >= 2:
    a, b = sw[0], sw[-1]
    res["growth_with_sites"] = {"from": a["sites"], "to": b["sites"],
                                "round_s_ratio": round(b["round_s"] / a["round_s"], 2),
                                "cpu_ratio": round(b["coordinator_cpu_s_per_round"] / a["coordinator_cpu_s_per_round"], 2),
                                "rss_ratio": round(b["coordinator_peak_rss_mb"] / a["coordinator_peak_rss_mb"], 2)}
c, r = by.get("cnn-off-curve"), by.get("resnet18-off-curve")
if c and r:
    res["growth_with_model"] = {"params_ratio": round(r["params"] / c["params"], 2),
                                "round_s_ratio": round(r["round_s"] / c["round_s"], 2),
                                "cpu_ratio": round(r["coordinator_cpu_s_per_round"] / c["coordinator_cpu_s_per_round"], 2),
                                "rss_ratio": round(r["coordinator_peak_rss_mb"] / c["coordinator_peak_rss_mb"], 2)}
res["aead_1mib_one_core"] = json.load(open(os.path.join(out, "aead.json")))
json.dump(res, open(os.path.join(out, "scale.json"), "w"), indent=1)
print(json.dumps(res["targets"], indent=1))
PYEOF
echo "bench-scale: wrote $OUT/scale.json"
