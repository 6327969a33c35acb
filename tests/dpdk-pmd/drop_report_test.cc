// The datapath's drop report: what a VM lost between two readings of its
// counters, by cause, in the words an operator reads in the log.
#include <gtest/gtest.h>

#include "drop_report.h"

namespace capsule::pmd::detail {
namespace {

TEST(DropReport, NamesEachCauseThatLostFrames) {
  VmStats before, now;
  before.ring_full_drops = 10;
  now.ring_full_drops = 110;
  now.from_vm_drops_port_security = 7;
  now.to_vm_drops_red = 5;
  now.to_vm_drops_pps = 1;
  const auto r = drops_between(before, now, 1.04);
  EXPECT_EQ(r.total, 113u);
  EXPECT_FALSE(r.only_expected);
  EXPECT_EQ(r.text,
            "lost 113 frames in 1.0 s: port security 7, rx ring full (the VM's datapath thread falls behind its "
            "senders) 100, policer to the VM 6");
}

TEST(DropReport, PolicingOrAGuestNotThereIsWhatTheOperatorSetUp) {
  VmStats before, now;
  now.from_vm_drops_red = 3;
  now.not_connected_drops = 2;
  const auto r = drops_between(before, now, 2);
  EXPECT_EQ(r.total, 5u);
  EXPECT_TRUE(r.only_expected);
  EXPECT_EQ(r.text, "lost 5 frames in 2.0 s: policer from the VM 3, guest not connected 2");
}

TEST(DropReport, NothingLostSaysNothing) {
  VmStats s;
  s.ring_full_drops = 4;
  const auto r = drops_between(s, s, 1);
  EXPECT_EQ(r.total, 0u);
  EXPECT_EQ(r.text, "");
}

}  // namespace
}  // namespace capsule::pmd::detail
