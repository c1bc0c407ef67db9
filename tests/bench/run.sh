#!/bin/sh
# make bench: measures side by side in one run and writes one JSON file.
#   1. training images/s: the C shim vs the same model in Debian's python3-torch
#   2. coordinator FedAvg accumulation GB/s
#   3. the default simulation's round time, split into training and the rest
# usage: run.sh BIN_DIR BUILD_DIR OUT_DIR   (BENCH_ROUNDS, BENCH_IMAGES to shorten)
set -eu
BIN=$1
BUILD=$2
OUT=$3
ROUNDS=${BENCH_ROUNDS:-5}
IMAGES=${BENCH_IMAGES:-3000}
mkdir -p "$OUT"
PY=/usr/bin/python3

# Build the training benchmark against the shim (C, includes only model.h).
cc -std=c11 -O2 -I. -c tests/bench/bench_train.c -o "$BUILD/tests/bench_train.o"
g++ -o "$BUILD/tests/bench_train" "$BUILD/tests/bench_train.o" "$BUILD/model/model.o" -ltorch_cpu -lc10

echo "bench: training throughput (cnn, $IMAGES images), C shim and python3-torch alternately"
train_json=""
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

echo "bench: default simulation, $ROUNDS rounds"
"$BIN/medfed-sim" --rounds "$ROUNDS" --out "$OUT/sim" > "$OUT/sim.log" 2>&1

"$PY" - "$OUT" "[${train_json%,}]" "$fa1" "$fa11" <<'PYEOF'
import json, sys, statistics as st
out, train, fa1, fa11 = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
res = {"training": [], "fedavg": [fa1, fa11]}
for t in train:
    c = st.mean(r["images_per_s"] for r in t["c"]); p = st.mean(r["images_per_s"] for r in t["python"])
    res["training"].append({"arch": "cnn", "threads": t["threads"], "c_images_per_s": round(c, 1),
                            "python_images_per_s": round(p, 1), "c_over_python": round(c / p, 3)})
rows = [json.loads(l) for l in open(out + "/sim/metrics.jsonl")]
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
echo "bench: wrote $OUT/bench.json"
