// The study's test bed (capsule-bench exp-e1..exp-e4, DESIGN.md's
// experiments): CPU 1 is the host under test, made a root domain of its own
// (a capsule cpuset partition) holding the emulated VMs, their datapath
// threads and a CFS hog; CPU 0 is the client side (the generator, capsule's
// uplink dispatcher, the client's and requesters' ports, OVS's main
// threads). exp_study.cc and exp_io.cc build their experiments on it.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "capsule/result.h"
#include "capsule/rsv/io_steering.h"
#include "capsule/rsv/partition.h"
#include "capsule/rsv/reservation.h"
#include "pmd_common.h"

namespace capsule::bench::study {

inline constexpr int kClientCpu = 0, kTestCpu = 1;
inline constexpr uint32_t kFrame = 1514;
inline constexpr const char* kMac1 = "02:00:00:00:00:01";          // VM 1
inline constexpr const char* kMac2 = "02:00:00:00:00:02";          // the neighbour
inline constexpr const char* kMacClient = "02:00:00:00:00:0c";     // E3's client
inline constexpr const char* kMacRequesters = "02:00:00:00:00:0d"; // E3: the neighbour's requesters
inline constexpr const char* kMacFar = "02:00:00:00:00:fe";        // the generator's source, behind the uplink

// Pins thread or process `tid` (0: the calling thread) to `cpu`.
void pin(pid_t tid, int cpu);

// A CFS thread spinning on the core under test: the rest of the host's work,
// so that no one gets idle time for free.
class Hog {
 public:
  Hog();
  ~Hog();
  Hog(const Hog&) = delete;
  Hog& operator=(const Hog&) = delete;

 private:
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

// rsv::VmReservation::apply with a few retries: bandwidth just released
// stays booked up to a period.
Result<std::unique_ptr<rsv::VmReservation>> reserve(const rsv::VmReservationSpec& spec, rsv::PartitionSet& parts);

// The generator: frames for each destination MAC in turn, into net_ring0's
// rx ring, as fast as the dispatcher drains it (a few mbufs re-used by
// reference count, so it costs little), on the client CPU.
std::unique_ptr<pmd::RingFeeder> make_feeder(const std::vector<std::string>& dsts);

struct BedOptions {
  std::string tmp_prefix = "capsule-exp";  // the temporary directory's name
  std::string log_prefix = "exp";          // what a message from the bed starts with
  int max_vms = 4;                         // the datapath's
  bool client = false;                     // E3's client port "c" (on the client CPU)
  bool requesters = false;                 // E3's requesters' port "r" (on the client CPU)
  // Not empty: device interrupts and unbound workqueues moved to the client
  // CPU for the run (rsv::IoSteering), their old values journalled here.
  std::string steer_journal;
};

// The partition on CPU 1, the datapath (uplink net_ring0, dispatcher on
// CPU 0; ports v1 and v2 pinned to CPU 1, and the options' client ports),
// the hog, a temporary directory; after start(), the calling thread (and
// what it starts) runs on the client CPU.
struct Bed {
  explicit Bed(BedOptions o = {}) : options(std::move(o)), tmp(options.tmp_prefix) {}
  ~Bed();
  Bed(const Bed&) = delete;
  Bed& operator=(const Bed&) = delete;
  Status start();

  const BedOptions options;
  testkit::TempDir tmp;  // before the VMs (first in, last out: outlives them)
  const std::string dir = tmp.path();
  rsv::PartitionSet parts;
  std::unique_ptr<rsv::IoSteering> steering;
  std::unique_ptr<pmd::Datapath> dp;
  std::unique_ptr<Hog> hog;
  bool partitioned = false;
};

// What E3's client got: requests sent, answered, and each answer's
// completion time and send time.
struct Probe {
  uint64_t requests = 0, responses = 0;
  std::vector<double> ms;      // completion times of the answered requests
  std::vector<double> sent_s;  // their send times (CLOCK_MONOTONIC, s; 0: not given), as ms
  uint64_t misses(double deadline_ms) const {
    uint64_t m = requests - std::min(requests, responses);
    for (double x : ms) m += x > deadline_ms;
    return m;
  }
  // The client process, ended by itself and reaped when the Probe goes:
  // keep the Probe until the load it measured under has stopped (reaping
  // under that load stalled for minutes; see run_probe).
  std::unique_ptr<pmd::EmuVm> client;
};

// A client (capsule-vm --mode probe on the client CPU) asks VM 1 for 100 kB
// every 20 ms, `n` requests, on the port whose socket it serves. `tag`
// names its files: one per probe (an earlier probe's output is never read).
Result<Probe> run_probe(const std::string& dir, const std::string& socket, int n, const std::string& tag);

// "min..max" and the median of some runs' values, "-" for none.
std::string spread(const std::vector<double>& v, const char* format);
std::string med(const std::vector<double>& v, const char* format);

}  // namespace capsule::bench::study
