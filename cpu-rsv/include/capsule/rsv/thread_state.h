// What a thread looked like before capsule touched it, so that it can be put
// back exactly: policy, priority, nice, flags, CPU affinity and cpuset.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <string>

#include "capsule/result.h"
#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/sched_attr.h"

namespace capsule::rsv {

struct ThreadSnapshot {
  pid_t tid = 0;
  unsigned long long start_time = 0;  // /proc/<tid>/stat field 22: tells tid reuse apart
  std::string comm;
  SchedParams sched;
  cpu_set_t affinity{};
  std::string cpuset = "/";

  // Reads the thread's current state. ESRCH when it is gone.
  static Result<ThreadSnapshot> capture(pid_t tid, const CpusetFs& fs);

  // True while the same thread (not a new one that re-used the tid) lives.
  bool alive() const;

  // Puts policy, cpuset and affinity back, in that order (a DL thread must
  // leave SCHED_DEADLINE before it may change cpuset). A thread that has
  // exited needs nothing and counts as restored.
  Status restore(const CpusetFs& fs) const;
};

// Start time (clock ticks since boot) and name of a thread; ESRCH if gone.
Result<std::pair<unsigned long long, std::string>> read_thread_identity(pid_t tid);

// The thread's current CPU affinity as a list.
std::vector<int> affinity_cpus(const cpu_set_t& set);

}  // namespace capsule::rsv
