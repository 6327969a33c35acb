// ReservationManager: admission first, then the kernel. What capsuled (and
// the demo and benchmarks) use to give VMs their capsules: a VM is admitted
// against capsule's own accounting, placed (partitioned mode), and only then
// are its threads changed; a failure in the kernel un-books the admission.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
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

  // A pass over many VMs (capsuled's reconcile after one transaction added
  // hundreds) as one batch, so that its cost grows with the VMs that change,
  // not with their square:
  //  - admission reads the system's other SCHED_DEADLINE threads from /proc
  //    once, at the first reserve() of the batch, instead of once per VM; the
  //    threads this manager changes meanwhile are its own (booked or
  //    restored), never someone else's load;
  //  - `expected` (new VMs the pass is about to reserve) is recorded in the
  //    journal at once, with every thread's state now: a reserve() whose
  //    write-ahead record is exactly that one does not write it again, and
  //    the record of what is in force is written once, by end_batch().
  // A VM whose threads or placement differ from `expected` is recorded on
  // its own, as outside a batch. Without a journal only the scan is shared.
  void begin_batch(const std::vector<VmReservationSpec>& expected = {});
  void end_batch();

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

  // Batch state (begin_batch): the shared scan, the threads changed since
  // it, the write-ahead records already on disk, and whether what is in
  // force still has to be written.
  bool in_batch_ = false;
  std::optional<std::vector<DeadlineThread>> batch_scan_;
  std::set<pid_t> batch_touched_;
  std::map<std::string, JournalVm> batch_expected_;  // written by begin_batch()
  bool batch_dirty_ = false;

  // The system's other SCHED_DEADLINE threads, as admission needs them.
  std::vector<DeadlineThread> external_threads();
  // In a batch: the spec's threads were restored by this manager (released,
  // or left a changed VM), so the pass's scan no longer describes them.
  void touched(const VmReservationSpec& spec);
  // After a change: writes what is in force (in a batch: at end_batch()).
  void settled();

  // Writes what is in force, with `vm`'s entry replaced by `intended`
  // (threads a change is about to touch) when given.
  Status write_journal(const VmReservationSpec* vm = nullptr,
                       const std::vector<JournalThread>* intended = nullptr) const;
  // write_journal() after the kernel changed: a failure cannot undo the
  // change, so it is logged.
  void record_in_force() const;
};

}  // namespace capsule::rsv
