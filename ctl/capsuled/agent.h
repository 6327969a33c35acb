// capsuled's reconciler: from the Capsule database's rows for this chassis
// to cpu-rsv reservations and datapath VMs, and back to status rows.
//
// Desired state in, observed state out. Every pass re-evaluates every VM
// against the last snapshot and changes only what differs (idempotent); a VM
// is applied all or nothing (a refused step leaves what was in force, and the
// reason lands in status:reason); VMs that left the database, moved to another
// chassis or were disabled get their threads back. Single-threaded: the
// agent's event loop owns it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "capsule/ovs/db.h"
#include "capsule/result.h"
#include "capsule/rsv/accounting.h"
#include "capsule/rsv/io_isolation.h"
#include "capsule/rsv/io_steering.h"
#include "capsule/rsv/journal.h"
#include "capsule/rsv/manager.h"
#include "datapath.h"
#include "host_capsules.h"
#include "net_budget.h"
#include "reservations.h"
#include "row_validation.h"

namespace capsule::agent {

struct AgentConfig {
  std::string chassis;
  std::string version = CAPSULE_VERSION;
  std::string metrics_url;  // "" when /metrics is off
  std::string journal;      // reservation journal (rsv/journal.h); "" = none
  ReservationsFactory reservations;  // null: the kernel (kernel_reservations)
  // --steer-io: in partitioned mode with capsule_cpus, device interrupts and
  // unbound workqueues go to the other CPUs while capsuled runs (restored
  // when it stops; after a crash from <journal>.io-steering at start).
  bool steer_io = false;
};


class Agent {
 public:
  // No factory: the agent stays on a DetachedDatapath (vCPU reservations only).
  explicit Agent(AgentConfig config, DatapathFactory datapath_factory = nullptr);
  ~Agent();  // releases every VM (threads restored, cpusets removed)
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // A new view of the database (kept until the next one).
  void update(ovs::Snapshot snapshot);
  // Brings the kernel and the datapath in line with the last snapshot.
  void reconcile();
  // Samples CPU use (and datapath counters) of every running VM.
  void sample();
  // Everything to write back: status, statistics, cur_cfg (the last
  // snapshot's next_cfg once it has been reconciled).
  ovs::StatusUpdate status() const;
  // Restores every VM's threads.
  void release_all();
  // release_all(), and every status says "stopped" (SIGTERM, exit).
  void shutdown();

  std::string show() const;     // unixctl capsule/show
  std::string stats() const;    // unixctl capsule/stats
  std::string metrics() const;  // Prometheus text exposition format
  // Whether a disk-I/O neighbour can make this host's capsules late, and
  // why (Host:capabilities:io_isolation, status:io_isolation, show).
  rsv::IoIsolationVerdict io_isolation() const;

  uint64_t reconcile_count() const { return reconciles_; }
  const Datapath& datapath() const { return *datapath_; }

 private:
  struct ThreadSample {
    pid_t tid = 0;
    std::string role;
    double utilisation = 0;
    double budget_used = -1;
  };
  struct VmState {
    std::string uuid;
    std::string fingerprint;   // configuration last evaluated
    int64_t cfg = 0;           // Host next_cfg when that configuration arrived
    std::string state = "pending";
    std::string reason;
    std::string in_force;      // rejected change: what still holds
    std::string net_budget;    // how an auto network budget in force was derived
    std::string drift;         // the last change made outside capsule, and its repair
    bool reserved = false;
    bool net_added = false;
    VmNetConfig net;           // what the datapath holds for this VM
    pid_t pid = 0;
    rsv::AdmissionDecision decision;
    std::unique_ptr<rsv::UtilisationMeter> meter;
    std::vector<ThreadSample> threads;
    std::optional<VmDatapathStats> dp_stats;
    std::map<std::string, ovs::RowStatus> ports;  // by port uuid
    // What a refusal by admission was judged on (admission_inputs): the VM
    // is judged again only when one of them changes.
    std::string refused_on;
  };

  // True when the settings changed (every VM was released).
  bool configure_admission(const ovs::HostRow* host);
  bool configure_datapath(const ovs::HostRow* host);
  // `reevaluated`: judge the row as new even if its configuration is not.
  // `planned`: the row's desired state, when the pass has resolved it already.
  void reconcile_vm(const ovs::VmRow& row, int64_t next_cfg, bool reevaluated, Result<DesiredVm>* planned = nullptr);
  void release_vm(const std::string& name, VmState& st);
  void reject(const std::string& name, VmState& st, const std::string& reason);
  // Everything an admission verdict on `desired` depends on, as one string.
  std::string admission_inputs(const ovs::VmRow& row, const DesiredVm& desired,
                               const std::optional<NetBudget>& auto_budget) const;
  // Puts the row's ports on the datapath without a reservation (best-effort
  // VMs, and VMs whose threads have not appeared yet).
  void bring_up_ports(const ovs::VmRow& row, VmState& st);
  void start_meter(VmState& st);
  // Takes over the capsules a crashed predecessor recorded in the journal
  // (once, on the first pass that has the Host's admission settings).
  void adopt_journal();
  // Finds kernel state changed outside capsule (a thread's policy, a
  // partition cpuset removed), reports it and puts the capsule back.
  void check_drift();

  AgentConfig config_;
  DatapathFactory datapath_factory_;
  std::unique_ptr<Datapath> datapath_;
  // The bandwidth booked per domain, as of the last pass or statistics
  // round: status, show and metrics read it (a scan of every thread on the
  // host each time they are asked would be O(threads) per publish).
  std::vector<rsv::DomainLoad> load_;
  std::optional<DatapathSettings> datapath_settings_;  // what datapath_ was made with
  // Settings the running datapath refused (not tried again until they
  // change), and why: the datapath kept what it had.
  std::optional<DatapathSettings> refused_settings_;
  std::string datapath_refused_;
  std::string datapath_last_exit_;  // the last datapath that went away, and when it was replaced
  std::unique_ptr<Reservations> rsv_;
  std::unique_ptr<rsv::IoSteering> steering_;  // --steer-io, while in force
  void configure_io_steering(const rsv::AdmissionConfig& cfg);
  std::string admission_key_;  // the Host settings rsv_ was made with
  std::optional<rsv::JournalState> pending_adoption_;  // read at start, adopted on the first pass
  ovs::Snapshot snapshot_;
  bool have_snapshot_ = false;
  int64_t reconciled_cfg_ = -1;
  std::map<std::string, VmState> vms_;  // by VM name
  HostCapsules host_capsules_;          // the datapath's own threads (OVS mode: the uplink's PMD)
  uint64_t reconciles_ = 0;
  bool stopped_ = false;
  uint64_t applies_ = 0, rejections_ = 0;
  // Counts the changes that can make room on this host: a capsule released
  // or changed, new admission settings.
  uint64_t admission_epoch_ = 0;
};

}  // namespace capsule::agent
