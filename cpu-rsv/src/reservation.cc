#include "capsule/rsv/reservation.h"

#include "capsule/rsv/cpuset.h"
#include "rsv_log.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace capsule::rsv {
namespace {

using Clock = std::chrono::steady_clock;

// When bandwidth capsule released is certainly free again in the kernel.
std::atomic<Clock::rep> g_release_horizon{0};

// Live reservations of this process, released by the exit hook. Leaked on
// purpose so it outlives every static destructor that might still use it.
struct Registry {
  std::mutex mu;
  std::set<VmReservation*> live;
};
Registry& registry() {
  static Registry* r = [] {
    std::atexit([] {
      VmReservation::release_all();
      wait_for_released_bandwidth();
    });
    return new Registry;
  }();
  return *r;
}

// The CPU a thread last ran on (/proc/<tid>/stat field 39), -1 if unknown.
int last_cpu(pid_t tid) {
  auto stat = read_text_file("/proc/" + std::to_string(tid) + "/stat");
  if (!stat) return -1;
  std::size_t pos = stat->rfind(')');  // the name may hold spaces
  if (pos == std::string::npos) return -1;
  pos += 2;
  for (int field = 3; field < 39; ++field) {
    pos = stat->find(' ', pos);
    if (pos == std::string::npos) return -1;
    ++pos;
  }
  return std::atoi(stat->c_str() + pos);
}

// A sleeping thread stays on the run queue of the CPU it last ran on until
// it wakes, and the kernel judges SCHED_DEADLINE against that CPU's root
// domain: a thread just pinned into a partition but still asleep on another
// CPU gets EPERM. Idle vCPUs wake often (timer ticks), so give it a moment.
void wait_until_on_cpu(pid_t tid, int cpu, std::chrono::milliseconds timeout) {
  const auto end = Clock::now() + timeout;
  while (last_cpu(tid) != cpu && Clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

// Whether a thread's scheduling is the reservation `want` (flags aside).
bool holds(const SchedParams& cur, const ReservationSpec& want) {
  return cur.is_deadline() && cur.runtime == want.runtime && cur.period == want.period &&
         cur.deadline == want.effective_deadline();
}

// "vcpu0 tid 123" for messages.
std::string describe_thread(const ThreadBudget& t) {
  return (t.role.empty() ? "thread" : t.role) + " tid " + std::to_string(t.tid);
}

SchedParams dl_params(const ReservationSpec& s) {
  SchedParams p;
  p.policy = kSchedDeadline;
  p.flags = kFlagResetOnFork | (s.reclaim ? kFlagReclaim : 0);
  p.runtime = s.runtime;
  p.deadline = s.effective_deadline();
  p.period = s.period;
  return p;
}

}  // namespace

void note_bandwidth_released(nanoseconds deadline, double bandwidth) {
  // The kernel frees a departing thread's bandwidth at its 0-lag time,
  // deadline - remaining_runtime / bandwidth. The deadline is at most D away;
  // a thread that overran its budget (budgets are enforced at the tick, up
  // to 10 ms late at HZ=100) has negative runtime, which pushes the 0-lag
  // time out by overrun / bandwidth. The margin covers timer slack.
  const double overrun_ns = 10e6 / std::max(bandwidth, 0.01);
  const auto when = (Clock::now() + deadline + nanoseconds(static_cast<long long>(overrun_ns)) +
                     std::chrono::milliseconds(20))
                        .time_since_epoch()
                        .count();
  auto cur = g_release_horizon.load();
  while (cur < when && !g_release_horizon.compare_exchange_weak(cur, when)) {
  }
}

void wait_for_released_bandwidth() {
  const auto horizon = Clock::time_point(Clock::duration(g_release_horizon.load()));
  if (Clock::now() < horizon) std::this_thread::sleep_until(horizon);
}

Status set_deadline_params(pid_t tid, const ReservationSpec& spec) {
  // Any process's thread that just left SCHED_DEADLINE holds its bandwidth
  // for a while too, and admission has already checked that the demand
  // fits what live threads hold: so EBUSY gets a short grace period even
  // without a release of our own, and a longer one after ours.
  constexpr auto kGrace = std::chrono::milliseconds(300);
  const SchedParams p = dl_params(spec);
  const auto start = Clock::now();
  bool repaired = false;
  for (;;) {
    Status st = set_sched_params(tid, p);
    if (st || st.error().errnum != EBUSY) return st;
    const auto own = Clock::time_point(Clock::duration(g_release_horizon.load()));
    if (Clock::now() < std::max(own, start + kGrace)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    // Linux 6.18 was seen to leave its root-domain DL total wrong (even
    // below zero) when threads exit while their bandwidth is still being
    // released; a sched-domain rebuild recounts it from the live tasks.
    if (!repaired && rebuild_kernel_dl_accounting()) {
      repaired = true;
      continue;
    }
    return Error{st.error().message + ", although capsule's own accounting found room: another "
                       "program holds SCHED_DEADLINE bandwidth that no live thread shows (released "
                       "moments ago, or booked by a kernel DL server)",
                   EBUSY};
  }
}

VmReservation::VmReservation(VmReservationSpec spec, PartitionSet* partitions)
    : spec_(std::move(spec)),
      partitions_(partitions),
      fs_(partitions ? partitions->fs() : CpusetFs::detect()) {}

Result<std::unique_ptr<VmReservation>> VmReservation::apply(const VmReservationSpec& spec,
                                                            PartitionSet* partitions,
                                                            const JournalHook& journal) {
  if (Status st = validate(spec); !st) return st.error();
  for (const auto& t : spec.threads)
    if (t.cpu >= 0 && !partitions)
      return Error{"VM '" + spec.name + "': thread " + std::to_string(t.tid) +
                       " asks for core " + std::to_string(t.cpu) + " but no partition set was given",
                   EINVAL};
  std::unique_ptr<VmReservation> r(new VmReservation(spec, partitions));
  // Snapshot every thread first: a thread that is already gone fails the
  // whole set before anything has changed.
  for (const auto& t : spec.threads) {
    auto snap = ThreadSnapshot::capture(t.tid, r->fs_);
    if (!snap)
      return Error{"VM '" + spec.name + "': thread " + std::to_string(t.tid) +
                       (t.role.empty() ? "" : " (" + t.role + ")") + ": " + snap.error().message +
                       "; nothing was changed",
                   snap.error().errnum};
    if (snap->sched.is_deadline())
      return Error{"VM '" + spec.name + "': thread " + std::to_string(t.tid) + " (" + snap->comm +
                       ") is already SCHED_DEADLINE under someone else's control; nothing was changed",
                   EBUSY};
    r->members_.push_back(Member{t, std::move(*snap), false});
  }
  if (journal)
    if (Status st = journal(r->journal_threads()); !st)
      return Error{"VM '" + spec.name + "': " + st.error().message + "; nothing was changed", st.error().errnum};
  for (auto& m : r->members_) {
    if (Status st = r->apply_member(m, spec); !st) {
      for (auto it = r->members_.rbegin(); it != r->members_.rend(); ++it)
        if (it->applied)
          detail::log_if_failed(r->restore_member(*it), "VM '" + spec.name + "': undoing a failed reservation: " +
                                                             "cannot restore " + describe_thread(it->budget));
      return Error{"VM '" + spec.name + "': thread " + std::to_string(m.budget.tid) + " (" +
                       m.saved.comm + (m.budget.role.empty() ? "" : ", " + m.budget.role) +
                       "): " + st.error().message + "; every thread of the VM was left as it was",
                   st.error().errnum};
    }
  }
  r->active_ = true;
  {
    auto& reg = registry();
    std::lock_guard lk(reg.mu);
    reg.live.insert(r.get());
  }
  return r;
}

Status VmReservation::apply_member(Member& m, const VmReservationSpec& spec) {
  m.applied = true;  // from here on, restore_member() undoes whatever happened
  if (m.budget.cpu >= 0) {
    auto part = partitions_->acquire(m.budget.cpu);
    if (!part) {
      m.applied = false;
      return part.error();
    }
    if (Status st = partitions_->add_thread(m.budget.cpu, m.budget.tid); !st) return st;
    wait_until_on_cpu(m.budget.tid, m.budget.cpu, std::chrono::milliseconds(200));
  }
  return set_params(m, spec);
}

Status VmReservation::set_params(Member& m, const VmReservationSpec& spec) {
  // A reused tid is another thread: never touch it.
  if (!m.saved.alive())
    return Error{"thread " + std::to_string(m.budget.tid) + " does not exist (it exited)", ESRCH};
  return set_deadline_params(m.budget.tid, spec.thread_spec(m.budget));
}

Status VmReservation::restore_member(Member& m) {
  if (!m.applied) return Status::Ok();
  auto cur = get_sched_params(m.budget.tid);
  Status st = m.saved.restore(fs_);
  if (cur && cur->is_deadline()) note_bandwidth_released(cur->deadline, cur->bandwidth());
  if (m.budget.cpu >= 0 && partitions_)
    detail::log_if_failed(partitions_->release(m.budget.cpu),
                          "cannot release the partition of core " + std::to_string(m.budget.cpu));
  m.applied = false;
  return st;
}

std::vector<JournalThread> VmReservation::journal_threads() const {
  std::vector<JournalThread> v;
  for (const auto& m : members_) v.push_back(JournalThread{m.budget, m.saved});
  return v;
}

Result<std::unique_ptr<VmReservation>> VmReservation::adopt(const JournalVm& record, PartitionSet* partitions,
                                                            AdoptReport* report) {
  AdoptReport local;
  AdoptReport& rep = report ? *report : local;
  VmReservationSpec spec;
  spec.name = record.name;
  spec.period = record.period;
  spec.deadline = record.deadline;
  spec.reclaim = record.reclaim;
  std::unique_ptr<VmReservation> r(new VmReservation(spec, partitions));
  for (const auto& t : record.threads) {
    const std::string who = describe_thread(t.budget);
    if (!t.original.alive()) {
      rep.gone.push_back(who);
      continue;
    }
    auto cur = get_sched_params(t.budget.tid);
    if (!cur || !cur->is_deadline()) {
      rep.not_ours.push_back(who);
      continue;
    }
    if (t.budget.cpu >= 0) {
      auto part = partitions ? partitions->adopt(t.budget.cpu)
                             : Result<std::string>(Error{"no partition set to hold core " + std::to_string(t.budget.cpu), EINVAL});
      if (!part) {
        // Ours, and it cannot be held as it was: never leave it under
        // SCHED_DEADLINE with nobody to restore it.
        detail::log_if_failed(t.original.restore(r->fs_), "adopting: cannot give back " + who + " its own state");
        rep.released.push_back(who + " (" + part.error().message + ")");
        continue;
      }
    }
    // What is in force, not what the record asked for: a change the crash
    // cut short is finished by the next reconcile.
    ThreadBudget budget = t.budget;
    budget.runtime = cur->runtime;
    if (r->members_.empty()) {
      r->spec_.period = cur->period;
      r->spec_.deadline = cur->deadline == cur->period ? nanoseconds(0) : cur->deadline;
      r->spec_.reclaim = (cur->flags & kFlagReclaim) != 0;
    }
    r->members_.push_back(Member{budget, t.original, true});
    r->spec_.threads.push_back(budget);
    rep.adopted.push_back(who);
  }
  if (r->members_.empty())
    return Error{"VM '" + record.name + "': no thread of its capsule is left to adopt", ENOENT};
  r->active_ = true;
  auto& reg = registry();
  std::lock_guard lk(reg.mu);
  reg.live.insert(r.get());
  return r;
}

std::vector<std::string> VmReservation::drift() const {
  std::vector<std::string> found;
  if (!active_) return found;
  for (const auto& m : members_) {
    if (!m.applied || !m.saved.alive()) continue;
    const std::string who = describe_thread(m.budget);
    const ReservationSpec want = spec_.thread_spec(m.budget);
    auto cur = get_sched_params(m.budget.tid);
    if (!cur) continue;
    if (!cur->is_deadline()) {
      found.push_back(who + " is " + policy_name(cur->policy) + ", not SCHED_DEADLINE (changed outside capsule)");
    } else if (!holds(*cur, want)) {
      found.push_back(who + " has runtime " + format_duration(cur->runtime) + " every " +
                      format_duration(cur->period) + ", not the " + format_duration(want.runtime) + " every " +
                      format_duration(want.period) + " capsule set (changed outside capsule)");
    }
    if (m.budget.cpu >= 0 && fs_.available()) {
      const std::string part = PartitionSet::partition_name(m.budget.cpu);
      auto cs = fs_.thread_cpuset(m.budget.tid);
      if (cs && *cs != part)
        found.push_back(who + " is in cpuset " + *cs + ", not its partition " + part +
                        " (removed or moved outside capsule)");
    }
  }
  return found;
}

Status VmReservation::repair() {
  if (!active_) return Status::Ok();
  for (auto& m : members_) {
    if (!m.applied || !m.saved.alive()) continue;
    if (m.budget.cpu >= 0 && partitions_) {
      const std::string part = PartitionSet::partition_name(m.budget.cpu);
      auto cs = fs_.thread_cpuset(m.budget.tid);
      if (cs && *cs != part) {
        // A DL thread must leave SCHED_DEADLINE before it may change cpuset.
        SchedParams other;
        (void)set_sched_params(m.budget.tid, other);
        Status st = partitions_->ensure(m.budget.cpu);
        if (st) st = partitions_->add_thread(m.budget.cpu, m.budget.tid);
        if (!st) {
          // Its budget back where it is, at least.
          detail::log_if_failed(set_params(m, spec_), "cannot restore the budget of " + describe_thread(m.budget));
          return st;
        }
        wait_until_on_cpu(m.budget.tid, m.budget.cpu, std::chrono::milliseconds(200));
      }
    }
    if (auto cur = get_sched_params(m.budget.tid); cur && holds(*cur, spec_.thread_spec(m.budget))) continue;
    if (Status st = set_params(m, spec_); !st)
      return Error{"cannot put " + describe_thread(m.budget) + " back under its reservation: " + st.error().message,
                   st.error().errnum};
  }
  return Status::Ok();
}

std::vector<pid_t> VmReservation::tids() const {
  std::vector<pid_t> v;
  for (const auto& m : members_) v.push_back(m.budget.tid);
  return v;
}

Status VmReservation::change(const VmReservationSpec& next, const JournalHook& journal) {
  if (!active_) return Error{"VM '" + spec_.name + "' has been released", EINVAL};
  if (Status st = validate(next); !st) return st;
  const VmReservationSpec prev = spec_;
  std::map<pid_t, const ThreadBudget*> want;
  for (const auto& t : next.threads) want[t.tid] = &t;

  // Plan: which members stay (and whether they shrink), leave, or join.
  std::vector<Member*> leaving, shrinking, growing;
  for (auto& m : members_) {
    auto it = want.find(m.budget.tid);
    if (it == want.end() || it->second->cpu != m.budget.cpu) {
      leaving.push_back(&m);
      continue;
    }
    const double old_bw = prev.thread_spec(m.budget).bandwidth();
    const double new_bw = next.thread_spec(*it->second).bandwidth();
    (new_bw <= old_bw ? shrinking : growing).push_back(&m);
  }
  std::vector<ThreadBudget> joining;
  for (const auto& t : next.threads) {
    bool have = false;
    for (auto& m : members_) have |= (m.budget.tid == t.tid && m.budget.cpu == t.cpu);
    if (!have) joining.push_back(t);
  }
  std::vector<Member> joined;
  for (const auto& t : joining) {
    auto snap = ThreadSnapshot::capture(t.tid, fs_);
    if (!snap) return Error{"VM '" + next.name + "': thread " + std::to_string(t.tid) + ": " +
                                snap.error().message + "; the reservation was not changed",
                            snap.error().errnum};
    // A thread moving between cores is already ours: restore to its true origin.
    for (auto* l : leaving)
      if (l->budget.tid == t.tid) snap = l->saved;
    joined.push_back(Member{t, std::move(*snap), false});
  }
  if (journal) {
    // Every thread this change may touch, each once, with its true origin.
    std::vector<JournalThread> touched = journal_threads();
    for (const auto& j : joined) {
      bool have = false;
      for (const auto& t : touched) have |= t.budget.tid == j.budget.tid;
      if (!have) touched.push_back(JournalThread{j.budget, j.saved});
    }
    if (Status st = journal(touched); !st)
      return Error{"VM '" + next.name + "': " + st.error().message + "; the reservation was not changed",
                   st.error().errnum};
  }

  // Roll back everything done so far to the previous spec.
  std::vector<Member*> changed;
  auto rollback = [&]() {
    for (auto* m : changed)
      detail::log_if_failed(set_params(*m, prev), "VM '" + next.name + "': undoing a failed change: cannot restore " +
                                                      describe_thread(m->budget));
    for (auto& j : joined)
      detail::log_if_failed(restore_member(j), "VM '" + next.name + "': undoing a failed change: cannot restore " +
                                                   describe_thread(j.budget));
  };
  auto fail = [&](pid_t tid, const Status& st) {
    rollback();
    return Error{"VM '" + next.name + "': thread " + std::to_string(tid) + ": " + st.error().message +
                     "; the previous reservation (" + std::to_string(prev.threads.size()) +
                     " threads) is still in force",
                 st.error().errnum};
  };
  for (auto* m : shrinking) {
    const ThreadBudget nb = *want[m->budget.tid];
    if (Status st = set_deadline_params(m->budget.tid, next.thread_spec(nb)); !st)
      return fail(m->budget.tid, st);
    note_bandwidth_released(prev.effective_deadline(), prev.thread_spec(m->budget).bandwidth());
    changed.push_back(m);
  }
  for (auto* m : growing) {
    const ThreadBudget nb = *want[m->budget.tid];
    if (Status st = set_deadline_params(m->budget.tid, next.thread_spec(nb)); !st)
      return fail(m->budget.tid, st);
    changed.push_back(m);
  }
  // Leaving threads go before joining ones: a thread moving to another core
  // must leave its old partition (and SCHED_DEADLINE) first.
  for (auto* m : leaving)
    detail::log_if_failed(restore_member(*m), "VM '" + next.name + "': cannot restore " + describe_thread(m->budget) +
                                                   ", which leaves the reservation");
  for (auto& j : joined) {
    if (Status st = apply_member(j, next); !st) {
      Status err = fail(j.budget.tid, st);
      for (auto* m : leaving)
        detail::log_if_failed(apply_member(*m, prev), "VM '" + next.name + "': undoing a failed change: cannot put " +
                                                          describe_thread(m->budget) + " back");
      return err;
    }
  }
  // Commit.
  std::vector<Member> kept;
  for (auto& m : members_) {
    if (std::find(leaving.begin(), leaving.end(), &m) != leaving.end()) continue;
    m.budget = *want[m.budget.tid];
    kept.push_back(std::move(m));
  }
  for (auto& j : joined) kept.push_back(std::move(j));
  members_ = std::move(kept);
  spec_ = next;
  return Status::Ok();
}

Status VmReservation::release() {
  if (!active_) return Status::Ok();
  Status first;
  for (auto it = members_.rbegin(); it != members_.rend(); ++it)
    if (Status st = restore_member(*it); !st && first) first = st;
  active_ = false;
  auto& reg = registry();
  std::lock_guard lk(reg.mu);
  reg.live.erase(this);
  return first;
}

VmReservation::~VmReservation() {
  detail::log_if_failed(release(), "VM '" + spec_.name + "': releasing its reservation");
}

void VmReservation::release_all() {
  auto& reg = registry();
  std::vector<VmReservation*> live;
  {
    std::lock_guard lk(reg.mu);
    live.assign(reg.live.begin(), reg.live.end());
  }
  for (auto* r : live) detail::log_if_failed(r->release(), "VM '" + r->spec_.name + "': releasing its reservation");
}

}  // namespace capsule::rsv
