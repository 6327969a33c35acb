// capsule-bench pmd-budget: throughput of one VM against the budget of its
// PMD thread under SCHED_DEADLINE (P = 100 ms and 20 ms, Q = 10 .. 90 % of
// P), with an interrupt-driven VM and with a busy-polling VM, and the
// linear fit's R^2 for each series.
//
// --path uplink-vm (default): a generator thread here feeds 1514-byte
// frames for the VM into net_ring0's rx ring as fast as it drains; the
// dispatcher moves them into the VM's ring; the VM's PMD thread copies them
// into the VM; the VM (capsule-vm, count mode) receives them on its vCPU
// thread. Both threads are in the VM's capsule (SCHED_DEADLINE, no
// reclaiming, so budgets are hard caps): the capsule's budget Q is split
// evenly, Q/2 for the PMD and Q/2 for the vCPU (receiving a frame costs the
// VM about what delivering it costs the PMD, so neither starves the other).
// --vcpu-share N instead gives the vCPU a fixed N % of P and the PMD all of
// Q. Nothing is pinned: the root domain is the whole machine.
//
// --path vm-vm: VM A (capsule-vm, tx mode, flat out) sends to VM B (count
// mode); A's PMD thread takes A's frames and hands them to B's ring, B's
// PMD thread copies them into B. Each VM has a capsule of its own with
// budget Q of P, split as above (A's vCPU and PMD, B's vCPU and PMD): the
// two capsules together hold 2Q, so Q goes up to 45 % by default. B is
// interrupt-driven or busy-polling (--vms); A's vCPU sends flat out either
// way, and its rx is interrupt-driven.
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
  const std::string path = arg(args, "--path", "uplink-vm");
  const bool vm_vm = path == "vm-vm";
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
  auto add = [&](const char* name, const char* mac) -> bool {
    VmConfig v;
    v.name = name;
    v.port.socket_path = dir + "/" + name + ".sock";
    v.mac = MacAddr::parse(mac).value();
    if (auto s = dp.add_vm(v); !s) {
      std::cerr << "pmd-budget: " << s.error().message << "\n";
      return false;
    }
    return true;
  };
  if (!add("b", kMacB) || (vm_vm && !add("a", kMacA))) return 1;
  const pid_t pmd_tid = dp.pmd_tid("b").value();
  const pid_t pmd_a_tid = vm_vm ? dp.pmd_tid("a").value() : 0;
  std::unique_ptr<RingFeeder> feeder;
  if (!vm_vm) {
    rte_ring* ring = rte_ring_lookup("ETH_RXTX0_net_ring0");
    if (!ring) {
      std::cerr << "pmd-budget: net_ring0's ring not found\n";
      return 1;
    }
    feeder = std::make_unique<RingFeeder>(ring, kMacB, size);
  }

  if (vm_vm)
    std::cout << "pmd-budget: VM A -> VM B, " << size << "-byte frames, A sends flat out; each VM's capsule "
              << "(SCHED_DEADLINE, no reclaim) "
              << (vcpu_share ? "gives its PMD thread Q and its vCPU " + std::to_string(vcpu_share) + " % of P"
                             : std::string("has budget Q of P, half for its PMD thread, half for its vCPU"))
              << "; median of " << runs << " windows of " << secs << " s per point; nothing pinned\n\n";
  else
    std::cout << "pmd-budget: uplink -> VM, " << size
              << "-byte frames; the VM's capsule (SCHED_DEADLINE, no reclaim) "
              << (vcpu_share ? "gives its PMD thread Q and its vCPU " + std::to_string(vcpu_share) + " % of P"
                             : std::string("has budget Q of P, half for its PMD thread, half for its vCPU"))
              << "; median of " << runs << " windows of " << secs << " s per point; nothing pinned\n\n";
  const std::string kinds = arg(args, "--vms", "interrupt,busy-poll");
  const std::string periods = arg(args, "--periods", "100,20");
  std::vector<int> budgets;  // Q in % of P
  {
    std::stringstream list(arg(args, "--q", vm_vm ? "5,10,15,20,25,30,35,40,45" : "10,20,30,40,50,60,70,80,90"));
    for (std::string q; std::getline(list, q, ',');) budgets.push_back(std::stoi(q));
  }
  std::vector<std::string> header = {"VM", "P ms", "Q %", "Mpps", "PMD CPU %", "vCPU CPU %", "ring-full drops/s"};
  if (vm_vm) header.insert(header.end(), {"A PMD CPU %", "A vCPU CPU %", "B wake-ups/s"});
  Table t(header);
  std::map<std::string, double> fits;
  for (bool busy : {false, true}) {
    if (kinds.find(busy ? "busy-poll" : "interrupt") == std::string::npos) continue;
    std::vector<std::string> vm_args = {"--mode", "count", "--queue-size", "1024"};
    if (busy) vm_args.push_back("--busy-poll");
    EmuVm vm(dir, busy ? "busy" : "irq", dir + "/b.sock", kMacB, vm_args);
    if (!vm.wait_ready()) {
      std::cerr << "pmd-budget: VM did not come up: " << vm.output() << "\n";
      return 1;
    }
    std::unique_ptr<EmuVm> sender;
    if (vm_vm) {
      sender = std::make_unique<EmuVm>(dir, busy ? "tx-busy" : "tx-irq", dir + "/a.sock", kMacA,
                                       std::vector<std::string>{"--mode", "tx", "--dst", kMacB, "--size",
                                                                std::to_string(size), "--queue-size", "1024"});
      if (!sender->wait_ready()) {
        std::cerr << "pmd-budget: VM A did not come up: " << sender->output() << "\n";
        return 1;
      }
    }
    for (int period_ms : {100, 20}) {
      if (periods.find(std::to_string(period_ms)) == std::string::npos) continue;
      std::vector<double> qs, mpps;
      for (int q : budgets) {
        const auto pmd_us = std::chrono::microseconds(period_ms * (vcpu_share ? 10 * q : 5 * q));
        const auto vcpu_us = std::chrono::microseconds(period_ms * (vcpu_share ? 10 * vcpu_share : 5 * q));
        auto capsule = [&](const char* name, pid_t pmd, pid_t vcpu) {
          rsv::VmReservationSpec spec;
          spec.name = name;
          spec.period = std::chrono::milliseconds(period_ms);
          spec.threads = {{pmd, pmd_us, -1, "pmd"}, {vcpu, vcpu_us, -1, "vcpu0"}};
          // The root domain's DL bandwidth is shared with whatever else runs
          // here (and released bandwidth stays booked for up to a period):
          // try a few times before giving up on a point.
          auto r = rsv::VmReservation::apply(spec);
          for (int attempt = 0; !r && attempt < 5; ++attempt) {
            std::this_thread::sleep_for(500ms);
            r = rsv::VmReservation::apply(spec);
          }
          return r;
        };
        auto r = capsule("bench-b", pmd_tid, vm.vcpu_tid());
        auto ra = vm_vm ? capsule("bench-a", pmd_a_tid, sender->vcpu_tid()) : decltype(r)(Error{"no VM A", 0});
        if (!r || (vm_vm && !ra)) {
          std::vector<std::string> row = {busy ? "busy-poll" : "interrupt", std::to_string(period_ms),
                                          std::to_string(q), "refused", "", "", (!r ? r : ra).error().message};
          if (vm_vm) row.insert(row.end(), {"", "", ""});
          t.row(row);
          continue;
        }
        // --runs windows back to back; the point is their median.
        std::vector<double> m, pmd_cpu, vcpu_cpu, drops, a_pmd_cpu, a_vcpu_cpu, wakes;
        std::this_thread::sleep_for(300ms);
        for (int run = 0; run < runs; ++run) {
          const auto s0 = dp.stats("b").value();
          const uint64_t c0 = thread_cpu_ns(getpid(), pmd_tid), v0 = thread_cpu_ns(vm.pid(), vm.vcpu_tid());
          const uint64_t ac0 = vm_vm ? thread_cpu_ns(getpid(), pmd_a_tid) : 0;
          const uint64_t av0 = vm_vm ? thread_cpu_ns(sender->pid(), sender->vcpu_tid()) : 0;
          const auto t0 = std::chrono::steady_clock::now();
          std::this_thread::sleep_for(std::chrono::duration<double>(secs));
          const auto s1 = dp.stats("b").value();
          const uint64_t c1 = thread_cpu_ns(getpid(), pmd_tid), v1 = thread_cpu_ns(vm.pid(), vm.vcpu_tid());
          const uint64_t ac1 = vm_vm ? thread_cpu_ns(getpid(), pmd_a_tid) : 0;
          const uint64_t av1 = vm_vm ? thread_cpu_ns(sender->pid(), sender->vcpu_tid()) : 0;
          const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          m.push_back(double(s1.to_vm_packets - s0.to_vm_packets) / dt / 1e6);
          pmd_cpu.push_back(100.0 * double(c1 - c0) / 1e9 / dt);
          vcpu_cpu.push_back(100.0 * double(v1 - v0) / 1e9 / dt);
          drops.push_back(double(s1.ring_full_drops - s0.ring_full_drops) / dt);
          a_pmd_cpu.push_back(100.0 * double(ac1 - ac0) / 1e9 / dt);
          a_vcpu_cpu.push_back(100.0 * double(av1 - av0) / 1e9 / dt);
          const uint64_t w0 = s0.wakeups_by_kick + s0.wakeups_by_ring + s0.wakeups_by_room + s0.wakeups_by_policer;
          const uint64_t w1 = s1.wakeups_by_kick + s1.wakeups_by_ring + s1.wakeups_by_room + s1.wakeups_by_policer;
          wakes.push_back(double(w1 - w0) / dt);
        }
        r.value().reset();
        if (vm_vm) ra.value().reset();
        qs.push_back(q);
        mpps.push_back(median(m));
        std::vector<std::string> row = {busy ? "busy-poll" : "interrupt", std::to_string(period_ms), std::to_string(q),
                                        fmt("%.3f", median(m)), fmt("%.1f", median(pmd_cpu)),
                                        fmt("%.1f", median(vcpu_cpu)), fmt("%.0f", median(drops))};
        if (vm_vm)
          row.insert(row.end(),
                     {fmt("%.1f", median(a_pmd_cpu)), fmt("%.1f", median(a_vcpu_cpu)), fmt("%.0f", median(wakes))});
        t.row(row);
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
               {"--vms", K::kText, "guest kinds (vm-vm: the receiver's)", {"interrupt", "busy-poll"}},
               {"--path", K::kText, "what is driven", {"uplink-vm", "vm-vm"}},
               {"--periods", K::kText, "periods P in ms", {"100", "20"}},
               {"--q", K::kList, "budgets Q in % of P"}},
              {"--seconds", "0.2", "--runs", "1", "--periods", "100", "--q", "10,50,90"});

}  // namespace capsule::bench
