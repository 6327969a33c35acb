#include "fwd_table.h"

#include <time.h>

namespace capsule::pmd::detail {

uint32_t FwdTable::clock_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return uint32_t(ts.tv_sec);
}

void FwdTable::reset(const Limits& limits) {
  limits_ = limits;
  if (limits_.table_size == 0) limits_.table_size = 1;
  // Twice the entries (configured ones come on top of table_size), at least
  // one window, a power of two.
  std::size_t n = kWindow;
  while (n < 2 * std::size_t(limits_.table_size) + 2 * kMaxVmPorts) n <<= 1;
  mask_ = n - 1;
  slots_ = std::make_unique<std::atomic<uint64_t>[]>(n);
  seen_ = std::make_unique<std::atomic<uint32_t>[]>(n);
  for (std::size_t i = 0; i < n; ++i) {
    slots_[i].store(kEmpty, std::memory_order_relaxed);
    seen_[i].store(0, std::memory_order_relaxed);
  }
  for (auto& c : count_) c.store(0, std::memory_order_relaxed);
  for (auto& c : cursor_) c.store(0, std::memory_order_relaxed);
  total_.store(0);
  evictions_.store(0);
  refusals_.store(0);
}

bool FwdTable::expired(std::size_t i, uint64_t e, uint32_t now_s) const {
  if (e & kCfg || limits_.aging_s == 0) return false;
  return now_s - seen_[i].load(std::memory_order_relaxed) > limits_.aging_s;
}

int FwdTable::lookup(uint64_t mac) const {
  uint32_t now_s = 0;
  bool have_now = false;
  for (std::size_t k = 0, i = home(mac); k < kWindow; ++k, i = (i + 1) & mask_) {
    const uint64_t e = slots_[i].load(std::memory_order_acquire);
    if (e == kEmpty) return kNoPort;
    if (e == kTomb || (e >> 16) != mac) continue;
    if (!(e & kCfg) && limits_.aging_s) {
      if (!have_now) now_s = clock_s(), have_now = true;
      if (expired(i, e, now_s)) continue;
    }
    return port_of(e);
  }
  return kNoPort;
}

bool FwdTable::drop_learned(std::size_t i, uint64_t e, uint64_t replacement) {
  if (!slots_[i].compare_exchange_strong(e, replacement, std::memory_order_acq_rel)) return false;
  count_[index(port_of(e))].fetch_sub(1, std::memory_order_relaxed);
  total_.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

std::size_t FwdTable::fullest_learned_in_window(uint64_t mac) const {
  std::size_t victim = SIZE_MAX;
  unsigned most = 0;
  for (std::size_t k = 0, i = home(mac); k < kWindow; ++k, i = (i + 1) & mask_) {
    const uint64_t e = slots_[i].load(std::memory_order_acquire);
    if (!live(e) || (e & kCfg)) continue;
    const unsigned c = count_[index(port_of(e))].load(std::memory_order_relaxed);
    if (victim == SIZE_MAX || c > most) victim = i, most = c;
  }
  return victim;
}

uint16_t FwdTable::fullest_port() const {
  unsigned best = 0, most = 0;
  for (unsigned p = 0; p <= kMaxVmPorts; ++p) {
    const unsigned c = count_[p].load(std::memory_order_relaxed);
    if (c > most) most = c, best = p;
  }
  return best == kMaxVmPorts ? kUplinkPort : uint16_t(best);
}

// Clock order from the port's cursor: the next learned entry of the port
// goes. Whole-table scan at worst, typically (slots / entries of the port).
bool FwdTable::evict_one_of(uint16_t port) {
  auto& cursor = cursor_[index(port)];
  const std::size_t start = cursor.load(std::memory_order_relaxed) & mask_;
  for (std::size_t k = 0, i = start; k <= mask_; ++k, i = (i + 1) & mask_) {
    const uint64_t e = slots_[i].load(std::memory_order_acquire);
    if (!live(e) || (e & kCfg) || port_of(e) != port) continue;
    if (drop_learned(i, e, kTomb)) {
      cursor.store(uint32_t(i + 1), std::memory_order_relaxed);
      evictions_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

FwdTable::Learned FwdTable::learn(uint64_t mac, uint16_t port, uint32_t now_s) {
  const uint64_t want = entry(mac, port, false);
  std::size_t reuse = SIZE_MAX;
  uint64_t reuse_e = kEmpty;
  for (std::size_t k = 0, i = home(mac); k < kWindow; ++k, i = (i + 1) & mask_) {
    const uint64_t e = slots_[i].load(std::memory_order_acquire);
    if (e == kEmpty || e == kTomb) {
      if (reuse == SIZE_MAX) reuse = i, reuse_e = e;
      if (e == kEmpty) break;  // the MAC is not further on
      continue;
    }
    if ((e >> 16) == mac) {
      if (e & kCfg) return Learned::kKnown;  // a VM's own MAC never moves
      if (port_of(e) == port) {
        if (seen_[i].load(std::memory_order_relaxed) != now_s) seen_[i].store(now_s, std::memory_order_relaxed);
        if (!expired(i, e, now_s)) return Learned::kKnown;
      }
      // Moved to another port (or expired): take it out, learn it anew.
      if (drop_learned(i, e, kTomb) && reuse == SIZE_MAX) reuse = i, reuse_e = kTomb;
      continue;
    }
    if (reuse == SIZE_MAX && expired(i, e, now_s) && drop_learned(i, e, kTomb)) reuse = i, reuse_e = kTomb;
  }
  // Room: the port's own quota first, then the table's (fair eviction).
  if (port != kUplinkPort && count_[index(port)].load(std::memory_order_relaxed) >= limits_.vm_port_max &&
      !evict_one_of(port)) {
    refusals_.fetch_add(1, std::memory_order_relaxed);
    return Learned::kRefused;
  }
  // The table's cap: the new entry takes its place in the total first, in
  // one atomic step, so that learners on several threads cannot all see
  // room for one more (checking, then adding, let the table hold 2049 of
  // 2048). One that lands over the cap makes room or gives its place back.
  // Counted before it is visible, so a concurrent eviction never underflows.
  if (total_.fetch_add(1, std::memory_order_acq_rel) >= limits_.table_size && !evict_one_of(fullest_port())) {
    total_.fetch_sub(1, std::memory_order_relaxed);
    refusals_.fetch_add(1, std::memory_order_relaxed);
    return Learned::kRefused;
  }
  if (reuse == SIZE_MAX) {
    // The window is full: the learned entry of the fullest port in it goes.
    const std::size_t victim = fullest_learned_in_window(mac);
    if (victim == SIZE_MAX || !drop_learned(victim, slots_[victim].load(std::memory_order_acquire), kTomb)) {
      total_.fetch_sub(1, std::memory_order_relaxed);
      refusals_.fetch_add(1, std::memory_order_relaxed);
      return Learned::kRefused;
    }
    evictions_.fetch_add(1, std::memory_order_relaxed);
    reuse = victim, reuse_e = kTomb;
  }
  seen_[reuse].store(now_s, std::memory_order_relaxed);
  count_[index(port)].fetch_add(1, std::memory_order_relaxed);
  if (!slots_[reuse].compare_exchange_strong(reuse_e, want, std::memory_order_acq_rel)) {
    count_[index(port)].fetch_sub(1, std::memory_order_relaxed);  // lost a race: next frame learns it
    total_.fetch_sub(1, std::memory_order_relaxed);
    return Learned::kRefused;
  }
  return Learned::kNew;
}

bool FwdTable::configure(uint64_t mac, uint16_t port) {
  const uint64_t want = entry(mac, port, true);
  std::size_t reuse = SIZE_MAX;
  for (std::size_t k = 0, i = home(mac); k < kWindow; ++k, i = (i + 1) & mask_) {
    uint64_t e = slots_[i].load(std::memory_order_acquire);
    if (e == kEmpty || e == kTomb) {
      if (reuse == SIZE_MAX) reuse = i;
      if (e == kEmpty) break;
      continue;
    }
    if ((e >> 16) != mac) continue;
    if (e & kCfg) return port_of(e) == port;
    // Learned before it was configured: the configuration wins, in place.
    if (drop_learned(i, e, want)) return true;
    return configure(mac, port);  // changed under us: look again
  }
  if (reuse == SIZE_MAX) {
    // A full window: a learned entry makes room (the fullest port's).
    const std::size_t victim = fullest_learned_in_window(mac);
    if (victim == SIZE_MAX) return false;
    if (!drop_learned(victim, slots_[victim].load(std::memory_order_acquire), want)) return configure(mac, port);
    evictions_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  for (std::size_t k = 0, i = reuse; k < kWindow; ++k, i = (i + 1) & mask_) {
    uint64_t e = slots_[i].load(std::memory_order_acquire);
    if ((e == kEmpty || e == kTomb) && slots_[i].compare_exchange_strong(e, want, std::memory_order_acq_rel))
      return true;
  }
  return configure(mac, port);
}

int FwdTable::configured_port(uint64_t mac) const {
  for (std::size_t k = 0, i = home(mac); k < kWindow; ++k, i = (i + 1) & mask_) {
    const uint64_t e = slots_[i].load(std::memory_order_acquire);
    if (e == kEmpty) return kNoPort;
    if (live(e) && (e >> 16) == mac && (e & kCfg)) return port_of(e);
  }
  return kNoPort;
}

void FwdTable::remove_port(uint16_t port) {
  for (std::size_t i = 0; i <= mask_; ++i) {
    uint64_t e = slots_[i].load(std::memory_order_acquire);
    while (live(e) && port_of(e) == port) {
      if (e & kCfg) {
        if (slots_[i].compare_exchange_weak(e, kTomb, std::memory_order_acq_rel)) break;
      } else if (drop_learned(i, e, kTomb)) {
        break;
      } else {
        e = slots_[i].load(std::memory_order_acquire);
      }
    }
  }
}

void FwdTable::for_each(const std::function<void(uint64_t, uint16_t, bool, uint32_t)>& fn) const {
  const uint32_t now_s = clock_s();
  for (std::size_t i = 0; i <= mask_; ++i) {
    const uint64_t e = slots_[i].load(std::memory_order_acquire);
    if (!live(e) || expired(i, e, now_s)) continue;
    const bool cfg = e & kCfg;
    fn(e >> 16, port_of(e), cfg, cfg ? 0 : now_s - seen_[i].load(std::memory_order_relaxed));
  }
}

}  // namespace capsule::pmd::detail
