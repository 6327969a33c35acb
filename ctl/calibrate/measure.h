// capsule-calibrate's measurement: packets per second that one VM's datapath
// thread (cpmd-<vm>) moves when SCHED_DEADLINE gives it budget Q of period P,
// for a set of budgets, per direction and frame size.
//
// Set-up per direction (a Datapath of its own in this process, EAL defaults:
// a file prefix of its own and --in-memory, so a capsuled may run beside it):
//   from_vm  VM "cal" (capsule-vm, tx flat out to a MAC behind the uplink)
//            -> cpmd-cal (copy out of the VM) -> uplink net_null0 (discards);
//            counted: VmStats::from_vm_packets.
//   to_vm    RingFeeder -> net_ring0's rx ring -> cdisp-uplink -> cpmd-cal
//            (copy into the VM) -> VM "cal" (capsule-vm, count mode);
//            counted: VmStats::to_vm_packets.
// Only the PMD thread is reserved (runtime Q, deadline = period = P, no
// reclaiming: Q is a hard cap); the VM, the generator and the dispatcher stay
// in CFS and nothing is pinned, so the PMD's budget is what limits the rate.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "capsule/result.h"

namespace capsule::calibrate {

enum class Direction { kFromVm, kToVm };
const char* to_string(Direction d);                          // "from_vm", "to_vm"
Result<Direction> parse_direction(const std::string& text);  // the same names

struct Point {
  double budget_us = 0;    // Q
  double pps = 0;          // median over the windows
  double pmd_cpu_pct = 0;  // the PMD thread's CPU time / wall time, median, in %
};

struct Curve {
  Direction direction = Direction::kFromVm;
  uint32_t frame_size = 0;
  double period_us = 0;
  std::vector<Point> points;      // in the order of MeasureOptions::budgets_pct
  // VmStats busy_cycles per packet over the windows of the largest budget:
  // TSC time of the PMD's rounds that moved packets. A round cut by the end
  // of the budget counts the wait for the next period too: where the thread
  // always has work (1514 B) that is several times its real cost; the slope
  // (pps per CPU) is the cost the budget pays.
  double cycles_per_packet = 0;
};

struct MeasureOptions {
  std::chrono::microseconds period{20'000};
  std::vector<double> budgets_pct = {1, 2, 5, 10, 20};  // each in (0, 100)
  std::vector<uint32_t> frame_sizes = {64, 1514};      // 60 .. 1514 (capsule-vm's range)
  std::vector<Direction> directions = {Direction::kFromVm, Direction::kToVm};
  double seconds = 1.0;  // one window
  int runs = 3;          // windows per point (median)
  std::chrono::milliseconds settle{300};  // after applying a budget, before measuring
  // Called after each point (progress lines); may be empty.
  std::function<void(const Curve&, const Point&)> on_point;
  // Set (e.g. by a signal handler) to stop between windows.
  const std::atomic<bool>* stop = nullptr;
};

// Runs the whole measurement. Errors are sentences a user can act on: no
// capsule-vm binary, the EAL or the uplink refused, the VM did not come up or
// carried no traffic, no room for a reservation, interrupted.
Result<std::vector<Curve>> measure(const MeasureOptions& options);

}  // namespace capsule::calibrate
