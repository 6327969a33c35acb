#include "capsule/rsv/thread_state.h"

#include <sched.h>

namespace capsule::rsv {

Result<std::pair<unsigned long long, std::string>> read_thread_identity(pid_t tid) {
  auto stat = read_text_file("/proc/" + std::to_string(tid) + "/stat");
  if (!stat) return Error{"thread " + std::to_string(tid) + " does not exist (it exited)", ESRCH};
  // "pid (comm) state ..." where comm may hold spaces and parentheses:
  // the name ends at the last ')'.
  const std::string& s = *stat;
  auto open = s.find('(');
  auto close = s.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open)
    return Error{"cannot parse /proc/" + std::to_string(tid) + "/stat", EINVAL};
  std::string comm = s.substr(open + 1, close - open - 1);
  // Fields after comm start at field 3 (state); start time is field 22.
  std::size_t pos = close + 2;
  unsigned long long start = 0;
  for (int field = 3; field <= 22 && pos < s.size(); ++field) {
    auto next = s.find(' ', pos);
    if (field == 22) start = std::stoull(s.substr(pos, next - pos));
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  return std::make_pair(start, comm);
}

std::vector<int> affinity_cpus(const cpu_set_t& set) {
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

Result<ThreadSnapshot> ThreadSnapshot::capture(pid_t tid, const CpusetFs& fs) {
  ThreadSnapshot s;
  s.tid = tid;
  auto id = read_thread_identity(tid);
  if (!id) return id.error();
  s.start_time = id->first;
  s.comm = id->second;
  auto sp = get_sched_params(tid);
  if (!sp) return sp.error();
  s.sched = *sp;
  CPU_ZERO(&s.affinity);
  if (sched_getaffinity(tid, sizeof(s.affinity), &s.affinity) != 0) {
    if (errno == ESRCH) return Error{"thread " + std::to_string(tid) + " does not exist (it exited)", ESRCH};
    return errno_error("cannot read the CPU affinity of thread " + std::to_string(tid), errno);
  }
  auto cs = fs.thread_cpuset(tid);
  if (!cs) return cs.error();
  s.cpuset = *cs;
  return s;
}

bool ThreadSnapshot::alive() const {
  auto id = read_thread_identity(tid);
  return id && id->first == start_time;
}

Status ThreadSnapshot::restore(const CpusetFs& fs) const {
  if (!alive()) return Status::Ok();
  const std::string who = "thread " + std::to_string(tid) + " (" + comm + ")";
  Status first;
  SchedParams p = sched;
  if (!p.is_deadline()) p.flags &= kFlagResetOnFork;  // no util-clamp or DL flags
  Status st = set_sched_params(tid, p);
  if (!st && st.error().errnum != ESRCH)
    first = Error{"cannot restore the policy of " + who + ": " + st.error().message, st.error().errnum};
  if (fs.available()) {
    auto now = fs.thread_cpuset(tid);
    if (now && *now != cpuset) {
      st = fs.move_thread(tid, cpuset);
      if (!st && st.error().errnum != ESRCH && first)
        first = Error{"cannot put " + who + " back into cpuset " + cpuset + ": " + st.error().message,
                      st.error().errnum};
    }
  }
  // Leaving a cpuset resets affinity to that cpuset's CPUs: set ours last.
  if (sched_setaffinity(tid, sizeof(affinity), &affinity) != 0 && errno != ESRCH && first)
    first = errno_error("cannot restore the CPU affinity of " + who, errno);
  return first;
}

}  // namespace capsule::rsv
