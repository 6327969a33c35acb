// capsule-bench pmd-throughput: packets per second through one datapath
// core, capsule's per-VM PMD threads against OVS-DPDK (ovs-vswitchd-dpdk,
// one PMD), on the same paths with the same emulated VMs (capsule-vm,
// flat out, on CPU 0; switch threads on CPU 1). Like for like: on every
// path both switches get the same devices and the same frame source on the
// same CPUs.
//
// Paths:  vm-uplink  VM A (tx flat out) -> uplink net_null (tx discards; rx off)
//         vm-vm      VM A (tx flat out) -> VM B (capsule: A's and B's PMD
//                    threads, both on CPU 1; OVS: its PMD)
//         uplink-vm  the wire -> uplink -> VM B: the uplink is a DPDK net_vhost
//                    port whose far side is a capsule-vm sending flat out on
//                    CPU 0 (capsule: busy-polling dispatcher + B's PMD on CPU
//                    1; OVS: its PMD)
// Each point is the median of --runs runs (each a fresh switch and VMs).
// Last line: "worst path ratio: X" (the lowest capsule/OVS ratio of all
// paths and sizes).
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <sched.h>

#include <algorithm>
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
  // capsule uplink-vm, per stage over the window: dispatcher cycles/frame
  // and frames per busy round; the VM thread's cycles/frame, frames per
  // busy round, parks (epoll waits) and wake-ups by guest room per second.
  double disp_cpp = 0, disp_burst = 0, pmd_cpp = 0, pmd_burst = 0, parks_s = 0, room_wakeups_s = 0;
};

Sample measure(const std::function<uint64_t()>& count, double warm, double secs) {
  return Sample{rate_per_second(count, warm, secs) / 1e6, 0};
}

// The frame source of uplink-vm for both switches: a capsule-vm on the far
// side of a net_vhost uplink, sending to VM B flat out.
std::vector<std::string> wire_args(uint32_t size) {
  return {"--mode", "tx", "--rate", "0", "--size", std::to_string(size), "--dst", kMacB};
}

// How each path is driven (the table's last column).
const char* driven(const std::string& path) {
  if (path == "vm-uplink") return "VM tx flat out -> net_null";
  if (path == "vm-vm") return "VM tx flat out -> VM";
  return "capsule-vm tx flat out -> net_vhost -> VM";
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
    cfg.uplink_devargs = "net_vhost0,iface=" + dir + "/wire.sock,client=1,queues=1";
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
  std::unique_ptr<EmuVm> a, b, wire;
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
    wire = std::make_unique<EmuVm>(dir, "wire", dir + "/wire.sock", kMacFar, wire_args(size), kVmCpu);
    if (!wire->wait_ready()) return Error{"the wire's sender did not come up: " + wire->output()};
  }
  Datapath& d = *dp.value();
  const std::string counted = path == "vm-uplink" ? "a" : "b";
  auto count = [&] {
    auto s = d.stats(counted).value();
    return path == "vm-uplink" ? s.from_vm_packets : s.to_vm_packets;
  };
  std::this_thread::sleep_for(std::chrono::duration<double>(warm));
  const auto s0 = d.stats(counted).value();
  const auto u0 = d.uplink_stats();
  const auto t0 = std::chrono::steady_clock::now();
  Sample s = measure(count, 0, secs);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto st = d.stats(counted).value();
  const auto u1 = d.uplink_stats();
  s.cpp = st.cycles_per_packet;
  if (path == "uplink-vm") {
    auto per = [](uint64_t num, uint64_t den) { return den ? double(num) / double(den) : 0.0; };
    s.disp_cpp = per(u1.dispatcher_busy_cycles - u0.dispatcher_busy_cycles, u1.rx_packets - u0.rx_packets);
    s.disp_burst = per(u1.rx_packets - u0.rx_packets, u1.dispatcher_busy_rounds - u0.dispatcher_busy_rounds);
    s.pmd_cpp = per(st.busy_cycles - s0.busy_cycles, st.to_vm_packets - s0.to_vm_packets);
    s.pmd_burst = per(st.to_vm_packets - s0.to_vm_packets, st.busy_iterations - s0.busy_iterations);
    s.parks_s = double(st.blocks - s0.blocks) / dt;
    s.room_wakeups_s = double(st.wakeups_by_room - s0.wakeups_by_room) / dt;
  }
  if (path == "vm-vm") {  // two threads did the work: A's dequeue, B's enqueue
    auto sa = d.stats("a").value();
    s.cpp = double(sa.busy_cycles + st.busy_cycles) / double(std::max<uint64_t>(1, st.to_vm_packets));
  }
  wire.reset();
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
  std::unique_ptr<EmuVm> a, b, wire;
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
  if (path == "vm-uplink") {
    // The null port must not make frames, or OVS's PMD spends its time
    // receiving them (capsule's does not poll it either).
    if (!ovs.add_dpdk_port("up", "net_null0,no-rx=1")) return Error{"OVS: cannot add the net_null uplink"};
  }
  if (path == "uplink-vm") {
    wire = std::make_unique<EmuVm>(dir, "wire", dir + "/wire.sock", kMacFar, wire_args(size), kVmCpu);
    std::this_thread::sleep_for(200ms);
    if (!ovs.add_dpdk_port("up", "net_vhost0,iface=" + dir + "/wire.sock,client=1,queues=1"))
      return Error{"OVS: cannot add the net_vhost uplink"};
    if (!wire->wait_ready()) return Error{"the wire's sender did not come up under OVS: " + wire->output()};
  }
  if (path == "vm-uplink") ovs.flow("in_port=vm1,actions=output:up");
  if (path == "vm-vm") ovs.flow("in_port=vm1,actions=output:vm2");
  if (path == "uplink-vm") ovs.flow("in_port=up,actions=output:vm2");
  const std::string port = path == "vm-uplink" ? "up" : "vm2";
  std::this_thread::sleep_for(std::chrono::duration<double>(warm));
  ovs.clear_pmd_stats();
  Sample s = measure([&] { return ovs.port_tx_packets(port); }, 0, secs);
  s.cpp = ovs.pmd_cycles_per_packet();
  wire.reset();
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
            << " s per point, medians (min..max); emulated VMs and the wire's sender on CPU 0, switch threads on CPU 1\n"
            << "sizes are frame bytes without FCS (60 = a 64 B frame on the wire, 1514 = 1518 B)\n\n";
  Table t({"path", "frame", "capsule Mpps", "capsule cyc/pkt", "ovs-dpdk Mpps", "ovs cyc/pkt", "ratio", "driven by"});
  double worst = NAN;
  Table stages({"frame", "dispatcher cyc/pkt", "dispatcher burst", "VM thread cyc/pkt", "VM thread burst", "parks/s",
                "room wake-ups/s"});
  auto spread = [](const std::vector<double>& v) {
    if (v.empty()) return std::string("-");
    return fmt("%.3f", median(v)) + " (" + fmt("%.3f", *std::min_element(v.begin(), v.end())) + ".." +
           fmt("%.3f", *std::max_element(v.begin(), v.end())) + ")";
  };
  for (std::string path : {"vm-uplink", "vm-vm", "uplink-vm"}) {
    if (!only.empty() && only != path) continue;
    for (uint32_t size : {60u, 1514u}) {
      std::vector<double> cm, cc, om, oc;
      std::vector<double> dcpp, dburst, pcpp, pburst, parks, rooms;
      for (int r = 0; r < runs; ++r) {
        auto c = run_capsule(path, size, warm, secs);
        if (!c) {
          std::cerr << "capsule " << path << " " << size << ": " << c.error().message << "\n";
          continue;
        }
        cm.push_back(c->mpps);
        cc.push_back(c->cpp);
        dcpp.push_back(c->disp_cpp), dburst.push_back(c->disp_burst), pcpp.push_back(c->pmd_cpp);
        pburst.push_back(c->pmd_burst), parks.push_back(c->parks_s), rooms.push_back(c->room_wakeups_s);
        if (skip_ovs) continue;
        auto o = run_ovs(path, size, warm, secs);
        if (!o) {
          std::cerr << "ovs " << path << " " << size << ": " << o.error().message << "\n";
          continue;
        }
        om.push_back(o->mpps);
        oc.push_back(o->cpp);
      }
      const double ratio = cm.empty() || om.empty() ? NAN : median(cm) / median(om);
      t.row({path, std::to_string(size), spread(cm), fmt("%.0f", median(cc)), spread(om), fmt("%.0f", median(oc)),
             fmt("%.2f", ratio), driven(path)});
      if (!std::isnan(ratio) && !(ratio >= worst)) worst = ratio;
      if (path == "uplink-vm" && !cm.empty())
        stages.row({std::to_string(size), fmt("%.0f", median(dcpp)), fmt("%.1f", median(dburst)), fmt("%.0f", median(pcpp)),
                    fmt("%.1f", median(pburst)), fmt("%.0f", median(parks)), fmt("%.0f", median(rooms))});
    }
  }
  t.print();
  if (only.empty() || only == "uplink-vm") {
    std::cout << "\ncapsule uplink-vm by stage (medians): the dispatcher thread (rx burst, lookup, hand-off to the "
                 "VM's ring) and the VM's thread (take from its ring, copy into the guest, free)\n";
    stages.print();
    std::cout << "\n";
  }
  std::cout << "worst path ratio: " << fmt("%.2f", worst) << std::endl;
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
