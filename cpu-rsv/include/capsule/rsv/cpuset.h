// The cgroup cpuset file system: where it is mounted, in which cpuset a
// thread lives, and how to move a thread between cpusets.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "capsule/result.h"

namespace capsule::rsv {

class CpusetFs {
 public:
  enum class Kind { kNone, kV1, kV2 };

  // Finds the cpuset hierarchy in /proc/mounts (cgroup v1 "cpuset" mount,
  // else a cgroup2 mount whose cgroup.controllers lists cpuset).
  static CpusetFs detect();

  Kind kind() const { return kind_; }
  bool available() const { return kind_ != Kind::kNone; }
  const std::string& root() const { return root_; }
  std::string path(const std::string& rel) const;  // absolute path of a cpuset

  // The cpuset of a thread, relative to the root ("/" for the root cpuset).
  Result<std::string> thread_cpuset(pid_t tid) const;
  // Moves one thread (not its whole process) into a cpuset.
  Status move_thread(pid_t tid, const std::string& rel) const;

 private:
  Kind kind_ = Kind::kNone;
  std::string root_;
};

// Small file helpers shared by the cgroup code.
Result<std::string> read_text_file(const std::string& path);  // trailing newline trimmed
Status write_text_file(const std::string& path, const std::string& value);

// "0-2,5" <-> {0,1,2,5}
std::vector<int> parse_cpu_list(const std::string& list);
std::string format_cpu_list(const std::vector<int>& cpus);

// Makes the kernel rebuild its sched domains, which recounts every root
// domain's SCHED_DEADLINE bandwidth from the live tasks, by flipping
// sched_load_balance of a balanced cgroup v1 cpuset (the root, or
// capsule-system while partitions exist) and back. True if it could.
bool rebuild_kernel_dl_accounting();

// CPUs the scheduler can use (sysfs "online" list).
std::vector<int> online_cpus();

}  // namespace capsule::rsv
