// Act 2 of capsule-demo: a capsule host. ovsdb-server with the Capsule
// database, capsuled on the capsule DPDK datapath, and four emulated VMs
// (capsule-vm, virtio-user) on vhost-user ports, configured with capsule-ctl
// exactly as an operator would:
//
//   client  asks vm1 for 20 kB every 20 ms and times each answer (it stands
//           for a machine elsewhere, so it has a capsule of its own);
//   vm1     answers (a small web server);
//   vm2     vm1's neighbour, a web server too, loaded the way the study
//           loaded it by
//   users   64 concurrent requesters, each asking vm2 for 100 kB and asking
//           again as soon as the answer is in (like `ab -c 64`);
//   flood   which sends vm2 1500-byte frames as fast as it can (last phase).
//
// Phases: quiet; vm2 loaded without capsules for vm1 and vm2 (best-effort
// VMs: threads and datapath threads in CFS); loaded with capsules; then
// flooded, with vm2's datapath budget derived from its policer. Live lines
// show vm1's answers per second and what vm2 does; a table compares response
// times and deadline misses at the end.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "capsule/harness.h"
#include "capsule/testkit.h"
#include "capsule/vm/peer.h"
#include "demo.h"

namespace capsule::demo {
namespace {

using namespace std::chrono_literals;

constexpr const char* kMacClient = "02:00:00:00:00:c1";
constexpr const char* kMacVm1 = "02:00:00:00:00:01";
constexpr const char* kMacVm2 = "02:00:00:00:00:02";
constexpr const char* kMacFlood = "02:00:00:00:00:f1";
constexpr const char* kMacUsers = "02:00:00:00:00:e1";
constexpr int kUserCount = 64;

enum class Load { kNone, kUsers, kFlood };

struct PhaseResult {
  std::string label;
  uint64_t requests = 0, responses = 0, missed = 0;
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
  double vm2_kpps = 0;     // frames vm2 received per second
  double vm2_answers = 0;  // requests vm2 answered per second (its users)
};

class NetworkDemo {
 public:
  explicit NetworkDemo(double seconds) : seconds_(seconds) {}

  int run() {
    std::printf("state directory %s (database, sockets, logs; removed at the end)\n", dir_.path().c_str());
    auto db = harness::Ovsdb::start(dir_.path());
    if (!db) return fail(db.error().message);
    db_ = std::move(*db);
    std::printf("started ovsdb-server (pid %d) with the Capsule schema\n", int(db_->pid()));
    auto agent = harness::Capsuled::start(*db_, dir_.path(), "demo-host", {"--stats-interval=200"});
    if (!agent) return fail(agent.error().message);
    agent_ = std::move(*agent);
    std::printf("started capsuled (pid %d), control socket %s\n", int(agent_->pid()), agent_->ctl_socket().c_str());
    if (!testkit::wait_until([&] { return harness::ctl(*db_, {"show"}).out.find("datapath=capsule-dpdk") != std::string::npos; }, 30s))
      return fail("capsuled did not bring up the DPDK datapath:\n" + harness::ctl(*db_, {"show"}).out);

    // The VMs that stay up; client, users and flood are started per phase.
    vm1_ = start_vm("vm1", kMacVm1, {"--mode", "serve"});
    vm2_ = start_vm("vm2", kMacVm2, {"--mode", "serve", "--report-ms", "500"});
    // Rows: every VM best effort (no reservation) to begin with; the
    // client, standing for another machine, has a capsule throughout.
    if (!ctl({"add-vm", "vm1", "pid=" + std::to_string(vm1_->pid()), "--", "add-port", "vm1", "vm1-eth0", sock("vm1"),
              std::string("mac=\"") + kMacVm1 + "\""}) ||
        !ctl({"add-vm", "vm2", "pid=" + std::to_string(vm2_->pid()), "--", "add-port", "vm2", "vm2-eth0", sock("vm2"),
              std::string("mac=\"") + kMacVm2 + "\""}) ||
        !ctl({"add-vm", "flood", "--", "add-port", "flood", "flood-eth0", sock("flood"),
              std::string("mac=\"") + kMacFlood + "\""}) ||
        !ctl({"add-vm", "users", "--", "add-port", "users", "users-eth0", sock("users"),
              std::string("mac=\"") + kMacUsers + "\""}) ||
        !ctl({"add-vm", "client", "--", "--net=3ms", "set-rsv", "client", "3ms", "20ms", "--", "add-port", "client",
              "client-eth0", sock("client"), std::string("mac=\"") + kMacClient + "\""}))
      return 1;
    if (!vm1_->wait_ready(20s) || !vm2_->wait_ready(20s)) return fail("the VMs did not come up:\n" + vm1_->output());

    std::vector<PhaseResult> results;
    const std::string loaded = "vm2 " + std::to_string(kUserCount) + " users";
    results.push_back(phase("quiet, no capsules", Load::kNone));
    results.push_back(phase(loaded + ", no capsules", Load::kUsers));
    std::printf("\nGiving vm1 and vm2 their capsules (vCPU 4 ms + datapath 4 ms every 20 ms each):\n");
    if (!ctl({"--wait", "--", "--net=4ms", "set-rsv", "vm1", "4ms", "20ms", "--", "--net=4ms", "set-rsv", "vm2", "4ms",
              "20ms"}))
      return 1;
    results.push_back(phase(loaded + ", capsules", Load::kUsers));

    // An automatic network budget: what vm2's datapath thread needs to
    // deliver 100 kpps, from this host's measured cost curve.
    std::printf("\nMeasuring what this host's datapath thread delivers per unit of budget (frames into a VM):\n");
    const std::vector<std::string> calibrate = {"--frame-sizes=1514", "--directions=to_vm", "--seconds=0.5",
                                                "calibrate"};
    std::printf("$ capsule-ctl --frame-sizes=1514 --directions=to_vm --seconds=0.5 calibrate\n");
    auto cal = harness::ctl(*db_, calibrate, std::chrono::seconds(120));
    std::printf("%s", cal.out.c_str());
    if (cal.rc == 0) {
      // A port's QoS polices what its VM receives (OVS's meaning).
      std::printf("\nPolicing what vm2 receives at 100 kpps (its port's QoS) and letting capsuled size its "
                  "datapath budget:\n");
      if (!ctl({"--wait", "set-qos", "vm2-eth0", "pkt-policer", "pir=100000", "pbs=6000", "--", "--net=auto",
                "set-rsv", "vm2", "4ms", "20ms"}))
        return 1;
      results.push_back(phase("vm2 flooded, auto 100 kpps", Load::kFlood));
    } else {
      std::printf("(calibration failed, so no automatic budget in this run: %s)\n", cal.err.c_str());
    }

    std::printf("\n$ capsule-ctl show\n%s", harness::ctl(*db_, {"show"}).out.c_str());
    std::printf("\nvm1's response times as its client sees them (20 kB every 20 ms, deadline 20 ms)\n\n");
    std::printf("%-28s  %8s  %8s  %8s  %8s  %10s  %9s  %s\n", "phase", "answers", "p50 ms", "p99 ms", "max ms",
                "missed", "vm2 ans/s", "vm2 kpps in");
    std::printf("%s\n", std::string(105, '-').c_str());
    for (const auto& r : results)
      std::printf("%-28s  %8llu  %8.2f  %8.2f  %8.2f  %5llu/%-4llu  %9.0f  %8.1f\n", r.label.c_str(),
                  (unsigned long long)r.responses, r.p50_ms, r.p99_ms, r.max_ms, (unsigned long long)r.missed,
                  (unsigned long long)r.requests, r.vm2_answers, r.vm2_kpps);
    std::printf("\nWithout capsules vm2's users slow vm1 down: their threads and the datapath\n"
                "threads compete in CFS. In capsules, each VM's vCPU and its own datapath thread\n"
                "run inside its reservation, and vm1 keeps its response times.\n"
                "With --net=auto, capsuled sized vm2's datapath budget from its policer (100 kpps)\n"
                "and the measured cost curve: vm2 gets its policed rate, and no more CPU than that.\n");
    std::printf("\nStopping: VMs, capsuled (threads restored), ovsdb-server.\n");
    return 0;
  }

 private:
  std::string sock(const std::string& vm) const { return dir_.file(vm + ".sock"); }

  std::unique_ptr<vm::VmPeer> start_vm(const std::string& name, const char* mac, std::vector<std::string> args) {
    return std::make_unique<vm::VmPeer>(dir_.file(name + ".out"), sock(name), mac, args);
  }

  bool ctl(const std::vector<std::string>& args) {
    std::string line = "$ capsule-ctl";
    for (const auto& a : args) line += " " + a;
    std::printf("%s\n", line.c_str());
    auto r = harness::ctl(*db_, args);
    if (r.rc != 0) std::fprintf(stderr, "capsule-demo: capsule-ctl failed: %s%s\n", r.out.c_str(), r.err.c_str());
    return r.rc == 0;
  }

  int fail(const std::string& why) {
    std::fprintf(stderr, "capsule-demo: %s\n", why.c_str());
    return 1;
  }

  PhaseResult phase(const std::string& label, Load load) {
    std::printf("\n--- %s (%.0f s) ---\n", label.c_str(), seconds_);
    PhaseResult res;
    res.label = label;
    std::unique_ptr<vm::VmPeer> flooder;
    if (load == Load::kFlood) flooder = start_vm("flood", kMacFlood, {"--mode", "tx", "--dst", kMacVm2, "--size", "1500"});
    if (load == Load::kUsers)
      flooder = start_vm("users", kMacUsers,
                         {"--mode", "probe", "--dst", kMacVm2, "--concurrency", std::to_string(kUserCount),
                          "--response-bytes", "100000"});
    auto client = start_vm("client", kMacClient,
                           {"--mode", "probe", "--dst", kMacVm1, "--interval-ms", "20", "--response-bytes", "20000",
                            "--deadline-ms", "20", "--duration", std::to_string(seconds_), "--report-ms", "1000"});
    // The client row follows its process (a new one each phase).
    harness::ctl(*db_, {"set", "VM", "client", "pid=" + std::to_string(client->pid())});
    uint64_t last_resp = 0, vm2_start = vm2_->counters()["rx_to_me"], last_vm2 = vm2_start;
    uint64_t served_start = vm2_->counters()["served"], last_served = served_start;
    const auto t0 = std::chrono::steady_clock::now();
    auto t_rate = t0;
    for (int s = 1; s <= int(seconds_); ++s) {
      std::this_thread::sleep_until(t0 + std::chrono::seconds(s));
      auto c = client->counters();
      auto k2 = vm2_->counters();
      const uint64_t resp = c["responses"], v2 = k2["rx_to_me"], served = k2["served"];
      std::printf("  t=%2ds  vm1 answered %3llu/s   vm2 answered %5llu/s, received %7.1f kpps\n", s,
                  (unsigned long long)(resp - last_resp), (unsigned long long)(served - last_served),
                  double(v2 - last_vm2) / 1000.0);
      std::fflush(stdout);
      last_resp = resp;
      last_vm2 = v2;
      last_served = served;
      // vm2's rate is taken from the end of the first second on: the
      // flooder (a new process each phase) is still connecting before that.
      if (s == 1) {
        vm2_start = v2;
        served_start = served;
        t_rate = std::chrono::steady_clock::now();
      }
    }
    auto fin = client->wait_exit(std::chrono::milliseconds(long(seconds_ * 1000) + 15000));
    res.requests = fin["requests"];
    res.responses = fin["responses"];
    res.missed = fin["missed"];
    res.p50_ms = double(fin["lat_p50_us"]) / 1000.0;
    res.p99_ms = double(fin["lat_p99_us"]) / 1000.0;
    res.max_ms = double(fin["lat_max_us"]) / 1000.0;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_rate).count();
    auto k2 = vm2_->counters();
    res.vm2_kpps = double(k2["rx_to_me"] - vm2_start) / secs / 1000.0;
    res.vm2_answers = double(k2["served"] - served_start) / secs;
    if (flooder) flooder->finish();
    return res;
  }

  double seconds_;
  harness::TempDir dir_{"capsule-demo"};
  std::unique_ptr<harness::Ovsdb> db_;
  std::unique_ptr<harness::Capsuled> agent_;
  std::unique_ptr<vm::VmPeer> vm1_, vm2_;
};

}  // namespace

int network_act(double seconds) { return NetworkDemo(std::max(seconds, 3.0)).run(); }

}  // namespace capsule::demo
