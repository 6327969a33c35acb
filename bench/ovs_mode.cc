// capsule-bench ovs-mode: the study's E1 and E2 (bench/exp_study.cc) in OVS
// datapath mode (docs/ovs-mode.md), beside capsule mode and plain OVS-DPDK,
// for traffic the VM sends (from_vm) and traffic it receives (to_vm).
//
// The bed is exp_study's: CPU 1 is the host under test, a root domain of its
// own (a capsule cpuset partition) with a CFS hog on it; CPU 0 is the "wire"
// (generators, capsule's uplink dispatcher, ovs-vswitchd's main thread).
// 1514-byte frames; a VM's share Q of P is split Q/2 vCPU + Q/2 switching
// thread wherever the VM has a switching thread of its own.
//
// Systems:
//   capsule   capsule's datapath: each VM's PMD thread ("cpmd-<vm>") and vCPU
//             in the VM's SCHED_DEADLINE capsule. to_vm: a generator feeds
//             net_ring0, the dispatcher moves pointers into the VM's ring;
//             from_vm: the VM sends flat out, its PMD puts frames on the
//             uplink.
//   ovs-mode  stock ovs-vswitchd-dpdk with --dummy-numa placed as capsuled's
//             OVS mode places it: each VM's vhost port pinned to a PMD core
//             of its own (other_config:pmd-rxq-affinity, isolated), and that
//             OVS PMD thread in the VM's capsule next to its vCPU. The
//             uplinks (net_null ports that make a frame whenever polled) sit
//             on a shared PMD, core 1, on CPU 1 under CFS beside the hog, as
//             capsuled leaves it today (--uplink-pct N gives it a
//             reservation of its own instead). from_vm: OpenFlow
//             in_port=vmN -> a net_null sink; to_vm: upN -> vmN.
//   ovs-dpdk  the same OVS with every port on one PMD (core 1) on CPU 1
//             under CFS; each vCPU reserved Q/2 as in the other systems.
// Both OVS systems run with other_config:pmd-maxsleep=1000 (what
// capsule-service --with-ovs sets): OVS-DPDK has no rx interrupts, and an
// OVS PMD that spins while idle inside a capsule on the core its VM's vCPU
// runs on risks the shared-core trap (DESIGN.md). Open (docs/results.md, OVS
// mode): with or without it, OVS's from-VM path carried only ~10-27 kpps
// in both OVS systems, whatever the budget.
// VM 1's throughput is what the guest counts itself (tx_packets,
// rx_packets), the same for every system.
// The placement of ovs-mode is applied here (the same OVS keys, the same
// reservation of the same thread) rather than by capsuled, because capsuled
// runs OVS PMDs under global EDF and the study's bed is one partitioned core
// (capsuled's OVS mode has no partitioned admission yet).
//
// What stays outside the VM's capsule in OVS mode: the PMD that polls a
// queue does the work of what arrives there. from_vm traffic is dequeued,
// classified and sent by the VM's own PMD: inside. to_vm traffic from the
// uplink is switched and copied into the VM's ring by the uplink's PMD:
// outside, shared with every other VM's incoming traffic.
//
// E1: one VM, Q = 10..90 % of P. E2: VM 1 (Q1) and a flooding neighbour (S =
// 10..40 %), each receiving (to_vm) or sending (from_vm) its own stream;
// drop = 1 - T(S max) / T(S min). Last line:
//   OVS mode: E1 R^2 X, E2 worst drop Y % (from VM) Z % (to VM)
// X is OVS mode's from_vm fit (the direction inside the capsule); every
// system's fits and drops are printed above it.
#include <dirent.h>
#include <pthread.h>
#include <rte_ring.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "bench.h"
#include "capsule/pmd/datapath.h"
#include "capsule/rsv/partition.h"
#include "capsule/rsv/reservation.h"
#include "pmd_common.h"

namespace capsule::bench {
namespace {

using namespace std::chrono_literals;
using namespace capsule::bench::pmd;

constexpr int kWireCpu = 0, kTestCpu = 1;
constexpr uint32_t kFrame = 1514;
constexpr const char* kMac1 = "02:00:00:00:00:01";
constexpr const char* kMac2 = "02:00:00:00:00:02";
constexpr const char* kMacWire = "02:00:00:00:00:fe";
// OVS's fake cores: 0 main thread and EAL, 1 the shared (uplink) PMD, 2 and
// 3 the PMDs of VM 1 and VM 2 in ovs-mode.
constexpr int kSharedCore = 1;
int vm_core(int vm) { return 1 + vm; }

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

void pin_self(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

std::vector<int> int_list(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');)
    if (!x.empty()) v.push_back(std::stoi(x));
  return v;
}
std::vector<std::string> word_list(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');)
    if (!x.empty()) v.push_back(x);
  return v;
}

// The rest of the host's work on the core under test: nobody gets idle time
// for free.
class Hog {
 public:
  Hog() {
    thread_ = std::thread([this] {
      pin_self(kTestCpu);
      pthread_setname_np(pthread_self(), "ovsm-hog");
      volatile uint64_t x = 0;
      while (!stop_.load(std::memory_order_relaxed)) x = x + 1;
    });
  }
  ~Hog() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

enum class Dir { kFromVm, kToVm };
const char* to_string(Dir d) { return d == Dir::kFromVm ? "from_vm" : "to_vm"; }

// The emulated guest: a flat-out sender towards the wire, or a receiver
// (guest-kernel-like: blocks on its rx interrupt when idle).
std::vector<std::string> guest_args(Dir d) {
  if (d == Dir::kFromVm) return {"--mode", "tx", "--rate", "0", "--size", std::to_string(kFrame), "--dst", kMacWire};
  return {"--mode", "count", "--queue-size", "1024"};
}

// VM 1's throughput is what the guest itself counts (the same for every
// system), over the window between two of its reports (their own
// timestamps): frames it got onto its tx ring (from_vm: the switch took
// them, the ring being bounded) or received (to_vm).
const char* guest_counter(Dir d) { return d == Dir::kFromVm ? "tx_packets" : "rx_packets"; }

// `key` per second over at least `secs`, between two of the guest's reports
// (200 ms apart): a later report is waited for, never read twice.
double guest_rate(const EmuVm& vm, const std::string& key, double secs) {
  const auto c0 = vm.counters();
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  auto c1 = vm.counters();
  const auto t0 = c0.count("elapsed_ms") ? c0.at("elapsed_ms") : 0;
  testkit::wait_until(
      [&] {
        c1 = vm.counters();
        return c1.count("elapsed_ms") && c1.at("elapsed_ms") > t0;
      },
      2s);
  if (!c0.count(key) || !c1.count(key) || !c1.count("elapsed_ms") || c1.at("elapsed_ms") <= t0) return 0;
  return double(c1.at(key) - c0.at(key)) * 1000.0 / double(c1.at("elapsed_ms") - t0);
}

rsv::VmReservationSpec spec(const std::string& name, pid_t vcpu, pid_t switching, int period_ms, int pct) {
  rsv::VmReservationSpec s;
  s.name = name;
  s.period = std::chrono::milliseconds(period_ms);
  const auto whole = std::chrono::microseconds(int64_t(period_ms) * pct * 10);  // pct % of P
  if (switching)
    s.threads = {{switching, whole / 2, kTestCpu, "pmd"}, {vcpu, whole / 2, kTestCpu, "vcpu0"}};
  else
    s.threads = {{vcpu, whole / 2, kTestCpu, "vcpu0"}};  // its switch is shared: half a capsule, as the others
  return s;
}

Result<std::unique_ptr<rsv::VmReservation>> reserve(const rsv::VmReservationSpec& s, rsv::PartitionSet& parts) {
  auto r = rsv::VmReservation::apply(s, &parts);
  // Bandwidth just released stays booked up to a period: retry a little.
  for (int attempt = 0; !r && attempt < 5; ++attempt) {
    std::this_thread::sleep_for(300ms);
    r = rsv::VmReservation::apply(s, &parts);
  }
  return r;
}

// One system and direction with VM 1 and, for E2, a neighbour.
class Rig {
 public:
  virtual ~Rig() = default;
  // VM 1's kpps in its direction at VM 1's share q1 and the neighbour's s
  // (0: no neighbour capsule) of period_ms.
  virtual Result<double> measure(int period_ms, int q1, int s, double warm, double secs) = 0;
};

// ---- capsule's datapath ----------------------------------------------------

class CapsuleRig : public Rig {
 public:
  static Result<std::unique_ptr<Rig>> create(Datapath& dp, rsv::PartitionSet& parts, const std::string& dir, Dir d,
                                             bool neighbour) {
    auto rig = std::unique_ptr<CapsuleRig>(new CapsuleRig(dp, parts, d));
    rig->vm1_ = std::make_unique<EmuVm>(dir, "c-v1", dir + "/v1.sock", kMac1, guest_args(d), kTestCpu);
    if (neighbour) rig->vm2_ = std::make_unique<EmuVm>(dir, "c-v2", dir + "/v2.sock", kMac2, guest_args(d), kTestCpu);
    if (!rig->vm1_->wait_ready()) return Error{"VM 1 did not come up: " + rig->vm1_->output()};
    if (rig->vm2_ && !rig->vm2_->wait_ready()) return Error{"the neighbour did not come up: " + rig->vm2_->output()};
    if (d == Dir::kToVm) {
      std::vector<std::string> dsts{kMac1};
      if (neighbour) dsts.push_back(kMac2);
      rig->feeder_ = std::make_unique<RingFeeder>(rte_ring_lookup("ETH_RXTX0_net_ring0"), dsts, kFrame, kWireCpu,
                                                  kMacWire);
      if (!rig->feeder_->ok()) return Error{"cannot feed net_ring0"};
    }
    // A VM replaced on its socket takes a moment before frames flow: wait
    // for them, not a fixed time.
    const uint64_t before = rig->count();
    if (!testkit::wait_until([&] { return rig->count() > before + 1000; }, 20s))
      return Error{std::string("VM 1 is up but no frames move ") + to_string(d)};
    return std::unique_ptr<Rig>(std::move(rig));
  }

  Result<double> measure(int period_ms, int q1, int s, double warm, double secs) override {
    auto a = reserve(spec("ovsm-c-v1", vm1_->vcpu_tid(), dp_.pmd_tid("v1").value(), period_ms, q1), parts_);
    if (!a) return a.error();
    std::unique_ptr<rsv::VmReservation> b;
    if (vm2_ && s > 0) {
      auto r = reserve(spec("ovsm-c-v2", vm2_->vcpu_tid(), dp_.pmd_tid("v2").value(), period_ms, s), parts_);
      if (!r) return r.error();
      b = std::move(r.value());
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(warm));
    return guest_rate(*vm1_, guest_counter(dir_), secs) / 1e3;
  }

  ~CapsuleRig() override {
    feeder_.reset();
    vm1_.reset();
    vm2_.reset();
  }

 private:
  CapsuleRig(Datapath& dp, rsv::PartitionSet& parts, Dir d) : dp_(dp), parts_(parts), dir_(d) {}
  uint64_t count() const {
    auto s = dp_.stats("v1");
    return !s ? 0 : dir_ == Dir::kFromVm ? s->from_vm_packets : s->to_vm_packets;
  }
  Datapath& dp_;
  rsv::PartitionSet& parts_;
  Dir dir_;
  std::unique_ptr<EmuVm> vm1_, vm2_;
  std::unique_ptr<RingFeeder> feeder_;
};

// ---- OVS-DPDK (ovs-mode and plain) ----------------------------------------

// ovs-vswitchd-dpdk with fake cores 0-3 (--dummy-numa: no PMD is pinned by
// OVS, each inherits the main thread's CPU 0 until moved), PMDs on cores
// 1-3, bridge br0, in a directory of its own. Stopped on destruction.
class Ovs {
 public:
  explicit Ovs(int pmd_maxsleep_us) {
    dir_ = tmp_.path();
    env_ = "OVS_RUNDIR=" + dir_ + " OVS_LOGDIR=" + dir_ + " OVS_DBDIR=" + dir_ + " OVS_SYSCONFDIR=" + dir_ + " ";
    const std::string vswitchd = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
    if (::access(vswitchd.c_str(), X_OK) != 0) {
      error_ = vswitchd + " is missing (package openvswitch-switch-dpdk)";
      return;
    }
    std::string out;
    if (run("ovsdb-tool create " + dir_ + "/conf.db /usr/share/openvswitch/vswitch.ovsschema", &out) != 0) {
      error_ = "ovsdb-tool create: " + out;
      return;
    }
    const std::vector<std::string> env = {"/usr/bin/env", "OVS_RUNDIR=" + dir_, "OVS_LOGDIR=" + dir_,
                                          "OVS_DBDIR=" + dir_, "OVS_SYSCONFDIR=" + dir_};
    auto with_env = [&](std::vector<std::string> argv) {
      argv.insert(argv.begin(), env.begin(), env.end());
      return argv;
    };
    ovsdb_ = testkit::ChildProcess::spawn(
        with_env({"/usr/sbin/ovsdb-server", dir_ + "/conf.db", "--remote=punix:" + dir_ + "/db.sock",
                  "--unixctl=" + dir_ + "/ovsdb.ctl", "--log-file=" + dir_ + "/ovsdb.log", "-vconsole:off"}),
        dir_ + "/ovsdb.out");
    if (!testkit::wait_until([&] { return ::access((dir_ + "/db.sock").c_str(), F_OK) == 0; }, 10s)) {
      error_ = "ovsdb-server did not start";
      return;
    }
    int rc = 0;
    vsctl("--no-wait init", &rc);
    vsctl("--no-wait set Open_vSwitch . other_config:dpdk-init=true "
          "other_config:dpdk-extra=\"--no-pci --in-memory --file-prefix=" + prefix() + "\" "
          "other_config:dpdk-socket-mem=256 other_config:dpdk-socket-limit=256 other_config:dpdk-lcore-mask=0x1 "
          "other_config:pmd-cpu-mask=0xe other_config:pmd-maxsleep=" + std::to_string(pmd_maxsleep_us),
          &rc);
    if (rc != 0) {
      error_ = "cannot configure OVS";
      return;
    }
    vswitchd_ = testkit::ChildProcess::spawn(
        with_env({vswitchd, "unix:" + dir_ + "/db.sock", "--dummy-numa", "0,0,0,0", "--unixctl=" + dir_ + "/vswitchd.ctl",
                  "--log-file=" + dir_ + "/vswitchd.log", "-vconsole:off"}),
        dir_ + "/vswitchd.out");
    if (!testkit::wait_until(
            [&] { return vsctl("--no-wait get Open_vSwitch . dpdk_initialized").find("true") != std::string::npos; },
            60s)) {
      error_ = "ovs-vswitchd-dpdk did not initialise DPDK (see " + dir_ + "/vswitchd.log)";
      return;
    }
    vsctl("add-br br0 -- set bridge br0 datapath_type=netdev", &rc);
    if (rc != 0) {
      error_ = "cannot add bridge br0";
      return;
    }
    run(env_ + "ovs-ofctl del-flows br0");
  }
  ~Ovs() {
    if (vswitchd_) {
      run(env_ + "ovs-appctl -t " + dir_ + "/vswitchd.ctl exit");
      testkit::wait_until([&] { return !vswitchd_->running(); }, 10s);
      vswitchd_->terminate(3000ms);
    }
    if (ovsdb_) ovsdb_->terminate(3000ms);
    run("rm -rf /var/run/dpdk/" + prefix());
  }
  const std::string& error() const { return error_; }
  std::string vsctl(const std::string& args, int* rc = nullptr) {
    std::string out;
    const int r = run(env_ + "ovs-vsctl --db=unix:" + dir_ + "/db.sock --timeout=20 " + args, &out);
    if (rc) *rc = r;
    return out;
  }
  // A port whose rx queues are pinned to PMD core `core` (queues 0-7, as
  // capsuled writes them).
  bool add_port(const std::string& name, const std::string& settings, int core) {
    std::string aff;
    for (int q = 0; q < 8; ++q) aff += (q ? "," : "") + std::to_string(q) + ":" + std::to_string(core);
    int rc = 0;
    vsctl("add-port br0 " + name + " -- set Interface " + name + " " + settings + " other_config:pmd-rxq-affinity=" +
              aff,
          &rc);
    return rc == 0;
  }
  bool flow(const std::string& f) { return run(env_ + "ovs-ofctl add-flow br0 '" + f + "'") == 0; }
  // Where the PMDs' time went (dpif-netdev/pmd-stats-show), for the log.
  std::string pmd_stats() {
    std::string out, kept;
    run(env_ + "ovs-appctl -t " + dir_ + "/vswitchd.ctl dpif-netdev/pmd-stats-show", &out);
    std::stringstream in(out);
    for (std::string line; std::getline(in, line);)
      if (line.find("pmd thread") != std::string::npos || line.find("packets received") != std::string::npos ||
          line.find("upcall") != std::string::npos || line.find("cycles per packet") != std::string::npos ||
          line.find("idle cycles") != std::string::npos || line.find("processing cycles") != std::string::npos)
        kept += line + "\n";
    return kept;
  }
  // "rx pkts" (what OVS took from the port) or "tx pkts" (what it delivered).
  uint64_t port_packets(const std::string& port, const std::string& key) {
    std::string out;
    run(env_ + "ovs-ofctl dump-ports br0 " + port, &out);
    const auto p = out.find(key + " pkts=");
    return p == std::string::npos ? 0 : std::strtoull(out.c_str() + p + key.size() + 6, nullptr, 10);
  }
  // The PMD thread of each core ("pmd-c<core>/id:<n>").
  std::map<int, pid_t> pmds() const {
    std::map<int, pid_t> m;
    if (!vswitchd_) return m;
    const std::string base = "/proc/" + std::to_string(vswitchd_->pid()) + "/task";
    if (DIR* d = opendir(base.c_str())) {
      while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::ifstream in(base + "/" + e->d_name + "/comm");
        std::string comm;
        std::getline(in, comm);
        if (comm.rfind("pmd-c", 0) == 0) m[std::atoi(comm.c_str() + 5)] = pid_t(std::atoi(e->d_name));
      }
      closedir(d);
    }
    return m;
  }

 private:
  std::string prefix() const { return "capsule-ovsm-" + std::to_string(getpid()); }
  harness::TempDir tmp_{"capsule-ovsm"};
  std::string dir_, env_, error_;
  std::unique_ptr<testkit::ChildProcess> ovsdb_, vswitchd_;
};

void set_affinity(pid_t tid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(tid, sizeof set, &set);
}

class OvsRig : public Rig {
 public:
  // `isolated`: ovs-mode (a PMD core per VM, in its capsule); else plain
  // OVS-DPDK (every port on core 1's PMD).
  static Result<std::unique_ptr<Rig>> create(rsv::PartitionSet& parts, const std::string& dir, Dir d, bool neighbour,
                                             bool isolated, int uplink_pct, int pmd_maxsleep) {
    auto rig = std::unique_ptr<OvsRig>(new OvsRig(parts, d, isolated, uplink_pct));
    rig->ovs_ = std::make_unique<Ovs>(pmd_maxsleep);
    Ovs& ovs = *rig->ovs_;
    if (!ovs.error().empty()) return Error{"OVS-DPDK: " + ovs.error()};
    const std::string tag = isolated ? "om" : "od";
    const int vms = neighbour ? 2 : 1;
    if (d == Dir::kFromVm &&
        !ovs.add_port("sink", "type=dpdk options:dpdk-devargs=net_null9,no-rx=1,size=" + std::to_string(kFrame),
                      kSharedCore))
      return Error{"OVS: cannot add the net_null sink"};
    for (int v = 1; v <= vms; ++v) {
      const std::string vm = "vm" + std::to_string(v), sock = dir + "/" + tag + "-" + vm + ".sock";
      auto e = std::make_unique<EmuVm>(dir, tag + "-" + vm, sock, v == 1 ? kMac1 : kMac2, guest_args(d), kTestCpu);
      if (!ovs.add_port(vm, "type=dpdkvhostuserclient options:vhost-server-path=" + sock,
                        isolated ? vm_core(v) : kSharedCore))
        return Error{"OVS: cannot add port " + vm};
      if (!e->wait_ready()) return Error{"VM " + vm + " did not come up under OVS: " + e->output()};
      if (d == Dir::kToVm) {
        const std::string up = "up" + std::to_string(v);
        if (!ovs.add_port(up, "type=dpdk options:dpdk-devargs=net_null" + std::to_string(v) +
                                  ",size=" + std::to_string(kFrame),
                          kSharedCore))
          return Error{"OVS: cannot add the net_null uplink " + up};
        ovs.flow("in_port=" + up + ",actions=output:" + vm);
      } else {
        ovs.flow("in_port=" + vm + ",actions=output:sink");
      }
      (v == 1 ? rig->vm1_ : rig->vm2_) = std::move(e);
    }
    const uint64_t before = rig->count();
    if (!testkit::wait_until([&] { return rig->count() > before + 1000; }, 20s))
      return Error{std::string("VM 1 is up but no frames move ") + to_string(d) + " through OVS"};
    return std::unique_ptr<Rig>(std::move(rig));
  }

  Result<double> measure(int period_ms, int q1, int s, double warm, double secs) override {
    // PMD threads are looked up per point: OVS replaces one whose ports
    // change; the shared one goes to the core under test, under CFS.
    const auto pmds = ovs_->pmds();
    auto pmd = [&](int core) -> pid_t {
      auto it = pmds.find(core);
      return it == pmds.end() ? 0 : it->second;
    };
    if (!pmd(kSharedCore)) return Error{"OVS has no PMD thread on core 1"};
    std::unique_ptr<rsv::VmReservation> up;
    if (uplink_pct_ > 0) {
      rsv::VmReservationSpec u;
      u.name = "ovsm-uplink";
      u.period = std::chrono::milliseconds(period_ms);
      u.threads = {{pmd(kSharedCore), std::chrono::microseconds(int64_t(period_ms) * uplink_pct_ * 10), kTestCpu, "pmd"}};
      auto r = reserve(u, parts_);
      if (!r) return r.error();
      up = std::move(r.value());
    } else {
      set_affinity(pmd(kSharedCore), kTestCpu);
    }
    if (isolated_ && (!pmd(vm_core(1)) || (vm2_ && !pmd(vm_core(2)))))
      return Error{"OVS has no PMD thread on a VM's core"};
    auto a = reserve(spec("ovsm-o-v1", vm1_->vcpu_tid(), isolated_ ? pmd(vm_core(1)) : 0, period_ms, q1), parts_);
    if (!a) return a.error();
    std::unique_ptr<rsv::VmReservation> b;
    if (vm2_ && s > 0) {
      auto r = reserve(spec("ovsm-o-v2", vm2_->vcpu_tid(), isolated_ ? pmd(vm_core(2)) : 0, period_ms, s), parts_);
      if (!r) return r.error();
      b = std::move(r.value());
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(warm));
    return guest_rate(*vm1_, guest_counter(dir_), secs) / 1e3;
  }

  ~OvsRig() override {
    // What limited VM 1, for the log: OVS's PMDs and the guest's tx stalls
    // (its tx ring full: the switch did not take its frames fast enough).
    std::cerr << "ovs-mode: " << (isolated_ ? "ovs-mode" : "ovs-dpdk") << " " << to_string(dir_)
              << ": VM 1 counters tx_packets=" << vm1_->counters()["tx_packets"]
              << " tx_stalls=" << vm1_->counters()["tx_stalls"] << " rx_packets=" << vm1_->counters()["rx_packets"]
              << "; OVS PMDs:\n" << ovs_->pmd_stats();
    vm1_.reset();
    vm2_.reset();
    ovs_.reset();
  }

 private:
  OvsRig(rsv::PartitionSet& parts, Dir d, bool isolated, int uplink_pct)
      : parts_(parts), dir_(d), isolated_(isolated), uplink_pct_(uplink_pct) {}
  // What OVS took from VM 1 (from_vm) or delivered into it (to_vm).
  uint64_t count() { return ovs_->port_packets("vm1", dir_ == Dir::kFromVm ? "rx" : "tx"); }
  rsv::PartitionSet& parts_;
  Dir dir_;
  bool isolated_;
  int uplink_pct_;
  std::unique_ptr<Ovs> ovs_;
  std::unique_ptr<EmuVm> vm1_, vm2_;
};

// ---- the bed and the experiments -------------------------------------------

struct Bed {
  harness::TempDir tmp{"capsule-ovsm"};  // outlives the VMs
  const std::string dir = tmp.path();
  rsv::PartitionSet parts;
  std::unique_ptr<Datapath> dp;
  std::unique_ptr<Hog> hog;
  bool partitioned = false;

  Status start() {
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    if (dir.empty()) return Error{"cannot create a temporary directory"};
    if (auto r = parts.acquire(kTestCpu); !r) return r.error();
    partitioned = true;
    DatapathConfig cfg;
    cfg.eal.program = "capsule-bench";
    cfg.max_vms = 2;
    // One ring for the uplink's rx and tx: what the VMs send comes back to
    // the dispatcher (on the wire CPU), which drops it (no VM has the
    // wire's MAC); what the generator feeds goes to the VMs.
    cfg.uplink_devargs = "net_ring0";
    cfg.dispatcher_poll.policy = capsule::pmd::PollPolicy::kBusy;
    cfg.dispatcher_cpu = kWireCpu;
    auto d = Datapath::create(cfg);
    if (!d) return d.error();
    dp = std::move(d.value());
    for (auto [name, mac] : {std::pair{"v1", kMac1}, std::pair{"v2", kMac2}}) {
      VmConfig v;
      v.name = name;
      v.port.socket_path = dir + "/" + name + ".sock";
      v.mac = MacAddr::parse(mac).value();
      v.pin_cpu = kTestCpu;
      if (Status st = dp->add_vm(v); !st) return st;
    }
    hog = std::make_unique<Hog>();
    // This thread and what it starts from now on (ovs-vswitchd and its
    // PMDs, until moved) are on the wire's CPU.
    pin_self(kWireCpu);
    return {};
  }
  ~Bed() {
    hog.reset();
    dp.reset();
    rsv::VmReservation::release_all();
    if (partitioned)
      if (Status st = parts.release(kTestCpu); !st) std::cerr << "ovs-mode: " << st.error().message << "\n";
  }
};

Result<std::unique_ptr<Rig>> make_rig(Bed& bed, const std::string& sys, Dir d, bool neighbour, int uplink_pct,
                                      int pmd_maxsleep) {
  if (sys == "capsule") return CapsuleRig::create(*bed.dp, bed.parts, bed.dir, d, neighbour);
  return OvsRig::create(bed.parts, bed.dir, d, neighbour, sys == "ovs-mode", uplink_pct, pmd_maxsleep);
}

int ovs_mode(const std::vector<std::string>& args) {
  const auto systems = word_list(arg(args, "--systems", "capsule,ovs-mode,ovs-dpdk"));
  std::vector<Dir> dirs;
  for (const auto& w : word_list(arg(args, "--directions", "from_vm,to_vm")))
    dirs.push_back(w == "from_vm" ? Dir::kFromVm : Dir::kToVm);
  const auto exps = word_list(arg(args, "--experiments", "e1,e2"));
  const bool e1 = std::find(exps.begin(), exps.end(), "e1") != exps.end();
  const bool e2 = std::find(exps.begin(), exps.end(), "e2") != exps.end();
  const int period = std::stoi(arg(args, "--period", "100"));
  const auto qs = int_list(arg(args, "--q", "10,30,50,70,90"));
  const auto q1s = int_list(arg(args, "--q1", "30"));
  const auto ss = int_list(arg(args, "--shares", "10,40"));
  const int runs = std::stoi(arg(args, "--runs", "3"));
  const double warm = std::stod(arg(args, "--warm", "0.4"));
  const double secs = std::stod(arg(args, "--seconds", "1.2"));
  const int uplink_pct = std::stoi(arg(args, "--uplink-pct", "0"));
  const int pmd_maxsleep = std::stoi(arg(args, "--pmd-maxsleep", "1000"));
  const std::string csv_path = arg(args, "--csv", "");

  Bed bed;
  if (Status st = bed.start(); !st) {
    std::cerr << "ovs-mode: " << st.error().message << "\n";
    return 1;
  }
  std::ofstream csv;
  if (!csv_path.empty()) {
    csv.open(csv_path);
    csv << "experiment,system,direction,period_ms,q1_pct,s_pct,run,kpps\n";
  }
  std::cout << "ovs-mode: 1514-byte frames; VMs on CPU " << kTestCpu << " (a partition, with a CFS hog), P = " << period
            << " ms; the wire on CPU " << kWireCpu << "; " << runs << " runs of " << secs << " s per point; OVS's "
            << "uplink PMD " << (uplink_pct > 0 ? "in a reservation of " + std::to_string(uplink_pct) + " %" : "under CFS")
            << " on CPU " << kTestCpu << "; OVS pmd-maxsleep " << pmd_maxsleep << " us\n";
  // (experiment, system, direction, q1, s) -> kpps of every run
  using Key = std::tuple<std::string, std::string, std::string, int, int>;
  std::map<Key, std::vector<double>> res;
  bool failed = false;
  auto sweep = [&](const std::string& exp, const std::string& sys, Dir d) -> bool {
    const bool neighbour = exp == "e2";
    auto rig = make_rig(bed, sys, d, neighbour, uplink_pct, pmd_maxsleep);
    if (!rig) {
      std::cerr << "ovs-mode: " << exp << " " << sys << " " << to_string(d) << ": " << rig.error().message << "\n";
      return false;
    }
    std::vector<std::pair<int, int>> points;
    if (neighbour)
      for (int q1 : q1s)
        for (int s : ss) points.emplace_back(q1, s);
    else
      for (int q : qs) points.emplace_back(q, 0);
    for (int run = 0; run < runs && !g_stop; ++run) {
      for (auto [q1, s] : points) {
        if (g_stop) break;
        auto k = rig.value()->measure(period, q1, s, warm, secs);
        if (!k) {
          std::cerr << "ovs-mode: " << exp << " " << sys << " " << to_string(d) << " Q=" << q1 << " S=" << s << ": "
                    << k.error().message << "\n";
          failed = true;
          continue;
        }
        if (k.value() <= 0) {  // every budget moves frames: none is a broken set-up
          std::cerr << "ovs-mode: " << exp << " " << sys << " " << to_string(d) << " Q=" << q1 << " S=" << s
                    << ": VM 1's traffic stopped\n";
          failed = true;
        }
        res[{exp, sys, to_string(d), q1, s}].push_back(k.value());
        if (csv.is_open())
          csv << exp << "," << sys << "," << to_string(d) << "," << period << "," << q1 << "," << s << "," << run << ","
              << fmt("%.2f", k.value()) << std::endl;
      }
      std::cerr << "ovs-mode: " << exp << " " << sys << " " << to_string(d) << " run " << run + 1 << "/" << runs
                << " done\n";
    }
    return true;
  };
  for (const auto& exp : std::vector<std::string>{"e1", "e2"}) {
    if ((exp == "e1" && !e1) || (exp == "e2" && !e2)) continue;
    for (const auto& sys : systems)
      for (Dir d : dirs) {
        if (g_stop) break;
        if (!sweep(exp, sys, d)) return 1;
      }
  }

  Table t({"exp", "system", "direction", "Q1 %", "S %", "median kpps", "min", "max"});
  for (const auto& [k, v] : res)
    t.row({std::get<0>(k), std::get<1>(k), std::get<2>(k), std::to_string(std::get<3>(k)), std::to_string(std::get<4>(k)),
           fmt("%.1f", median(v)), fmt("%.1f", *std::min_element(v.begin(), v.end())),
           fmt("%.1f", *std::max_element(v.begin(), v.end()))});
  t.print();
  std::map<std::pair<std::string, std::string>, double> r2, drop;  // (system, direction)
  for (const auto& sys : systems)
    for (Dir d : dirs) {
      const std::string dn = to_string(d);
      if (e1) {
        std::vector<double> x, y;
        for (int q : qs)
          if (auto it = res.find({"e1", sys, dn, q, 0}); it != res.end()) {
            x.push_back(q);
            y.push_back(median(it->second));
          }
        r2[{sys, dn}] = r_squared(x, y);
        std::cout << "E1 fit " << sys << " " << dn << ": R^2 " << fmt("%.4f", r2[{sys, dn}]) << "\n";
      }
      if (e2 && !ss.empty()) {
        const int lo = *std::min_element(ss.begin(), ss.end()), hi = *std::max_element(ss.begin(), ss.end());
        double worst = NAN;
        for (int q1 : q1s) {
          auto a = res.find({"e2", sys, dn, q1, lo}), b = res.find({"e2", sys, dn, q1, hi});
          if (a == res.end() || b == res.end()) continue;
          const double dr = 100.0 * (1.0 - median(b->second) / median(a->second));
          if (!(dr <= worst)) worst = dr;
        }
        drop[{sys, dn}] = worst;
        std::cout << "E2 drop " << sys << " " << dn << " (S " << lo << " -> " << hi << " %): " << fmt("%.1f", worst)
                  << " %\n";
      }
    }
  if (failed) {
    std::cerr << "ovs-mode: a point failed (above); no summary line\n";
    return 1;
  }
  auto get = [](const auto& m, const char* dir, const char* f) {
    auto it = m.find({std::string("ovs-mode"), std::string(dir)});
    return it == m.end() ? std::string("n/a") : fmt(f, it->second);
  };
  std::cout << "OVS mode: E1 R^2 " << get(r2, "from_vm", "%.4f") << ", E2 worst drop " << get(drop, "from_vm", "%.1f")
            << " % (from VM) " << get(drop, "to_vm", "%.1f") << " % (to VM)" << std::endl;
  return g_stop ? 130 : 0;
}

}  // namespace

using K = BenchOption::Kind;
CAPSULE_BENCH("ovs-mode",
              "E1/E2 in OVS datapath mode beside capsule mode and plain OVS-DPDK, traffic from and to the VM (CSV)",
              ovs_mode,
              {{"--systems", K::kText, "systems, in order", {"capsule", "ovs-mode", "ovs-dpdk"}},
               {"--directions", K::kText, "traffic the VM sends or receives", {"from_vm", "to_vm"}},
               {"--experiments", K::kText, "E1 (own budget) and/or E2 (flooding neighbour)", {"e1", "e2"}},
               {"--period", K::kCount, "period P in ms"},
               {"--q", K::kList, "E1: VM budgets Q in % of P"},
               {"--q1", K::kList, "E2: VM 1's shares in %"},
               {"--shares", K::kList, "E2: the neighbour's shares in %"},
               {"--runs", K::kCount, "runs of every point"},
               {"--warm", K::kSeconds, "seconds before a window"},
               {"--seconds", K::kSeconds, "measurement window"},
               {"--pmd-maxsleep", K::kCount, "OVS's other_config:pmd-maxsleep in us (0: idle PMDs spin)"},
               {"--uplink-pct", K::kCount, "ovs-mode: the uplink PMD's own reservation in % of P (0: CFS)"},
               {"--csv", K::kText, "write every run's point here"}},
              {"--runs", "1", "--warm", "0.1", "--seconds", "0.4", "--q", "10,90", "--q1", "30", "--shares", "10,40"});

}  // namespace capsule::bench
