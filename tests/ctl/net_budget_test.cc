// derive_net_budget: from a VM's policers and the host's cost curves to the
// datapath thread's budget (the arithmetic `auto` relies on; the end-to-end
// check with a real calibration is in auto_budget_test.cc).
#include <gtest/gtest.h>

#include "net_budget.h"

namespace capsule::agent {
namespace {

ovs::CalibrationRow curve(const std::string& dir, int64_t size, double pps_per_cpu, double intercept = 0) {
  ovs::CalibrationRow c;
  c.direction = dir;
  c.frame_size = size;
  c.period_us = 20000;
  c.pps_per_cpu = pps_per_cpu;
  c.intercept_pps = intercept;
  c.r_squared = 0.999;
  c.date = "2026-11-27T21:50:00Z";
  return c;
}

PortConfig port_with(const std::string& type, std::map<std::string, uint64_t> params) {
  PortConfig p;
  p.name = "p0";
  p.vhost_path = "/tmp/x.sock";
  p.egress = PolicerConfig{type, std::move(params)};
  return p;
}

VmNetConfig vm(std::vector<PortConfig> ports) { return VmNetConfig{"vm1", std::move(ports)}; }

// A port's QoS polices what the VM receives (to_vm, OVS's direction), its
// ingress policing what the VM sends (from_vm).
const std::vector<ovs::CalibrationRow> kCurves = {curve("to_vm", 64, 1e6), curve("to_vm", 1514, 0.5e6),
                                                  curve("from_vm", 64, 2e6)};

TEST(NetBudget, PacketPolicerRateOverTheSlopePlusMargin) {
  // 100 kpps at 1 Mpps per CPU = 10 % of a CPU; + 20 % = 12 % of 20 ms,
  // + 1 % of the period.
  auto b = derive_net_budget(vm({port_with("pkt-policer", {{"pir", 100000}, {"pbs", 2000}})}), kCurves, 20000, 0.2, {});
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(b->runtime_us, 2600);
  EXPECT_FALSE(b->warning) << b->explanation;
  EXPECT_NEAR(b->cpu_share, 0.10, 1e-9);
  EXPECT_NE(b->explanation.find("pkt-policer pir 100000 pps on p0"), std::string::npos) << b->explanation;
  EXPECT_NE(b->explanation.find("20 % margin, + 200 us (1 % of the period)"), std::string::npos) << b->explanation;
  EXPECT_NE(b->explanation.find("to_vm 100000 pps (pkt-policer pir 100000 pps on p0)"), std::string::npos)
      << b->explanation;
  EXPECT_NE(b->explanation.find("from_vm of p0 is not policed"), std::string::npos) << b->explanation;
}

TEST(NetBudget, ByteRatesCountAtTheSmallestCalibratedFrameUnlessTheVmSays) {
  // 5 MB/s of policed bytes at 64-byte frames (50 policed bytes each) = 100 kpps.
  auto b = derive_net_budget(vm({port_with("egress-policer", {{"cir", 5'000'000}, {"cbs", 20000}})}), kCurves, 20000,
                             0, {});
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(b->runtime_us, 2200);
  // At 1514-byte frames: 5e6 / 1500 = 3333 pps at 0.5 Mpps per CPU.
  b = derive_net_budget(vm({port_with("egress-policer", {{"cir", 5'000'000}, {"cbs", 20000}})}), kCurves, 20000, 0,
                        {{"net_frame_size", "1514"}});
  ASSERT_TRUE(b.ok());
  EXPECT_NEAR(b->cpu_share, 3333.33 / 0.5e6, 1e-6);
  // Between calibrated sizes the cost per packet is interpolated: at 789
  // bytes, halfway, 1.5 us per packet.
  b = derive_net_budget(vm({port_with("pkt-policer", {{"pir", 100000}, {"pbs", 100}})}), kCurves, 20000, 0,
                        {{"net_frame_size", "789"}});
  ASSERT_TRUE(b.ok());
  EXPECT_NEAR(b->cpu_share, 0.15, 1e-9);
}

TEST(NetBudget, BothDirectionsAddUp) {
  PortConfig p = port_with("trtcm-policer", {{"cir", 2'500'000}, {"cbs", 2000}, {"eir", 2'500'000}, {"ebs", 2000}});
  p.ingress_kpps = 200;  // 200 kpps from the VM at 2 Mpps per CPU = 10 %
  auto b = derive_net_budget(vm({p}), kCurves, 10000, 0, {});
  ASSERT_TRUE(b.ok()) << b.error().message;
  // to_vm: (cir + eir) / 50 = 100 kpps = 10 %.
  EXPECT_NEAR(b->cpu_share, 0.20, 1e-9);
  EXPECT_EQ(b->runtime_us, 2100);
}

TEST(NetBudget, ABurstBelowRateTimesPeriodIsWarnedAbout) {
  // 100 kpps with a 1000-packet bucket: a 20 ms period needs 2000; about
  // (1000 + 100k * 2.6 ms) / 2000 = 63 % passes when more is sent to the VM.
  auto b = derive_net_budget(vm({port_with("pkt-policer", {{"pir", 100000}, {"pbs", 1000}})}), kCurves, 20000, 0.2, {});
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_TRUE(b->warning);
  EXPECT_NE(b->explanation.find("warning: the burst of p0 (1000 packets (pbs)) is less than its rate times the period "
                                "(2000)"),
            std::string::npos)
      << b->explanation;
  EXPECT_NE(b->explanation.find("passes only about 63 % of its rate; raise the burst to at least 2000"),
            std::string::npos)
      << b->explanation;
  // A byte policer's bucket: cbs against cir x period.
  b = derive_net_budget(vm({port_with("egress-policer", {{"cir", 5'000'000}, {"cbs", 200'000}})}), kCurves, 20000, 0.2,
                        {});
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->warning) << b->explanation;
}

TEST(NetBudget, MeasuredPointsAreInterpolatedAndTheirEndSegmentsExtended) {
  // 1, 5 and 10 % of 20 ms carried 50, 450 and 950 kpps: the lowest
  // segment says a throttled thread pays a per-period cost the straight
  // fit (here 10 Mpps per CPU through the origin) would miss.
  auto c = curve("to_vm", 64, 10e6);
  c.throughput = {{200, 50e3}, {1000, 450e3}, {2000, 950e3}, {3000, 900e3} /* noise: skipped */};
  auto at = [&](uint64_t pps) {
    auto b = derive_net_budget(vm({port_with("pkt-policer", {{"pir", pps}, {"pbs", pps}})}), {c}, 20000, 0, {});
    EXPECT_TRUE(b.ok()) << b.error().message;
    return b.ok() ? b->cpu_share : -1;
  };
  EXPECT_NEAR(at(100'000), 0.015, 1e-9);   // between the first two points
  EXPECT_NEAR(at(20'000), 0.007, 1e-9);    // below them, along the first segment
  EXPECT_NEAR(at(1'200'000), 0.125, 1e-9); // above them, along the last kept segment
}

TEST(NetBudget, InterceptAndHeadroom) {
  // A curve that carries 1000 pps at zero budget needs nothing for 500 pps:
  // the budget is the per-period headroom alone.
  auto b = derive_net_budget(vm({port_with("pkt-policer", {{"pir", 500}, {"pbs", 10}})}),
                             {curve("to_vm", 64, 1e6, 1000)}, 20000, 0.2, {});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->runtime_us, 200);
}

TEST(NetBudget, RefusalsSayWhatToDo) {
  const auto policed = vm({port_with("pkt-policer", {{"pir", 100000}, {"pbs", 100}})});
  auto b = derive_net_budget(policed, {}, 20000, 0.2, {});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("capsule-ctl calibrate"), std::string::npos) << b.error().message;

  PortConfig open;
  open.name = "p0";
  b = derive_net_budget(vm({open}), kCurves, 20000, 0.2, {});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("needs a policer"), std::string::npos) << b.error().message;

  b = derive_net_budget(vm({port_with("pkt-policer", {{"pir", 2'000'000}, {"pbs", 100}})}), kCurves, 20000, 0.2, {});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("240.0 % of a CPU"), std::string::npos) << b.error().message;

  // Ingress policing bounds what the VM sends: it needs the from_vm curve.
  PortConfig from_only;
  from_only.name = "p0";
  from_only.ingress_kbps = 1000;
  b = derive_net_budget(vm({from_only}), {curve("to_vm", 64, 1e6)}, 20000, 0.2, {});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("no from_vm curve"), std::string::npos) << b.error().message;
  EXPECT_NE(b.error().message.find("ingress_policing_rate 1000 kbps"), std::string::npos) << b.error().message;
  // ... and the QoS, what it receives, the to_vm curve.
  b = derive_net_budget(policed, {curve("from_vm", 64, 1e6)}, 20000, 0.2, {});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("no to_vm curve"), std::string::npos) << b.error().message;

  b = derive_net_budget(policed, kCurves, 20000, 0.2, {{"net_frame_size", "20"}});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("options:net_frame_size=\"20\" is not a frame size"), std::string::npos)
      << b.error().message;
  b = derive_net_budget(policed, kCurves, 20000, 0.2, {{"net_frame_size", "jumbo"}});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("\"jumbo\""), std::string::npos) << b.error().message;
  EXPECT_FALSE(derive_net_budget(policed, kCurves, 20000, -1, {}).ok());    // margin
  EXPECT_FALSE(derive_net_budget(policed, kCurves, 0, 0.2, {}).ok());       // no period
  EXPECT_FALSE(derive_net_budget(vm({}), kCurves, 20000, 0.2, {}).ok());    // no port
}

}  // namespace
}  // namespace capsule::agent
