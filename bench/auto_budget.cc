// capsule-bench auto-budget: how well an `auto` network budget carries the
// policed rate, on the real stack (ovsdb-server, capsuled with the DPDK
// datapath, an emulated VM flooding the uplink with 64-byte frames).
//
// capsule-ctl calibrate first (64-byte frames, from the VM), then for each
// policer rate R: the VM's datapath budget is `auto` (vCPU 12 ms of 20 ms,
// so the VM can always send more than R); the rate the policer passes is
// the median of 1-s windows of Port:statistics rx_packets. The baseline in
// the same run is the same VM best effort (no reservation, its datapath
// thread in CFS): it reaches R too, but its datapath thread spends whatever
// CPU the flood costs, where the capsule's is held to the derived budget.
//
// Last line: "auto budget: worst rate error X %".
#if __has_include("capsule/harness.h")

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <sstream>
#include <thread>

#include "bench.h"
#include "capsule/harness.h"
#include "capsule/rsv/discovery.h"
#include "pmd_common.h"

namespace capsule::bench {
namespace {

using namespace std::chrono_literals;

constexpr const char* kVm = "a";
constexpr const char* kPort = "a0";

// The VM's datapath thread's CPU use over `window`, in % of one CPU
// (the thread runs in capsule-datapathd).
double pmd_cpu_pct(pid_t datapathd, std::chrono::milliseconds window) {
  const pid_t tid = rsv::find_capsule_pmd(datapathd, kVm);
  if (!tid) return -1;
  const uint64_t c0 = pmd::thread_cpu_ns(datapathd, tid);
  std::this_thread::sleep_for(window);
  const uint64_t c1 = pmd::thread_cpu_ns(datapathd, tid);
  return 100.0 * double(c1 - c0) / 1e9 / std::chrono::duration<double>(window).count();
}

int auto_budget(const std::vector<std::string>& args) {
  const int windows = std::max(1, std::stoi(arg(args, "--runs", "5")));
  const std::string vcpu = arg(args, "--vcpu", "12ms");
  std::vector<uint64_t> rates;
  {
    std::stringstream list(arg(args, "--rates", "100000,250000,500000,1000000"));
    for (std::string r; std::getline(list, r, ',');) rates.push_back(std::stoull(r));
  }
  for (uint64_t r : rates)
    if (r == 0 || r % 1000) {
      std::cerr << "auto-budget: --rates " << r << " is not a whole number of kpkt/s (ingress policing's unit)\n";
      return 2;
    }
  harness::TempDir dir("capsule-bench-auto");
  auto db = harness::Ovsdb::start(dir.path());
  if (!db) {
    std::cerr << "auto-budget: " << db.error().message << "\n";
    return 1;
  }
  auto agent = harness::Capsuled::start(**db, dir.path(), "bench", {"--stats-interval=200"});
  if (!agent) {
    std::cerr << "auto-budget: " << agent.error().message << "\n";
    return 1;
  }
  auto ctl = [&](const std::vector<std::string>& a, std::chrono::seconds timeout = 30s) {
    auto r = harness::ctl(**db, a, timeout);
    if (r.rc != 0) std::cerr << "auto-budget: capsule-ctl failed: " << r.err << r.out << "\n";
    return r;
  };
  auto get = [&](const std::string& what) {
    std::istringstream in(what);
    std::vector<std::string> a;
    for (std::string w; in >> w;) a.push_back(w);
    std::string out = harness::ctl(**db, a).out;
    if (!out.empty() && out.front() == '"') out = out.substr(1);
    return out;
  };
  if (!testkit::wait_until([&] { return get("get Host . status:datapath").find("capsule-dpdk") == 0; }, 20s)) {
    std::cerr << "auto-budget: capsuled did not bring up its DPDK datapath\n";
    return 1;
  }
  if (ctl({"--wait", "set", "Host", ".", "uplink:devargs=net_null0", "uplink:receive=false"}).rc) return 1;
  // Calibrate on the quiet host, before the flood starts.
  auto cal = ctl({"--frame-sizes=64", "--directions=from_vm", "calibrate"}, 300s);
  if (cal.rc) return 1;
  pmd::EmuVm vm(dir.path(), kVm, dir.file("a.sock"), pmd::kMacA,
                {"--mode", "tx", "--dst", pmd::kMacFar, "--rate", "0", "--size", "64"});
  // What the VM sends is policed by its port's ingress policing (OVS's
  // meaning), in kpkt/s; a bucket of three periods' worth (see
  // ctl/capsuled/net_budget.h), rounded up to whole kpkts.
  auto policer = [](uint64_t r) {
    return std::vector<std::string>{"set", "Port", kPort, "ingress_policing_kpkts_rate=" + std::to_string(r / 1000),
                                    "ingress_policing_kpkts_burst=" + std::to_string((3 * r / 50 + 999) / 1000)};
  };
  std::vector<std::string> add = {"--wait", "add-vm", kVm, "pid=" + std::to_string(vm.pid()), "--", "add-port", kVm,
                                  kPort, dir.file("a.sock"), std::string("mac=\"") + pmd::kMacA + "\"", "--"};
  for (const auto& w : policer(rates.front())) add.push_back(w);
  if (ctl(add).rc || !vm.wait_ready()) return 1;

  std::cout << "auto-budget: one emulated VM floods the uplink (net_null) with 64-byte frames; ingress policing at R "
               "(kpkts, burst 3 periods); capsule: vCPU "
            << vcpu << " + datapath `auto` every 20 ms; CFS: the same VM best effort. Median of " << windows
            << " 1-s windows.\n\n" << cal.out << "\n";

  Table t({"R kpps", "auto budget us", "budget %", "capsule kpps", "error %", "PMD CPU %", "CFS kpps", "CFS PMD CPU %"});
  double worst = 0;
  for (uint64_t r : rates) {
    auto set_qos = policer(r);
    set_qos.insert(set_qos.begin(), "--wait");
    // Baseline: best effort (no reservation columns).
    if (ctl({"--wait", "clear", "VM", kVm, "vcpu_runtime_us", "period_us", "net_budget", "net_margin"}).rc ||
        ctl(set_qos).rc)
      return 1;
    std::this_thread::sleep_for(1s);
    const double cfs = harness::port_statistic_rate(**db, kPort, "rx_packets", 1s, windows);
    const double cfs_cpu = pmd_cpu_pct(agent.value()->datapathd_pid(), 1s);
    // The capsule.
    if (ctl({"--wait", "--", "--net=auto", "set-rsv", kVm, vcpu, "20ms"}).rc) return 1;
    if (!testkit::wait_until([&] { return get("get VM a status:state").find("running") == 0; }, 10s)) {
      t.row({fmt("%.0f", double(r) / 1e3), "rejected", "", "", "", "", fmt("%.0f", cfs / 1e3), fmt("%.1f", cfs_cpu)});
      std::cerr << "auto-budget: " << get("get VM a status:reason") << "\n";
      continue;
    }
    const std::string why = get("get VM a status:net_budget");
    const long long budget = why.rfind("auto: ", 0) == 0 ? std::stoll(why.substr(6)) : -1;
    std::this_thread::sleep_for(1s);
    const double got = harness::port_statistic_rate(**db, kPort, "rx_packets", 1s, windows);
    const double cpu = pmd_cpu_pct(agent.value()->datapathd_pid(), 1s);
    const double err = 100.0 * (got - double(r)) / double(r);
    worst = std::max(worst, std::fabs(err));
    t.row({fmt("%.0f", double(r) / 1e3), std::to_string(budget), fmt("%.1f", double(budget) / 200.0),
           fmt("%.0f", got / 1e3), fmt("%+.1f", err), fmt("%.1f", cpu), fmt("%.0f", cfs / 1e3), fmt("%.1f", cfs_cpu)});
  }
  t.print();
  std::cout << "\nauto budget: worst rate error " << fmt("%.1f", worst) << " %" << std::endl;
  return 0;
}

}  // namespace

using K = BenchOption::Kind;
CAPSULE_BENCH("auto-budget", "policed rate carried by `auto` network budgets vs best effort (real stack)", auto_budget,
              {{"--runs", K::kCount, "measurement windows per rate (median)"},
               {"--vcpu", K::kText, "the VM's vCPU reservation (a duration: 12ms)"},
               {"--rates", K::kList, "policed rates in packets/s"}},
              {"--runs", "1", "--rates", "100000"});

}  // namespace capsule::bench

#endif
