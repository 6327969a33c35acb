// CPU accounting per thread: what the kernel says each thread ran
// (/proc/<tid>/schedstat), utilisation over a window, and how much of its
// reservation a thread used, so the agent can show budget use.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <vector>

#include "capsule/result.h"
#include "capsule/rsv/sched_attr.h"

namespace capsule::rsv {

struct ThreadCpuTime {
  std::chrono::nanoseconds on_cpu{0};    // time spent running
  std::chrono::nanoseconds waiting{0};   // time runnable but waiting for a CPU
  unsigned long long timeslices = 0;
};
Result<ThreadCpuTime> read_schedstat(pid_t tid);

struct ThreadUsage {
  pid_t tid = 0;
  double utilisation = 0;   // fraction of one CPU over the window
  double budget_used = -1;  // utilisation / reserved bandwidth; -1 when not DL
  SchedParams params;       // as the kernel reports them now
  bool alive = true;
};

// Samples a set of threads: each sample() gives their utilisation since the
// previous one (or since construction).
class UtilisationMeter {
 public:
  explicit UtilisationMeter(std::vector<pid_t> tids);
  std::map<pid_t, ThreadUsage> sample();

 private:
  std::vector<pid_t> tids_;
  std::chrono::steady_clock::time_point last_;
  std::map<pid_t, std::chrono::nanoseconds> last_cpu_;
};

}  // namespace capsule::rsv
