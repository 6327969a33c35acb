// Run-time policers of one VM (rte_meter), owned by the VM's PMD thread and
// replaced as a whole (RCU) when the configuration changes.
#pragma once

#include <rte_meter.h>

#include <cstdint>
#include <memory>

#include "capsule/pmd/datapath.h"

namespace capsule::pmd::detail {

enum class Verdict : uint8_t { kPass, kDropYellow, kDropRed, kDropPps };

class DirectionMeter {
 public:
  Status configure(const DirectionQos& q, const std::string& what);
  bool enabled() const { return bytes_ != BytePolicerConfig::Kind::kNone || pkts_on_; }

  // frame_len: whole Ethernet frame; byte policers count it without the
  // 14-byte header, as OVS does.
  Verdict check(uint64_t tsc, uint32_t frame_len) {
    if (pkts_on_ && rte_meter_srtcm_color_blind_check(&pm_, &pp_, tsc, 1) != RTE_COLOR_GREEN)
      return Verdict::kDropPps;
    const uint32_t len = frame_len > 14 ? frame_len - 14 : 0;
    switch (bytes_) {
      case BytePolicerConfig::Kind::kNone: return Verdict::kPass;
      case BytePolicerConfig::Kind::kEgressPolicer: {
        auto c = rte_meter_srtcm_color_blind_check(&sm_, &sp_, tsc, len);
        return c == RTE_COLOR_GREEN ? Verdict::kPass : c == RTE_COLOR_YELLOW ? Verdict::kDropYellow : Verdict::kDropRed;
      }
      case BytePolicerConfig::Kind::kTrtcm: {
        auto c = rte_meter_trtcm_rfc4115_color_blind_check(&tm_, &tp_, tsc, len);
        return c == RTE_COLOR_RED ? Verdict::kDropRed : Verdict::kPass;
      }
    }
    return Verdict::kPass;
  }

 private:
  BytePolicerConfig::Kind bytes_ = BytePolicerConfig::Kind::kNone;
  rte_meter_srtcm_profile sp_{};
  rte_meter_srtcm sm_{};
  rte_meter_trtcm_rfc4115_profile tp_{};
  rte_meter_trtcm_rfc4115 tm_{};
  bool pkts_on_ = false;
  rte_meter_srtcm_profile pp_{};
  rte_meter_srtcm pm_{};
};

struct Policers {
  DirectionMeter from_vm;
  DirectionMeter to_vm;
};

// Validates and builds both directions; the message names the VM.
Result<std::unique_ptr<Policers>> make_policers(const VmQos& qos, const std::string& vm);

}  // namespace capsule::pmd::detail
