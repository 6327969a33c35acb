#include "measure.h"

#include <unistd.h>

#include <rte_ring.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include "capsule/harness.h"
#include "capsule/stats.h"
#include "capsule/pmd/datapath.h"
#include "capsule/rsv/reservation.h"
#include "capsule/testkit.h"
#include "capsule/vm/peer.h"
#include "capsule/vm/ring_feeder.h"

namespace capsule::calibrate {

namespace {

using namespace std::chrono_literals;
using capsule::pmd::Datapath;
using capsule::pmd::DatapathConfig;
using capsule::pmd::MacAddr;
using capsule::pmd::VmConfig;
using capsule::pmd::VmStats;

constexpr const char* kVmName = "cal";
constexpr const char* kVmMac = "02:00:00:00:00:ca";
constexpr const char* kFarMac = "02:00:00:00:00:ff";  // behind the uplink
constexpr const char* kRingName = "ETH_RXTX0_net_ring0";  // net_ring0's rx ring
// The VM's virtio rings (as capsule-bench pmd-budget uses them). 4096 was
// tried and measured no steadier.
constexpr const char* kVmQueueSize = "1024";
// to_vm: the VM's ring in the datapath (frames the dispatcher hands to the
// PMD thread). It fills while the thread waits for its next period (P - Q);
// with the default 4096 the thread drained it within ~0.3 ms and then woke
// for every few frames the dispatcher brought (10k-40k blocks/s), which
// made its cost per packet depend on CFS timing (R^2 0.84 at 64 B). 65536
// frames (~10 ms of what the generator brings) give it a backlog for each
// period: ~300 blocks/s at 10 %. The generator's frames are shared mbufs,
// so a long ring costs only its 512 KiB of pointers.
constexpr unsigned kToVmRingSize = 65536;
// to_vm: distinct frames the generator cycles through. The copy into the VM
// reads them; a few stay in the cache, which made 1514-byte frames look 4x
// cheaper than frames fresh from another VM (8.9 Mpps per CPU calibrated,
// ~2.4 Mpps per CPU carried in the demo). 16384 x 2 KiB = 32 MiB is more
// than a last-level cache holds.
constexpr unsigned kDistinctFrames = 16384;

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// The last `n` lines of a text, on one line, for error messages.
std::string last_lines(const std::string& text, int n) {
  std::size_t pos = text.size();
  while (pos > 0 && text[pos - 1] == '\n') --pos;
  const std::size_t end = pos;
  for (int i = 0; i < n && pos > 0; ++i) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
  }
  std::string s = text.substr(pos, end - pos);
  std::replace(s.begin(), s.end(), '\n', ' ');
  while (!s.empty() && s.front() == ' ') s.erase(s.begin());
  return s.empty() ? "(no output)" : s;
}

bool stopped(const MeasureOptions& o) { return o.stop && o.stop->load(); }

Error interrupted() { return Error{"interrupted: nothing was measured to the end; every reservation was released", EINTR}; }

// Sleeps `d` in small steps, false when stopped on the way.
bool sleep_for(const MeasureOptions& o, std::chrono::duration<double> d) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::nanoseconds>(d);
  while (std::chrono::steady_clock::now() < end) {
    if (stopped(o)) return false;
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(
        50ms, std::chrono::duration_cast<std::chrono::nanoseconds>(end - std::chrono::steady_clock::now())));
  }
  return !stopped(o);
}

uint64_t counted(Direction d, const VmStats& s) { return d == Direction::kFromVm ? s.from_vm_packets : s.to_vm_packets; }

// Puts only the PMD thread under SCHED_DEADLINE: runtime Q, deadline =
// period = P, no reclaiming. EBUSY (the root domain has no room now, or
// bandwidth just released is still booked) gets a few more tries.
Result<std::unique_ptr<rsv::VmReservation>> reserve(pid_t pmd_tid, std::chrono::nanoseconds runtime,
                                                    const MeasureOptions& o, double pct) {
  rsv::VmReservationSpec spec;
  spec.name = "capsule-calibrate";
  spec.period = std::chrono::duration_cast<std::chrono::nanoseconds>(o.period);
  spec.reclaim = false;
  spec.threads = {{pmd_tid, runtime, -1, "pmd"}};
  auto r = rsv::VmReservation::apply(spec);
  for (int attempt = 0; !r && r.error().errnum == EBUSY && attempt < 5; ++attempt) {
    if (!sleep_for(o, 500ms)) return interrupted();
    r = rsv::VmReservation::apply(spec);
  }
  if (r) return std::move(r).value();
  if (r.error().errnum == EBUSY)
    return Error{"the host has no room for a " + fmt("%g", pct) + " % SCHED_DEADLINE reservation (" +
                     rsv::format_duration(runtime) + " every " + rsv::format_duration(spec.period) +
                     ") for the datapath thread: free that much capacity (stop or shrink other reservations, e.g. "
                     "capsuled's VMs) or calibrate with smaller --budgets, then rerun (kernel: " +
                     r.error().message + ")",
                 EBUSY};
  if (r.error().errnum == EPERM)
    return Error{"cannot put the datapath thread under SCHED_DEADLINE (" + r.error().message +
                     "): run capsule-calibrate as root, with all of the machine's CPUs allowed (no taskset, no cpuset)",
                 EPERM};
  return Error{"cannot reserve " + fmt("%g", pct) + " % of the period for the datapath thread: " + r.error().message,
               r.error().errnum};
}

// One curve: VM "cal" on `dp`, one frame size, every budget.
Result<Curve> measure_curve(Datapath& dp, const std::string& dir, Direction d, uint32_t size, const MeasureOptions& o) {
  Curve c;
  c.direction = d;
  c.frame_size = size;
  c.period_us = double(o.period.count());
  const std::string tag = std::string(to_string(d)) + "-" + std::to_string(size);

  VmConfig v;
  v.name = kVmName;
  v.port.socket_path = dir + "/" + tag + ".sock";
  v.mac = MacAddr::parse(kVmMac).value();
  if (auto s = dp.add_vm(v); !s) return Error{"cannot add the calibration VM to the datapath: " + s.error().message};
  // Whatever happens below, the VM leaves the datapath; declared first, so
  // it runs after the VM process and the generator below are gone.
  struct Remove {
    Datapath& dp;
    ~Remove() { (void)dp.remove_vm(kVmName); }
  } remove{dp};
  const pid_t pmd_tid = dp.pmd_tid(kVmName).value();

  std::vector<std::string> args = {"--queue-size", kVmQueueSize};
  if (d == Direction::kFromVm)
    args.insert(args.end(), {"--mode", "tx", "--rate", "0", "--size", std::to_string(size), "--dst", kFarMac});
  else
    args.insert(args.end(), {"--mode", "count"});
  const std::string out = dir + "/" + tag + ".out";
  auto vm = std::make_unique<vm::VmPeer>(out, v.port.socket_path, kVmMac, args);
  if (!vm->wait_ready(20s))
    return Error{"the emulated VM (capsule-vm " + tag + ") did not come up within 20 s: " + last_lines(vm->output(), 3)};

  std::unique_ptr<vm::RingFeeder> feeder;
  if (d == Direction::kToVm) {
    rte_ring* ring = rte_ring_lookup(kRingName);
    if (!ring) return Error{std::string("the net_ring0 uplink has no ring ") + kRingName + ": cannot feed frames to the VM"};
    feeder = std::make_unique<vm::RingFeeder>(ring, kVmMac, size, -1, kDistinctFrames);
    if (!feeder->ok())
      return Error{"cannot start the frame generator (no memory for its mbufs): free hugepages or memory and rerun"};
  }

  // Traffic must flow before anything is measured.
  auto count = [&] { return counted(d, dp.stats(kVmName).value()); };
  const uint64_t start = count();
  if (!testkit::wait_until([&] { return stopped(o) || count() > start + 1000; }, 10s)) {
    const auto s = dp.stats(kVmName).value();
    return Error{std::string("no traffic ") + (d == Direction::kFromVm ? "from" : "to") + " the emulated VM within 10 s (" +
                 (s.connected ? "its port is connected" : "its port never connected") +
                 "): check that capsule-vm runs here (its output: " + last_lines(vm->output(), 2) + ")"};
  }
  if (stopped(o)) return interrupted();

  const double max_pct = *std::max_element(o.budgets_pct.begin(), o.budgets_pct.end());
  for (double pct : o.budgets_pct) {
    const auto runtime = std::chrono::nanoseconds(std::llround(pct / 100.0 * double(o.period.count()) * 1000.0));
    auto r = reserve(pmd_tid, runtime, o, pct);
    if (!r) return r.error();
    if (!sleep_for(o, o.settle)) return interrupted();
    std::vector<double> pps, cpu;
    VmStats first{}, last{};
    for (int run = 0; run < o.runs; ++run) {
      const VmStats s0 = dp.stats(kVmName).value();
      const uint64_t c0 = vm::thread_cpu_ns(getpid(), pmd_tid);
      const auto t0 = std::chrono::steady_clock::now();
      if (!sleep_for(o, std::chrono::duration<double>(o.seconds))) return interrupted();
      const VmStats s1 = dp.stats(kVmName).value();
      const uint64_t c1 = vm::thread_cpu_ns(getpid(), pmd_tid);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      pps.push_back(double(counted(d, s1) - counted(d, s0)) / dt);
      cpu.push_back(100.0 * double(c1 - c0) / 1e9 / dt);
      if (run == 0) first = s0;
      last = s1;
    }
    r.value().reset();  // release before anything else can fail
    Point p{double(runtime.count()) / 1000.0, median(pps), median(cpu)};
    c.points.push_back(p);
    if (pct == max_pct) {
      const uint64_t packets = (last.from_vm_packets + last.to_vm_packets) - (first.from_vm_packets + first.to_vm_packets);
      c.cycles_per_packet = packets ? double(last.busy_cycles - first.busy_cycles) / double(packets) : 0;
    }
    if (o.on_point) o.on_point(c, p);
  }
  feeder.reset();
  vm.reset();
  return c;
}

}  // namespace

const char* to_string(Direction d) { return d == Direction::kFromVm ? "from_vm" : "to_vm"; }

Result<Direction> parse_direction(const std::string& text) {
  if (text == "from_vm") return Direction::kFromVm;
  if (text == "to_vm") return Direction::kToVm;
  return Error{"unknown direction '" + text + "': use from_vm or to_vm", EINVAL};
}

Result<std::vector<Curve>> measure(const MeasureOptions& o) {
  const std::string vm_binary = testkit::sibling_binary("capsule-vm");
  if (access(vm_binary.c_str(), X_OK) != 0)
    return Error{vm_binary + " is missing: capsule-calibrate runs emulated VMs with the capsule-vm built next to it "
                             "(cmake --build build --target capsule-vm)",
                 ENOENT};
  if (o.budgets_pct.empty() || o.frame_sizes.empty() || o.directions.empty())
    return Error{"nothing to measure: give at least one budget, frame size and direction", EINVAL};
  harness::TempDir tmp("capsule-calibrate");
  if (tmp.path().empty()) return Error{"cannot create a temporary directory for the VMs' sockets (is /tmp writable?)"};

  std::vector<Curve> curves;
  for (Direction d : o.directions) {
    DatapathConfig cfg;
    cfg.eal.program = "capsule-calibrate";
    cfg.max_vms = 2;
    // net_ring has no rx interrupts: the dispatcher's probe for them makes
    // ethdev log "Rx Intr handle unset" into the progress lines. Errors come
    // back from Datapath::create as sentences anyway; CAPSULE_DPDK_LOG still
    // sets every level.
    if (!std::getenv("CAPSULE_DPDK_LOG")) cfg.eal.extra = {"--log-level=lib.ethdev:critical"};
    if (d == Direction::kFromVm) {
      cfg.uplink_devargs = "net_null0";
      cfg.uplink_receive = false;
    } else {
      cfg.uplink_devargs = "net_ring0";
      cfg.uplink_receive = true;
      cfg.ring_size = kToVmRingSize;
    }
    auto dp = Datapath::create(cfg);
    if (!dp)
      return Error{"cannot start the DPDK datapath (" + cfg.uplink_devargs + "): " + dp.error().message,
                   dp.error().errnum};
    for (uint32_t size : o.frame_sizes) {
      auto c = measure_curve(*dp.value(), tmp.path(), d, size, o);
      if (!c) return c.error();
      curves.push_back(std::move(c).value());
    }
  }
  return curves;
}

}  // namespace capsule::calibrate
