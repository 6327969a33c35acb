// Policers with the types and keys Open vSwitch uses, on rte_meter.
//
//   egress-policer  cir (bytes/s), cbs (bytes): srTCM with ebs = 0, colour
//                   blind, non-green dropped (OVS netdev-dpdk "egress-policer").
//   trtcm-policer   cir, cbs, eir, ebs: RFC 4115 trTCM, red dropped, green and
//                   yellow pass (OVS "trtcm-policer").
//   ingress policing  rate (kbps), burst (kb): an egress-policer with
//                   cir = rate * 1000 / 8, cbs = burst * 1000 / 8 (as OVS).
//   packet rate     pps, burst (packets): srTCM counting each packet as 1.
// Byte policers count the frame without its Ethernet header, as OVS does.
//
// Which traffic a policer applies to is explicit (DirectionQos::from_vm /
// to_vm), see datapath.h.
#pragma once

#include <cstdint>
#include <string>

#include "capsule/result.h"

namespace capsule::pmd {

// Smallest accepted burst: one full-size frame (1518 bytes) for byte
// policers, one packet for packet-rate policers.
inline constexpr uint64_t kMinByteBurst = 1518;

struct BytePolicerConfig {
  enum class Kind { kNone, kEgressPolicer, kTrtcm };
  Kind kind = Kind::kNone;
  uint64_t cir = 0;  // bytes per second
  uint64_t cbs = 0;  // bytes
  uint64_t eir = 0;  // trtcm only
  uint64_t ebs = 0;  // trtcm only

  static BytePolicerConfig egress_policer(uint64_t cir, uint64_t cbs);
  static BytePolicerConfig trtcm_policer(uint64_t cir, uint64_t cbs, uint64_t eir, uint64_t ebs);
  // OVS ingress_policing_rate / ingress_policing_burst. burst_kb 0 means
  // OVS's default of 8000 kb.
  static BytePolicerConfig ingress_policing(uint64_t rate_kbps, uint64_t burst_kb);
  bool enabled() const { return kind != Kind::kNone; }
};

struct PacketPolicerConfig {
  uint64_t pps = 0;    // 0 = off
  uint64_t burst = 0;  // packets
  bool enabled() const { return pps != 0; }
};

// Checks the numbers; `what` names the policer in the message
// ("from-VM egress-policer of vm1").
Status validate(const BytePolicerConfig& c, const std::string& what);
Status validate(const PacketPolicerConfig& c, const std::string& what);

std::string describe(const BytePolicerConfig& c);

}  // namespace capsule::pmd
