// The L2 forwarding table: MAC -> port, lock-free for readers and writers.
//
// One 64-bit atomic word per entry holds the whole entry (48-bit MAC,
// "configured" bit, 15-bit port), so a reader never sees half an entry and
// no lock is taken on the fast path. Open addressing with linear probing;
// removed entries become tombstones. Learning never overrides a configured
// MAC. There is no aging (VM MACs are configured; learned ones are replaced
// when a MAC moves and dropped when their VM is removed).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>

namespace capsule::pmd::detail {

inline constexpr uint16_t kUplinkPort = 0x7ffe;
inline constexpr int kNoPort = -1;

class FwdTable {
 public:
  static constexpr std::size_t kSize = 4096;

  // Port for a MAC (48 bits), or kNoPort.
  int lookup(uint64_t mac) const {
    for (std::size_t i = hash(mac), n = 0; n < kSize; i = (i + 1) & (kSize - 1), ++n) {
      const uint64_t e = slots_[i].load(std::memory_order_acquire);
      if (e == kEmpty) return kNoPort;
      if (e != kTomb && (e >> 16) == mac) return int(e & 0x7fff);
    }
    return kNoPort;
  }

  // Learns mac on port unless it is configured elsewhere. Cheap when known.
  void learn(uint64_t mac, uint16_t port) { put(mac, port, false); }
  // Configures mac on port. false when it is configured on another port.
  bool configure(uint64_t mac, uint16_t port) { return put(mac, port, true); }
  // Whether mac is configured on some port (and which).
  int configured_port(uint64_t mac) const;
  // Drops every entry of a port.
  void remove_port(uint16_t port);
  void for_each(const std::function<void(uint64_t mac, uint16_t port, bool configured)>& fn) const;

 private:
  static constexpr uint64_t kEmpty = 0;
  static constexpr uint64_t kTomb = ~uint64_t(0);
  static std::size_t hash(uint64_t mac) { return std::size_t((mac * 0x9E3779B97F4A7C15ull) >> 52) & (kSize - 1); }
  static uint64_t entry(uint64_t mac, uint16_t port, bool cfg) {
    return (mac << 16) | (cfg ? 0x8000u : 0u) | (port & 0x7fff);
  }
  bool put(uint64_t mac, uint16_t port, bool cfg);

  std::array<std::atomic<uint64_t>, kSize> slots_{};
};

}  // namespace capsule::pmd::detail
