// The agent's reservations on the real kernel: rsv::ReservationManager and
// /proc thread discovery, unchanged.
#include "capsule/rsv/manager.h"
#include "reservations.h"

namespace capsule::agent {
namespace {

class KernelReservations final : public Reservations {
 public:
  explicit KernelReservations(const rsv::AdmissionConfig& config) : m_(config) {}

  Result<rsv::AdmissionDecision> reserve(const rsv::VmReservationSpec& spec) override { return m_.reserve(spec); }
  Status release(const std::string& name) override { return m_.release(name); }
  void release_all() override { m_.release_all(); }
  const rsv::VmReservationSpec* find(const std::string& name) const override {
    const auto* r = m_.find(name);
    return r ? &r->spec() : nullptr;
  }
  const rsv::AdmissionDecision* decision(const std::string& name) const override { return m_.decision(name); }
  std::vector<rsv::DomainLoad> load() const override { return m_.load(); }
  const rsv::AdmissionControl& admission() const override { return m_.admission(); }
  std::map<std::string, Result<rsv::AdoptReport>> adopt(const rsv::JournalState& state) override {
    return m_.adopt(state);
  }
  std::map<std::string, std::vector<std::string>> drift() const override { return m_.drift(); }
  Status repair(const std::string& name) override { return m_.repair(name); }
  void set_journal(std::optional<rsv::Journal> journal) override { m_.set_journal(std::move(journal)); }
  void begin_batch(const std::vector<rsv::VmReservationSpec>& expected) override { m_.begin_batch(expected); }
  void end_batch() override { m_.end_batch(); }
  Result<std::vector<rsv::DiscoveredThread>> discover_threads(pid_t pid) const override {
    return rsv::discover_threads(pid);
  }
  Result<pid_t> read_pidfile(const std::string& path) const override { return rsv::read_pidfile(path); }

 private:
  rsv::ReservationManager m_;
};

}  // namespace

std::unique_ptr<Reservations> kernel_reservations(const rsv::AdmissionConfig& config) {
  return std::make_unique<KernelReservations>(config);
}

}  // namespace capsule::agent
