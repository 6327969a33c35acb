# Shared by the experiment scripts (sourced). Each experiment writes
#   build/results/<name>.csv   the raw points (one row per run)
#   build/results/<name>.png   a plot (gnuplot, pngcairo)
# and appends a Markdown section with the exact command to docs/results.md.

EXP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$EXP_ROOT/scripts/lib/setup.sh"
EXP_OUT=${EXP_OUT:-$CAPSULE_BUILD/results}
EXP_BIN=$CAPSULE_BUILD/bin
mkdir -p "$EXP_OUT"

# The exact command line that produced a result, for docs/results.md.
exp_command() { printf '%s' "bench/experiments/$(basename "$0")"; for a in "$@"; do printf ' %q' "$a"; done; }

# exp_plot PNG TITLE XLABEL YLABEL "gnuplot plot clause"
exp_plot() {
  local png=$1 title=$2 xl=$3 yl=$4 clause=$5
  gnuplot <<GP || say "plot: gnuplot failed for $png (the CSV is still there)"
set terminal pngcairo size 900,560 noenhanced
set output '$png'
set datafile separator ','
set key top left
set grid
set title '$title'
set xlabel '$xl'
set ylabel '$yl'
plot $clause
GP
}

# exp_append_results TITLE FILE: appends FILE (Markdown) under a heading to
# docs/results.md, replacing an older section with the same title.
exp_append_results() {
  local title=$1 body=$2 doc=$EXP_ROOT/docs/results.md
  [ -f "$doc" ] || printf '# Results\n\nEach section is written by the command it names; rerun it to refresh.\n' >"$doc"
  python3 - "$doc" "$title" "$body" <<'PY'
import sys, re
doc, title, body = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().rstrip() + "\n"
text = open(doc).read()
head = "## " + title + "\n"
pat = re.compile(r"^## " + re.escape(title) + r"\n.*?(?=^## |\Z)", re.S | re.M)
section = head + "\n" + body + "\n"
text = pat.sub(lambda m: section, text) if pat.search(text) else text.rstrip() + "\n\n" + section
open(doc, "w").write(text)
PY
}
