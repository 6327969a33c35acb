// capsule-bench subcommands register themselves here; bench/main.cc
// dispatches on argv[1]. Benchmarks print tables (and, for scripts, a fixed
// last line); they are not tests and never assert.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "capsule/stats.h"

namespace capsule::bench {

using BenchFn = int (*)(const std::vector<std::string>& args);

struct BenchInfo {
  std::string name;
  std::string summary;
  BenchFn fn;
};

std::vector<BenchInfo>& registry();

struct Register {
  Register(const char* name, const char* summary, BenchFn fn) { registry().push_back({name, summary, fn}); }
};

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

// "--key value" lookup with a default.
std::string arg(const std::vector<std::string>& args, const std::string& key, const std::string& def);

}  // namespace capsule::bench

#define CAPSULE_BENCH_CAT2(a, b) a##b
#define CAPSULE_BENCH_CAT(a, b) CAPSULE_BENCH_CAT2(a, b)
// CAPSULE_BENCH("name", "one-line summary", function): any function name,
// qualified or not, may be registered.
#define CAPSULE_BENCH(name, summary, fn) \
  static ::capsule::bench::Register CAPSULE_BENCH_CAT(capsule_bench_reg_, __COUNTER__)(name, summary, fn)
