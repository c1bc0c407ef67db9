# Deployment (sourced by run.sh): kits from `medfed provision`, the coordinator
# and three client daemons run from them as separate processes over tcp on
# loopback with CURVE, rounds started with `medfed start`, the coordinator
# killed with SIGKILL at several moments and restarted, a site removed with
# SIGHUP, a round's model exported and scored.
# Uses $WORK/a (the first test's simulation) for the sites' data and the
# initial model.

D="$WORK/deploy"
mkdir -p "$D"
dport=$(free_port)
aport=$(free_port)
printf '# the federation\nalpha\nbeta\ngamma\n' > "$D/sites.txt"
"$BIN/medfed" provision --roster "$D/sites.txt" --out "$D/fed" --federation it \
    --endpoint "tcp://127.0.0.1:$dport" --admin-endpoint "tcp://127.0.0.1:$aport" \
    > "$D/provision.log" 2>&1
ADMIN="$D/fed/admin/admin.ini"
CINI="$D/fed/coordinator/coordinator.ini"
DSTATE="$D/state"
# The kit's coordinator.ini binds every interface; the test keeps to loopback.
dcoord_start() {
    "$BIN/medfed-coordinator" --config "$CINI" --bind "tcp://127.0.0.1:$dport" \
        --admin-bind "tcp://127.0.0.1:$aport" --state-dir "$DSTATE" \
        --init "$WORK/a/init.safetensors" --local-epochs 1 --wait-for 3 --min-clients 2 \
        --heartbeat-timeout 20 --dropout 0 --wait-timeout 20 >> "$D/coord.log" 2>&1 &
    dcoord=$!
}
# wait_status PYEXPR SECONDS: polls status until the expression over d holds
# (run.sh's admin_wait on this federation's admin socket).
wait_status() { admin_wait "$ADMIN" "$1" "$2"; }
# checkpoints_intact: every saved model parses whole; state.json is JSON.
# resumed_models_match: every resume trained on from the model it says: the
# SHA-256 (first 16 hex) the coordinator logs on resume equals that of the
# tensor bytes of rounds/round-V.safetensors (V: "model of round V"; 0 is the
# initial model). Both are tests/lib/state.sh's, shared with tests/chaos.
. "$ROOT/tests/lib/state.sh"
resumed_models_match() { state_resumed_models_match "$D/coord.log" "$DSTATE" "$WORK/a/init.safetensors"; }
checkpoints_intact() { state_checkpoints_intact "$DSTATE"; }

t=deploy_provisioned_sites_two_rounds_via_medfed_start
for k in 0 1 2; do
    site=$(sed -n "$((k + 2))p" "$D/sites.txt")
    # Later a site is taken off the roster and the other two carry on: each
    # hospital's policy accepts a cohort of two (the default is three).
    { cat "$D/fed/sites/$site/client.ini"
      printf '\n[policy]\nmin_cohort = 2\n'
      printf '\n[data]\nsource = idx\n'
      for s in train val; do
          printf '%s_images = %s\n%s_labels = %s\n' "$s" "$WORK/a/sites/site-0$k/$s-images-idx3-ubyte.gz" \
              "$s" "$WORK/a/sites/site-0$k/$s-labels-idx1-ubyte.gz"
      done; } > "$D/$site.ini"
done
# A fourth daemon with a valid-looking config whose key is not on the roster.
printf 'delta\n' > "$D/other.txt"
"$BIN/medfed" provision --roster "$D/other.txt" --out "$D/other" --endpoint "tcp://127.0.0.1:$dport" \
    > /dev/null 2>&1
sed "s|^site = .*|site = delta|; s|^curve_key = .*|curve_key = $D/other/sites/delta/curve.key|; s|^identity = .*|identity = $D/other/sites/delta/identity.key|; s|^certificate = .*|certificate = $D/other/sites/delta/identity.crt|; s|^ca = .*|ca = $D/other/sites/delta/ca.crt|" \
    "$D/alpha.ini" > "$D/delta.ini"
dcoord_start
for site in alpha beta gamma delta; do
    "$BIN/medfed-client" --config "$D/$site.ini" > "$D/$site.log" 2>&1 &
    eval "pid_$site=\$!"
done
if [ -s "$ADMIN" ] && wait_status 'd["live"] == 3 and d["state"] == "idle"' 60 > /dev/null &&
   "$BIN/medfed" start --rounds 2 --config "$ADMIN" > "$D/start.out" 2>&1 &&
   wait_status 'd["completed"] == 2 and d["state"] == "idle"' 180 > "$D/status2.json" &&
   json_check "$DSTATE/metrics.jsonl" 'len(rows) == 2 and all(r["participants"] == 3 and r["secagg"] and not r["aborted"] for r in rows)' &&
   grep -q 'zap: refused connection from 127.0.0.1: CURVE key .* is not on the federation roster' "$D/coord.log" &&
   grep -q 'transport: CURVE' "$D/alpha.log" &&
   "$BIN/medfed" clients --config "$ADMIN" | grep -q '^beta .* yes'
then ok $t; else bad $t "see $D/coord.log"; tail -20 "$D/coord.log"; fi
kill "$pid_delta" 2>/dev/null

t=deploy_export_scores
if "$BIN/medfed" export --round 2 --out "$D/r2.safetensors" --config "$ADMIN" > /dev/null &&
   "$BIN/medfed-eval" --model "$D/r2.safetensors" \
        --images "$ROOT/data/pneumoniamnist/val-images-idx3-ubyte.gz" \
        --labels "$ROOT/data/pneumoniamnist/val-labels-idx1-ubyte.gz" > "$D/r2.eval" &&
   "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["n"]==524 and 0<=d["accuracy"]<=1 else 1)' "$D/r2.eval" &&
   cmp -s "$D/r2.safetensors" "$DSTATE/rounds/round-000002.safetensors" &&
   cp "$DSTATE/rounds/round-000002.safetensors" "$DSTATE/rounds/round-000009.safetensors" &&
   ! "$BIN/medfed" export --round 9 --out "$D/r9.safetensors" --config "$ADMIN" 2> "$D/r9.err" &&
   grep -q 'round 9 has no committed model' "$D/r9.err" && [ ! -e "$D/r9.safetensors" ]
then ok $t; else bad $t "export"; cat "$D/r9.err" 2>/dev/null; fi
# A round file past the committed model (as a kill between its rename and the
# commit leaves) is not the run's: the restarts below must remove it.
orphan="$DSTATE/rounds/round-000009.safetensors"

# The coordinator is killed with SIGKILL at a different moment of each round
# and restarted; the clients reconnect by themselves. Each restart resumes from
# the last completed round; no checkpoint is ever truncated.
# line_soon FILE REGEX SECONDS: as soon as FILE has a line matching REGEX.
line_soon() {
    "$PY" - "$1" "$2" "$3" <<'PYEOF'
import re, sys, time
path, pat, end = sys.argv[1], re.compile(sys.argv[2]), time.time() + float(sys.argv[3])
while time.time() < end:
    try:
        if pat.search(open(path, errors="replace").read()):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.005)
sys.exit(1)
PYEOF
}
t=deploy_sigkill_coordinator_resumes
"$BIN/medfed" start --rounds 3 --config "$ADMIN" > /dev/null 2>&1
kill_ok=1
hit=""
for moment in training secure evaluating; do
    case $moment in
    secure) expr="d['state'] == 'training'" ;; # then the log line that opens sharing
    *) expr="d['state'] == '$moment'" ;;
    esac
    st=$(wait_status "$expr" 120) || { kill_ok=0; echo "never saw $moment"; break; }
    done_before=$(echo "$st" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["completed"])')
    round_before=$(echo "$st" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["round"])')
    # The secure phases after ADVERTISE last some 50 ms on loopback, too short
    # to catch by polling status: the kill follows the log line that opens
    # them (polled every 5 ms); it lands in sharing, masking or unmasking, or
    # just after the aggregate's commit, which the resume check allows.
    if [ $moment = secure ] &&
       ! line_soon "$D/coord.log" "round=$round_before phase=advertise event=keys-relayed" 60; then
        kill_ok=0; echo "never saw round $round_before's keys relayed"; break
    fi
    kill -9 $dcoord
    wait $dcoord 2>/dev/null
    checkpoints_intact || { kill_ok=0; break; }
    dcoord_start
    # A secure round killed after its aggregate was committed (before EVAL)
    # resumes from that round: the round in flight when status was read
    # (not always completed + 1: a round cut short by an earlier kill keeps
    # its id).
    if ! wait_status "d['resumed_from'] in ($done_before, $round_before) and d['completed'] >= d['resumed_from']" 30 > "$D/resumed-$moment.json"; then
        kill_ok=0; echo "no resume after kill in $moment"; break
    fi
    hit="$hit $moment@$done_before"
done
# A round cut short keeps its id (an aborted row) and does not count: five
# rounds complete, and the last completed round's id is what status says.
if [ $kill_ok -eq 1 ] && wait_status 'd["state"] == "idle"' 300 > "$D/after-kills.json" &&
   checkpoints_intact &&
   json_check "$DSTATE/metrics.jsonl" 'sorted(r["round"] for r in rows) == list(range(1, len(rows) + 1)) and sum(not r["aborted"] for r in rows) == 5 and all(r.get("note", "").startswith("cut short") for r in rows if r["aborted"]) and [r for r in rows if not r["aborted"]][-1]["round"] == rows[-1]["round"]' &&
   [ "$(grep -c 'state: resuming' "$D/coord.log")" -eq 3 ] && resumed_models_match &&
   [ ! -e "$orphan" ] &&
   grep -q 'state: removed .*/rounds/round-000009.safetensors: round 9 was cut short before its commit' "$D/coord.log"
then ok "$t ($hit)"; else bad $t "kills:$hit"; tail -30 "$D/coord.log"; ls "$DSTATE/rounds"; fi
# The round ids the next tests run: after the last one above.
R=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["completed"])' "$D/after-kills.json" 2>/dev/null || echo 5)
R1=$((R + 1))
R2=$((R + 2))

# Removing a site from the roster and sending SIGHUP shuts it out without a restart.
t=deploy_sighup_removes_site_and_watch_shows_phases
grep -v '^gamma ' "$D/fed/coordinator/roster.txt" > "$D/roster.new" &&
    cat "$D/roster.new" > "$D/fed/coordinator/roster.txt"
kill -HUP $dcoord
timeout 120 "$BIN/medfed" watch --until-idle --config "$ADMIN" > "$D/watch.out" 2>&1 &
wpid=$!
sleep 1
"$BIN/medfed" start --rounds 1 --config "$ADMIN" > /dev/null 2>&1
wait $wpid
wrc=$?
if wait_status 'd["completed"] == '$R1' and d["state"] == "idle"' 120 > /dev/null &&
   [ $wrc -eq 0 ] && grep -q "round=$R1 phase=training cohort=2" "$D/watch.out" &&
   grep -q "round=$R1 phase=evaluating" "$D/watch.out" &&
   grep -q "round=$R1 phase=complete participants=2" "$D/watch.out" &&
   grep -q "round=$R1 phase=idle completed=$R1" "$D/watch.out" &&
   { grep -q 'site=gamma event=removed-from-roster' "$D/coord.log" ||
     # a coordinator restarted by the last kill never knew gamma: it must
     # not register after the SIGHUP (ZAP refuses its key)
     ! sed -n '/SIGHUP: roster re-read/,$p' "$D/coord.log" | grep -q 'site=gamma .*event=registered'; } &&
   json_check "$DSTATE/metrics.jsonl" 'rows[-1]["round"] == '$R1' and rows[-1]["participants"] == 2 and not rows[-1]["aborted"]'
then ok $t; else bad $t "see $D/coord.log"; tail -20 "$D/coord.log"; fi

# The state directory refuses the commit of a secure aggregate (rounds/ made
# a file): the coordinator says so, evaluates the model it holds and pauses
# rather than start rounds it could not record; with rounds/ back, `medfed
# start` goes on and commits. It runs rounds R1+1 and R1+2.
t=deploy_commit_failure_pauses
mv "$DSTATE/rounds" "$D/rounds.aside" && : > "$DSTATE/rounds"
"$BIN/medfed" start --rounds 2 --config "$ADMIN" > /dev/null 2>&1
if wait_status 'd["state"] == "paused"' 120 > "$D/paused.json" &&
   grep -q "the aggregated model could not be committed -> paused" "$D/coord.log" &&
   json_check "$D/paused.json" 'rows[0]["completed"] == '$R1' and rows[0]["round"] == '$((R1 + 1)) &&
   sleep 2 && wait_status 'd["state"] == "paused" and d["round"] == '$((R1 + 1)) 5 > /dev/null &&
   rm "$DSTATE/rounds" && mv "$D/rounds.aside" "$DSTATE/rounds" &&
   "$BIN/medfed" start --rounds 1 --config "$ADMIN" > /dev/null 2>&1 &&
   wait_status 'd["state"] == "idle" and d["completed"] == '$((R1 + 2)) 120 > /dev/null &&
   checkpoints_intact
then ok $t; else bad $t "see $D/coord.log"; tail -15 "$D/coord.log"; [ -d "$D/rounds.aside" ] && rm -f "$DSTATE/rounds" && mv "$D/rounds.aside" "$DSTATE/rounds"; fi
R2=$((R2 + 2))

# `medfed stop` after the aggregate was applied (evaluation) rolls the model
# back: the state stays at the last completed round, and a restart resumes there.
# A secure round's aggregate is committed before its evaluation (the sites
# released their shares for the old model once): stopped in EVAL, the round
# ends with that model, and a restart resumes from it.
t=deploy_stop_during_evaluation_keeps_state
"$BIN/medfed" start --rounds 1 --config "$ADMIN" > /dev/null 2>&1
if wait_status "d['state'] == 'evaluating'" 120 > /dev/null &&
   "$BIN/medfed" stop --config "$ADMIN" > "$D/stop.out" 2>&1 &&
   wait_status 'd["state"] == "idle" and d["completed"] == '$R2 30 > /dev/null &&
   kill -9 $dcoord && { wait $dcoord 2>/dev/null; checkpoints_intact; } && dcoord_start &&
   wait_status 'd["resumed_from"] == '$R2' and d["completed"] == '$R2' and d["round"] == '$R2 30 > /dev/null &&
   json_check "$DSTATE/metrics.jsonl" 'rows[-1]["round"] == '$R2' and not rows[-1]["aborted"]' &&
   resumed_models_match &&
   cmp -s "$DSTATE/model.safetensors" "$DSTATE/rounds/$(printf 'round-%06d.safetensors' $R2)"
then ok $t; else bad $t "see $D/coord.log"; tail -15 "$D/coord.log"; fi

# Each secure round's clip comes from the aggregate of the round before it
# (clip_auto): clip = min(2, max(2 / 1024, 4 x max |model_p - model_pp|)),
# where p is the last round that changed the model and pp the one before (the
# round files; the server optimiser is FedAvg with lr 1, so their difference
# is the mean update). It must hold across the coordinator kills above: the
# clip a restart uses is state.json's, not the configured one; and the next
# round's clip is in state.json now.
t=deploy_clip_follows_last_aggregate_across_restarts
if "$PY" - "$DSTATE" "$WORK/a/init.safetensors" <<'PYEOF'
import array, json, os, struct, sys
d, init = sys.argv[1], sys.argv[2]
def tensors(p):
    raw = open(p, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = array.array("f")
    for a, b in sorted(v["data_offsets"] for k, v in hdr.items() if k != "__metadata__"):
        out.frombytes(raw[8 + n + a:8 + n + b])
    return out
def model(v):
    p = os.path.join(d, "rounds", "round-%06d.safetensors" % v) if v else init
    return tensors(p) if os.path.exists(p) else None
def rule(v, u):
    a, b = model(v), model(u)
    if a is None or b is None: return None
    m = max(abs(x - y) for x, y in zip(a, b))
    return min(2.0, max(2.0 / 1024, 4 * m))
rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
versions = [0]  # the model versions in order: every round that changed the model
checked = 0
for r in rows:
    if r["aborted"]: continue
    if "clip" in r:
        want = 2.0 if len(versions) == 1 else rule(versions[-1], versions[-2])
        if want is not None:
            if abs(r["clip"] - want) > 1e-5 + 1e-3 * want:
                print("round %d: clip %g, the last aggregate gives %g" % (r["round"], r["clip"], want)); sys.exit(1)
            checked += 1
    versions.append(r["round"])
st = json.load(open(os.path.join(d, "state.json")))
want = rule(versions[-1], versions[-2])
if want is None or abs(st["clip"] - want) > 1e-5 + 1e-3 * want:
    print("state.json clip %s, the last aggregate gives %s" % (st.get("clip"), want)); sys.exit(1)
if checked < 4 or len(set(round(r["clip"], 6) for r in rows if "clip" in r)) < 3:
    print("too few rounds to check (%d)" % checked); sys.exit(1)
PYEOF
then ok $t; else bad $t "see $DSTATE/metrics.jsonl"; fi

# A site's CURVE key replaced on the roster (SIGHUP): the connection made with
# the old key is refused at once, without a restart.
t=deploy_sighup_replaced_key_cuts_old_connection
wait_status 'd["live"] == 2' 30 > /dev/null
"$PY" - "$D/fed/coordinator/roster.txt" <<'PYEOF'
import sys
p = sys.argv[1]
rows = [l.split() for l in open(p) if l.strip() and not l.startswith("#")]
with open(p, "w") as f:
    for r in rows:
        if r[0] == "beta": r[2] = "ab" * 32
        f.write(" ".join(r) + "\n")
PYEOF
kill -HUP $dcoord
sleep 3
if grep -q "site=beta refused: this connection's key is no longer the site's key on the roster" "$D/coord.log" &&
   wait_status 'd["live"] == 1' 30 > /dev/null
then ok $t; else bad $t "see $D/coord.log"; tail -15 "$D/coord.log"; fi

kill $dcoord 2>/dev/null
wait $dcoord 2>/dev/null
kill $pid_alpha $pid_beta $pid_gamma 2>/dev/null
wait $pid_alpha $pid_beta $pid_gamma 2>/dev/null

# Without an admin socket, a state directory whose run is complete is not run
# again: the coordinator says so and exits 0 (it does not wait forever).
t=deploy_complete_run_not_rerun
cp -r "$DSTATE" "$D/copy"
# As if a crash came between a round's metrics row and its commit: the row
# of an uncommitted round must go on restart (the round runs again).
printf '{"round":%d,"aborted":false,"note":"written before a crash"}\n' $((R2 + 1)) >> "$D/copy/metrics.jsonl"
sport=$(free_port)
timeout 30 "$BIN/medfed-coordinator" --bind "tcp://127.0.0.1:$sport" --init "$WORK/a/init.safetensors" \
    --out "$D/copy" --rounds $R2 --secagg off > "$D/copy.log" 2>&1
crc=$?
if [ $crc -eq 0 ] && grep -q "round $R2 of $R2 already ran: nothing to do" "$D/copy.log" &&
   cmp -s "$D/copy/state.json" "$DSTATE/state.json" &&
   grep -q "dropped 1 metrics row(s) of unfinished rounds" "$D/copy.log" &&
   cmp -s "$D/copy/metrics.jsonl" "$DSTATE/metrics.jsonl"
then ok $t; else bad $t "coord=$crc"; cat "$D/copy.log"; fi

# Config mistakes name the file and line; the commented example config parses.
t=deploy_coordinator_config_errors
printf '[coordinator]\nbind = tcp://127.0.0.1:1\nroundz = 3\n' > "$D/bad.ini"
printf '[coordinator]\nrounds = many\n' > "$D/bad2.ini"
"$BIN/medfed-coordinator" --config "$D/bad.ini" > "$D/bad.out" 2>&1; brc=$?
"$BIN/medfed-coordinator" --config "$D/bad2.ini" > "$D/bad2.out" 2>&1; brc2=$?
"$BIN/medfed-coordinator" --config "$ROOT/configs/coordinator.ini" --init "$D/missing.safetensors" \
    --state-dir "$D/example-state" --admin-bind "" > "$D/example.out" 2>&1; erc=$?
if [ $brc -eq 2 ] && grep -q "bad.ini:3: unknown key 'roundz' in \[coordinator\]" "$D/bad.out" &&
   [ $brc2 -eq 2 ] && grep -q "bad2.ini:2: 'rounds' must be an integer" "$D/bad2.out" &&
   [ $erc -ne 0 ] && grep -q 'missing.safetensors' "$D/example.out" &&
   ! grep -q 'coordinator.ini:' "$D/example.out"
then ok $t; else bad $t "see $D/bad.out $D/example.out"; cat "$D/bad.out" "$D/example.out"; fi

# --install-dir: the kits' configs name the installed paths.
t=deploy_provision_install_dir
printf 'north\n' > "$D/inst.txt"
if "$BIN/medfed" provision --roster "$D/inst.txt" --out "$D/inst" --endpoint tcp://fl.example.org:7700 \
        --install-dir /etc/medfed > /dev/null 2>&1 &&
   grep -qx 'identity = /etc/medfed/identity.key' "$D/inst/sites/north/client.ini" &&
   grep -qx 'curve_key = /etc/medfed/curve.key' "$D/inst/sites/north/client.ini" &&
   grep -qx 'roster = /etc/medfed/roster.txt' "$D/inst/coordinator/coordinator.ini" &&
   grep -qx 'state_dir = /var/lib/medfed-coordinator/state' "$D/inst/coordinator/coordinator.ini" &&
   grep -qx 'admin_key = /etc/medfed/admin.key' "$D/inst/admin/admin.ini" &&
   ! grep -rq "$D/inst" "$D/inst/sites/north/client.ini" "$D/inst/coordinator/coordinator.ini" &&
   ! "$BIN/medfed" provision --roster "$D/inst.txt" --out "$D/inst2" --endpoint tcp://x:1 \
        --install-dir relative/dir 2> "$D/inst.err" && grep -q 'must be an absolute path' "$D/inst.err"
then ok $t; else bad $t "see $D/inst"; fi

# medfed-coordinator --check: one JSON object, nothing written.
t=deploy_coordinator_check
"$BIN/medfed-coordinator" --config "$CINI" --init "$WORK/a/init.safetensors" --state-dir "$DSTATE" \
    --check --json > "$D/check.json" 2> "$D/check.err"; crc=$?
"$BIN/medfed-coordinator" --config "$CINI" --init "$WORK/a/init.safetensors" --state-dir "$D/nostate" \
    --check --json > "$D/check2.json" 2> /dev/null; crc2=$?
cp "$D/fed/coordinator/curve.key" "$D/open.key" && chmod 644 "$D/open.key"
"$BIN/medfed-coordinator" --config "$CINI" --init "$WORK/a/init.safetensors" --curve-key "$D/open.key" \
    --state-dir "$DSTATE" --check --json > "$D/check3.json" 2> /dev/null; crc3=$?
if [ $crc -eq 0 ] && json_check "$D/check.json" 'rows[0]["ok"] and rows[0]["model"]["params"] == 1659266 and rows[0]["roster"]["certificates"] and rows[0]["state"]["resumes_after_round"] == '$R2' and rows[0]["state"]["completed"] == '$R2 &&
   [ $crc2 -eq 0 ] && json_check "$D/check2.json" 'rows[0]["state"]["new_run"]' && [ ! -e "$D/nostate" ] &&
   [ $crc3 -eq 1 ] && json_check "$D/check3.json" 'not rows[0]["ok"] and "chmod 600" in rows[0]["transport"]["reason"]'
then ok $t; else bad $t "see $D/check*.json"; cat "$D/check.json" "$D/check.err" "$D/check3.json"; fi
