# The experiment record (run.json) and `medfed report` (sourced by run.sh:
# ok/bad/json_check, $BIN, $WORK, $ROOT; MEDFED_IT_ONLY=report runs it alone,
# after the first run, $WORK/a). Reuses the runs the other tests made where
# they are ($WORK/a, $WORK/b, the deployment's state directory), and makes one
# small coordinator run of its own, restarted once.
#   report_record_sim
#     run.json of the first run (medfed-sim, secure, 3 sites, 2 rounds): its
#     format, software, times and status; every coordinator setting, with the
#     values the sim passed; the model and the roster (hashes of the files);
#     the secure-aggregation parameters; the simulation's flags, data set,
#     partition, seed and each site's share; the final figures = the last row.
#   report_record_coordinator_resumed
#     a coordinator alone (plaintext, two sites of the first run, a state
#     directory): run.json written at start, completed at the end; restarted
#     for one more round, the record keeps its start, lists the resume and
#     ends with the figures of all three rounds.
#   report_record_deployed
#     the deployment's state directory (suite_deploy.sh, if it ran): every
#     restart of the killed coordinator is in the record, with its settings,
#     model hash, roster, status and figures.
#   report_renders_in_chromium
#     `medfed report` of each run folder (a simulation's, a coordinator's state
#     directory) loaded in headless Chromium (tests/integration/report_check.py):
#     no console error, nothing fetched, no script, every chart the metrics call
#     for rendered with its title, axis labels, ticks, marks and legend.
#   report_check_catches_broken_reports
#     the same check fails on copies of a good report broken on purpose: an
#     axis label dropped, an SVG attribute Chrome cannot parse, a polyline's
#     points garbled, the file cut short, an external image, a script, a
#     participation cell that contradicts the metrics.
#   report_usage_errors
#     a folder without metrics.jsonl, or no folder: a clear error, no file.

RP="$WORK/report"
mkdir -p "$RP"
CHECK="$ROOT/tests/integration/report_check.py"

t=report_record_sim
if "$PY" - "$WORK/a" "$ROOT/VERSION" <<'PYEOF'
import hashlib, json, os, re, sys
d = sys.argv[1]
rec = json.load(open(os.path.join(d, "run.json")))
rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
errs = []
def want(cond, what):
    if not cond: errs.append(what)
iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
want(rec.get("format") == 1, "format")
sw = rec.get("software", {})
want(sw.get("name") == "medfed" and sw.get("version") == open(sys.argv[2]).read().strip(), "software version")
want(re.match(r"^([0-9a-f]{7,40}(-dirty)?|unknown)$", sw.get("git_commit", "")), "git commit")
want(iso.match(rec.get("started_at", "")) and iso.match(rec.get("ended_at") or ""), "start and end times")
want(rec.get("started_at", "") <= (rec.get("ended_at") or ""), "ends after it starts")
want(rec.get("status") == "complete", "status %r" % rec.get("status"))
c = rec.get("config", {})
# Every setting of the coordinator's table, with what the sim passed.
for k in ("bind", "init", "state_dir", "roster", "curve_secret", "rounds", "wait_for", "min_clients",
          "fraction", "local_epochs", "batch", "lr", "momentum", "weight_decay", "server_opt",
          "server_lr", "server_momentum", "seed", "heartbeat_timeout", "phase_timeout", "secagg",
          "dropout", "collusion", "clip", "clip_auto", "clip_headroom", "upload_bits",
          "upload_slots", "download_slots", "transfer_timeout", "io_threads", "max_samples",
          "neighbors", "log_level", "resume", "autostart"):
    want(k in c, "config." + k)
want(c.get("rounds") == 2 and c.get("local_epochs") == 1 and c.get("seed") == 3 and c.get("lr") == 0.02
     and c.get("secagg") is True and c.get("server_opt") == "fedavg" and c.get("wait_for") == 3
     and c.get("heartbeat_timeout") == 20 and c.get("resume") is False and c.get("upload_bits") == 11
     and c.get("state_dir") == d, "config values %s" % json.dumps(c)[:400])
m = rec.get("model", {})
want(m.get("arch") == "cnn" and m.get("params") == 1659266 and m.get("classes") == 2 and
     m.get("input") == {"channels": 1, "height": 28, "width": 28} and
     m.get("init_sha256") == sha(os.path.join(d, "init.safetensors")), "model %s" % m)
r = rec.get("roster") or {}
want(r.get("sites") == ["site-00", "site-01", "site-02"] and r.get("sha256") == sha(os.path.join(d, "roster.txt")), "roster %s" % r)
s = rec.get("secure_aggregation", {})
want(s.get("enabled") is True and s.get("threshold_all_sites") == 2 and s.get("dropout") == 0.2 and
     s.get("collusion") == 0.33 and s.get("upload_width_all_sites") == 14, "secure aggregation %s" % s)
sim = rec.get("simulation", {})
f = sim.get("flags", {})
want(f.get("clients") == 3 and f.get("rounds") == 2 and f.get("partition") == "iid" and f.get("seed") == 3
     and f.get("max_train") == 600 and f.get("dataset") == "pneumoniamnist", "simulation flags %s" % f)
want(sim.get("command_line", [""])[0].endswith("medfed-sim") and "--seed" in sim.get("command_line", []), "command line")
ds = sim.get("dataset", {})
want(ds.get("name") == "pneumoniamnist" and ds.get("train") == 600 and ds.get("val") == 200 and ds.get("classes") == 2, "dataset %s" % ds)
want(sim.get("partition", {}).get("spec") == "iid" and sim.get("partition", {}).get("seed") == 3 and sim.get("seed") == 3, "partition")
sites = sim.get("sites", [])
want([x.get("name") for x in sites] == ["site-00", "site-01", "site-02"] and sum(x["train"] for x in sites) == 600
     and sum(x["val"] for x in sites) == 200 and all(0 <= x["train_label1_share"] <= 1 for x in sites), "sites %s" % sites)
want(sim.get("coordinator_status") == 0 and sim.get("clients_failed") == 0, "simulation outcome")
fin = rec.get("final") or {}
last = [x for x in rows if x.get("val_accuracy") is not None][-1]
want(fin.get("rounds") == len(rows) == 2 and fin.get("round") == last["round"] and
     fin.get("val_accuracy") == last["val_accuracy"] and fin.get("val_auc") == last["val_auc"] and
     fin.get("bytes_up") == sum(x["bytes_up"] for x in rows), "final %s" % fin)
want(sorted(x["name"] for x in rec.get("sites", [])) == ["site-00", "site-01", "site-02"], "sites seen")
# The rows name the sites in each round (the report's participation grid).
want(all(sorted(x["included_sites"]) == sorted(x["cohort_sites"]) == ["site-00", "site-01", "site-02"]
         and x["dropped_sites"] == [] for x in rows), "metrics rows' site names")
if errs: print("run.json:", "; ".join(errs))
sys.exit(1 if errs else 0)
PYEOF
then ok $t; else bad $t "see $WORK/a/run.json"; fi

# A coordinator alone: two sites of the first run, plaintext, its own state
# directory; two rounds, then a restart that resumes for one more.
t=report_record_coordinator_resumed
CS="$RP/state"
mkdir -p "$CS"
rport=$(free_port)
for k in 0 1; do
    sed "s|tcp://127.0.0.1:[0-9]*|tcp://127.0.0.1:$rport|; /^identity/d; /^roster/d; /^curve_key/d; /^coordinator_key/d; s/^secure_aggregation = required/secure_aggregation = optional/" \
        "$WORK/a/sites/site-0$k/client.ini" > "$RP/c$k.ini"
done
# report_coord ROUNDS: the coordinator until it has run to ROUNDS, with both sites.
report_coord() {
    "$BIN/medfed-coordinator" --bind "tcp://127.0.0.1:$rport" --init "$WORK/a/init.safetensors" \
        --state-dir "$CS" --rounds "$1" --wait-for 2 --local-epochs 1 --secagg off \
        --heartbeat-timeout 20 --wait-timeout 60 >> "$RP/coord.log" 2>&1 &
    rcpid=$!
    "$BIN/medfed-client" --config "$RP/c0.ini" >> "$RP/c0.log" 2>&1 &
    r0=$!
    "$BIN/medfed-client" --config "$RP/c1.ini" >> "$RP/c1.log" 2>&1 &
    r1=$!
    wait $rcpid
    rrc=$?
    i=0
    while [ $i -lt 20 ] && { kill -0 $r0 2>/dev/null || kill -0 $r1 2>/dev/null; }; do sleep 0.5; i=$((i + 1)); done
    kill $r0 $r1 2>/dev/null
    wait $r0 $r1 2>/dev/null
    return $rrc
}
if report_coord 2 && cp "$CS/run.json" "$RP/run-first.json" && report_coord 3 &&
   "$PY" - "$CS" "$RP/run-first.json" <<'PYEOF'
import json, os, sys
d = sys.argv[1]
first, rec = json.load(open(sys.argv[2])), json.load(open(os.path.join(d, "run.json")))
rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
errs = []
def want(cond, what):
    if not cond: errs.append(what)
want("simulation" not in rec, "a coordinator's own record has no simulation")
want(first["status"] == "complete" and first["final"]["rounds"] == 2 and first["resumed"] == [], "first run %s" % first.get("final"))
want(rec["started_at"] == first["started_at"], "the start kept across the restart")
want(len(rec["resumed"]) == 1 and rec["resumed"][0]["after_round"] == 2 and rec["resumed"][0]["model_version"] == 2, "resumed %s" % rec["resumed"])
want(rec["status"] == "complete" and rec["ended_at"] >= first["ended_at"], "status and end")
want(rec["config"]["rounds"] == 3 and rec["config"]["state_dir"] == d and rec["config"]["secagg"] is False, "config")
want(rec["roster"] is None and rec["secure_aggregation"]["enabled"] is False, "no roster, plaintext")
want(rec["final"]["rounds"] == len(rows) == 3 and rec["final"]["val_accuracy"] == rows[-1]["val_accuracy"] and
     rec["final"]["train_loss"] == rows[-1]["train_loss"], "final %s" % rec["final"])
want(sorted(s["name"] for s in rec["sites"]) == ["site-00", "site-01"] and all(s["n_train"] > 0 for s in rec["sites"]), "sites %s" % rec["sites"])
want(all(sorted(r["included_sites"]) == ["site-00", "site-01"] for r in rows), "rows' included sites")
if errs: print("run.json:", "; ".join(errs))
sys.exit(1 if errs else 0)
PYEOF
then ok $t; else bad $t "see $CS/run.json, $RP/coord.log"; tail -5 "$RP/coord.log"; fi

# The deployment's state directory (suite_deploy.sh, when it ran): a coordinator
# with an admin socket and CURVE, killed and restarted. Its record lists each
# restart the log shows and the run's figures.
t=report_record_deployed
DS="$WORK/deploy/state"
if [ ! -s "$DS/metrics.jsonl" ]; then echo "integration: skip $t (the deploy suite did not run)"
elif "$PY" - "$DS" "$WORK/deploy/coord.log" "$WORK/a/init.safetensors" <<'PYEOF'
import hashlib, json, os, re, sys
d, log, init = sys.argv[1:]
rec = json.load(open(os.path.join(d, "run.json")))
rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
resumes = open(log).read().count("state: resuming")
errs = []
def want(cond, what):
    if not cond: errs.append(what)
want(len(rec["resumed"]) == resumes and all(r["at"] >= rec["started_at"] for r in rec["resumed"]),
     "%d resumes recorded, the log shows %d" % (len(rec["resumed"]), resumes))
want(rec["config"]["admin_bind"] and rec["config"]["curve_secret"] and rec["config"]["state_dir"] == d, "config")
want(rec["model"]["init_sha256"] == hashlib.sha256(open(init, "rb").read()).hexdigest(), "initial model's hash")
want(len(rec["roster"]["sites"]) >= 2 and re.match("^[0-9a-f]{64}$", rec["roster"]["sha256"]), "roster %s" % rec["roster"])
want(rec["secure_aggregation"]["enabled"] and rec["secure_aggregation"]["dropout"] == 0, "secure aggregation")
want(rec["status"] in ("complete", "stopped") and rec["ended_at"] >= rec["started_at"], "status %s" % rec["status"])
want(rec["final"]["rounds"] == len(rows) and rec["final"]["aborted_rounds"] == sum(bool(r.get("aborted")) for r in rows), "final %s" % rec["final"])
if errs: print("run.json:", "; ".join(errs))
sys.exit(1 if errs else 0)
PYEOF
then ok $t; else bad $t "see $DS/run.json"; fi

# Each run folder there is: the report renders, every chart the metrics call for
# (one browser, a page each).
t=report_renders_in_chromium
if ! [ -x /usr/bin/chromium ]; then
    bad $t "no /usr/bin/chromium: make test-deps installs it"
else
    pages="" names="" made=1
    for dir in "$WORK/a" "$WORK/b" "$CS" "$WORK/deploy/state" "$WORK/admin/state"; do
        [ -s "$dir/metrics.jsonl" ] || continue
        name=$(echo "${dir#$WORK/}" | tr / -)
        "$BIN/medfed" report "$dir" --out "$RP/$name.html" > "$RP/$name.out" 2>&1 ||
            { made=0; cat "$RP/$name.out"; }
        pages="$pages $RP/$name.html $dir"
        names="$names $name"
    done
    # shellcheck disable=SC2086 # the pairs are paths without spaces (mktemp)
    if [ $made -eq 1 ] && "$PY" "$CHECK" $pages --screenshot "$RP/a.png" > "$RP/check.out" 2>&1 &&
       [ "$(grep -c ': ok: ' "$RP/check.out")" -eq "$(echo $names | wc -w)" ] &&
       "$BIN/medfed" report "$WORK/a" > "$RP/default.out" 2>&1 &&
       grep -q "wrote $WORK/a/report.html" "$RP/default.out" && cmp -s "$WORK/a/report.html" "$RP/a.html"
    then ok "$t ($names)"; else bad $t "see $RP/check.out"; cat "$RP/check.out"; fi
fi

# The check itself: each copy of a good report broken in one way must fail it.
t=report_check_catches_broken_reports
good="$RP/a.html"
if [ -s "$good" ] && grep -q "^report_check: $good: ok" "$RP/check.out" 2>/dev/null; then
    pages="" kinds=""
    broken() { # NAME SED-PROGRAM | NAME "cut"
        if [ "$2" = cut ]; then head -c "$(($(wc -c < "$good") / 2))" "$good" > "$RP/broken-$1.html"
        else sed "$2" "$good" > "$RP/broken-$1.html"; fi
        pages="$pages $RP/broken-$1.html $WORK/a"
        kinds="$kinds $1"
    }
    broken x-label-dropped '0,/class="axis-label x-label"/s//class="axis-label"/'
    broken y-label-empty '0,/\(class="axis-label y-label"[^>]*>\)[^<]*/s//\1/'
    broken bad-viewbox '0,/viewBox="0 0 680/s//viewBox="0 0 x680/'
    broken garbled-points '0,/points="[0-9]/s//points="x/'
    broken cut-short cut
    broken external-image 's|<h1>|<img src="http://127.0.0.1:9/x.png"><h1>|'
    broken script 's|<h1>|<script>document.title = "x"</script><h1>|'
    broken cell-contradicts '0,/cell included/s//cell dropped/'
    broken chart-missing '0,/<figure class="chart" id="chart-auc">/s//<figure class="chart" id="chart-auc-x">/'
    # shellcheck disable=SC2086
    "$PY" "$CHECK" $pages > "$RP/broken.out" 2>&1
    missed=""
    for k in $kinds; do
        f="$RP/broken-$k.html"
        if cmp -s "$good" "$f"; then missed="$missed $k(not-broken)"
        elif grep -q "^report_check: $f: ok" "$RP/broken.out" || ! grep -q "^report_check: $f: " "$RP/broken.out"
        then missed="$missed $k"; fi
    done
    if [ -z "$missed" ]; then ok "$t ($(echo $kinds | wc -w) broken copies, each caught)"
    else bad $t "passed on broken copies:$missed (see $RP/broken.out)"; fi
else
    bad $t "no good report to break (report_renders_in_chromium)"
fi

t=report_usage_errors
mkdir -p "$RP/empty"
"$BIN/medfed" report "$RP/empty" > "$RP/usage1.out" 2>&1; u1=$?
"$BIN/medfed" report > "$RP/usage2.out" 2>&1; u2=$?
if [ $u1 -eq 1 ] && grep -q "metrics.jsonl: cannot open" "$RP/usage1.out" && [ ! -e "$RP/empty/report.html" ] &&
   [ $u2 -eq 2 ] && grep -q "usage: medfed report RUN_DIR" "$RP/usage2.out"
then ok $t; else bad $t "exit $u1 / $u2"; cat "$RP/usage1.out" "$RP/usage2.out"; fi
