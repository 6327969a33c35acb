// The policer in front of one input of a VM's thread: the VM's virtio tx
// ring (from_vm), or the datapath's ring for the VM (to_vm).
//
// A frame the policer cannot pass yet is not dropped at once, as OVS's PMD
// drops it: it waits, first in a small queue here, behind it in the input
// itself (in the guest's own tx ring: back-pressure, as behind a NIC that
// shapes), until the tokens come. The thread sleeps until then (a timer,
// see Pmd::park), and the buckets keep filling while frames wait
// (meter.h), so a thread that runs in stretches, or is woken late, still
// passes the configured rate, whatever the burst.
//
// Traffic that really exceeds the rate is dropped as OVS drops it, by
// colour: a queue longer than the policer passes in VmQos::max_wait_us
// loses its oldest frames. With max_wait_us = 0 nothing waits: every frame
// is policed when it is taken, exactly as OVS does.
#pragma once

#include <rte_mbuf.h>

#include <algorithm>
#include <cstdint>

#include "core.h"
#include "meter.h"

namespace capsule::pmd::detail {

struct PolicerDrops {
  uint64_t red = 0, pps = 0;
  void count(Verdict v) {
    if (v == Verdict::kDropRed) ++red;
    else if (v == Verdict::kDropPps) ++pps;
  }
};

class PolicedInput {
 public:
  PolicedInput() = default;
  PolicedInput(const PolicedInput&) = delete;
  PolicedInput& operator=(const PolicedInput&) = delete;
  ~PolicedInput() { clear(); }

  // Frees what waits here (the device went away, the thread stops);
  // returns how many.
  unsigned clear() {
    const unsigned n = n_;
    for (unsigned i = 0; i < n_; ++i) rte_pktmbuf_free(q_[head_ + i]);
    head_ = n_ = 0;
    waiting_ = false;
    return n;
  }
  // Frames wait for tokens: the input need not be polled before wake_tsc().
  bool waiting() const { return waiting_; }
  uint64_t wake_tsc() const { return wake_tsc_; }

  // Takes from `src` (Source: unsigned take(rte_mbuf**, unsigned),
  // unsigned backlog() = frames still in the input, unsigned capacity())
  // and puts into `out` (up to `max`, oldest first) what `meter` passes at
  // `now`; a null meter passes everything. Counts the frames dropped in
  // `drops`; returns how many it passed, and in *dropped how many it
  // dropped. At most one burst of drops per call: passing comes first.
  template <class Source>
  unsigned pull(Source& src, DirectionMeter* meter, uint32_t max_wait_us, uint64_t now, rte_mbuf** out, unsigned max,
                PolicerDrops& drops, unsigned* dropped) {
    waiting_ = false;
    *dropped = 0;
    if (!meter && n_ == 0) return src.take(out, max);  // unpoliced: straight through
    unsigned passed = 0, lost = 0;
    int64_t queued = -1;  // frames here and behind in the input, read at the first refusal
    unsigned limit = 0;
    while (passed < max && lost < kBurst) {
      if (n_ == 0 && !refill(src)) break;
      rte_mbuf* m = q_[head_];
      const uint32_t len = rte_pktmbuf_pkt_len(m);
      const Verdict v = meter ? meter->check(now, len) : Verdict::kPass;
      if (v == Verdict::kPass) {
        out[passed++] = m;
        pop();
        if (queued > 0) --queued;
        continue;
      }
      // The oldest frame waits for tokens, unless more is queued than the
      // policer passes in max_wait_us, or it is larger than the bucket can
      // ever hold: then it is dropped as OVS drops it.
      const uint64_t wait = meter->cycles_until_pass(now, len);
      if (wait != kNever && queued < 0) {
        queued = int64_t(n_) + int64_t(src.backlog());
        limit = hold_limit(*meter, max_wait_us, len, src.capacity());
      }
      if (wait == kNever || queued > int64_t(limit)) {
        drops.count(v);
        rte_pktmbuf_free(m);
        pop();
        ++lost;
        if (queued > 0) --queued;
        continue;
      }
      waiting_ = true;
      wake_tsc_ = now + wait;
      break;
    }
    // While anything is queued the buckets may fill past their burst: frames
    // wait here, or the input may hold more (this pull stopped while taking).
    if (meter) meter->set_waiting(n_ > 0 || passed == max || lost == kBurst);
    *dropped = lost;
    return passed;
  }

 private:
  template <class Source>
  bool refill(Source& src) {
    head_ = 0;
    n_ = src.take(q_, kBurst);
    return n_ > 0;
  }
  void pop() {
    ++head_;
    if (--n_ == 0) head_ = 0;
  }
  // Frames the policer passes in max_wait_us at this frame length; at most
  // half of the input (the rest stays free for what arrives meanwhile).
  static unsigned hold_limit(const DirectionMeter& m, uint32_t max_wait_us, uint32_t len, unsigned capacity) {
    if (max_wait_us == 0) return 0;
    const double frames = m.frames_per_second(len) * double(max_wait_us) * 1e-6;
    return unsigned(std::clamp(frames, 1.0, std::max(1.0, double(capacity / 2))));
  }

  rte_mbuf* q_[kBurst];
  unsigned head_ = 0, n_ = 0;
  bool waiting_ = false;
  uint64_t wake_tsc_ = 0;
};

}  // namespace capsule::pmd::detail
