// capsule-bench hostile: what a hostile neighbour takes from a VM.
//
// VM 1 receives R frames/s (64 B) from a peer VM and counts them itself
// (capsule-vm's own rx_to_me over its own clock). Its neighbour, VM 2, is
// in turn:
//   quiet       attached, sending nothing (the baseline)
//   random-src  sending flat out from a new random source MAC every frame,
//               addressed to VM 1 (port security drops them; without it
//               they would fill the MAC table and VM 1's rings)
//   stall       never draining its rx ring while a fourth VM floods it
//               (its rings fill; it must not take mbufs others need)
//   broadcast   flooding broadcasts flat out (they reach VM 1 too: VM 1's
//               other sender must keep its share)
// Every scenario on a fresh datapath, all in one run, repeated --runs times.
// Drop = (quiet - scenario) / quiet, per run; the table gives medians and
// spread. Last line: "hostile worst drop: X %" (the worst scenario's median).
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <thread>

#include "bench.h"
#include "pmd_common.h"

namespace capsule::bench {
namespace {

using namespace capsule::bench::pmd;

constexpr const char* kMacPeer = "02:00:00:00:00:01";
constexpr const char* kMacVm1 = "02:00:00:00:00:0a";
constexpr const char* kMacNbr = "02:00:00:00:00:0b";
constexpr const char* kMacFlood = "02:00:00:00:00:0c";

struct Outcome {
  double vm1_pps = 0;
  uint64_t nbr_port_security = 0, nbr_ring_full = 0, vm1_ring_full = 0, learned = 0;
};


Result<Outcome> run_scenario(const std::string& scenario, uint64_t rate, double warm, double secs) {
  harness::TempDir tmp("capsule-bench-hostile");
  const std::string dir = tmp.path();
  DatapathConfig cfg;
  cfg.eal.program = "capsule-bench";
  cfg.max_vms = 4;
  auto dp = Datapath::create(cfg);
  if (!dp) return dp.error();
  Datapath& d = *dp.value();
  for (auto [name, mac] : {std::pair{"peer", kMacPeer}, {"vm1", kMacVm1}, {"nbr", kMacNbr}, {"flood", kMacFlood}}) {
    VmConfig v;
    v.name = name;
    v.port.socket_path = dir + "/" + name + ".sock";
    v.mac = MacAddr::parse(mac).value();
    if (auto s = d.add_vm(v); !s) return s.error();
  }
  auto vm = [&](const char* name, const char* mac, std::vector<std::string> args) -> Result<std::unique_ptr<EmuVm>> {
    auto p = std::make_unique<EmuVm>(dir, name, dir + "/" + name + ".sock", mac, std::move(args));
    if (!p->wait_ready()) return Error{std::string("VM ") + name + " did not come up: " + p->output()};
    return p;
  };
  auto vm1 = vm("vm1", kMacVm1, {"--mode", "count"});
  if (!vm1) return vm1.error();
  std::vector<std::string> nbr_args = {"--mode", "count"};
  if (scenario == "random-src") nbr_args = {"--mode", "tx", "--rate", "0", "--dst", kMacVm1, "--src", "random"};
  if (scenario == "stall") nbr_args = {"--mode", "stall"};
  if (scenario == "broadcast") nbr_args = {"--mode", "tx", "--rate", "0", "--dst", "ff:ff:ff:ff:ff:ff"};
  auto nbr = vm("nbr", kMacNbr, nbr_args);
  if (!nbr) return nbr.error();
  std::unique_ptr<EmuVm> flood;
  if (scenario == "stall") {
    auto f = vm("flood", kMacFlood, {"--mode", "tx", "--rate", "0", "--dst", kMacNbr});
    if (!f) return f.error();
    flood = std::move(f.value());
  }
  auto peer = vm("peer", kMacPeer, {"--mode", "tx", "--rate", std::to_string(rate), "--dst", kMacVm1});
  if (!peer) return peer.error();
  std::this_thread::sleep_for(std::chrono::duration<double>(warm));
  Outcome o;
  o.vm1_pps = vm1.value()->own_rate("rx_to_me", std::chrono::milliseconds(int64_t(secs * 1000)));
  o.nbr_port_security = d.stats("nbr")->from_vm_drops_port_security;
  o.nbr_ring_full = d.stats("nbr")->ring_full_drops;
  o.vm1_ring_full = d.stats("vm1")->ring_full_drops;
  o.learned = d.fdb_summary().learned;
  return o;
}

int hostile(const std::vector<std::string>& args) {
  const uint64_t rate = std::stoull(arg(args, "--rate", "50000"));
  const int runs = std::stoi(arg(args, "--runs", "3"));
  const double warm = std::stod(arg(args, "--warm", "1"));
  const double secs = std::stod(arg(args, "--secs", "3"));
  const std::vector<std::string> scenarios = {"quiet", "random-src", "stall", "broadcast"};
  std::map<std::string, std::vector<double>> pps, drop;
  std::map<std::string, Outcome> last;
  std::cout << "hostile: VM 1 receives " << rate << " frames/s (64 B) from a peer; its neighbour is quiet, sends "
            << "from random source MACs, stops draining (flooded), or floods broadcasts. " << runs << " runs of "
            << secs << " s (after " << warm << " s)\n";
  for (int r = 0; r < runs; ++r) {
    std::map<std::string, double> got;
    for (const auto& sc : scenarios) {
      auto o = run_scenario(sc, rate, warm, secs);
      if (!o) {
        std::cerr << "capsule-bench hostile: " << sc << ": " << o.error().message << "\n";
        return 1;
      }
      got[sc] = o->vm1_pps;
      last[sc] = *o;
      pps[sc].push_back(o->vm1_pps);
    }
    for (const auto& sc : scenarios)
      drop[sc].push_back(got["quiet"] > 0 ? 100.0 * (got["quiet"] - got[sc]) / got["quiet"] : 100.0);
  }
  Table t({"neighbour", "VM 1 rx kpps (median)", "min..max", "drop % (median)", "min..max", "nbr port-security drops",
           "nbr ring-full drops", "VM 1 ring-full drops", "learned MACs"});
  double worst = 0;
  for (const auto& sc : scenarios) {
    auto& p = pps[sc];
    auto& dr = drop[sc];
    const auto [pmin, pmax] = std::minmax_element(p.begin(), p.end());
    const auto [dmin, dmax] = std::minmax_element(dr.begin(), dr.end());
    const double dmed = median(dr);
    if (sc != "quiet") worst = std::max(worst, dmed);
    const Outcome& o = last[sc];
    t.row({sc, fmt("%.1f", median(p) / 1000), fmt("%.1f", *pmin / 1000) + ".." + fmt("%.1f", *pmax / 1000),
           fmt("%.2f", dmed), fmt("%.2f", *dmin) + ".." + fmt("%.2f", *dmax), std::to_string(o.nbr_port_security),
           std::to_string(o.nbr_ring_full), std::to_string(o.vm1_ring_full), std::to_string(o.learned)});
  }
  t.print();
  std::cout << "(drops and learned MACs: the last run)\n";
  std::printf("hostile worst drop: %.2f %%\n", worst);
  return 0;
}

CAPSULE_BENCH("hostile",
              "VM 1's throughput next to a neighbour that floods random MACs, stops draining, floods broadcasts "
              "[--rate 50000 --runs 3 --secs 3 --warm 1]",
              hostile,
              {{"--rate", BenchOption::Kind::kCount, "frames/s VM 1 receives"},
               {"--runs", BenchOption::Kind::kCount, "runs of every scenario"},
               {"--warm", BenchOption::Kind::kSeconds, "seconds before a window"},
               {"--secs", BenchOption::Kind::kSeconds, "measurement window"}},
              {"--runs", "1", "--warm", "0.2", "--secs", "0.3"});

}  // namespace
}  // namespace capsule::bench
