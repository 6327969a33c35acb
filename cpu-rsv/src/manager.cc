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
  if (vm && intended) state[vm->name] = journal_vm(*vm, *intended);
  return journal_->store(state);
}

void ReservationManager::record_in_force() const {
  detail::log_if_failed(write_journal(), "cannot record the reservations in force in the journal (an agent "
                                         "restarted after a crash would not take back what changed since)");
}

std::map<std::string, Result<AdoptReport>> ReservationManager::adopt(const JournalState& state) {
  std::map<std::string, Result<AdoptReport>> out;
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
    auto judged = admission_.admit((*r)->spec(), scan_deadline_threads());
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

Result<AdmissionDecision> ReservationManager::reserve(const VmReservationSpec& requested) {
  if (requested.name.empty()) return Error{"a VM reservation needs a name", EINVAL};
  if (Status st = validate(requested); !st) return st.error();
  auto decision = admission_.admit(requested, scan_deadline_threads());
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
    Status st = write_journal(&spec, &threads);
    if (!st) return Status(Error{"cannot record the change first: " + st.error().message, st.error().errnum});
    return st;
  };
  if (auto it = vms_.find(spec.name); it != vms_.end()) {
    if (Status st = it->second->change(spec, journal_ ? journal : nullptr); !st) {
      undo_booking();
      record_in_force();
      return st.error();
    }
  } else {
    auto r = VmReservation::apply(spec, &partitions_, journal_ ? journal : nullptr);
    if (!r) {
      undo_booking();
      record_in_force();
      return r.error();
    }
    vms_[spec.name] = std::move(*r);
  }
  decisions_[spec.name] = *decision;
  record_in_force();
  return *decision;
}

Status ReservationManager::release(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return Error{"no VM named '" + name + "' holds a reservation", ENOENT};
  Status st = it->second->release();
  vms_.erase(it);
  decisions_.erase(name);
  admission_.release(name);
  record_in_force();
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
