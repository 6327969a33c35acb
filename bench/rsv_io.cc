// capsule-bench rsv-io: activation lateness of a periodic thread under
// SCHED_DEADLINE (a capsule in global and in partitioned admission mode),
// SCHED_FIFO and CFS while a neighbour writes to disk (issue 11: DL
// activations 160 ms late beside `dd ... conv=fsync`, FIFO unharmed).
// The benchmark starts its own writer (disk_writer.h), bounded in size and
// time, in a temporary directory it removes, and stops it by PID.
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <sstream>
#include <thread>

#include "bench.h"
#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/io_isolation.h"
#include "capsule/rsv/io_steering.h"
#include "capsule/rsv/manager.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/testkit.h"
#include "disk_writer.h"

using namespace capsule;
using namespace capsule::rsv;
using namespace std::chrono_literals;

namespace capsule::bench {
namespace {

long long now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

// Spins for `ns` of wall time; returns the longest stretch (ns) in which the
// loop did not get to read the clock: time the thread was not running while
// it was runnable (an interrupt, a preemption, or its virtual CPU stopped by
// the hypervisor). Under SCHED_DEADLINE the kernel charges all of it to the
// thread's budget when it happened while the thread was current.
long long spin_for(long long ns) {
  long long prev = now_ns(), longest = 0;
  const long long end = prev + ns;
  while (prev < end) {
    const long long t = now_ns();
    longest = std::max(longest, t - prev);
    prev = t;
  }
  return longest;
}

struct Options {
  int activations = 500;
  int runs = 3;
  long long period_ns = 20'000'000, work_ns = 1'000'000, budget_ns = 2'000'000;
  bool reclaim = false;
  int cpu = -1;  // partitioned mode's core (and where FIFO/CFS are pinned then)
  std::vector<AdmissionMode> modes{AdmissionMode::kGlobal, AdmissionMode::kPartitioned};
  std::vector<int> policies{kSchedDeadline, SCHED_FIFO, SCHED_OTHER};
};

const char* mode_name(AdmissionMode m) { return m == AdmissionMode::kGlobal ? "global" : "partitioned"; }

// Lateness (ms) of each activation of one periodic thread: under
// SCHED_DEADLINE through a ReservationManager in `mode` (as capsuled places
// a capsule), or SCHED_FIFO / CFS (pinned to the partition's core in
// partitioned mode, free in global mode). `where` says where it ran.
std::vector<double> run_periodic(AdmissionMode mode, int policy, const Options& o, std::string* where,
                                 std::string* error, double* gap_ms) {
  std::vector<double> late;
  late.reserve(std::size_t(o.activations));
  std::atomic<pid_t> tid{0};
  std::atomic<int> go{0};  // 1: run, -1: give up
  const int pin = mode == AdmissionMode::kPartitioned && policy != kSchedDeadline ? o.cpu : -1;
  std::thread t([&] {
    pthread_setname_np(pthread_self(), "periodic");
    if (pin >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(pin, &set);
      sched_setaffinity(0, sizeof set, &set);
    }
    tid.store(testkit::current_tid());
    while (go.load() == 0) std::this_thread::yield();
    if (go.load() < 0) return;
    long long next = now_ns() + o.period_ns;
    for (int i = 0; i < o.activations && !g_stop.load(); ++i) {
      timespec ts{time_t(next / 1'000'000'000LL), long(next % 1'000'000'000LL)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
      late.push_back(double(now_ns() - next) / 1e6);
      *gap_ms = std::max(*gap_ms, double(spin_for(o.work_ns)) / 1e6);
      next += o.period_ns;
    }
  });
  while (tid.load() == 0) std::this_thread::yield();
  AdmissionConfig cfg;
  cfg.mode = mode;
  if (mode == AdmissionMode::kPartitioned) cfg.cpus = {o.cpu};
  ReservationManager manager(cfg);
  *where = pin >= 0 ? "cpu " + std::to_string(pin) : "cpus free";
  if (policy == kSchedDeadline) {
    auto d = manager.reserve(VmReservationSpec{
        "rsv-io", std::chrono::nanoseconds(o.period_ns), 0ns, o.reclaim,
        {{tid.load(), std::chrono::nanoseconds(o.budget_ns), -1, "periodic"}}});
    if (!d) {
      *error = d.error().message;
      go.store(-1);
      t.join();
      return {};
    }
    const int cpu = d->threads.empty() ? -1 : d->threads.front().cpu;
    *where = cpu >= 0 ? "partition cpu " + std::to_string(cpu) : "root domain";
  } else if (policy == SCHED_FIFO) {
    SchedParams p;
    p.policy = SCHED_FIFO;
    p.priority = 50;
    if (Status st = set_sched_params(tid.load(), p); !st) *error = st.error().message;
  }
  go.store(1);
  t.join();
  return late;
}

int rsv_io(const std::vector<std::string>& args) {
  Options o;
  o.activations = std::stoi(arg(args, "--activations", "500"));
  o.runs = std::stoi(arg(args, "--runs", "3"));
  o.period_ns = std::llround(std::stod(arg(args, "--period-ms", "20")) * 1e6);
  o.work_ns = std::llround(std::stod(arg(args, "--work-ms", "1")) * 1e6);
  o.budget_ns = std::llround(std::stod(arg(args, "--budget-ms", "2")) * 1e6);
  o.reclaim = flag(args, "--reclaim");
  const auto online = online_cpus();
  o.cpu = std::stoi(arg(args, "--cpu", std::to_string(online.empty() ? 0 : online.back())));
  const std::string modes = arg(args, "--modes", "global,partitioned");
  o.modes.clear();
  if (modes.find("global") != std::string::npos) o.modes.push_back(AdmissionMode::kGlobal);
  if (modes.find("partitioned") != std::string::npos) o.modes.push_back(AdmissionMode::kPartitioned);
  const std::string policies = arg(args, "--policies", "deadline,fifo,other");
  o.policies.clear();
  if (policies.find("deadline") != std::string::npos) o.policies.push_back(kSchedDeadline);
  if (policies.find("fifo") != std::string::npos) o.policies.push_back(SCHED_FIFO);
  if (policies.find("other") != std::string::npos) o.policies.push_back(SCHED_OTHER);
  const int hogs_per_cpu = std::stoi(arg(args, "--hogs", "2"));
  const bool with_writer = !flag(args, "--no-writer");
  DiskWriterOptions wo;
  wo.parent_dir = arg(args, "--writer-dir", "/var/tmp");
  wo.file_mib = std::stol(arg(args, "--writer-mib", "512"));
  wo.direct = flag(args, "--direct");
  if (o.modes.empty() || o.policies.empty() || o.activations < 1 || o.runs < 1 || o.budget_ns <= 0 || o.budget_ns > o.period_ns) {
    std::fprintf(stderr, "rsv-io: --modes takes global, partitioned or both; --policies deadline, fifo, other or several; --activations and --runs at least 1; "
                         "0 < --budget-ms <= --period-ms\n");
    return 2;
  }
  const double total_s = double(o.activations) * double(o.period_ns) / 1e9 * double(o.policies.size() * o.modes.size()) * o.runs;
  wo.max_time = std::chrono::seconds(long(total_s) + 60);

  std::printf("rsv-io: periodic thread, P = %.0f ms, %.1f ms of work per activation (DL budget %.1f ms%s), "
              "%d activations,\n%d CFS hogs per core, %s; lateness = wake-up time - release time;\n"
              "median of %d runs (spread: smallest..largest max of the runs; worst: largest in any run;\n"
              "gap: longest stretch of its 1 ms of work in which the thread did not run, median of the runs' largest)\n",
              double(o.period_ns) / 1e6, double(o.work_ns) / 1e6, double(o.budget_ns) / 1e6,
              o.reclaim ? ", SCHED_FLAG_RECLAIM" : "", o.activations, hogs_per_cpu,
              with_writer ? (wo.direct ? "a neighbour writing O_DIRECT files" : "a neighbour writing files with fsync")
                          : "no disk writer",
              o.runs);
  std::printf("load average before: %s\n", loadavg().c_str());
  // SIGINT/SIGTERM end the run after the current activation, so the writer
  // is stopped, its files removed and every thread restored by the destructors.
  catch_stop_signals();

  // The mitigation: device interrupts and unbound workqueues onto the CPUs
  // other than the partition's core, for the whole run; restored when this
  // scope ends (also after SIGINT/SIGTERM).
  std::unique_ptr<IoSteering> steering;
  if (flag(args, "--steer-io")) {
    std::vector<int> housekeeping;
    for (int c : online)
      if (c != o.cpu) housekeeping.push_back(c);
    auto s = IoSteering::apply(housekeeping);
    if (!s) {
      std::fprintf(stderr, "rsv-io: %s\n", s.error().message.c_str());
      return 1;
    }
    steering = std::move(*s);
    std::printf("io steering: %s (restored at the end)\n", steering->describe().c_str());
  }
  const auto facts = read_io_isolation_facts();
  for (AdmissionMode mode : o.modes) {
    const auto v = judge_io_isolation(facts, mode, mode == AdmissionMode::kPartitioned ? std::vector<int>{o.cpu}
                                                                                       : std::vector<int>{});
    std::printf("capsuled's verdict, %s: %s\n", mode_name(mode), v.safe ? ("safe: " + v.reason).c_str() : v.reason.c_str());
  }

  testkit::CpuHogs hogs(hogs_per_cpu);
  std::unique_ptr<DiskWriter> writer;
  const auto t0 = std::chrono::steady_clock::now();
  if (with_writer) {
    auto w = DiskWriter::start(wo);
    if (!w) {
      std::fprintf(stderr, "rsv-io: %s\n", w.error().message.c_str());
      return 1;
    }
    writer = std::move(*w);
    // Measure once writeback is under way, not while the page cache fills.
    testkit::wait_until([&] { return writer->mib_written() >= 64 || !writer->running(); }, 30s);
    std::printf("disk writer: pid %d, %ld MiB files in %s\n", writer->pid(), wo.file_mib, writer->dir().c_str());
  }
  std::printf("\n");

  Table t({"mode", "policy", "placed", "p50 (ms)", "p99 (ms)", "max (ms)", "spread (ms)", "worst (ms)", "late > 1 ms",
           "late > 5 ms", "gap (ms)"});
  std::map<AdmissionMode, double> dl_worst;
  for (AdmissionMode mode : o.modes)
    for (int pol : o.policies) {
      std::vector<double> p50, p99, mx, over1, over5, gaps;
      std::string where, error;
      for (int r = 0; r < o.runs && error.empty() && !g_stop.load(); ++r) {
        double gap = 0;
        auto late = run_periodic(mode, pol, o, &where, &error, &gap);
        if (late.empty()) break;
        gaps.push_back(gap);
        p50.push_back(percentile(late, 50));
        p99.push_back(percentile(late, 99));
        mx.push_back(percentile(late, 100));
        over1.push_back(double(std::count_if(late.begin(), late.end(), [](double l) { return l > 1.0; })));
        over5.push_back(double(std::count_if(late.begin(), late.end(), [](double l) { return l > 5.0; })));
      }
      if (!error.empty()) std::fprintf(stderr, "rsv-io: %s %s: %s\n", mode_name(mode), policy_name(pol).c_str(), error.c_str());
      if (mx.empty()) {
        t.row({mode_name(mode), policy_name(pol), "-", "-", "-", "-", "-", "-", "-", "-", "-"});
        if (pol == kSchedDeadline) dl_worst[mode] = -1;
        continue;
      }
      const double worst = percentile(mx, 100);
      if (pol == kSchedDeadline) dl_worst[mode] = worst;
      t.row({mode_name(mode), policy_name(pol), where, fmt("%.3f", median(p50)), fmt("%.3f", median(p99)),
             fmt("%.3f", median(mx)), fmt("%.3f", percentile(mx, 0)) + ".." + fmt("%.3f", worst), fmt("%.3f", worst),
             fmt("%.0f", median(over1)), fmt("%.0f", median(over5)), fmt("%.3f", median(gaps))});
    }
  t.print();
  std::printf("\n");
  if (writer) {
    const double s = ms_since(t0) / 1000;
    std::printf("disk writer: %.0f MiB in %.0f s (%.0f MiB/s)%s\n", writer->mib_written(), s, writer->mib_written() / s,
                writer->running() ? "" : ", stopped early (see its directory's disk)");
  }
  std::printf("load average after: %s\n", loadavg().c_str());
  double overall = 0;
  bool failed = false;
  for (const auto& [mode, w] : dl_worst) {
    std::printf("DL lateness max, %s: %.3f ms\n", mode_name(mode), w);
    failed |= w < 0;
    overall = std::max(overall, w);
  }
  std::printf("DL lateness max %s I/O: %s ms\n", with_writer ? "under" : "without",
              failed ? "n/a (a reservation was refused)" : fmt("%.3f", overall).c_str());
  if (g_stop.load()) std::printf("(interrupted: the numbers cover only what ran)\n");
  return failed || g_stop.load() ? 1 : 0;
}

}  // namespace
}  // namespace capsule::bench

using K = capsule::bench::BenchOption::Kind;
CAPSULE_BENCH("rsv-io", "activation lateness of DL (global, partitioned), FIFO and CFS beside a disk writer",
              capsule::bench::rsv_io,
              {{"--activations", K::kCount, "activations per run"},
               {"--runs", K::kCount, "runs of every policy and mode (median)"},
               {"--period-ms", K::kSeconds, "period in ms"},
               {"--work-ms", K::kSeconds, "work per activation in ms"},
               {"--budget-ms", K::kSeconds, "SCHED_DEADLINE budget in ms"},
               {"--reclaim", K::kFlag, "SCHED_FLAG_RECLAIM on the DL thread"},
               {"--steer-io", K::kFlag, "device interrupts and unbound workqueues off the partition's core"},
               {"--cpu", K::kCount, "the CPU of the partition (default: the last online)"},
               {"--modes", K::kText, "admission modes", {"global", "partitioned"}},
               {"--policies", K::kText, "policies", {"deadline", "fifo", "other"}},
               {"--hogs", K::kCount, "CFS hogs per core"},
               {"--no-writer", K::kFlag, "no disk writer (the baseline)"},
               {"--writer-dir", K::kText, "where the writer writes (a directory it makes and removes)"},
               {"--writer-mib", K::kCount, "size of each file the writer writes, MiB"},
               {"--direct", K::kFlag, "the writer uses O_DIRECT"}},
              // A few seconds: same table and last line, numbers not to be quoted.
              {"--activations", "50", "--runs", "1", "--writer-mib", "64"});
