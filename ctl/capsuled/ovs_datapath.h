// OVS datapath mode (Host:datapath_type=ovs, docs/ovs-mode.md): stock
// OVS-DPDK forwards the VMs' packets under the controller's OpenFlow
// pipeline; capsuled writes each VM's ports, policers and rx-queue affinity
// into OVS's Open_vSwitch database and puts the OVS PMD thread that polls
// the VM's queues into the VM's capsule.
//
// Per VM: every port is a dpdkvhostuserclient Interface (options:
// vhost-server-path = the Capsule port's vhost_path) on the configured
// bridge, created by capsule or an operator's of the same name and path;
// other_config:pmd-rxq-affinity pins its rx queues to a PMD core of the VM's
// own (one core of Host other_config:ovs-pmd-cores per VM; OVS isolates a
// PMD with pinned queues, so that thread polls nothing else); Capsule
// Port:qos becomes OVS Port:qos (egress-policer, trtcm-policer: what OVS
// sends to the VM) and ingress_policing_rate/burst OVS's (what OVS receives
// from the VM). pmd_tid() is that core's thread in ovs-vswitchd
// ("pmd-c<core>/id:<n>"); a watcher sees a new one (ovs-vswitchd restarted,
// pmd-cpu-mask changed) within 250 ms and calls on_change, so the agent
// reserves it again.
//
// Settings, from Host:other_config:
//   ovs-db        OVS's database remote      (unix:/run/openvswitch/db.sock)
//   ovs-bridge    the bridge of VM ports     (br-int)
//   ovs-pidfile   ovs-vswitchd's pidfile     (/run/openvswitch/ovs-vswitchd.pid)
//   ovs-pmd-cores PMD cores capsule gives to VMs, one each (required; every
//                 one in OVS's other_config:pmd-cpu-mask, e.g. fake cores of
//                 ovs-vswitchd --dummy-numa so that PMDs outnumber CPUs)
//   ovs-uplink-pmd-core    the shared PMD core polling the uplink's queues
//   ovs-uplink-pmd-budget  its reservation, "RUNTIME/PERIOD" ("1ms/20ms");
//                 both or neither: host_threads() then lists that PMD, and
//                 the agent keeps it in a capsule of its own
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "datapath.h"

struct capsule_vswitch;

namespace capsule::agent {

struct OvsSettings {
  std::string db = "unix:/run/openvswitch/db.sock";
  std::string bridge = "br-int";
  std::string pidfile = "/run/openvswitch/ovs-vswitchd.pid";
  std::vector<int> pmd_cores;
  int uplink_core = -1;  // -1: the uplink's PMD gets no reservation
  std::chrono::nanoseconds uplink_runtime{0}, uplink_period{0};
};
// Host:other_config's ovs-* keys (DatapathSettings::ovs), checked.
Result<OvsSettings> ovs_settings(const std::map<std::string, std::string>& keys);

// The Host:other_config keys of OVS mode, copied into DatapathSettings::ovs.
inline bool is_ovs_setting(const std::string& key) { return key.rfind("ovs-", 0) == 0; }

class OvsDatapath final : public Datapath {
 public:
  ~OvsDatapath() override;

  std::string name() const override { return "ovs-dpdk"; }
  bool attached() const override { return true; }
  std::string detail() const override;
  Status add_vm(const VmNetConfig& config) override;
  Status remove_vm(const std::string& vm) override;
  std::optional<pid_t> pmd_tid(const std::string& vm) const override;
  Result<VmDatapathStats> stats(const std::string& vm) const override;
  std::vector<VmNetConfig> in_force() const override { return in_force_; }
  Result<std::string> pmd_stats_show(const std::string& vm) const override;
  std::string serving(const std::string& vm) const override;
  std::string auto_budget_obstacle() const override;
  std::vector<HostThread> host_threads() const override;
  std::string metrics(const std::string& labels) const override;

  // What OVS mode cannot do for a port ("" when it can): policers OVS 3.1
  // has no userspace equivalent for, a vhost-user server port.
  static std::string unsupported(const PortConfig& port);

 private:
  friend Result<std::unique_ptr<Datapath>> make_ovs_datapath(const DatapathSettings&, std::function<void()>);
  OvsDatapath(OvsSettings settings, capsule_vswitch* vs, std::function<void()> on_change);
  // The PMD threads of ovs-vswitchd by core, now (empty when it is down).
  std::map<int, pid_t> pmd_threads() const;
  void watch();
  // The PMD's CPU affinity widened for SCHED_DEADLINE, and put back (mu_ held).
  void unpin(pid_t tid) const;
  void restore_affinity(pid_t tid);

  OvsSettings settings_;
  capsule_vswitch* vs_;
  std::function<void()> on_change_;
  std::vector<VmNetConfig> in_force_;
  std::map<std::string, VmNetConfig> vms_;  // what OVS holds for each VM
  std::map<std::string, int64_t> since_ms_;  // when each VM's ports were made

  // Shared with the watcher thread.
  mutable std::mutex mu_;
  std::map<std::string, int> core_;             // VM -> its PMD core
  mutable std::map<std::string, pid_t> given_;  // VM -> the PMD tid pmd_tid() last gave the agent
  std::map<std::string, pid_t> announced_;      // VM -> the tid on_change was last called for
  mutable std::map<pid_t, cpu_set_t> pinned_;   // PMD tid -> its affinity before unpin()
  mutable pid_t uplink_given_ = -1;             // the uplink PMD tid host_threads() last gave (-1: never asked)
  pid_t uplink_announced_ = 0;
  int stop_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread watcher_;
};

// Connects to OVS's database (10 s at most) and takes over what an earlier
// capsuled left there (in_force()). `on_change` is called from a watcher
// thread when a VM's PMD thread is replaced.
Result<std::unique_ptr<Datapath>> make_ovs_datapath(const DatapathSettings& settings,
                                                    std::function<void()> on_change);

}  // namespace capsule::agent
