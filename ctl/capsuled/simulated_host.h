// A simulated host for scale runs (docs/scale.md), the pieces
// capsule-simhost (capsuled built with CAPSULE_SIMULATED_HOST) puts under
// the real agent: reservations booked by rsv::SimulatedHost without a system
// call, and a datapath that records what it is told and forwards nothing.
// A test double for scale only: capsuled never links this file.
#pragma once

#include <map>
#include <memory>

#include "capsule/rsv/simulated.h"
#include "datapath.h"
#include "reservations.h"

namespace capsule::agent {

// Reservations on a simulated host (capsule/rsv/simulated.h).
std::unique_ptr<Reservations> simulated_reservations(const rsv::AdmissionConfig& config);

// Accepts every VM configuration, keeps it, and logs one line per change
// ("datapath: VM <vm> configured: <ports>") that scale runs count. Each VM
// gets an invented datapath thread (a tid no real thread has), so network
// budgets are booked as on a real host.
class RecordingDatapath final : public Datapath {
 public:
  std::string name() const override { return "recording"; }
  bool attached() const override { return true; }
  std::string detail() const override { return "simulated host: records, forwards nothing"; }
  Status add_vm(const VmNetConfig& config) override;
  Status remove_vm(const std::string& vm) override;
  std::optional<pid_t> pmd_tid(const std::string& vm) const override;
  Result<VmDatapathStats> stats(const std::string& vm) const override;

 private:
  std::map<std::string, VmNetConfig> vms_;
  std::map<std::string, pid_t> tids_;
  pid_t next_tid_ = 2'000'000'001;  // above every simulated vCPU tid
};

}  // namespace capsule::agent
