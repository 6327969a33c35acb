#include "capsule/rsv/simulated.h"

#include <cerrno>
#include <cstdlib>

namespace capsule::rsv {

SimulatedHost::SimulatedHost(AdmissionConfig config, int vcpus_per_process)
    : admission_([&] {
        // A simulated host has the machine's shape, not its /proc: a bound
        // and a CPU list that are given keep admission free of file reads.
        if (config.bound < 0) config.bound = 0.95;
        if (config.cpus.empty()) config.cpus = {0, 1};
        return config;
      }()),
      vcpus_(vcpus_per_process < 1 ? 1 : vcpus_per_process) {}

Result<AdmissionDecision> SimulatedHost::reserve(const VmReservationSpec& requested) {
  if (requested.name.empty()) return Error{"a VM reservation needs a name", EINVAL};
  if (Status st = validate(requested); !st) return st.error();
  for (const auto& t : requested.threads)
    if (t.tid < pid_t(kFirstPid) * 64)
      return Error{"VM '" + requested.name + "': thread " + std::to_string(t.tid) +
                       " is not a thread of a simulated process; nothing was changed",
                   ESRCH};
  auto decision = admission_.admit(requested, {});
  if (!decision) return decision.error();
  booked_[requested.name] = requested;
  decisions_[requested.name] = *decision;
  ++changes_;
  return *decision;
}

Status SimulatedHost::release(const std::string& name) {
  if (!booked_.erase(name)) return Error{"no VM named '" + name + "' holds a reservation", ENOENT};
  decisions_.erase(name);
  admission_.release(name);
  ++changes_;
  return Status::Ok();
}

void SimulatedHost::release_all() {
  while (!booked_.empty()) (void)release(std::string(booked_.begin()->first));
}

const VmReservationSpec* SimulatedHost::find(const std::string& name) const {
  auto it = booked_.find(name);
  return it == booked_.end() ? nullptr : &it->second;
}

const AdmissionDecision* SimulatedHost::decision(const std::string& name) const {
  auto it = decisions_.find(name);
  return it == decisions_.end() ? nullptr : &it->second;
}

Result<std::vector<DiscoveredThread>> SimulatedHost::discover_threads(pid_t pid) const {
  if (pid < kFirstPid || pid > kLastPid) return Error{"process " + std::to_string(pid) + " does not exist", ESRCH};
  std::vector<DiscoveredThread> out;
  out.push_back(DiscoveredThread{pid, "qemu", ThreadRole::kEmulator, -1});
  for (int i = 0; i < vcpus_; ++i)
    out.push_back(DiscoveredThread{pid * 64 + 1 + i, "CPU " + std::to_string(i) + "/KVM", ThreadRole::kVcpu, i});
  return out;
}

Result<pid_t> SimulatedHost::read_pidfile(const std::string& path) const {
  const auto slash = path.rfind('/');
  const pid_t pid = pid_t(std::atol(path.c_str() + (slash == std::string::npos ? 0 : slash + 1)));
  if (pid < kFirstPid || pid > kLastPid) return Error{"cannot read pidfile " + path + ": No such file or directory", ENOENT};
  return pid;
}

}  // namespace capsule::rsv
