# The coordinator's state directory, as the tests read it (sourced by
# tests/integration/suite_deploy.sh and tests/chaos/run.sh). Each function
# prints what is wrong and returns non-zero; $PY is a python3 (Debian's).
#
#   state_checkpoints_intact DIR      state.json parses; every round file and
#                                     model.safetensors parse whole (temp files
#                                     of an interrupted write are not checkpoints)
#   state_metrics_whole DIR           every line of metrics.jsonl is whole: ends
#                                     with a newline, a JSON object with a round
#   state_run_complete DIR TARGET     the run reached its last round: state.json
#                                     says round = started = the last metrics row;
#                                     rounds 1..K each have one row, in order; the
#                                     rows that count (all but those cut short by
#                                     a restart) are TARGET; every completed round
#                                     has its model, and model.safetensors is the
#                                     committed one
#   state_resumed_models_match LOG DIR INIT
#                                     every "state: resuming" line of LOG names
#                                     the SHA-256 (first 16 hex) of the tensor
#                                     bytes of the model it resumed from:
#                                     DIR/rounds/round-V.safetensors, or INIT for 0
: "${PY:=/usr/bin/python3}"

state_checkpoints_intact() {
    "$PY" - "$1" <<'PYEOF'
import json, os, struct, sys
d = sys.argv[1]
json.load(open(os.path.join(d, "state.json")))
files = [os.path.join(d, "rounds", f) for f in os.listdir(os.path.join(d, "rounds"))]
files.append(os.path.join(d, "model.safetensors"))
for p in files:
    if not os.path.exists(p) or ".tmp" in p: continue
    raw = open(p, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    end = max(v["data_offsets"][1] for k, v in hdr.items() if k != "__metadata__")
    if len(raw) != 8 + n + end:
        print("truncated:", p); sys.exit(1)
PYEOF
}

state_metrics_whole() {
    "$PY" - "$1" <<'PYEOF'
import json, os, sys
p = os.path.join(sys.argv[1], "metrics.jsonl")
if not os.path.exists(p): sys.exit(0)
data = open(p, "rb").read()
if data and not data.endswith(b"\n"):
    print("metrics.jsonl: last line torn: %r" % data.rsplit(b"\n", 1)[-1][:80]); sys.exit(1)
for i, l in enumerate(data.split(b"\n")[:-1], 1):
    try:
        r = json.loads(l)
        assert isinstance(r, dict) and isinstance(r.get("round"), int) and r["round"] >= 1
    except Exception:
        print("metrics.jsonl:%d: not a whole row: %r" % (i, l[:80])); sys.exit(1)
PYEOF
}

state_run_complete() {
    "$PY" - "$1" "$2" <<'PYEOF'
import hashlib, json, os, struct, sys
d, target = sys.argv[1], int(sys.argv[2])
def fail(*a):
    print(*a); sys.exit(1)
st = json.load(open(os.path.join(d, "state.json")))
rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
ids = [r["round"] for r in rows]
if ids != list(range(1, len(rows) + 1)):
    fail("metrics rounds not 1..%d in order, once each: %s" % (len(rows), ids))
cut = [r["round"] for r in rows if r["aborted"] and r.get("note", "").startswith("cut short")]
if len(rows) - len(cut) != target:
    fail("%d rows count toward the target (%d cut short by a restart: %s), target %d"
         % (len(rows) - len(cut), len(cut), cut, target))
if rows[-1]["round"] in cut:
    fail("the last row is a round cut short:", rows[-1])
if not (st["round"] == st["started"] == st["target"] == rows[-1]["round"]):
    fail("state.json %s, last metrics row is round %d" % (st, rows[-1]["round"]))
changed = [r["round"] for r in rows if not r["aborted"]]
if st["version"] != (changed[-1] if changed else 0):
    fail("state.json version %d, the last round with a new model is %s" % (st["version"], changed[-1:]))
def tensors(p):
    raw = open(p, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    spans = sorted(v["data_offsets"] for k, v in hdr.items() if k != "__metadata__")
    return hashlib.sha256(b"".join(raw[8 + n + a:8 + n + b] for a, b in spans)).hexdigest()
for r in changed:
    if not os.path.exists(os.path.join(d, "rounds", "round-%06d.safetensors" % r)):
        fail("round %d completed but rounds/ has no model for it" % r)
if st["version"] and tensors(os.path.join(d, "model.safetensors")) != \
        tensors(os.path.join(d, "rounds", "round-%06d.safetensors" % st["version"])):
    fail("model.safetensors is not round %d's model" % st["version"])
PYEOF
}

state_resumed_models_match() {
    "$PY" - "$1" "$2" "$3" <<'PYEOF'
import hashlib, json, os, re, struct, sys
lines = [l for l in open(sys.argv[1]) if "state: resuming" in l]
if not lines:
    print("no resume logged"); sys.exit(1)
def tensor_sha(p):
    raw = open(p, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    spans = sorted(v["data_offsets"] for k, v in hdr.items() if k != "__metadata__")
    return hashlib.sha256(b"".join(raw[8 + n + a:8 + n + b] for a, b in spans)).hexdigest()[:16]
for l in lines:
    m = re.search(r"model of round (\d+), sha256 ([0-9a-f]{16})", l)
    if not m:
        print("no model hash in:", l.strip()); sys.exit(1)
    v = int(m.group(1))
    p = os.path.join(sys.argv[2], "rounds", "round-%06d.safetensors" % v) if v else sys.argv[3]
    if tensor_sha(p) != m.group(2):
        print("resumed with %s, round %d's model is %s" % (m.group(2), v, tensor_sha(p))); sys.exit(1)
PYEOF
}
