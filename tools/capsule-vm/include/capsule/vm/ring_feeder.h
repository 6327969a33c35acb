// A traffic generator "on the wire": feeds frames into an rte_ring (the rx
// ring of a net_ring uplink) as fast as the ring drains, from a thread of
// its own. Used by the benchmarks and by capsule-calibrate to offer a VM
// more than its datapath thread can deliver. Needs a running EAL.
#pragma once

#include <rte_mbuf.h>
#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace capsule::vm {

// Feeds frames for `dst` into a ring (an uplink's rx ring, "the wire") as fast
// as it drains, from a thread of its own (on `cpu` when >= 0). The same
// `distinct` mbufs go round with their reference count raised, so it costs
// little. A few (the default) stay in the cache of whoever copies them; many
// (thousands: more than the last-level cache holds) make the receiver read
// cold memory, as frames fresh from a NIC or another VM are.
class RingFeeder {
 public:
  RingFeeder(rte_ring* ring, const std::string& dst_mac, uint32_t frame_size, int cpu = -1, unsigned distinct = 64)
      : RingFeeder(ring, std::vector<std::string>{dst_mac}, frame_size, cpu, "02:00:00:00:00:ff", distinct) {}
  // Frames for each destination MAC in turn, from `src_mac`.
  RingFeeder(rte_ring* ring, const std::vector<std::string>& dst_macs, uint32_t frame_size, int cpu = -1,
             const std::string& src_mac = "02:00:00:00:00:ff", unsigned distinct = 64);
  ~RingFeeder();
  RingFeeder(const RingFeeder&) = delete;
  RingFeeder& operator=(const RingFeeder&) = delete;
  bool ok() const { return ring_ && pool_; }

 private:
  void loop();
  rte_ring* ring_;
  int cpu_;
  rte_mempool* pool_ = nullptr;
  std::vector<rte_mbuf*> frames_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace capsule::vm
