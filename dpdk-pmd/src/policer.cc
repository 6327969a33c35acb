// Policer configuration checks; the metering itself is in meter.h.
#include "capsule/pmd/policer.h"

namespace capsule::pmd {

BytePolicerConfig BytePolicerConfig::egress_policer(uint64_t cir, uint64_t cbs) {
  return {Kind::kEgressPolicer, cir, cbs, 0, 0};
}

BytePolicerConfig BytePolicerConfig::trtcm_policer(uint64_t cir, uint64_t cbs, uint64_t eir, uint64_t ebs) {
  return {Kind::kTrtcm, cir, cbs, eir, ebs};
}

BytePolicerConfig BytePolicerConfig::ingress_policing(uint64_t rate_kbps, uint64_t burst_kb) {
  if (burst_kb == 0) burst_kb = 8000;  // OVS: 0 means the default of 8000 kb
  return egress_policer(rate_kbps * 1000 / 8, burst_kb * 1000 / 8);
}

Status validate(const BytePolicerConfig& c, const std::string& what) {
  using K = BytePolicerConfig::Kind;
  if (c.kind == K::kNone) return Status::Ok();
  if (c.cir == 0 && (c.kind == K::kEgressPolicer || c.eir == 0))
    return Error{what + ": rate (cir) is 0; a policer needs a positive rate (remove the policer to stop policing)", EINVAL};
  if (c.cir > 0 && c.cbs < kMinByteBurst)
    return Error{what + ": burst cbs " + std::to_string(c.cbs) + " bytes is below one full frame (" +
                     std::to_string(kMinByteBurst) + " bytes); such a policer would drop every large frame",
                 EINVAL};
  if (c.kind == K::kTrtcm) {
    if (c.eir > 0 && c.ebs < kMinByteBurst)
      return Error{what + ": excess burst ebs " + std::to_string(c.ebs) + " bytes is below one full frame (" +
                       std::to_string(kMinByteBurst) + " bytes)",
                   EINVAL};
    if (c.eir == 0 && c.ebs != 0)
      return Error{what + ": ebs is set but eir is 0", EINVAL};
  }
  return Status::Ok();
}

Status validate(const PacketPolicerConfig& c, const std::string& what) {
  if (c.pps == 0) {
    if (c.burst != 0) return Error{what + ": packet burst is set but the rate (pps) is 0", EINVAL};
    return Status::Ok();
  }
  if (c.burst == 0) return Error{what + ": packet burst is 0; it must be at least one packet", EINVAL};
  return Status::Ok();
}

std::string describe(const BytePolicerConfig& c) {
  switch (c.kind) {
    case BytePolicerConfig::Kind::kNone: return "none";
    case BytePolicerConfig::Kind::kEgressPolicer:
      return "egress-policer cir=" + std::to_string(c.cir) + " cbs=" + std::to_string(c.cbs);
    case BytePolicerConfig::Kind::kTrtcm:
      return "trtcm-policer cir=" + std::to_string(c.cir) + " cbs=" + std::to_string(c.cbs) +
             " eir=" + std::to_string(c.eir) + " ebs=" + std::to_string(c.ebs);
  }
  return "?";
}

}  // namespace capsule::pmd
