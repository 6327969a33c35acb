// capsule-bench pmd-budget: throughput of one VM against the budget of its
// PMD thread under SCHED_DEADLINE (P = 100 ms and 20 ms, Q = 10 .. 90 % of
// P), with an interrupt-driven VM and with a busy-polling VM, and the
// linear fit's R^2 for each series.
//
// Path: uplink -> VM. A generator thread here feeds 1514-byte frames for
// the VM into net_ring0's rx ring as fast as it drains; the dispatcher moves
// them into the VM's ring; the VM's PMD thread copies them into the VM; the
// VM (capsule-vm, count mode) receives them on its vCPU thread. Both threads
// are in the VM's capsule (SCHED_DEADLINE, no reclaiming, so budgets are
// hard caps): the capsule's budget Q is split evenly, Q/2 for the PMD and
// Q/2 for the vCPU (receiving a frame costs the VM about what delivering it
// costs the PMD, so neither starves the other). --vcpu-share N instead
// gives the vCPU a fixed N % of P and the PMD all of Q. Nothing is pinned:
// the root domain is the whole machine.
//
// Last line: "R^2: X" for the interrupt-driven VM at P = 100 ms.
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "bench.h"
#include "capsule/pmd/datapath.h"
#include "capsule/rsv/reservation.h"
#include "pmd_common.h"

namespace capsule::bench {
namespace {

using namespace capsule::bench::pmd;

int pmd_budget(const std::vector<std::string>& args) {
  const double secs = std::stod(arg(args, "--seconds", "1.5"));
  const int runs = std::max(1, std::stoi(arg(args, "--runs", "3")));  // windows per point, median
  const uint32_t size = uint32_t(std::stoi(arg(args, "--size", "1514")));
  const int vcpu_share = std::stoi(arg(args, "--vcpu-share", "0"));  // 0: split Q evenly
  harness::TempDir tmp("capsule-bench");
  const std::string dir = tmp.path();

  DatapathConfig cfg;
  cfg.eal.program = "capsule-bench";
  cfg.max_vms = 2;
  cfg.uplink_devargs = "net_ring0";
  auto dpr = Datapath::create(cfg);
  if (!dpr) {
    std::cerr << "pmd-budget: " << dpr.error().message << "\n";
    return 1;
  }
  Datapath& dp = *dpr.value();
  VmConfig v;
  v.name = "b";
  v.port.socket_path = dir + "/b.sock";
  v.mac = MacAddr::parse(kMacB).value();
  if (auto s = dp.add_vm(v); !s) {
    std::cerr << "pmd-budget: " << s.error().message << "\n";
    return 1;
  }
  const pid_t pmd_tid = dp.pmd_tid("b").value();
  rte_ring* ring = rte_ring_lookup("ETH_RXTX0_net_ring0");
  if (!ring) {
    std::cerr << "pmd-budget: net_ring0's ring not found\n";
    return 1;
  }
  RingFeeder feeder(ring, kMacB, size);

  std::cout << "pmd-budget: uplink -> VM, " << size << "-byte frames; the VM's capsule (SCHED_DEADLINE, no reclaim) "
            << (vcpu_share ? "gives its PMD thread Q and its vCPU " + std::to_string(vcpu_share) + " % of P"
                           : std::string("has budget Q of P, half for its PMD thread, half for its vCPU"))
            << "; median of " << runs << " windows of " << secs << " s per point; nothing pinned\n\n";
  const std::string kinds = arg(args, "--vms", "interrupt,busy-poll");
  const std::string periods = arg(args, "--periods", "100,20");
  std::vector<int> budgets;  // Q in % of P
  {
    std::stringstream list(arg(args, "--q", "10,20,30,40,50,60,70,80,90"));
    for (std::string q; std::getline(list, q, ',');) budgets.push_back(std::stoi(q));
  }
  Table t({"VM", "P ms", "Q %", "Mpps", "PMD CPU %", "vCPU CPU %", "ring-full drops/s"});
  std::map<std::string, double> fits;
  for (bool busy : {false, true}) {
    if (kinds.find(busy ? "busy-poll" : "interrupt") == std::string::npos) continue;
    std::vector<std::string> vm_args = {"--mode", "count", "--queue-size", "1024"};
    if (busy) vm_args.push_back("--busy-poll");
    EmuVm vm(dir, busy ? "busy" : "irq", v.port.socket_path, kMacB, vm_args);
    if (!vm.wait_ready()) {
      std::cerr << "pmd-budget: VM did not come up: " << vm.output() << "\n";
      return 1;
    }
    for (int period_ms : {100, 20}) {
      if (periods.find(std::to_string(period_ms)) == std::string::npos) continue;
      std::vector<double> qs, mpps;
      for (int q : budgets) {
        rsv::VmReservationSpec spec;
        spec.name = "bench-b";
        spec.period = std::chrono::milliseconds(period_ms);
        const auto pmd_us = std::chrono::microseconds(period_ms * (vcpu_share ? 10 * q : 5 * q));
        const auto vcpu_us = std::chrono::microseconds(period_ms * (vcpu_share ? 10 * vcpu_share : 5 * q));
        spec.threads = {{pmd_tid, pmd_us, -1, "pmd"}, {vm.vcpu_tid(), vcpu_us, -1, "vcpu0"}};
        // The root domain's DL bandwidth is shared with whatever else runs
        // here (and released bandwidth stays booked for up to a period):
        // try a few times before giving up on a point.
        auto r = rsv::VmReservation::apply(spec);
        for (int attempt = 0; !r && attempt < 5; ++attempt) {
          std::this_thread::sleep_for(500ms);
          r = rsv::VmReservation::apply(spec);
        }
        if (!r) {
          t.row({busy ? "busy-poll" : "interrupt", std::to_string(period_ms), std::to_string(q), "refused", "", "",
                 r.error().message});
          continue;
        }
        // --runs windows back to back; the point is their median.
        std::vector<double> m, pmd_cpu, vcpu_cpu, drops;
        std::this_thread::sleep_for(300ms);
        for (int run = 0; run < runs; ++run) {
          const auto s0 = dp.stats("b").value();
          const uint64_t c0 = thread_cpu_ns(getpid(), pmd_tid), v0 = thread_cpu_ns(vm.pid(), vm.vcpu_tid());
          const auto t0 = std::chrono::steady_clock::now();
          std::this_thread::sleep_for(std::chrono::duration<double>(secs));
          const auto s1 = dp.stats("b").value();
          const uint64_t c1 = thread_cpu_ns(getpid(), pmd_tid), v1 = thread_cpu_ns(vm.pid(), vm.vcpu_tid());
          const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          m.push_back(double(s1.to_vm_packets - s0.to_vm_packets) / dt / 1e6);
          pmd_cpu.push_back(100.0 * double(c1 - c0) / 1e9 / dt);
          vcpu_cpu.push_back(100.0 * double(v1 - v0) / 1e9 / dt);
          drops.push_back(double(s1.ring_full_drops - s0.ring_full_drops) / dt);
        }
        r.value().reset();
        qs.push_back(q);
        mpps.push_back(median(m));
        t.row({busy ? "busy-poll" : "interrupt", std::to_string(period_ms), std::to_string(q), fmt("%.3f", median(m)),
               fmt("%.1f", median(pmd_cpu)), fmt("%.1f", median(vcpu_cpu)), fmt("%.0f", median(drops))});
      }
      fits[std::string(busy ? "busy-poll" : "interrupt") + " P=" + std::to_string(period_ms) + " ms"] = r_squared(qs, mpps);
    }
  }
  t.print();
  std::cout << "\nlinear fit of Mpps against Q:\n";
  for (const auto& [k, r2] : fits) std::cout << "  " << k << ": R^2 " << fmt("%.4f", r2) << "\n";
  std::cout << "R^2: " << fmt("%.4f", fits["interrupt P=100 ms"]) << std::endl;
  return 0;
}

}  // namespace

using K = BenchOption::Kind;
CAPSULE_BENCH("pmd-budget", "VM throughput against its PMD's SCHED_DEADLINE budget (R^2 of the fit)", pmd_budget,
              {{"--seconds", K::kSeconds, "measurement window"},
               {"--runs", K::kCount, "windows per point (median)"},
               {"--size", K::kCount, "frame bytes"},
               {"--vcpu-share", K::kCount, "the vCPU's own share in % (0: half of Q)"},
               {"--vms", K::kText, "guest kinds", {"interrupt", "busy-poll"}},
               {"--periods", K::kText, "periods P in ms", {"100", "20"}},
               {"--q", K::kList, "budgets Q in % of P"}},
              {"--seconds", "0.2", "--runs", "1", "--periods", "100", "--q", "10,50,90"});

}  // namespace capsule::bench
