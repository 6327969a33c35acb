// Admission control: capsule's own account of EDF bandwidth per core
// (partitioned mode) or per root domain (global mode), checked before any
// syscall. It also counts SCHED_DEADLINE threads that capsule did not
// create, so its answer matches what the kernel will say. A refusal names
// the core or domain, the demand, the bound and what is free.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "capsule/result.h"
#include "capsule/rsv/spec.h"

namespace capsule::rsv {

enum class AdmissionMode {
  kGlobal,       // one root domain over the capsule cores; threads unpinned (global EDF)
  kPartitioned,  // each thread pinned to one core's partition (partitioned EDF)
};
enum class PlacementPolicy { kWorstFit, kFirstFit };

struct AdmissionConfig {
  AdmissionMode mode = AdmissionMode::kGlobal;
  PlacementPolicy placement = PlacementPolicy::kWorstFit;
  double bound = -1;      // utilisation bound per core; < 0: the kernel's
                          // sched_rt_runtime_us / sched_rt_period_us
  std::vector<int> cpus;  // cores for capsules; empty: every online core
};

// The kernel's own per-CPU bound for SCHED_DEADLINE (0.95 by default;
// 1.0 when sched_rt_runtime_us is -1).
double kernel_dl_bound();

// Bandwidth per CPU that the kernel itself books as SCHED_DEADLINE: since
// Linux 6.12 every CPU runs a "fair server" (a DL server that keeps CFS
// tasks alive under RT/DL load), 50 ms every 1000 ms by default. Read from
// debugfs when it is readable, else the kernel's default for its version.
double fair_server_bandwidth();

// A SCHED_DEADLINE thread found on the system.
struct DeadlineThread {
  pid_t tid = 0;
  std::string comm;
  double bandwidth = 0;  // runtime / period
  double density = 0;    // runtime / min(deadline, period): what admission counts
  std::vector<int> cpus;  // its affinity
};
// Every SCHED_DEADLINE thread now on the system (policy read from
// /proc/*/task/*/sched, parameters from sched_getattr).
std::vector<DeadlineThread> scan_deadline_threads();

struct ThreadPlacement {
  pid_t tid = 0;
  std::string role;
  int cpu = -1;  // -1: global domain (unpinned)
  double bandwidth = 0;  // Q / P: the CPU share the thread may use
  double density = 0;    // Q / min(D, P): what it takes from its domain
};
struct AdmissionDecision {
  std::string owner;
  std::vector<ThreadPlacement> threads;
  double bandwidth = 0;  // sum of Q / P
  double density = 0;    // sum of Q / min(D, P)
};

// One core (partitioned) or the whole root domain (global), as booked. What
// is booked is density, Q / min(D, P), not the kernel's Q / P: the kernel
// admits a thread with D < P on Q / P (Documentation/scheduler/
// sched-deadline.rst, section 3) and then cannot keep every deadline; EDF
// on one core keeps them all when the densities sum to at most 1 (Liu's
// density test). For D = P the two are the same.
struct DomainLoad {
  std::string name;       // "core 1" or "root domain (cpus 0-1)"
  std::vector<int> cpus;
  double capacity = 0;    // bound x cpus
  double capsule = 0;     // booked by capsule
  double external = 0;    // other SCHED_DEADLINE threads
  double kernel = 0;      // the kernel's own DL servers (fair server)
  double free() const { return capacity - capsule - external - kernel; }
};

class AdmissionControl {
 public:
  explicit AdmissionControl(AdmissionConfig config = {});

  const AdmissionConfig& config() const { return cfg_; }
  double bound() const { return cfg_.bound; }

  // Decides where each thread of `spec` goes and books it for spec.name;
  // if spec.name already holds a booking it is replaced (a change), judged
  // as if the old booking were gone. `external` is the system's DL threads;
  // those whose tid capsule booked are not counted twice. Threads with
  // cpu >= 0 (partitioned mode) must fit on that core.
  Result<AdmissionDecision> admit(const VmReservationSpec& spec,
                                  const std::vector<DeadlineThread>& external);
  // Books what the kernel already holds for spec.name (an adopted capsule)
  // without judging it: it is in force, and refusing it would not undo it.
  AdmissionDecision book_in_force(const VmReservationSpec& spec);
  void release(const std::string& owner);
  bool has(const std::string& owner) const { return booked_.count(owner) != 0; }

  std::vector<DomainLoad> load(const std::vector<DeadlineThread>& external) const;

 private:
  std::vector<DomainLoad> load_without(const std::string& owner,
                                       const std::vector<DeadlineThread>& external) const;
  AdmissionConfig cfg_;
  std::map<std::string, AdmissionDecision> booked_;
};

}  // namespace capsule::rsv
