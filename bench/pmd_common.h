// Shared pieces of the datapath benchmarks: emulated VMs (capsule-vm
// processes, optionally pinned), an OVS-DPDK instance started and stopped
// by the benchmark, thread CPU accounting.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "capsule/testkit.h"

namespace capsule::bench::pmd {

std::string make_tempdir(const std::string& prefix);  // under /tmp
void remove_tempdir(const std::string& dir);
int run(const std::string& cmd, std::string* out = nullptr);  // sh -c, stdout+stderr

// A capsule-vm process; killed and reaped on destruction.
class EmuVm {
 public:
  EmuVm(const std::string& dir, const std::string& name, const std::string& socket, const std::string& mac,
        std::vector<std::string> args, int cpu = -1);
  ~EmuVm();
  bool wait_ready(double secs = 20);
  pid_t pid() const { return proc_ ? proc_->pid() : 0; }
  pid_t vcpu_tid() const;
  std::map<std::string, uint64_t> counters() const;  // last report/final line
  std::string output() const;

 private:
  std::string out_;
  std::unique_ptr<testkit::ChildProcess> proc_;
};

// CPU time (user + system) of one thread, in ns.
uint64_t thread_cpu_ns(pid_t pid, pid_t tid);

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
  std::string dir_, env_, error_;
  bool ok_ = false;
  std::unique_ptr<testkit::ChildProcess> ovsdb_, vswitchd_;
};

}  // namespace capsule::bench::pmd
