// capsule-bench pmd-throughput: packets per second through one datapath
// core, capsule's per-VM PMD threads against OVS-DPDK (ovs-vswitchd-dpdk,
// one PMD), on the same paths with the same emulated VMs (capsule-vm,
// flat out, on CPU 0; switch threads on CPU 1).
//
// Paths:  vm-uplink  VM -> uplink net_null (tx discards)
//         vm-vm      VM A -> VM B (capsule: A's and B's PMD threads, both on CPU 1)
//         uplink-vm  uplink -> VM (capsule: net_ring fed by a generator thread in
//                    this process on CPU 0, dispatcher + B's PMD on CPU 1;
//                    OVS: net_null rx, which makes frames for free)
// Last line: "capsule/ovs-dpdk Mpps ratio: X" (64 B, vm-uplink).
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <sched.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "bench.h"
#include "capsule/pmd/datapath.h"
#include "pmd_common.h"

namespace capsule::bench {
namespace {

using namespace capsule::bench::pmd;

constexpr int kVmCpu = 0, kSwitchCpu = 1;

struct Sample {
  double mpps = 0, cpp = 0;
};

Sample measure(const std::function<uint64_t()>& count, double warm, double secs) {
  return Sample{rate_per_second(count, warm, secs) / 1e6, 0};
}

Result<Sample> run_capsule(const std::string& path, uint32_t size, double warm, double secs) {
  harness::TempDir tmp("capsule-bench");
  const std::string dir = tmp.path();
  DatapathConfig cfg;
  cfg.eal.program = "capsule-bench";
  cfg.max_vms = 4;
  if (path == "vm-uplink") {
    cfg.uplink_devargs = "net_null0,no-rx=1";
    cfg.uplink_receive = false;
  } else if (path == "uplink-vm") {
    cfg.uplink_devargs = "net_ring0";
    cfg.dispatcher_poll.policy = capsule::pmd::PollPolicy::kBusy;  // as OVS's PMD
    cfg.dispatcher_cpu = kSwitchCpu;
  }
  auto dp = Datapath::create(cfg);
  if (!dp) return dp.error();
  auto vm = [&](const char* name, const char* mac) {
    VmConfig v;
    v.name = name;
    v.port.socket_path = dir + "/" + name + ".sock";
    v.mac = MacAddr::parse(mac).value();
    v.pin_cpu = kSwitchCpu;
    return v;
  };
  std::unique_ptr<EmuVm> a, b;
  std::unique_ptr<RingFeeder> feeder;
  const std::string sz = std::to_string(size);
  if (path == "vm-uplink" || path == "vm-vm") {
    if (auto s = dp.value()->add_vm(vm("a", kMacA)); !s) return s.error();
  }
  if (path == "vm-vm" || path == "uplink-vm") {
    if (auto s = dp.value()->add_vm(vm("b", kMacB)); !s) return s.error();
    b = std::make_unique<EmuVm>(dir, "b", dir + "/b.sock", kMacB, std::vector<std::string>{"--mode", "count"}, kVmCpu);
    if (!b->wait_ready()) return Error{"VM b did not come up: " + b->output()};
  }
  if (a == nullptr && (path == "vm-uplink" || path == "vm-vm")) {
    a = std::make_unique<EmuVm>(dir, "a", dir + "/a.sock", kMacA,
                                std::vector<std::string>{"--mode", "tx", "--rate", "0", "--size", sz, "--dst",
                                                         path == "vm-vm" ? kMacB : kMacFar},
                                kVmCpu);
    if (!a->wait_ready()) return Error{"VM a did not come up: " + a->output()};
  }
  if (path == "uplink-vm") {
    feeder = std::make_unique<RingFeeder>(rte_ring_lookup("ETH_RXTX0_net_ring0"), kMacB, size, kVmCpu);
    if (!feeder->ok()) return Error{"cannot find net_ring0's ring"};
  }
  Datapath& d = *dp.value();
  const std::string counted = path == "vm-uplink" ? "a" : "b";
  auto count = [&] {
    auto s = d.stats(counted).value();
    return path == "vm-uplink" ? s.from_vm_packets : s.to_vm_packets;
  };
  Sample s = measure(count, warm, secs);
  auto st = d.stats(counted).value();
  s.cpp = st.cycles_per_packet;
  if (path == "vm-vm") {  // two threads did the work: A's dequeue, B's enqueue
    auto sa = d.stats("a").value();
    s.cpp = double(sa.busy_cycles + st.busy_cycles) / double(std::max<uint64_t>(1, st.to_vm_packets));
  }
  feeder.reset();
  a.reset();
  b.reset();
  return s;
}

Result<Sample> run_ovs(const std::string& path, uint32_t size, double warm, double secs) {
  harness::TempDir tmp("capsule-bench");
  const std::string dir = tmp.path();
  OvsDpdk ovs({.pmd_cpu = kSwitchCpu, .pmd_maxsleep_us = -1});
  if (!ovs.ok()) return Error{"OVS-DPDK: " + ovs.error()};
  const std::string sz = std::to_string(size);
  std::unique_ptr<EmuVm> a, b;
  if (path == "vm-vm" || path == "uplink-vm") {
    b = std::make_unique<EmuVm>(dir, "b", dir + "/b.sock", kMacB, std::vector<std::string>{"--mode", "count"}, kVmCpu);
    std::this_thread::sleep_for(200ms);  // the VM serves the socket; OVS connects
    if (!ovs.add_vhost_port("vm2", dir + "/b.sock")) return Error{"OVS: cannot add port vm2"};
    if (!b->wait_ready()) return Error{"VM b did not come up under OVS: " + b->output()};
  }
  if (path == "vm-uplink" || path == "vm-vm") {
    a = std::make_unique<EmuVm>(dir, "a", dir + "/a.sock", kMacA,
                                std::vector<std::string>{"--mode", "tx", "--rate", "0", "--size", sz, "--dst",
                                                         path == "vm-vm" ? kMacB : kMacFar},
                                kVmCpu);
    std::this_thread::sleep_for(200ms);
    if (!ovs.add_vhost_port("vm1", dir + "/a.sock")) return Error{"OVS: cannot add port vm1"};
    if (!a->wait_ready()) return Error{"VM a did not come up under OVS: " + a->output()};
  }
  if (path == "vm-uplink" || path == "uplink-vm") {
    // vm-uplink: the null port must not make frames, or OVS's PMD spends
    // its time receiving them.
    const std::string devargs = path == "vm-uplink" ? "net_null0,no-rx=1" : "net_null0,size=" + sz;
    if (!ovs.add_dpdk_port("up", devargs)) return Error{"OVS: cannot add the net_null uplink"};
  }
  if (path == "vm-uplink") ovs.flow("in_port=vm1,actions=output:up");
  if (path == "vm-vm") ovs.flow("in_port=vm1,actions=output:vm2");
  if (path == "uplink-vm") ovs.flow("in_port=up,actions=output:vm2");
  const std::string port = path == "vm-uplink" ? "up" : "vm2";
  std::this_thread::sleep_for(std::chrono::duration<double>(warm));
  ovs.clear_pmd_stats();
  Sample s = measure([&] { return ovs.port_tx_packets(port); }, 0, secs);
  s.cpp = ovs.pmd_cycles_per_packet();
  a.reset();
  b.reset();
  return s;
}

int pmd_throughput(const std::vector<std::string>& args) {
  const int runs = std::stoi(arg(args, "--runs", "3"));
  const double secs = std::stod(arg(args, "--seconds", "2"));
  const std::string only = arg(args, "--path", "");
  const bool skip_ovs = arg(args, "--no-ovs", "no") != "no";
  const double warm = std::stod(arg(args, "--warm", "1"));
  std::cout << "pmd-throughput: " << runs << " runs of " << secs
            << " s per point, medians; emulated VMs flat out on CPU 0, switch threads on CPU 1\n"
            << "sizes are frame bytes without FCS (60 = a 64 B frame on the wire, 1514 = 1518 B)\n\n";
  Table t({"path", "frame", "capsule Mpps", "capsule cyc/pkt", "ovs-dpdk Mpps", "ovs cyc/pkt", "ratio"});
  double headline = NAN;
  for (std::string path : {"vm-uplink", "vm-vm", "uplink-vm"}) {
    if (!only.empty() && only != path) continue;
    for (uint32_t size : {60u, 1514u}) {
      std::vector<double> cm, cc, om, oc;
      for (int r = 0; r < runs; ++r) {
        auto c = run_capsule(path, size, warm, secs);
        if (!c) {
          std::cerr << "capsule " << path << " " << size << ": " << c.error().message << "\n";
          continue;
        }
        cm.push_back(c->mpps);
        cc.push_back(c->cpp);
        if (skip_ovs) continue;
        auto o = run_ovs(path, size, warm, secs);
        if (!o) {
          std::cerr << "ovs " << path << " " << size << ": " << o.error().message << "\n";
          continue;
        }
        om.push_back(o->mpps);
        oc.push_back(o->cpp);
      }
      const double ratio = median(cm) / median(om);
      t.row({path, std::to_string(size), fmt("%.3f", median(cm)), fmt("%.0f", median(cc)), fmt("%.3f", median(om)),
             fmt("%.0f", median(oc)), fmt("%.2f", ratio)});
      if (path == "vm-uplink" && size == 60) headline = ratio;
    }
  }
  t.print();
  std::cout << "capsule/ovs-dpdk Mpps ratio: " << fmt("%.2f", headline) << std::endl;
  return 0;
}

}  // namespace

CAPSULE_BENCH("pmd-throughput", "per-VM PMD vs OVS-DPDK: Mpps and cycles/packet, 64/1518 B", pmd_throughput,
              {{"--runs", BenchOption::Kind::kCount, "runs per point (median)"},
               {"--seconds", BenchOption::Kind::kSeconds, "measurement window"},
               {"--warm", BenchOption::Kind::kSeconds, "seconds before a window"},
               {"--path", BenchOption::Kind::kText, "one path only", {"vm-uplink", "vm-vm", "uplink-vm"}},
               {"--no-ovs", BenchOption::Kind::kText, "yes: capsule only", {"yes", "no"}}},
              {"--runs", "1", "--seconds", "0.2", "--warm", "0.2"});

}  // namespace capsule::bench
