#include "simulated_host.h"

#include <sstream>

#include "capsule/ovs/shim.h"

namespace capsule::agent {
namespace {

class SimulatedReservations final : public Reservations {
 public:
  explicit SimulatedReservations(const rsv::AdmissionConfig& config) : host_(config) {}

  Result<rsv::AdmissionDecision> reserve(const rsv::VmReservationSpec& spec) override { return host_.reserve(spec); }
  Status release(const std::string& name) override { return host_.release(name); }
  void release_all() override { host_.release_all(); }
  const rsv::VmReservationSpec* find(const std::string& name) const override { return host_.find(name); }
  const rsv::AdmissionDecision* decision(const std::string& name) const override { return host_.decision(name); }
  std::vector<rsv::DomainLoad> load() const override { return host_.load(); }
  const rsv::AdmissionControl& admission() const override { return host_.admission(); }
  // Nothing outlives a simulated agent, and nothing changes behind it.
  std::map<std::string, Result<rsv::AdoptReport>> adopt(const rsv::JournalState&) override { return {}; }
  std::map<std::string, std::vector<std::string>> drift() const override { return {}; }
  Status repair(const std::string&) override { return Status::Ok(); }
  void set_journal(std::optional<rsv::Journal>) override {}
  void begin_batch(const std::vector<rsv::VmReservationSpec>&) override {}
  void end_batch() override {}
  Result<std::vector<rsv::DiscoveredThread>> discover_threads(pid_t pid) const override {
    return host_.discover_threads(pid);
  }
  Result<pid_t> read_pidfile(const std::string& path) const override { return host_.read_pidfile(path); }
  bool real_kernel() const override { return false; }

 private:
  rsv::SimulatedHost host_;
};

}  // namespace

std::unique_ptr<Reservations> simulated_reservations(const rsv::AdmissionConfig& config) {
  return std::make_unique<SimulatedReservations>(config);
}

Status RecordingDatapath::add_vm(const VmNetConfig& config) {
  std::ostringstream what;
  for (const auto& p : config.ports) {
    what << " port " << p.name << " mac " << (p.mac.empty() ? "-" : p.mac);
    if (p.egress) {
      what << " " << p.egress->type;
      for (const auto& [k, v] : p.egress->params) what << " " << k << "=" << v;
    }
    if (p.ingress_kbps) what << " ingress " << p.ingress_kbps << "kbps";
    what << ";";
  }
  vms_[config.vm] = config;
  if (!tids_.count(config.vm)) tids_[config.vm] = next_tid_++;
  capsule_ovs_log(CAPSULE_LOG_INFO, ("datapath: VM " + config.vm + " configured:" + what.str()).c_str());
  return Status::Ok();
}

Status RecordingDatapath::remove_vm(const std::string& vm) {
  if (vms_.erase(vm)) capsule_ovs_log(CAPSULE_LOG_INFO, ("datapath: VM " + vm + " removed").c_str());
  tids_.erase(vm);
  return Status::Ok();
}

std::optional<pid_t> RecordingDatapath::pmd_tid(const std::string& vm) const {
  auto it = tids_.find(vm);
  if (it == tids_.end()) return std::nullopt;
  return it->second;
}

Result<VmDatapathStats> RecordingDatapath::stats(const std::string& vm) const {
  auto it = vms_.find(vm);
  if (it == vms_.end()) return Error{"no VM " + vm + " on the recording datapath", ENOENT};
  VmDatapathStats s;
  for (const auto& p : it->second.ports) s.ports[p.name].socket = p.vhost_path;
  return s;
}

}  // namespace capsule::agent
