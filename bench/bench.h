// capsule-bench subcommands register themselves here; bench/main.cc
// dispatches on argv[1]. Benchmarks print tables (and, for scripts, a fixed
// last line); they are not tests and never assert.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "capsule/stats.h"

namespace capsule::bench {

using BenchFn = int (*)(const std::vector<std::string>& args);

// One option a benchmark takes ("--runs 3"). main.cc checks every argument
// against the benchmark's list before it runs, so an unknown option or a
// malformed number is refused with the option's name instead of being
// ignored or throwing from std::stoi.
struct BenchOption {
  enum class Kind {
    kCount,    // a whole number >= 0 (fits an int)
    kSeconds,  // a decimal number >= 0
    kList,     // comma-separated whole numbers >= 0 ("10,20,30")
    kText,     // any text; `choices`, if given, lists the accepted words
    kFlag,     // no value: present or not (flag())
  };
  std::string name;  // with its dashes: "--runs"
  Kind kind;
  std::string help;
  std::vector<std::string> choices = {};  // kText: the accepted values (each comma-separated item for a list)
};

struct BenchInfo {
  std::string name;
  std::string summary;
  BenchFn fn;
  std::vector<BenchOption> options;
  // What `--smoke` adds to the command line: tiny durations, one run, so
  // that `./scripts/test` (ctest label bench-smoke) runs every benchmark
  // to its summary line in seconds. Options the user gives come first and
  // win (arg() takes the first).
  std::vector<std::string> smoke;
};

std::vector<BenchInfo>& registry();

struct Register {
  Register(const char* name, const char* summary, BenchFn fn, std::vector<BenchOption> options = {},
           std::vector<std::string> smoke = {}) {
    registry().push_back({name, summary, fn, std::move(options), std::move(smoke)});
  }
};

// Checks `args` against `b.options`: the reason for the first argument that
// is not a registered option or whose value does not parse, "" if all do.
std::string check_options(const BenchInfo& b, const std::vector<std::string>& args);

// A fixed-width text table: add rows of cells, print aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void print() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string fmt(const char* format, double v);  // fmt("%.1f", x)
using capsule::median;
using capsule::percentile;
// R^2 of the least-squares line through (x, y) (capsule/stats.h).
inline double r_squared(const std::vector<double>& x, const std::vector<double>& y) { return fit_line(x, y).r_squared; }

// Milliseconds since t0 (steady clock).
inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
// A process's resident memory (KiB, -1 if gone) and CPU time so far (s).
long rss_kib(pid_t pid);
double cpu_seconds(pid_t pid);
// The first `fields` fields of /proc/loadavg, space-separated: 3, the load
// averages over 1, 5 and 15 minutes; 5 adds runnable/all tasks and the last PID.
std::string loadavg(int fields = 3);

// SIGINT/SIGTERM set g_stop once catch_stop_signals() ran: a benchmark that
// polls it ends its run after the current step, so that everything it set
// up (threads' policies, reservations, partitions, processes, files) is
// undone by its destructors. SIGPIPE is ignored from then on.
extern std::atomic<bool> g_stop;
void catch_stop_signals();

// "--key value" lookup with a default. `key` must be one of the running
// benchmark's registered options (a benchmark that reads an option it did
// not register stops with a message naming it: its smoke test fails).
std::string arg(const std::vector<std::string>& args, const std::string& key, const std::string& def);
// A registered kFlag option: given or not.
bool flag(const std::vector<std::string>& args, const std::string& key);

}  // namespace capsule::bench

#define CAPSULE_BENCH_CAT2(a, b) a##b
#define CAPSULE_BENCH_CAT(a, b) CAPSULE_BENCH_CAT2(a, b)
// CAPSULE_BENCH("name", "one-line summary", function, {options}, {smoke
// arguments}): any function name, qualified or not, may be registered.
// Every benchmark has a smoke test (bench/CMakeLists.txt,
// capsule_bench_smoke), which runs it with --smoke and checks its last line.
#define CAPSULE_BENCH(name, summary, fn, ...) \
  static ::capsule::bench::Register CAPSULE_BENCH_CAT(capsule_bench_reg_, __COUNTER__)(name, summary, fn, __VA_ARGS__)
