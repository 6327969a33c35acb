// How frames reach a VM's thread from the other threads of the datapath.
//
// Every sender (each other VM's thread, the uplink dispatcher) has a
// single-producer ring of its own towards each VM. A SCHED_DEADLINE thread
// can be throttled at any instruction, for the rest of its period; with one
// multi-producer ring per VM a sender throttled between moving the ring's
// head and publishing its tail makes every other sender to that VM spin on
// its own budget until it runs again (lock-waiter preemption; DESIGN.md
// "Hostile VMs"). With a ring per sender nobody waits for anybody: the only
// shared words are a counter and a bit mask updated by wait-free atomic
// instructions (lock xadd / lock or: they complete whatever other threads do).
//
// `held` bounds the frames waiting for a VM over all its rings to one ring's
// worth (DatapathConfig::ring_size): the mbufs a VM that stops draining can
// hold are its quota, whatever the number of senders. No sender may hold more
// than half of it, and the VM's thread takes from their rings in turn: a
// neighbour flooding the VM cannot crowd out its other senders.
#pragma once

#include <rte_mbuf.h>
#include <rte_ring.h>

#include <atomic>
#include <bit>

#include "core.h"

namespace capsule::pmd::detail {

// Hands packets to a VM's ring from `sender` (its VM slot, or the
// dispatcher's id) and kicks the VM's thread when it is parked. Frees (and
// counts) what does not fit.
inline void deliver(Vm* dst, unsigned sender, rte_mbuf** pkts, unsigned n) {
  rte_ring* r = dst->in[sender].load(std::memory_order_acquire);
  const int64_t cap = dst->ring_cap;
  // Fair share: no sender holds more than half of the VM's capacity, so a
  // neighbour flooding a VM (broadcasts, say) always leaves room for the
  // VM's other senders. (Letting a lone sender take it all does not work:
  // a flooder alone for a moment fills it and keeps it full.)
  const int64_t mine = r ? int64_t(rte_ring_count(r)) : 0;  // we are its only producer
  const int64_t limit = cap / 2;
  const unsigned share = mine >= limit ? 0 : unsigned(std::min<int64_t>(n, limit - mine));
  // Reserve room in the VM's quota for what our share lets in (wait-free;
  // nothing reserved for frames we drop anyway, so no other sender sees the
  // VM fuller than it is).
  unsigned done = 0;
  if (r && share) {
    const int64_t before = dst->held.fetch_add(share, std::memory_order_relaxed);
    const unsigned allowed = before >= cap ? 0 : unsigned(std::min<int64_t>(share, cap - before));
    done = allowed ? rte_ring_sp_enqueue_burst(r, reinterpret_cast<void**>(pkts), allowed, nullptr) : 0;
    if (done < share) dst->held.fetch_sub(share - done, std::memory_order_relaxed);
  }
  if (done < n) {
    rte_pktmbuf_free_bulk(pkts + done, n - done);
    dst->ring_full_drops.fetch_add(n - done, std::memory_order_relaxed);
  }
  if (!done) return;
  // Pairs with the consumer's parked.store + has_delivered() re-check (both
  // sequentially consistent): either it sees our bit or we see it parked.
  dst->in_ready[sender >> 6].fetch_or(uint64_t(1) << (sender & 63), std::memory_order_seq_cst);
  if (dst->parked.load(std::memory_order_seq_cst)) dst->wake();
}

// Whether some sender's ring may hold frames for the VM.
inline bool has_delivered(const Vm& vm) {
  return (vm.in_ready[0].load(std::memory_order_seq_cst) | vm.in_ready[1].load(std::memory_order_seq_cst)) != 0;
}

// Up to `max` frames for the VM, taken from its senders' rings in turn
// (starting after the sender served first last time, so none is favoured).
// Only the VM's own thread calls this.
inline unsigned take_delivered(Vm* vm, rte_mbuf** pkts, unsigned max) {
  uint64_t ready[2] = {vm->in_ready[0].exchange(0, std::memory_order_acq_rel),
                       vm->in_ready[1].exchange(0, std::memory_order_acq_rel)};
  if (!(ready[0] | ready[1])) return 0;
  unsigned got = 0;
  const unsigned first = vm->next_sender;
  for (unsigned k = 0; k < kMaxSenders; ++k) {
    const unsigned s = (first + k) % kMaxSenders;
    if (!(ready[s >> 6] >> (s & 63) & 1)) continue;
    rte_ring* r = vm->in[s].load(std::memory_order_acquire);
    if (!r) continue;
    unsigned left = 1;
    if (got < max) {
      got += rte_ring_sc_dequeue_burst(r, reinterpret_cast<void**>(pkts + got), max - got, &left);
      if (got == max) vm->next_sender = (s + 1) % kMaxSenders;
    }
    if (left) vm->in_ready[s >> 6].fetch_or(uint64_t(1) << (s & 63), std::memory_order_relaxed);
  }
  if (got) vm->held.fetch_sub(got, std::memory_order_relaxed);
  return got;
}

// Frees what waits in a ring that is being taken out of service (no thread
// uses it any more) and gives the VM its quota back.
inline void drain_ring(Vm* vm, rte_ring* r) {
  rte_mbuf* m;
  unsigned n = 0;
  while (rte_ring_sc_dequeue(r, reinterpret_cast<void**>(&m)) == 0) rte_pktmbuf_free(m), ++n;
  vm->held.fetch_sub(n, std::memory_order_relaxed);
  rte_ring_free(r);
}

}  // namespace capsule::pmd::detail
