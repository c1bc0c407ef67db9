# The research lead's admin commands on a deployed federation of four sites
# (sourced by run.sh; $WORK/a, the first test's run, gives the sites' data
# and the initial model): `medfed clients --json`, the coordinator's
# --fraction (half the live sites each round, drawn afresh each round),
# `medfed pause` then `medfed start`. Kits from `medfed provision`, CURVE,
# secure aggregation. A cohort of two is allowed on both sides: the
# coordinator with --collusion 0 --dropout 0, each site with [policy]
# min_cohort = 2, max_collusion = 0 (t = 2 of 2).
#
#   admin_clients_json_lists_each_site
#   admin_fraction_half_draws_two_of_four
#   admin_clients_json_part_in_last_round
#   admin_pause_finishes_round_then_start_resumes
#   admin_clients_json_stopped_site_not_live
#   admin_fraction_cohort_follows_seed_not_connection_order
#   admin_plaintext_stop_in_eval_rolls_back

A="$WORK/admin"
mkdir -p "$A"
asport=$(free_port)
aaport=$(free_port)
printf 'alpha\nbeta\ngamma\ndelta\n' > "$A/sites.txt"
"$BIN/medfed" provision --roster "$A/sites.txt" --out "$A/fed" --federation it-admin \
    --endpoint "tcp://127.0.0.1:$asport" --admin-endpoint "tcp://127.0.0.1:$aaport" \
    > "$A/provision.log" 2>&1
AADMIN="$A/fed/admin/admin.ini"
ASTATE="$A/state"
# Site k trains on $WORK/a's site-0(k mod 3): delta has alpha's data.
k=0
for site in alpha beta gamma delta; do
    src="$WORK/a/sites/site-0$((k % 3))"
    { sed 's/^threads = .*/threads = 1/' "$A/fed/sites/$site/client.ini"
      printf '\n[policy]\nmin_cohort = 2\nmax_collusion = 0\n'
      printf '\n[data]\nsource = idx\n'
      for s in train val; do
          printf '%s_images = %s\n%s_labels = %s\n' "$s" "$src/$s-images-idx3-ubyte.gz" \
              "$s" "$src/$s-labels-idx1-ubyte.gz"
      done; } > "$A/$site.ini"
    k=$((k + 1))
done
# acoord_start STATE_DIR: the coordinator, from the kit's coordinator.ini (which
# binds every interface; the test keeps to loopback).
acoord_start() {
    as_=$1
    shift
    "$BIN/medfed-coordinator" --config "$A/fed/coordinator/coordinator.ini" \
        --bind "tcp://127.0.0.1:$asport" --admin-bind "tcp://127.0.0.1:$aaport" \
        --state-dir "$as_" --init "$WORK/a/init.safetensors" --local-epochs 1 \
        --wait-for 4 --min-clients 2 --fraction 0.5 --collusion 0 --dropout 0 \
        --heartbeat-timeout 20 "$@" >> "$A/coord.log" 2>&1 &
    acoord=$!
}
# asites_start SITE...: their daemons, one at a time, each once the one before
# it has registered: the coordinator learns of the sites in this order.
asites_start() {
    n_=0
    for site in "$@"; do
        "$BIN/medfed-client" --config "$A/$site.ini" >> "$A/$site.log" 2>&1 &
        eval "apid_$site=\$!"
        n_=$((n_ + 1))
        admin_wait "$AADMIN" "d['registered'] == $n_ and d['live'] == $n_" 30 > /dev/null || return 1
    done
}
# astop PID...: SIGTERM, then SIGKILL to any still there after 10 s (a daemon
# that does not stop must not hang the suite).
astop() {
    for p_ in "$@"; do [ -n "$p_" ] && kill "$p_" 2>/dev/null; done
    for p_ in "$@"; do
        [ -n "$p_" ] || continue
        i_=0
        while kill -0 "$p_" 2>/dev/null && [ $i_ -lt 100 ]; do sleep 0.1; i_=$((i_ + 1)); done
        kill -9 "$p_" 2>/dev/null
        wait "$p_" 2>/dev/null
    done
}
acoord="" apid_alpha="" apid_beta="" apid_gamma="" apid_delta=""
acoord_start "$ASTATE"

# The later tests need the four sites registered: without them they fail at once.
aup=0
asites_start alpha beta gamma delta &&
    admin_wait "$AADMIN" 'd["live"] == 4 and d["state"] == "idle"' 60 > /dev/null && aup=1

# `medfed clients --json` prints one JSON object: every site on the roster,
# with its index (its roster line), live, removed, last seen, its sample
# counts and its part in the round.
t=admin_clients_json_lists_each_site
if [ $aup -eq 1 ] &&
   "$BIN/medfed" clients --json --config "$AADMIN" > "$A/clients-1.json" 2> "$A/clients-1.err" &&
   "$PY" - "$A/clients-1.json" "$A/fed/coordinator/roster.txt" "$A" <<'PYEOF'
import gzip, json, sys
d = json.load(open(sys.argv[1]))   # the whole output is one JSON value
roster = [l.split()[0] for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")]
def count(ini, key):               # samples in the IDX labels file the site's ini names
    path = [l.split("=", 1)[1].strip() for l in open(ini) if l.startswith(key + " =")][-1]
    return int.from_bytes(gzip.open(path).read(8)[4:8], "big")
want = ["site", "index", "live", "removed", "last_seen_s", "n_train", "n_val", "train", "eval"]
errs = []
if d.get("ok") is not True or not isinstance(d.get("clients"), list):
    errs.append("no ok/clients")
else:
    cs = d["clients"]
    if sorted((c.get("index"), c.get("site")) for c in cs) != list(enumerate(roster)):
        errs.append("sites/indices %s, roster %s" % ([(c.get("index"), c.get("site")) for c in cs], roster))
    for c in cs:
        ini = "%s/%s.ini" % (sys.argv[3], c.get("site"))
        missing = [k for k in want if k not in c]
        if missing:
            errs.append("%s lacks %s" % (c.get("site"), missing)); continue
        if (c["live"] is not True or c["removed"] is not False or
                not 0 <= c["last_seen_s"] < 20 or c["train"] != "idle" or c["eval"] != "idle" or
                c["n_train"] != count(ini, "train_labels") or c["n_val"] != count(ini, "val_labels")):
            errs.append("wrong: %s" % c)
if errs:
    print("\n".join(errs)); print(json.dumps(d)[:2000])
sys.exit(1 if errs else 0)
PYEOF
then ok $t; else bad $t "see $A/clients-1.json"; cat "$A/clients-1.err" 2>/dev/null; tail -5 "$A/coord.log"; fi

# --fraction 0.5 with four live sites: each round's cohort is ceil(0.5 * 4) = 2
# sites, both in the secure sum (t = 2); the cohort is drawn again each round
# (from the seed and the round: with the default seed the four rounds do not
# all pick the same pair).
t=admin_fraction_half_draws_two_of_four
"$BIN/medfed" start --rounds 4 --config "$AADMIN" > "$A/start-1.out" 2>&1
if [ $aup -eq 1 ] && admin_wait "$AADMIN" 'd["completed"] == 4 and d["state"] == "idle"' 240 > /dev/null &&
   json_check "$ASTATE/metrics.jsonl" 'len(rows) == 4 and all(r["cohort"] == 2 and r["participants"] == 2 and r["threshold"] == 2 and len(set(r["included"])) == 2 and set(r["included"]) <= {0, 1, 2, 3} and r["dropped"] == [] and not r["aborted"] and r["val_accuracy"] is not None for r in rows) and len(set(tuple(sorted(r["included"])) for r in rows)) > 1'
then ok "$t ($("$PY" -c 'import json,sys; print(" ".join("r%d:%s" % (r["round"], "+".join(map(str, sorted(r["included"])))) for r in map(json.loads, open(sys.argv[1]))))' "$ASTATE/metrics.jsonl"))"
else bad $t "see $ASTATE/metrics.jsonl"; tail -5 "$A/coord.log"; fi

# After that last round, `medfed clients` gives each site its part in it: the
# two whose updates are in the sum "done" in training, the two left out
# "idle"; all four evaluated the new model ("done").
t=admin_clients_json_part_in_last_round
if [ $aup -eq 1 ] && [ -s "$ASTATE/metrics.jsonl" ] &&
   "$BIN/medfed" clients --json --config "$AADMIN" > "$A/clients-2.json" &&
   "$PY" - "$A/clients-2.json" "$ASTATE/metrics.jsonl" <<'PYEOF'
import json, sys
cs = json.load(open(sys.argv[1]))["clients"]
last = [json.loads(l) for l in open(sys.argv[2]) if l.strip()][-1]
train = {c["index"]: c["train"] for c in cs}
want = {i: "done" if i in last["included"] else "idle" for i in range(4)}
ok = train == want and all(c["eval"] == "done" and c["live"] for c in cs)
if not ok:
    print("round %d included %s; clients (index, train, eval): %s" % (last["round"], last["included"],
          [(c["index"], c["train"], c["eval"]) for c in sorted(cs, key=lambda c: c["index"])]))
sys.exit(0 if ok else 1)
PYEOF
then ok $t; else bad $t "see $A/clients-2.json"; fi

# `medfed pause` during the training of a round P (the start asks for rounds
# 5-9; P is 6 unless the polls missed it, and below 9 so that without the
# pause more rounds would follow): round P finishes (a full row, not
# aborted), then no round starts though every site is live and the target is
# 9; the pause is in state.json. `medfed start --rounds 2` goes on: rounds
# P+1 and P+2 run.
t=admin_pause_finishes_round_then_start_resumes
"$BIN/medfed" start --rounds 5 --config "$AADMIN" > "$A/start-2.out" 2>&1
P=0
if [ $aup -eq 1 ] && admin_wait "$AADMIN" 'd["round"] >= 6 and d["state"] == "training"' 120 > /dev/null &&
   "$BIN/medfed" pause --config "$AADMIN" > "$A/pause.json" 2>&1 &&
   json_check "$A/pause.json" 'rows[0]["ok"] and 6 <= rows[0]["round"] <= 8 and rows[0]["state"] not in ("waiting", "done")' &&
   P=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["round"])' "$A/pause.json") &&
   admin_wait "$AADMIN" 'd["completed"] == '$P' and d["state"] == "paused" and d["paused"]' 120 > "$A/paused-1.json" &&
   sleep 2 &&
   admin_wait "$AADMIN" 'd["completed"] == '$P' and d["round"] == '$P' and d["state"] == "paused" and d["target"] == 9 and d["live"] == 4' 5 > "$A/paused-2.json" &&
   json_check "$ASTATE/metrics.jsonl" '[r["round"] for r in rows] == list(range(1, '$P' + 1)) and not any(r["aborted"] for r in rows) and rows[-1]["participants"] == 2 and rows[-1]["val_accuracy"] is not None' &&
   json_check "$ASTATE/state.json" 'rows[0]["paused"] is True and rows[0]["round"] == '$P &&
   "$BIN/medfed" start --rounds 2 --config "$AADMIN" > "$A/start-3.out" 2>&1 &&
   admin_wait "$AADMIN" 'd["completed"] == '$P' + 2 and d["round"] == '$P' + 2 and d["state"] == "idle" and not d["paused"]' 120 > /dev/null &&
   json_check "$ASTATE/metrics.jsonl" '[r["round"] for r in rows] == list(range(1, '$P' + 3)) and not any(r["aborted"] for r in rows) and all(r["cohort"] == 2 for r in rows)'
then ok "$t (paused in round $P)"; else bad $t "pause in round $P: see $A/pause.json $A/coord.log"; cat "$A/pause.json" 2>/dev/null; tail -8 "$A/coord.log"; fi

# `medfed start --set KEY=VALUE`: a run with other settings, without a
# restart. A key fixed for the coordinator's life, an unknown key and a bad
# value are refused with the reason (and nothing starts); then one round with
# FedAdam, FedProx and another lr: its PLAN carries them (the coordinator's
# plan-sent line, a site's plan line) and it completes.
t=admin_start_set_overrides
if [ $aup -eq 1 ] &&
   C0=$("$BIN/medfed" status --json --config "$AADMIN" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["completed"])') &&
   ! "$BIN/medfed" start --set bind=tcp://127.0.0.1:9 --config "$AADMIN" > "$A/set-1.out" 2>&1 &&
   grep -q "'bind' is fixed for the coordinator's life" "$A/set-1.out" &&
   ! "$BIN/medfed" start --set no_such_key=1 --config "$AADMIN" > "$A/set-2.out" 2>&1 &&
   grep -q "unknown setting 'no_such_key'" "$A/set-2.out" &&
   ! "$BIN/medfed" start --set server_opt=adam --config "$AADMIN" > "$A/set-3.out" 2>&1 &&
   grep -q "'server_opt' must be fedavg, fedavgm, fedadagrad, fedyogi or fedadam, got 'adam'" "$A/set-3.out" &&
   "$BIN/medfed" start --rounds 1 --set server_opt=fedadam --set lr=0.013 --set prox_mu=0.05 \
        --config "$AADMIN" > "$A/set-4.out" 2>&1 &&
   admin_wait "$AADMIN" 'd["completed"] == '"$C0"' + 1 and d["state"] == "idle"' 120 > /dev/null &&
   grep -q "server optimiser now fedadam" "$A/coord.log" &&
   grep -q "event=plan-sent .* lr=0.013 prox_mu=0.05 " "$A/coord.log" &&
   cat "$A/alpha.log" "$A/beta.log" "$A/gamma.log" "$A/delta.log" | grep -q "event=plan .* lr=0.013 prox_mu=0.05 " &&
   json_check "$ASTATE/metrics.jsonl" 'not rows[-1]["aborted"] and rows[-1]["val_accuracy"] is not None and rows[-1]["train_loss"] > 0' &&
   record_check "$ASTATE/run.json" 'rec["overrides"][-1]["set"] == ["server_opt=fedadam", "lr=0.013", "prox_mu=0.05"] and rec["overrides"][-1]["before_round"] >= '"$C0"' + 1 and rec["config"]["server_opt"] == "fedadam" and rec["config"]["lr"] == 0.013'
then ok $t; else bad $t "see $A/set-*.out $A/coord.log $ASTATE/run.json"; cat "$A"/set-*.out 2>/dev/null; tail -5 "$A/coord.log"; fi

# A site whose daemon stops (SIGTERM) is shown not live; the others still are.
t=admin_clients_json_stopped_site_not_live
astop "$apid_delta"
if [ $aup -eq 1 ] && admin_wait "$AADMIN" 'd["live"] == 3' 30 > /dev/null &&
   "$BIN/medfed" clients --json --config "$AADMIN" > "$A/clients-3.json" &&
   json_check "$A/clients-3.json" 'rows[0]["ok"] and {c["site"]: c["live"] for c in rows[0]["clients"]} == {"alpha": True, "beta": True, "gamma": True, "delta": False}'
then ok $t; else bad $t "see $A/clients-3.json"; tail -5 "$A/coord.log"; fi

# The cohort is chosen by the seed (coordinator.ini: "Seed for cohort choice";
# start_round: "Cohort and graph draws depend on (seed, round) only"), not by
# the order in which the sites happened to connect: a new run with the same
# seed and roster, its sites connecting in the reverse order, picks the same
# sites (roster indices) in each of its first four rounds as the first run.
t=admin_fraction_cohort_follows_seed_not_connection_order
astop "$acoord" "$apid_alpha" "$apid_beta" "$apid_gamma"
acoord_start "$A/state-2"
if [ $aup -eq 1 ] && asites_start delta gamma beta alpha &&
   "$BIN/medfed" start --rounds 4 --config "$AADMIN" > "$A/start-4.out" 2>&1 &&
   admin_wait "$AADMIN" 'd["completed"] == 4 and d["state"] == "idle"' 240 > /dev/null &&
   "$PY" - "$ASTATE/metrics.jsonl" "$A/state-2/metrics.jsonl" <<'PYEOF'
import json, sys
def picks(p):
    return [sorted(r["included"]) for r in map(json.loads, open(p))][:4]
a, b = picks(sys.argv[1]), picks(sys.argv[2])
if a != b or len(b) != 4:
    print("same seed, sites connected in reverse order: rounds 1-4 picked %s, first run %s" % (b, a))
sys.exit(0 if a == b and len(b) == 4 else 1)
PYEOF
then ok $t; else bad $t "see $A/state-2/metrics.jsonl"; fi

# A plaintext round stopped in its evaluation (its aggregate applied, not
# committed) is rolled back: the model in memory is the last committed
# round's again (the SHA-256 the coordinator logs equals that of the tensor
# bytes of that round's file). The sites' policy allows plaintext FedAvg
# here (secure_aggregation = optional). EVAL is short: a round that
# completes before the stop arrives is simply tried again.
t=admin_plaintext_stop_in_eval_rolls_back
astop "$acoord" "$apid_alpha" "$apid_beta" "$apid_gamma" "$apid_delta"
for site in alpha beta gamma delta; do
    printf '\n[policy]\nsecure_aggregation = optional\n' >> "$A/$site.ini"
done
acoord_start "$A/state-2" --secagg off --ca ""
rolled=0
if [ $aup -eq 1 ] && asites_start alpha beta gamma delta; then
    for _ in 1 2 3; do
        c0=$(admin_wait "$AADMIN" 'd["state"] == "idle"' 60 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["completed"])')
        "$BIN/medfed" start --rounds 1 --config "$AADMIN" > /dev/null 2>&1
        admin_wait "$AADMIN" 'd["state"] == "evaluating"' 60 > /dev/null &&
            "$BIN/medfed" stop --config "$AADMIN" > "$A/stop.out" 2>&1
        c1=$(admin_wait "$AADMIN" 'd["state"] == "idle"' 60 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["completed"])')
        [ -n "$c0" ] && [ "$c1" = "$c0" ] && { rolled=$c0; break; }
    done
fi
if [ "$rolled" -gt 0 ] && "$PY" - "$A/coord.log" "$A/state-2" "$rolled" <<'PYEOF'
import hashlib, json, re, struct, sys
log, state, r = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = re.findall(r"state: model back to round %d's \(sha256 ([0-9a-f]{16})\)" % r, open(log).read())
raw = open("%s/rounds/round-%06d.safetensors" % (state, r), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
spans = sorted(v["data_offsets"] for k, v in hdr.items() if k != "__metadata__")
want = hashlib.sha256(b"".join(raw[8 + n + a:8 + n + b] for a, b in spans)).hexdigest()[:16]
if not m or m[-1] != want:
    print("rolled back to %s, round %d's model is %s" % (m[-1] if m else "nothing logged", r, want))
sys.exit(0 if m and m[-1] == want else 1)
PYEOF
then ok "$t (round $rolled)"; else bad $t "see $A/coord.log"; tail -8 "$A/coord.log"; fi

astop "$acoord" "$apid_alpha" "$apid_beta" "$apid_gamma" "$apid_delta"
