// Admission control refuses what does not fit, names the numbers, and
// touches no thread when it refuses.
#include <gtest/gtest.h>

#include "capsule/rsv/admission.h"
#include "capsule/rsv/manager.h"
#include "capsule/rsv/reservation.h"
#include "capsule/testkit.h"

using namespace capsule;
using namespace capsule::rsv;
using namespace std::chrono_literals;

namespace {

VmReservationSpec vm(const std::string& name, std::vector<std::pair<pid_t, std::chrono::nanoseconds>> t,
                     std::chrono::nanoseconds period = 100ms) {
  VmReservationSpec s{name, period, 0ns, false, {}};
  for (auto [tid, rt] : t) s.threads.push_back({tid, rt, -1, ""});
  return s;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(Admission, DemandAboveTheTwoCoreBoundIsRefusedWithTheNumbers) {
  AdmissionConfig cfg;
  cfg.cpus = {0, 1};
  cfg.bound = 0.95;
  testkit::BusyThread a("v0"), b("v1"), c("v2");
  ReservationManager mgr(cfg);
  auto r = mgr.reserve(vm("big", {{a.tid(), 70ms}, {b.tid(), 70ms}, {c.tid(), 70ms}}));
  ASSERT_FALSE(r);
  const std::string& m = r.error().message;
  EXPECT_TRUE(contains(m, "VM 'big'")) << m;
  EXPECT_TRUE(contains(m, "needs 210.0 %")) << m;
  EXPECT_TRUE(contains(m, "root domain (cpus 0-1)")) << m;
  EXPECT_TRUE(contains(m, "bound 190.0 %")) << m;
  EXPECT_TRUE(contains(m, "free " + format_percent(1.9 - 2 * fair_server_bandwidth()))) << m;
  for (pid_t t : {a.tid(), b.tid(), c.tid()}) EXPECT_EQ(get_sched_params(t)->policy, SCHED_OTHER);
  EXPECT_TRUE(mgr.names().empty());
}

TEST(Admission, RefusalLeavesAdmittedVmsUndisturbed) {
  testkit::BusyThread a("v0"), b("v1");
  ReservationManager mgr(AdmissionConfig{AdmissionMode::kGlobal, PlacementPolicy::kWorstFit, 0.95, {0, 1}});
  auto small = mgr.reserve(vm("small", {{a.tid(), 30ms}}));
  ASSERT_TRUE(small) << small.error().message;
  auto before = get_sched_params(a.tid());
  // 0.30 + 2 x 0.90 = 2.10 does not fit in 2 x 0.95.
  testkit::BusyThread c("v2");
  auto r = mgr.reserve(vm("huge", {{b.tid(), 90ms}, {c.tid(), 90ms}}));
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.error().message, "30.0 % by capsule")) << r.error().message;
  auto after = get_sched_params(a.tid());
  EXPECT_EQ(after->policy, kSchedDeadline);
  EXPECT_EQ(after->runtime, before->runtime);
  EXPECT_EQ(get_sched_params(b.tid())->policy, SCHED_OTHER);
  EXPECT_EQ(get_sched_params(c.tid())->policy, SCHED_OTHER);
  EXPECT_EQ(mgr.names(), std::vector<std::string>{"small"});
}

TEST(Admission, CountsDeadlineThreadsCapsuleDidNotCreate) {
  // A SCHED_DEADLINE thread set up behind capsule's back takes bandwidth
  // that admission must see.
  testkit::BusyThread foreign("foreign"), mine("v0");
  ASSERT_TRUE(set_deadline_params(foreign.tid(), ReservationSpec{50ms, 100ms}));
  AdmissionControl ac(AdmissionConfig{AdmissionMode::kGlobal, PlacementPolicy::kWorstFit, 0.95, {0, 1}});
  auto load = ac.load(scan_deadline_threads());
  ASSERT_EQ(load.size(), 1u);
  EXPECT_NEAR(load[0].external, 0.5, 1e-6);
  auto r = ac.admit(vm("x", {{mine.tid(), 95ms}, {mine.tid() + 100000, 50ms}}), scan_deadline_threads());
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.error().message, "50.0 % by other SCHED_DEADLINE threads")) << r.error().message;
  SchedParams other;
  ASSERT_TRUE(set_sched_params(foreign.tid(), other));
}

TEST(Admission, PartitionedWorstFitAndFirstFitPlacement) {
  // Pure accounting: four cores, no syscalls.
  std::vector<DeadlineThread> none;
  AdmissionControl worst(AdmissionConfig{AdmissionMode::kPartitioned, PlacementPolicy::kWorstFit, 1.0, {0, 1, 2, 3}});
  AdmissionControl first(AdmissionConfig{AdmissionMode::kPartitioned, PlacementPolicy::kFirstFit, 1.0, {0, 1, 2, 3}});
  auto w = worst.admit(vm("a", {{1, 40ms}, {2, 40ms}}), none);
  auto f = first.admit(vm("a", {{1, 40ms}, {2, 40ms}}), none);
  ASSERT_TRUE(w && f);
  EXPECT_NE(w->threads[0].cpu, w->threads[1].cpu);  // spread out
  EXPECT_EQ(f->threads[0].cpu, 0);                 // packed onto core 0
  EXPECT_EQ(f->threads[1].cpu, 0);
  // A thread too big for any core's free bandwidth is refused, naming cores.
  auto big = first.admit(vm("b", {{3, 70ms}, {4, 70ms}, {5, 70ms}, {6, 70ms}, {7, 70ms}}), none);
  ASSERT_FALSE(big);
  EXPECT_TRUE(contains(big.error().message, "no core has that free")) << big.error().message;
  EXPECT_TRUE(contains(big.error().message, "core 0: " + format_percent(0.8 + fair_server_bandwidth()) + " booked")) << big.error().message;
  // Releasing frees the bandwidth.
  first.release("a");
  EXPECT_TRUE(first.admit(vm("b", {{3, 70ms}, {4, 70ms}, {5, 70ms}, {6, 70ms}}), none));
}

TEST(Admission, PinningAnUnknownCoreOrInGlobalModeIsRefused) {
  std::vector<DeadlineThread> none;
  AdmissionControl part(AdmissionConfig{AdmissionMode::kPartitioned, PlacementPolicy::kWorstFit, 0.95, {1}});
  VmReservationSpec s{"p", 100ms, 0ns, false, {{1, 10ms, 0, "vcpu0"}}};
  auto r = part.admit(s, none);
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.error().message, "not a capsule core")) << r.error().message;
  AdmissionControl global(AdmissionConfig{AdmissionMode::kGlobal, PlacementPolicy::kWorstFit, 0.95, {0, 1}});
  r = global.admit(s, none);
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.error().message, "partitioned mode")) << r.error().message;
}

TEST(Admission, DeadlineShorterThanPeriodIsBookedAtItsDensity) {
  // Pure accounting, one core, bound 1.0, no fair server share assumed:
  // the kernel would admit both VMs below on Q / P (10 % + 50 %), but the
  // first VM's two threads, 1 ms each due 2.5 ms after they wake, need
  // 80 % of the core by EDF's density test, so the second does not fit.
  std::vector<DeadlineThread> none;
  AdmissionControl ac(AdmissionConfig{AdmissionMode::kPartitioned, PlacementPolicy::kFirstFit, 1.0, {1}});
  VmReservationSpec fast{"fast", 20ms, 2500us, false, {{1, 1ms, 1, "vcpu0"}, {2, 1ms, 1, "pmd"}}};
  auto a = ac.admit(fast, none);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_NEAR(a->bandwidth, 0.10, 1e-9);
  EXPECT_NEAR(a->density, 0.80, 1e-9);
  auto load = ac.load(none);
  EXPECT_NEAR(load[0].capsule, 0.80, 1e-9);
  VmReservationSpec bulk{"bulk", 20ms, 0ns, false, {{3, 10ms, 1, "vcpu0"}}};
  auto b = ac.admit(bulk, none);
  const double free = 1.0 - 0.80 - fair_server_bandwidth();
  ASSERT_FALSE(b);
  EXPECT_TRUE(contains(b.error().message, "needs 50.0 %")) << b.error().message;
  EXPECT_TRUE(contains(b.error().message, "free " + format_percent(free))) << b.error().message;
  // The same VM with D = P books its share only, and the second VM fits.
  ac.release("fast");
  fast.deadline = 0ns;
  ASSERT_TRUE(ac.admit(fast, none));
  EXPECT_NEAR(ac.load(none)[0].capsule, 0.10, 1e-9);
  EXPECT_TRUE(ac.admit(bulk, none));
}

TEST(Admission, AConstrainedDeadlineRefusalSaysWhyItCostsMore) {
  std::vector<DeadlineThread> none;
  AdmissionControl ac(AdmissionConfig{AdmissionMode::kGlobal, PlacementPolicy::kWorstFit, 0.95, {0}});
  // 2 ms per 20 ms is 10 % of a core, but due within 2 ms it is 100 %.
  auto r = ac.admit(VmReservationSpec{"tight", 20ms, 2ms, false, {{1, 2ms, -1, "vcpu0"}}}, none);
  ASSERT_FALSE(r);
  const std::string& m = r.error().message;
  EXPECT_TRUE(contains(m, "needs 100.0 % (budget over its deadline 2 ms, shorter than its period 20 ms")) << m;
  EXPECT_TRUE(contains(m, "lengthen the deadline")) << m;
}

TEST(Admission, ForeignDeadlineThreadsCountAtTheirDensity) {
  // A SCHED_DEADLINE thread of someone else's with D < P: the kernel books
  // 5 % for it, EDF needs 25 % of its core.
  testkit::BusyThread foreign("foreign");
  ASSERT_TRUE(set_deadline_params(foreign.tid(), ReservationSpec{5ms, 100ms, 20ms}));
  auto sp = get_sched_params(foreign.tid());
  ASSERT_TRUE(sp);
  EXPECT_EQ(sp->deadline, 20ms);
  AdmissionControl ac(AdmissionConfig{AdmissionMode::kGlobal, PlacementPolicy::kWorstFit, 0.95, online_cpus()});
  double external = 0;
  for (const auto& t : scan_deadline_threads())
    if (t.tid == foreign.tid()) {
      EXPECT_NEAR(t.bandwidth, 0.05, 1e-6);
      EXPECT_NEAR(t.density, 0.25, 1e-6);
      external = t.density;
    }
  EXPECT_NEAR(external, 0.25, 1e-6);
  SchedParams other;
  ASSERT_TRUE(set_sched_params(foreign.tid(), other));
}

TEST(Admission, DefaultBoundIsTheKernels) {
  AdmissionControl ac;
  EXPECT_DOUBLE_EQ(ac.bound(), kernel_dl_bound());
  EXPECT_GT(ac.bound(), 0.0);
  EXPECT_LE(ac.bound(), 1.0);
}
