// End-to-end forwarding through the datapath with capsule-vm peers in
// separate processes: VM -> VM, VM -> uplink, uplink -> VM, flooding,
// removal and restart of VMs.
#include <gtest/gtest.h>

#include <thread>

#include "capsule/rsv/discovery.h"
#include "pmd_fixture.h"

namespace capsule::pmd::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kMacA = "02:00:00:00:00:0a";
constexpr const char* kMacB = "02:00:00:00:00:0b";
constexpr const char* kMacC = "02:00:00:00:00:0c";

TEST(PmdForwarding, VmToVmDeliversEveryFrameAtLowRate) {
  TempDir dir;
  auto dp = make_datapath();
  ASSERT_TRUE(dp.ok()) << dp.error().message;
  ASSERT_TRUE(dp.value()->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp.value()->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready()) << b.output();
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "5000", "--count", "5000"});
  ASSERT_TRUE(a.wait_ready()) << a.output();
  auto ca = a.wait_exit(10s);
  ASSERT_EQ(ca["tx_packets"], 5000u) << a.output();
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp.value(), "b").to_vm_packets >= 5000; }, 2s));
  auto cb = b.finish();
  EXPECT_EQ(cb["rx_test"], 5000u) << b.output();
  EXPECT_EQ(cb["rx_to_me"], 5000u);
  auto sa = stats_of(*dp.value(), "a");
  auto sb = stats_of(*dp.value(), "b");
  EXPECT_EQ(sa.from_vm_packets, 5000u);
  EXPECT_EQ(sa.from_vm_bytes, 5000u * 64);
  EXPECT_EQ(sb.to_vm_packets, 5000u);
  EXPECT_EQ(sb.ring_full_drops + sb.vhost_enqueue_drops, 0u);
  EXPECT_GT(sa.cycles_per_packet, 0.0);
}

}  // namespace
}  // namespace capsule::pmd::testing
