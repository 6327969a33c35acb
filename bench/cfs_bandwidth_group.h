// A cgroup v1 "cpu" group with CFS bandwidth control (cpu.cfs_quota_us per
// cpu.cfs_period_us): the baseline an operator would reach for instead of
// SCHED_DEADLINE. Removed, with its threads moved back, on destruction.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "capsule/result.h"

namespace capsule::bench {

class CfsBandwidthGroup {
 public:
  // Creates <cpu cgroup root>/<name> with the given quota per period.
  static Result<CfsBandwidthGroup> create(const std::string& name, std::chrono::nanoseconds quota,
                                          std::chrono::nanoseconds period);
  CfsBandwidthGroup(CfsBandwidthGroup&& o) noexcept;
  CfsBandwidthGroup& operator=(CfsBandwidthGroup&&) = delete;
  CfsBandwidthGroup(const CfsBandwidthGroup&) = delete;
  ~CfsBandwidthGroup();

  Status add_thread(pid_t tid);

 private:
  CfsBandwidthGroup(std::string root, std::string dir) : root_(std::move(root)), dir_(std::move(dir)) {}
  std::string root_, dir_;
  std::vector<pid_t> tids_;
};

}  // namespace capsule::bench
