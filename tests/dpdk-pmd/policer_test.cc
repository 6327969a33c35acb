// Policers hold their rate within +-5 % over 2 s at twice the offered load
// (OVS semantics: bytes counted without the Ethernet header), and drops are
// counted by colour. Traffic: VM A -> VM B, 1000-byte frames.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

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
  std::this_thread::sleep_for(700ms);  // the initial burst (cbs) is spent
  // Frames the policer saw (passed + dropped) and frames that passed.
  auto seen_passed = [&] {
    auto s = stats_of(*dp, pc.on_to_vm ? "b" : "a");
    return pc.on_to_vm ? std::pair{s.to_vm_packets + s.to_vm_drops_yellow + s.to_vm_drops_red + s.to_vm_drops_pps,
                                   s.to_vm_packets}
                       : std::pair{s.from_vm_packets + s.from_vm_drops_yellow + s.from_vm_drops_red + s.from_vm_drops_pps,
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
    std::this_thread::sleep_for(2s);
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
  const uint64_t drops = pc.on_to_vm ? s.to_vm_drops_red + s.to_vm_drops_yellow + s.to_vm_drops_pps
                                     : s.from_vm_drops_red + s.from_vm_drops_yellow + s.from_vm_drops_pps;
  EXPECT_GT(drops, uint64_t(pc.expected * 2 * 0.7)) << "drops not counted";
  if (pc.qos.from_vm.packets.enabled() || pc.qos.to_vm.packets.enabled()) {
    EXPECT_EQ(drops, pc.on_to_vm ? s.to_vm_drops_pps : s.from_vm_drops_pps);
  } else {
    // srTCM with ebs 0 and RFC 4115 both drop red only.
    EXPECT_EQ(pc.on_to_vm ? s.to_vm_drops_yellow : s.from_vm_drops_yellow, 0u);
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

VmQos to_vm(BytePolicerConfig b) {
  VmQos q;
  q.to_vm.bytes = b;
  return q;
}

INSTANTIATE_TEST_SUITE_P(
    Types, PmdPolicer,
    ::testing::Values(
        // egress-policer cir 1 MB/s: 1e6 / 986 = 1014 pps
        PolicerCase{"EgressPolicer", from_vm(BytePolicerConfig::egress_policer(1'000'000, 10'000)), 1e6 / kPolicedBytes, false},
        // trtcm-policer: green up to cir, yellow up to eir more; red dropped
        PolicerCase{"TrtcmPolicer", from_vm(BytePolicerConfig::trtcm_policer(500'000, 10'000, 500'000, 10'000)),
                    1e6 / kPolicedBytes, false},
        // ingress policing 8000 kbps = 1e6 bytes/s, on traffic to the VM
        PolicerCase{"IngressPolicing", to_vm(BytePolicerConfig::ingress_policing(8000, 80)), 1e6 / kPolicedBytes, true},
        // packet rate 1000 pps
        PolicerCase{"PacketRate", from_vm({}, PacketPolicerConfig{1000, 16}), 1000, false}),
    [](const auto& p) { return p.param.name; });

TEST_F(PmdPolicerConfig, SetQosReplacesThePolicerWhileTrafficFlows) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  ASSERT_TRUE(b.wait_ready());
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "2000"});
  ASSERT_TRUE(a.wait_ready());
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(stats_of(*dp, "a").from_vm_drops_pps, 0u);
  ASSERT_TRUE(dp->set_qos("a", from_vm({}, PacketPolicerConfig{500, 8})).ok());
  std::this_thread::sleep_for(500ms);
  EXPECT_GT(stats_of(*dp, "a").from_vm_drops_pps, 300u);
  ASSERT_TRUE(dp->set_qos("a", VmQos{}).ok());
  const uint64_t d = stats_of(*dp, "a").from_vm_drops_pps;
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(stats_of(*dp, "a").from_vm_drops_pps, d);
}

}  // namespace
}  // namespace capsule::pmd::testing
