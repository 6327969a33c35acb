// The capsule DPDK datapath (dpdk-pmd) behind the agent's Datapath
// interface: one vhost-user port and one PMD thread per VM, policers in
// that thread, the PMD's tid handed to the agent for the VM's reservation.
// It runs inside capsule-datapathd (service.h), the process that outlives
// capsuled; capsuled reaches it through RemoteDatapath.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "capsule/pmd/datapath.h"
#include "datapath.h"

namespace capsule::agent {

class CapsuleDpdkDatapath final : public Datapath {
 public:
  explicit CapsuleDpdkDatapath(std::unique_ptr<pmd::Datapath> dp) : dp_(std::move(dp)) {}

  std::string name() const override { return "capsule-dpdk"; }
  bool attached() const override { return true; }
  std::string detail() const override;

  Status add_vm(const VmNetConfig& config) override;
  Status remove_vm(const std::string& vm) override;
  std::optional<pid_t> pmd_tid(const std::string& vm) const override;
  Result<VmDatapathStats> stats(const std::string& vm) const override;
  Result<std::string> pmd_stats_show(const std::string& vm) const override;
  Result<std::string> fdb_show() const override;
  std::vector<VmNetConfig> in_force() const override;
  // The VM's configuration in force, or nullptr.
  const VmNetConfig* find(const std::string& vm) const;
  void log_drops() { dp_->log_drops(); }

 private:
  struct Held {
    VmNetConfig net;     // as the agent gave it
    pmd::VmConfig cfg;   // as the datapath runs it
    int64_t since_ms;    // when its port was made
  };
  std::unique_ptr<pmd::Datapath> dp_;
  std::map<std::string, Held> held_;  // by VM name
};

// Host:dpdk_options and Host:uplink -> pmd::DatapathConfig, refusing keys
// and values it does not know.
Result<pmd::DatapathConfig> datapath_config(const DatapathSettings& settings);

// VmNetConfig (one port, with a MAC) -> pmd::VmConfig.
Result<pmd::VmConfig> vm_config(const VmNetConfig& config);

// "capsule" starts the DPDK datapath (the EAL on first use), anything else
// is refused with the reason.
Result<std::unique_ptr<CapsuleDpdkDatapath>> make_capsule_dpdk_datapath(const DatapathSettings& settings);

}  // namespace capsule::agent
