// The uplink dispatcher: a thread of its own ("cdisp-uplink") that only
// moves mbuf pointers from the uplink rx queue into the destination VMs'
// rings (by destination MAC; broadcast and multicast to every attached VM,
// unknown unicast dropped). Every per-byte cost (the copy into guest memory)
// is left to the destination VM's PMD thread. It waits on the port's rx
// interrupt when the driver has one (net_tap, virtio-user), else it sleeps
// between polls.
#pragma once

#include <atomic>
#include <future>
#include <thread>

#include "capsule/result.h"
#include "core.h"

namespace capsule::pmd::detail {

class Dispatcher {
 public:
  Dispatcher(Core* core, PollOptions poll, int cpu) : core_(core), poll_(poll), cpu_(cpu) {}
  ~Dispatcher() { stop(); }
  Status start();
  void stop();
  pid_t tid() const { return tid_.load(); }
  bool interrupt_mode() const { return interrupt_mode_.load(); }  // false: fell back to sleeping

  std::atomic<uint64_t> rx_packets{0}, rx_no_vm{0}, blocks{0};
  // Stage costs: TSC cycles of the rounds that moved frames (receive +
  // dispatch + hand-off), and how many such rounds (burst sizes).
  std::atomic<uint64_t> busy_cycles{0}, busy_rounds{0};

 private:
  void run(std::promise<Status>* started);
  void dispatch(rte_mbuf** pkts, uint16_t n);
  void flood(rte_mbuf* m);

  Core* core_;
  PollOptions poll_;
  int cpu_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<pid_t> tid_{0};
  std::atomic<bool> interrupt_mode_{false};
};

}  // namespace capsule::pmd::detail
