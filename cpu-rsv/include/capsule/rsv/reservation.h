// A VM's capsule in the kernel: its threads under SCHED_DEADLINE with their
// own budgets and one shared period, applied all or nothing, changed in
// place, and undone (policy, affinity, cpuset) on release, on destruction
// and when the process exits cleanly.
//
// Admission is not done here (see admission.h): this class only talks to the
// kernel. ReservationManager (manager.h) puts the two together.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "capsule/result.h"
#include "capsule/rsv/journal.h"
#include "capsule/rsv/partition.h"
#include "capsule/rsv/spec.h"
#include "capsule/rsv/thread_state.h"

namespace capsule::rsv {

// Called with every thread a change may touch (and its original state)
// after the threads were read and before the kernel is changed; an error
// stops the change before anything happened (see journal.h).
using JournalHook = std::function<Status(const std::vector<JournalThread>& threads)>;

// What adopting a journal record found, thread by thread.
struct AdoptReport {
  std::vector<std::string> adopted;  // "vcpu0 tid 123"
  std::vector<std::string> gone;     // exited (or its tid now names another thread)
  std::vector<std::string> not_ours; // not SCHED_DEADLINE now: never applied, or changed by hand
  std::vector<std::string> released; // ours, but could not be held (its partition): given back its original state
  std::string over_bound;            // admission's refusal of what the kernel holds, if it would refuse it now
};

class VmReservation {
 public:
  // Validates the spec, then puts every thread under SCHED_DEADLINE (always
  // with SCHED_FLAG_RESET_ON_FORK, so a reserved vCPU thread may fork). If any
  // thread cannot take its policy, the threads already changed get their old
  // state back and the error names the thread and the cause. `partitions` is
  // needed only for threads with a cpu >= 0.
  static Result<std::unique_ptr<VmReservation>> apply(const VmReservationSpec& spec,
                                                      PartitionSet* partitions = nullptr,
                                                      const JournalHook& journal = nullptr);

  // Takes over a reservation that a previous owner (a crashed capsuled) put
  // in force, from its journal record: threads that still live and are
  // SCHED_DEADLINE become members, with the original state the journal kept
  // (so release() restores what they had before capsule, not what they have
  // now); the kernel is not changed. Partitioned members re-take their
  // partition. ENOENT when no thread of the record is left to adopt.
  static Result<std::unique_ptr<VmReservation>> adopt(const JournalVm& record, PartitionSet* partitions,
                                                      AdoptReport* report);

  ~VmReservation();  // release()
  VmReservation(const VmReservation&) = delete;
  VmReservation& operator=(const VmReservation&) = delete;

  // Moves to a new spec in place: threads in both keep SCHED_DEADLINE and
  // get the new parameters, dropped threads are restored, new ones applied.
  // Shrinking happens before growing so the kernel's total never peaks above
  // both. On failure the old spec is back in force.
  Status change(const VmReservationSpec& spec, const JournalHook& journal = nullptr);

  // Compares the kernel with what this reservation put in force (policy and
  // parameters, partition cpuset) and names every difference: a thread an
  // operator changed by hand, a partition removed. Exited threads are not
  // drift (the VM is leaving).
  std::vector<std::string> drift() const;
  // Puts the reservation back in force where drift() found differences.
  Status repair();

  // Every member with its original state: what the journal records.
  std::vector<JournalThread> journal_threads() const;

  // Restores every thread. Idempotent. Threads that exited are skipped.
  Status release();

  bool active() const { return active_; }
  const VmReservationSpec& spec() const { return spec_; }
  std::vector<pid_t> tids() const;

  // Releases every reservation still alive in this process (what the atexit
  // hook calls; capsuled calls it on SIGTERM).
  static void release_all();

 private:
  struct Member {
    ThreadBudget budget;
    ThreadSnapshot saved;
    bool applied = false;
  };
  VmReservation(VmReservationSpec spec, PartitionSet* partitions);

  Status apply_member(Member& m, const VmReservationSpec& spec);
  Status set_params(Member& m, const VmReservationSpec& spec);
  Status restore_member(Member& m);

  VmReservationSpec spec_;
  PartitionSet* partitions_;
  CpusetFs fs_;
  std::vector<Member> members_;
  bool active_ = false;
};

// Sets SCHED_DEADLINE on a thread; when the kernel answers EBUSY while
// bandwidth that capsule just gave back is still booked (a thread that left
// SCHED_DEADLINE keeps its bandwidth until its 0-lag time, up to one period),
// waits for that to pass and tries again instead of failing.
Status set_deadline_params(pid_t tid, const ReservationSpec& spec);

// Sleeps until bandwidth this process released is surely free in the
// kernel. Run at exit, so that threads do not die while the kernel still
// books their bandwidth (which Linux 6.18 was seen to miscount).
void wait_for_released_bandwidth();

// Tells the retry logic that a DL thread with this relative deadline and
// bandwidth left SCHED_DEADLINE (or shrank) now.
void note_bandwidth_released(nanoseconds deadline, double bandwidth);

}  // namespace capsule::rsv
