// SCHED_DEADLINE gives each thread the share it reserved, against CFS hogs
// on every core.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "capsule/rsv/accounting.h"
#include "capsule/rsv/manager.h"
#include "capsule/testkit.h"

using namespace capsule;
using namespace capsule::rsv;
using namespace std::chrono_literals;

TEST(ReservationShare, ThreeThreadsGetTheirSharesAgainstHogs) {
  testkit::CpuHogs hogs(2);
  testkit::BusyThread a("rsv-30"), b("rsv-20"), c("rsv-10");
  ReservationManager mgr;
  const auto period = 20ms;
  auto dec = mgr.reserve(VmReservationSpec{"vm-shares", period, 0ns, false,
                                           {{a.tid(), 6ms, -1, "30%"}, {b.tid(), 4ms, -1, "20%"},
                                            {c.tid(), 2ms, -1, "10%"}}});
  ASSERT_TRUE(dec) << dec.error().message;

  // Every thread really is SCHED_DEADLINE with what was asked, as the kernel says.
  for (auto [tid, rt] : {std::pair{a.tid(), 6ms}, {b.tid(), 4ms}, {c.tid(), 2ms}}) {
    auto p = get_sched_params(tid);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->policy, kSchedDeadline);
    EXPECT_EQ(p->runtime, rt);
    EXPECT_EQ(p->period, period);
    EXPECT_TRUE(p->flags & kFlagResetOnFork);
  }

  std::this_thread::sleep_for(200ms);  // part of the measurement: the first periods are not counted
  UtilisationMeter meter({a.tid(), b.tid(), c.tid()});
  std::this_thread::sleep_for(2s);  // the measurement window
  auto use = meter.sample();
  EXPECT_NEAR(use[a.tid()].utilisation, 0.30, 0.02);
  EXPECT_NEAR(use[b.tid()].utilisation, 0.20, 0.02);
  EXPECT_NEAR(use[c.tid()].utilisation, 0.10, 0.02);
  EXPECT_NEAR(use[a.tid()].budget_used, 1.0, 0.1);
  for (pid_t h : hogs.tids()) EXPECT_EQ(get_sched_params(h)->policy, SCHED_OTHER);
}
