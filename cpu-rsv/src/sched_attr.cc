#include "capsule/rsv/sched_attr.h"

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace capsule::rsv {
namespace {

// The kernel ABI (include/uapi/linux/sched/types.h), declared here because
// glibc 2.36's <sched.h> does not and <linux/sched/types.h> may clash with
// newer glibc headers.
struct KernelSchedAttr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;
  uint64_t sched_deadline;
  uint64_t sched_period;
  uint32_t sched_util_min;
  uint32_t sched_util_max;
};

}  // namespace

std::string policy_name(int policy) {
  switch (policy) {
    case SCHED_OTHER: return "SCHED_OTHER";
    case SCHED_FIFO: return "SCHED_FIFO";
    case SCHED_RR: return "SCHED_RR";
    case SCHED_BATCH: return "SCHED_BATCH";
    case SCHED_IDLE: return "SCHED_IDLE";
    case kSchedDeadline: return "SCHED_DEADLINE";
    default: return "policy " + std::to_string(policy);
  }
}

Result<SchedParams> get_sched_params(pid_t tid) {
  KernelSchedAttr a{};
  if (syscall(SYS_sched_getattr, tid, &a, sizeof(a), 0) != 0) {
    int err = errno;
    if (err == ESRCH) return Error{"thread " + std::to_string(tid) + " does not exist (it exited)", err};
    return errno_error("cannot read the scheduling policy of thread " + std::to_string(tid), err);
  }
  SchedParams p;
  p.policy = int(a.sched_policy);
  p.flags = a.sched_flags;
  p.nice = a.sched_nice;
  p.priority = int(a.sched_priority);
  p.runtime = std::chrono::nanoseconds(a.sched_runtime);
  p.deadline = std::chrono::nanoseconds(a.sched_deadline);
  p.period = std::chrono::nanoseconds(a.sched_period);
  return p;
}

Status set_sched_params(pid_t tid, const SchedParams& p) {
  KernelSchedAttr a{};
  a.size = sizeof(a);
  a.sched_policy = uint32_t(p.policy);
  a.sched_flags = p.flags;
  a.sched_nice = p.nice;
  a.sched_priority = uint32_t(p.priority);
  if (p.is_deadline()) {
    a.sched_runtime = uint64_t(p.runtime.count());
    a.sched_deadline = uint64_t(p.deadline.count());
    a.sched_period = uint64_t(p.period.count());
  }
  if (syscall(SYS_sched_setattr, tid, &a, 0) == 0) return Status::Ok();
  int err = errno;
  std::string who = "thread " + std::to_string(tid);
  switch (err) {
    case ESRCH:
      return Error{who + " does not exist (it exited)", err};
    case EBUSY:
      return Error{"the kernel refused " + policy_name(p.policy) + " for " + who +
                       ": its root domain has no SCHED_DEADLINE bandwidth left (EBUSY)",
                   err};
    case EPERM:
      return Error{"the kernel refused " + policy_name(p.policy) + " for " + who +
                       " (EPERM): run as root, and a SCHED_DEADLINE thread's CPU affinity must "
                       "cover its whole root domain (pin it through a capsule partition instead)",
                   err};
    case EINVAL:
      return Error{"the kernel rejected the parameters for " + who + " (EINVAL)", err};
    default:
      return errno_error("sched_setattr(" + policy_name(p.policy) + ") on " + who, err);
  }
}

}  // namespace capsule::rsv
