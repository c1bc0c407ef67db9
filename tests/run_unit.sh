#!/bin/sh
# Runs every cmocka unit test binary given; prints each one's output and a
# closing "N passed, N failed" line. Exit status 1 if any failed.
# usage: run_unit.sh BUILD_TESTS_DIR TEST...
shift
passed=0
failed=0
export MEDFED_DATA="${MEDFED_DATA:-$(pwd)/data}"
for t in "$@"; do
    name=$(basename "$t")
    out=$("$t" 2>&1)
    status=$?
    p=$(printf '%s\n' "$out" | grep -c '^\[       OK \]')
    f=$(printf '%s\n' "$out" | grep -c '^\[  FAILED  \] test_\|^\[  ERROR   \]')
    if [ $status -ne 0 ]; then
        printf '%s\n' "$out"
        echo "unit: $name FAILED (exit $status)"
        [ "$f" -eq 0 ] && f=1
    else
        echo "unit: $name: $p passed"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
done
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
