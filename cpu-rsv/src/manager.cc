#include "capsule/rsv/manager.h"

namespace capsule::rsv {

ReservationManager::ReservationManager(AdmissionConfig config) : admission_(std::move(config)) {}

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

  if (auto it = vms_.find(spec.name); it != vms_.end()) {
    if (Status st = it->second->change(spec); !st) {
      undo_booking();
      return st.error();
    }
  } else {
    auto r = VmReservation::apply(spec, &partitions_);
    if (!r) {
      undo_booking();
      return r.error();
    }
    vms_[spec.name] = std::move(*r);
  }
  decisions_[spec.name] = *decision;
  return *decision;
}

Status ReservationManager::release(const std::string& name) {
  auto it = vms_.find(name);
  if (it == vms_.end()) return Error{"no VM named '" + name + "' holds a reservation", ENOENT};
  Status st = it->second->release();
  vms_.erase(it);
  decisions_.erase(name);
  admission_.release(name);
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

std::vector<std::string> ReservationManager::names() const {
  std::vector<std::string> v;
  for (const auto& [n, r] : vms_) v.push_back(n);
  return v;
}

std::vector<DomainLoad> ReservationManager::load() const { return admission_.load(scan_deadline_threads()); }

}  // namespace capsule::rsv
