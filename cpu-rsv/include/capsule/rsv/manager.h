// ReservationManager: admission first, then the kernel. What capsuled (and
// the demo and benchmarks) use to give VMs their capsules: a VM is admitted
// against capsule's own accounting, placed (partitioned mode), and only then
// are its threads changed; a failure in the kernel un-books the admission.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "capsule/result.h"
#include "capsule/rsv/admission.h"
#include "capsule/rsv/partition.h"
#include "capsule/rsv/reservation.h"

namespace capsule::rsv {

class ReservationManager {
 public:
  explicit ReservationManager(AdmissionConfig config = {});
  ~ReservationManager();  // releases every VM, then removes partitions
  ReservationManager(const ReservationManager&) = delete;
  ReservationManager& operator=(const ReservationManager&) = delete;

  // Admits and applies a new VM, or changes an existing one in place.
  // Returns the placement that is now in force. On any error nothing that
  // was in force before has changed.
  Result<AdmissionDecision> reserve(const VmReservationSpec& spec);

  // Restores the VM's threads and frees its bandwidth. Unknown VM: error.
  Status release(const std::string& name);
  void release_all();

  const VmReservation* find(const std::string& name) const;
  std::vector<std::string> names() const;
  std::vector<DomainLoad> load() const;
  const AdmissionControl& admission() const { return admission_; }
  PartitionSet& partitions() { return partitions_; }

 private:
  AdmissionControl admission_;
  PartitionSet partitions_;
  std::map<std::string, std::unique_ptr<VmReservation>> vms_;
  std::map<std::string, AdmissionDecision> decisions_;
};

}  // namespace capsule::rsv
