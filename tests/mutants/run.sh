#!/bin/sh
# Mutation testing: each tests/mutants/*.mut breaks one critical check on
# purpose; the test it names must then fail. A mutant "passes" when its test
# fails (caught) and "fails" when the test still passes (survived), when its
# text is no longer in the file (stale), or when the mutated tree does not build.
#
#   sh tests/mutants/run.sh BUILD BIN [--jobs J] [--sample K] [--no-baseline] [NAME...]
#
# BUILD and BIN: the already-built object and program directories (make mutants
# builds them first). Each mutant runs in its own scratch tree under /tmp: the
# working tree's files (tracked and untracked, not ignored) plus copies of BUILD
# and BIN with their timestamps, so make rebuilds only what the mutation touches.
# NAME selects mutants by file name, with or without .mut, or a prefix ("M04",
# "secagg"). --sample K runs K of the mutants with unit-test targets, a different
# K each day (make test); --jobs J runs J mutants at once, each with make -j1
# (default: 1 at a time with make -j2); --no-baseline skips running each test on
# the unmutated tree first (for a tree whose tests were just seen to pass: it
# halves the time). Logs: BUILD/mutants/NAME.log.
#
# A .mut file, one "key: value" per line (# comments):
#   file:    the source file, relative to the repository root
#   find:    the exact text to replace (one line; must occur exactly once)
#   replace: what replaces it (may be empty)
#   why:     what the check guards, in a sentence
#   test:    unit TEST_BINARY   make unit-test with that one cmocka binary
#            it NAME...         make integration-test with MEDFED_IT_ONLY=NAME...
#                               (tests of tests/integration/run.sh, or suites: deploy...)
#            make TARGET...     any make target (BUILD and BIN set)
#            sh COMMAND         a command in the scratch tree ($BUILD, $BIN set)
#   timeout: seconds for the test (300)
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PY=/usr/bin/python3

# ---- one mutant (runs in a child: run.sh --one BUILD BIN FILE OUTDIR) ----------
if [ "${1:-}" = "--one" ]; then
    build=$2 bin=$3 mut=$4 out=$5 makej=$6
    # "baseline:TEST" runs TEST on the unmutated tree: it must pass there.
    case $mut in
    baseline:*) test=${mut#baseline:}; name=baseline-$(echo "$test" | tr -c 'A-Za-z0-9_\n-' '_') ;;
    *) name=$(basename "$mut" .mut); test=$(sed -n 's/^test: \{0,1\}//p' "$mut" | head -n 1) ;;
    esac
    log="$out/$name.log"
    res="$out/$name.result"
    field() { sed -n "s/^$1: \{0,1\}//p" "$mut" | head -n 1; }
    tmo=600
    [ -f "$mut" ] && tmo=$(field timeout)
    : "${tmo:=300}"
    scratch=$(mktemp -d /tmp/medfed-mut-"$name".XXXXXX) || exit 1
    trap 'rm -rf "$scratch"' EXIT
    t0=$(date +%s)
    finish() { # VERDICT REASON
        echo "$1 $(($(date +%s) - t0)) $2" > "$res"
        exit 0
    }
    # The working tree's files and the built directories, timestamps kept.
    (cd "$root" && git ls-files -z -co --exclude-standard |
        tr '\0' '\n' | while IFS= read -r f; do [ -e "$f" ] && printf '%s\n' "$f"; done |
        tar -cf - -T - "$build" "$bin" 2>/dev/null) | tar -xf - -C "$scratch" 2>/dev/null
    : > "$log"
    if [ -f "$mut" ] && ! "$PY" - "$mut" "$scratch" > "$log" 2>&1 <<'PYEOF'
import sys
fields = {}
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    if not line or line.startswith("#") or ":" not in line:
        continue
    k, v = line.split(":", 1)
    if k in fields:
        continue
    fields[k] = v[1:] if v.startswith(" ") else v
for k in ("file", "find", "replace", "test"):
    if k not in fields:
        print("bad mutant file: no '%s:' line" % k); sys.exit(1)
path = sys.argv[2] + "/" + fields["file"]
try:
    text = open(path, encoding="utf-8").read()
except OSError as e:
    print("stale: %s" % e); sys.exit(1)
n = text.count(fields["find"])
if n == 0:
    print("stale: text not found"); sys.exit(1)
if n > 1:
    print("ambiguous: text found %d times" % n); sys.exit(1)
open(path, "w", encoding="utf-8").write(text.replace(fields["find"], fields["replace"]))
PYEOF
    then
        finish failed "$(tail -n 1 "$log")"
    fi
    set -- $test
    kind=$1
    shift
    mk() { make -C "$scratch" --no-print-directory BUILD="$build" BIN="$bin" "$@"; }
    hooks=""
    grep -q '^test-bin:' "$scratch/Makefile" && hooks=test-bin
    # Build first (a mutant that does not build is a bad mutant, not a caught one).
    case $kind in
    unit) targets="$build/tests/$1"; [ "$1" = test_dicom ] && targets="$targets $bin/medfed-dicom-worker" ;;
    it|make|sh) targets="all $build/tests/evil_client $build/tests/data_dump $hooks" ;;
    *) finish failed "bad test kind '$kind'" ;;
    esac
    mk -j"$makej" $targets >> "$log" 2>&1 || finish failed "does not build (see $log)"
    echo "---- test: $test" >> "$log"
    # timeout(1) puts the test in its own process group and ends all of it.
    case $kind in
    unit) timeout "$tmo" make -C "$scratch" --no-print-directory BUILD="$build" BIN="$bin" \
              unit-test UNIT_TESTS="$build/tests/$1" ;;
    it) MEDFED_IT_ONLY="$*" timeout "$tmo" make -C "$scratch" --no-print-directory \
            BUILD="$build" BIN="$bin" integration-test ;;
    make) timeout "$tmo" make -C "$scratch" --no-print-directory BUILD="$build" BIN="$bin" "$@" ;;
    sh) (cd "$scratch" && BUILD="$build" BIN="$bin" timeout "$tmo" sh -c "$*") ;;
    esac >> "$log" 2>&1
    rc=$?
    if [ ! -f "$mut" ]; then
        [ $rc -eq 0 ] && finish passed "passes"
        finish failed "fails without any mutant"
    fi
    if [ $rc -eq 124 ]; then finish passed "caught (timed out after ${tmo}s)"; fi
    if [ $rc -ne 0 ]; then finish passed "caught"; fi
    finish failed "SURVIVED: $test passed with the mutant"
fi

# ---- the driver -------------------------------------------------------------------
build=$1 bin=$2
shift 2
jobs=1
sample=0
baseline=1
sel=""
while [ $# -gt 0 ]; do
    case $1 in
    --jobs) jobs=$2; shift ;;
    --sample) sample=$2; shift ;;
    --no-baseline) baseline=0 ;;
    *) sel="$sel $1" ;;
    esac
    shift
done
out="$root/$build/mutants"
mkdir -p "$out"
rm -f "$out"/*.result

all=$(ls "$here"/*.mut | sort)
list=""
for m in $all; do
    n=$(basename "$m" .mut)
    if [ -n "$sel" ]; then
        hit=0
        for s in $sel; do
            case $n in "${s%.mut}"*) hit=1 ;; esac
        done
        [ $hit -eq 1 ] || continue
    fi
    list="$list $m"
done
if [ "$sample" -gt 0 ]; then
    # K of the unit-test mutants, a different K each day.
    units=$(for m in $list; do grep -q '^test: unit ' "$m" && echo "$m"; done)
    count=$(echo "$units" | grep -c .)
    day=$(($(date +%s) / 86400))
    list=$(echo "$units" | awk -v k="$sample" -v c="$count" -v d="$day" \
        'c > 0 { i = NR - 1; s = (d * k) % c; if ((i - s + c) % c < k) print }')
    echo "mutants: today's sample of $sample (all: make mutants):" \
        $(for m in $list; do basename "$m" .mut; done)
fi
[ -n "$list" ] || { echo "mutants: none selected"; echo "0 passed, 0 failed"; exit 1; }

makej=2
[ "$jobs" -gt 1 ] && makej=1
# The test build (programs with test hooks), when the Makefile has one: built once
# here so that the scratch trees start from it.
if grep -q '^test-bin:' "$root/Makefile"; then
    make -C "$root" --no-print-directory BUILD="$build" BIN="$bin" -j2 test-bin || exit 1
fi
t0=$(date +%s)
# Each test once on the unmutated tree first: a test that already fails there
# catches nothing.
tests=$(for m in $list; do sed -n 's/^test: \{0,1\}//p' "$m" | head -n 1; done | sort -u)
[ $baseline -eq 1 ] || tests=""
echo "$tests" | grep . | sed 's/^/baseline:/' |
    xargs -P "$jobs" -I{} sh "$0" --one "$build" "$bin" {} "$out" "$makej"
broken=""
for tst in $(echo "$tests" | tr ' ' '+'); do
    tst=$(echo "$tst" | tr '+' ' ')
    bn=baseline-$(echo "$tst" | tr -c 'A-Za-z0-9_\n-' '_')
    if ! grep -q '^passed' "$out/$bn.result" 2>/dev/null; then
        echo "mutants: '$tst' fails without any mutant (see $build/mutants/$bn.log)"
        broken="$broken|$tst|"
    fi
done
for m in $list; do
    tst=$(sed -n 's/^test: \{0,1\}//p' "$m" | head -n 1)
    case $broken in
    *"|$tst|"*) echo "failed 0 baseline: '$tst' fails without the mutant" > "$out/$(basename "$m" .mut).result" ;;
    *) echo "$m" ;;
    esac
done | xargs -r -P "$jobs" -I{} sh "$0" --one "$build" "$bin" {} "$out" "$makej"

passed=0
failed=0
for m in $list; do
    n=$(basename "$m" .mut)
    r=$(cat "$out/$n.result" 2>/dev/null || echo "failed 0 no result")
    verdict=${r%% *}
    rest=${r#* }
    secs=${rest%% *}
    reason=${rest#* }
    if [ "$verdict" = passed ]; then
        passed=$((passed + 1))
        printf 'mutant: ok   %-44s %s (%ss)\n' "$n" "$reason" "$secs"
    else
        failed=$((failed + 1))
        printf 'mutant: FAIL %-44s %s (%ss)\n' "$n" "$reason" "$secs"
    fi
done
echo "mutants: $(( $(date +%s) - t0 )) s; logs in $build/mutants/"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
