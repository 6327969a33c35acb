// Bad configuration is refused with a reason, and refusals leave running
// VMs (their threads and their traffic) untouched.
#include <gtest/gtest.h>

#include <rte_mbuf.h>
#include <rte_ring.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "pmd_fixture.h"

namespace capsule::pmd::testing {
namespace {

using namespace std::chrono_literals;

void expect_refused(const Status& s, const std::string& words) {
  ASSERT_FALSE(s.ok()) << "accepted, expected a refusal mentioning '" << words << "'";
  EXPECT_NE(s.error().message.find(words), std::string::npos) << s.error().message;
}

TEST(PmdConfig, MalformedUplinkDevargsAreRefused) {
  auto r = make_datapath("net_nosuchdriver0");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("net_nosuchdriver0"), std::string::npos) << r.error().message;
  auto r2 = make_datapath("net_null0,bogus_key=1");
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.error().message.find("bogus_key"), std::string::npos) << r2.error().message;
  auto r3 = make_datapath(",x=1");
  ASSERT_FALSE(r3.ok());
  // A datapath with a correct uplink still comes up afterwards.
  auto ok = make_datapath("net_null0");
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_TRUE(ok.value()->uplink_stats().present);
}

// A net_ring uplink's ring is its wire (what it sends comes back in). When
// the datapath goes, so does the ring: the next datapath on net_ring0 must not
// find frames of the old one's mbuf pool there (freed memory), and DPDK must
// not complain that it cannot create the ring ("RING: Cannot reserve memory",
// printed by every pmd-throughput run before).
TEST(PmdConfig, ANetRingUplinkLeavesNoRingBehind) {
  rte_mempool* pool = nullptr;  // the frames left on the wire; freed with them at the end
  {
    DatapathConfig cfg;
    cfg.eal.program = "test_dpdk_pmd";
    cfg.uplink_devargs = "net_ring0";
    cfg.uplink_receive = false;  // nobody drains the wire: what is left stays
    cfg.max_vms = 2;
    auto dp = Datapath::create(cfg);
    ASSERT_TRUE(dp.ok()) << dp.error().message;
    rte_ring* wire = rte_ring_lookup("ETH_RXTX0_net_ring0");
    ASSERT_NE(wire, nullptr);
    pool = rte_pktmbuf_pool_create("cfgtest_wire", 255, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    ASSERT_NE(pool, nullptr);
    rte_mbuf* m[8];
    ASSERT_EQ(rte_pktmbuf_alloc_bulk(pool, m, 8), 0);
    ASSERT_EQ(rte_ring_enqueue_bulk(wire, reinterpret_cast<void**>(m), 8, nullptr), 8u);
  }
  EXPECT_EQ(rte_ring_lookup("ETH_RXTX0_net_ring0"), nullptr) << "net_ring0's ring outlived its datapath";
  auto next = make_datapath("net_ring0");
  ASSERT_TRUE(next.ok()) << next.error().message;
  rte_ring* wire = rte_ring_lookup("ETH_RXTX0_net_ring0");
  ASSERT_NE(wire, nullptr);
  EXPECT_EQ(rte_ring_count(wire), 0u) << "the new uplink found the old one's frames on its wire";
  rte_mempool_free(pool);
}

TEST(PmdConfig, BadVmConfigurationIsRefusedAndRunningVmsKeepForwarding) {
  TempDir dir;
  auto dpr = make_datapath();
  ASSERT_TRUE(dpr.ok()) << dpr.error().message;
  Datapath& dp = *dpr.value();
  ASSERT_TRUE(dp.add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp.add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready());
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "2000", "--count", "6000"});
  ASSERT_TRUE(a.wait_ready());
  const pid_t tid_a = dp.pmd_tid("a").value(), tid_b = dp.pmd_tid("b").value();

  auto c = [&](auto mutate) {
    auto v = vm_config("c", dir.file("c.sock"), "02:00:00:00:00:0c");
    mutate(v);
    return v;
  };
  expect_refused(dp.remove_vm("nosuch"), "nosuch");
  EXPECT_EQ(dp.remove_vm("nosuch").error().errnum, ENOENT);
  EXPECT_FALSE(dp.stats("nosuch").ok());
  EXPECT_FALSE(dp.pmd_tid("nosuch").ok());
  expect_refused(dp.set_qos("nosuch", {}), "nosuch");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.mac = MacAddr::parse(kMacA).value(); })), "VM 'a'");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.mac = MacAddr::parse("01:00:5e:00:00:01").value(); })), "unicast");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.mac = MacAddr{}; })), "unicast");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.name = "a"; })), "already exists");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.name = "bad name"; })), "letters");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.name = ""; })), "1 to 32");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.port.socket_path = ""; })), "socket");
  expect_refused(dp.add_vm(c([&](VmConfig& v) { v.port.socket_path = dir.file("a.sock"); })), "VM 'a'");
  expect_refused(dp.add_vm(c([&](VmConfig& v) { v.port.socket_path = "/nonexistent-dir/x.sock"; v.port.mode = VhostPortConfig::Mode::kServer; })), "listen");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.qos.from_vm.bytes = BytePolicerConfig::egress_policer(0, 10'000); })), "cir");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.qos.from_vm.bytes = BytePolicerConfig::egress_policer(1'000'000, 1000); })), "one full frame");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.qos.from_vm.bytes = BytePolicerConfig::trtcm_policer(1'000'000, 10'000, 1'000'000, 100); })), "one full frame");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.qos.to_vm.bytes = BytePolicerConfig::ingress_policing(8000, 1); })), "one full frame");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.qos.to_vm.packets = PacketPolicerConfig{1000, 0}; })), "at least one packet");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.poll.empty_polls = 0; })), "empty_polls");
  expect_refused(dp.add_vm(c([](VmConfig& v) { v.pin_cpu = 4096; })), "CPU 4096");
  VmQos bad;
  bad.from_vm.bytes = BytePolicerConfig::egress_policer(0, 0);
  expect_refused(dp.set_qos("a", bad), "cir");

  // Nothing of the refused VMs remains; A and B are as they were.
  EXPECT_EQ(dp.vm_names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(dp.pmd_tid("a").value(), tid_a);
  EXPECT_EQ(dp.pmd_tid("b").value(), tid_b);
  for (const auto& e : dp.fdb()) EXPECT_NE(e.mac.str(), "02:00:00:00:00:0c");
  auto ca = a.wait_exit(15s);
  ASSERT_EQ(ca["tx_packets"], 6000u);
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(dp, "b").to_vm_packets >= 6000; }, 2s));
  EXPECT_EQ(b.finish()["rx_test"], 6000u);
  // A good VM is still accepted after all that.
  EXPECT_TRUE(dp.add_vm(vm_config("c", dir.file("c.sock"), "02:00:00:00:00:0c")).ok());
}

TEST(PmdConfig, BadDatapathConfigurationIsRefused) {
  DatapathConfig cfg;
  cfg.ring_size = 1000;
  auto r = Datapath::create(cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("power of two"), std::string::npos);
  cfg.ring_size = 1024;
  cfg.max_vms = 0;
  EXPECT_FALSE(Datapath::create(cfg).ok());
  EXPECT_FALSE(parse_poll_policy("spin").ok());
  EXPECT_EQ(parse_poll_policy("interrupt").value(), PollPolicy::kInterrupt);
  EXPECT_FALSE(MacAddr::parse("02:00:00:00:00").ok());
  EXPECT_FALSE(MacAddr::parse("02:00:00:00:00:0g").ok());
  EXPECT_EQ(MacAddr::parse("02:00:00:00:00:0A").value().str(), "02:00:00:00:00:0a");
}

// DPDK makes /var/run/dpdk/<file-prefix> in every process that starts its
// EAL, also with --in-memory, and never removes it: a test machine collected
// thousands. Neither the datapath's process nor an emulated VM (capsule-vm,
// killed by its test) leaves one behind.
TEST_F(DatapathTest, NeitherTheDatapathNorAVmLeavesADpdkRuntimeDirectory) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "count"});
  ASSERT_TRUE(a.wait_ready());
  ASSERT_GT(a.pid(), 0);
  EXPECT_FALSE(std::filesystem::exists("/var/run/dpdk/capsule-" + std::to_string(getpid())));
  EXPECT_FALSE(std::filesystem::exists("/var/run/dpdk/cvm-" + std::to_string(a.pid())));
}

}  // namespace
}  // namespace capsule::pmd::testing
