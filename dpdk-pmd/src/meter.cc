#include "meter.h"

#include <rte_cycles.h>

#include <algorithm>
#include <cstring>

namespace capsule::pmd::detail {
namespace {

// Cycles a bucket with `per_period` tokens every `period` cycles needs to
// collect the tokens of `us` microseconds, as tokens.
uint64_t credit_for(uint64_t period, uint64_t per_period, uint32_t us, double hz) {
  if (period == 0) return 0;
  const double steps = double(us) * 1e-6 * hz / double(period);
  return uint64_t(steps * double(per_period));
}

}  // namespace

Status DirectionMeter::configure(const DirectionQos& q, uint32_t max_wait_us, const std::string& what) {
  if (auto s = validate(q.bytes, what + " " + describe(q.bytes)); !s) return s;
  if (auto s = validate(q.packets, what + " packet-rate policer"); !s) return s;
  hz_ = double(rte_get_tsc_hz());
  const uint64_t now = rte_rdtsc();
  bytes_ = q.bytes.kind;
  // rte_meter computes each bucket's step and tokens per step (and checks
  // the numbers); the buckets below use exactly those.
  if (bytes_ == BytePolicerConfig::Kind::kEgressPolicer) {
    rte_meter_srtcm_params p{q.bytes.cir, q.bytes.cbs, 0};
    rte_meter_srtcm_profile prof{};
    if (int rc = rte_meter_srtcm_profile_config(&prof, &p); rc != 0)
      return Error{what + ": rte_meter refused " + describe(q.bytes) + " (" + std::strerror(-rc) + ")", -rc};
    c_.start(prof.cir_period, prof.cir_bytes_per_period, prof.cbs,
             credit_for(prof.cir_period, prof.cir_bytes_per_period, max_wait_us, hz_), now);
  } else if (bytes_ == BytePolicerConfig::Kind::kTrtcm) {
    rte_meter_trtcm_rfc4115_params p{q.bytes.cir, q.bytes.eir, q.bytes.cbs, q.bytes.ebs};
    rte_meter_trtcm_rfc4115_profile prof{};
    if (int rc = rte_meter_trtcm_rfc4115_profile_config(&prof, &p); rc != 0)
      return Error{what + ": rte_meter refused " + describe(q.bytes) + " (" + std::strerror(-rc) + ")", -rc};
    c_.start(prof.cir_period, prof.cir_bytes_per_period, prof.cbs,
             credit_for(prof.cir_period, prof.cir_bytes_per_period, max_wait_us, hz_), now);
    e_.start(prof.eir_period, prof.eir_bytes_per_period, prof.ebs,
             credit_for(prof.eir_period, prof.eir_bytes_per_period, max_wait_us, hz_), now);
  }
  pkts_on_ = q.packets.enabled();
  if (pkts_on_) {
    rte_meter_srtcm_params p{q.packets.pps, q.packets.burst, 0};
    rte_meter_srtcm_profile prof{};
    if (int rc = rte_meter_srtcm_profile_config(&prof, &p); rc != 0)
      return Error{what + ": rte_meter refused the packet-rate policer (" + std::string(std::strerror(-rc)) + ")", -rc};
    p_.start(prof.cir_period, prof.cir_bytes_per_period, prof.cbs,
             credit_for(prof.cir_period, prof.cir_bytes_per_period, max_wait_us, hz_), now);
  }
  return Status::Ok();
}

void DirectionMeter::refill(uint64_t tsc) {
  if (pkts_on_) p_.refill(tsc, waiting_);
  if (bytes_ != BytePolicerConfig::Kind::kNone) c_.refill(tsc, waiting_);
  if (bytes_ == BytePolicerConfig::Kind::kTrtcm) e_.refill(tsc, waiting_);
}

Verdict DirectionMeter::check(uint64_t tsc, uint32_t frame_len) {
  refill(tsc);
  if (pkts_on_ && !p_.has(1)) return Verdict::kDropPps;
  const uint32_t len = policed_len(frame_len);
  switch (bytes_) {
    case BytePolicerConfig::Kind::kNone: break;
    case BytePolicerConfig::Kind::kEgressPolicer:
      // srTCM with ebs 0: green or red.
      if (!c_.has(len)) return Verdict::kDropRed;
      c_.take(len);
      break;
    case BytePolicerConfig::Kind::kTrtcm:
      // RFC 4115: green from C, else yellow from E (passes), else red.
      if (c_.has(len)) c_.take(len);
      else if (e_.has(len)) e_.take(len);
      else return Verdict::kDropRed;
      break;
  }
  if (pkts_on_) p_.take(1);
  return Verdict::kPass;
}

uint64_t DirectionMeter::cycles_until_pass(uint64_t tsc, uint32_t frame_len) const {
  const uint32_t len = policed_len(frame_len);
  uint64_t t = 0;
  switch (bytes_) {
    case BytePolicerConfig::Kind::kNone: break;
    case BytePolicerConfig::Kind::kEgressPolicer: t = c_.cycles_until(tsc, len, waiting_); break;
    case BytePolicerConfig::Kind::kTrtcm:
      t = std::min(c_.cycles_until(tsc, len, waiting_), e_.cycles_until(tsc, len, waiting_));
      break;
  }
  if (pkts_on_) t = std::max(t, p_.cycles_until(tsc, 1, waiting_));
  return t;
}

double DirectionMeter::frames_per_second(uint32_t frame_len) const {
  double fps = 0;
  const double len = std::max(1.0, double(policed_len(frame_len)));
  switch (bytes_) {
    case BytePolicerConfig::Kind::kNone: fps = 1e12; break;
    case BytePolicerConfig::Kind::kEgressPolicer: fps = c_.rate(hz_) / len; break;
    case BytePolicerConfig::Kind::kTrtcm: fps = (c_.rate(hz_) + e_.rate(hz_)) / len; break;
  }
  if (pkts_on_) fps = std::min(fps, p_.rate(hz_));
  return fps;
}

Result<std::unique_ptr<Policers>> make_policers(const VmQos& qos, const std::string& vm) {
  auto p = std::make_unique<Policers>();
  p->max_wait_us = qos.max_wait_us;
  if (auto s = p->from_vm.configure(qos.from_vm, qos.max_wait_us, "VM '" + vm + "' from-VM"); !s) return s.error();
  if (auto s = p->to_vm.configure(qos.to_vm, qos.max_wait_us, "VM '" + vm + "' to-VM"); !s) return s.error();
  return p;
}

}  // namespace capsule::pmd::detail
