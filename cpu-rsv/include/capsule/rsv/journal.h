// The reservation journal: a write-ahead record of every thread capsule
// has changed in the kernel, with the state it had before, so that an owner
// that crashed (SIGKILL, OOM) and starts again adopts its own reservations
// and never loses a thread's original policy, affinity or cpuset.
//
// One JSON file, replaced atomically (write a temporary, fsync, rename,
// fsync the directory): a reader sees the old record or the new one, never
// half of one. ReservationManager writes it before each kernel change (with
// every thread the change may touch) and again after it (what is in force).
// It lives in the owner's run directory: a reboot, which ends every thread,
// also ends the journal.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "capsule/result.h"
#include "capsule/rsv/spec.h"
#include "capsule/rsv/thread_state.h"

namespace capsule::rsv {

// One thread capsule may have changed, and what it looked like before.
struct JournalThread {
  ThreadBudget budget;      // tid, runtime, cpu (>= 0: in that core's partition), role
  ThreadSnapshot original;  // policy, flags, nice/priority, affinity, cpuset, start time
};

// One VM's capsule: its period and deadline and every thread it may hold.
struct JournalVm {
  std::string name;
  nanoseconds period{0};
  nanoseconds deadline{0};
  bool reclaim = false;
  std::vector<JournalThread> threads;
};

using JournalState = std::map<std::string, JournalVm>;  // by VM name

class Journal {
 public:
  explicit Journal(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  // The last record. No file: an empty state. A file that does not parse is
  // an error naming the file (the caller decides: refuse to start, or keep it
  // aside for the operator and start empty).
  Result<JournalState> load() const;
  // Replaces the record atomically.
  Status store(const JournalState& state) const;

 private:
  std::string path_;
};

// JSON text of a state, and back (what load/store use; tests compare them).
std::string journal_to_json(const JournalState& state);
Result<JournalState> journal_from_json(const std::string& text);

}  // namespace capsule::rsv
