# Versions, rolling upgrades and what hospital IT reads (sourced by run.sh;
# $WORK/a, the first test's run, gives the sites' data and the initial model).
# Three sites from `medfed provision` (certificates valid 10 days, admin
# endpoint on loopback), CURVE, secure aggregation; site up-c is pinned to
# the previous protocol version (protocol_version = 2), as a site not yet
# upgraded would be.
#
#   upgrade_version_everywhere          every program answers --version
#   upgrade_subcommand_help             every `medfed SUBCOMMAND --help`: usage, exit 0
#   upgrade_admin_bind_follows_endpoint the provisioned admin_bind is the endpoint's address
#   upgrade_round_with_v2_site          a round completes with one v2 and two v4 sites;
#                                       `medfed clients` shows each site's versions
#   upgrade_training_progress           heartbeats carry progress: `medfed clients` and
#                                       `medfed watch` show percentages
#   upgrade_check_readable_warns_expiry --check: a person's report, the certificate
#                                       expiry warned 30 days ahead; --json the same
#   upgrade_renew_certificate           medfed provision --renew: the warning is gone
#   upgrade_too_old_site_retries        a v1 site: a clear refusal naming both versions,
#                                       the daemon asks again later and does not exit
#   upgrade_state_format                state.json names its format and the software; a
#                                       newer format is refused naming both versions

U="$WORK/upgrade"
mkdir -p "$U"
usport=$(free_port)
uaport=$(free_port)
printf 'up-a\nup-b\nup-c\n' > "$U/sites.txt"
"$BIN/medfed" provision --roster "$U/sites.txt" --out "$U/fed" --federation it-upgrade \
    --endpoint "tcp://127.0.0.1:$usport" --admin-endpoint "tcp://127.0.0.1:$uaport" --days 10 \
    > "$U/provision.log" 2>&1
UADMIN="$U/fed/admin/admin.ini"
VERSION_TXT=$(cat "$ROOT/VERSION")
k=0
for site in up-a up-b up-c; do
    src="$WORK/a/sites/site-0$k"
    { sed 's/^threads = .*/threads = 1/' "$U/fed/sites/$site/client.ini"
      printf 'heartbeat = 0.2\n'
      [ $site = up-c ] && printf 'protocol_version = 2\n'
      printf '\n[policy]\nmin_cohort = 2\nmax_collusion = 0\n'
      printf '\n[data]\nsource = idx\n'
      for s in train val; do
          printf '%s_images = %s\n%s_labels = %s\n' "$s" "$src/$s-images-idx3-ubyte.gz" \
              "$s" "$src/$s-labels-idx1-ubyte.gz"
      done; } > "$U/$site.ini"
    k=$((k + 1))
done

t=upgrade_version_everywhere
vbad=""
for p in medfed-coordinator medfed-client medfed-sim medfed-eval medfed-init medfed-dicom-worker \
         medfed-swarm medfed-dicom-fixture medfed; do
    out=$("$BIN/$p" --version 2>&1) || vbad="$vbad $p(rc)"
    case "$out" in "$p medfed $VERSION_TXT "*) ;; *) vbad="$vbad $p($out)" ;; esac
done
if [ -z "$vbad" ]; then ok $t; else bad $t "$vbad"; fi

t=upgrade_subcommand_help
hbad=""
for c in provision status clients start pause stop export watch help; do
    "$BIN/medfed" $c --help > "$U/help-$c.out" 2> "$U/help-$c.err" || hbad="$hbad $c(rc)"
    grep -q '^usage: medfed' "$U/help-$c.out" || hbad="$hbad $c(no usage on stdout)"
done
if [ -z "$hbad" ]; then ok $t; else bad $t "$hbad"; fi

t=upgrade_admin_bind_follows_endpoint
if grep -qx "admin_bind = tcp://127.0.0.1:$uaport" "$U/fed/coordinator/coordinator.ini" &&
   ! grep -q '^admin_bind = tcp://0.0.0.0' "$U/fed/coordinator/coordinator.ini"
then ok $t; else bad $t "$(grep '^admin_bind' "$U/fed/coordinator/coordinator.ini")"; fi

# The federation: the coordinator from the kit's config (bound to loopback),
# one round at once; each site trains 6 local epochs so that heartbeats report
# progress along the way.
"$BIN/medfed-coordinator" --config "$U/fed/coordinator/coordinator.ini" \
    --bind "tcp://127.0.0.1:$usport" --state-dir "$U/state" --init "$WORK/a/init.safetensors" \
    --local-epochs 6 --rounds 1 --autostart on --wait-for 3 --min-clients 3 --collusion 0 \
    --dropout 0 --heartbeat-timeout 20 > "$U/coord.log" 2>&1 &
ucoord=$!
"$BIN/medfed" watch --until-idle --config "$UADMIN" > "$U/watch.out" 2>&1 &
uwatch=$!
upids=""
for site in up-a up-b up-c; do
    "$BIN/medfed-client" --config "$U/$site.ini" > "$U/$site.log" 2>&1 &
    upids="$upids $!"
done
# Training progress as `medfed clients` shows it, while the sites train.
"$PY" - "$BIN/medfed" "$UADMIN" "$U/clients-training.json" <<'PYEOF'
import json, subprocess, sys, time
med, cfg, out = sys.argv[1:4]
end = time.time() + 60
while time.time() < end:
    r = subprocess.run([med, "clients", "--json", "--config", cfg], capture_output=True, text=True)
    if r.returncode == 0:
        d = json.loads(r.stdout)
        if any(0 < (c.get("progress") or 0) < 1 for c in d["clients"]):
            open(out, "w").write(r.stdout)
            sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
PYEOF
"$BIN/medfed" clients --config "$UADMIN" > "$U/clients-training.txt" 2>&1
i=0
while ! grep -q '"round":1' "$U/state/metrics.jsonl" 2>/dev/null && [ $i -lt 600 ]; do
    sleep 0.1; i=$((i + 1))
done
"$BIN/medfed" clients --json --config "$UADMIN" > "$U/clients.json" 2>&1
"$BIN/medfed" clients --config "$UADMIN" > "$U/clients.txt" 2> "$U/clients.err"

t=upgrade_round_with_v2_site
# (A cohort with a protocol-2 site uses protocol 2's masked layout: no loss
# word, so the row has no train_loss; a v3 field sent to the v2 site would be
# refused by it as malformed.)
if json_check "$U/state/metrics.jsonl" 'len(rows) == 1 and rows[0]["participants"] == 3 and not rows[0]["aborted"] and rows[0]["secagg"] and rows[0].get("train_loss") is None' &&
   json_check "$U/clients.json" '{c["site"]: (c["protocol"], c["software"]) for c in rows[0]["clients"]} == {"up-a": (4, "'"$VERSION_TXT"'"), "up-b": (4, "'"$VERSION_TXT"'"), "up-c": (2, None)}' &&
   grep -q 'site=up-c event=hello protocol=2 software=? (an older protocol version: spoken)' "$U/coord.log" &&
   grep -Eq '^up-c +.* <0\.6 +2 ' "$U/clients.txt" && grep -Eq "^up-a +.* $VERSION_TXT +4 " "$U/clients.txt" &&
   grep -q 'protocol 2 < 4 run an older medfed' "$U/clients.txt" &&
   grep -q 'protocol version pinned to 2' "$U/up-c.log" &&
   ! grep -q 'malformed message from the coordinator' "$U/up-a.log" "$U/up-b.log" "$U/up-c.log"
then ok $t; else bad $t "see $U"; cat "$U/clients.txt"; tail -3 "$U/coord.log"; fi

t=upgrade_training_progress
if [ -s "$U/clients-training.json" ] &&
   json_check "$U/clients-training.json" 'all(c["progress"] is None for c in rows[0]["clients"] if c["site"] == "up-c") and any(c["progress"] for c in rows[0]["clients"])' &&
   grep -Eq 'round=1 phase=train progress( up-[ab]=[0-9]+%)+' "$U/watch.out"
then ok $t; else bad $t "see $U/clients-training.json watch.out"; cat "$U/watch.out" | head -5; fi

t=upgrade_check_readable_warns_expiry
"$BIN/medfed-client" --config "$U/up-a.ini" --check > "$U/check.txt" 2> "$U/check.err"
crc=$?
"$BIN/medfed-client" --config "$U/up-a.ini" --check --json > "$U/check.json" 2> "$U/check-json.err"
cjrc=$?
"$BIN/medfed" clients --config "$UADMIN" > /dev/null 2> "$U/clients-warn.err"
if [ $crc -eq 0 ] && [ $cjrc -eq 0 ] &&
   grep -Eq '^  WARN  certificate +.*identity.crt expires in (9|10) days .*medfed provision --renew up-a' "$U/check.txt" &&
   grep -Eq '^  ok    coordinator +tcp://127.0.0.1:[0-9]+ answers \(medfed '"$VERSION_TXT"', round 1' "$U/check.txt" &&
   grep -q '^  \.\.\.   data' "$U/check.txt" && grep -q '^result: all checks passed, 1 warning' "$U/check.txt" &&
   json_check "$U/check.json" 'rows[0]["ok"] and rows[0]["certificate"]["days_left"] in (9, 10) and len(rows[0]["warnings"]) == 1 and rows[0]["coordinator"]["software"] == "'"$VERSION_TXT"'" and rows[0]["version"]["protocol"] == 4' &&
   grep -Eq "warning: up-a's certificate expires in (9|10) days" "$U/clients-warn.err"
then ok $t; else bad $t "check=$crc json=$cjrc"; cat "$U/check.txt" "$U/clients-warn.err"; fi

t=upgrade_renew_certificate
"$BIN/medfed" provision --renew up-a --ca-dir "$U/fed/ca" --out "$U/kit-a" > "$U/renew.log" 2>&1
rrc=$?
"$BIN/medfed-client" --config "$U/up-a.ini" --check > "$U/check2.txt" 2> /dev/null
crc2=$?
if [ $rrc -eq 0 ] && [ $crc2 -eq 0 ] && cmp -s "$U/kit-a/up-a.crt" "$U/fed/sites/up-a/identity.crt" &&
   grep -Eq '^  ok    certificate +.*valid until .* \(109[45] days\)' "$U/check2.txt" &&
   grep -q '^result: all checks passed$' "$U/check2.txt"
then ok $t; else bad $t "renew=$rrc check=$crc2"; cat "$U/renew.log" "$U/check2.txt"; fi

# A site two protocol versions behind: refused with both versions named; it
# asks again after version_retry (1 s here), then after 2 s, and never exits.
t=upgrade_too_old_site_retries
sed 's/^protocol_version = 2$/protocol_version = 1/' "$U/up-c.ini" > "$U/old.ini"
printf '[client]\nversion_retry = 1\n' >> "$U/old.ini"
"$BIN/medfed-client" --config "$U/old.ini" > "$U/old.log" 2>&1 &
opid=$!
i=0
while [ "$(grep -c 'event=version-refused' "$U/old.log")" -lt 2 ] && [ $i -lt 300 ]; do
    sleep 0.1; i=$((i + 1))
done
alive=0
kill -0 $opid 2>/dev/null && alive=1
kill -TERM $opid 2>/dev/null
wait $opid
orc=$?
if [ $alive -eq 1 ] && [ $orc -eq 0 ] &&
   grep -q 'event=version-refused .*protocol version 1 .*the coordinator (medfed '"$VERSION_TXT"') speaks 2 to 4: upgrade medfed at this site; asking again in 1 s' "$U/old.log" &&
   grep -q 'asking again in 2 s' "$U/old.log" &&
   grep -q 'site=up-c refused: this site speaks protocol version 1' "$U/coord.log"
then ok $t; else bad $t "alive=$alive rc=$orc"; tail -3 "$U/old.log"; fi

kill -TERM $ucoord $upids $uwatch 2>/dev/null
wait $ucoord $upids $uwatch 2>/dev/null

t=upgrade_state_format
cp -r "$U/state" "$U/state-newer"
sed -i 's/"format":1,/"format":99,/' "$U/state-newer/state.json"
ucheck() {
    sd_=$1
    shift
    "$BIN/medfed-coordinator" --config "$U/fed/coordinator/coordinator.ini" \
        --init "$WORK/a/init.safetensors" --state-dir "$sd_" --check "$@"
}
ucheck "$U/state" --json > "$U/cc.json" 2> /dev/null
ccrc=$?
ucheck "$U/state-newer" > "$U/cc-newer.txt" 2> /dev/null
ccrc2=$?
if [ $ccrc -eq 0 ] && [ $ccrc2 -eq 1 ] &&
   json_check "$U/state/state.json" 'rows[0]["format"] == 1 and rows[0]["software"] == "'"$VERSION_TXT"'" and rows[0]["round"] == 1' &&
   json_check "$U/cc.json" 'rows[0]["ok"] and rows[0]["state"]["resumes_after_round"] == 1 and rows[0]["version"]["protocol_min"] == 2 and rows[0]["ca_certificate"]["ok"]' &&
   grep -q "^  FAIL  state .*state-newer/state.json was written by a newer medfed (medfed $VERSION_TXT) in state format 99; this coordinator (medfed $VERSION_TXT) reads format 1" "$U/cc-newer.txt" &&
   grep -q '^result: 1 problem' "$U/cc-newer.txt"
then ok $t; else bad $t "check=$ccrc/$ccrc2"; cat "$U/cc-newer.txt"; fi
