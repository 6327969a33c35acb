// Capsules of the datapath's own threads that serve no single VM (OVS mode:
// the shared PMD that polls the uplink's queues, Host other_config
// ovs-uplink-pmd-core/-budget). Each is one thread in a SCHED_DEADLINE
// reservation of its own, admitted like a VM's capsule (same bound, same
// domains); a refusal is reported in Host:status and retried on every pass.
// A replaced thread (new tid: ovs-vswitchd restarted) is swapped in on the
// pass the datapath's watcher triggers.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "capsule/ovs/db.h"
#include "capsule/rsv/accounting.h"
#include "datapath.h"
#include "reservations.h"

namespace capsule::agent {

class HostCapsules {
 public:
  // Reserves what `wanted` lists and is not in force, swaps a changed
  // thread or budget, releases what is no longer wanted.
  void reconcile(Reservations& rsv, const std::vector<HostThread>& wanted);
  // Every capsule released (graceful stop).
  void release(Reservations& rsv);
  // CPU and budget use since the last sample, and each VM's share of it:
  // `delivered` is, per VM, how many packets the datapath has sent to its
  // ports so far (cumulative); the host threads' CPU use is split over the
  // VMs by the packets delivered to each since the counts last moved.
  void sample(const std::map<std::string, uint64_t>& delivered);
  // The CPU (fraction of one) the host threads spent on what `vm` receives,
  // outside its capsule: an estimate (see sample()), none before the first.
  std::optional<double> outside(const std::string& vm) const;

  // Host:status "<name>" (what, and its reservation or why it has none) and
  // statistics "<name>_utilization", "<name>_budget_used".
  void report(ovs::HostStatus& host) const;
  std::string show() const;
  std::string metrics(const std::string& labels) const;

 private:
  struct Held {
    HostThread thread;
    bool reserved = false;
    std::string refused;  // why it has no reservation
    std::unique_ptr<rsv::UtilisationMeter> meter;
    double utilisation = 0, budget_used = -1;
  };
  std::map<std::string, Held> held_;
  std::map<std::string, uint64_t> delivered_;  // the counts of the last sample
  std::map<std::string, double> share_;        // each VM's part of the packets delivered
};

}  // namespace capsule::agent
