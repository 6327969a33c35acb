#!/usr/bin/env bash
# One benchmark smoke test (ctest label bench-smoke): runs COMMAND... and
# passes only if it exits 0 and its last non-empty line of standard output
# matches REGEX (extended regex, the shape of the benchmark's summary line).
# A benchmark that stops early, throws, or prints a table but no summary
# fails here, so a benchmark cannot rot unnoticed. A command still running
# after LIMIT seconds gets SIGTERM (its whole process group), and SIGKILL 20 s
# later: benchmarks clean up on SIGTERM, ctest's own timeout would SIGKILL
# and leave the host partitioned.
#
#   run_smoke.sh LIMIT REGEX COMMAND [ARGS...]
set -uo pipefail
limit=$1
regex=$2
shift 2
out=$(mktemp /tmp/capsule-bench-smoke-XXXXXX)
trap 'rm -f "$out"' EXIT
# Both go to the test's log as they come (so a run that ctest stops at its
# timeout shows how far it got); standard output is also kept to check its
# last line.
start=$SECONDS
timeout -s TERM -k 20 "$limit" "$@" | tee "$out"
rc=${PIPESTATUS[0]}
# timeout's own statuses: 124 it ended on SIGTERM, 137 it needed the SIGKILL
# (137 before the limit is a SIGKILL from elsewhere, reported below).
if [ $rc -eq 124 ] || { [ $rc -eq 137 ] && [ $((SECONDS - start)) -ge "$limit" ]; }; then
  how="ended on SIGTERM"
  [ $rc -eq 137 ] && how="did not end on SIGTERM within 20 s and was killed: check the host for leftovers"
  echo "bench-smoke: FAIL: '$*' was still running after $limit s; it $how" >&2
  exit 1
fi
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
