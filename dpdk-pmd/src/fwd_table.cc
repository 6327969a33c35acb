#include "fwd_table.h"

namespace capsule::pmd::detail {

bool FwdTable::put(uint64_t mac, uint16_t port, bool cfg) {
  const uint64_t want = entry(mac, port, cfg);
  std::size_t first_free = kSize;
  for (std::size_t i = hash(mac), n = 0; n < kSize; i = (i + 1) & (kSize - 1), ++n) {
    uint64_t e = slots_[i].load(std::memory_order_acquire);
    if (e == kEmpty) {
      if (first_free == kSize) first_free = i;
      break;
    }
    if (e == kTomb) {
      if (first_free == kSize) first_free = i;
      continue;
    }
    if ((e >> 16) != mac) continue;
    // Known MAC: update in place unless a configured entry forbids it.
    while (true) {
      const bool is_cfg = e & 0x8000;
      if (e == want) return true;
      if (is_cfg && (e & 0x7fff) != port) return false;  // configured elsewhere
      if (is_cfg && !cfg) return true;                    // learning the configured port again
      if (slots_[i].compare_exchange_weak(e, want, std::memory_order_acq_rel)) return true;
      if (e == kTomb || e == kEmpty || (e >> 16) != mac) break;  // removed meanwhile: insert anew
    }
    break;
  }
  if (first_free == kSize) return false;  // full
  for (std::size_t i = first_free, n = 0; n < kSize; i = (i + 1) & (kSize - 1), ++n) {
    uint64_t e = slots_[i].load(std::memory_order_acquire);
    if ((e == kEmpty || e == kTomb) && slots_[i].compare_exchange_strong(e, want, std::memory_order_acq_rel))
      return true;
  }
  return false;
}

int FwdTable::configured_port(uint64_t mac) const {
  for (std::size_t i = hash(mac), n = 0; n < kSize; i = (i + 1) & (kSize - 1), ++n) {
    const uint64_t e = slots_[i].load(std::memory_order_acquire);
    if (e == kEmpty) return kNoPort;
    if (e != kTomb && (e >> 16) == mac && (e & 0x8000)) return int(e & 0x7fff);
  }
  return kNoPort;
}

void FwdTable::remove_port(uint16_t port) {
  for (auto& s : slots_) {
    uint64_t e = s.load(std::memory_order_acquire);
    while (e != kEmpty && e != kTomb && (e & 0x7fff) == port)
      if (s.compare_exchange_weak(e, kTomb, std::memory_order_acq_rel)) break;
  }
}

void FwdTable::for_each(const std::function<void(uint64_t, uint16_t, bool)>& fn) const {
  for (const auto& s : slots_) {
    const uint64_t e = s.load(std::memory_order_acquire);
    if (e != kEmpty && e != kTomb) fn(e >> 16, uint16_t(e & 0x7fff), e & 0x8000);
  }
}

}  // namespace capsule::pmd::detail
