// Running capsule-vm from tests and benchmarks: a child process (killed and
// reaped on destruction, and --die-with-parent), its output in a file, its
// counters parsed from the last "report"/"final" line.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "capsule/testkit.h"

namespace capsule::vm {

using Counters = std::map<std::string, uint64_t>;

class VmPeer {
 public:
  // capsule-vm --socket SOCKET --mac MAC --die-with-parent ARGS..., stdout to
  // out_file; cpu >= 0 runs it under taskset on that CPU.
  VmPeer(const std::string& out_file, const std::string& socket, const std::string& mac,
         const std::vector<std::string>& args, int cpu = -1);
  ~VmPeer();
  VmPeer(const VmPeer&) = delete;
  VmPeer& operator=(const VmPeer&) = delete;

  bool wait_ready(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  Counters counters() const;  // the last counters line printed so far
  // How fast counter `key` grows, per second of the VM's own clock, over
  // about `window` from now (two report lines: a counter and elapsed_ms
  // come from the same line, so the host's scheduling does not blur it).
  double own_rate(const std::string& key, std::chrono::milliseconds window) const;
  // The longest time by the VM's own clock between two reports in which
  // `key` grew, over the reports at or after `from_ms` of its clock, up to
  // its last report (a stall that has not ended counts too).
  double longest_gap_ms(const std::string& key, double from_ms) const;
  Counters finish();          // SIGTERM, reap, final counters
  Counters wait_exit(std::chrono::milliseconds timeout);  // ends by itself (--count, --duration)
  pid_t pid() const { return proc_ ? proc_->pid() : 0; }
  pid_t vcpu_tid() const;
  std::string output() const;

 private:
  std::string out_;
  std::unique_ptr<testkit::ChildProcess> proc_;
};

// "report k=v ..." / "final k=v ..." -> map (the last such line of `output`).
Counters parse_counters(const std::string& output);

// CPU time of one thread, in ns (/proc/PID/task/TID/schedstat, else stat).
uint64_t thread_cpu_ns(pid_t pid, pid_t tid);

// sh -c CMD with stderr folded into stdout; returns the exit status.
int run_shell(const std::string& cmd, std::string* out = nullptr);

}  // namespace capsule::vm
