#!/usr/bin/env bash
# One benchmark smoke test (ctest label bench-smoke): runs COMMAND... and
# passes only if it exits 0 and its last non-empty line of standard output
# matches REGEX (extended regex, the shape of the benchmark's summary line).
# A benchmark that stops early, throws, or prints a table but no summary
# fails here, so a benchmark cannot rot unnoticed.
#
#   run_smoke.sh REGEX COMMAND [ARGS...]
set -uo pipefail
regex=$1
shift
out=$(mktemp /tmp/capsule-bench-smoke-XXXXXX)
trap 'rm -f "$out"' EXIT
# Both go to the test's log as they come (so a run that ctest stops at its
# timeout shows how far it got); standard output is also kept to check its
# last line.
"$@" | tee "$out"
rc=${PIPESTATUS[0]}
last=$(grep -v '^[[:space:]]*$' "$out" | tail -1)
if [ $rc -ne 0 ]; then
  echo "bench-smoke: FAIL: '$*' exited with status $rc" >&2
  exit 1
fi
if ! printf '%s\n' "$last" | grep -Eq -- "$regex"; then
  echo "bench-smoke: FAIL: the last line of '$*' is '$last', not a summary line matching /$regex/" >&2
  exit 1
fi
echo "bench-smoke: ok: $last"
