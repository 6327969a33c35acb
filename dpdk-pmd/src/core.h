// State shared by the datapath's threads: the mbuf pool, the forwarding
// table, the VM slots (published RCU-style) and the per-VM context.
#pragma once

#include <rte_mbuf.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "capsule/log.h"
#include "capsule/pmd/datapath.h"
#include "fwd_table.h"
#include "meter.h"

namespace capsule::pmd::detail {

inline constexpr unsigned kMaxVms = 64;
inline constexpr uint16_t kBurst = 32;
inline constexpr unsigned kMaxSenders = kMaxVms + 1;  // every VM's thread and the dispatcher

class Uplink;

// Counters with a single writer: a relaxed load + store, no locked RMW.
inline void bump(std::atomic<uint64_t>& c, uint64_t v = 1) {
  c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
}

struct alignas(64) PmdCounters {  // written by the VM's PMD thread only
  std::atomic<uint64_t> from_vm_packets{0}, from_vm_bytes{0}, to_vm_packets{0}, to_vm_bytes{0};
  std::atomic<uint64_t> from_vm_drops_red{0}, from_vm_drops_pps{0};
  std::atomic<uint64_t> from_vm_drops_port_security{0};
  std::atomic<uint64_t> to_vm_drops_red{0}, to_vm_drops_pps{0};
  std::atomic<uint64_t> vhost_enqueue_drops{0}, not_connected_drops{0}, uplink_tx_drops{0};
  std::atomic<uint64_t> busy_iterations{0}, idle_iterations{0}, busy_cycles{0};
  std::atomic<uint64_t> blocks{0}, wakeups_by_kick{0}, wakeups_by_ring{0}, wakeups_by_room{0}, wakeups_by_policer{0};
  std::atomic<uint64_t> sleeps{0}, yields{0};
};

struct Vm {
  VmConfig cfg;
  unsigned slot = 0;
  uint16_t txq = 0;
  // Packets for this VM: one single-producer ring per sender (rx_rings.h),
  // at most ring_cap frames in all of them together.
  std::array<std::atomic<rte_ring*>, kMaxSenders> in{};
  std::atomic<uint64_t> in_ready[2]{};  // bit s: sender s's ring may have frames
  alignas(64) std::atomic<int64_t> held{0};
  int64_t ring_cap = 0;
  unsigned next_sender = 0;  // the VM's thread only: where take_delivered starts
  int wake_fd = -1;          // eventfd: ring has packets / control wants attention

  // Device state, set by the vhost callbacks.
  std::atomic<int> vid{-1};
  std::atomic<int> kick_fd{-1};     // guest tx queue: "I sent something"
  std::atomic<int> rx_kick_fd{-1};  // guest rx queue: "I have room again"
  std::atomic<uint64_t> device_gen{0};  // bumped whenever vid / kick fds change
  std::atomic<bool> connected{false};
  std::atomic<uint64_t> connects{0};
  // Wall-clock times (Unix ms) of the last attach / detach, 0 = never: what
  // an operator compares with a VM's own log.
  std::atomic<int64_t> last_connect_ms{0}, last_disconnect_ms{0};
  // A guest decides how often it connects: its device messages are
  // rate-limited, each VM on its own (one flapping guest hides no other's).
  log::RateLimit device_log_rl;
  // Datapath::log_drops (a control thread, under the datapath's mutex): the
  // counters it last reported, when (add_vm starts it), and its own rate
  // limit.
  VmStats drops_reported;
  std::chrono::steady_clock::time_point drops_reported_at;
  log::RateLimit drop_log_rl;

  // PMD thread state.
  std::atomic<uint64_t> iteration{0};   // advanced before each round reads `vid`
  std::atomic<bool> parked{false};      // about to block: producers must kick wake_fd
  std::atomic<bool> blocked{false};     // in epoll_wait: not touching the device
  std::atomic<bool> wake_pending{false};
  std::atomic<bool> stop{false};
  std::atomic<bool> running{false};
  std::atomic<pid_t> tid{0};
  std::atomic<Policers*> policers{nullptr};
  std::thread thread;

  PmdCounters c;
  alignas(64) std::atomic<uint64_t> ring_full_drops{0};  // many writers

  ~Vm() {
    delete policers.load();
    if (wake_fd >= 0) ::close(wake_fd);
    for (auto& r : in)
      if (rte_ring* ring = r.exchange(nullptr)) {
        rte_mbuf* m;
        while (rte_ring_sc_dequeue(ring, reinterpret_cast<void**>(&m)) == 0) rte_pktmbuf_free(m);
        rte_ring_free(ring);
      }
  }

  void wake() {
    if (!wake_pending.exchange(true)) {
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t r = ::write(wake_fd, &one, sizeof one);
    }
  }
};

struct Core {
  rte_mempool* pool = nullptr;
  FwdTable fdb;
  std::array<std::atomic<Vm*>, kMaxVms> slots{};
  unsigned max_vms = 0;
  rte_rcu_qsbr* qsbr = nullptr;  // reader ids: VM slot i -> i, dispatcher -> max_vms
  Uplink* uplink = nullptr;

  unsigned dispatcher_qsbr_id() const { return max_vms; }
};

}  // namespace capsule::pmd::detail
