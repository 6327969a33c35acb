// What capsuled needs from a per-VM datapath (dpdk-pmd's capsule datapath,
// or OVS-DPDK in "ovs" mode): create or update a VM's ports and policers,
// tell which thread does that VM's packet work (so it joins the VM's
// reservation), remove the VM, and report per-port counters.
//
// The agent calls a Datapath from its control thread only. Without a
// datapath (none configured, or it failed to start), capsuled runs with
// DetachedDatapath: reservations of vCPU threads are fully real, ports and
// QoS are validated and shown, and every status says that no datapath is
// attached.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "capsule/result.h"

namespace capsule::agent {

// A policer as OVS names it: "egress-policer" (cir bytes/s, cbs bytes),
// "trtcm-policer" (cir, cbs, eir, ebs), "pkt-policer" (pir packets/s,
// pbs packets). Keys are already validated.
struct PolicerConfig {
  std::string type;
  std::map<std::string, uint64_t> params;
  bool operator==(const PolicerConfig&) const = default;
};

struct PortConfig {
  std::string name;
  std::string vhost_path;
  bool vhost_client = true;   // capsule connects to QEMU's socket (QEMU is server)
  std::string mac;            // "" = learn
  // Directions are OVS's, switch-centric: the port's QoS polices what the
  // switch sends out of the port (its egress: traffic *to* the VM), ingress
  // policing what the switch receives on it (traffic *from* the VM).
  std::optional<PolicerConfig> egress;  // Port:qos: switch -> VM
  uint64_t ingress_kbps = 0, ingress_burst_kb = 0;      // VM -> switch, 0 = off
  uint64_t ingress_kpps = 0, ingress_burst_kpkts = 0;
  bool operator==(const PortConfig&) const = default;
};

struct VmNetConfig {
  std::string vm;
  std::vector<PortConfig> ports;
  bool operator==(const VmNetConfig&) const = default;  // equal: nothing to change
};

struct PortCounters {
  uint64_t rx_packets = 0, rx_bytes = 0, tx_packets = 0, tx_bytes = 0;
  std::map<std::string, uint64_t> drops;  // by cause: "policer", "ring_full", ...
  // The guest side of the port: `connected` only while the VM's virtio
  // device is up (vhost new_device seen, not destroyed since). Times are
  // Unix ms, 0 = never (capsule/wall_clock.h).
  bool connected = false;
  uint64_t connects = 0;  // devices attached since the port was made
  std::string socket;     // its vhost-user socket
  int64_t since_ms = 0;   // when the port was made (what a VM that never came is waited on since)
  int64_t last_connect_ms = 0, last_disconnect_ms = 0;
};

struct VmDatapathStats {
  std::map<std::string, PortCounters> ports;  // by port name
  double cycles_per_packet = 0;
};

// A datapath thread that serves no single VM but gets a capsule of its own
// (OVS mode: the shared PMD polling the uplink's queues, which switches what
// the VMs receive from outside).
struct HostThread {
  std::string name;  // its capsule's name ("host:ovs-uplink-pmd"), unique
  std::string role;  // the thread's role in it ("pmd")
  pid_t tid = 0;     // 0: not running now (nothing to reserve)
  std::chrono::nanoseconds runtime{0}, period{0};
  std::string what;  // for show and status: which thread, what it does
  bool operator==(const HostThread&) const = default;
};

class Datapath {
 public:
  virtual ~Datapath() = default;

  // "capsule-dpdk", "ovs-dpdk", or "none".
  virtual std::string name() const = 0;
  // False when no datapath is running: the agent then neither calls the
  // methods below nor books network budgets, and says so in status.
  virtual bool attached() const = 0;
  // Why not attached, for status and logs.
  virtual std::string detail() const = 0;

  // Creates the VM's ports and PMD thread, or changes them in place. On
  // error nothing that was in force before has changed.
  virtual Status add_vm(const VmNetConfig& config) = 0;
  virtual Status remove_vm(const std::string& vm) = 0;
  // The thread that does the VM's packet work, once it runs.
  virtual std::optional<pid_t> pmd_tid(const std::string& vm) const = 0;
  virtual Result<VmDatapathStats> stats(const std::string& vm) const = 0;

  // True when this datapath was attached and is gone (its process exited):
  // the agent then makes a new one with the same settings.
  virtual bool lost() const { return false; }
  // The VMs found on this datapath when it was attached (an earlier agent
  // put them there, and the datapath outlived it). The agent takes them as
  // its own: a refusal then keeps them, and those no longer in the database
  // are removed by the ordinary release of VMs that left.
  virtual std::vector<VmNetConfig> in_force() const { return {}; }
  // A graceful stop of the agent: the datapath ends too (a datapath process
  // exits). A crash never calls this, so the datapath keeps forwarding.
  virtual void shutdown() {}
  // Answers of capsule/pmd-stats-show [VM] and capsule/fdb-show: what the
  // datapath's threads and forwarding table are doing. Datapaths without
  // them say so.
  virtual Result<std::string> pmd_stats_show(const std::string& /*vm*/) const {
    return Error{"datapath " + name() + " has no PMD statistics" + (attached() ? "" : " (" + detail() + ")"), ENOTSUP};
  }
  // Which thread serves the VM's packets and what stays outside its
  // capsule, one line for show and status ("" when nothing to say).
  virtual std::string serving(const std::string& /*vm*/) const { return ""; }
  // Why an `auto` network budget cannot be derived on this datapath ("" when
  // it can): the calibration rows measure capsule's own datapath thread.
  virtual std::string auto_budget_obstacle() const { return ""; }
  // Threads of the datapath the agent reserves beside the VMs (admitted
  // like any capsule), as they are now.
  virtual std::vector<HostThread> host_threads() const { return {}; }
  // Extra Prometheus lines about the datapath's threads (labels `labels`
  // first in each): OVS mode says which PMD serves each VM.
  virtual std::string metrics(const std::string& /*labels*/) const { return ""; }
  virtual Result<std::string> fdb_show() const {
    return Error{"datapath " + name() + " has no forwarding table" + (attached() ? "" : " (" + detail() + ")"),
                 ENOTSUP};
  }
};

// The stand-in while no datapath runs: attached() is false, detail() says why.
class DetachedDatapath final : public Datapath {
 public:
  static constexpr const char* kNoLibrary =
      "not attached: this capsuled has no datapath library; vCPU reservations only";
  explicit DetachedDatapath(std::string why = kNoLibrary) : why_(std::move(why)) {}
  std::string name() const override { return "none"; }
  bool attached() const override { return false; }
  std::string detail() const override { return why_; }
  Status add_vm(const VmNetConfig&) override { return Error{detail(), ENOTSUP}; }
  Status remove_vm(const std::string&) override { return Status::Ok(); }
  std::optional<pid_t> pmd_tid(const std::string&) const override { return std::nullopt; }
  Result<VmDatapathStats> stats(const std::string&) const override { return Error{detail(), ENOTSUP}; }

 private:
  std::string why_;
};

// Host-wide datapath settings, from the Host row.
struct DatapathSettings {
  std::string type = "capsule";                   // Host:datapath_type
  std::map<std::string, std::string> dpdk_options;  // Host:dpdk_options (EAL)
  std::map<std::string, std::string> uplink;        // Host:uplink
  // datapath_type=ovs: Host:other_config's "ovs-*" keys (ovs_datapath.h).
  std::map<std::string, std::string> ovs;
  bool operator==(const DatapathSettings&) const = default;
};

// Makes the datapath for the Host row's settings. capsuled calls it on the
// first Host row and again whenever those settings change (every VM is then
// released and admitted again on the new datapath). An error leaves capsuled
// on a DetachedDatapath whose detail() carries the message.
//
// capsuled's factory (remote_datapath.h) attaches to capsule-datapathd, the
// process that runs the DPDK datapath and outlives the agent
// (docs/reliability.md).
using DatapathFactory = std::function<Result<std::unique_ptr<Datapath>>(const DatapathSettings&)>;

}  // namespace capsule::agent
