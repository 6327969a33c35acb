#include "capsule/rsv/accounting.h"

#include <fstream>

namespace capsule::rsv {

Result<ThreadCpuTime> read_schedstat(pid_t tid) {
  std::ifstream f("/proc/" + std::to_string(tid) + "/schedstat");
  long long run = 0, wait = 0;
  unsigned long long slices = 0;
  if (!(f >> run >> wait >> slices))
    return Error{"thread " + std::to_string(tid) + " does not exist (it exited)", ESRCH};
  return ThreadCpuTime{std::chrono::nanoseconds(run), std::chrono::nanoseconds(wait), slices};
}

UtilisationMeter::UtilisationMeter(std::vector<pid_t> tids)
    : tids_(std::move(tids)), last_(std::chrono::steady_clock::now()) {
  for (pid_t t : tids_)
    if (auto s = read_schedstat(t)) last_cpu_[t] = s->on_cpu;
}

std::map<pid_t, ThreadUsage> UtilisationMeter::sample() {
  const auto now = std::chrono::steady_clock::now();
  const double window = double(std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count());
  last_ = now;
  std::map<pid_t, ThreadUsage> out;
  for (pid_t t : tids_) {
    ThreadUsage u;
    u.tid = t;
    auto s = read_schedstat(t);
    auto p = get_sched_params(t);
    if (!s || !p) {
      u.alive = false;
      out[t] = u;
      continue;
    }
    auto& prev = last_cpu_[t];
    u.utilisation = window > 0 ? double((s->on_cpu - prev).count()) / window : 0;
    prev = s->on_cpu;
    u.params = *p;
    if (p->is_deadline() && p->bandwidth() > 0) u.budget_used = u.utilisation / p->bandwidth();
    out[t] = u;
  }
  return out;
}

}  // namespace capsule::rsv
