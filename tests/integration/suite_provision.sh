# Provisioning and certificates (sourced by run.sh: ok/bad/json_check/free_port,
# $BIN, $WORK, $ROOT; the first run's $WORK/a holds the model and site data).
#   - medfed provision makes three kits, then a fourth without touching the others
#   - a daemon refuses a secret key file others can read, naming the file
#   - a federation from the kits, clients with ca + certificate and no roster:
#     a site whose certificate comes from another CA is rejected with a reason,
#     the others finish the round

P=$WORK/prov
mkdir -p "$P"
pport=$(free_port)
printf '# hospitals\nst-marys\ngeneral\n\ncounty\n' > "$P/sites3.txt"
printf 'st-marys\ngeneral\ncounty\nnorth-clinic\n' > "$P/sites4.txt"

# Every file under DIR with its checksum, sorted (the roster excluded: it grows).
kit_sums() { (cd "$1" && find . -type f ! -name roster.txt | xargs sha256sum | LC_ALL=C sort); }

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
        --endpoint "tcp://127.0.0.1:$pport" | grep -q 'nothing was missing' &&
   openssl verify -CAfile "$P/fed/ca/ca.crt" "$P/fed/sites/north-clinic/identity.crt" > /dev/null 2>&1
then ok $t; else bad $t "see $P"; cat "$P/prov1.out" "$P/prov2.out"; fi

# A client kit with the first run's data: the provisioned [client] plus a [data] section.
kit_ini() { # SITE_DIR DATA_SITE OUT
    cp "$1/client.ini" "$3"
    awk '/^\[data\]/ {p = 1; print; next} /^\[/ {p = 0} p' "$WORK/a/sites/$2/client.ini" >> "$3"
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
"$BIN/medfed-coordinator" --bind "tcp://127.0.0.1:$pport" --init "$WORK/a/init.safetensors" \
    --out "$P/run" --roster "$P/fed/coordinator/roster.txt" \
    --curve-secret "$P/fed/coordinator/curve.key" --ca "$P/fed/coordinator/ca.crt" \
    --rounds 1 --wait-for 4 --min-clients 3 --local-epochs 1 --heartbeat-timeout 20 \
    --wait-timeout 60 --phase-timeout 60 > "$P/coord.log" 2>&1 &
cpid=$!
for k in 0 1 2 3; do
    "$BIN/medfed-client" --config "$P/c$k.ini" > "$P/c$k.log" 2>&1 &
done
wait $cpid
crc=$?
wait
if [ $crc -eq 0 ] && ! grep -q '^roster' "$P/c0.ini" &&
   grep -q 'client=county rejected: identity certificate: certificate not issued by the federation CA' "$P/coord.log" &&
   json_check "$P/run/metrics.jsonl" 'len(rows) == 1 and rows[0]["participants"] == 3 and not rows[0]["aborted"]' > /dev/null &&
   grep -q 'identity: certificate for .north-clinic.' "$P/c3.log"
then ok $t; else bad $t "coordinator=$crc"; grep -i 'warn\|error' "$P/coord.log" | head; tail -3 "$P"/c*.log; fi
