# `make install` (sourced by run.sh), run for real into temporary trees:
#   install_lands_where_the_makefile_says
#     with DESTDIR (PREFIX /usr/local) and with PREFIX alone: the six programs
#     in PREFIX/bin (0755, the same bytes as $BIN's), every file of configs/
#     (example configs and the two systemd units) in PREFIX/share/medfed/configs
#     (0644, the same bytes), nothing else anywhere; the installed programs run.
#   install_systemd_units_verify
#     the installed units, copied to /etc/systemd/system as the README says,
#     pass `systemd-analyze verify` with no warning against the DESTDIR tree as
#     the system root: their ExecStart programs are the installed ones. Without
#     systemd-analyze it prints SKIP and counts neither way.
# The build installed is the one under test ($BIN, $BUILD), named as the
# Makefile names it.

I="$WORK/install"
mkdir -p "$I"
ibin=${BIN#"$ROOT"/}
ibuild=${BUILD#"$ROOT"/}

# install_check TREE PREFIX: TREE holds exactly what `make install` puts under
# PREFIX (TREE/PREFIX/bin/..., TREE/PREFIX/share/medfed/configs/...).
install_check() {
    "$PY" - "$1" "$2" "$BIN" "$ROOT/configs" <<'PYEOF'
import filecmp, os, stat, sys
tree, prefix, bindir, configs = sys.argv[1:]
base = os.path.join(tree, prefix.lstrip("/"))
progs = ["medfed", "medfed-coordinator", "medfed-client", "medfed-dicom-worker",
         "medfed-init", "medfed-eval"]
want = {os.path.join(base, "bin", p): (0o755, os.path.join(bindir, p)) for p in progs}
for f in os.listdir(configs):
    want[os.path.join(base, "share/medfed/configs", f)] = (0o644, os.path.join(configs, f))
got = set()
for d, dirs, files in os.walk(tree):
    got.update(os.path.join(d, f) for f in files)
errs = []
units = [p for p in want if p.endswith(".service")]
if len(units) != 2:
    errs.append("configs/ holds %d systemd units, not 2" % len(units))
for p in sorted(set(want) - got): errs.append("missing: " + p)
for p in sorted(got - set(want)): errs.append("not expected: " + p)
for p, (mode, src) in want.items():
    if p not in got: continue
    m = stat.S_IMODE(os.stat(p).st_mode)
    if m != mode: errs.append("%s: mode %o, not %o" % (p, m, mode))
    if not filecmp.cmp(p, src, shallow=False): errs.append("%s differs from %s" % (p, src))
if errs: print("\n".join(errs))
sys.exit(1 if errs else 0)
PYEOF
}

t=install_lands_where_the_makefile_says
if make -C "$ROOT" --no-print-directory install BIN="$ibin" BUILD="$ibuild" \
        DESTDIR="$I/dest" > "$I/make-destdir.log" 2>&1 &&
   install_check "$I/dest" /usr/local &&
   make -C "$ROOT" --no-print-directory install BIN="$ibin" BUILD="$ibuild" \
        PREFIX="$I/prefix" > "$I/make-prefix.log" 2>&1 &&
   install_check "$I/prefix" "" &&
   # The installed programs run from where they landed: medfed-init makes
   # the same model as the first run's (medfed-sim --seed 3).
   "$I/dest/usr/local/bin/medfed-init" --arch cnn --in-channels 1 --size 28x28 --classes 2 \
        --seed 3 --out "$I/init.safetensors" > "$I/init.log" 2>&1 &&
   cmp -s "$I/init.safetensors" "$WORK/a/init.safetensors" &&
   "$I/dest/usr/local/bin/medfed-coordinator" --help > "$I/coord-help.txt" 2>&1 &&
   grep -q -- '--fraction' "$I/coord-help.txt"
then ok $t; else bad $t "see $I/make-*.log"; tail -5 "$I/make-destdir.log" "$I/make-prefix.log" "$I/init.log" 2>/dev/null; fi

t=install_systemd_units_verify
if ! command -v systemd-analyze > /dev/null 2>&1; then
    echo "integration: SKIP $t (systemd-analyze is not installed; not counted as passed)"
elif [ ! -d "$I/dest/usr/local/share/medfed/configs" ]; then
    bad $t "make install left no tree to verify"
else
    # The installed tree as the system root: the units where the README puts
    # them, the targets they name (from this machine's systemd), and the one
    # command they run from outside PREFIX (ExecReload=/bin/kill).
    R="$I/root"
    cp -a "$I/dest" "$R"
    mkdir -p "$R/etc/systemd/system" "$R/usr/lib/systemd"
    cp "$R/usr/local/share/medfed/configs/"*.service "$R/etc/systemd/system/"
    sysunits=/usr/lib/systemd/system
    [ -d "$sysunits" ] || sysunits=/lib/systemd/system
    cp -a "$sysunits" "$R/usr/lib/systemd/system"
    for p in $(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' "$R"/etc/systemd/system/*.service | sort -u); do
        case $p in /usr/local/*) continue ;; esac
        [ -e "$p" ] && mkdir -p "$R${p%/*}" && cp "$p" "$R$p"
    done
    units=$(cd "$R/etc/systemd/system" && ls -- *.service)
    systemd-analyze verify --man=no --root="$R" $units > "$I/verify.out" 2>&1
    vrc=$?
    # verify exits 0 on unknown keys and bad values (it only warns): any output fails.
    if [ $vrc -eq 0 ] && [ ! -s "$I/verify.out" ] && [ "$(echo $units | wc -w)" -eq 2 ]
    then ok "$t ($(echo $units))"; else bad $t "verify=$vrc, units: $(echo $units)"; cat "$I/verify.out"; fi
fi
