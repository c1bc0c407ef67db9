#!/bin/sh
# make bench: measures side by side in one run and writes one JSON file.
#   1. training images/s: the C shim vs the same model in Debian's python3-torch
#   2. coordinator FedAvg accumulation GB/s
#   3. the default simulation's round time, split into training and the rest
#   4. secure aggregation's cost (secure / plaintext rounds)
#   5. the upload width: pack / unpack-add GB/s beside memcpy, and the default
#      simulation at each upload_bits (accuracy, AUC, loss, bytes up / fp32)
#   6. the hospital data path (tests/bench/data_path.sh): DICOM decode vs IDX,
#      large images, DICOMweb fetched vs from the tensor cache
#   7. accuracy by strategy: the default simulation (10 sites, Dirichlet 0.5,
#      20 rounds) with FedAvg, FedProx, FedAdam and FedYogi, and the
#      centralised reference (medfed-sim --centralised): validation accuracy,
#      AUC and loss, and federated / centralised
# usage: run.sh BIN_DIR BUILD_DIR OUT_DIR [HOOKS_BIN_DIR]   (BENCH_ROUNDS, BENCH_IMAGES,
# BENCH_WIDTH_ROUNDS, BENCH_UPLOAD_BITS, BENCH_ACC_ROUNDS to shorten; BENCH_PARTS: a subset
# of "train sim secagg width data accuracy", whose figures replace those in an existing
# bench.json);
# HOOKS_BIN_DIR (make test-bin's) runs the one measurement with a dropout.
set -eu
BIN=$1
BUILD=$2
OUT=$3
HBIN=${4:-$BIN}
ROUNDS=${BENCH_ROUNDS:-5}
IMAGES=${BENCH_IMAGES:-3000}
mkdir -p "$OUT"
PY=/usr/bin/python3
PARTS=" ${BENCH_PARTS:-train sim secagg width data accuracy} "
export PARTS
part() { case "$PARTS" in *" $1 "*) return 0 ;; esac; return 1; }

# ---- training and the default round -----------------------------------------------
train_json="" fa1=null fa11=null
if part train; then
    # Build the training benchmark against the shim (C, includes only model.h).
    cc -std=c11 -O2 -I. -c tests/bench/bench_train.c -o "$BUILD/tests/bench_train.o"
    g++ -o "$BUILD/tests/bench_train" "$BUILD/tests/bench_train.o" "$BUILD/model/model.o" -ltorch_cpu -lc10
    echo "bench: training throughput (cnn, $IMAGES images), C shim and python3-torch alternately"
    for threads in 1 2; do
        c1=$("$BUILD/tests/bench_train" cnn $threads $IMAGES)
        p1=$("$PY" tests/bench/torch_ref.py cnn $threads $IMAGES)
        c2=$("$BUILD/tests/bench_train" cnn $threads $IMAGES)
        p2=$("$PY" tests/bench/torch_ref.py cnn $threads $IMAGES)
        train_json="$train_json{\"threads\":$threads,\"c\":[$c1,$c2],\"python\":[$p1,$p2]},"
    done
    echo "bench: FedAvg accumulation"
    fa1=$("$BUILD/tests/bench_fedavg" 1000000 10)
    fa11=$("$BUILD/tests/bench_fedavg" 11000000 10)
fi
if part sim; then
    echo "bench: default simulation, $ROUNDS rounds"
    "$BIN/medfed-sim" --rounds "$ROUNDS" --out "$OUT/sim" > "$OUT/sim.log" 2>&1
fi

if part train || part sim; then
"$PY" - "$OUT" "[${train_json%,}]" "$fa1" "$fa11" <<'PYEOF'
import json, os, sys, statistics as st
out, train, fa1, fa11 = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
res = json.load(open(out + "/bench.json")) if os.path.exists(out + "/bench.json") else {}
if train: res["training"] = []
if fa1: res["fedavg"] = [fa1, fa11]
for t in train:
    c = st.mean(r["images_per_s"] for r in t["c"]); p = st.mean(r["images_per_s"] for r in t["python"])
    res["training"].append({"arch": "cnn", "threads": t["threads"], "c_images_per_s": round(c, 1),
                            "python_images_per_s": round(p, 1), "c_over_python": round(c / p, 3)})
rows = [json.loads(l) for l in open(out + "/sim/metrics.jsonl")] if " sim " in os.environ["PARTS"] else []
if rows:
  secs = st.mean(r["seconds"] for r in rows); train_s = st.mean(r["train_seconds"] for r in rows)
  res["round"] = {"config": "10 clients, pneumoniamnist, dirichlet:0.5, cnn, 2 local epochs",
                "rounds": len(rows), "seconds_per_round": round(secs, 3),
                "training_seconds_per_round": round(train_s, 3),
                "communication_and_other_seconds_per_round": round(secs - train_s, 3),
                "training_share": round(train_s / secs, 3),
                "bytes_up_per_round": rows[-1]["bytes_up"], "bytes_down_per_round": rows[-1]["bytes_down"],
                "final_val_accuracy": rows[-1]["val_accuracy"]}
json.dump(res, open(out + "/bench.json", "w"), indent=1)
print(json.dumps(res, indent=1))
PYEOF
fi

# ---- secure aggregation -----------------------------------------------------------
# Protocol cost with no training (--local-epochs 0: zero updates, full-size
# masks and crypto): secure / plaintext round time, bytes, coordinator RSS.
if part secagg; then
echo "bench: mask expansion (PRG) speed"
cc -std=c11 -D_GNU_SOURCE -O2 -I. tests/bench/bench_prg.c crypto/*.c common/util.c \
    -o "$BUILD/tests/bench_prg" $(pkg-config --cflags --libs libsodium libcrypto)
prg=$("$BUILD/tests/bench_prg" 11000000)

SA_ROUNDS=${BENCH_SA_ROUNDS:-4}
run_sa() { # name clients model secagg [extra...]
    name=$1; n=$2; model=$3; sa=$4; shift 4
    sim="$BIN/medfed-sim"
    case " $* " in *" --drop "*) sim="$HBIN/medfed-sim" ;; esac # kills a client: test build
    "$sim" --clients "$n" --rounds "$SA_ROUNDS" --model "$model" --secagg "$sa" \
        --max-train $((n * 2)) --max-val $((n * 2)) --local-epochs 0 --partition iid \
        --heartbeat-timeout 10 --out "$OUT/sa-$name" "$@" > "$OUT/sa-$name.log" 2>&1 ||
        { echo "bench: run $name failed, see $OUT/sa-$name.log"; exit 1; }
}
for model in cnn resnet18; do
    echo "bench: secure vs plaintext rounds, 10 clients, $model"
    run_sa "$model-plain" 10 "$model" off
    run_sa "$model-secure" 10 "$model" on
    run_sa "$model-secure-drop" 10 "$model" on --drop 1:masked:2
done
echo "bench: 50 clients (cnn): SecAgg+ neighbourhoods, coordinator memory"
run_sa "cnn-plain-50" 50 cnn off
run_sa "cnn-secure-50" 50 cnn on

"$PY" - "$OUT" "$prg" <<'PYEOF'
import json, os, sys, statistics as st
out, prg = sys.argv[1], json.loads(sys.argv[2])
res = json.load(open(out + "/bench.json")) if os.path.exists(out + "/bench.json") else {}
def rows(name): return [json.loads(l) for l in open("%s/sa-%s/metrics.jsonl" % (out, name))]
def summ(name): return json.load(open("%s/sa-%s/summary.json" % (out, name)))
params = {"cnn": 1659266, "resnet18": 11181642 - 7680 + 9600}
def consistency_s(name):
    """Seconds of each round's consistency round (CONSIST_REQ sent -> UNMASK_REQ sent), from
    the coordinator's log: what the malicious-coordinator defence adds to a secure round."""
    def secs(line):
        h, m, rest = line.split()[0].split(":")
        return int(h) * 3600 + int(m) * 60 + float(rest)
    start, out = {}, []
    for line in open("%s/sa-%s/logs/coordinator.log" % (out_dir, name)):
        if "event=consistency-requested" in line:
            start[line.split("round=")[1].split()[0]] = secs(line)
        elif "event=unmask-requested" in line:
            r = line.split("round=")[1].split()[0]
            if r in start: out.append(secs(line) - start[r])
    return out
out_dir = out
sa = {"prg": prg, "models": []}
for model in ("cnn", "resnet18"):
    p = params[model]
    plain, sec, drop = rows(model + "-plain"), rows(model + "-secure"), rows(model + "-secure-drop")
    tp = st.mean(r["seconds"] for r in plain[1:]); ts = st.mean(r["seconds"] for r in sec[1:])
    td = drop[1]["seconds"]
    n = sec[-1]["participants"]
    up_secure = st.mean(r["bytes_up"] for r in sec[1:]) / n
    up_plain = st.mean(r["bytes_up"] for r in plain[1:]) / n
    rss = summ(model + "-secure")["coordinator_peak_rss_kb"] * 1024
    sa["models"].append({
        "model": model, "params": p, "clients": 10,
        "plain_round_s": round(tp, 3), "secure_round_s": round(ts, 3),
        "secure_over_plain": round(ts / tp, 3),
        "secure_1_dropped_round_s": round(td, 3), "secure_1_dropped_over_plain": round(td / tp, 3),
        "dropped_round_aborted": drop[1]["aborted"], "dropped_round_survivors": drop[1].get("survivors"),
        "bytes_up_per_client_secure": round(up_secure), "bytes_up_per_client_plain": round(up_plain),
        "secure_bytes_over_fp32_update": round(up_secure / (4 * p), 4),
        "coordinator_peak_rss_mb_secure": round(rss / 2**20, 1),
        "coordinator_peak_rss_over_model": round(rss / (4 * p), 2),
        "coordinator_peak_rss_mb_plain": round(summ(model + "-plain")["coordinator_peak_rss_kb"] / 1024, 1),
        "consistency_round_s": round(st.mean(consistency_s(model + "-secure")[1:]), 4),
        "consistency_over_secure_round": round(st.mean(consistency_s(model + "-secure")[1:]) / ts, 4),
    })
s50, r50, p50 = summ("cnn-secure-50"), rows("cnn-secure-50"), rows("cnn-plain-50")
t50 = st.mean(r["seconds"] for r in r50[1:]); tp50 = st.mean(r["seconds"] for r in p50[1:])
sa["cnn_50_clients"] = {"coordinator_peak_rss_mb": round(s50["coordinator_peak_rss_kb"] / 1024, 1),
                        "rss_over_model": round(s50["coordinator_peak_rss_kb"] * 1024 / (4 * params["cnn"]), 2),
                        "neighbors": r50[-1]["neighbors"], "threshold": r50[-1]["threshold"],
                        "secure_round_s": round(t50, 3), "plain_round_s": round(tp50, 3),
                        "secure_over_plain": round(t50 / tp50, 3),
                        "bytes_up_per_client_over_fp32": round(st.mean(r["bytes_up"] for r in r50[1:]) / r50[-1]["participants"] / (4 * params["cnn"]), 4),
                        "participants": r50[-1]["participants"]}
sa["note"] = ("no local training (--local-epochs 0): zero updates with full-size masks and crypto; "
              "round = plan + advertise + share + masked + unmask + evaluation on 2 images per site; "
              "the killed client is noticed when its connection closes (ZeroMQ monitor); 50 clients at 11M parameters is not run: 50 LibTorch client "
              "processes do not fit this 24 GiB machine")
res["secure_aggregation"] = sa
json.dump(res, open(out + "/bench.json", "w"), indent=1)
print(json.dumps(sa, indent=1))
PYEOF
fi

# ---- the upload width ---------------------------------------------------------------
# Pack / unpack-add speed on one core beside memcpy of the same packed bytes,
# then the default simulation (same seed) at each upload_bits: w = upload_bits
# + 5 at 10 sites (27: 32 bits, the encoding of before; 15: 20; 11: 16; 7: 12;
# 3: 8). Secure runs are not repeatable bit for bit (the stochastic rounding
# draws fresh dither, and each site's training seed hashes the model), so the
# 32-bit row is run twice: their difference is the noise the others sit in.
# An entry B:fixed keeps the fixed clip (2.0, --coord-opt clip_auto=off) for every round;
# plain B clips each round at 4 x the largest |value| of the last mean update
# (the default). The baseline is 27:fixed, the encoding before issue 15.
if part width; then
echo "bench: upload width: pack / unpack-add speed"
enc=$("$BUILD/tests/bench_encoding" 1659266 7)
WIDTH_ROUNDS=${BENCH_WIDTH_ROUNDS:-20}
WIDTHS=${BENCH_UPLOAD_BITS:-27:fixed 27:fixed 27 15 11 7 3 11:fixed 3:fixed}
k=0
for entry in $WIDTHS; do
    k=$((k + 1))
    ub=${entry%:fixed}
    auto=on
    [ "$ub" = "$entry" ] || auto=off
    # BENCH_REUSE=1: tabulate the runs already in OUT (e.g. after a change to the table)
    [ -n "${BENCH_REUSE:-}" ] && [ -s "$OUT/width-$k/metrics.jsonl" ] && continue
    echo "bench: upload width: default simulation, upload_bits $ub, clip-auto $auto, $WIDTH_ROUNDS rounds"
    "$BIN/medfed-sim" --rounds "$WIDTH_ROUNDS" --upload-bits "$ub" --coord-opt clip_auto="$auto" --out "$OUT/width-$k" \
        > "$OUT/width-$k.log" 2>&1 || { echo "bench: width run $k failed, see $OUT/width-$k.log"; exit 1; }
done
"$PY" - "$OUT" "$enc" $WIDTHS <<'PYEOF'
import json, os, re, sys, statistics as st
out, enc, widths = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
res = json.load(open(out + "/bench.json")) if os.path.exists(out + "/bench.json") else {}
params = 1659266
table = []
for k, ub in enumerate(widths, 1):
    rows = [json.loads(l) for l in open("%s/width-%d/metrics.jsonl" % (out, k))]
    bits = sorted(set(int(b) for b in re.findall(r"event=keys-relayed .* bits=(\d+)",
                                               open("%s/width-%d/logs/coordinator.log" % (out, k)).read())))
    last = rows[-1]
    l5 = rows[-5:] # the last round alone swings by points between rounds (non-iid sites)
    clipped = [int(x) for f in os.listdir("%s/width-%d/logs" % (out, k)) if f.startswith("site-")
               for x in re.findall(r"WARN round=\d+ (\d+) update values clipped",
                                   open("%s/width-%d/logs/%s" % (out, k, f)).read())]
    fixed = ub.endswith(":fixed")
    clips = [r["clip"] for r in rows if r.get("clip") is not None]
    table.append({"upload_bits": int(ub.split(":")[0]), "bits": bits[0] if len(bits) == 1 else bits,
                  "clip": "fixed 2.0" if fixed else "auto", "clip_first_last": clips[:1] + clips[-1:],
                  "rounds": len(rows), "aborted": sum(r["aborted"] for r in rows),
                  "final_val_accuracy": last["val_accuracy"], "final_val_auc": last["val_auc"],
                  "final_val_loss": last["val_loss"],
                  "last5_val_accuracy": round(st.mean(r["val_accuracy"] for r in l5), 4),
                  "last5_val_auc": round(st.mean(r["val_auc"] for r in l5), 4),
                  "values_clipped": sum(clipped), "site_rounds_clipping": len(clipped),
                  "bytes_up_per_site_over_fp32": round(st.mean(r["bytes_up"] for r in rows) /
                                                       last["participants"] / (4 * params), 4)})
full = [r for r in table if r["bits"] == 32 and r["clip"] != "auto"] or [r for r in table if r["bits"] == 32]
acc32 = st.mean(r["final_val_accuracy"] for r in full) if full else None
auc32 = st.mean(r["final_val_auc"] for r in full) if full else None
acc32_5 = st.mean(r["last5_val_accuracy"] for r in full) if full else None
for r in table:
    if acc32 is None or r["final_val_accuracy"] is None: continue
    r["accuracy_points_vs_32"] = round(100 * (r["final_val_accuracy"] - acc32), 2)
    r["last5_accuracy_points_vs_32"] = round(100 * (r["last5_val_accuracy"] - acc32_5), 2)
    r["auc_vs_32"] = round(r["final_val_auc"] - auc32, 4)
    r["meets_issue_15_bar"] = (r["bytes_up_per_site_over_fp32"] <= 0.63 and
                               r["accuracy_points_vs_32"] >= -0.5 and r["auc_vs_32"] >= -0.005)
res["upload_width"] = {"encoding_speed": enc, "table": table,
                       "config": "default simulation (10 sites, pneumoniamnist, dirichlet:0.5, cnn, seed 1)",
                       "note": "w = upload_bits + ceil(log2 10) + 1; *_vs_32: against the mean of the 32-bit "
                               "fixed-clip runs (the encoding before issue 15), whose spread is run-to-run "
                               "noise (fresh dither); clip auto: 4 x max |mean update| of the last round"}
json.dump(res, open(out + "/bench.json", "w"), indent=1)
print(json.dumps(res["upload_width"], indent=1))
PYEOF

fi

# ---- accuracy by strategy -------------------------------------------------------------
# The default simulation (the default recipe, secure aggregation on) under each
# strategy, and the centralised reference: the same model, rounds, local epochs
# and recipe on one site holding every training image (the same compute).
if part accuracy; then
ACC_ROUNDS=${BENCH_ACC_ROUNDS:-20}
STRATEGIES="fedavg:--server-opt,fedavg fedprox:--prox-mu,0.01 fedadam:--server-opt,fedadam fedyogi:--server-opt,fedyogi centralised:--centralised"
for entry in $STRATEGIES; do
    name=${entry%%:*}
    flags=$(echo "${entry#*:}" | tr ',' ' ')
    [ -n "${BENCH_REUSE:-}" ] && [ -s "$OUT/acc-$name/metrics.jsonl" ] && continue
    echo "bench: accuracy: default simulation, $name ($flags), $ACC_ROUNDS rounds"
    # shellcheck disable=SC2086
    "$BIN/medfed-sim" --rounds "$ACC_ROUNDS" $flags --out "$OUT/acc-$name" > "$OUT/acc-$name.log" 2>&1 ||
        { echo "bench: accuracy run $name failed, see $OUT/acc-$name.log"; exit 1; }
done
"$PY" - "$OUT" $STRATEGIES <<'PYEOF'
import json, os, sys, statistics as st
out, entries = sys.argv[1], sys.argv[2:]
res = json.load(open(out + "/bench.json")) if os.path.exists(out + "/bench.json") else {}
table = []
for e in entries:
    name, flags = e.split(":", 1)
    rows = [json.loads(l) for l in open("%s/acc-%s/metrics.jsonl" % (out, name))]
    done = [r for r in rows if not r["aborted"]]
    last, l5 = rows[-1], done[-5:]
    table.append({"strategy": name, "flags": flags.replace(",", " "), "rounds": len(rows),
                  "aborted": len(rows) - len(done),
                  "final_val_accuracy": last["val_accuracy"], "final_val_auc": last["val_auc"],
                  "final_val_loss": last["val_loss"],
                  "last5_val_accuracy": round(st.mean(r["val_accuracy"] for r in l5), 4),
                  "last5_val_auc": round(st.mean(r["val_auc"] for r in l5), 4),
                  "last5_val_loss": round(st.mean(r["val_loss"] for r in l5), 4),
                  "best_val_loss_round": min(done, key=lambda r: r["val_loss"])["round"],
                  "final_train_loss": last.get("train_loss")})
central = [r for r in table if r["strategy"] == "centralised"]
for r in table:
    if central and central[0]["last5_val_accuracy"]:
        r["fed_over_central_accuracy"] = round(r["last5_val_accuracy"] / central[0]["last5_val_accuracy"], 4)
        r["fed_over_central_auc"] = round(r["last5_val_auc"] / central[0]["last5_val_auc"], 4)
res["accuracy"] = {"config": "default simulation: 10 sites, pneumoniamnist, dirichlet:0.5, cnn, seed 1, "
                             "the default recipe, secure aggregation on (centralised: one plaintext site)",
                   "note": "last5_*: mean of the last five rounds (the final round alone swings by a point "
                           "or two on these non-iid sites); fed_over_central_*: last5 against the "
                           "centralised run's", "table": table}
json.dump(res, open(out + "/bench.json", "w"), indent=1)
print("| strategy | val accuracy final / last 5 | val AUC final / last 5 | val loss final / last 5 | accuracy fed / central |")
print("|---|---|---|---|---|")
for r in table:
    print("| %s | %.4f / %.4f | %.4f / %.4f | %.4f / %.4f | %s |" % (
        r["strategy"], r["final_val_accuracy"], r["last5_val_accuracy"], r["final_val_auc"],
        r["last5_val_auc"], r["final_val_loss"], r["last5_val_loss"], r.get("fed_over_central_accuracy", "-")))
PYEOF
fi

# ---- the hospital data path --------------------------------------------------------
part data && sh tests/bench/data_path.sh "$BIN" "$BUILD" "$OUT"
echo "bench: wrote $OUT/bench.json"
