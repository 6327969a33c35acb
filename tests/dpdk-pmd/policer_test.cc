// Policers hold their rate within +-5 % over 2 s at twice the offered load
// (OVS semantics: bytes counted without the Ethernet header), and drops are
// counted by colour. Traffic: VM A -> VM B, 1000-byte frames.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "capsule/rsv/reservation.h"
#include "pmd_fixture.h"

namespace capsule::pmd::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kFrame = 1000;
constexpr double kPolicedBytes = kFrame - 14;

struct PolicerCase {
  std::string name;
  VmQos qos;
  double expected;  // packets per second that pass
  bool on_to_vm;    // measured on B's to_vm counters instead of A's from_vm
};

void PrintTo(const PolicerCase& c, std::ostream* os) { *os << c.name; }

class PmdPolicer : public DatapathTest, public ::testing::WithParamInterface<PolicerCase> {};
class PmdPolicerConfig : public DatapathTest {};

TEST_P(PmdPolicer, HoldsItsRateAtTwiceTheOfferedLoad) {
  const PolicerCase& pc = GetParam();
  auto a_cfg = vm_config("a", dir.file("a.sock"), kMacA);
  auto b_cfg = vm_config("b", dir.file("b.sock"), kMacB);
  (pc.on_to_vm ? b_cfg : a_cfg).qos = pc.qos;
  ASSERT_TRUE(dp->add_vm(a_cfg).ok());
  ASSERT_TRUE(dp->add_vm(b_cfg).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready());
  const double offered = 2 * pc.expected;
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA,
              {"--mode", "tx", "--dst", kMacB, "--size", std::to_string(kFrame), "--rate", std::to_string(offered)});
  ASSERT_TRUE(a.wait_ready());
  // The initial burst (cbs) is spent once the policer drops.
  auto drops_so_far = [&] {
    auto s = stats_of(*dp, pc.on_to_vm ? "b" : "a");
    return pc.on_to_vm ? s.to_vm_drops_red + s.to_vm_drops_pps
                       : s.from_vm_drops_red + s.from_vm_drops_pps;
  };
  ASSERT_TRUE(testkit::wait_until([&] { return drops_so_far() > 0; }, 5s)) << pc.name << ": the policer never dropped";
  // Frames the policer saw (passed + dropped) and frames that passed.
  auto seen_passed = [&] {
    auto s = stats_of(*dp, pc.on_to_vm ? "b" : "a");
    return pc.on_to_vm ? std::pair{s.to_vm_packets + s.to_vm_drops_red + s.to_vm_drops_pps,
                                   s.to_vm_packets}
                       : std::pair{s.from_vm_packets + s.from_vm_drops_red + s.from_vm_drops_pps,
                                   s.from_vm_packets};
  };
  // The offered load must really be twice the rate in the window, or the
  // window says nothing about the policer: a machine shared with other
  // engineers' experiments can starve the sender for a while. Up to three
  // windows; the policer is judged on the first one that had the load.
  double rate = 0, seen_rate = 0;
  for (int window = 0; window < 3; ++window) {
    const auto [s0, p0] = seen_passed();
    const auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(2s);  // the measurement window
    const auto [s1, p1] = seen_passed();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rate = double(p1 - p0) / secs;
    seen_rate = double(s1 - s0) / secs;
    if (seen_rate >= 1.8 * pc.expected) break;
  }
  ASSERT_GE(seen_rate, 1.8 * pc.expected) << pc.name << ": the sender never offered twice the rate (" << seen_rate
                                          << " pps seen by the policer)";
  EXPECT_NEAR(rate, pc.expected, pc.expected * 0.05)
      << pc.name << ": " << rate << " pps passed of " << seen_rate << " offered (" << offered << " asked)";
  auto sa = stats_of(*dp, "a");
  auto sb = stats_of(*dp, "b");
  const auto& s = pc.on_to_vm ? sb : sa;
  const uint64_t drops = pc.on_to_vm ? s.to_vm_drops_red + s.to_vm_drops_pps
                                     : s.from_vm_drops_red + s.from_vm_drops_pps;
  EXPECT_GT(drops, uint64_t(pc.expected * 2 * 0.7)) << "drops not counted";
  if (pc.qos.from_vm.packets.enabled() || pc.qos.to_vm.packets.enabled()) {
    EXPECT_EQ(drops, pc.on_to_vm ? s.to_vm_drops_pps : s.from_vm_drops_pps);
  } else {
    EXPECT_EQ(drops, pc.on_to_vm ? s.to_vm_drops_red : s.from_vm_drops_red);
  }
  // What passed arrived (nothing lost behind the policer).
  a.finish();
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "b").to_vm_packets >= (pc.on_to_vm ? 0 : sa.from_vm_packets); }, 2s));
}

VmQos from_vm(BytePolicerConfig b, PacketPolicerConfig p = {}) {
  VmQos q;
  q.from_vm.bytes = b;
  q.from_vm.packets = p;
  return q;
}

VmQos to_vm(BytePolicerConfig b, PacketPolicerConfig p = {}) {
  VmQos q;
  q.to_vm.bytes = b;
  q.to_vm.packets = p;
  return q;
}

// Each policer in the direction capsuled puts it (OVS's, schema 2.0.0): a
// Port's QoS (egress-policer, trtcm-policer, pkt-policer) on what the VM
// receives, its ingress policing (kbps, or kpps in thousands of packets)
// on what the VM sends.
INSTANTIATE_TEST_SUITE_P(
    Types, PmdPolicer,
    ::testing::Values(
        // QoS egress-policer cir 1 MB/s: 1e6 / 986 = 1014 pps, on what B receives
        PolicerCase{"QosEgressPolicerToVm", to_vm(BytePolicerConfig::egress_policer(1'000'000, 10'000)),
                    1e6 / kPolicedBytes, true},
        // QoS trtcm-policer: green up to cir, yellow up to eir more; red dropped
        PolicerCase{"QosTrtcmPolicerToVm", to_vm(BytePolicerConfig::trtcm_policer(500'000, 10'000, 500'000, 10'000)),
                    1e6 / kPolicedBytes, true},
        // QoS pkt-policer 1000 pps
        PolicerCase{"QosPktPolicerToVm", to_vm({}, PacketPolicerConfig{1000, 16}), 1000, true},
        // ingress policing 8000 kbps = 1e6 bytes/s, on what A sends
        PolicerCase{"IngressPolicingFromVm", from_vm(BytePolicerConfig::ingress_policing(8000, 80)),
                    1e6 / kPolicedBytes, false},
        // ingress_policing_kpkts_rate=1, _burst=1: 1000 pps, 1000 packets
        PolicerCase{"IngressPolicingKpktsFromVm", from_vm({}, PacketPolicerConfig{1000, 1000}), 1000, false}),
    [](const auto& p) { return p.param.name; });

// In capsules, as capsuled runs a VM: the sender's vCPU (1 ms of 20 ms,
// far less than sending 20 kpps takes) and both datapath threads are
// SCHED_DEADLINE. The sender then works in one stretch per period and its
// frames arrive in bursts of a period's worth, several times the policed
// rate on average. The policer must pass its configured rate within 2 %
// whatever its burst, down to one frame (issue 12), and drop the rest by
// colour. With max_wait_us = 0 (policing on dequeue, as OVS's PMD does)
// the same set-up passes far less: the check that the bursts are there.
struct CapsuleCase {
  std::string name;
  VmQos qos;
  double expected;  // frames per second that pass
  bool on_to_vm;
};
void PrintTo(const CapsuleCase& c, std::ostream* os) { *os << c.name; }

class PmdPolicerInCapsule : public DatapathTest, public ::testing::WithParamInterface<CapsuleCase> {
 protected:
  // Frames per second the policer passed over `window`. Each end of the
  // window is a counter read bracketed by two clock reads, and a read whose
  // bracket is wider than 1 ms is taken again: on a loaded machine this
  // (CFS) thread can be preempted between reading the counter and reading
  // the clock, or wait for the datapath's mutex, and a window timed 0.2 s
  // longer than the counters saw reads 7 % low, whatever the policer did.
  double passed_rate(const CapsuleCase& pc, std::chrono::milliseconds window) {
    using Clock = std::chrono::steady_clock;
    struct Sample {
      uint64_t passed;
      Clock::time_point at;
    };
    auto sample = [&] {
      Sample best{0, {}};
      auto widest = Clock::duration::max();
      for (int attempt = 0; attempt < 20; ++attempt) {
        const auto before = Clock::now();
        const auto s = stats_of(*dp, pc.on_to_vm ? "b" : "a");
        const auto after = Clock::now();
        if (after - before < widest) {
          widest = after - before;
          best = {pc.on_to_vm ? s.to_vm_packets : s.from_vm_packets, before + (after - before) / 2};
        }
        if (widest < std::chrono::milliseconds(1)) break;
      }
      return best;
    };
    const Sample a = sample();
    std::this_thread::sleep_for(window);  // the measurement window
    const Sample b = sample();
    return double(b.passed - a.passed) / std::chrono::duration<double>(b.at - a.at).count();
  }
  // Runs the case; returns the passed rate.
  double run(const CapsuleCase& pc) {
    auto a_cfg = vm_config("a", dir.file("a.sock"), kMacA);
    auto b_cfg = vm_config("b", dir.file("b.sock"), kMacB);
    (pc.on_to_vm ? b_cfg : a_cfg).qos = pc.qos;
    EXPECT_TRUE(dp->add_vm(a_cfg).ok());
    EXPECT_TRUE(dp->add_vm(b_cfg).ok());
    VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
    EXPECT_TRUE(b.wait_ready()) << b.output();
    VmProcess a(dir, "a", dir.file("a.sock"), kMacA,
                {"--mode", "tx", "--dst", kMacB, "--size", std::to_string(kFrame), "--rate", "20000"});
    EXPECT_TRUE(a.wait_ready()) << a.output();
    using namespace std::chrono;
    auto r = rsv::VmReservation::apply(rsv::VmReservationSpec{
        "policed", 20ms, 0ns, false,
        {{a.vcpu_tid(), 1ms, -1, "vcpu0"}, {dp->pmd_tid("a").value(), 4ms, -1, "pmd-a"},
         {dp->pmd_tid("b").value(), 4ms, -1, "pmd-b"}}});
    if (!r) {
      ADD_FAILURE() << "cannot reserve: " << r.error().message;
      return 0;
    }
    // Until the queue that may wait has filled: the policer drops.
    auto drops_so_far = [&] {
      auto s = stats_of(*dp, pc.on_to_vm ? "b" : "a");
      return pc.on_to_vm ? s.to_vm_drops_red + s.to_vm_drops_pps
                         : s.from_vm_drops_red + s.from_vm_drops_pps;
    };
    EXPECT_TRUE(testkit::wait_until([&] { return drops_so_far() > 0; }, 5s)) << pc.name << ": the policer never dropped";
    const auto s0 = stats_of(*dp, pc.on_to_vm ? "b" : "a");
    const double rate = passed_rate(pc, 3s);
    const auto s1 = stats_of(*dp, pc.on_to_vm ? "b" : "a");
    const uint64_t drops = pc.on_to_vm ? (s1.to_vm_drops_red + s1.to_vm_drops_pps) -
                                             (s0.to_vm_drops_red + s0.to_vm_drops_pps)
                                       : (s1.from_vm_drops_red + s1.from_vm_drops_pps) -
                                             (s0.from_vm_drops_red + s0.from_vm_drops_pps);
    // The sender offered clearly more than the rate: the rest was dropped.
    EXPECT_GT(double(drops), pc.expected) << pc.name << ": the policer dropped too little of what really exceeded it";
    std::printf("%s: %.0f frames/s passed of %.0f configured (%+.2f %%), %.0f dropped/s, %lu policer wake-ups\n",
                pc.name.c_str(), rate, pc.expected, 100 * (rate / pc.expected - 1), double(drops) / 3,
                (unsigned long)(s1.wakeups_by_policer - s0.wakeups_by_policer));
    return rate;
  }
};

TEST_P(PmdPolicerInCapsule, PassesItsRateWithinTwoPercentWhateverTheBurst) {
  const CapsuleCase& pc = GetParam();
  const double rate = run(pc);
  EXPECT_NEAR(rate, pc.expected, 0.02 * pc.expected) << pc.name;
}

TEST_F(PmdPolicerInCapsule, PolicingOnDequeueAsOvsDoesLosesTheRateInTheSameSetUp) {
  VmQos q;
  q.from_vm.bytes = BytePolicerConfig::egress_policer(1'000'000, 1518);
  q.max_wait_us = 0;
  const double expected = 1e6 / kPolicedBytes;
  EXPECT_LT(run({"EgressPolicerOnDequeue", q, expected, false}), 0.9 * expected)
      << "the sender did not send in bursts: the set-up no longer tests what it should";
}

VmQos capsule_qos(BytePolicerConfig b, PacketPolicerConfig p = {}, bool to = false) {
  VmQos q;
  (to ? q.to_vm : q.from_vm).bytes = b;
  (to ? q.to_vm : q.from_vm).packets = p;
  return q;
}

// In the directions capsuled uses (see Types above).
INSTANTIATE_TEST_SUITE_P(
    Bursts, PmdPolicerInCapsule,
    ::testing::Values(
        // QoS egress-policer 1 MB/s = 1014 frames/s on what B receives;
        // bursts of one frame and of 20 kB
        CapsuleCase{"QosEgressPolicerOneFrame",
                    capsule_qos(BytePolicerConfig::egress_policer(1'000'000, 1518), {}, true), 1e6 / kPolicedBytes,
                    true},
        CapsuleCase{"QosEgressPolicer20kB", capsule_qos(BytePolicerConfig::egress_policer(1'000'000, 20'000), {}, true),
                    1e6 / kPolicedBytes, true},
        CapsuleCase{"QosTrtcmPolicerOneFrame",
                    capsule_qos(BytePolicerConfig::trtcm_policer(500'000, 1518, 500'000, 1518), {}, true),
                    1e6 / kPolicedBytes, true},
        CapsuleCase{"QosPktPolicerOnePacket", capsule_qos({}, PacketPolicerConfig{1000, 1}, true), 1000, true},
        // ingress policing 8000 kbps, burst 13 kb (1625 bytes: one frame), on what A sends
        CapsuleCase{"IngressPolicingOneFrame", capsule_qos(BytePolicerConfig::ingress_policing(8000, 13)),
                    1e6 / kPolicedBytes, false},
        // ingress_policing_kpkts_rate=1, _burst=1 on what A sends
        CapsuleCase{"IngressPolicingKpkts", capsule_qos({}, PacketPolicerConfig{1000, 1000}), 1000, false}),
    [](const auto& p) { return p.param.name; });

TEST_F(PmdPolicerConfig, SetQosReplacesThePolicerWhileTrafficFlows) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready());
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "2000"});
  ASSERT_TRUE(a.wait_ready());
  // 600 frames flow without a policer and without a drop.
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "a").from_vm_packets >= 600; }, 5s));
  EXPECT_EQ(stats_of(*dp, "a").from_vm_drops_pps, 0u);
  ASSERT_TRUE(dp->set_qos("a", from_vm({}, PacketPolicerConfig{500, 8})).ok());
  EXPECT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "a").from_vm_drops_pps > 300; }, 5s));
  ASSERT_TRUE(dp->set_qos("a", VmQos{}).ok());
  // Without the policer the next 600 frames pass, none dropped.
  const uint64_t d = stats_of(*dp, "a").from_vm_drops_pps, p = stats_of(*dp, "a").from_vm_packets;
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "a").from_vm_packets >= p + 600; }, 5s));
  EXPECT_EQ(stats_of(*dp, "a").from_vm_drops_pps, d);
}

}  // namespace
}  // namespace capsule::pmd::testing
