// Invalid reservation specs are refused with a sentence a user can act on.
#include <gtest/gtest.h>

#include "capsule/rsv/spec.h"

using namespace capsule;
using namespace capsule::rsv;
using namespace std::chrono_literals;

namespace {

std::string why(const ReservationSpec& s) {
  Status st = validate(s);
  return st ? std::string() : st.error().message;
}

}  // namespace

TEST(ReservationSpec, AcceptsTheStudysReservations) {
  EXPECT_TRUE(validate(ReservationSpec{4ms, 20ms}));
  EXPECT_TRUE(validate(ReservationSpec{90ms, 100ms}));
  EXPECT_TRUE(validate(ReservationSpec{2ms, 20ms, 10ms}));
  EXPECT_TRUE(validate(ReservationSpec{20ms, 20ms}));  // 100 % is allowed by the kernel
}

TEST(ReservationSpec, BudgetAbovePeriodIsRefusedWithBothNumbers) {
  const std::string msg = why(ReservationSpec{30ms, 20ms});
  EXPECT_NE(msg.find("budget 30 ms"), std::string::npos) << msg;
  EXPECT_NE(msg.find("period 20 ms"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lower the budget"), std::string::npos) << msg;
}

TEST(ReservationSpec, BudgetAboveDeadlineIsRefused) {
  const std::string msg = why(ReservationSpec{8ms, 20ms, 5ms});
  EXPECT_NE(msg.find("deadline 5 ms"), std::string::npos) << msg;
}

TEST(ReservationSpec, DeadlineAbovePeriodIsRefused) {
  const std::string msg = why(ReservationSpec{1ms, 20ms, 30ms});
  EXPECT_NE(msg.find("deadline 30 ms is above the period 20 ms"), std::string::npos) << msg;
}

TEST(ReservationSpec, DensityIsBudgetOverTheShorterOfDeadlineAndPeriod) {
  // Admission books this: 1 ms due within 5 ms takes 20 % of a core from
  // EDF, though the thread may use only 5 % of it (1 ms per 20 ms).
  const ReservationSpec constrained{1ms, 20ms, 5ms};
  EXPECT_DOUBLE_EQ(constrained.bandwidth(), 0.05);
  EXPECT_DOUBLE_EQ(constrained.density(), 0.20);
  const ReservationSpec implicit{4ms, 20ms};  // D = P: density = share
  EXPECT_DOUBLE_EQ(implicit.density(), implicit.bandwidth());
  VmReservationSpec vm{"vm1", 20ms, 5ms, false, {{100, 1ms, -1, "vcpu0"}, {101, 1ms, -1, "pmd"}}};
  EXPECT_DOUBLE_EQ(vm.bandwidth(), 0.10);
  EXPECT_DOUBLE_EQ(vm.density(), 0.40);
  EXPECT_EQ(constrained.to_string(), "runtime 1 ms, period 20 ms, deadline 5 ms (5.0 %)");
}

TEST(ReservationSpec, VmDeadlineAbovePeriodNamesTheThreadAndBothNumbers) {
  VmReservationSpec vm{"vm1", 20ms, 25ms, false, {{100, 1ms, -1, "vcpu0"}}};
  Status st = validate(vm);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("VM 'vm1', thread 100 (vcpu0): the deadline 25 ms is above the period 20 ms"),
            std::string::npos)
      << st.error().message;
}

TEST(ReservationSpec, TinyBudgetIsRefused) {
  const std::string msg = why(ReservationSpec{500ns, 20ms});
  EXPECT_NE(msg.find("below the kernel's minimum"), std::string::npos) << msg;
}

TEST(ReservationSpec, PeriodOutsideKernelLimitsIsRefused) {
  const KernelLimits l = KernelLimits::read();
  std::string msg = why(ReservationSpec{10us, l.period_min / 2});
  EXPECT_NE(msg.find("outside the kernel's allowed range"), std::string::npos) << msg;
  msg = why(ReservationSpec{1ms, l.period_max * 2});
  EXPECT_NE(msg.find("outside the kernel's allowed range"), std::string::npos) << msg;
  EXPECT_FALSE(validate(ReservationSpec{1ms, 0ms}));
}

TEST(ReservationSpec, VmSpecNamesTheFaultyThread) {
  VmReservationSpec vm{"vm1", 20ms, 0ms, false, {{100, 4ms, -1, "vcpu0"}, {101, 25ms, -1, "pmd"}}};
  Status st = validate(vm);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("VM 'vm1', thread 101 (pmd)"), std::string::npos) << st.error().message;

  VmReservationSpec dup{"vm1", 20ms, 0ms, false, {{100, 4ms, -1, ""}, {100, 4ms, -1, ""}}};
  EXPECT_NE(validate(dup).error().message.find("listed twice"), std::string::npos);
  VmReservationSpec none{"vm1", 20ms, 0ms, false, {}};
  EXPECT_NE(validate(none).error().message.find("no threads"), std::string::npos);
}

TEST(ReservationSpec, ParsesDurations) {
  EXPECT_EQ(*parse_duration("20ms"), 20ms);
  EXPECT_EQ(*parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(*parse_duration("500us"), 500us);
  EXPECT_EQ(*parse_duration("1000"), 1ms);  // bare numbers are microseconds, as in chrt
  EXPECT_FALSE(parse_duration("fast"));
  EXPECT_FALSE(parse_duration("1e300s"));  // did not fit: came out negative
  EXPECT_FALSE(parse_duration("9300000000000000000ns"));
  EXPECT_FALSE(parse_duration("20 parsecs"));
  EXPECT_FALSE(parse_duration("-3ms"));
}
