// A fake VM process for control-plane tests (and a check on its threads): `vcpus` idle threads named
// like QEMU's vCPU threads ("CPU <n>/KVM"), from tools/fakevm.
#pragma once

#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/partition.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/testkit.h"

namespace capsule {

// A process with `vcpus` idle threads named "CPU <n>/KVM" (tools/fakevm).
class FakeVm {
 public:
  explicit FakeVm(int vcpus, const std::string& pidfile = "") {
    std::vector<std::string> argv{testkit::sibling_binary("capsule-fakevm"), "--vcpus", std::to_string(vcpus),
                                  "--load", "idle"};
    if (!pidfile.empty()) argv.insert(argv.end(), {"--pidfile", pidfile});
    proc_ = testkit::ChildProcess::spawn(argv, "/dev/null");
    testkit::wait_until([&] { return vcpu_tids().size() == std::size_t(vcpus); }, std::chrono::seconds(5));
    if (!pidfile.empty()) testkit::wait_until([&] { return ::access(pidfile.c_str(), F_OK) == 0; }, std::chrono::seconds(5));
  }
  pid_t pid() const { return proc_->pid(); }
  std::vector<pid_t> vcpu_tids() const {
    std::vector<pid_t> out;
    auto all = rsv::discover_threads(proc_->pid());
    if (all)
      for (const auto& t : rsv::threads_with_role(*all, rsv::ThreadRole::kVcpu)) out.push_back(t.tid);
    return out;
  }
  std::vector<pid_t> all_tids() const {
    std::vector<pid_t> out;
    auto all = rsv::discover_threads(proc_->pid());
    if (all)
      for (const auto& t : *all) out.push_back(t.tid);
    return out;
  }

 private:
  std::unique_ptr<testkit::ChildProcess> proc_;
};

// True when `tid` is SCHED_DEADLINE with exactly this runtime and period.
inline bool has_deadline(pid_t tid, std::chrono::microseconds runtime, std::chrono::microseconds period) {
  auto p = rsv::get_sched_params(tid);
  return p && p->is_deadline() && p->runtime == runtime && p->period == period;
}

// Why this host cannot make its last CPU an exclusive capsule partition
// (a test then skips with the reason), or "" when it can; `cpu` is that CPU.
inline std::string partition_unavailable(int* cpu) {
  if (rsv::CpusetFs::detect().kind() != rsv::CpusetFs::Kind::kV1) return "needs the cgroup v1 cpuset controller";
  const auto cpus = rsv::online_cpus();
  if (cpus.size() < 2) return "needs 2 CPUs (one stays with the system)";
  *cpu = cpus.back();
  if (auto f = rsv::PartitionSet::foreign_cpuset_holding(*cpu); !f.empty())
    return "cpuset " + f + " holds core " + std::to_string(*cpu) + ": no exclusive partition can be made on this host";
  return "";
}

}  // namespace capsule
