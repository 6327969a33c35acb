// capsule-bench rsv-share: does a thread get the CPU share it reserved,
// against CFS hogs on every core? SCHED_DEADLINE (capsule) beside CFS
// bandwidth control (cgroup quota) and plain CFS, same demand, same run.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <thread>

#include "bench.h"
#include "capsule/rsv/accounting.h"
#include "capsule/rsv/manager.h"
#include "capsule/testkit.h"
#include "cfs_bandwidth_group.h"

using namespace capsule;
using namespace capsule::rsv;
using namespace std::chrono_literals;

namespace capsule::bench {
namespace {

enum class Policy { kDeadline, kCfsQuota, kCfs };
const char* policy_label(Policy p) {
  switch (p) {
    case Policy::kDeadline: return "SCHED_DEADLINE";
    case Policy::kCfsQuota: return "CFS quota";
    case Policy::kCfs: return "plain CFS";
  }
  return "";
}

// One measurement: busy threads asking for `shares` of `period` under
// `policy`, next to CFS hogs on every core. Returns the measured share per thread.
Result<std::vector<double>> measure(Policy policy, const std::vector<double>& shares, nanoseconds period,
                                    std::chrono::milliseconds window, int hogs_per_core) {
  testkit::CpuHogs hogs(hogs_per_core);
  std::vector<std::unique_ptr<testkit::BusyThread>> threads;
  for (std::size_t i = 0; i < shares.size(); ++i)
    threads.push_back(std::make_unique<testkit::BusyThread>("share-" + std::to_string(i)));
  std::unique_ptr<ReservationManager> mgr;
  std::vector<CfsBandwidthGroup> groups;
  for (std::size_t i = 0; i < shares.size(); ++i) {
    const auto budget = nanoseconds(static_cast<long long>(shares[i] * double(period.count())));
    if (policy == Policy::kDeadline) {
      if (!mgr) mgr = std::make_unique<ReservationManager>();
      auto d = mgr->reserve(VmReservationSpec{"bench-" + std::to_string(i), period, 0ns, false,
                                              {{threads[i]->tid(), budget, -1, "busy"}}});
      if (!d) return d.error();
    } else if (policy == Policy::kCfsQuota) {
      auto g = CfsBandwidthGroup::create("capsule-bench-" + std::to_string(i), budget, period);
      if (!g) return g.error();
      if (Status st = g->add_thread(threads[i]->tid()); !st) return st.error();
      groups.push_back(std::move(*g));
    }
  }
  std::this_thread::sleep_for(200ms);
  std::vector<pid_t> tids;
  for (const auto& t : threads) tids.push_back(t->tid());
  UtilisationMeter meter(tids);
  std::this_thread::sleep_for(window);
  auto use = meter.sample();
  std::vector<double> out;
  for (pid_t t : tids) out.push_back(use[t].utilisation);
  return out;
}

int rsv_share(const std::vector<std::string>& args) {
  const int runs = std::stoi(arg(args, "--runs", "5"));
  const auto window = std::chrono::milliseconds(std::stoi(arg(args, "--window-ms", "2000")));
  const int hogs = std::stoi(arg(args, "--hogs", "4"));
  const std::vector<double> shares = {0.10, 0.20, 0.30, 0.50};
  std::printf("rsv-share: %zu busy threads asking for 10/20/30/50 %% of one CPU, %d CFS hogs per core,\n"
              "median of %d runs of %lld ms each (measured from /proc/<tid>/schedstat)\n\n",
              shares.size(), hogs, runs, static_cast<long long>(window.count()));
  Table t({"period", "policy", "requested", "measured", "error (pp)", "min..max"});
  double worst_dl = 0;
  for (nanoseconds period : {nanoseconds(20ms), nanoseconds(100ms)}) {
    for (Policy pol : {Policy::kDeadline, Policy::kCfsQuota, Policy::kCfs}) {
      std::vector<std::vector<double>> samples(shares.size());
      for (int r = 0; r < runs; ++r) {
        auto m = measure(pol, shares, period, window, hogs);
        if (!m) {
          std::fprintf(stderr, "rsv-share: %s: %s\n", policy_label(pol), m.error().message.c_str());
          return 1;
        }
        for (std::size_t i = 0; i < shares.size(); ++i) samples[i].push_back((*m)[i]);
      }
      for (std::size_t i = 0; i < shares.size(); ++i) {
        const double med = median(samples[i]);
        const double err = (med - shares[i]) * 100;
        if (pol == Policy::kDeadline) worst_dl = std::max(worst_dl, std::fabs(err));
        t.row({fmt("%.0f ms", double(period.count()) / 1e6), policy_label(pol), fmt("%.1f %%", shares[i] * 100),
               fmt("%.2f %%", med * 100), fmt("%+.2f", err),
               fmt("%.1f", percentile(samples[i], 0) * 100) + ".." + fmt("%.1f %%", percentile(samples[i], 100) * 100)});
      }
    }
  }
  t.print();
  std::printf("\nCFS quota is a ceiling, not a guarantee: a group gets at most its quota, and less\n"
              "when neighbours compete; plain CFS has no notion of a share at all.\n");
  std::printf("max DL share error: %.2f pp\n", worst_dl);
  return 0;
}

}  // namespace
}  // namespace capsule::bench

CAPSULE_BENCH("rsv-share", "reserved vs measured CPU share: SCHED_DEADLINE, CFS quota, plain CFS", capsule::bench::rsv_share,
              {{"--runs", capsule::bench::BenchOption::Kind::kCount, "windows per policy"},
               {"--window-ms", capsule::bench::BenchOption::Kind::kCount, "measurement window"},
               {"--hogs", capsule::bench::BenchOption::Kind::kCount, "CFS hogs per core"}},
              {"--runs", "1", "--window-ms", "300"});
