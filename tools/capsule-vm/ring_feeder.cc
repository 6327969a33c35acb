#include "capsule/vm/ring_feeder.h"

#include <algorithm>

#include <pthread.h>
#include <sched.h>

#include <rte_lcore.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <iterator>

namespace capsule::vm {

RingFeeder::RingFeeder(rte_ring* ring, const std::vector<std::string>& dst_macs, uint32_t frame_size, int cpu,
                       const std::string& src_mac, unsigned distinct)
    : ring_(ring), cpu_(cpu), frames_(std::max(1u, distinct), nullptr) {
  static std::atomic<int> instances{0};
  const std::string name = "feeder_" + std::to_string(instances++);
  unsigned pool_size = 1023;  // a power of two minus one, as rte_mempool likes
  while (pool_size < frames_.size()) pool_size = pool_size * 2 + 1;
  pool_ = rte_pktmbuf_pool_create(name.c_str(), pool_size, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  if (!ring_ || !pool_ || dst_macs.empty()) return;
  auto parse = [](const std::string& text, char* out) {
    unsigned b[6] = {};
    std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]);
    for (int i = 0; i < 6; ++i) out[i] = char(b[i]);
  };
  for (std::size_t i = 0; i < frames_.size(); ++i) {
    rte_mbuf* m = frames_[i] = rte_pktmbuf_alloc(pool_);
    char* p = rte_pktmbuf_append(m, uint16_t(frame_size));
    std::memset(p, 0, frame_size);
    parse(dst_macs[i % dst_macs.size()], p);
    parse(src_mac, p + 6);  // somewhere behind the uplink
    p[12] = 0x08;           // IPv4 ethertype; the payload is zeros
  }
  thread_ = std::thread([this] { loop(); });
}

RingFeeder::~RingFeeder() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  // Frames still in flight hold references; the pool stays (it is small).
  for (auto* m : frames_)
    if (m) rte_pktmbuf_free(m);
}

void RingFeeder::loop() {
  rte_thread_register();
  pthread_setname_np(pthread_self(), "ring-feeder");
  if (cpu_ >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu_, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  }
  unsigned i = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    rte_mbuf* burst[32];
    for (auto& m : burst) {
      m = frames_[i++ % frames_.size()];
      rte_mbuf_refcnt_update(m, 1);
    }
    const unsigned n = rte_ring_enqueue_burst(ring_, reinterpret_cast<void**>(burst), 32, nullptr);
    for (unsigned k = n; k < 32; ++k) rte_mbuf_refcnt_update(burst[k], -1);
    if (n < 32) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  rte_thread_unregister();
}

}  // namespace capsule::vm
