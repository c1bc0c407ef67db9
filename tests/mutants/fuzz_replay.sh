#!/bin/sh
# Replays a libFuzzer harness over its committed corpus and its own seeds, once
# each, no fuzzing: a deterministic test of the harness's invariants (a client
# that reveals both shares of a peer, answers below t, accepts a site twice; a
# coordinator that asks for shares below t...). Used by mutants (test: sh ...).
#
#   sh tests/mutants/fuzz_replay.sh NAME      (client, coordinator, wire)
#
# Builds $BUILD/fuzz/fuzz_NAME (clang, as make fuzz does) from the tree it runs in.
set -u
name=$1
fb=${BUILD:-build}/fuzz
make --no-print-directory FUZZ_BUILD="$fb" "$fb/fuzz_$name" || exit 2
work=$(mktemp -d "${TMPDIR:-/tmp}/medfed-replay-$name.XXXXXX") || exit 2
trap 'rm -rf "$work"' EXIT
mkdir "$work/seeds" "$work/art"
MEDFED_FUZZ_WRITE_SEEDS="$work/seeds" "$fb/fuzz_$name" > "$work/seeds.log" 2>&1 ||
    { cat "$work/seeds.log"; exit 1; }
"$fb/fuzz_$name" -runs=0 -timeout=10 -artifact_prefix="$work/art/" \
    "$work/seeds" "tests/fuzz/corpus/$name" > "$work/replay.log" 2>&1
rc=$?
tail -n 40 "$work/replay.log"
echo "fuzz_replay: $name: $(ls "$work/seeds" | wc -l) seeds, $(ls "tests/fuzz/corpus/$name" | wc -l) corpus inputs: rc=$rc"
exit $rc
