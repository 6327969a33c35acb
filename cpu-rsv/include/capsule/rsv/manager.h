// ReservationManager: admission first, then the kernel. What capsuled (and
// the demo and benchmarks) use to give VMs their capsules: a VM is admitted
// against capsule's own accounting, placed (partitioned mode), and only then
// are its threads changed; a failure in the kernel un-books the admission.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "capsule/result.h"
#include "capsule/rsv/admission.h"
#include "capsule/rsv/journal.h"
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

  // Records every change in `journal` before the kernel sees it, and what
  // is in force after it (journal.h). Without one nothing is recorded.
  void set_journal(std::optional<Journal> journal) { journal_ = std::move(journal); }

  // Takes over the reservations a crashed predecessor recorded (a journal's
  // last state): adopts their live SCHED_DEADLINE threads without changing
  // them and books them. Per VM: what was adopted, or why nothing was (no
  // thread left; admission refused, in which case its threads are restored).
  // The journal is rewritten with what was adopted.
  std::map<std::string, Result<AdoptReport>> adopt(const JournalState& state);

  // What differs in the kernel from what capsule put in force, per VM, and
  // the repair of it (VmReservation::drift / repair).
  std::map<std::string, std::vector<std::string>> drift() const;
  Status repair(const std::string& name);

  // Restores the VM's threads and frees its bandwidth. Unknown VM: error.
  Status release(const std::string& name);
  void release_all();

  const VmReservation* find(const std::string& name) const;
  const AdmissionDecision* decision(const std::string& name) const;
  std::vector<std::string> names() const;
  std::vector<DomainLoad> load() const;
  const AdmissionControl& admission() const { return admission_; }
  PartitionSet& partitions() { return partitions_; }

 private:
  AdmissionControl admission_;
  PartitionSet partitions_;
  std::map<std::string, std::unique_ptr<VmReservation>> vms_;
  std::map<std::string, AdmissionDecision> decisions_;
  std::optional<Journal> journal_;

  // Writes what is in force, with `vm`'s entry replaced by `intended`
  // (threads a change is about to touch) when given.
  Status write_journal(const VmReservationSpec* vm = nullptr,
                       const std::vector<JournalThread>* intended = nullptr) const;
  // write_journal() after the kernel changed: a failure cannot undo the
  // change, so it is logged.
  void record_in_force() const;
};

}  // namespace capsule::rsv
