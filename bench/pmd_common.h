// Shared pieces of the datapath benchmarks: emulated VMs (capsule-vm
// processes, optionally pinned), an OVS-DPDK instance started and stopped
// by the benchmark, thread CPU accounting.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <rte_mbuf.h>
#include <rte_ring.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "capsule/harness.h"
#include "capsule/testkit.h"
#include "capsule/vm/peer.h"
#include "capsule/vm/ring_feeder.h"

#include "capsule/pmd/datapath.h"

namespace capsule::bench::pmd {

using capsule::pmd::Datapath;
using capsule::pmd::DatapathConfig;
using capsule::pmd::MacAddr;
using capsule::pmd::PollPolicy;
using capsule::pmd::VmConfig;
using namespace std::chrono_literals;

// The emulated VMs' MACs, and one "behind the uplink".
inline constexpr const char* kMacA = "02:00:00:00:00:0a";
inline constexpr const char* kMacB = "02:00:00:00:00:0b";
inline constexpr const char* kMacFar = "02:00:00:00:00:ff";

// Count per second of `count` over `secs`, after `warm` seconds.
double rate_per_second(const std::function<uint64_t()>& count, double warm, double secs);
inline int run(const std::string& cmd, std::string* out = nullptr) { return capsule::vm::run_shell(cmd, out); }

// A capsule-vm process that reports its counters every 200 ms; its output
// lives in `dir`. cpu >= 0 pins it there.
class EmuVm : public capsule::vm::VmPeer {
 public:
  EmuVm(const std::string& dir, const std::string& name, const std::string& socket, const std::string& mac,
        std::vector<std::string> args, int cpu = -1);
  bool wait_ready(double secs = 20) { return VmPeer::wait_ready(std::chrono::milliseconds(int(secs * 1000))); }
};

using capsule::vm::thread_cpu_ns;

// The generator "on the wire" (tools/capsule-vm/ring_feeder.h), shared with
// capsule-calibrate.
using capsule::vm::RingFeeder;

// OVS-DPDK in a directory of its own: ovsdb-server + ovs-vswitchd-dpdk with
// one PMD on `pmd_cpu`, bridge br0 (netdev). Stopped on destruction.
class OvsDpdk {
 public:
  struct Options {
    int pmd_cpu = 1;
    int pmd_maxsleep_us = -1;  // -1: OVS default
  };
  explicit OvsDpdk(Options o);
  ~OvsDpdk();
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  // vhost-user client port (the VM serves the socket).
  bool add_vhost_port(const std::string& name, const std::string& socket);
  bool add_dpdk_port(const std::string& name, const std::string& devargs);
  bool flow(const std::string& spec);  // ovs-ofctl add-flow br0 SPEC
  // Live port counters from ovs-ofctl dump-ports ("rx pkts", "tx pkts").
  uint64_t port_tx_packets(const std::string& port);
  uint64_t port_rx_packets(const std::string& port);
  void clear_pmd_stats();
  double pmd_cycles_per_packet();  // avg processing cycles per packet
  std::vector<pid_t> pmd_tids() const;
  pid_t vswitchd_pid() const { return vswitchd_ ? vswitchd_->pid() : 0; }
  std::string vsctl(const std::string& args, int* rc = nullptr);

 private:
  harness::TempDir tmp_{"capsule-ovs"};  // removed after the processes stop
  std::string dir_, env_, error_;
  bool ok_ = false;
  std::unique_ptr<testkit::ChildProcess> ovsdb_, vswitchd_;
};

}  // namespace capsule::bench::pmd
