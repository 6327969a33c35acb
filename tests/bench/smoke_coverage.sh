#!/usr/bin/env bash
# bench-smoke.coverage: every benchmark `capsule-bench --list` names has a
# smoke test (tests/bench/CMakeLists.txt passes the covered names).
#   smoke_coverage.sh CAPSULE_BENCH COVERED...
set -euo pipefail
bench=$1
shift
missing=()
names=$("$bench" --list) || { echo "bench-smoke.coverage: capsule-bench --list failed" >&2; exit 1; }
for name in $names; do
  found=0
  for c in "$@"; do [ "$c" = "$name" ] && found=1; done
  [ $found = 1 ] || missing+=("$name")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench-smoke.coverage: no smoke test for: ${missing[*]} (add capsule_bench_smoke(...) in tests/bench/CMakeLists.txt)" >&2
  exit 1
fi
echo "bench-smoke.coverage: all $(echo "$names" | wc -l) benchmarks have a smoke test"
