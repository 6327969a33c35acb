// Act 1 of capsule-demo: CPU shares. Three emulated VMs (capsule-fakevm
// processes whose vCPU threads are named like QEMU's) run next to CPU hogs;
// their vCPU share is measured under plain CFS with a quiet and a noisy
// neighbourhood, then inside capsules (SCHED_DEADLINE reservations applied
// through capsule's admission control) with the noisy neighbourhood.
// Everything it starts it stops; every thread is restored.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "capsule/rsv/accounting.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/manager.h"
#include "capsule/testkit.h"
#include "demo.h"

using namespace capsule;
using namespace capsule::rsv;
using namespace std::chrono_literals;

namespace {

struct DemoVm {
  std::string name;
  double share = 0;  // requested fraction of one CPU
  std::unique_ptr<testkit::ChildProcess> proc;
  pid_t vcpu_tid = 0;
};

// vCPU utilisation of each VM over `window`.
std::vector<double> measure(const std::vector<DemoVm>& vms, std::chrono::milliseconds window) {
  std::vector<pid_t> tids;
  for (const auto& v : vms) tids.push_back(v.vcpu_tid);
  UtilisationMeter meter(tids);
  std::this_thread::sleep_for(window);
  auto use = meter.sample();
  std::vector<double> out;
  for (const auto& v : vms) out.push_back(use[v.vcpu_tid].utilisation);
  return out;
}

// Right-aligned for the table.
std::string pct(double f) {
  const std::string s = format_percent(f);
  return std::string(s.size() < 7 ? 7 - s.size() : 0, ' ') + s;
}

}  // namespace

namespace capsule::demo {

int cpu_share_act(double seconds) {
  const auto period = 20ms;
  const auto window = std::chrono::milliseconds(long(seconds * 1000));

  std::vector<DemoVm> vms(3);
  vms[0].name = "vm1", vms[0].share = 0.30;
  vms[1].name = "vm2", vms[1].share = 0.20;
  vms[2].name = "vm3", vms[2].share = 0.10;
  std::printf("Starting 3 emulated VMs (capsule-fakevm, 1 busy vCPU thread each)...\n");
  for (auto& v : vms) {
    v.proc = testkit::ChildProcess::spawn({testkit::sibling_binary("capsule-fakevm"), "--vcpus", "1", "--load", "busy"},
                                          "/dev/null");
    if (!v.proc) {
      std::fprintf(stderr, "capsule-demo: cannot start capsule-fakevm\n");
      return 1;
    }
    std::vector<DiscoveredThread> found;
    testkit::wait_until([&] {
      auto t = discover_threads(v.proc->pid());
      if (t) found = threads_with_role(*t, ThreadRole::kVcpu);
      return !found.empty();
    }, 5s);
    if (found.empty()) {
      std::fprintf(stderr, "capsule-demo: %s shows no vCPU thread\n", v.name.c_str());
      return 1;
    }
    v.vcpu_tid = found.front().tid;
    std::printf("  %s: pid %d, vCPU thread %d (\"%s\")\n", v.name.c_str(), int(v.proc->pid()), int(v.vcpu_tid),
                found.front().comm.c_str());
  }

  std::vector<double> quiet, noisy, capsule;
  {
    std::printf("Plain CFS, 1 CPU hog per core (%.0f s)...\n", seconds);
    testkit::CpuHogs hogs(1);
    quiet = measure(vms, window);
  }
  {
    std::printf("Plain CFS, noisy neighbours: 4 CPU hogs per core (%.0f s)...\n", seconds);
    testkit::CpuHogs hogs(4);
    noisy = measure(vms, window);
  }
  {
    std::printf("Capsules (SCHED_DEADLINE, period %lld ms), 4 CPU hogs per core (%.0f s)...\n",
                (long long)std::chrono::duration_cast<std::chrono::milliseconds>(period).count(), seconds);
    testkit::CpuHogs hogs(4);
    ReservationManager mgr;
    for (const auto& v : vms) {
      const auto runtime = std::chrono::nanoseconds(long(v.share * double(std::chrono::nanoseconds(period).count())));
      auto dec = mgr.reserve(VmReservationSpec{v.name, period, 0ns, false, {{v.vcpu_tid, runtime, -1, "vcpu0"}}});
      if (!dec) {
        std::fprintf(stderr, "capsule-demo: %s\n", dec.error().message.c_str());
        return 1;
      }
      std::printf("  %s admitted: %s\n", v.name.c_str(),
                  ReservationSpec{runtime, period}.to_string().c_str());
    }
    capsule = measure(vms, window);
    for (const auto& d : mgr.load())
      std::printf("  admission: %s booked %s of %s\n", d.name.c_str(), format_percent(d.capsule + d.external).c_str(),
                  format_percent(d.capacity).c_str());
  }  // capsules released here: threads back to SCHED_OTHER

  std::printf("\nvCPU share of one CPU, measured from /proc/<tid>/schedstat over %.0f s\n\n", seconds);
  std::printf("%-4s  %-9s  %-15s  %-16s  %-16s  %s\n", "VM", "requested", "CFS quiet (1/c)", "CFS noisy (4/c)",
              "capsule noisy", "capsule error");
  std::printf("%s\n", std::string(84, '-').c_str());
  double worst = 0;
  for (std::size_t i = 0; i < vms.size(); ++i) {
    const double err = (capsule[i] - vms[i].share) * 100;
    worst = std::max(worst, std::fabs(err));
    std::printf("%-4s  %-9s  %-15s  %-16s  %-16s  %+5.2f pp\n", vms[i].name.c_str(), pct(vms[i].share).c_str(),
                pct(quiet[i]).c_str(), pct(noisy[i]).c_str(), pct(capsule[i]).c_str(), err);
  }
  std::printf("\nUnder CFS a VM's share depends on how many neighbours compete; inside its\n"
              "capsule it gets what it reserved, whatever the neighbours do.\n");
  std::printf("worst capsule share error: %.2f pp\n", worst);
  for (auto& v : vms) v.proc->terminate();
  return 0;
}

}  // namespace capsule::demo
