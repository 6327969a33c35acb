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
  EXPECT_NE(msg.find("deadline 30 ms is larger than the period 20 ms"), std::string::npos) << msg;
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
