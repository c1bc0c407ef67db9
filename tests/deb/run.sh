#!/bin/sh
# The Debian packages on this machine, for real (root; CI's throwaway Debian 12):
#   deb_install_layout          dpkg -i of the four packages: programs in /usr/bin, the
#                               DICOM worker in /usr/lib/medfed, units and the drop-in,
#                               man pages, examples; the medfed system user; /etc/medfed,
#                               /var/lib/medfed, /var/cache/medfed and
#                               /var/lib/medfed-coordinator owned by medfed, mode 0700;
#                               the units not enabled, and valid (systemd-analyze verify)
#   deb_runtime_depends_only    no compiler, -dev package or data set among the Depends
#   deb_version                 /usr/bin/medfed-client --version names the VERSION file's
#   deb_client_check            /usr/bin/medfed-client --check, as medfed, with a small
#                               config in /etc/medfed: a DICOM folder decoded by
#                               /usr/lib/medfed/medfed-dicom-worker, the installed
#                               coordinator reachable
#   deb_one_round               the installed coordinator and client run a round
#                               (medfed-init's model); prints the shared libraries the
#                               daemon maps at run time and ldd's count
#   deb_purge_leaves_only_admin_files
#                               dpkg --purge leaves no file but the admin's config and the
#                               coordinator's state
# usage: run.sh DEB_DIR BUILD_DIR. Refuses a machine where medfed is installed or
# /etc/medfed exists; removes what it made (user, configs, state) at the end.
set -u
DEB=$(cd "$1" && pwd)
ROOT=$(pwd)
PY=/usr/bin/python3
PKGS="medfed-client medfed-coordinator medfed-admin medfed-tools"
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "deb: ok   $1"; }
bad() { failed=$((failed + 1)); echo "deb: FAIL $1: $2"; }

if [ "$(id -u)" != 0 ]; then
    echo "deb: SKIP (installing packages needs root; not counted)"
    exit 0
fi
for p in $PKGS; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
        echo "deb: $p is installed on this machine: not touching it"; exit 1
    fi
done
for d in /etc/medfed /var/lib/medfed /var/cache/medfed /var/lib/medfed-coordinator; do
    [ -e "$d" ] && { echo "deb: $d exists (a deployed machine?): not touching it"; exit 1; }
done
user_existed=0
getent passwd medfed > /dev/null && user_existed=1
WORK=$(mktemp -d /tmp/medfed-deb.XXXXXX)
chmod 0755 "$WORK"
cpid=""

cleanup() {
    [ -n "$cpid" ] && kill "$cpid" 2>/dev/null
    dpkg --purge $PKGS > /dev/null 2>&1
    rm -rf /etc/medfed /var/lib/medfed /var/cache/medfed /var/lib/medfed-coordinator
    if [ $user_existed -eq 0 ] && getent passwd medfed > /dev/null; then
        userdel medfed 2>/dev/null
        getent group medfed > /dev/null && groupdel medfed 2>/dev/null
    fi
    if [ "$failed" -eq 0 ]; then rm -rf "$WORK"; else echo "deb: logs kept in $WORK"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Every file and directory outside what dpkg, apt, man-db, systemd's own state
# and other processes change by themselves.
snapshot() {
    find /etc /usr /var /opt -xdev \( -path /var/lib/dpkg -o -path /var/cache/apt \
        -o -path /var/cache/man -o -path /var/cache/debconf -o -path /var/log -o -path /var/tmp \
        -o -path /var/lib/apt -o -path /var/lib/systemd -o -path /var/lib/ucf \) -prune -o -print \
        2>/dev/null | sort > "$1"
}
snapshot "$WORK/before.txt"

t=deb_install_layout
debs=$(ls "$DEB"/*.deb)
if ! dpkg -i $debs > "$WORK/dpkg-i.log" 2>&1; then
    bad $t "dpkg -i failed"; cat "$WORK/dpkg-i.log"; exit 1
fi
problems=""
for f in /usr/bin/medfed-client /usr/lib/medfed/medfed-dicom-worker /usr/bin/medfed-coordinator \
         /usr/bin/medfed /usr/bin/medfed-init /usr/bin/medfed-eval; do
    [ -x "$f" ] || problems="$problems $f missing;"
done
for f in /lib/systemd/system/medfed-client.service /lib/systemd/system/medfed-coordinator.service \
         /lib/systemd/system/medfed-client.service.d/shared-host.conf \
         /usr/lib/sysusers.d/medfed-client.conf /usr/lib/tmpfiles.d/medfed-client.conf \
         /usr/share/man/man8/medfed-client.8.gz /usr/share/man/man8/medfed-coordinator.8.gz \
         /usr/share/man/man8/medfed-dicom-worker.8.gz /usr/share/man/man1/medfed.1.gz \
         /usr/share/man/man1/medfed-init.1.gz /usr/share/man/man1/medfed-eval.1.gz \
         /usr/share/doc/medfed-client/examples/client.ini \
         /usr/share/doc/medfed-coordinator/examples/coordinator.ini \
         /usr/share/doc/medfed-admin/examples/admin.ini; do
    [ -f "$f" ] || problems="$problems $f missing;"
done
grep -q '^ExecStart=/usr/bin/medfed-client ' /lib/systemd/system/medfed-client.service ||
    problems="$problems client unit does not run /usr/bin/medfed-client;"
shell=$(getent passwd medfed | cut -d: -f7)
uid=$(id -u medfed 2>/dev/null || echo none)
[ "$shell" = /usr/sbin/nologin ] && [ "$uid" != none ] && [ "$uid" -lt 1000 ] ||
    problems="$problems user medfed: uid=$uid shell=$shell;"
for d in /etc/medfed /var/lib/medfed /var/cache/medfed /var/lib/medfed-coordinator; do
    s=$(stat -c '%U:%G %a' "$d" 2>/dev/null)
    [ "$s" = "medfed:medfed 700" ] || problems="$problems $d: '$s';"
done
for u in medfed-client medfed-coordinator; do
    e=$(systemctl --root=/ is-enabled "$u.service" 2>&1)
    [ "$e" = disabled ] || problems="$problems $u is '$e', not disabled;"
done
if command -v systemd-analyze > /dev/null; then
    systemd-analyze verify --man=no /lib/systemd/system/medfed-client.service \
        /lib/systemd/system/medfed-coordinator.service > "$WORK/verify.txt" 2>&1 ||
        problems="$problems systemd-analyze verify failed;"
    [ -s "$WORK/verify.txt" ] && problems="$problems verify: $(head -3 "$WORK/verify.txt");"
fi
if [ -z "$problems" ]; then ok $t; else bad $t "$problems"; fi

t=deb_runtime_depends_only
deps=$(for f in $debs; do dpkg-deb -f "$f" Depends; done | tr ',' '\n' | sed 's/^ *//; s/ .*//' | sort -u)
badp=$(echo "$deps" | grep -E -- '-dev$|^(gcc|g\+\+|cpp|clang|build-essential|make|dataset-.*)$')
if [ -n "$deps" ] && [ -z "$badp" ]; then ok "$t ($(echo $deps | wc -w) packages)"
else bad $t "build-time packages among the Depends: $badp"; fi

t=deb_version
out=$(/usr/bin/medfed-client --version 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "medfed $(cat "$ROOT/VERSION")"; then ok "$t ($out)"
elif echo "$out" | grep -q "unrecognized option '--version'"; then
    # TODO(issue 13 item 2): --version is not wired into medfed-client yet; until it
    # is, the installed program is run with --help and this test says SKIP.
    if /usr/bin/medfed-client --help | grep -q 'medfed-client --config'; then
        echo "deb: SKIP $t (medfed-client has no --version yet; --help ran from /usr/bin)"
    else bad $t "medfed-client --help from /usr/bin failed"; fi
else bad $t "rc=$rc: $out"; fi

# The installed coordinator, as medfed, plaintext on a loopback port.
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u medfed -- /usr/bin/medfed-init --arch cnn --in-channels 1 --size 28x28 --classes 2 \
    --seed 1 --out /var/lib/medfed-coordinator/init.safetensors > "$WORK/init.log" 2>&1
runuser -u medfed -- /usr/bin/medfed-coordinator --bind "tcp://127.0.0.1:$port" \
    --init /var/lib/medfed-coordinator/init.safetensors --state-dir /var/lib/medfed-coordinator/state \
    --rounds 1 --wait-for 1 --secagg off --local-epochs 1 --heartbeat-timeout 20 --wait-timeout 60 \
    > "$WORK/coord.log" 2>&1 &
cpid=$!

t=deb_client_check
# A DICOM folder (the fixture script, pydicom) of medfed's (the folder source
# keeps its salt there).
"$PY" "$ROOT/tests/fixtures/dicom_fixture.py" --images "$ROOT/data/pneumoniamnist/val-images-idx3-ubyte.gz" \
    --labels "$ROOT/data/pneumoniamnist/val-labels-idx1-ubyte.gz" --out "$WORK/images" --count 24 \
    > "$WORK/fixture.log" 2>&1
chown -R medfed:medfed "$WORK/images"
cat > /etc/medfed/client.ini <<EOF
[client]
site = deb-test
coordinator = tcp://127.0.0.1:$port
heartbeat = 0.5
[policy]
secure_aggregation = optional
[data]
source = folder
path = $WORK/images
labels = $WORK/images/labels.csv
val_fraction = 0.25
EOF
chown medfed:medfed /etc/medfed/client.ini
chmod 0600 /etc/medfed/client.ini
env -u MEDFED_DICOM_WORKER runuser -u medfed -- /usr/bin/medfed-client --config /etc/medfed/client.ini \
    --check --json > "$WORK/check.json" 2> "$WORK/check.err"
crc=$?
if [ $crc -eq 0 ] && "$PY" - "$WORK/check.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
ok = d["ok"] and d["data"]["source"] == "folder" and d["data"]["decoded"] == 24 and \
    d["data"]["train"] + d["data"]["val"] == 24 and d["coordinator"]["reachable"]
if not ok: print(json.dumps(d, indent=1))
sys.exit(0 if ok else 1)
PYEOF
then ok "$t (24 DICOM files decoded by /usr/lib/medfed/medfed-dicom-worker)"
else bad $t "rc=$crc"; cat "$WORK/check.json" "$WORK/check.err" "$WORK/fixture.log" | head -20; fi

t=deb_one_round
env -u MEDFED_DICOM_WORKER runuser -u medfed -- /usr/bin/medfed-client --config /etc/medfed/client.ini \
    > "$WORK/client.log" 2>&1 &
kpid=$!
maps=0
for _ in $(seq 200); do
    grep -q 'event=connected' "$WORK/client.log" 2>/dev/null && break
    sleep 0.1
done
# the shared objects a process has mapped (runuser's child is the daemon)
maps_of() {
    p=$(pgrep -P "$1" | head -n 1)
    [ "$(readlink "/proc/${p:-0}/exe")" = "/usr/bin/$2" ] || { echo 0; return; }
    awk '$6 ~ /\.so/ {print $6}' "/proc/$p/maps" 2>/dev/null | sort -u | wc -l
}
maps=$(maps_of $kpid medfed-client)
cmaps=$(maps_of $cpid medfed-coordinator)
lddn=$(ldd /usr/bin/medfed-client | wc -l)
lddc=$(ldd /usr/bin/medfed-coordinator | wc -l)
wait $kpid; krc=$?
[ $krc -eq 0 ] || kill $cpid 2>/dev/null
wait $cpid; crc2=$?
cpid=""
if [ $crc2 -eq 0 ] && [ $krc -eq 0 ] && [ "$maps" -gt 0 ] && [ "$cmaps" -gt 0 ] &&
   grep -q '"round":1' /var/lib/medfed-coordinator/state/metrics.jsonl 2>/dev/null
then
    ok $t
    echo "deb:      shared objects mapped at run time: medfed-client $maps," \
        "medfed-coordinator $cmaps; ldd lines: $lddn and $lddc"
else bad $t "coordinator=$crc2 client=$krc maps=$maps/$cmaps"; tail -n 5 "$WORK/coord.log" "$WORK/client.log"; fi

t=deb_purge_leaves_only_admin_files
for f in $debs; do echo "deb:      $(basename "$f"): $(stat -c %s "$f") bytes," \
    "installed $(dpkg-deb -f "$f" Installed-Size) KiB"; done
dpkg --purge $PKGS > "$WORK/purge.log" 2>&1
prc=$?
snapshot "$WORK/after.txt"
# What is left that was not there before: only the admin's files.
left=$(comm -13 "$WORK/before.txt" "$WORK/after.txt" | grep -v -x -E \
    '/etc/medfed|/etc/medfed/client\.ini|/var/lib/medfed-coordinator(/.*)?|/etc/(passwd|group|shadow|gshadow|subuid|subgid)-')
if [ $prc -eq 0 ] && [ -z "$left" ] && [ -f /etc/medfed/client.ini ] &&
   [ -f /var/lib/medfed-coordinator/state/metrics.jsonl ] && [ ! -e /var/cache/medfed ] &&
   [ ! -e /usr/lib/medfed ]
then ok "$t (kept: /etc/medfed/client.ini, /var/lib/medfed-coordinator/)"
else bad $t "purge=$prc; left behind: $(echo $left | head -c 600)"; cat "$WORK/purge.log"; fi

echo "deb: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
