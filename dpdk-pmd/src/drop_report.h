// What a VM lost between two readings of its counters, by cause, as the
// line an operator reads in the log ("VM vm1: lost 1200 frames in 1.0 s:
// ring full 1000, port security 200"). Counting is the PMD thread's job;
// saying it is a control thread's (capsule/log.h: no I/O in a round).
#pragma once

#include <cstdint>
#include <string>

#include "capsule/pmd/datapath.h"

namespace capsule::pmd::detail {

struct DropReport {
  uint64_t total = 0;          // frames lost in the interval
  // Every one lost to what the operator set up or expects: a policer, or a
  // guest that is not connected (a VM shut off with its row in place).
  bool only_expected = true;
  std::string text;            // "lost N frames in S s: cause n, ..." ("" when none)
};

DropReport drops_between(const VmStats& before, const VmStats& now, double seconds);

}  // namespace capsule::pmd::detail
