#include "capsule/rsv/spec.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

namespace capsule::rsv {
namespace {

bool read_us(const char* path, nanoseconds& out) {
  std::ifstream f(path);
  long long us = 0;
  if (!(f >> us) || us <= 0) return false;
  out = std::chrono::microseconds(us);
  return true;
}

}  // namespace

std::string format_percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %%", fraction * 100.0);
  return buf;
}

KernelLimits KernelLimits::read() {
  KernelLimits l;
  read_us("/proc/sys/kernel/sched_deadline_period_min_us", l.period_min);
  read_us("/proc/sys/kernel/sched_deadline_period_max_us", l.period_max);
  return l;
}

std::string format_duration(nanoseconds d) {
  const double ns = double(d.count());
  char buf[48];
  if (std::fabs(ns) >= 1e9) std::snprintf(buf, sizeof buf, "%g s", ns / 1e9);
  else if (std::fabs(ns) >= 1e6) std::snprintf(buf, sizeof buf, "%g ms", ns / 1e6);
  else if (std::fabs(ns) >= 1e3) std::snprintf(buf, sizeof buf, "%g us", ns / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld ns", static_cast<long long>(d.count()));
  return buf;
}

Result<nanoseconds> parse_duration(const std::string& text) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (...) {
    return Error{"'" + text + "' is not a duration (examples: 20ms, 500us, 1.5s)"};
  }
  std::string unit = text.substr(used);
  double scale = 0;
  if (unit == "ns") scale = 1;
  else if (unit == "us" || unit.empty()) scale = 1e3;
  else if (unit == "ms") scale = 1e6;
  else if (unit == "s") scale = 1e9;
  else return Error{"'" + text + "': unknown unit '" + unit + "' (use ns, us, ms or s)"};
  if (!(v >= 0) || !std::isfinite(v)) return Error{"'" + text + "' must be a non-negative duration"};
  // llround of what does not fit 64 bits is undefined (it came out negative);
  // seen while writing fuzz/duration_fuzz.cc.
  if (v * scale >= 9.2e18) return Error{"'" + text + "' is too long a duration (at most about 292 years)"};
  return nanoseconds(static_cast<long long>(std::llround(v * scale)));
}

std::string ReservationSpec::to_string() const {
  std::string s = "runtime " + format_duration(runtime) + ", period " + format_duration(period);
  if (deadline.count() && deadline != period) s += ", deadline " + format_duration(deadline);
  s += " (" + format_percent(bandwidth()) + ")";
  if (reclaim) s += ", reclaiming";
  return s;
}

Status validate(const ReservationSpec& s, const KernelLimits& l) {
  const nanoseconds d = s.effective_deadline();
  if (s.period.count() <= 0)
    return Error{"the period must be positive (got " + format_duration(s.period) + ")", EINVAL};
  if (s.runtime < l.runtime_min)
    return Error{"the budget " + format_duration(s.runtime) + " is below the kernel's minimum of " +
                     format_duration(l.runtime_min) + "; give a budget of at least that",
                 EINVAL};
  if (s.runtime > d) {
    if (s.deadline.count() && s.deadline != s.period)
      return Error{"the budget " + format_duration(s.runtime) + " is larger than the deadline " +
                       format_duration(d) + ": a thread cannot get more CPU than time before its "
                       "deadline; lower the budget or raise the deadline",
                   EINVAL};
    return Error{"the budget " + format_duration(s.runtime) + " is larger than the period " +
                     format_duration(s.period) + ": at most 100 % of a CPU fits in a period; "
                     "lower the budget or raise the period",
                 EINVAL};
  }
  if (d > s.period)
    return Error{"the deadline " + format_duration(d) + " is above the period " +
                     format_duration(s.period) + "; use a deadline no later than the period "
                     "(a deadline shorter than the period answers sooner, at a higher admission cost)",
                 EINVAL};
  if (s.period < l.period_min || s.period > l.period_max)
    return Error{"the period " + format_duration(s.period) + " is outside the kernel's allowed range " +
                     format_duration(l.period_min) + " .. " + format_duration(l.period_max) +
                     " (/proc/sys/kernel/sched_deadline_period_{min,max}_us)",
                 EINVAL};
  return Status::Ok();
}

double VmReservationSpec::bandwidth() const {
  double b = 0;
  for (const auto& t : threads) b += thread_spec(t).bandwidth();
  return b;
}

double VmReservationSpec::density() const {
  double b = 0;
  for (const auto& t : threads) b += thread_spec(t).density();
  return b;
}

Status validate(const VmReservationSpec& s, const KernelLimits& l) {
  const std::string who = s.name.empty() ? std::string("reservation") : "VM '" + s.name + "'";
  if (s.threads.empty()) return Error{who + " has no threads to reserve", EINVAL};
  std::set<pid_t> seen;
  for (const auto& t : s.threads) {
    if (t.tid <= 0) return Error{who + ": thread id " + std::to_string(t.tid) + " is not valid", EINVAL};
    if (!seen.insert(t.tid).second)
      return Error{who + ": thread " + std::to_string(t.tid) + " is listed twice", EINVAL};
    if (Status st = validate(s.thread_spec(t), l); !st)
      return Error{who + ", thread " + std::to_string(t.tid) +
                       (t.role.empty() ? "" : " (" + t.role + ")") + ": " + st.error().message,
                   EINVAL};
  }
  return Status::Ok();
}

}  // namespace capsule::rsv
