#!/bin/sh
# Runs each libFuzzer harness for a fixed time (make fuzz) or a number of
# executions (make fuzz-long).
#   sh tests/fuzz/run.sh BUILD_DIR SECONDS NAME...
#   sh tests/fuzz/run.sh BUILD_DIR runs:N NAME...   (-runs=N; MEDFED_FUZZ_MAX_SECONDS
#                                                  also caps each harness's time)
# MEDFED_FUZZ_JOBS=J > 1 runs J libFuzzer jobs/workers at once (logs fuzz-*.log in
# BUILD_DIR); one by default, which is what two shared cores allow.
# Corpus: a temp copy of tests/fuzz/corpus/NAME plus the seeds the harness writes
# itself (MEDFED_FUZZ_WRITE_SEEDS). After a clean run the inputs that add coverage
# are merged back into tests/fuzz/corpus/NAME (libFuzzer -merge=1), so the committed
# corpus grows (MEDFED_FUZZ_KEEP=0 leaves it alone). A crash,
# leak, sanitizer report or hang (-timeout) fails; the input lands in BUILD_DIR/artifacts/
# and the log in BUILD_DIR/fuzz-NAME.log.
set -u
build=$1
secs=$2
shift 2
fail=0
mkdir -p "$build/artifacts"
babs=$(cd "$build" && pwd)
for name in "$@"; do
    bin=$build/fuzz_$name
    log=$build/fuzz-$name.log
    work=$(mktemp -d "${TMPDIR:-/tmp}/medfed-fuzz-$name.XXXXXX") || exit 1
    if [ -d "tests/fuzz/corpus/$name" ]; then
        cp "tests/fuzz/corpus/$name"/* "$work"/ 2>/dev/null
    fi
    if ! MEDFED_FUZZ_WRITE_SEEDS=$work "$bin" >"$log" 2>&1; then
        echo "  FUZZ   $name: writing seeds failed:"
        tail -n 20 "$log"
        fail=1
        failed=$((${failed:-0} + 1))
        rm -rf "$work"
        continue
    fi
    seeds=$(ls "$work" | wc -l)
    # Large enough for an EVAL_RESULT with its 8000-byte histogram.
    case $name in
    client) maxlen=4096 ;;
    *) maxlen=16384 ;;
    esac
    case $secs in
    runs:*) limit="-runs=${secs#runs:}"
            [ -n "${MEDFED_FUZZ_MAX_SECONDS:-}" ] && limit="$limit -max_total_time=$MEDFED_FUZZ_MAX_SECONDS" ;;
    *) limit="-max_total_time=$secs" ;;
    esac
    jobs=""
    [ "${MEDFED_FUZZ_JOBS:-1}" -gt 1 ] && jobs="-jobs=$MEDFED_FUZZ_JOBS -workers=$MEDFED_FUZZ_JOBS"
    t0=$(date +%s)
    (cd "$build" && exec "$babs/fuzz_$name" $limit $jobs -max_len="$maxlen" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$babs/artifacts/$name-" "$work") >"$log" 2>&1
    rc=$?
    wall=$(($(date +%s) - t0))
    # libFuzzer copies each job's log into its own output when the job ends; older
    # ones did not, so the job logs are appended only where no job's stats are there
    # yet (appending both counted every execution twice).
    if [ -n "$jobs" ]; then
        grep -q '^stat::number_of_executed_units' "$log" ||
            cat "$build"/fuzz-[0-9]*.log >> "$log" 2>/dev/null
        rm -f "$build"/fuzz-[0-9]*.log
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s += $1} END {if (NR) print s}')
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | awk '{s += $1} END {if (NR) print s}')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    corpus=$(ls "$work" | wc -l)
    printf '  FUZZ   %-12s %s execs (%s/s) in %s s, %s, corpus %s -> %s\n' "$name" "${execs:-?}" \
        "${rate:-?}" "$wall" "${cov:-cov: ?}" "$seeds" "$corpus"
    if [ $rc -ne 0 ]; then
        echo "  FUZZ   $name FAILED (exit $rc), last lines of $log:"
        tail -n 60 "$log"
        echo "  reproduce: $bin $build/artifacts/$name-<crash|leak|timeout>-...  (MEDFED_FUZZ_LOG=1 shows the daemon's log)"
        fail=1
    fi
    if [ $rc -eq 0 ] && [ "${MEDFED_FUZZ_KEEP:-1}" != 0 ]; then
        mkdir -p "tests/fuzz/corpus/$name"
        before=$(ls "tests/fuzz/corpus/$name" | wc -l)
        "$bin" -merge=1 -max_len="$maxlen" -timeout=10 -rss_limit_mb=2048 "tests/fuzz/corpus/$name" \
            "$work" >> "$log" 2>&1
        echo "  FUZZ   $name: corpus tests/fuzz/corpus/$name $before -> $(ls "tests/fuzz/corpus/$name" | wc -l)"
    fi
    rm -rf "$work"
    if [ $rc -eq 0 ]; then passed=$((${passed:-0} + 1)); else failed=$((${failed:-0} + 1)); fi
done
echo "fuzz: ${passed:-0} passed, ${failed:-0} failed"
exit $fail
