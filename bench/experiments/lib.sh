# Shared by the experiment scripts (sourced). Each experiment writes
#   build/results/<name>.csv   the raw points (one row per run)
#   build/results/<name>.png   a plot (gnuplot, pngcairo)
# and appends a Markdown section with the exact command to docs/results.md.

EXP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$EXP_ROOT/scripts/lib/setup.sh"
export EXP_OUT=${EXP_OUT:-$CAPSULE_BUILD/results}
EXP_BIN=$CAPSULE_BUILD/bin
mkdir -p "$EXP_OUT"

# --smoke (every script takes it): one tiny run to the script's last line,
# for the bench-smoke tests of ./scripts/test. Results go to a temporary
# directory (removed on exit) and docs/results.md is left alone: smoke
# numbers mean nothing.
EXP_SMOKE=0
exp_smoke() {
  EXP_SMOKE=1
  EXP_OUT=$(mktemp -d /tmp/capsule-exp-smoke-XXXXXX)
  export EXP_OUT
}

# The exact command line that produced a result, for docs/results.md.
exp_command() { printf '%s' "bench/experiments/$(basename "$0")"; for a in "$@"; do printf ' %q' "$a"; done; }

# exp_plot PNG TITLE XLABEL YLABEL "gnuplot plot clause" ["more gnuplot set-up"]
exp_plot() {
  local png=$1 title=$2 xl=$3 yl=$4 clause=$5 extra=${6:-}
  gnuplot <<GP || say "plot: gnuplot failed for $png (the CSV is still there)"
set terminal pngcairo size 900,560 noenhanced
set output '$png'
set datafile separator ','
set key top left
set grid
set title '$title'
set xlabel '$xl'
set ylabel '$yl'
$extra
plot $clause
GP
}

# exp_append_results TITLE FILE: appends FILE (Markdown) under a heading to
# docs/results.md, replacing an older section with the same title.
exp_append_results() {
  local title=$1 body=$2 doc=$EXP_ROOT/docs/results.md
  [ "$EXP_SMOKE" = 1 ] && return 0
  [ -f "$doc" ] || printf '# Results\n\nEach section is written by the command it names; rerun it to refresh.\n' >"$doc"
  python3 - "$doc" "$title" "$body" <<'PY'
import sys, re
import os, shutil
doc, title, body = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().rstrip() + "\n"
# Plots named in the section are published next to the doc and shown inline.
out, pub = os.environ["EXP_OUT"], os.path.join(os.path.dirname(doc), "results")
for png in sorted(set(re.findall(r"`([A-Za-z0-9_.-]+\.png)`", body))):
    if os.path.exists(os.path.join(out, png)):
        os.makedirs(pub, exist_ok=True)
        shutil.copy(os.path.join(out, png), os.path.join(pub, png))
        body += "\n![%s](results/%s)\n" % (png, png)
text = open(doc).read()
head = "## " + title + "\n"
pat = re.compile(r"^## " + re.escape(title) + r"\n.*?(?=^## |\Z)", re.S | re.M)
section = head + "\n" + body + "\n"
text = pat.sub(lambda m: section, text) if pat.search(text) else text.rstrip() + "\n\n" + section
open(doc, "w").write(text)
PY
}

# exp_bench LOG ARGS...: runs `capsule-bench ARGS`, its output shown and kept
# in LOG. If the script is interrupted or fails, exp_cleanup stops the bench
# with SIGTERM (it then undoes its VMs, OVS-DPDK, reservations and cpuset
# partition itself); if it does not end within 30 s, it and the processes it
# started are killed by PID and stale capsule cpusets are removed.
EXP_BENCH_PID=
exp_bench() {
  local log=$1
  shift
  # tee ignores SIGTERM: a stop sent to the whole process group (run_smoke's
  # timeout) must not cut the bench's output while it cleans up.
  "$EXP_BIN/capsule-bench" "$@" > >(trap '' TERM INT; exec tee "$log") 2>&1 &
  EXP_BENCH_PID=$!
  local rc=0
  wait "$EXP_BENCH_PID" || rc=$?
  EXP_BENCH_PID=
  sleep 0.2  # let tee finish
  return $rc
}

exp_descendants() {
  local p
  for p in $(pgrep -P "$1" 2>/dev/null); do
    echo "$p"
    exp_descendants "$p"
  done
}

exp_cleanup() {
  [ "$EXP_SMOKE" = 1 ] && case $EXP_OUT in /tmp/capsule-exp-smoke-*) rm -rf "$EXP_OUT" ;; esac
  local pid=$EXP_BENCH_PID
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  local kids
  kids=$(exp_descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" $kids 2>/dev/null || true
    "$EXP_BIN/capsule-rsv" cleanup || true
  fi
  for k in $kids; do kill -0 "$k" 2>/dev/null && kill -KILL "$k" 2>/dev/null; done
  return 0
}
trap exp_cleanup EXIT
trap 'exit 130' INT TERM

# exp_note_load: one line on what else ran on the machine (for the doc).
exp_note_load() {
  printf 'load average before the run: %s; %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$(date -u '+%Y-%m-%d %H:%M UTC')"
}
