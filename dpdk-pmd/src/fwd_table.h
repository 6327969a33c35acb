// The L2 forwarding table: MAC -> port, lock-free for readers and writers,
// bounded like OVS's mac-learning table.
//
// One 64-bit atomic word per entry holds the whole entry (48-bit MAC,
// "configured" bit, 15-bit port), so a reader never sees half an entry and
// no lock is taken on the fast path; a parallel array holds when a learned
// entry was last seen. A MAC lives in a window of kWindow slots from its
// hash, so a lookup reads at most kWindow words whatever a flood of random
// MACs did to the table.
//
// Limits (a VM is untrusted, DESIGN.md "Hostile VMs"):
//  - configured MACs (a VM's own) are never learned away, aged or evicted;
//  - learned entries unused for aging_s seconds are gone (OVS mac-aging-time,
//    300 s);
//  - at most table_size learned entries (OVS mac-table-size, 8192); a new one
//    beyond that evicts an entry of the port with the most entries (OVS
//    evicts fairly the same way), so a port flooding random MACs evicts its
//    own entries, not its neighbours';
//  - at most vm_port_max learned entries per VM port (the uplink, which is a
//    whole network, is bounded only by table_size): the VM's own oldest-seen
//    entries make room.
// Eviction picks the next entry of the port after a per-port cursor (clock
// order), not strictly the least recently used one as OVS does.
#pragma once

#include <rte_ether.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

namespace capsule::pmd::detail {

inline constexpr uint16_t kUplinkPort = 0x7ffe;
inline constexpr int kNoPort = -1;

// The table's key for an Ethernet address: its 48 bits, first byte highest.
inline uint64_t mac_u64(const rte_ether_addr& a) {
  uint64_t v = 0;
  for (auto x : a.addr_bytes) v = (v << 8) | x;
  return v;
}

class FwdTable {
 public:
  static constexpr unsigned kWindow = 16;     // probe window (two cache lines)
  static constexpr unsigned kMaxVmPorts = 64;  // VM ports 0..63, plus the uplink

  struct Limits {
    unsigned table_size = 8192;  // learned entries in all (OVS mac-table-size)
    unsigned aging_s = 300;      // OVS mac-aging-time; 0 = never age
    unsigned vm_port_max = 256;  // learned entries per VM port
  };
  enum class Learned { kKnown, kNew, kRefused };

  FwdTable() { reset(Limits{}); }
  // Empties the table and sets its limits; only while no thread uses it.
  void reset(const Limits& limits);
  const Limits& limits() const { return limits_; }

  // Port for a MAC (48 bits), or kNoPort.
  int lookup(uint64_t mac) const;

  // Learns mac on port unless it is configured (anywhere). Cheap when known:
  // refreshes the entry's age, so call it for every frame (a frame not
  // learned is an entry that ages out while in use). now_s: clock_s(), read
  // once per burst.
  Learned learn(uint64_t mac, uint16_t port, uint32_t now_s);
  Learned learn(uint64_t mac, uint16_t port) { return learn(mac, port, clock_s()); }  // off the fast path
  // Configures mac on port. false when it is configured on another port (or
  // its window holds only configured MACs).
  bool configure(uint64_t mac, uint16_t port);
  // Whether mac is configured on some port (and which).
  int configured_port(uint64_t mac) const;
  // Drops every entry of a port.
  void remove_port(uint16_t port);
  // Live entries; age_s is 0 for configured ones.
  void for_each(const std::function<void(uint64_t mac, uint16_t port, bool configured, uint32_t age_s)>& fn) const;

  unsigned learned_entries(uint16_t port) const { return count_[index(port)].load(std::memory_order_relaxed); }
  unsigned learned_entries() const { return total_.load(std::memory_order_relaxed); }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  uint64_t refusals() const { return refusals_.load(std::memory_order_relaxed); }

  // Seconds on a coarse monotonic clock (a few ns to read).
  static uint32_t clock_s();

 private:
  static constexpr uint64_t kEmpty = 0;
  static constexpr uint64_t kTomb = ~uint64_t(0);
  static constexpr uint64_t kCfg = 0x8000;
  static uint64_t entry(uint64_t mac, uint16_t port, bool cfg) {
    return (mac << 16) | (cfg ? kCfg : 0u) | (port & 0x7fff);
  }
  static bool live(uint64_t e) { return e != kEmpty && e != kTomb; }
  static uint16_t port_of(uint64_t e) { return uint16_t(e & 0x7fff); }
  static unsigned index(uint16_t port) { return port < kMaxVmPorts ? port : kMaxVmPorts; }
  std::size_t home(uint64_t mac) const { return std::size_t((mac * 0x9E3779B97F4A7C15ull) >> 40) & mask_; }
  bool expired(std::size_t i, uint64_t e, uint32_t now_s) const;
  // Takes a learned entry out (CAS to a tombstone): true when this call did.
  bool drop_learned(std::size_t i, uint64_t e, uint64_t replacement);
  bool evict_one_of(uint16_t port);
  uint16_t fullest_port() const;
  // The slot, in `mac`'s probe window, of a learned entry of the port with
  // the most entries (what goes when the window is full); SIZE_MAX if none.
  std::size_t fullest_learned_in_window(uint64_t mac) const;

  Limits limits_;
  std::size_t mask_ = 0;
  std::unique_ptr<std::atomic<uint64_t>[]> slots_;
  std::unique_ptr<std::atomic<uint32_t>[]> seen_;  // learned: clock_s() when last seen
  std::atomic<unsigned> count_[kMaxVmPorts + 1]{};  // learned entries per port
  std::atomic<uint32_t> cursor_[kMaxVmPorts + 1]{};  // where eviction of a port looks next
  std::atomic<unsigned> total_{0};
  std::atomic<uint64_t> evictions_{0}, refusals_{0};
};

}  // namespace capsule::pmd::detail
