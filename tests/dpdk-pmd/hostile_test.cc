// A hostile VM against its neighbours, with real ports (DESIGN.md "Hostile
// VMs"): spoofed and random source MACs are dropped and counted by port
// security; without port security a random-MAC flood stays within the VM's
// share of the forwarding table; a VM that never drains its rx ring holds no
// more than its own ring while its neighbours keep forwarding.
#include <gtest/gtest.h>

#include "pmd_fixture.h"

namespace capsule::pmd::testing {
namespace {

using namespace std::chrono_literals;

class PmdHostile : public DatapathTest {};

unsigned learned_on(Datapath& dp, const std::string& port) {
  unsigned n = 0;
  for (const auto& e : dp.fdb()) n += !e.configured && e.port == port;
  return n;
}

TEST_F(PmdHostile, PortSecurityDropsAndCountsFramesFromAnyOtherSource) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready()) << b.output();
  {  // A pretends to be C, then sends from random MACs
    VmProcess a(dir, "a1", dir.file("a.sock"), kMacA,
                {"--mode", "tx", "--dst", kMacB, "--src", kMacC, "--rate", "20000", "--count", "2000"});
    ASSERT_TRUE(a.wait_ready()) << a.output();
    ASSERT_EQ(a.wait_exit(10s)["tx_packets"], 2000u) << a.output();
  }
  {
    VmProcess a(dir, "a2", dir.file("a.sock"), kMacA,
                {"--mode", "tx", "--dst", kMacB, "--src", "random", "--rate", "20000", "--count", "3000"});
    ASSERT_TRUE(a.wait_ready()) << a.output();
    ASSERT_EQ(a.wait_exit(10s)["tx_packets"], 3000u) << a.output();
  }
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "a").from_vm_drops_port_security >= 5000; }, 5s))
      << stats_of(*dp, "a").from_vm_drops_port_security;
  EXPECT_EQ(stats_of(*dp, "a").from_vm_drops_port_security, 5000u);
  EXPECT_EQ(stats_of(*dp, "a").from_vm_packets, 0u);
  EXPECT_EQ(learned_on(*dp, "a"), 0u) << "spoofed sources must not reach the forwarding table";
  // Its own MAC still goes through.
  VmProcess a(dir, "a3", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "20000", "--count", "1000"});
  ASSERT_TRUE(a.wait_ready()) << a.output();
  ASSERT_EQ(a.wait_exit(10s)["tx_packets"], 1000u);
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "b").to_vm_packets >= 1000; }, 5s));
  EXPECT_EQ(b.finish()["rx_test"], 1000u) << "B got exactly A's genuine frames";
  EXPECT_EQ(stats_of(*dp, "a").from_vm_drops_port_security, 5000u);
}

TEST_F(PmdHostile, WithoutPortSecurityARandomMacFloodStaysWithinTheVmsCap) {
  VmConfig a = vm_config("a", dir.file("a.sock"), kMacA);
  a.port_security = false;
  ASSERT_TRUE(dp->add_vm(a).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("c", dir.file("c.sock"), kMacC)).ok());
  const auto limits = dp->fdb_summary();
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready()) << b.output();
  VmProcess va(dir, "a", dir.file("a.sock"), kMacA,
               {"--mode", "tx", "--dst", kMacB, "--src", "random", "--rate", "20000", "--count", "20000"});
  ASSERT_TRUE(va.wait_ready()) << va.output();
  ASSERT_EQ(va.wait_exit(10s)["tx_packets"], 20000u);
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "a").from_vm_packets >= 20000; }, 5s));
  EXPECT_EQ(learned_on(*dp, "a"), limits.vm_max) << "A learns up to its cap, no more";
  EXPECT_GE(dp->fdb_summary().evictions, 20000u - limits.vm_max - 100);  // (a few random MACs may repeat)
  // The neighbours' MACs are where they were: C's frames to B still arrive.
  VmProcess vc(dir, "c", dir.file("c.sock"), kMacC, {"--mode", "tx", "--dst", kMacB, "--rate", "20000", "--count", "1000"});
  ASSERT_TRUE(vc.wait_ready());
  ASSERT_EQ(vc.wait_exit(10s)["tx_packets"], 1000u);
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "b").to_vm_packets >= 21000; }, 5s))
      << stats_of(*dp, "b").to_vm_packets;
  bool b_configured = false;
  for (const auto& e : dp->fdb()) b_configured |= e.configured && e.port == "b" && e.mac.str() == kMacB;
  EXPECT_TRUE(b_configured);
}

}  // namespace
}  // namespace capsule::pmd::testing
