// Run-time policers of one VM, owned by the VM's PMD thread and replaced as
// a whole (RCU) when the configuration changes.
//
// The colours are rte_meter's (and so OVS's): the buckets are filled with
// rte_meter's own arithmetic (whole bytes, added in whole steps of TSC
// cycles, from the profile rte_meter computes), srTCM colour blind with
// ebs 0 for egress-policer and packet rate, RFC 4115 trTCM colour blind for
// trtcm-policer. One thing differs, and only while frames wait for tokens
// (see policed_input.h): the buckets keep filling past their burst, by at
// most the policer's rate times VmQos::max_wait_us. A thread in a capsule
// runs in stretches; without this, every stretch it spends throttled with
// frames waiting would throw away the tokens of that time, and a policer
// whose burst is below rate x period would pass a fraction of its rate
// (measured: 2642 of 4057 frames/s, docs/dpdk-pmd.md). Tokens still come at
// the configured rate only, so no interval passes more than rate x time +
// burst.
#pragma once

#include <rte_meter.h>

#include <cstdint>
#include <limits>
#include <memory>

#include "capsule/pmd/datapath.h"

namespace capsule::pmd::detail {

enum class Verdict : uint8_t { kPass, kDropRed, kDropPps };  // yellow passes (RFC 4115)

inline constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

// One token bucket, with the step (cycles) and tokens per step rte_meter
// chose for its rate.
class TokenBucket {
 public:
  // Starts full at `now`. credit: how far past `depth` it may fill while
  // frames wait.
  void start(uint64_t period, uint64_t per_period, uint64_t depth, uint64_t credit, uint64_t now) {
    period_ = period ? period : 1;
    per_period_ = per_period;
    depth_ = depth;
    credit_ = credit;
    tokens_ = depth;
    time_ = now;
  }
  // Adds the whole steps since the last refill, up to the burst (or past it
  // by the credit while frames wait).
  void refill(uint64_t now, bool waiting) {
    const uint64_t cap = waiting ? depth_ + credit_ : depth_;
    if (now > time_) {
      const uint64_t n = (now - time_) / period_;
      time_ += n * period_;
      const uint64_t room = cap > tokens_ ? cap - tokens_ : 0;
      tokens_ += (per_period_ && n > room / per_period_) ? room : n * per_period_;
    }
    if (tokens_ > cap) tokens_ = cap;
  }
  bool has(uint64_t need) const { return tokens_ >= need; }
  void take(uint64_t n) { tokens_ -= n; }
  // Cycles from `now` (at or after the last refill) until `need` tokens are
  // there; kNever if they never can be.
  uint64_t cycles_until(uint64_t now, uint64_t need, bool waiting) const {
    if (tokens_ >= need) return 0;
    if (per_period_ == 0 || need > (waiting ? depth_ + credit_ : depth_)) return kNever;
    const uint64_t steps = (need - tokens_ + per_period_ - 1) / per_period_;
    const uint64_t at = time_ + steps * period_;
    return at > now ? at - now : 0;
  }
  // Tokens per second at `hz` cycles per second.
  double rate(double hz) const { return double(per_period_) * hz / double(period_); }

 private:
  uint64_t period_ = 1, per_period_ = 0, depth_ = 0, credit_ = 0;
  uint64_t tokens_ = 0, time_ = 0;
};

class DirectionMeter {
 public:
  // max_wait_us: VmQos::max_wait_us (how far the buckets may fill past their
  // burst while frames wait).
  Status configure(const DirectionQos& q, uint32_t max_wait_us, const std::string& what);
  bool enabled() const { return bytes_ != BytePolicerConfig::Kind::kNone || pkts_on_; }

  // The colour of a frame offered at `tsc`; a frame that passes takes its
  // tokens, one that does not takes none (so it can wait and be offered
  // again). frame_len: whole Ethernet frame; byte policers count it
  // without the 14-byte header, as OVS does. A frame must pass the packet
  // rate policer and the byte policer.
  Verdict check(uint64_t tsc, uint32_t frame_len);
  // After check() refused a frame at `tsc`: cycles until it would pass;
  // kNever if it never can.
  uint64_t cycles_until_pass(uint64_t tsc, uint32_t frame_len) const;
  // Frames wait for tokens (or no longer do): the buckets may fill past
  // their burst by the credit, or are held to it again.
  void set_waiting(bool waiting) { waiting_ = waiting; }
  // How many frames of this length the policer passes per second (green
  // and yellow): what sizes the queue that may wait.
  double frames_per_second(uint32_t frame_len) const;

 private:
  static uint32_t policed_len(uint32_t frame_len) { return frame_len > 14 ? frame_len - 14 : 0; }
  void refill(uint64_t tsc);

  BytePolicerConfig::Kind bytes_ = BytePolicerConfig::Kind::kNone;
  TokenBucket c_;  // committed: egress-policer, trtcm cir/cbs
  TokenBucket e_;  // excess: trtcm eir/ebs
  bool pkts_on_ = false;
  TokenBucket p_;  // packet rate
  bool waiting_ = false;
  double hz_ = 1;
};

struct Policers {
  DirectionMeter from_vm;
  DirectionMeter to_vm;
  uint32_t max_wait_us = 0;
};

// Validates and builds both directions; the message names the VM.
Result<std::unique_ptr<Policers>> make_policers(const VmQos& qos, const std::string& vm);

}  // namespace capsule::pmd::detail
