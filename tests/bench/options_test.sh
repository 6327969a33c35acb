#!/usr/bin/env bash
# bench-smoke.options: capsule-bench refuses what a benchmark does not take,
# naming the option, with exit status 2 and before anything runs (each case
# would otherwise start a benchmark: a partition, DL threads, DPDK).
#   options_test.sh CAPSULE_BENCH
set -uo pipefail
bench=$1
fail=0
check() {  # check "EXPECTED MESSAGE PART" ARGS...
  local want=$1
  shift
  local err rc
  err=$("$bench" "$@" 2>&1 >/dev/null)
  rc=$?
  if [ $rc -ne 2 ] || [[ "$err" != *"$want"* ]]; then
    echo "FAIL: capsule-bench $* -> status $rc, '$err' (wanted status 2 and '$want')"
    fail=1
  else
    echo "ok: capsule-bench $* -> $err"
  fi
}
check "unknown option '--runz'" rsv-share --runz 3
check "unknown option 'extra'" rsv-share extra
check "option --runs: 'x3' is not a whole number" rsv-share --runs x3
check "option --runs: '1e9' is not a whole number" rsv-latency --runs 1e9
check "option --runs needs a value" rsv-share --runs
check "option --secs: '-1' is not a number >= 0" hostile --secs -1
check "option --seconds: 'abc' is not a number >= 0" exp-e1 --seconds abc
check "option --q: '10,,20' is not whole numbers separated by commas" exp-e1 --q 10,,20
check "option --guest: 'foo' is not one of interrupt busy-poll" exp-e1 --guest foo
check "option --periods: '30' is not one of 100 20" pmd-budget --periods 30
check "option --window-ms: '99999999999' is not a whole number" rsv-share --window-ms 99999999999
# exp-e3's own rule for VM 1's capsule, checked before anything starts.
check "--v1-deadline-ms between half the budget" exp-e3 --v1-deadline-ms 30
check "--v1-deadline-ms between half the budget" exp-e3 --v1-budget-ms 4 --v1-deadline-ms 1
# --smoke's own arguments pass the same checks, for every benchmark.
names=$("$bench" --list) || { echo "FAIL: capsule-bench --list (a benchmark's --smoke arguments fail its own checks)"; fail=1; }
for name in $names; do
  out=$("$bench" "$name" --help) || { echo "FAIL: capsule-bench $name --help"; fail=1; continue; }
  [[ "$out" == *"--smoke"* ]] || { echo "FAIL: capsule-bench $name --help does not list --smoke"; fail=1; }
done
exit $fail
