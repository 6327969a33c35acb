// The forwarding table's bounds (DESIGN.md "Hostile VMs"): aging, the per-VM
// cap, fair eviction from the port with the most entries, configured MACs
// that nothing moves or evicts. The table is plain memory: no DPDK needed.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "fwd_table.h"

namespace capsule::pmd::detail {
namespace {

constexpr uint64_t kVmMac = 0x02000000000aull;
constexpr uint64_t kNeighbourMac = 0x02000000000bull;

uint64_t random_mac(uint64_t i) { return (0x020000000000ull | ((i * 0x9E3779B97F4A7C15ull) >> 24)) & 0xfeffffffffffull; }

TEST(Fdb, LearnedEntriesAgeAndConfiguredOnesDoNot) {
  FwdTable t;
  t.reset({.table_size = 64, .aging_s = 10, .vm_port_max = 16});
  ASSERT_TRUE(t.configure(kVmMac, 1));
  EXPECT_EQ(t.learn(kNeighbourMac, kUplinkPort, 100), FwdTable::Learned::kNew);
  EXPECT_EQ(t.learn(kNeighbourMac, kUplinkPort, 105), FwdTable::Learned::kKnown);  // seen again at 105
  // Lookups use the real clock; learn with times around it.
  const uint32_t now = FwdTable::clock_s();
  const uint64_t fresh = 0x020000000100ull, stale = 0x020000000200ull;
  t.learn(fresh, kUplinkPort, now);
  t.learn(stale, kUplinkPort, now - 11);
  EXPECT_EQ(t.lookup(fresh), kUplinkPort);
  EXPECT_EQ(t.lookup(stale), kNoPort) << "an entry unseen for longer than aging_s must be gone";
  EXPECT_EQ(t.lookup(kVmMac), 1) << "configured MACs never age";
  unsigned listed = 0;
  t.for_each([&](uint64_t mac, uint16_t, bool, uint32_t) { listed += mac == stale; });
  EXPECT_EQ(listed, 0u);
  // An aged entry's slot is reused; the table does not leak it.
  EXPECT_EQ(t.learn(stale, 2, now), FwdTable::Learned::kNew);
  EXPECT_EQ(t.lookup(stale), 2);
}

TEST(Fdb, AVmFloodingRandomMacsStaysWithinItsCapAndEvictsOnlyItsOwn) {
  FwdTable t;
  t.reset({.table_size = 8192, .aging_s = 300, .vm_port_max = 256});
  ASSERT_TRUE(t.configure(kVmMac, 1));
  ASSERT_TRUE(t.configure(kNeighbourMac, 2));
  std::vector<uint64_t> wire;
  for (uint64_t i = 0; i < 500; ++i) wire.push_back(0x0a0000000000ull + i);  // the uplink's hosts
  for (auto m : wire) ASSERT_EQ(t.learn(m, kUplinkPort), FwdTable::Learned::kNew);
  for (uint64_t i = 0; i < 100'000; ++i) t.learn(random_mac(i), 3);  // VM 3, no port security
  EXPECT_LE(t.learned_entries(3), 256u);
  EXPECT_EQ(t.learned_entries(kUplinkPort), 500u);
  for (auto m : wire) EXPECT_EQ(t.lookup(m), kUplinkPort) << std::hex << m;
  EXPECT_EQ(t.lookup(kVmMac), 1);
  EXPECT_EQ(t.lookup(kNeighbourMac), 2);
  EXPECT_GT(t.evictions(), 0u);
  // The flooder's most recent MACs are the ones it keeps.
  EXPECT_EQ(t.lookup(random_mac(99'999)), 3);
}

TEST(Fdb, AFullTableEvictsFromThePortWithTheMostEntries) {
  FwdTable t;
  t.reset({.table_size = 1000, .aging_s = 300, .vm_port_max = 1000});
  for (uint64_t i = 0; i < 700; ++i) t.learn(random_mac(i), 5);            // the big one
  for (uint64_t i = 0; i < 300; ++i) t.learn(0x0a0000000000ull + i, kUplinkPort);
  EXPECT_EQ(t.learned_entries(), 1000u);
  for (uint64_t i = 0; i < 100; ++i) t.learn(0x0c0000000000ull + i, 6);    // a newcomer
  EXPECT_LE(t.learned_entries(), 1000u);
  EXPECT_EQ(t.learned_entries(6), 100u) << "the newcomer learns";
  EXPECT_EQ(t.learned_entries(kUplinkPort), 300u) << "eviction must hit the port with the most entries";
  EXPECT_EQ(t.learned_entries(5), 600u);
}

TEST(Fdb, LearningNeverMovesAConfiguredMacAndAMovedMacFollows) {
  FwdTable t;
  ASSERT_TRUE(t.configure(kVmMac, 1));
  EXPECT_EQ(t.learn(kVmMac, 2), FwdTable::Learned::kKnown);
  EXPECT_EQ(t.learn(kVmMac, kUplinkPort), FwdTable::Learned::kKnown);
  EXPECT_EQ(t.lookup(kVmMac), 1);
  EXPECT_FALSE(t.configure(kVmMac, 2));
  t.learn(kNeighbourMac, 3);
  t.learn(kNeighbourMac, kUplinkPort);  // the host moved
  EXPECT_EQ(t.lookup(kNeighbourMac), kUplinkPort);
  EXPECT_EQ(t.learned_entries(3), 0u);
  EXPECT_EQ(t.learned_entries(kUplinkPort), 1u);
  // Configuring a learned MAC takes it over.
  EXPECT_TRUE(t.configure(kNeighbourMac, 4));
  EXPECT_EQ(t.lookup(kNeighbourMac), 4);
  EXPECT_EQ(t.learned_entries(), 0u);
  t.remove_port(1);
  EXPECT_EQ(t.lookup(kVmMac), kNoPort);
}

// Writers on several threads (each VM's thread learns for its own port, the
// dispatcher for the uplink) keep the counts exact and the caps held.
TEST(Fdb, ConcurrentLearnersKeepCountsAndCaps) {
  FwdTable t;
  t.reset({.table_size = 2048, .aging_s = 300, .vm_port_max = 128});
  std::vector<std::thread> th;
  for (uint16_t p = 0; p < 4; ++p)
    th.emplace_back([&t, p] {
      for (uint64_t i = 0; i < 50'000; ++i) t.learn(random_mac(i * 8 + p), p);
    });
  th.emplace_back([&t] {
    for (uint64_t i = 0; i < 50'000; ++i) t.learn(random_mac(i * 8 + 7), kUplinkPort);
  });
  for (auto& x : th) x.join();
  unsigned per_port[5] = {}, total = 0;
  t.for_each([&](uint64_t, uint16_t port, bool, uint32_t) {
    ++per_port[port == kUplinkPort ? 4 : port];
    ++total;
  });
  for (uint16_t p = 0; p < 4; ++p) {
    EXPECT_LE(per_port[p], 128u);
    EXPECT_EQ(per_port[p], t.learned_entries(p));
  }
  EXPECT_EQ(per_port[4], t.learned_entries(kUplinkPort));
  EXPECT_LE(total, 2048u);
  EXPECT_EQ(total, t.learned_entries());
}

}  // namespace
}  // namespace capsule::pmd::detail
