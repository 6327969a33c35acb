// capsule-bench rsv-latency: a periodic thread (P = 20 ms, ~1 ms of work per
// activation) next to CFS hogs; how late does it start each activation
// under SCHED_DEADLINE, SCHED_FIFO and plain CFS?
#include <pthread.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "bench.h"
#include "capsule/rsv/reservation.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/testkit.h"

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

void spin_for(long long ns) {
  const long long end = now_ns() + ns;
  while (now_ns() < end) {
  }
}

// Lateness (ms) of each activation of a periodic thread under `policy`.
std::vector<double> run_periodic(int policy, int activations, long long period_ns, long long work_ns) {
  std::vector<double> late;
  late.reserve(std::size_t(activations));
  std::atomic<pid_t> tid{0};
  std::atomic<bool> go{false};
  std::thread t([&] {
    pthread_setname_np(pthread_self(), "periodic");
    tid.store(testkit::current_tid());
    while (!go.load()) std::this_thread::yield();
    long long next = now_ns() + period_ns;
    for (int i = 0; i < activations; ++i) {
      timespec ts{time_t(next / 1'000'000'000LL), long(next % 1'000'000'000LL)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
      late.push_back(double(now_ns() - next) / 1e6);
      spin_for(work_ns);
      next += period_ns;
    }
  });
  while (tid.load() == 0) std::this_thread::yield();
  std::unique_ptr<VmReservation> rsv;
  if (policy == kSchedDeadline) {
    // Budget 2x the work: room for cache misses and tick-late enforcement.
    auto r = VmReservation::apply(VmReservationSpec{
        "periodic", std::chrono::nanoseconds(period_ns), 0ns, false,
        {{tid.load(), std::chrono::nanoseconds(2 * work_ns), -1, "periodic"}}});
    if (!r) std::fprintf(stderr, "rsv-latency: %s\n", r.error().message.c_str());
    else rsv = std::move(*r);
  } else if (policy == SCHED_FIFO) {
    SchedParams p;
    p.policy = SCHED_FIFO;
    p.priority = 50;
    if (Status st = set_sched_params(tid.load(), p); !st) std::fprintf(stderr, "rsv-latency: %s\n", st.error().message.c_str());
  }
  go.store(true);
  t.join();
  return late;
}

int rsv_latency(const std::vector<std::string>& args) {
  const int activations = std::stoi(arg(args, "--activations", "500"));
  const int runs = std::stoi(arg(args, "--runs", "3"));
  const long long period = 20'000'000, work = 1'000'000;
  std::printf("rsv-latency: periodic thread, P = 20 ms, 1 ms of work per activation, %d activations,\n"
              "2 CFS hogs per core; lateness = wake-up time - release time; median of %d runs\n"
              "(worst: the largest lateness seen in any run)\n\n",
              activations, runs);
  testkit::CpuHogs hogs(2);
  Table t({"policy", "p50 (ms)", "p99 (ms)", "max (ms)", "worst (ms)", "late > 1 ms"});
  double dl_worst = 0;
  for (int pol : {kSchedDeadline, SCHED_FIFO, SCHED_OTHER}) {
    std::vector<double> p50, p99, mx, over;
    for (int r = 0; r < runs; ++r) {
      auto late = run_periodic(pol, activations, period, work);
      int n = 0;
      for (double l : late) n += l > 1.0;
      p50.push_back(percentile(late, 50));
      p99.push_back(percentile(late, 99));
      mx.push_back(percentile(late, 100));
      over.push_back(n);
    }
    const double worst = percentile(mx, 100);
    if (pol == kSchedDeadline) dl_worst = worst;
    t.row({policy_name(pol), fmt("%.3f", median(p50)), fmt("%.3f", median(p99)), fmt("%.3f", median(mx)),
           fmt("%.3f", worst), fmt("%.0f", median(over))});
  }
  t.print();
  std::printf("\nDL lateness max: %.3f ms\n", dl_worst);
  return 0;
}

}  // namespace
}  // namespace capsule::bench

CAPSULE_BENCH("rsv-latency", "activation lateness of a periodic thread: SCHED_DEADLINE, SCHED_FIFO, CFS", capsule::bench::rsv_latency,
              {{"--activations", capsule::bench::BenchOption::Kind::kCount, "activations per run"},
               {"--runs", capsule::bench::BenchOption::Kind::kCount, "runs per policy"}},
              {"--activations", "20", "--runs", "1"});
