// Exclusive per-core cpusets ("partitions"). The kernel refuses
// SCHED_DEADLINE for a thread whose affinity is narrower than its root
// domain; a partition makes one core a root domain of its own, so a thread
// pinned to that core can be a DL thread there.
//
// cgroup v1 (what these hosts mount): <root>/capsule-c<N> with cpus=N,
// cpu_exclusive=1, and sched_load_balance=0 in the root cpuset so the kernel
// builds one root domain per balanced child. The CPUs no partition holds go to
// a sibling <root>/capsule-system (balanced, no tasks) so they keep
// load-balancing among themselves. Removing the last partition removes
// capsule-system and restores the root's sched_load_balance.
#pragma once

#include <sys/types.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "capsule/result.h"
#include "capsule/rsv/cpuset.h"

namespace capsule::rsv {

class PartitionSet {
 public:
  explicit PartitionSet(CpusetFs fs = CpusetFs::detect());
  ~PartitionSet();  // removes every partition it made
  PartitionSet(const PartitionSet&) = delete;
  PartitionSet& operator=(const PartitionSet&) = delete;

  // Name of a core's partition, relative to the cpuset root.
  static std::string partition_name(int cpu);

  // Makes (or re-uses) the partition of `cpu` and takes one reference on it.
  // Refuses to partition the last core that is not a partition.
  Result<std::string> acquire(int cpu);
  // Takes a reference on a partition a previous owner made (journal
  // adoption): re-used as it is when its cpuset exists, made anew if not.
  Result<std::string> adopt(int cpu);
  // Makes the partition's cpuset again if it was removed from outside
  // (references unchanged). The core must hold a reference.
  Status ensure(int cpu);
  // Drops one reference; the last one moves any remaining threads back to
  // the root cpuset and removes the partition.
  Status release(int cpu);

  // Moves a thread into the partition of `cpu` (acquire() first).
  Status add_thread(int cpu, pid_t tid);

  std::vector<int> partitioned_cpus() const;
  const CpusetFs& fs() const { return fs_; }

  // Removes capsule-* cpusets that a crashed owner left behind (only those
  // with no tasks) and restores the root's load balancing. Returns what it
  // removed.
  // A cpuset that is not capsule's, directly under the root, whose cpus
  // include `cpu` (libvirt's /machine, say): as "/name (cpus 0-1)", or "".
  // While one exists, the core cannot become an exclusive partition.
  static std::string foreign_cpuset_holding(int cpu, const CpusetFs& fs = CpusetFs::detect());
  static Result<std::vector<std::string>> cleanup_stale(const CpusetFs& fs = CpusetFs::detect());

  // The capsule partitions (capsule-c*) that exist on the host, whoever made
  // them, with the tasks in each.
  struct Existing {
    std::string name;  // relative to the cpuset root, e.g. "/capsule-c1"
    std::vector<pid_t> tasks;
  };
  static std::vector<Existing> existing(const CpusetFs& fs = CpusetFs::detect());
  // "" while the root cpuset balances load over all CPUs (one root domain,
  // what global admission assumes); otherwise why not, naming the capsule
  // partitions that split it or saying that someone else did.
  static std::string root_split(const CpusetFs& fs = CpusetFs::detect());

 private:
  Status remove_locked(int cpu);
  // The cpuset of `cpu`'s partition, exclusive, with the root unbalanced.
  Status make_partition_locked(int cpu);
  Status update_system_cpuset_locked();

  CpusetFs fs_;
  mutable std::mutex mu_;
  std::map<int, int> refs_;  // cpu -> references
  std::string saved_root_load_balance_;
};

}  // namespace capsule::rsv
