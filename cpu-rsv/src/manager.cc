#include "capsule/rsv/manager.h"

#include "rsv_log.h"

namespace capsule::rsv {

namespace {

JournalVm journal_vm(const VmReservationSpec& spec, std::vector<JournalThread> threads) {
  return JournalVm{spec.name, spec.period, spec.deadline, spec.reclaim, std::move(threads)};
}

}  // namespace

ReservationManager::ReservationManager(AdmissionConfig config) : admission_(std::move(config)) {}

Status ReservationManager::write_journal(const VmReservationSpec* vm,
                                         const std::vector<JournalThread>* intended) const {
  if (!journal_) return Status::Ok();
  JournalState state;
  for (const auto& [name, r] : vms_) state[name] = journal_vm(r->spec(), r->journal_threads());
  // A batch's write-ahead records stay until end_batch(): a VM of the batch
  // may be applied later without writing its own.
  for (const auto& [name, record] : batch_expected_) state.emplace(name, record);
  if (vm && intended) state[vm->name] = journal_vm(*vm, *intended);
  return journal_->store(state);
}

void ReservationManager::record_in_force() const {
  detail::log_if_failed(write_journal(), "cannot record the reservations in force in the journal (an agent "
                                         "restarted after a crash would not take back what changed since)");
}

std::map<std::string, Result<AdoptReport>> ReservationManager::adopt(const JournalState& state) {
  std::map<std::string, Result<AdoptReport>> out;
  // One scan for every VM: those adopted before are booked, not external.
  const auto external = scan_deadline_threads();
  for (const auto& [name, record] : state) {
    if (vms_.count(name)) {
      out.emplace(name, Error{"VM '" + name + "' already holds a reservation here", EEXIST});
      continue;
    }
    AdoptReport report;
    auto r = VmReservation::adopt(record, &partitions_, &report);
    if (!r) {
      out.emplace(name, r.error());
      continue;
    }
    // The kernel holds it: book it as it is. Over this host's bound now
    // (settings changed while no agent ran), it is said, not torn down;
    // the next change to the VM is judged as usual.
    auto judged = admission_.admit((*r)->spec(), external);
    if (!judged) report.over_bound = judged.error().message;
    decisions_[name] = judged ? *judged : admission_.book_in_force((*r)->spec());
    vms_[name] = std::move(*r);
    out.emplace(name, std::move(report));
  }
  record_in_force();
  return out;
}

std::map<std::string, std::vector<std::string>> ReservationManager::drift() const {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [name, r] : vms_)
    if (auto d = r->drift(); !d.empty()) out[name] = std::move(d);
  return out;
}

Status ReservationManager::repair(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return Error{"no VM named '" + name + "' holds a reservation", ENOENT};
  return it->second->repair();
}

ReservationManager::~ReservationManager() { release_all(); }

std::vector<DeadlineThread> ReservationManager::external_threads() {
  if (!in_batch_) return scan_deadline_threads();
  if (!batch_scan_) batch_scan_ = scan_deadline_threads();
  // Threads changed since the scan are this manager's: booked (admission
  // does not count them twice) or restored (no longer SCHED_DEADLINE).
  std::vector<DeadlineThread> out;
  for (const auto& t : *batch_scan_)
    if (!batch_touched_.count(t.tid)) out.push_back(t);
  return out;
}

void ReservationManager::touched(const VmReservationSpec& spec) {
  if (!in_batch_) return;
  for (const auto& t : spec.threads) batch_touched_.insert(t.tid);
}

void ReservationManager::begin_batch(const std::vector<VmReservationSpec>& expected) {
  end_batch();
  in_batch_ = true;
  if (!journal_) return;
  // A thread in two specs (two rows naming one process) or already held:
  // at most one VM may get it, so neither is recorded ahead.
  std::map<pid_t, int> claims;
  for (const auto& [name, r] : vms_)
    for (const auto& t : r->spec().threads) claims[t.tid] += 2;
  for (const auto& spec : expected)
    for (const auto& t : spec.threads) ++claims[t.tid];
  for (const auto& spec : expected) {
    if (vms_.count(spec.name) || spec.name.empty()) continue;
    JournalVm record = journal_vm(spec, {});
    bool ok = true;
    for (const auto& t : spec.threads) {
      if (claims[t.tid] > 1) {
        ok = false;
        break;
      }
      auto snap = ThreadSnapshot::capture(t.tid, partitions_.fs());
      // Gone, or someone else's deadline thread: apply() refuses it, and
      // records nothing either.
      if (!snap || snap->sched.is_deadline()) {
        ok = false;
        break;
      }
      record.threads.push_back(JournalThread{t, std::move(*snap)});
    }
    if (!ok) continue;
    batch_expected_[spec.name] = std::move(record);
  }
  if (batch_expected_.empty()) return;
  if (!write_journal()) batch_expected_.clear();  // then every VM writes its own, as outside a batch
}

void ReservationManager::end_batch() {
  if (!in_batch_) return;
  const bool write = batch_dirty_ || !batch_expected_.empty();
  in_batch_ = false;
  batch_scan_.reset();
  batch_touched_.clear();
  batch_expected_.clear();
  batch_dirty_ = false;
  if (write) record_in_force();  // what is in force, and nothing more
}

void ReservationManager::settled() {
  if (in_batch_)
    batch_dirty_ = true;
  else
    record_in_force();
}

Result<AdmissionDecision> ReservationManager::reserve(const VmReservationSpec& requested) {
  if (requested.name.empty()) return Error{"a VM reservation needs a name", EINVAL};
  if (Status st = validate(requested); !st) return st.error();
  auto decision = admission_.admit(requested, external_threads());
  if (!decision) return decision.error();

  // Apply the placement admission chose.
  VmReservationSpec spec = requested;
  if (admission_.config().mode == AdmissionMode::kPartitioned)
    for (auto& t : spec.threads)
      for (const auto& p : decision->threads)
        if (p.tid == t.tid) t.cpu = p.cpu;

  auto undo_booking = [&] {
    if (auto prev = decisions_.find(spec.name); prev != decisions_.end())
      (void)admission_.admit(vms_.at(spec.name)->spec(), {});  // re-book what is in force
    else
      admission_.release(spec.name);
  };

  // Write-ahead: the journal holds every thread the change may touch, with
  // its original state, before the kernel is changed.
  const JournalHook journal = [&](const std::vector<JournalThread>& threads) {
    // Already on disk, exactly so, by begin_batch().
    if (auto it = batch_expected_.find(spec.name);
        it != batch_expected_.end() &&
        journal_to_json({{spec.name, it->second}}) == journal_to_json({{spec.name, journal_vm(spec, threads)}}))
      return Status::Ok();
    Status st = write_journal(&spec, &threads);
    if (!st) return Status(Error{"cannot record the change first: " + st.error().message, st.error().errnum});
    return st;
  };
  if (auto it = vms_.find(spec.name); it != vms_.end()) {
    const VmReservationSpec before = it->second->spec();
    if (Status st = it->second->change(spec, journal_ ? journal : nullptr); !st) {
      undo_booking();
      settled();
      return st.error();
    }
    // Threads that left it were restored: no longer the deadline threads
    // this pass's scan saw (booked ones admission tells apart itself).
    touched(before);
  } else {
    auto r = VmReservation::apply(spec, &partitions_, journal_ ? journal : nullptr);
    if (!r) {
      undo_booking();
      settled();
      return r.error();
    }
    vms_[spec.name] = std::move(*r);
  }
  decisions_[spec.name] = *decision;
  settled();  // what is in force now
  return *decision;
}

Status ReservationManager::release(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return Error{"no VM named '" + name + "' holds a reservation", ENOENT};
  touched(it->second->spec());
  Status st = it->second->release();
  vms_.erase(it);
  decisions_.erase(name);
  admission_.release(name);
  settled();
  return st;
}

void ReservationManager::release_all() {
  // A copy: release() erases the map entry the key would refer to (ASan
  // caught the use after free, scripts/test --sanitize).
  while (!vms_.empty()) (void)release(std::string(vms_.begin()->first));
}

const VmReservation* ReservationManager::find(const std::string& name) const {
  auto it = vms_.find(name);
  return it == vms_.end() ? nullptr : it->second.get();
}

const AdmissionDecision* ReservationManager::decision(const std::string& name) const {
  auto it = decisions_.find(name);
  return it == decisions_.end() ? nullptr : &it->second;
}

std::vector<std::string> ReservationManager::names() const {
  std::vector<std::string> v;
  for (const auto& [n, r] : vms_) v.push_back(n);
  return v;
}

std::vector<DomainLoad> ReservationManager::load() const { return admission_.load(scan_deadline_threads()); }

}  // namespace capsule::rsv
