// The study's test bed (study_bed.h).
#include "study_bed.h"

#include <pthread.h>
#include <rte_ring.h>
#include <sched.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <utility>

#include "bench.h"

namespace capsule::bench::study {

using namespace std::chrono_literals;
using pmd::EmuVm;

void pin(pid_t tid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(tid, sizeof set, &set);
}

Hog::Hog() {
  thread_ = std::thread([this] {
    pin(0, kTestCpu);
    pthread_setname_np(pthread_self(), "exp-hog");
    volatile uint64_t x = 0;
    while (!stop_.load(std::memory_order_relaxed)) x = x + 1;
  });
}

Hog::~Hog() {
  stop_ = true;
  thread_.join();
}

Result<std::unique_ptr<rsv::VmReservation>> reserve(const rsv::VmReservationSpec& spec, rsv::PartitionSet& parts) {
  auto r = rsv::VmReservation::apply(spec, &parts);
  for (int attempt = 0; !r && attempt < 5; ++attempt) {
    std::this_thread::sleep_for(300ms);
    r = rsv::VmReservation::apply(spec, &parts);
  }
  return r;
}

std::unique_ptr<pmd::RingFeeder> make_feeder(const std::vector<std::string>& dsts) {
  return std::make_unique<pmd::RingFeeder>(rte_ring_lookup("ETH_RXTX0_net_ring0"), dsts, kFrame, kClientCpu, kMacFar);
}

Status Bed::start() {
  // SIGINT/SIGTERM end a run after its current point: every VM, OVS,
  // reservation, the partition and the interrupt steering are undone.
  catch_stop_signals();
  if (dir.empty()) return Error{"cannot create a temporary directory"};
  if (!options.steer_journal.empty()) {
    // A run killed before it could restore left its journal: put those
    // values back first, then record the current ones.
    if (auto r = rsv::IoSteering::recover(options.steer_journal); !r) return r.error();
    auto s = rsv::IoSteering::apply({kClientCpu}, options.steer_journal);
    if (!s) return s.error();
    steering = std::move(s.value());
    std::cout << "io steering: " << steering->describe() << " (restored at the end)\n";
  }
  if (auto r = parts.acquire(kTestCpu); !r) return r.error();
  partitioned = true;
  pmd::DatapathConfig cfg;
  cfg.eal.program = "capsule-bench";
  cfg.max_vms = options.max_vms;
  cfg.uplink_devargs = "net_ring0";
  cfg.dispatcher_poll.policy = pmd::PollPolicy::kBusy;
  cfg.dispatcher_cpu = kClientCpu;
  auto d = pmd::Datapath::create(cfg);
  if (!d) return d.error();
  dp = std::move(d.value());
  for (auto [name, mac] : {std::pair{"v1", kMac1}, std::pair{"v2", kMac2}, std::pair{"c", kMacClient},
                           std::pair{"r", kMacRequesters}}) {
    const bool client_side = name == std::string("c") || name == std::string("r");
    if (name == std::string("c") && !options.client) continue;
    if (name == std::string("r") && !options.requesters) continue;
    pmd::VmConfig v;
    v.name = name;
    v.port.socket_path = dir + "/" + name + ".sock";
    v.mac = pmd::MacAddr::parse(mac).value();
    // The client's and requesters' ports stand for the client machine's
    // NIC: their threads run on the client CPU.
    v.pin_cpu = client_side ? kClientCpu : kTestCpu;
    if (Status st = dp->add_vm(v); !st) return st;
  }
  hog = std::make_unique<Hog>();
  // This thread and what it starts from now on (OVS-DPDK's main threads)
  // belong to the client side.
  pin(0, kClientCpu);
  return {};
}

Bed::~Bed() {
  hog.reset();
  dp.reset();
  rsv::VmReservation::release_all();
  if (partitioned)
    if (Status st = parts.release(kTestCpu); !st) std::cerr << options.log_prefix << ": " << st.error().message << "\n";
  steering.reset();  // interrupts and workqueues back where they were
}

Result<Probe> run_probe(const std::string& dir, const std::string& socket, int n, const std::string& tag) {
  const std::string lat = dir + "/lat-" + tag + ".txt";
  // The last second of --duration sends nothing (--drain-s 1), so every
  // request has a second to be answered.
  const double duration = n * 0.020 + 1.05;
  auto client = std::make_unique<EmuVm>(
      dir, "probe-" + tag, socket, kMacClient,
      std::vector<std::string>{"--mode", "probe", "--dst", kMac1, "--interval-ms", "20", "--response-bytes", "100000",
                               "--duration", fmt("%.2f", duration), "--drain-s", "1", "--latency-file", lat},
      kClientCpu);
  EmuVm& c = *client;
  if (!c.wait_ready(30)) return Error{"the client did not come up: " + c.output()};
  if (!testkit::wait_until([&] { return c.output().find("\nfinal ") != std::string::npos || g_stop; },
                           std::chrono::milliseconds(int(duration * 1000) + 15000)))
    return Error{"the client did not finish: " + c.output()};
  if (g_stop) return Error{"interrupted"};
  auto k = c.counters();
  Probe p{k["requests"], k["responses"], {}, {}, nullptr};
  // Lines "completion_us send_ns" (the send time lets a slow request be
  // found in a trace taken with trace_clock=mono).
  std::ifstream in(lat);
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    double us = 0;
    uint64_t sent = 0;
    if (!(f >> us)) continue;
    f >> sent;
    p.ms.push_back(us / 1000.0);
    p.sent_s.push_back(double(sent) / 1e9);
  }
  std::remove(lat.c_str());
  // The client has ended by itself; it is reaped with the Probe, once the
  // caller has stopped the load it measured under. Reaped here, while the
  // neighbour's requesters kept the client CPU busy, the wait4() that reaps
  // it spun in the kernel (release_task -> proc_invalidate_siblings_dcache
  // -> shrink_dcache_parent, perf: d_walk/select_collect on CPU 0; 176 s
  // and 205 s where timed) and `exp-e3 --smoke` took 29-325 s instead of
  // 13 s in 8 of 18 runs (kernel 6.18); reaped later, at most 0.12 s and
  // 13 s in 12 of 12.
  p.client = std::move(client);
  return p;
}

std::string spread(const std::vector<double>& v, const char* format) {
  if (v.empty()) return "-";
  return fmt(format, *std::min_element(v.begin(), v.end())) + ".." + fmt(format, *std::max_element(v.begin(), v.end()));
}

std::string med(const std::vector<double>& v, const char* format) { return v.empty() ? "-" : fmt(format, median(v)); }

}  // namespace capsule::bench::study
