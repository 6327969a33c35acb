// What a reservation asks for, and the checks the kernel would make, done
// first so that the user reads a sentence instead of EINVAL.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "capsule/result.h"

namespace capsule::rsv {

using std::chrono::nanoseconds;

// The kernel's limits on SCHED_DEADLINE periods
// (/proc/sys/kernel/sched_deadline_period_{min,max}_us) and the smallest
// runtime it accepts (1 << DL_SCALE ns).
struct KernelLimits {
  nanoseconds period_min{100'000};
  nanoseconds period_max{4'194'304'000};
  nanoseconds runtime_min{1024};
  static KernelLimits read();  // falls back to the kernel's defaults
};

// One EDF server: budget `runtime` every `period`, to be used before
// `deadline` (0 means deadline = period, the usual choice).
struct ReservationSpec {
  nanoseconds runtime{0};
  nanoseconds period{0};
  nanoseconds deadline{0};
  bool reclaim = false;  // SCHED_FLAG_RECLAIM (GRUB): may use idle bandwidth

  nanoseconds effective_deadline() const { return deadline.count() ? deadline : period; }
  // Q / P: the share of a CPU the thread may use, and what the kernel books.
  double bandwidth() const {
    return period.count() ? double(runtime.count()) / double(period.count()) : 0.0;
  }
  // Q / min(D, P): what EDF needs free for the deadline to hold. With D < P a
  // thread may ask for its Q within D of any activation, so Q / P is not
  // enough: two threads of 2 ms per 20 ms, each due 2 ms after it wakes, do
  // not both fit if they wake together. Admission books the density.
  double density() const {
    const nanoseconds d = std::min(effective_deadline(), period);
    return d.count() > 0 ? double(runtime.count()) / double(d.count()) : 0.0;
  }
  std::string to_string() const;  // "runtime 4 ms, period 20 ms (20.0 %)"
};

// Checks a spec the way sched_setattr would, with a sentence for each case.
Status validate(const ReservationSpec& spec, const KernelLimits& limits = KernelLimits::read());

// One thread of a VM reservation and its own share of the VM's budget.
struct ThreadBudget {
  pid_t tid = 0;
  nanoseconds runtime{0};
  int cpu = -1;          // >= 0: pin into that core's capsule partition
  std::string role;      // "vcpu0", "pmd", ... for messages and status
};

// A VM's capsule: several threads (vCPUs + datapath) with per-thread budgets
// that share one period and deadline.
struct VmReservationSpec {
  std::string name;
  nanoseconds period{0};
  nanoseconds deadline{0};  // 0 = period
  bool reclaim = false;
  std::vector<ThreadBudget> threads;

  ReservationSpec thread_spec(const ThreadBudget& t) const {
    return ReservationSpec{t.runtime, period, deadline, reclaim};
  }
  nanoseconds effective_deadline() const { return deadline.count() ? deadline : period; }
  double bandwidth() const;  // sum over threads of Q / P
  double density() const;    // sum over threads of Q / min(D, P)
};

// Validates every thread's spec and the set (non-empty, no tid twice).
Status validate(const VmReservationSpec& spec, const KernelLimits& limits = KernelLimits::read());

// 0.7 -> "70.0 %": fractions of a CPU in messages.
std::string format_percent(double fraction);

// "4 ms", "250 us", "1.5 ms": human durations for messages.
std::string format_duration(nanoseconds d);

// Parses "20ms", "500us", "1.5s", "20000000ns", or a bare number of
// microseconds (the unit sched_deadline_period_*_us and chrt use).
Result<nanoseconds> parse_duration(const std::string& text);

}  // namespace capsule::rsv
