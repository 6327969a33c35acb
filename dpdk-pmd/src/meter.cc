#include "meter.h"

namespace capsule::pmd::detail {

Status DirectionMeter::configure(const DirectionQos& q, const std::string& what) {
  if (auto s = validate(q.bytes, what + " " + describe(q.bytes)); !s) return s;
  if (auto s = validate(q.packets, what + " packet-rate policer"); !s) return s;
  bytes_ = q.bytes.kind;
  if (bytes_ == BytePolicerConfig::Kind::kEgressPolicer) {
    rte_meter_srtcm_params p{q.bytes.cir, q.bytes.cbs, 0};
    if (int rc = rte_meter_srtcm_profile_config(&sp_, &p); rc != 0)
      return Error{what + ": rte_meter refused " + describe(q.bytes) + " (" + std::strerror(-rc) + ")", -rc};
    rte_meter_srtcm_config(&sm_, &sp_);
  } else if (bytes_ == BytePolicerConfig::Kind::kTrtcm) {
    rte_meter_trtcm_rfc4115_params p{q.bytes.cir, q.bytes.eir, q.bytes.cbs, q.bytes.ebs};
    if (int rc = rte_meter_trtcm_rfc4115_profile_config(&tp_, &p); rc != 0)
      return Error{what + ": rte_meter refused " + describe(q.bytes) + " (" + std::strerror(-rc) + ")", -rc};
    rte_meter_trtcm_rfc4115_config(&tm_, &tp_);
  }
  pkts_on_ = q.packets.enabled();
  if (pkts_on_) {
    rte_meter_srtcm_params p{q.packets.pps, q.packets.burst, 0};
    if (int rc = rte_meter_srtcm_profile_config(&pp_, &p); rc != 0)
      return Error{what + ": rte_meter refused the packet-rate policer (" + std::string(std::strerror(-rc)) + ")", -rc};
    rte_meter_srtcm_config(&pm_, &pp_);
  }
  return Status::Ok();
}

Result<std::unique_ptr<Policers>> make_policers(const VmQos& qos, const std::string& vm) {
  auto p = std::make_unique<Policers>();
  if (auto s = p->from_vm.configure(qos.from_vm, "VM '" + vm + "' from-VM"); !s) return s.error();
  if (auto s = p->to_vm.configure(qos.to_vm, "VM '" + vm + "' to-VM"); !s) return s.error();
  return p;
}

}  // namespace capsule::pmd::detail
