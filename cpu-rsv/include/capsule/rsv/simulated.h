// A simulated host, for scale runs only (docs/scale.md): what
// ReservationManager decides (validation, admission, placement, refusals
// with their reasons), booked in memory, without a single system call: no
// thread is read or changed, no cpuset made, /proc is never scanned. As
// OVN's ovn-heater runs real ovn-controllers on fake chassis, this lets a
// hundred real capsuled agents run on one machine against one database.
//
// Processes are invented from their pid: process P has `vcpus_per_process`
// vCPU threads "CPU <n>/KVM" with tids P * 64 + 1 ... (far above any real
// pid_max, so that no simulated tid names a real thread). A pid outside
// [kFirstPid, kLastPid] is "not running".
//
// Never used on a real host: only capsule-simhost (capsuled built for scale
// runs) links it in.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "capsule/result.h"
#include "capsule/rsv/admission.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/spec.h"

namespace capsule::rsv {

class SimulatedHost {
 public:
  static constexpr pid_t kFirstPid = 1'000'000, kLastPid = 30'000'000;

  explicit SimulatedHost(AdmissionConfig config, int vcpus_per_process = 1);

  // ReservationManager's verbs, on the books only.
  Result<AdmissionDecision> reserve(const VmReservationSpec& spec);
  Status release(const std::string& name);
  void release_all();
  const VmReservationSpec* find(const std::string& name) const;
  const AdmissionDecision* decision(const std::string& name) const;
  std::vector<DomainLoad> load() const { return admission_.load({}); }
  const AdmissionControl& admission() const { return admission_; }

  // discover_threads() and read_pidfile() for invented processes (a
  // pidfile path ends in the pid: ".../<pid>.pid").
  Result<std::vector<DiscoveredThread>> discover_threads(pid_t pid) const;
  Result<pid_t> read_pidfile(const std::string& path) const;

  // Changes made so far (reserve and release that succeeded).
  unsigned long long changes() const { return changes_; }

 private:
  AdmissionControl admission_;
  int vcpus_;
  std::map<std::string, VmReservationSpec> booked_;
  std::map<std::string, AdmissionDecision> decisions_;
  unsigned long long changes_ = 0;
};

}  // namespace capsule::rsv
