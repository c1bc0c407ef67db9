# suite_health.sh - what systemd sees of the daemons (sourced by run.sh: uses
# ok/bad/free_port, $BIN, $WORK, $PY and the first run's kits in $WORK/a).
#
# health_sd_notify_from_both_daemons
#   A CURVE coordinator and three sites run one secure round; the coordinator
#   and one site each have NOTIFY_SOCKET (a socket this test listens on, as
#   systemd's would) and WATCHDOG_USEC=3000000. Each sends READY=1 first, a
#   STATUS= naming round 1 and its phases, the round's result in "last: ...",
#   WATCHDOG=1 again and again, never more often than every second and never
#   3 s apart (that site's heartbeat is 5 s: its loop must wake for the
#   watchdog), and STOPPING=1 at the end. The other sites, without
#   NOTIFY_SOCKET, run as before.

t=health_sd_notify_from_both_daemons
d="$WORK/health"
mkdir -p "$d"
port=$(free_port)
for k in 0 1 2; do
    sed "s|tcp://127.0.0.1:[0-9]*|tcp://127.0.0.1:$port|" "$WORK/a/sites/site-0$k/client.ini" > "$d/c$k.ini"
    printf '[policy]\nmin_cohort = 2\n' >> "$d/c$k.ini"
done
sed -i 's/^heartbeat *=.*/heartbeat = 5/' "$d/c0.ini"
# The listener: one datagram socket per daemon, each message a line of JSON.
"$PY" - "$d" <<'PYEOF' &
import json, os, select, socket, sys, time
d = sys.argv[1]
socks = {}
for name in ("coord", "site"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(os.path.join(d, name + ".sock"))
    socks[s] = name
open(os.path.join(d, "listening"), "w").close()
out = open(os.path.join(d, "notify.jsonl"), "w")
end = time.time() + 120
while time.time() < end and not os.path.exists(os.path.join(d, "stop")):
    for s in select.select(list(socks), [], [], 0.1)[0]:
        m = s.recv(4096).decode()
        out.write(json.dumps({"from": socks[s], "t": time.monotonic(), "msg": m}) + "\n")
        out.flush()
PYEOF
lpid=$!
for _ in $(seq 50); do [ -e "$d/listening" ] && break; sleep 0.1; done
NOTIFY_SOCKET="$d/coord.sock" WATCHDOG_USEC=3000000 "$BIN/medfed-coordinator" \
    --bind "tcp://127.0.0.1:$port" --init "$WORK/a/init.safetensors" --roster "$WORK/a/roster.txt" \
    --curve-secret "$WORK/a/coordinator.key" --local-epochs 1 --heartbeat-timeout 20 \
    --wait-timeout 60 --rounds 1 --wait-for 3 --state-dir "$d/run" > "$d/coord.log" 2>&1 &
cpid=$!
NOTIFY_SOCKET="$d/site.sock" WATCHDOG_USEC=3000000 "$BIN/medfed-client" --config "$d/c0.ini" \
    > "$d/c0.log" 2>&1 &
p0=$!
sleep 4 # that site waits idle for the others: only the watchdog wakes its loop
"$BIN/medfed-client" --config "$d/c1.ini" > "$d/c1.log" 2>&1 &
p1=$!
"$BIN/medfed-client" --config "$d/c2.ini" > "$d/c2.log" 2>&1 &
p2=$!
wait $cpid; crc=$?
wait $p0; r0=$?
wait $p1; r1=$?
wait $p2; r2=$?
sleep 0.2
touch "$d/stop"
wait $lpid
if [ $crc -eq 0 ] && [ "$r0$r1$r2" = "000" ] && "$PY" - "$d/notify.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = True
for who, want in (("coord", ["round 1: ", "; last: round 1, 3 sites, accuracy 0."]),
                  ("site", ["loading data", "round 1: train", "; last: round 1 trained, loss ",
                            "; last: round 1 evaluated, accuracy 0."])):
    msgs = [r for r in rows if r["from"] == who]
    text = [r["msg"] for r in msgs]
    pings = [r["t"] for r in msgs if r["msg"] == "WATCHDOG=1"]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    status = [m for m in text if "STATUS=" in m]
    problems = []
    if not text or not text[0].startswith("READY=1\nSTATUS="): problems.append("READY=1 is not first")
    if sum("READY=1" in m for m in text) != 1: problems.append("READY=1 not exactly once")
    for w in want:
        if not any(w in m for m in status): problems.append("no STATUS with %r" % w)
    if len(pings) < 3: problems.append("%d watchdog pings" % len(pings))
    if gaps and min(gaps) < 1.0 - 0.02: problems.append("pings %.3f s apart" % min(gaps))
    ready = msgs[0]["t"] if msgs else 0
    gaps.append(pings[0] - ready if pings else 99)
    if max(gaps) >= 3.0: problems.append("a watchdog gap of %.3f s" % max(gaps))
    if not text[-1].startswith("STOPPING=1"): problems.append("last is not STOPPING=1")
    print("integration:      %s: %d messages, %d watchdog pings (at most %.2f s apart), %d status lines, e.g. %r" % (
        who, len(text), len(pings), max(gaps), len(status), status[len(status) // 2] if status else None))
    if problems:
        ok = False
        print("%s: %s" % (who, "; ".join(problems)))
        print("\n".join(repr(m) for m in text[:40]))
sys.exit(0 if ok else 1)
PYEOF
then ok $t; else bad $t "coord=$crc sites=$r0$r1$r2; see $d"; tail -n 3 "$d/coord.log" "$d/c0.log"; fi
