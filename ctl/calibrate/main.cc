// capsule-calibrate: measures the cost curve of capsule's per-VM datapath
// thread (cpmd-<vm>) under SCHED_DEADLINE and prints it as JSON.
//
// For each direction and frame size it gives the PMD thread budget Q of
// period P for each --budgets percentage (no reclaiming: Q is a hard cap),
// measures packets per second (median of --runs windows of --seconds) and
// the thread's CPU use, and fits pps = pps_per_cpu * Q/P + intercept_pps.
// A curve whose fit has R^2 below --min-r2 was measured on a busy host:
// the JSON is printed all the same and the exit status is 1.
//
// stdout: the JSON document. stderr: one progress line per point, and one
// line per error. Exit: 0 done, 1 runtime failure or not linear, 2 usage.
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "capsule/log.h"
#include "capsule/rsv/spec.h"
#include "capsule/stats.h"
#include "measure.h"

namespace {

using namespace capsule;
using namespace capsule::calibrate;

constexpr const char* kTool = "capsule-calibrate";

struct Options {
  long period_us = 20'000;
  std::vector<double> budgets = {1, 2, 5, 10, 20};
  std::vector<uint32_t> frame_sizes = {64, 1514};
  std::vector<Direction> directions = {Direction::kFromVm, Direction::kToVm};
  double seconds = 1.0;
  int runs = 3;
  double min_r2 = 0.95;
};

void usage(std::ostream& os) {
  os << R"(usage: capsule-calibrate [--period-us 20000] [--budgets 1,2,5,10,20] [--frame-sizes 64,1514]
                         [--directions from_vm,to_vm] [--seconds 1.0] [--runs 3] [--min-r2 0.95]

Measures how many packets per second capsule's per-VM datapath thread moves
when SCHED_DEADLINE gives it each budget (percent of --period-us, deadline =
period, no reclaiming), with an emulated VM (capsule-vm) sending (from_vm)
or receiving (to_vm) frames of each size, and fits a line through the points.
Only the datapath thread is reserved; the VM and the generator run in CFS.
Run as root on a quiet host; a capsuled may run beside it.

Options:
  --period-us N        reservation period in microseconds, >= 1000 (default 20000)
  --budgets LIST       budgets in percent of the period, each in (0, 100)
                       (default 1,2,5,10,20: small budgets show what
                       waking a throttled thread costs each period, which
                       `auto` budgets of a few percent pay; on a 2-core
                       host the receiving VM cannot take 64-byte frames as
                       fast as the datapath thread sends them above ~25 %,
                       so higher budgets measure the VM, not the budget)
  --frame-sizes LIST   frame sizes in bytes without FCS, 60..1514 (default 64,1514)
  --directions LIST    from_vm, to_vm or both (default from_vm,to_vm)
  --seconds S          length of one measuring window (default 1.0)
  --runs N             windows per point; the point is their median (default 3)
  --min-r2 X           smallest acceptable R^2 of each fit, 0..1 (default 0.95)
  -h, --help           this text

Output: JSON on stdout, progress on stderr. Exit status 0 when every curve
is linear, 1 on a runtime failure or a curve below --min-r2, 2 on a usage error.
)";
}

// A usage error: the message names the option and what it accepts.
struct UsageError {
  std::string message;
};

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  if (!text.empty() && text.back() == ',') out.push_back("");
  return out;
}

double to_double(const std::string& opt, const std::string& text) {
  try {
    std::size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw UsageError{opt + ": '" + text + "' is not a number"};
}

long to_long(const std::string& opt, const std::string& text) {
  try {
    std::size_t used = 0;
    const long v = std::stol(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw UsageError{opt + ": '" + text + "' is not a whole number"};
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], val;
    bool has_val = false;
    if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_val = true;
    }
    if (a == "-h" || a == "--help") {
      usage(std::cout);
      std::exit(0);
    }
    static const std::set<std::string> known = {"--period-us", "--budgets", "--frame-sizes", "--directions",
                                                "--seconds",   "--runs",    "--min-r2"};
    if (!known.count(a)) throw UsageError{"unknown option '" + a + "' (see --help)"};
    if (!has_val) {
      if (i + 1 >= argc) throw UsageError{a + " needs a value (see --help)"};
      val = argv[++i];
    }
    if (a == "--period-us") {
      o.period_us = to_long(a, val);
      if (o.period_us < 1000)
        throw UsageError{"--period-us " + val +
                         ": the period must be at least 1000 us (budgets are enforced at the 4 ms scheduler tick "
                         "here; 10000 us and up give the steadiest curves)"};
      const auto max = rsv::KernelLimits::read().period_max;
      if (std::chrono::microseconds(o.period_us) > max)
        throw UsageError{"--period-us " + val + ": the kernel allows SCHED_DEADLINE periods up to " +
                         std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(max).count()) +
                         " us (/proc/sys/kernel/sched_deadline_period_max_us)"};
    } else if (a == "--budgets") {
      o.budgets.clear();
      for (const auto& b : split(val)) {
        const double pct = to_double(a, b);
        if (!(pct > 0 && pct < 100))
          throw UsageError{"--budgets: " + b + " is not a percentage of the period in (0, 100)"};
        o.budgets.push_back(pct);
      }
    } else if (a == "--frame-sizes") {
      o.frame_sizes.clear();
      for (const auto& s : split(val)) {
        const long size = to_long(a, s);
        if (size < 60 || size > 1514)
          throw UsageError{"--frame-sizes: " + s + " bytes is outside 60..1514 (Ethernet frames without FCS)"};
        o.frame_sizes.push_back(uint32_t(size));
      }
    } else if (a == "--directions") {
      o.directions.clear();
      for (const auto& s : split(val)) {
        auto d = parse_direction(s);
        if (!d) throw UsageError{"--directions: " + d.error().message};
        o.directions.push_back(d.value());
      }
    } else if (a == "--seconds") {
      o.seconds = to_double(a, val);
      if (!(o.seconds >= 0.05 && o.seconds <= 3600))
        throw UsageError{"--seconds " + val + ": give a window between 0.05 and 3600 seconds"};
    } else if (a == "--runs") {
      o.runs = int(to_long(a, val));
      if (o.runs < 1 || o.runs > 100) throw UsageError{"--runs " + val + ": give 1 to 100 windows per point"};
    } else if (a == "--min-r2") {
      o.min_r2 = to_double(a, val);
      if (!(o.min_r2 >= 0 && o.min_r2 <= 1)) throw UsageError{"--min-r2 " + val + ": R^2 is between 0 and 1"};
    }
  }
  // Duplicates measure nothing new; two distinct budgets at least make a line.
  std::sort(o.budgets.begin(), o.budgets.end());
  o.budgets.erase(std::unique(o.budgets.begin(), o.budgets.end()), o.budgets.end());
  if (o.budgets.size() < 2)
    throw UsageError{"--budgets: give at least two different budgets (three or more to judge linearity)"};
  std::sort(o.frame_sizes.begin(), o.frame_sizes.end());
  o.frame_sizes.erase(std::unique(o.frame_sizes.begin(), o.frame_sizes.end()), o.frame_sizes.end());
  std::vector<Direction> dirs;
  for (Direction d : o.directions)
    if (std::find(dirs.begin(), dirs.end(), d) == dirs.end()) dirs.push_back(d);
  o.directions = dirs;
  if (o.frame_sizes.empty() || o.directions.empty()) throw UsageError{"nothing to measure (see --help)"};
  return o;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

}  // namespace

int main(int argc, char** argv) {
  capsule::log::set_sink(&capsule::log::warnings_to_stderr);
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << kTool << ": " << e.message << "\n";
    return 2;
  }
  if (geteuid() != 0) {
    std::cerr << kTool << ": run as root: the datapath thread is put under SCHED_DEADLINE\n";
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // Run by capsule-ctl calibrate: stop (and release the reservation) when it
  // goes, e.g. killed by its --timeout.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() == 1) g_stop.store(true);

  const std::string date = utc_now();
  const auto t0 = std::chrono::steady_clock::now();
  MeasureOptions mo;
  mo.period = std::chrono::microseconds(o.period_us);
  mo.budgets_pct = o.budgets;
  mo.frame_sizes = o.frame_sizes;
  mo.directions = o.directions;
  mo.seconds = o.seconds;
  mo.runs = o.runs;
  mo.stop = &g_stop;
  mo.on_point = [&](const Curve& c, const Point& p) {
    char line[256];
    std::snprintf(line, sizeof line, "%s: %-7s %4u B  budget %7.0f us (%4.1f %%)  %10.0f pps  pmd cpu %5.1f %%\n", kTool,
                  to_string(c.direction), c.frame_size, p.budget_us, 100.0 * p.budget_us / c.period_us, p.pps,
                  p.pmd_cpu_pct);
    std::cerr << line << std::flush;
  };
  auto curves = measure(mo);
  if (!curves) {
    std::cerr << kTool << ": " << curves.error().message << "\n";
    return 1;
  }

  nlohmann::ordered_json doc;
  doc["tool"] = kTool;
  doc["date"] = date;
  doc["period_us"] = o.period_us;
  doc["curves"] = nlohmann::ordered_json::array();
  std::vector<std::string> failures, notes;
  for (const Curve& c : curves.value()) {
    std::vector<double> x, y;
    nlohmann::ordered_json pts = nlohmann::ordered_json::array();
    for (const Point& p : c.points) {
      x.push_back(p.budget_us / c.period_us);
      y.push_back(p.pps);
      pts.push_back({{"budget_us", p.budget_us}, {"pps", p.pps}, {"pmd_cpu_pct", p.pmd_cpu_pct}});
    }
    const LinearFit f = fit_line(x, y);
    // A thread that did not use its budget was held back by the VM or the
    // generator: that point does not measure the budget.
    for (const Point& p : c.points) {
      const double pct = 100.0 * p.budget_us / c.period_us;
      if (p.pmd_cpu_pct < 0.9 * pct) {
        char msg[320];
        std::snprintf(msg, sizeof msg,
                      "note: %s at %u B, budget %.4g %%: the datapath thread used only %.1f %% of a CPU, so the "
                      "emulated VM or the generator, not the budget, limited the rate there; calibrate with lower "
                      "--budgets",
                      to_string(c.direction), c.frame_size, pct, p.pmd_cpu_pct);
        notes.push_back(msg);
      }
    }
    nlohmann::ordered_json jc;
    jc["direction"] = to_string(c.direction);
    jc["frame_size"] = c.frame_size;
    jc["period_us"] = o.period_us;
    jc["points"] = pts;
    jc["pps_per_cpu"] = f.slope;
    jc["intercept_pps"] = f.intercept;
    jc["r_squared"] = f.r_squared;  // NaN prints as null
    jc["cycles_per_packet"] = c.cycles_per_packet;
    doc["curves"].push_back(jc);
    if (!(f.r_squared >= o.min_r2)) {
      char msg[256];
      std::snprintf(msg, sizeof msg,
                    "calibration of %s at %u B is not linear (R^2 %.4f < %.4g): the host was busy while measuring; "
                    "rerun on a quiet host",
                    to_string(c.direction), c.frame_size, f.r_squared, o.min_r2);
      failures.push_back(msg);
    }
  }
  std::cout << doc.dump() << std::endl;
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cerr << kTool << ": " << curves.value().size() << " curve(s) in " << std::lround(took) << " s\n";
  for (const auto& n : notes) std::cerr << kTool << ": " << n << "\n";
  for (const auto& f : failures) std::cerr << kTool << ": " << f << "\n";
  return failures.empty() ? 0 : 1;
}
