# Provisioning and certificates (sourced by run.sh: ok/bad/json_check/free_port,
# $BIN, $WORK, $ROOT; the first run's $WORK/a holds the model and site data).
#   - medfed provision makes three kits, then a fourth without touching the others
#   - a daemon refuses a secret key file others can read, naming the file
#   - a federation from the kits, clients with ca + certificate and no roster:
#     a site whose certificate comes from another CA is rejected with a reason,
#     the others finish the round
#   - site-owned enrolment: sites make their keys (medfed-client enrol), the
#     lead signs their requests (medfed provision --sign) without ever holding
#     a site's secret key; fingerprints checked; the enrolled sites run a round

P=$WORK/prov
mkdir -p "$P"
pport=$(free_port)
printf '# hospitals\nst-marys\ngeneral\n\ncounty\n' > "$P/sites3.txt"
printf 'st-marys\ngeneral\ncounty\nnorth-clinic\n' > "$P/sites4.txt"

# Every file under DIR with its checksum, sorted (the roster and the peer list
# excluded: they grow).
kit_sums() { (cd "$1" && find . -type f ! -name roster.txt ! -name peers.txt | xargs sha256sum | LC_ALL=C sort); }

t=provision_adds_a_site_without_touching_the_others
if "$BIN/medfed" provision --roster "$P/sites3.txt" --out "$P/fed" --federation it \
        --endpoint "tcp://127.0.0.1:$pport" > "$P/prov1.out" 2>&1 &&
   kit_sums "$P/fed" > "$P/sums1" && cp "$P/fed/coordinator/roster.txt" "$P/roster1" &&
   "$BIN/medfed" provision --roster "$P/sites4.txt" --out "$P/fed" --federation it \
        --endpoint "tcp://127.0.0.1:$pport" > "$P/prov2.out" 2>&1 &&
   kit_sums "$P/fed" > "$P/sums2" &&
   # The old files are unchanged, only the new site's are added.
   [ -z "$(LC_ALL=C comm -23 "$P/sums1" "$P/sums2")" ] &&
   [ "$(LC_ALL=C comm -13 "$P/sums1" "$P/sums2" | grep -vc '/sites/north-clinic/')" -eq 0 ] &&
   [ "$(LC_ALL=C comm -13 "$P/sums1" "$P/sums2" | wc -l)" -eq 6 ] &&
   # The roster keeps its lines (the sites' ids) and gains one.
   [ "$(head -c "$(wc -c < "$P/roster1")" "$P/fed/coordinator/roster.txt" | cmp - "$P/roster1" && echo same)" = same ] &&
   [ "$(grep -vc '^#' "$P/fed/coordinator/roster.txt")" -eq 4 ] &&
   tail -1 "$P/fed/coordinator/roster.txt" | grep -q '^north-clinic [0-9a-f]\{64\} [0-9a-f]\{64\}$' &&
   # Modes: directories 0700, secret keys 0600; the CA key in no kit.
   [ -z "$(find "$P/fed" -type d ! -perm 700)" ] &&
   [ "$(find "$P/fed" -name '*.key' | wc -l)" -eq 11 ] &&
   [ -z "$(find "$P/fed" -name '*.key' ! -perm 600)" ] &&
   [ -z "$(find "$P/fed/sites" "$P/fed/coordinator" "$P/fed/admin" -name 'ca.key')" ] &&
   ! grep -rqF "$(cat "$P/fed/ca/ca.key")" "$P/fed/sites" "$P/fed/coordinator" "$P/fed/admin" &&
   # A third run has nothing to do; certificates verify with openssl too.
   "$BIN/medfed" provision --roster "$P/sites4.txt" --out "$P/fed" \
        --endpoint "tcp://127.0.0.1:$pport" 2>&1 | grep -q 'nothing was missing' &&
   openssl verify -CAfile "$P/fed/ca/ca.crt" "$P/fed/sites/north-clinic/identity.crt" > /dev/null 2>&1 &&
   # The all-in-one mode says it is for simulations and tests only.
   grep -q 'warning: --roster makes every site.s secret keys on this machine: for simulations and tests only' "$P/prov1.out" &&
   [ "$(grep -vc '^#' "$P/fed/coordinator/peers.txt")" -eq 4 ]
then ok $t; else bad $t "see $P"; cat "$P/prov1.out" "$P/prov2.out"; fi

# A client kit with the first run's data: the provisioned [client] plus a [data] section.
kit_ini() { # SITE_DIR DATA_SITE OUT
    cp "$1/client.ini" "$3"
    awk '/^\[data\]/ {p = 1; print; next} /^\[/ {p = 0} p' "$WORK/a/sites/$2/client.ini" >> "$3"
}

# kit_coordinator FED PORT OUT WAIT_FOR: a one-round coordinator in the
# background from the coordinator kit in FED (roster, CURVE key, CA); its
# log in OUT.log, its pid in $cpid.
kit_coordinator() {
    "$BIN/medfed-coordinator" --bind "tcp://127.0.0.1:$2" --init "$WORK/a/init.safetensors" \
        --out "$3" --roster "$1/coordinator/roster.txt" \
        --curve-secret "$1/coordinator/curve.key" --ca "$1/coordinator/ca.crt" \
        --rounds 1 --wait-for "$4" --min-clients 3 --local-epochs 1 --heartbeat-timeout 20 \
        --wait-timeout 60 --phase-timeout 60 > "$3.log" 2>&1 &
    cpid=$!
}

t=daemons_refuse_key_files_others_can_read
cp -p "$P/fed/coordinator/curve.key" "$P/loose.key"
chmod 644 "$P/loose.key"
mkdir -p "$P/loose-site"
cp -p "$P/fed/sites/county/"* "$P/loose-site/"
chmod 700 "$P/loose-site"
chmod 644 "$P/loose-site/identity.key"
kit_ini "$P/fed/sites/county" site-02 "$P/loose.ini"
sed -i "s|^identity = .*|identity = $P/loose-site/identity.key|" "$P/loose.ini"
"$BIN/medfed-coordinator" --bind "tcp://127.0.0.1:$pport" --init "$WORK/a/init.safetensors" \
    --out "$P/loose-run" --roster "$P/fed/coordinator/roster.txt" --curve-secret "$P/loose.key" \
    --ca "$P/fed/coordinator/ca.crt" --rounds 1 --wait-timeout 5 > "$P/loose-coord.log" 2>&1
crc=$?
"$BIN/medfed-client" --config "$P/loose.ini" > "$P/loose-client.log" 2>&1
clrc=$?
if [ $crc -ne 0 ] && [ $clrc -ne 0 ] &&
   grep -qF "key file $P/loose.key is readable by others (mode 0644); chmod 600 $P/loose.key" "$P/loose-coord.log" &&
   grep -qF "key file $P/loose-site/identity.key is readable by others (mode 0644)" "$P/loose-client.log"
then ok $t; else bad $t "coordinator=$crc client=$clrc"; cat "$P/loose-coord.log" "$P/loose-client.log"; fi

t=certificates_from_another_ca_are_rejected
# county's identity certificate from a second federation's CA (its CURVE key
# is still this federation's, so the transport admits it).
"$BIN/medfed" provision --roster "$P/sites3.txt" --out "$P/other" --federation rogue \
    --endpoint "tcp://127.0.0.1:$pport" > "$P/prov-other.out" 2>&1
F=$P/fed/sites
kit_ini "$F/st-marys" site-00 "$P/c0.ini"
kit_ini "$F/general" site-01 "$P/c1.ini"
kit_ini "$F/north-clinic" site-00 "$P/c3.ini"
kit_ini "$F/county" site-02 "$P/c2.ini"
sed -i "s|^identity = .*|identity = $P/other/sites/county/identity.key|;
        s|^certificate = .*|certificate = $P/other/sites/county/identity.crt|;
        s|^ca = .*|ca = $P/other/sites/county/ca.crt|" "$P/c2.ini"
kit_coordinator "$P/fed" "$pport" "$P/run" 4
for k in 0 1 2 3; do
    "$BIN/medfed-client" --config "$P/c$k.ini" > "$P/c$k.log" 2>&1 &
done
wait $cpid
crc=$?
wait
if [ $crc -eq 0 ] && ! grep -q '^roster' "$P/c0.ini" &&
   grep -q 'client=county rejected: identity certificate: certificate not issued by the federation CA' "$P/run.log" &&
   json_check "$P/run/metrics.jsonl" 'len(rows) == 1 and rows[0]["participants"] == 3 and not rows[0]["aborted"]' > /dev/null &&
   grep -q 'identity: certificate for .north-clinic.' "$P/c3.log"
then ok $t; else bad $t "coordinator=$crc"; grep -i 'warn\|error' "$P/run.log" | head; tail -n 3 "$P"/c*.log; fi

# ---- site-owned enrolment ------------------------------------------------------------
# The lead makes the CA and the coordinator's and admin's kits and no site
# keys; three sites enrol on their own machines ($E/site-NAME) and send only
# their requests; the lead signs them into return kits ($E/kit-NAME).
E=$P/enrol
mkdir -p "$E"
eport=$(free_port)
ENROLLED="alpha beta gamma"
# raw_pk PEM-FILE: the Ed25519 key in a request or certificate, as 64 hex
# digits, read by openssl rather than medfed.
raw_pk() {
    case "$1" in *.csr) openssl req -in "$1" -noout -pubkey ;; *) openssl x509 -in "$1" -noout -pubkey ;; esac |
        openssl pkey -pubin -outform DER | tail -c 32 | od -An -tx1 | tr -d ' \n'
}
sha256_hex() { "$PY" -c 'import hashlib, sys; print(hashlib.sha256(bytes.fromhex(sys.argv[1])).hexdigest())' "$1"; }
# field FILE LABEL: what follows "LABEL:" in enrol's or provision's output.
field() { sed -n "s/^$2: *//p" "$1"; }
sign() { # SITE-DIR NAME KIT [--fingerprint HEX] -> provision's exit status, output in $E/sign-NAME.out
    d=$1 n=$2 k=$3
    shift 3
    "$BIN/medfed" provision --sign "$d/$n.csr" --ca-dir "$E/fed/ca" --out "$k" "$@" > "$E/sign-$n.out" 2>&1
}

"$BIN/medfed" provision --out "$E/fed" --federation it --endpoint "tcp://127.0.0.1:$eport" \
    > "$E/prov.out" 2>&1
for s in $ENROLLED; do
    "$BIN/medfed-client" enrol --site $s --out "$E/site-$s" \
        --coordinator "tcp://127.0.0.1:$eport" > "$E/enrol-$s.out" 2>&1
done

# Each enrolled site: one roster line with the keys of its request, its
# certificate from the CA for that key, its fingerprint (the SHA-256 of that
# key) the same in enrol's and provision's output and on every peers.txt,
# a return kit of public files only.
enrolled_ok() {
    for s in $ENROLLED; do
        pk=$(raw_pk "$E/site-$s/$s.csr")
        fpr=$(field "$E/enrol-$s.out" fingerprint)
        [ ${#pk} -eq 64 ] && [ "$fpr" = "$(sha256_hex "$pk")" ] &&
            [ "$(field "$E/sign-$s.out" fingerprint)" = "$fpr" ] &&
            [ "$(grep -c "^$s " "$E/fed/coordinator/roster.txt")" -eq 1 ] &&
            grep -qx "$s $pk [0-9a-f]\{64\}" "$E/fed/coordinator/roster.txt" &&
            for f in "$E/fed/coordinator/peers.txt" "$E/fed/admin/peers.txt"; do
                grep -qx "$s $fpr" "$f" || return 1
            done &&
            [ "$(ls "$E/kit-$s" | wc -l)" -eq 3 ] &&
            openssl verify -CAfile "$E/fed/ca/ca.crt" "$E/kit-$s/$s.crt" > /dev/null 2>&1 &&
            openssl x509 -in "$E/kit-$s/$s.crt" -noout -subject | grep -qx "subject=CN = $s" &&
            [ "$(raw_pk "$E/kit-$s/$s.crt")" = "$pk" ] &&
            cmp -s "$E/kit-$s/coordinator.pub" "$E/fed/admin/coordinator.pub" &&
            cmp -s "$E/kit-$s/ca.crt" "$E/fed/ca/ca.crt" || { echo "enrolled_ok: $s"; return 1; }
    done
}

t=enrolment_keeps_site_keys_on_the_site
# alpha's fingerprint is checked as read aloud (16 groups), beta's in full, gamma's not.
sign "$E/site-alpha" alpha "$E/kit-alpha" --fingerprint "$(field "$E/enrol-alpha.out" 'read aloud')"
src=$?
sign "$E/site-beta" beta "$E/kit-beta" --fingerprint "$(field "$E/enrol-beta.out" fingerprint)"
src=$((src + $?))
sign "$E/site-gamma" gamma "$E/kit-gamma"
src=$((src + $?))
if [ $src -eq 0 ] && ! grep -q warning "$E/prov.out" && [ ! -e "$E/fed/sites" ] &&
   # Keys 0600 in folders 0700; the kits are folders 0700 too.
   [ "$(find "$E"/site-* -name '*.key' -perm 600 | wc -l)" -eq 6 ] &&
   [ -z "$(find "$E"/site-* -name '*.key' ! -perm 600)" ] &&
   [ -z "$(find "$E"/site-* "$E"/kit-* "$E/fed" -type d ! -perm 700)" ] &&
   enrolled_ok &&
   # No site secret (the identity seed, the CURVE secret key) in any file the
   # lead holds: not as hex, not as raw bytes, not inside a PEM block.
   "$PY" - "$E" <<'PYEOF'
import base64, os, re, sys
e = sys.argv[1]
secrets = [open(os.path.join(e, d, k)).read().strip()[:64]   # identity.key: seed || public key
           for d in os.listdir(e) if d.startswith("site-") for k in ("identity.key", "curve.key")]
found = []
for top in [os.path.join(e, d) for d in os.listdir(e) if d == "fed" or d.startswith("kit-")]:
    for root, _, files in os.walk(top):
        for f in files:
            data = open(os.path.join(root, f), "rb").read()
            blobs = [data.lower()] + [base64.b64decode(m.group(1)) for m in
                     re.finditer(rb"-----BEGIN [A-Z ]+-----(.*?)-----END", data, re.S)]
            found += [os.path.join(root, f) for h in secrets for b in blobs
                      if h.encode() in b or bytes.fromhex(h) in b]
if found: print("site secret found in", found)
sys.exit(0 if len(secrets) == 6 and not found else 1)
PYEOF
then ok $t; else bad $t "sign=$src, see $E"; cat "$E/prov.out" "$E"/sign-*.out; fi

t=enrolment_refuses_what_it_should
rsum=$(sha256sum < "$E/fed/coordinator/roster.txt")
psum=$(sha256sum < "$E/fed/coordinator/peers.txt")
ksum=$(cat "$E/site-alpha"/*.key | sha256sum)
# A fourth site whose request comes with alpha's fingerprint: not signed.
"$BIN/medfed-client" enrol --site delta --out "$E/site-delta" > "$E/enrol-delta.out" 2>&1
sign "$E/site-delta" delta "$E/kit-delta" --fingerprint "$(field "$E/enrol-alpha.out" fingerprint)"
mismatch=$?
grep -q 'its fingerprint is not the one the site read out' "$E/sign-delta.out" || mismatch=0
# A request altered on the way (one base64 character of beta's).
mkdir -p "$E/tampered"
awk 'NR == 3 { c = substr($0, 10, 1); $0 = substr($0, 1, 9) (c == "A" ? "B" : "A") substr($0, 11) } 1' \
    "$E/site-beta/beta.csr" > "$E/tampered/beta.csr"
sign "$E/tampered" beta "$E/kit-tampered"
tampered=$?
grep -q 'certificate request' "$E/sign-beta.out" || tampered=0
# alpha again with new keys (a second enrolment, or someone posing as alpha).
"$BIN/medfed-client" enrol --site alpha --out "$E/site-alpha2" > /dev/null 2>&1
sign "$E/site-alpha2" alpha "$E/kit-alpha2"
impostor=$?
grep -q "site 'alpha' is already on .* with another key: refused" "$E/sign-alpha.out" || impostor=0
# enrol never overwrites a site's keys.
"$BIN/medfed-client" enrol --site alpha --out "$E/site-alpha" > "$E/enrol-again.out" 2>&1
again=$?
grep -q "identity.key exists: enrol never overwrites" "$E/enrol-again.out" || again=0
if [ $mismatch -eq 1 ] && [ $tampered -eq 1 ] && [ $impostor -eq 1 ] && [ $again -eq 1 ] &&
   [ "$(cat "$E/site-alpha"/*.key | sha256sum)" = "$ksum" ] &&
   [ ! -e "$E/kit-delta" ] && [ ! -e "$E/kit-tampered" ] && [ ! -e "$E/kit-alpha2" ] &&
   [ "$(sha256sum < "$E/fed/coordinator/roster.txt")" = "$rsum" ] &&
   [ "$(sha256sum < "$E/fed/coordinator/peers.txt")" = "$psum" ] &&
   # The same request signed again changes nothing and gives the same certificate.
   kit_sums "$E/kit-gamma" > "$E/gamma.sums" &&
   sign "$E/site-gamma" gamma "$E/kit-gamma" && sign "$E/site-gamma" gamma "$E/kit-gamma2" &&
   kit_sums "$E/kit-gamma" | cmp -s - "$E/gamma.sums" &&
   cmp -s "$E/kit-gamma/gamma.crt" "$E/kit-gamma2/gamma.crt" &&
   [ "$(sha256sum < "$E/fed/coordinator/roster.txt")" = "$rsum" ]
then ok $t; else bad $t "mismatch=$mismatch tampered=$tampered impostor=$impostor again=$again"; cat "$E"/sign-*.out; fi

t=enrolled_sites_run_a_round
# Each site copies its return kit and the lead's peers.txt (sent once all
# have enrolled) next to its keys, completes client.ini (coordinator_key from
# coordinator.pub, [policy] peers) and adds its data; the coordinator runs
# from the lead's coordinator kit.
k=0
for s in $ENROLLED; do
    cp "$E/kit-$s/"* "$E/fed/admin/peers.txt" "$E/site-$s/"
    sed -i "s|^;coordinator_key = .*|coordinator_key = $(cat "$E/site-$s/coordinator.pub")|;
            s|^;peers = |peers = |" "$E/site-$s/client.ini"
    kit_ini "$E/site-$s" "site-0$k" "$E/c-$s.ini"
    k=$((k + 1))
done
kit_coordinator "$E/fed" "$eport" "$E/run" 3
cpids=""
for s in $ENROLLED; do
    "$BIN/medfed-client" --config "$E/c-$s.ini" > "$E/c-$s.log" 2>&1 &
    cpids="$cpids $!"
done
wait $cpid
crc=$?
# The sites exit on SHUTDOWN; one still running 20 s after the coordinator
# (it missed SHUTDOWN, or was refused and retries for ever) is stopped.
for i in $(seq 40); do
    alive=0
    for c in $cpids; do kill -0 $c 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.5
done
stuck=0
for c in $cpids; do kill $c 2>/dev/null && stuck=$((stuck + 1)); done
wait
if [ $crc -eq 0 ] && ! grep -q 'rejected\|refused' "$E/run.log" &&
   [ "$(grep -l 'transport: CURVE' "$E"/c-*.log | wc -l)" -eq 3 ] &&
   ! grep -q 'no \[policy\] peers list' "$E"/c-*.log &&
   json_check "$E/run/metrics.jsonl" 'len(rows) == 1 and rows[0]["participants"] == 3 and rows[0]["secagg"] and not rows[0]["aborted"]' > /dev/null
then ok $t; else bad $t "coordinator=$crc stuck=$stuck"; grep -i 'warn\|error' "$E/run.log" | head; tail -n 3 "$E"/c-*.log; fi
