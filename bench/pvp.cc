// capsule-bench pvp: NFV's own benchmark, zero-loss throughput through VMs
// (RFC 2544 throughput as ETSI GS NFV-TST 009 and OVS's vsperf run it):
//
//   PVP   wire -> uplink -> VM 1 (reflects: swaps the MACs) -> uplink -> wire
//   PVVP  wire -> uplink -> VM 1 (forwards to VM 2) -> VM 2 (forwards to
//         the wire) -> uplink -> wire
//
// The wire is a tester: capsule-vm --mode tx --tester, a virtio-user port
// serving a socket to which the switch's uplink connects as a DPDK net_vhost
// port (the same device, driver and frame source for capsule and OVS-DPDK).
// It offers --count = rate x trial frames at a steady rate and counts the
// test frames that come back; a frame the uplink has no room for is lost, as
// at a NIC's full rx ring. A trial passes when the loss is at most --loss %
// (default 0.001) and the tester really offered the rate (it took at most
// 2 % longer than the trial). A binary search between 0 and 10 GbE line rate
// finds the highest passing rate, to --resolution % of the rate found.
//
// CPUs: the tester and the VMs (capsule-vm, interrupt-driven like a guest
// kernel's virtio-net) on CPU 0; the switch on CPU 1: capsule's uplink
// dispatcher (busy-polling, as an OVS PMD) and each VM's own PMD thread
// (interrupt-driven), or OVS-DPDK's one PMD thread with port-to-port flows
// (as vsperf programs it). capsule forwards by MAC (its forwarding table).
//
// Last line: "PVP zero-loss ratio capsule/ovs-dpdk: X" (64 B frames).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>

#include "bench.h"
#include "capsule/pmd/datapath.h"
#include "pmd_common.h"

namespace capsule::bench {
namespace {

using namespace capsule::bench::pmd;

constexpr int kVmCpu = 0, kSwitchCpu = 1;

// Frames per second of 10 GbE for a frame of `size` bytes without FCS
// (+ 4 FCS + 8 preamble + 12 inter-frame gap).
double line_rate(uint32_t size) { return 10e9 / (double(size + 24) * 8); }

struct Trial {
  uint64_t offered = 0, received = 0;
  double span_s = 0;
  bool ok = false;  // the tester ran to its end
  std::string error;
  double loss_pct() const { return offered ? 100.0 * double(offered - std::min(offered, received)) / double(offered) : 100; }
};

// One switch set up for a path; trials run against it one after another.
class Switch {
 public:
  virtual ~Switch() = default;
  // The uplink's socket the tester serves, and the first VM's MAC.
  std::string wire_socket;
  std::string first_hop = kMacA;

 protected:
  // PVP: VM 1 reflects. PVVP: VM 1 forwards to VM 2, VM 2 to the wire. Each
  // serves its socket vmN.sock in `dir`.
  void start_vms(const std::string& dir, bool pvvp) {
    auto args = [&](const char* next) {
      return pvvp ? std::vector<std::string>{"--mode", "forward", "--dst", next}
                  : std::vector<std::string>{"--mode", "reflect"};
    };
    vm1_ = std::make_unique<EmuVm>(dir, "vm1", dir + "/vm1.sock", kMacA, args(kMacB), kVmCpu);
    if (pvvp) vm2_ = std::make_unique<EmuVm>(dir, "vm2", dir + "/vm2.sock", kMacB, args(kMacFar), kVmCpu);
  }
  Status wait_vms(const std::string& where) {
    if (!vm1_->wait_ready()) return Error{"VM 1 did not come up" + where + ": " + vm1_->output()};
    if (vm2_ && !vm2_->wait_ready()) return Error{"VM 2 did not come up" + where + ": " + vm2_->output()};
    return {};
  }
  // Destroyed by the switch before its own datapath.
  std::unique_ptr<EmuVm> vm1_, vm2_;
};

class CapsuleSwitch : public Switch {
 public:
  static Result<std::unique_ptr<CapsuleSwitch>> create(const std::string& dir, bool pvvp) {
    auto s = std::unique_ptr<CapsuleSwitch>(new CapsuleSwitch());
    s->wire_socket = dir + "/wire.sock";
    DatapathConfig cfg;
    cfg.eal.program = "capsule-bench";
    cfg.max_vms = 4;
    cfg.uplink_devargs = "net_vhost0,iface=" + s->wire_socket + ",client=1,queues=1";
    cfg.dispatcher_poll.policy = PollPolicy::kBusy;  // as OVS's PMD polls its ports
    cfg.dispatcher_cpu = kSwitchCpu;
    auto dp = Datapath::create(cfg);
    if (!dp) return dp.error();
    s->dp_ = std::move(dp.value());
    const std::vector<std::pair<const char*, const char*>> vms =
        pvvp ? std::vector<std::pair<const char*, const char*>>{{"vm1", kMacA}, {"vm2", kMacB}}
             : std::vector<std::pair<const char*, const char*>>{{"vm1", kMacA}};
    for (auto [name, mac] : vms) {
      VmConfig v;
      v.name = name;
      v.port.socket_path = dir + "/" + name + ".sock";
      v.mac = MacAddr::parse(mac).value();
      v.pin_cpu = kSwitchCpu;
      if (auto st = s->dp_->add_vm(v); !st) return st.error();
    }
    s->start_vms(dir, pvvp);
    if (Status st = s->wait_vms(""); !st) return st.error();
    return s;
  }
  ~CapsuleSwitch() override {
    vm1_.reset();
    vm2_.reset();
    dp_.reset();
  }

 private:
  CapsuleSwitch() = default;
  std::unique_ptr<Datapath> dp_;
};

class OvsSwitch : public Switch {
 public:
  static Result<std::unique_ptr<OvsSwitch>> create(const std::string& dir, bool pvvp) {
    auto s = std::unique_ptr<OvsSwitch>(new OvsSwitch());
    s->wire_socket = dir + "/wire.sock";
    s->ovs_ = std::make_unique<OvsDpdk>(OvsDpdk::Options{.pmd_cpu = kSwitchCpu, .pmd_maxsleep_us = -1});
    if (!s->ovs_->ok()) return Error{"OVS-DPDK: " + s->ovs_->error()};
    s->start_vms(dir, pvvp);
    // OVS's ports are clients of the sockets the VMs serve.
    auto serving = [&](const std::string& sock) {
      return testkit::wait_until([&] { return access(sock.c_str(), F_OK) == 0; }, 10s);
    };
    if (!serving(dir + "/vm1.sock") || (pvvp && !serving(dir + "/vm2.sock")))
      return Error{"the VMs do not serve their sockets: " + s->vm1_->output()};
    if (!s->ovs_->add_vhost_port("vm1", dir + "/vm1.sock")) return Error{"OVS: cannot add port vm1"};
    if (pvvp && !s->ovs_->add_vhost_port("vm2", dir + "/vm2.sock")) return Error{"OVS: cannot add port vm2"};
    if (Status st = s->wait_vms(" under OVS"); !st) return st.error();
    if (!s->ovs_->add_dpdk_port("up", "net_vhost0,iface=" + s->wire_socket + ",client=1,queues=1"))
      return Error{"OVS: cannot add the net_vhost uplink"};
    bool ok = s->ovs_->flow("in_port=up,actions=output:vm1");
    if (pvvp)
      ok = ok && s->ovs_->flow("in_port=vm1,actions=output:vm2") && s->ovs_->flow("in_port=vm2,actions=output:up");
    else
      ok = ok && s->ovs_->flow("in_port=vm1,actions=output:up");
    if (!ok) return Error{"OVS: cannot add the flows"};
    return s;
  }
  ~OvsSwitch() override {
    vm1_.reset();
    vm2_.reset();
    ovs_.reset();
  }

 private:
  OvsSwitch() = default;
  std::unique_ptr<OvsDpdk> ovs_;
};

// One trial: a fresh tester on the wire offers rate x secs frames.
Trial trial(const Switch& sw, const std::string& dir, double rate, uint32_t size, double secs) {
  static int n = 0;
  Trial t;
  t.offered = std::max<uint64_t>(1, uint64_t(rate * secs));
  EmuVm tester(dir, "tester" + std::to_string(n++), sw.wire_socket, kMacFar,
               {"--mode", "tx", "--tester", "--rate", fmt("%.0f", rate), "--count", std::to_string(t.offered), "--size",
                std::to_string(size), "--dst", sw.first_hop},
               kVmCpu);
  if (!tester.wait_ready(20)) {
    t.error = "the tester's link did not come up: " + tester.output();
    return t;
  }
  auto c = tester.wait_exit(std::chrono::milliseconds(int(secs * 3000) + 10'000));
  if (!c.count("rx_test")) {
    t.error = "the tester did not finish: " + tester.output();
    return t;
  }
  t.received = c["rx_test"];
  t.span_s = double(c["tx_span_us"]) / 1e6;
  t.ok = true;
  return t;
}

struct Search {
  double rate = 0;  // highest passing offered rate, pps (0: none passed)
  int trials = 0;
  std::string error;
};

// RFC 2544 binary search: the highest rate whose trial loses at most
// loss_pct, to `resolution` (a fraction of the rate found).
Search search(const Switch& sw, const std::string& dir, uint32_t size, double secs, double loss_pct, double resolution,
              bool verbose) {
  Search s;
  double lo = 0, hi = line_rate(size), rate = hi;
  while (true) {
    Trial t = trial(sw, dir, rate, size, secs);
    ++s.trials;
    if (!t.ok) {
      s.error = t.error;
      return s;
    }
    const bool offered = t.span_s <= secs * 1.02 + 0.001;
    const bool pass = offered && t.loss_pct() <= loss_pct;
    if (verbose)
      std::cout << "  trial " << fmt("%.3f", rate / 1e6) << " Mpps: sent " << t.offered << " in "
                << fmt("%.3f", t.span_s) << " s, back " << t.received << ", loss " << fmt("%.4f", t.loss_pct()) << " % "
                << (pass ? "pass" : "fail") << std::endl;
    (pass ? lo : hi) = rate;
    if (pass && rate == line_rate(size)) break;
    // Within `resolution` of the rate found (or of 0.1 % of line rate while
    // nothing passed).
    if (hi - lo <= std::max(resolution * lo, line_rate(size) * 1e-3)) break;
    rate = (lo + hi) / 2;
  }
  s.rate = lo;
  return s;
}

int pvp(const std::vector<std::string>& args) {
  const double secs = std::stod(arg(args, "--trial", "2"));
  const double loss = std::stod(arg(args, "--loss", "0.001"));
  const double resolution = std::stod(arg(args, "--resolution", "2")) / 100;
  const std::string only = arg(args, "--path", "");
  const std::string sizes_arg = arg(args, "--sizes", "60,1514");
  const bool skip_ovs = flag(args, "--no-ovs");
  const bool verbose = flag(args, "--verbose");
  std::vector<uint32_t> sizes;
  for (size_t p = 0; p < sizes_arg.size();) {
    const size_t q = std::min(sizes_arg.find(',', p), sizes_arg.size());
    sizes.push_back(uint32_t(std::stoul(sizes_arg.substr(p, q - p))));
    p = q + 1;
  }
  for (uint32_t sz : sizes)
    if (sz < 60 || sz > 1514) {
      std::cerr << "pvp: --sizes " << sz << ": a frame is 60..1514 bytes (without FCS)\n";
      return 2;
    }
  std::cout << "pvp: RFC 2544 zero-loss throughput (loss <= " << loss << " % over a trial of " << secs
            << " s; binary search from 10 GbE line rate down to " << resolution * 100
            << " % of the rate found)\ntester (capsule-vm --tester, the wire) and VMs (capsule-vm, interrupt-driven) "
               "on CPU "
            << kVmCpu << "; switch on CPU " << kSwitchCpu
            << "; uplink = DPDK net_vhost port to the tester for both\n"
               "capsule: busy-polling uplink dispatcher + a PMD thread per VM (interrupt-driven), MAC forwarding; "
               "ovs-dpdk: one PMD, in_port flows (as vsperf)\nsizes are frame bytes without FCS (60 = 64 B on the wire)\n\n";
  Table t({"path", "frame", "capsule Mpps", "ovs-dpdk Mpps", "ratio", "trials c/o"});
  double headline = NAN;
  for (std::string path : {"pvp", "pvvp"}) {
    if (!only.empty() && only != path) continue;
    for (uint32_t size : sizes) {
      Search c, o;
      {
        harness::TempDir tmp("capsule-bench-pvp");
        auto sw = CapsuleSwitch::create(tmp.path(), path == "pvvp");
        if (!sw) c.error = sw.error().message;
        else c = search(*sw.value(), tmp.path(), size, secs, loss, resolution, verbose);
      }
      if (!skip_ovs) {
        harness::TempDir tmp("capsule-bench-pvp");
        auto sw = OvsSwitch::create(tmp.path(), path == "pvvp");
        if (!sw) o.error = sw.error().message;
        else o = search(*sw.value(), tmp.path(), size, secs, loss, resolution, verbose);
      }
      if (!c.error.empty()) std::cerr << "capsule " << path << " " << size << ": " << c.error << "\n";
      if (!o.error.empty()) std::cerr << "ovs-dpdk " << path << " " << size << ": " << o.error << "\n";
      const double cm = c.error.empty() ? c.rate / 1e6 : NAN;
      const double om = o.error.empty() && !skip_ovs ? o.rate / 1e6 : NAN;
      const double ratio = om > 0 ? cm / om : NAN;
      t.row({path, std::to_string(size), fmt("%.3f", cm), fmt("%.3f", om), fmt("%.2f", ratio),
             std::to_string(c.trials) + "/" + std::to_string(o.trials)});
      if (path == "pvp" && size == sizes.front()) headline = ratio;
    }
  }
  t.print();
  std::cout << "PVP zero-loss ratio capsule/ovs-dpdk: " << fmt("%.2f", headline) << std::endl;
  return 0;
}

}  // namespace

CAPSULE_BENCH("pvp", "PVP/PVVP zero-loss throughput (RFC 2544), capsule vs OVS-DPDK", pvp,
              {{"--trial", BenchOption::Kind::kSeconds, "seconds per trial"},
               {"--loss", BenchOption::Kind::kSeconds, "loss allowed per trial, % (default 0.001)"},
               {"--resolution", BenchOption::Kind::kSeconds, "search stops within this % of the rate"},
               {"--path", BenchOption::Kind::kText, "one path only", {"pvp", "pvvp"}},
               {"--sizes", BenchOption::Kind::kList, "frame sizes without FCS (default 60,1514)"},
               {"--no-ovs", BenchOption::Kind::kFlag, "capsule only"},
               {"--verbose", BenchOption::Kind::kFlag, "print every trial"}},
              {"--trial", "0.1", "--resolution", "50", "--sizes", "60"});

}  // namespace capsule::bench
