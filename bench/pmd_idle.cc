// capsule-bench pmd-idle: what an idle VM's datapath thread costs, per poll
// policy, beside an idle OVS-DPDK PMD with pmd-maxsleep; and how fast a
// blocked (interrupt-mode) thread handles the first packet after a kick.
//
// Idle cost: one VM connected (capsule-vm, count mode, no traffic); the CPU
// time of its PMD thread over --seconds, for each policy in turn. OVS: one
// PMD (pmd-cpu-mask CPU 1) polling one idle vhost-user port.
// Wake-up: the VM sends one 128-byte frame every 5 ms (interrupt-driven
// sender, so each frame comes with a kick); the PMD (interrupt policy,
// blocked between frames) forwards it to net_ring0; a thread here spins on
// that ring and records now - send time (CLOCK_MONOTONIC in both processes).
// That is guest kick -> thread wake -> dequeue -> tx, what "handles its first
// packet" means here.
// Last line: "interrupt idle CPU: X %".
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_ring.h>
#include <time.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <iostream>
#include <sstream>
#include <thread>

#include "bench.h"
#include "capsule/pmd/datapath.h"
#include "capsule/rsv/reservation.h"
#include "pmd_common.h"

namespace capsule::bench {
namespace {

using namespace capsule::bench::pmd;

// capsule-vm's test header (tools/capsule-vm/frames.h): after the 42 bytes of
// Ethernet/IPv4/UDP come magic (4), kind (1), pad (1), seq (8), send_ns (8).
constexpr size_t kSendNsOffset = 42 + 14;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

double cpu_percent(pid_t pid, pid_t tid, double secs) {
  const uint64_t c0 = thread_cpu_ns(pid, tid);
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 100.0 * double(thread_cpu_ns(pid, tid) - c0) / 1e9 / dt;
}

int pmd_idle(const std::vector<std::string>& args) {
  const double secs = std::stod(arg(args, "--seconds", "3"));
  const int sleep_us = std::stoi(arg(args, "--sleep-us", "100"));
  const std::string maxsleeps = arg(args, "--ovs-maxsleep", "0,50,500");  // us, one OVS run each
  harness::TempDir tmp("capsule-bench");
  const std::string dir = tmp.path();
  std::cout << "pmd-idle: CPU of one idle VM's datapath thread over " << secs << " s (connected VM, no traffic)\n\n";
  Table t({"datapath thread", "policy", "idle CPU %", "blocks/s", "wakeups/s"});
  double interrupt_cpu = NAN;
  {
    DatapathConfig cfg;
    cfg.eal.program = "capsule-bench";
    cfg.max_vms = 2;
    cfg.uplink_devargs = "net_ring0";
    cfg.uplink_receive = false;  // the wake-up probe reads the ring itself
    auto dpr = Datapath::create(cfg);
    if (!dpr) {
      std::cerr << "pmd-idle: " << dpr.error().message << "\n";
      return 1;
    }
    Datapath& dp = *dpr.value();
    for (PollPolicy p : {PollPolicy::kInterrupt, PollPolicy::kSleep, PollPolicy::kYield, PollPolicy::kBusy}) {
      VmConfig v;
      v.name = "idle";
      v.port.socket_path = dir + "/idle-" + to_string(p) + ".sock";
      v.mac = MacAddr::parse(kMacA).value();
      v.poll.policy = p;
      v.poll.sleep_us = unsigned(sleep_us);
      if (auto s = dp.add_vm(v); !s) {
        std::cerr << "pmd-idle: " << s.error().message << "\n";
        return 1;
      }
      {
        EmuVm vm(dir, "idle-" + to_string(p), v.port.socket_path, kMacA, {"--mode", "count"});
        if (!vm.wait_ready()) {
          std::cerr << "pmd-idle: VM did not come up (" << to_string(p) << "): " << vm.output() << "\n";
          return 1;
        }
        std::this_thread::sleep_for(300ms);
        const auto s0 = dp.stats("idle").value();
        const double cpu = cpu_percent(getpid(), dp.pmd_tid("idle").value(), secs);
        const auto s1 = dp.stats("idle").value();
        const double wake = double(s1.wakeups_by_kick + s1.wakeups_by_ring + s1.wakeups_by_room -
                                   s0.wakeups_by_kick - s0.wakeups_by_ring - s0.wakeups_by_room);
        std::string name = to_string(p);
        if (p == PollPolicy::kSleep) name += " " + std::to_string(sleep_us) + " us";
        t.row({"capsule cpmd-idle", name, fmt("%.2f", cpu), fmt("%.1f", double(s1.blocks - s0.blocks) / secs),
               fmt("%.1f", wake / secs)});
        if (p == PollPolicy::kInterrupt) interrupt_cpu = cpu;
      }
      (void)dp.remove_vm("idle");
    }

    // Wake-up latency of a blocked thread.
    VmConfig v;
    v.name = "probe";
    v.port.socket_path = dir + "/probe.sock";
    v.mac = MacAddr::parse(kMacA).value();
    if (auto s = dp.add_vm(v); !s) {
      std::cerr << "pmd-idle: " << s.error().message << "\n";
      return 1;
    }
    rte_ring* ring = rte_ring_lookup("ETH_RXTX0_net_ring0");
    EmuVm vm(dir, "probe", v.port.socket_path, kMacA,
             {"--mode", "tx", "--rate", "200", "--size", "128", "--dst", "02:00:00:00:00:ff"});
    if (!ring || !vm.wait_ready()) {
      std::cerr << "pmd-idle: wake-up probe could not start\n";
      return 1;
    }
    // First as plain (CFS) threads, then with the sending VM's vCPU (2 ms)
    // and its PMD (1 ms) in a capsule with budget to spare (P = 10 ms): there
    // wake-ups preempt CFS work, which is what "when its budget allows"
    // means. The reader here stays CFS and its own delays are included.
    for (bool reserved : {false, true}) {
      std::unique_ptr<rsv::VmReservation> r;
      if (reserved) {
        rsv::VmReservationSpec spec;
        spec.name = "bench-probe";
        spec.period = 10ms;
        spec.threads = {{dp.pmd_tid("probe").value(), 1ms, -1, "pmd"}, {vm.vcpu_tid(), 2ms, -1, "vcpu0"}};
        auto a = rsv::VmReservation::apply(spec);
        if (!a) {
          std::cout << "wake-up in a reservation: refused: " << a.error().message << "\n";
          continue;
        }
        r = std::move(a.value());
      }
      const auto st0 = dp.stats("probe").value();
      std::vector<double> lat_us;
      const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(secs);
      while (std::chrono::steady_clock::now() < end) {
        void* objs[32];
        const unsigned n = rte_ring_dequeue_burst(ring, objs, 32, nullptr);
        const uint64_t now = now_ns();
        for (unsigned i = 0; i < n; ++i) {
          auto* m = static_cast<rte_mbuf*>(objs[i]);
          uint64_t sent = 0;
          if (rte_pktmbuf_data_len(m) >= kSendNsOffset + 8)
            std::memcpy(&sent, rte_pktmbuf_mtod_offset(m, const char*, kSendNsOffset), 8);
          if (sent && now > sent) lat_us.push_back(double(now - sent) / 1000.0);
          rte_pktmbuf_free(m);
        }
        if (n == 0) rte_pause();
      }
      const auto st = dp.stats("probe").value();
      std::cout << "wake-up (" << (reserved ? "capsule: PMD 1 ms + vCPU 2 ms every 10 ms" : "CFS, no reservation") << "): "
                << lat_us.size() << " frames, " << st.blocks - st0.blocks << " blocks, "
                << st.wakeups_by_kick - st0.wakeups_by_kick << " kick wake-ups; guest tx -> forwarded p50 "
                << fmt("%.1f", percentile(lat_us, 50)) << " us, p99 " << fmt("%.1f", percentile(lat_us, 99))
                << " us, max " << fmt("%.1f", percentile(lat_us, 100)) << " us\n";
    }
    std::cout << "\n";
  }
  std::stringstream ms(maxsleeps);
  for (std::string item; std::getline(ms, item, ',');) {
    const int maxsleep = std::stoi(item);
    const std::string label = "pmd-maxsleep " + std::to_string(maxsleep) + " us";
    OvsDpdk ovs({.pmd_cpu = 1, .pmd_maxsleep_us = maxsleep});
    if (!ovs.ok()) {
      t.row({"ovs-vswitchd-dpdk pmd", label, "n/a: " + ovs.error(), "", ""});
      continue;
    }
    EmuVm vm(dir, "ovsidle", dir + "/ovsidle.sock", kMacA, {"--mode", "count"});
    std::this_thread::sleep_for(200ms);
    ovs.add_vhost_port("vm1", dir + "/ovsidle.sock");
    vm.wait_ready();
    std::this_thread::sleep_for(1s);
    auto pmds = ovs.pmd_tids();
    t.row({"ovs-vswitchd-dpdk pmd", label,
           pmds.empty() ? "n/a: no PMD thread" : fmt("%.2f", cpu_percent(ovs.vswitchd_pid(), pmds[0], secs)), "", ""});
  }
  t.print();
  std::cout << "interrupt idle CPU: " << fmt("%.2f", interrupt_cpu) << " %" << std::endl;
  return 0;
}

}  // namespace

CAPSULE_BENCH("pmd-idle", "idle CPU of a VM's PMD per poll policy vs OVS pmd-maxsleep; wake-up latency", pmd_idle,
              {{"--seconds", BenchOption::Kind::kSeconds, "CPU measurement window per policy"},
               {"--sleep-us", BenchOption::Kind::kCount, "the sleep policy's sleep"},
               {"--ovs-maxsleep", BenchOption::Kind::kList, "OVS pmd-maxsleep values (us), one OVS run each"}},
              {"--seconds", "0.3", "--ovs-maxsleep", "50"});

}  // namespace capsule::bench
