// capsule-bench recovery: capsuled killed with SIGKILL and started again,
// N times, while two emulated VMs exchange traffic through capsule. Per
// crash: the longest stall the receiving VM saw (counted by the VM itself),
// its rate while no agent ran, how long after the new agent was up traffic
// was flowing, whether the capsules were adopted (same threads, same
// budgets), and leaks read from the kernel (SCHED_DEADLINE threads that
// belong to no capsule) and the cpuset tree (capsule-* cpusets).
#include <dirent.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "bench.h"
#include "capsule/harness.h"
#include "capsule/rsv/admission.h"
#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/testkit.h"
#include "capsule/vm/peer.h"

namespace capsule::bench {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

long long rx_of(const vm::VmPeer& vm) {
  auto c = vm.counters();
  auto it = c.find("rx_to_me");
  return it == c.end() ? -1 : (long long)it->second;
}

// capsule-* cpusets in the v1 cpuset tree.
int capsule_cpusets() {
  const auto fs = rsv::CpusetFs::detect();
  if (fs.kind() != rsv::CpusetFs::Kind::kV1) return 0;
  int n = 0;
  if (DIR* d = ::opendir(fs.path("/").c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name).rfind("capsule-", 0) == 0) ++n;
    ::closedir(d);
  }
  return n;
}

// SCHED_DEADLINE threads on the machine that are not in `ours`.
int stray_dl_threads(const std::set<pid_t>& ours) {
  int n = 0;
  for (const auto& t : rsv::scan_deadline_threads()) n += !ours.count(t.tid);
  return n;
}

// The threads capsuled names in a VM's status ("vcpu0=123 pmd=456"), by role.
std::map<std::string, pid_t> status_threads(const harness::Ovsdb& db, const std::string& vm) {
  std::map<std::string, pid_t> out;
  std::string s = harness::ctl(db, {"--if-exists", "get", "VM", vm, "status:threads"}).out;
  std::erase(s, '"');
  std::istringstream words(s);
  for (std::string w; words >> w;)
    if (auto eq = w.find('='); eq != std::string::npos) out[w.substr(0, eq)] = pid_t(std::atoi(w.c_str() + eq + 1));
  return out;
}

// vCPU threads of a status_threads() map (the VM's own, which a crash of the
// agent must not touch), and all of them as a set.
std::map<std::string, pid_t> vcpus_of(std::map<std::string, pid_t> threads) {
  threads.erase("pmd");
  return threads;
}
std::set<pid_t> tids_of(const std::map<std::string, pid_t>& a, const std::map<std::string, pid_t>& b) {
  std::set<pid_t> out;
  for (const auto* m : {&a, &b})
    for (const auto& [role, tid] : *m) out.insert(tid);
  return out;
}

int run(const std::vector<std::string>& args) {
  const int crashes = std::stoi(arg(args, "--crashes", "10"));
  const int rate = std::stoi(arg(args, "--rate", "20000"));
  const double down_s = std::stod(arg(args, "--down-s", "0.5"));
  std::cerr << "recovery: " << crashes << " SIGKILLs of capsuled, " << rate << " frames/s VM a -> VM b, agent down "
            << down_s << " s each\n";

  harness::TempDir dir("capsule-bench-recovery");
  auto db = harness::Ovsdb::start(dir.path());
  if (!db) return std::cerr << db.error().message << "\n", 1;
  auto agent = harness::Capsuled::start(**db, dir.path(), "bench", {"--stats-interval=200"});
  if (!agent) return std::cerr << agent.error().message << "\n", 1;
  auto ctl = [&](const std::vector<std::string>& a) { return harness::ctl(**db, a); };
  if (!testkit::wait_until([&] { return ctl({"show"}).out.find("capsule-dpdk") != std::string::npos; }, 20s))
    return std::cerr << "the capsule datapath did not come up\n" << ctl({"show"}).out, 1;

  const std::string mac_a = "02:00:00:00:00:0a", mac_b = "02:00:00:00:00:0b";
  vm::VmPeer b(dir.file("b.out"), dir.file("b.sock"), mac_b, {"--mode", "count", "--report-ms", "20"});
  vm::VmPeer a(dir.file("a.out"), dir.file("a.sock"), mac_a,
               {"--mode", "tx", "--dst", mac_b, "--rate", std::to_string(rate), "--size", "256"});
  auto r = ctl({"--wait", "add-vm", "a", "pid=" + std::to_string(a.pid()), "--", "--net=4ms", "set-rsv", "a", "4ms",
                "20ms", "--", "add-port", "a", "a0", dir.file("a.sock"), "mac=\"" + mac_a + "\"", "--", "add-vm",
                "b", "pid=" + std::to_string(b.pid()), "--", "--net=4ms", "set-rsv", "b", "4ms", "20ms", "--",
                "add-port", "b", "b0", dir.file("b.sock"), "mac=\"" + mac_b + "\""});
  if (r.rc != 0) return std::cerr << r.out << r.err, 1;
  auto running = [&](const std::string& vm) {
    return ctl({"get", "VM", vm, "status:state"}).out.find("running") != std::string::npos;
  };
  if (!testkit::wait_until([&] { return running("a") && running("b") && rx_of(b) > rate / 2; }, 30s))
    return std::cerr << "traffic did not start\n" << ctl({"show"}).out << b.output(), 1;
  const auto threads_a = status_threads(**db, "a"), threads_b = status_threads(**db, "b");

  Table t({"crash", "longest stall s", "rx while down (% of offered)", "traffic back after up s",
           "vCPU capsules adopted", "datapath threads kept", "stray DL threads", "capsule cpusets"});
  std::vector<double> back, stalls;
  int leaked_threads = 0, leaked_cpusets = 0, not_adopted = 0;
  for (int i = 1; i <= crashes; ++i) {
    const long long rx_before = rx_of(b);
    const double killed_vm_ms = double(b.counters()["elapsed_ms"]);  // B's clock
    const auto killed = Clock::now();
    (*agent)->kill();
    std::this_thread::sleep_for(std::chrono::duration<double>(down_s));  // the time no agent runs
    const double rx_down_pct = 100.0 * double(rx_of(b) - rx_before) / (rate * seconds(Clock::now() - killed));
    if (auto st = (*agent)->restart(**db); !st) return std::cerr << st.error().message << "\n", 1;
    const auto up = Clock::now();
    // Traffic back: B counts a tenth of a second's worth of frames more.
    const long long at_up = rx_of(b);
    double back_s = -1;
    if (testkit::wait_until([&] { return rx_of(b) >= at_up + rate / 10; }, 10s)) back_s = seconds(Clock::now() - up);
    // The longest stall B saw from the kill on, by its own clock.
    const double stall = b.longest_gap_ms("rx_to_me", killed_vm_ms) / 1000;
    const bool up_again = testkit::wait_until([&] { return running("a") && running("b"); }, 5s);
    const auto now_a = status_threads(**db, "a"), now_b = status_threads(**db, "b");
    const bool adopted = up_again && vcpus_of(now_a) == vcpus_of(threads_a) && vcpus_of(now_b) == vcpus_of(threads_b);
    const bool kept = now_a.count("pmd") && now_a == threads_a && now_b == threads_b;
    not_adopted += !adopted;
    // Leaks: DL threads that belong to neither capsule now, capsule cpusets (global mode: none).
    const int stray = stray_dl_threads(tids_of(now_a, now_b)), sets = capsule_cpusets();
    leaked_threads = std::max(leaked_threads, stray);
    leaked_cpusets = std::max(leaked_cpusets, sets);
    back.push_back(back_s < 0 ? 10 : back_s);
    stalls.push_back(stall);
    t.row({std::to_string(i), fmt("%.3f", stall), fmt("%.1f", rx_down_pct),
           back_s < 0 ? "> 10 (never)" : fmt("%.3f", back_s), adopted ? "yes" : "NO", kept ? "yes" : "no (new)",
           std::to_string(stray),
           std::to_string(sets)});
  }
  // The end: every capsule removed, nothing left behind.
  ctl({"--wait", "del-vm", "a", "--", "del-vm", "b"});
  (*agent)->stop();
  testkit::wait_until([&] { return stray_dl_threads({}) == 0; }, 3s);
  leaked_threads = std::max(leaked_threads, stray_dl_threads({}));
  leaked_cpusets = std::max(leaked_cpusets, capsule_cpusets());

  t.print();
  double loadavg[3] = {0, 0, 0};
  ::getloadavg(loadavg, 3);
  std::cout << "stall median " << fmt("%.3f", median(stalls)) << " s, max "
            << fmt("%.3f", *std::max_element(stalls.begin(), stalls.end())) << " s; capsules not adopted: "
            << not_adopted << "; load average " << fmt("%.2f", loadavg[0]) << "\n";
  std::cout << "recovery: traffic back p99 " << fmt("%.3f", percentile(back, 99)) << " s, leaked threads "
            << leaked_threads << ", leaked cpusets " << leaked_cpusets << "\n";
  return 0;
}

}  // namespace

CAPSULE_BENCH("recovery", "SIGKILL capsuled under traffic N times: stall, traffic back, adoption, leaks", run,
              {{"--crashes", BenchOption::Kind::kCount, "SIGKILLs of capsuled"},
               {"--rate", BenchOption::Kind::kCount, "frames/s VM a -> VM b"},
               {"--down-s", BenchOption::Kind::kSeconds, "seconds no agent runs"}},
              {"--crashes", "1"});

}  // namespace capsule::bench
