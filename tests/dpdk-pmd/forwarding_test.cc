// End-to-end forwarding through the datapath with capsule-vm peers in
// separate processes: VM -> VM, VM -> uplink, uplink -> VM, flooding,
// removal and restart of VMs.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <thread>

#include <rte_ring.h>

#include "capsule/rsv/discovery.h"
#include "capsule/vm/ring_feeder.h"
#include "pmd_fixture.h"

namespace capsule::pmd::testing {
namespace {

using namespace std::chrono_literals;

class PmdForwarding : public DatapathTest {};

TEST_F(PmdForwarding, VmToVmDeliversEveryFrameAtLowRate) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready()) << b.output();
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "5000", "--count", "5000"});
  ASSERT_TRUE(a.wait_ready()) << a.output();
  auto ca = a.wait_exit(10s);
  ASSERT_EQ(ca["tx_packets"], 5000u) << a.output();
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "b").to_vm_packets >= 5000; }, 2s));
  auto cb = b.finish();
  EXPECT_EQ(cb["rx_test"], 5000u) << b.output();
  EXPECT_EQ(cb["rx_to_me"], 5000u);
  auto sa = stats_of(*dp, "a");
  auto sb = stats_of(*dp, "b");
  EXPECT_EQ(sa.from_vm_packets, 5000u);
  EXPECT_EQ(sa.from_vm_bytes, 5000u * 64);
  EXPECT_EQ(sb.to_vm_packets, 5000u);
  EXPECT_EQ(sb.ring_full_drops + sb.vhost_enqueue_drops, 0u);
  EXPECT_GT(sa.cycles_per_packet, 0.0);
}

// Capacity here = what VM -> VM delivers with A flat out (interrupt-driven
// B); at half of it nothing may be lost. The test rate is capped at
// 200 kpps: this 2-core machine is shared (compilers, other engineers'
// CPU-share tests), and four runnable threads of ours (A, A's PMD, B's PMD,
// B) already oversubscribe it; what the cap guards against is a scheduling
// gap longer than the rings (B's virtio ring 4096, B's datapath ring 16384).
TEST_F(PmdForwarding, NoLossAtHalfOfCapacity) {
  auto big = make_datapath("", {}, 16384);
  ASSERT_TRUE(big.ok()) << big.error().message;
  dp = std::move(big.value());
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count", "--queue-size", "4096"});
  ASSERT_TRUE(b.wait_ready());
  double capacity = 0;
  {
    VmProcess a(dir, "a1", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "0"});
    ASSERT_TRUE(a.wait_ready());
    ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "b").to_vm_packets > 10'000; }, 5s)) << "A's flood does not reach B";
    // Best of three 1 s windows: other engineers' experiments on this
    // machine can starve us for a while.
    for (int window = 0; window < 3; ++window) {
      const uint64_t p0 = stats_of(*dp, "b").to_vm_packets;
      const auto t0 = std::chrono::steady_clock::now();
      std::this_thread::sleep_for(1s);  // the measurement window
      const uint64_t p1 = stats_of(*dp, "b").to_vm_packets;
      capacity = std::max(capacity, double(p1 - p0) /
                                        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  ASSERT_GT(capacity, 10'000.0) << "VM -> VM capacity is implausibly low";
  // The flood is over once A is gone and B has taken all that was in flight.
  ASSERT_TRUE(testkit::wait_until([&] { return !stats_of(*dp, "a").connected; }, 3s));
  ASSERT_TRUE(delivery_settled(*dp, "b", 3s)) << "frames for B still in flight";
  const auto sb0 = stats_of(*dp, "b");
  const auto sa0 = stats_of(*dp, "a");
  const uint64_t rate = uint64_t(std::min(capacity / 2, 200'000.0)), count = rate * 2;  // 2 s
  VmProcess a(dir, "a2", dir.file("a.sock"), kMacA,
              {"--mode", "tx", "--dst", kMacB, "--rate", std::to_string(rate), "--count", std::to_string(count)});
  ASSERT_TRUE(a.wait_ready());
  auto ca = a.wait_exit(15s);
  ASSERT_EQ(ca["tx_packets"], count) << a.output();
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "b").to_vm_packets - sb0.to_vm_packets >= count; }, 2s))
      << "capacity " << capacity << " pps, sent " << count << " at " << rate << " pps, delivered "
      << stats_of(*dp, "b").to_vm_packets - sb0.to_vm_packets << ", ring-full drops "
      << stats_of(*dp, "b").ring_full_drops - sb0.ring_full_drops;
  const auto sa = stats_of(*dp, "a");
  const auto sb = stats_of(*dp, "b");
  EXPECT_EQ(sa.from_vm_packets - sa0.from_vm_packets, count);
  EXPECT_EQ(sb.ring_full_drops - sb0.ring_full_drops, 0u);
  EXPECT_EQ(sb.vhost_enqueue_drops - sb0.vhost_enqueue_drops, 0u);
  std::printf("VM -> VM capacity %.0f pps; %lu frames at %lu pps, none lost\n", capacity, (unsigned long)count,
              (unsigned long)rate);
}

// A tap uplink moved into a namespace of the test: the kernel there is the
// outside world.
class TapUplink {
 public:
  TapUplink() : ns_("cpmd-" + std::to_string(getpid())), iface_("cpt" + std::to_string(getpid() % 100000)) {}
  Status start(std::unique_ptr<Datapath>& dp) {
    if (!ns_.ok()) return Error{"cannot create a network namespace", EPERM};
    auto r = make_datapath("net_tap0,iface=" + iface_);
    if (!r) return r.error();
    dp = std::move(r.value());
    if (shell("ip link set " + iface_ + " netns " + ns_.name()) != 0) return Error{"cannot move the tap", EIO};
    if (ns_.exec("ip addr add 198.18.0.1/24 dev " + iface_ + " && ip link set " + iface_ + " up") != 0)
      return Error{"cannot address the tap", EIO};
    return Status::Ok();
  }
  const Netns& ns() const { return ns_; }
  const std::string& iface() const { return iface_; }
  uint64_t counter(const std::string& which) const {
    std::string out;
    ns_.exec("cat /sys/class/net/" + iface_ + "/statistics/" + which, &out);
    return std::strtoull(out.c_str(), nullptr, 10);
  }
  std::string mac() const {
    std::string out;
    ns_.exec("cat /sys/class/net/" + iface_ + "/address", &out);
    return out.substr(0, 17);
  }

 private:
  Netns ns_;  // outlives the datapath below it in the test
  std::string iface_;
};

// Tests with a tap uplink in a namespace of their own; skipped without
// /dev/net/tun. Members go in reverse: datapath, tap + namespace, directory.
class PmdUplink : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/net/tun", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/net/tun: net_tap uplink cannot be tested";
    auto st = tap.start(dp);
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  TempDir dir;
  TapUplink tap;
  std::unique_ptr<Datapath> dp;
};

TEST_F(PmdUplink, VmToUplinkReachesTheKernelBehindTheTap) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  const uint64_t before = tap.counter("rx_packets");
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA,
              {"--mode", "tx", "--dst", tap.mac(), "--dst-ip", "198.18.0.1", "--rate", "2000", "--count", "1000"});
  ASSERT_TRUE(a.wait_ready()) << a.output();
  auto ca = a.wait_exit(10s);
  ASSERT_EQ(ca["tx_packets"], 1000u);
  EXPECT_TRUE(testkit::wait_until([&] { return tap.counter("rx_packets") - before >= 1000; }, 2s))
      << "the kernel received " << tap.counter("rx_packets") - before << " of 1000 frames";
  auto sa = stats_of(*dp, "a");
  EXPECT_EQ(sa.from_vm_packets, 1000u);
  EXPECT_EQ(sa.uplink_tx_drops, 0u);
}

TEST_F(PmdUplink, UplinkToVmByMacAnswersPingFromTheNamespace) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "count", "--ip", "198.18.0.2"});
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count", "--ip", "198.18.0.3"});
  ASSERT_TRUE(a.wait_ready()) << a.output();
  ASSERT_TRUE(b.wait_ready()) << b.output();
  std::string out;
  // ARP (broadcast, flooded to both VMs) then unicast echo to B only. -w:
  // wait up to 10 s for all 20 replies (this shared machine can delay a
  // thread by tens of ms; a lost frame still fails the test).
  const int rc = tap.ns().exec("ping -c 20 -i 0.05 -w 10 198.18.0.3", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("20 received"), std::string::npos) << out;
  auto ca = a.finish();
  auto cb = b.finish();
  EXPECT_GE(cb["icmp_replies"], 20u) << b.output();
  EXPECT_GE(cb["arp_replies"], 1u);
  EXPECT_EQ(ca["icmp_replies"], 0u);
  EXPECT_EQ(ca["rx_to_me"], 0u) << "unicast for B leaked to A";
  EXPECT_GE(ca["rx_packets"], 1u) << "the ARP broadcast was not flooded to A";
  const auto up = dp->uplink_stats();
  EXPECT_GT(up.rx_packets, 20u);
  EXPECT_TRUE(up.rx_interrupts) << "the dispatcher polled instead of blocking on the tap's rx interrupts";
  EXPECT_GT(up.dispatcher_blocks, 0u);
  bool learned = false;
  for (const auto& e : dp->fdb())
    if (e.port == "uplink" && e.mac.str() == tap.mac()) learned = true;
  EXPECT_TRUE(learned) << "the namespace's MAC was not learned on the uplink";
}

TEST_F(PmdForwarding, BroadcastFromAVmIsFloodedToTheOthers) {
  for (auto [n, m] : {std::pair{"a", kMacA}, {"b", kMacB}, {"c", kMacC}})
    ASSERT_TRUE(dp->add_vm(vm_config(n, dir.file(std::string(n) + ".sock"), m)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  VmProcess c(dir, "c", dir.file("c.sock"), kMacC, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready() && c.wait_ready());
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "tx", "--rate", "2000", "--count", "1000"});
  ASSERT_TRUE(a.wait_ready());
  a.wait_exit(10s);
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "c").to_vm_packets >= 1000 &&
                                                stats_of(*dp, "b").to_vm_packets >= 1000; }, 2s));
  EXPECT_EQ(b.finish()["rx_test"], 1000u);
  EXPECT_EQ(c.finish()["rx_test"], 1000u);
}

// A flood on the wire for one VM (E3's neighbour), frames from the wire for
// MACs nobody has, and a VM sending to an unknown MAC must not reach a VM
// that none of them names: not its ring, not its guest, not even a wake-up
// of its thread (its reservation would pay for it). Unknown unicast goes to
// the uplink only, as with a learning switch whose table knows every local
// MAC (each VM's MAC is configured).
TEST_F(PmdForwarding, FloodsForOtherOrUnknownMacsNeverReachAnUninvolvedVm) {
  auto up = make_datapath("net_ring0");
  ASSERT_TRUE(up.ok()) << up.error().message;
  dp = std::move(up.value());
  for (auto [n, m] : {std::pair{"a", kMacA}, {"b", kMacB}, {"c", kMacC}})
    ASSERT_TRUE(dp->add_vm(vm_config(n, dir.file(std::string(n) + ".sock"), m)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  VmProcess c(dir, "c", dir.file("c.sock"), kMacC, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready() && c.wait_ready()) << b.output() << c.output();
  // c's thread has gone round its loop and parked before the floods start.
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "c").blocks > 0; }, 5s));
  const auto c0 = stats_of(*dp, "c");
  {
    // The wire: frames for b and for two MACs nobody has, from a MAC behind
    // the uplink (as the experiments' generator sends them).
    vm::RingFeeder wire(rte_ring_lookup("ETH_RXTX0_net_ring0"),
                        {kMacB, "02:00:00:00:00:97", kMacB, "02:00:00:00:00:98"}, 1514, -1, "02:00:00:00:00:fe");
    ASSERT_TRUE(wire.ok());
    // A VM sending to a MAC nobody has (and to b).
    VmProcess a(dir, "a", dir.file("a.sock"), kMacA,
                {"--mode", "tx", "--dst", "02:00:00:00:00:99", "--rate", "20000", "--count", "20000"});
    ASSERT_TRUE(a.wait_ready()) << a.output();
    a.wait_exit(10s);
    ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "b").to_vm_packets > 100'000; }, 10s))
        << "the flood for b did not reach b";
    EXPECT_GE(stats_of(*dp, "a").from_vm_packets, 20'000u);
  }
  ASSERT_TRUE(delivery_settled(*dp, "c", 3s));
  const auto c1 = stats_of(*dp, "c");
  EXPECT_EQ(c1.to_vm_packets, c0.to_vm_packets) << "frames for b or for unknown MACs were delivered to c";
  EXPECT_EQ(c1.ring_full_drops, c0.ring_full_drops) << "frames for b or for unknown MACs were sent towards c";
  EXPECT_EQ(c1.wakeups_by_ring, c0.wakeups_by_ring) << "c's thread was woken for frames that are not c's";
  EXPECT_EQ(c.finish()["rx_packets"], 0u) << c.output();
  EXPECT_GT(dp->uplink_stats().rx_no_vm, 0u) << "the wire's frames for unknown MACs were not counted as for no VM";
}

TEST_F(PmdForwarding, RemovingAVmLeavesOtherTrafficIntact) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("c", dir.file("c.sock"), kMacC)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready());
  auto c = std::make_unique<VmProcess>(dir, "c", dir.file("c.sock"), kMacC,
                                       std::vector<std::string>{"--mode", "tx", "--dst", kMacB, "--rate", "3000"});
  ASSERT_TRUE(c->wait_ready());
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "3000", "--count", "9000"});
  ASSERT_TRUE(a.wait_ready());
  // Both A and C are sending to B.
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "a").from_vm_packets > 300 &&
                                                stats_of(*dp, "c").from_vm_packets > 300; }, 5s));
  const auto tid_a = dp->pmd_tid("a").value();
  // C goes away while A (and C) send to B; then a new VM comes and goes.
  ASSERT_TRUE(dp->remove_vm("c").ok());
  EXPECT_FALSE(dp->stats("c").ok());
  // C's process ends with the test: an emulated VM whose backend went away
  // takes up to its 3 s SIGTERM grace to exit, longer than A has frames left.
  ASSERT_TRUE(dp->add_vm(vm_config("d", dir.file("d.sock"), kMacC)).ok());
  // D's thread is up (it has gone round its loop and parked) before it goes.
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "d").blocks > 0; }, 5s));
  ASSERT_TRUE(dp->remove_vm("d").ok());
  auto ca = a.wait_exit(15s);
  ASSERT_EQ(ca["tx_packets"], 9000u);
  EXPECT_EQ(dp->pmd_tid("a").value(), tid_a);
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "a").from_vm_packets >= 9000; }, 2s));
  auto sa = stats_of(*dp, "a");
  auto sb = stats_of(*dp, "b");
  EXPECT_EQ(sa.from_vm_packets, 9000u);
  EXPECT_EQ(sb.ring_full_drops + sb.vhost_enqueue_drops, 0u);
  // B got all of A's frames (plus whatever C sent before it left).
  auto cb = b.finish();
  EXPECT_GE(cb["rx_test"], 9000u);
  EXPECT_EQ(cb["rx_test"], sb.to_vm_packets);
}

// A VM removed and added again on the same socket (a VM migrating back, an
// agent restart) gets its traffic again.
TEST_F(PmdForwarding, VmReaddedOnTheSameSocketGetsTrafficAgain) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok()) << "round " << round;
    VmProcess b(dir, "b" + std::to_string(round), dir.file("b.sock"), kMacB, {"--mode", "count"});
    ASSERT_TRUE(b.wait_ready()) << "round " << round << ": " << b.output();
    VmProcess a(dir, "a" + std::to_string(round), dir.file("a.sock"), kMacA,
                {"--mode", "tx", "--dst", kMacB, "--rate", "2000", "--count", "500"});
    ASSERT_TRUE(a.wait_ready()) << a.output();
    a.wait_exit(10s);
    ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "b").to_vm_packets >= 500; }, 2s));
    EXPECT_EQ(b.finish()["rx_test"], 500u) << "round " << round;
    ASSERT_TRUE(dp->remove_vm("b").ok());
  }
}

// The study's request/response probe through the datapath: a request every
// 20 ms, 100 kB back each time, every one completed well within 20 ms on an
// unreserved, lightly loaded host.
TEST_F(PmdForwarding, RequestResponseProbeCompletesEveryRequest) {
  ASSERT_TRUE(dp->add_vm(vm_config("c", dir.file("c.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("s", dir.file("s.sock"), kMacB)).ok());
  VmProcess server(dir, "s", dir.file("s.sock"), kMacB, {"--mode", "serve"});
  ASSERT_TRUE(server.wait_ready());
  VmProcess client(dir, "c", dir.file("c.sock"), kMacA,
                   {"--mode", "probe", "--dst", kMacB, "--interval-ms", "20", "--response-bytes", "100000",
                    "--duration", "2"});
  ASSERT_TRUE(client.wait_ready());
  auto cc = client.wait_exit(10s);
  auto cs = server.finish();
  EXPECT_GE(cc["requests"], 90u) << client.output();
  EXPECT_GE(cc["responses"] + 2, cc["requests"]) << "requests without a complete 100 kB answer";
  EXPECT_GE(cs["served"] + 1, cc["requests"]);
  EXPECT_GT(cc["lat_p50_us"], 0u);
  EXPECT_LT(cc["lat_p50_us"], 20'000u) << client.output();
  // 72 frames of 1474 bytes per answer
  EXPECT_GE(stats_of(*dp, "c").to_vm_packets, cc["responses"] * 72);
}

// The VM process dies and comes back on the same socket; capsule reconnects
// (client mode) or the VM reconnects (server mode), and traffic flows again.
class PmdRestart : public DatapathTest, public ::testing::WithParamInterface<VhostPortConfig::Mode> {};

TEST_P(PmdRestart, RestartedVmGetsTrafficAgain) {
  const bool server = GetParam() == VhostPortConfig::Mode::kServer;
  auto cfg_b = vm_config("b", dir.file("b.sock"), kMacB);
  cfg_b.port.mode = GetParam();
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(cfg_b).ok());
  std::vector<std::string> b_args = {"--mode", "count", "--report-ms", "100"};
  if (server) b_args.push_back("--vhost-client");
  auto b = std::make_unique<VmProcess>(dir, "b1", dir.file("b.sock"), kMacB, b_args);
  ASSERT_TRUE(b->wait_ready()) << b->output();
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "2000"});
  ASSERT_TRUE(a.wait_ready());
  ASSERT_TRUE(testkit::wait_until([&] { return b->last_counters()["rx_test"] > 100; }, 3s)) << b->output();
  const uint64_t connects = stats_of(*dp, "b").connects;
  b->finish();
  b.reset();
  EXPECT_TRUE(testkit::wait_until([&] { return !stats_of(*dp, "b").connected; }, 3s));
  b = std::make_unique<VmProcess>(dir, "b2", dir.file("b.sock"), kMacB, b_args);
  ASSERT_TRUE(b->wait_ready(20s)) << b->output();
  EXPECT_TRUE(testkit::wait_until([&] { return b->last_counters()["rx_test"] > 100; }, 5s)) << b->output();
  auto sb = stats_of(*dp, "b");
  EXPECT_TRUE(sb.connected);
  EXPECT_GT(sb.connects, connects);
}

// A VM on a client-mode port is replaced by a new process serving the same
// socket path the moment the old one is gone, while traffic for it flows
// (bench/experiments/e1-budget does this between its phases; issue 9
// item 4): the new one comes up and gets the traffic, every time. Both
// kinds of guest: interrupt-driven and busy-polling.
TEST_F(DatapathTest, ReplacedVmOnAClientPortComesUpAndGetsTrafficEveryTime) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "20000"});
  ASSERT_TRUE(a.wait_ready());
  std::unique_ptr<VmProcess> b;
  for (int round = 0; round < 6; ++round) {
    std::vector<std::string> args = {"--mode", "count", "--report-ms", "100", "--queue-size", "1024"};
    if (round % 2) args.push_back("--busy-poll");
    b.reset();  // the old VM goes (SIGTERM), the new one serves its socket at once
    b = std::make_unique<VmProcess>(dir, "b" + std::to_string(round), dir.file("b.sock"), kMacB, args);
    ASSERT_TRUE(b->wait_ready(20s)) << "round " << round << ": the new VM did not come up\n" << b->output();
    EXPECT_TRUE(testkit::wait_until([&] { return b->last_counters()["rx_test"] > 1000; }, 5s))
        << "round " << round << ": " << b->output();
  }
}

// Close to bench/experiments/e1-budget between its series (issue 12: there
// the VM restarted on VM 1's socket gets nothing): frames from the wire wait
// for a VM whose guest stopped taking them (its ring full, its thread
// parked), the flood stops, the VM process is replaced on its socket, the
// flood resumes. The new VM gets the traffic. This passes: what e1 has on
// top (a partition on CPU 1, a CFS hog, pinned threads, a reservation
// applied and released before the replacement) is not reproduced here yet.
TEST_F(DatapathTest, VmReplacedWhileFramesWaitedForItGetsTheFloodAgain) {
  auto up = make_datapath("net_ring0");
  ASSERT_TRUE(up.ok()) << up.error().message;
  dp = std::move(up.value());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  auto wire = [] {
    return std::make_unique<vm::RingFeeder>(rte_ring_lookup("ETH_RXTX0_net_ring0"), kMacB, 1514u);
  };
  for (int round = 0; round < 3; ++round) {
    // A guest that stops draining: its virtio ring fills, frames wait.
    auto stalled = std::make_unique<VmProcess>(dir, "stall" + std::to_string(round), dir.file("b.sock"), kMacB,
                                               std::vector<std::string>{"--mode", "stall", "--queue-size", "256"});
    ASSERT_TRUE(stalled->wait_ready(20s)) << stalled->output();
    {
      auto flood = wire();
      ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "b").ring_full_drops > 1000; }, 5s))
          << "round " << round << ": the stalled guest's ring never filled";
    }
    stalled.reset();
    VmProcess b(dir, "b" + std::to_string(round), dir.file("b.sock"), kMacB,
                {"--mode", "count", "--report-ms", "100", "--queue-size", "1024"});
    ASSERT_TRUE(b.wait_ready(20s)) << "round " << round << ": the new VM did not come up\n" << b.output();
    auto flood = wire();
    EXPECT_TRUE(testkit::wait_until([&] { return b.last_counters()["rx_to_me"] > 1000; }, 5s))
        << "round " << round << ": the new VM got no traffic: " << b.output();
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, PmdRestart,
                         ::testing::Values(VhostPortConfig::Mode::kClient, VhostPortConfig::Mode::kServer),
                         [](const auto& p) { return p.param == VhostPortConfig::Mode::kClient ? "Client" : "Server"; });

}  // namespace
}  // namespace capsule::pmd::testing
