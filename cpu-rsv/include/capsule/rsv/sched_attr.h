// Thin wrappers over sched_setattr(2)/sched_getattr(2), which glibc 2.36 does
// not wrap, and the scheduling state of one thread as the kernel reports it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "capsule/result.h"

namespace capsule::rsv {

inline constexpr int kSchedDeadline = 6;  // SCHED_DEADLINE
inline constexpr uint64_t kFlagResetOnFork = 0x01;
inline constexpr uint64_t kFlagReclaim = 0x02;

// Everything sched_getattr reports for one thread.
struct SchedParams {
  int policy = 0;         // SCHED_OTHER, SCHED_FIFO, ..., kSchedDeadline
  uint64_t flags = 0;     // SCHED_FLAG_*
  int nice = 0;           // SCHED_OTHER / SCHED_BATCH / SCHED_IDLE
  int priority = 0;       // SCHED_FIFO / SCHED_RR
  std::chrono::nanoseconds runtime{0};   // SCHED_DEADLINE only
  std::chrono::nanoseconds deadline{0};
  std::chrono::nanoseconds period{0};

  bool is_deadline() const { return policy == kSchedDeadline; }
  double bandwidth() const {
    return period.count() > 0 ? double(runtime.count()) / double(period.count()) : 0.0;
  }
  // runtime / min(deadline, period): see ReservationSpec::density().
  double density() const {
    const auto d = deadline.count() > 0 && deadline < period ? deadline : period;
    return d.count() > 0 ? double(runtime.count()) / double(d.count()) : 0.0;
  }
};

std::string policy_name(int policy);

// sched_getattr(tid). Fails with ESRCH when the thread is gone.
Result<SchedParams> get_sched_params(pid_t tid);

// sched_setattr(tid). The error message names the thread and explains the
// usual causes (EBUSY: no DL bandwidth left in the root domain; EPERM: the
// thread's affinity is narrower than its root domain, or not root).
Status set_sched_params(pid_t tid, const SchedParams& p);

}  // namespace capsule::rsv
