# Integration suite: the client daemon as hospital IT runs it (sourced by
# run.sh, after its first run left site kits in $WORK/a): reconnecting to a
# restarted coordinator, a client killed and restarted mid-federation (the
# test build's --die-at, $HBIN), --check, SIGTERM during training, a silent
# network path.

# wait_log FILE PATTERN N SECONDS: until FILE has N lines matching PATTERN.
wait_log() {
    i=0
    # (a log not created yet counts 0: its writer may not have started)
    while n=$(grep -c -- "$2" "$1" 2>/dev/null); [ "${n:-0}" -lt "$3" ]; do
        i=$((i + 1))
        [ $i -gt $(($4 * 10)) ] && return 1
        sleep 0.1
    done
}

# client_kits DIR PORT [SED]: c0..c2.ini from the first run's site kits
# (CURVE, secure aggregation), pointed at PORT; reconnects back off to 2 s.
# These three sites lose one of them mid-round on purpose: each accepts a
# cohort of two in its policy (the default min_cohort is 3).
client_kits() {
    mkdir -p "$1"
    for k in 0 1 2; do
        sed "s|tcp://127.0.0.1:[0-9]*|tcp://127.0.0.1:$2|; ${3:-}" "$WORK/a/sites/site-0$k/client.ini" \
            > "$1/c$k.ini"
        # (some of these tests run plaintext rounds: the policy allows them)
        printf '[policy]\nmin_cohort = 2\nsecure_aggregation = optional\n[client]\nreconnect_max = 2\n' >> "$1/c$k.ini"
    done
}

# coordinator DIR PORT ARGS...: a CURVE coordinator with the first run's roster.
coordinator() {
    cd_=$1 cp_=$2
    shift 2
    "$BIN/medfed-coordinator" --bind "tcp://127.0.0.1:$cp_" --init "$WORK/a/init.safetensors" \
        --roster "$WORK/a/roster.txt" --curve-secret "$WORK/a/coordinator.key" \
        --local-epochs 1 --heartbeat-timeout 20 --wait-timeout 60 "$@" >> "$cd_/coord.log" 2>&1 &
    cpid=$!
}

# start_clients DIR: the daemons of DIR/c0..c2.ini ($pids), once all registered.
start_clients() {
    pids=""
    for k in 0 1 2; do
        "$BIN/medfed-client" --config "$1/c$k.ini" > "$1/c$k.log" 2>&1 &
        pids="$pids $!"
    done
    wait_log "$1/coord.log" 'event=registered' 3 30
}

now() { "$PY" -c 'import time; print("%.3f" % time.time())'; }

# C1. The coordinator is killed (SIGKILL) while three clients wait for a
#     round, and started again on the same endpoint 3 s later with an empty
#     state: the same client processes reconnect, say HELLO again and
#     complete a round with it. Each logs the outage and the reconnect once.
#     The --check summary sees the coordinator up, then down.
t=client_reconnects_after_coordinator_restart
d="$WORK/restart"
port=$(free_port)
client_kits "$d" "$port"
coordinator "$d" "$port" --state-dir "$d/first" --rounds 1 --wait-for 4
first=$cpid
start_clients "$d"
"$BIN/medfed-client" --config "$d/c2.ini" --check --json > "$d/check-up.json" 2> "$d/check-up.err"
check_up=$?
kill -9 $first
wait $first 2>/dev/null
"$BIN/medfed-client" --config "$d/c2.ini" --check --json > "$d/check-down.json" 2> "$d/check-down.err"
check_down=$?
sleep 3
t0=$(now)
coordinator "$d" "$port" --state-dir "$d/second" --rounds 1 --wait-for 3
second=$cpid
wait_log "$d/coord.log" 'event=registered' 6 30
t1=$(now)
wait $second
crc=$?
crcs=""
for p in $pids; do wait $p; crcs="$crcs$?"; done
if [ $check_up -eq 0 ] && [ $check_down -eq 1 ] && [ $crc -eq 0 ] && [ "$crcs" = "000" ] &&
   json_check "$d/check-up.json" 'rows[0]["ok"] and rows[0]["coordinator"]["reachable"] and rows[0]["coordinator"]["round"] == 0 and rows[0]["keys"] == "ok" and rows[0]["transport"] == "curve" and rows[0]["data"]["train"] > 0' &&
   json_check "$d/check-down.json" 'not rows[0]["ok"] and not rows[0]["coordinator"]["reachable"] and rows[0]["coordinator"]["reason"] and rows[0]["keys"] == "ok" and rows[0]["data"]["ok"]' &&
   json_check "$d/second/metrics.jsonl" 'len(rows) == 1 and rows[0]["participants"] == 3 and not rows[0]["aborted"] and rows[0]["secagg"]' &&
   [ "$(grep -c 'unreachable, retrying with backoff' "$d/c0.log")" -eq 1 ] &&
   [ "$(grep -c 'event=reconnected' "$d/c0.log")" -eq 1 ] &&
   grep -q 'event=shutdown' "$d/c1.log"
then
    ok $t
    echo "integration:      coordinator restart -> all 3 sites registered again in" \
        "$("$PY" -c "print('%.1f s' % ($t1 - $t0))")"
else
    bad $t "check=$check_up/$check_down coord=$crc clients=$crcs"
    tail -5 "$d/c0.log"
fi

# C2. A client killed (SIGKILL) in round 1 and started again: the
#     coordinator counts it as dropped in round 1, and it takes part in
#     round 2 with a fresh set of round keys.
t=client_killed_and_restarted_rejoins
d="$WORK/rejoin"
port=$(free_port)
client_kits "$d" "$port"
# Local training long enough (8 epochs) that the restarted daemon is back
# before round 1 ends.
coordinator "$d" "$port" --state-dir "$d/run" --rounds 2 --wait-for 3 --local-epochs 8
"$BIN/medfed-client" --config "$d/c0.ini" > "$d/c0.log" 2>&1 &
p0=$!
"$BIN/medfed-client" --config "$d/c2.ini" > "$d/c2.log" 2>&1 &
p2=$!
"$HBIN/medfed-client" --config "$d/c1.ini" --die-at train:1 > "$d/c1-first.log" 2>&1
first_rc=$?
"$BIN/medfed-client" --config "$d/c1.ini" > "$d/c1.log" 2>&1 &
p1=$!
wait $cpid
crc=$?
wait $p0; r0=$?
wait $p1; r1=$?
wait $p2; r2=$?
if [ $first_rc -eq 137 ] && [ $crc -eq 0 ] && [ "$r0$r1$r2" = "000" ] &&
   json_check "$d/run/metrics.jsonl" 'len(rows) == 2 and rows[0]["dropped"] == [1] and rows[0]["dropped_sites"] == ["site-01"] and rows[0]["participants"] == 2 and not rows[0]["aborted"] and rows[1]["participants"] == 3 and rows[1]["dropped"] == [] and not rows[1]["aborted"]' &&
   grep -q 'site=site-01 event=reconnected' "$d/coord.log"
then ok $t; else bad $t "first=$first_rc coord=$crc clients=$r0$r1$r2"; tail -3 "$d/coord.log"; fi

# C3. --check with a bad config line: the JSON names file:line, exit 1;
#     a key file others can read is refused with the reason.
t=client_check_bad_config_and_key_mode
d="$WORK/check"
mkdir -p "$d"
printf '[client]\nsite = x\ncoordinator = tcp://127.0.0.1:1\nreconnect_max = soon\n' > "$d/bad.ini"
"$BIN/medfed-client" --config "$d/bad.ini" --check --json > "$d/bad.json" 2> "$d/bad.err"
brc=$?
cp "$WORK/a/sites/site-00/curve.key" "$d/open.key"
chmod 644 "$d/open.key"
port=$(free_port)
sed "s|tcp://127.0.0.1:[0-9]*|tcp://127.0.0.1:$port|; s|^curve_key = .*|curve_key = $d/open.key|" \
    "$WORK/a/sites/site-00/client.ini" > "$d/open.ini"
"$BIN/medfed-client" --config "$d/open.ini" --check --json > "$d/open.json" 2> "$d/open.err"
orc=$?
if [ $brc -eq 1 ] && [ $orc -eq 1 ] &&
   json_check "$d/bad.json" 'not rows[0]["ok"] and rows[0]["config"].endswith("bad.ini:4: '"'"'reconnect_max'"'"' must be a number in [1, 3600], got '"'"'soon'"'"'")' &&
   json_check "$d/open.json" 'not rows[0]["ok"] and "open.key" in rows[0]["keys"] and rows[0]["data"]["ok"] and not rows[0]["coordinator"]["reachable"]'
then ok $t; else bad $t "bad=$brc open=$orc"; cat "$d/bad.json" "$d/open.json"; fi

# C4. SIGTERM during local training: the daemon stops training, logs one
#     line and exits 0 within 2 s.
t=client_sigterm_during_training
d="$WORK/sigterm"
port=$(free_port)
client_kits "$d" "$port"
coordinator "$d" "$port" --state-dir "$d/run" --rounds 1 --wait-for 1 --local-epochs 1000 \
    --secagg off
"$BIN/medfed-client" --config "$d/c0.ini" > "$d/c0.log" 2>&1 &
p0=$!
wait_log "$d/c0.log" 'phase=train event=plan' 1 30
sleep 1
t0=$(now)
kill -TERM $p0
wait $p0
trc=$?
t1=$(now)
kill -TERM $cpid 2>/dev/null
wait $cpid
secs=$("$PY" -c "print('%.2f' % ($t1 - $t0))")
if [ $trc -eq 0 ] && "$PY" -c "import sys; sys.exit(0 if $secs < 2 else 1)" &&
   grep -q 'event=training-stopped' "$d/c0.log" && grep -q 'signal received -> exit' "$d/c0.log"
then ok $t; echo "integration:      SIGTERM during training -> exit 0 in $secs s"
else bad $t "rc=$trc after $secs s"; tail -3 "$d/c0.log"; fi

# C5. A silent network path (the coordinator stopped with SIGSTOP: its TCP
#     connections stay open but nothing answers): the client notices after
#     link_timeout (3 s here), drops out, and reconnects once the coordinator
#     runs again; the round then completes.
t=client_notices_silent_link
d="$WORK/silent"
port=$(free_port)
client_kits "$d" "$port"
for k in 0 1 2; do printf 'link_timeout = 3\n' >> "$d/c$k.ini"; done
coordinator "$d" "$port" --state-dir "$d/run" --rounds 1 --wait-for 4
start_clients "$d"
kill -STOP $cpid
t0=$(now)
wait_log "$d/c0.log" 'event=disconnected' 1 15
t1=$(now)
kill -CONT $cpid
wait_log "$d/c0.log" 'event=reconnected' 1 40
wait_log "$d/c0.log" 'event=welcome' 2 20
kill -TERM $pids $cpid
wait $cpid
crcs=""
for p in $pids; do wait $p; crcs="$crcs$?"; done
secs=$("$PY" -c "print('%.1f' % ($t1 - $t0))")
if [ "$crcs" = "000" ] && grep -q 'event=disconnected' "$d/c0.log" &&
   grep -q 'event=reconnected' "$d/c0.log" && [ "$(grep -c 'event=welcome' "$d/c0.log")" -eq 2 ] &&
   "$PY" -c "import sys; sys.exit(0 if 2 <= $secs <= 8 else 1)"
then ok $t; echo "integration:      silent path noticed after $secs s (link_timeout 3 s)"
else bad $t "clients=$crcs noticed after $secs s"; tail -5 "$d/c0.log"; fi

# C6. Local training longer than the coordinator's heartbeat timeout (1 s
#     here): the heartbeats the client sends while it trains keep it in the
#     round, and its update is in the aggregate.
t=client_heartbeats_during_training
d="$WORK/hbtrain"
port=$(free_port)
client_kits "$d" "$port"
coordinator "$d" "$port" --state-dir "$d/run" --rounds 1 --wait-for 1 --local-epochs 12 \
    --secagg off --heartbeat-timeout 1
"$BIN/medfed-client" --config "$d/c0.ini" > "$d/c0.log" 2>&1 &
p0=$!
wait $cpid
crc=$?
wait $p0
r0=$?
if [ $crc -eq 0 ] && [ $r0 -eq 0 ] && ! grep -q 'silent past heartbeat timeout' "$d/coord.log" &&
   json_check "$d/run/metrics.jsonl" 'len(rows) == 1 and rows[0]["participants"] == 1 and not rows[0]["aborted"] and rows[0]["train_seconds"] > 1.5'
then ok $t; else bad $t "coord=$crc client=$r0"; tail -5 "$d/coord.log"; fi

# C7. Secure aggregation, one upload slot: a site granted its upload that
#     never sends its masked input (the test build's --stall-at; it still
#     heartbeats) holds the slot the others queue for. It is dropped at
#     transfer_timeout (4 s), long before the phase deadline (60 s), and the
#     round completes with the other two.
t=secure_upload_slot_held_by_silent_site
d="$WORK/sastall"
port=$(free_port)
client_kits "$d" "$port"
coordinator "$d" "$port" --state-dir "$d/run" --rounds 1 --wait-for 3 --upload-slots 1 \
    --transfer-timeout 4 --phase-timeout 60 --dropout 0
"$BIN/medfed-client" --config "$d/c0.ini" > "$d/c0.log" 2>&1 &
p0=$!
"$HBIN/medfed-client" --config "$d/c1.ini" --stall-at masked-upload:1 > "$d/c1.log" 2>&1 &
p1=$!
"$BIN/medfed-client" --config "$d/c2.ini" > "$d/c2.log" 2>&1 &
p2=$!
wait $cpid
crc=$?
for p in $p0 $p1 $p2; do kill -0 $p 2>/dev/null && sleep 2; done
kill $p0 $p1 $p2 2>/dev/null
wait
if [ $crc -eq 0 ] && grep -q 'event=stall-at' "$d/c1.log" &&
   grep -q 'client=site-01 event=dropped reason="nothing uploaded within transfer_timeout of its UPLOAD"' "$d/coord.log" &&
   json_check "$d/run/metrics.jsonl" 'len(rows) == 1 and rows[0]["participants"] == 2 and rows[0]["dropped_sites"] == ["site-01"] and not rows[0]["aborted"]'
then ok $t; else bad $t "coord=$crc"; grep -i 'warn\|drop' "$d/coord.log" | tail -5; fi

# C8. A site whose link went quiet (SIGSTOP) is dropped from the round; the
#     round completes with the other two and the run ends. The stopped site
#     wakes (SIGCONT) as the coordinator is closing: what it sends then comes
#     from a peer that is no longer live, which the closing coordinator
#     answers with SHUTDOWN, so the site exits by itself instead of retrying
#     a coordinator that is gone.
t=client_back_at_the_end_hears_shutdown
d="$WORK/lateback"
port=$(free_port)
client_kits "$d" "$port"
coordinator "$d" "$port" --state-dir "$d/run" --rounds 1 --wait-for 3 --dropout 0 \
    --heartbeat-timeout 5 --local-epochs 2
start_clients "$d"
late=$(echo $pids | awk '{print $3}')
kill -STOP $late
wait_log "$d/coord.log" 'event=federation-complete' 1 120
kill -CONT $late
wait $cpid
crc=$?
i=0
while [ $i -lt 40 ] && kill -0 $late 2>/dev/null; do sleep 0.25; i=$((i + 1)); done
kill -0 $late 2>/dev/null && late_rc=running || { wait $late; late_rc=$?; }
kill $pids 2>/dev/null
wait
if [ $crc -eq 0 ] && [ "$late_rc" = 0 ] && grep -q 'event=shutdown -> exit' "$d/c2.log" &&
   grep -q 'site=site-02 event=shutdown-on-return' "$d/coord.log" &&
   json_check "$d/run/metrics.jsonl" 'len(rows) == 1 and rows[0]["participants"] == 2 and not rows[0]["aborted"]'
then ok $t; else bad $t "coord=$crc late site=$late_rc"; tail -4 "$d/coord.log"; tail -3 "$d/c2.log"; fi

# C9. Resumable model download (protocol v4): site-02 reaches the coordinator
#     through a relay that resets its connection once 3 MB of the 6.6 MB
#     model have gone down it (silent for 1 s first, so that the site reads
#     what arrived: two whole 1 MiB chunks; an immediate RST would discard
#     whatever its kernel still held unread, a matter of CPU load, and the
#     resume point with it). The coordinator keeps the site's place
#     (heartbeat_timeout), the site reconnects and asks for the rest from
#     the first byte it lacks (2,097,152): it receives the model once, not
#     once and a half, and its update is in the secure aggregate with the other two.
t=client_resumes_model_download
d="$WORK/resume"
port=$(free_port)
rport=$(free_port)
client_kits "$d" "$port"
sed -i "s|tcp://127.0.0.1:$port|tcp://127.0.0.1:$rport|" "$d/c2.ini"
"$BUILD/tests/wan_relay" --listen "127.0.0.1:$rport" --connect "127.0.0.1:$port" \
    --cut-after 3000000 --cut-hold 1000 > "$d/relay.log" 2>&1 &
relay=$!
coordinator "$d" "$port" --state-dir "$d/run" --rounds 1 --wait-for 3 --dropout 0
start_clients "$d"
wait $cpid
crc=$?
kill $relay $pids 2>/dev/null
wait
model=$(grep -o 'event=model-received version=0 bytes=[0-9]*' "$d/c2.log" | head -1 | sed 's/.*bytes=//')
got=$(grep -o 'event=model-received version=0 .* received=[0-9]* resumed_at=[0-9]*' "$d/c2.log" | head -1)
received=$(echo "$got" | sed 's/.*received=\([0-9]*\).*/\1/')
resumed=$(echo "$got" | sed 's/.*resumed_at=//')
if [ $crc -eq 0 ] && grep -q 'cut after' "$d/relay.log" &&
   grep -q 'site=site-02 event=lost-mid-download' "$d/coord.log" &&
   grep -q 'site=site-02 event=fetch-resume' "$d/coord.log" &&
   [ -n "$model" ] && [ "${resumed:-0}" -eq 2097152 ] && [ "$received" -eq "$model" ] &&
   json_check "$d/run/metrics.jsonl" 'len(rows) == 1 and rows[0]["participants"] == 3 and "site-02" in rows[0]["included_sites"] and not rows[0]["aborted"]'
then ok "$t (resumed at $resumed of $model bytes)"
else bad $t "coord=$crc model=$model received=$received resumed=$resumed"; tail -4 "$d/coord.log"; tail -4 "$d/c2.log"; cat "$d/relay.log"; fi
