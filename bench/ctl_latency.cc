// Control-plane benchmarks on a real stack (ovsdb-server + capsuled + fake
// VMs whose threads are named like QEMU vCPUs):
//
//   ctl-latency  row written -> kernel parameters applied, over N changes
//   ctl-scale    capsuled's memory and `capsule-ctl show` time at N VMs
#if __has_include("capsule/harness.h")

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "bench.h"
#include "capsule/harness.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/sched_attr.h"

namespace capsule::bench {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::vector<pid_t> vcpus_of(pid_t pid) {
  std::vector<pid_t> out;
  if (auto all = rsv::discover_threads(pid))
    for (const auto& t : rsv::threads_with_role(*all, rsv::ThreadRole::kVcpu)) out.push_back(t.tid);
  return out;
}

struct Stack {
  harness::TempDir dir{"capsule-bench"};
  std::unique_ptr<harness::Ovsdb> db;
  std::unique_ptr<harness::Capsuled> agent;
  bool start(const std::vector<std::string>& agent_args = {}) {
    auto d = harness::Ovsdb::start(dir.path());
    if (!d) {
      std::cerr << d.error().message << "\n";
      return false;
    }
    db = std::move(*d);
    auto a = harness::Capsuled::start(*db, dir.path(), "bench", agent_args);
    if (!a) {
      std::cerr << a.error().message << "\n";
      return false;
    }
    agent = std::move(*a);
    return true;
  }
};

// tools/fakevm with idle vCPUs (each wakes every `idle_ms`).
std::unique_ptr<testkit::ChildProcess> fake_vm(int vcpus, int idle_ms = 5) {
  auto p = testkit::ChildProcess::spawn({testkit::sibling_binary("capsule-fakevm"), "--vcpus", std::to_string(vcpus),
                                         "--load", "idle", "--idle-ms", std::to_string(idle_ms)},
                                        "/dev/null");
  if (p) testkit::wait_until([&] { return vcpus_of(p->pid()).size() == std::size_t(vcpus); }, 5s);
  return p;
}

int ctl_latency(const std::vector<std::string>& args) {
  const int changes = std::stoi(arg(args, "--changes", "100"));
  const int vcpus = std::stoi(arg(args, "--vcpus", "2"));
  Stack s;
  if (!s.start()) return 1;
  auto vm = fake_vm(vcpus);
  const auto tids = vcpus_of(vm->pid());
  auto r = harness::ctl(*s.db, {"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm->pid()), "--", "set-rsv",
                                "vm1", "1ms", "20ms"});
  if (r.rc != 0) {
    std::cerr << "add-vm failed: " << r.err;
    return 1;
  }
  std::vector<double> apply, agent_part, wait_rt;
  for (int i = 0; i < changes; ++i) {
    const int runtime_us = 1000 + 100 * (i % 20 + 1);
    // The clock starts before capsule-ctl is spawned: an upper bound that
    // includes its start-up, connection and commit (a controller holding an
    // OVSDB session would see less).
    const auto t0 = Clock::now();
    r = harness::ctl(*s.db, {"set", "VM", "vm1", "vcpu_runtime_us=" + std::to_string(runtime_us)});
    if (r.rc != 0) {
      std::cerr << "set failed: " << r.err;
      return 1;
    }
    const auto committed = Clock::now();  // capsule-ctl exits after the commit reply
    // Poll every 100 us (testkit::wait_until's 5 ms would quantise the result).
    auto applied = [&] {
      for (pid_t tid : tids) {
        auto p = rsv::get_sched_params(tid);
        if (!p || p->runtime != std::chrono::microseconds(runtime_us)) return false;
      }
      return true;
    };
    bool ok = applied();
    while (!ok && ms_since(t0) < 5000) {
      std::this_thread::sleep_for(100us);
      ok = applied();
    }
    if (!ok) {
      std::cerr << "change " << i << " never reached the kernel\n";
      return 1;
    }
    apply.push_back(ms_since(t0));
    agent_part.push_back(ms_since(committed));
  }
  for (int i = 0; i < std::min(changes, 20); ++i) {
    const auto t0 = Clock::now();
    r = harness::ctl(*s.db, {"--wait", "set-rsv", "vm1", std::to_string(1000 + 50 * (i + 1)) + "us", "20ms"});
    if (r.rc != 0) return 1;
    wait_rt.push_back(ms_since(t0));
  }
  Table t({"measure", "n", "p50 ms", "p99 ms", "max ms"});
  t.row({"row written -> kernel applied", std::to_string(apply.size()), fmt("%.2f", percentile(apply, 50)),
         fmt("%.2f", percentile(apply, 99)), fmt("%.2f", percentile(apply, 100))});
  t.row({"commit acknowledged -> kernel applied", std::to_string(agent_part.size()),
         fmt("%.2f", percentile(agent_part, 50)), fmt("%.2f", percentile(agent_part, 99)),
         fmt("%.2f", percentile(agent_part, 100))});
  t.row({"capsule-ctl --wait round trip", std::to_string(wait_rt.size()), fmt("%.2f", percentile(wait_rt, 50)),
         fmt("%.2f", percentile(wait_rt, 99)), fmt("%.2f", percentile(wait_rt, 100))});
  t.print();
  std::cout << "apply latency p99: " << fmt("%.2f", percentile(apply, 99)) << " ms\n";
  return 0;
}

int ctl_scale(const std::vector<std::string>& args) {
  const int n = std::stoi(arg(args, "--vms", "500"));
  // Fake VMs whose vCPUs wake every --idle-ms (default 100: 500 VMs at 5 ms
  // would be 100 k wake-ups/s, which saturates a 2-core machine by itself).
  const int idle_ms = std::stoi(arg(args, "--idle-ms", "100"));
  // --ports N: the first N VMs get a port with a policer on the capsule
  // datapath, which serves 16 VMs by default (Host:uplink max_vms); the
  // others are vCPU capsules only (admission and discovery).
  const int ports = std::min(n, std::stoi(arg(args, "--ports", "16")));
  Stack s;
  if (!s.start({"--stats-interval=5000"})) return 1;
  const long rss_idle = rss_kib(s.agent->pid());
  // One fake VM process (1 idle vCPU) per row.
  std::vector<std::unique_ptr<testkit::ChildProcess>> vms;
  for (int i = 0; i < n; ++i) vms.push_back(fake_vm(1, idle_ms));
  // All rows in one transaction, each with a port and a policer.
  std::vector<std::string> cmd{"--wait"};
  for (int i = 0; i < n; ++i) {
    const std::string name = "vm" + std::to_string(i);
    // The capsule datapath forwards only a port's own MAC (port security);
    // client-mode sockets in the bench's directory (no VM serves them).
    char mac[32];
    std::snprintf(mac, sizeof mac, "02:00:00:00:%02x:%02x", (i >> 8) & 0xff, i & 0xff);
    for (const auto& a : std::vector<std::string>{"add-vm", name, "pid=" + std::to_string(vms[i]->pid()),
                                                  "vcpu_runtime_us=100", "period_us=100000", "--"})
      cmd.push_back(a);
    if (i < ports)
      for (const auto& a : std::vector<std::string>{"add-port", name, name + "-p0", s.dir.path() + "/" + name + ".sock",
                                                    "mac=\"" + std::string(mac) + "\"", "--", "set-qos", name + "-p0",
                                                    "egress-policer", "cir=1250000", "cbs=12500", "--"})
        cmd.push_back(a);
  }
  cmd.pop_back();
  const auto t0 = Clock::now();
  auto r = harness::ctl(*s.db, cmd, std::chrono::seconds(120));
  const double converge_ms = ms_since(t0);
  if (r.rc != 0) {
    std::cerr << "bulk add failed: " << r.err.substr(0, 2000);
    return 1;
  }
  auto running = harness::ctl(*s.db, {"get", "Host", "bench", "status:vms_running"});
  std::this_thread::sleep_for(6s);  // one statistics round with every VM
  const long rss_full = rss_kib(s.agent->pid());
  std::vector<double> show_ms;
  std::size_t show_bytes = 0;
  for (int i = 0; i < 5; ++i) {
    const auto t1 = Clock::now();
    auto sh = harness::ctl(*s.db, {"show"});
    show_ms.push_back(ms_since(t1));
    show_bytes = sh.out.size();
  }
  std::vector<double> appctl_ms;
  for (int i = 0; i < 5; ++i) {
    const auto t1 = Clock::now();
    (void)harness::appctl(*s.agent, {"capsule/show"});
    appctl_ms.push_back(ms_since(t1));
  }
  Table t({"measure", "value"});
  t.row({"VM rows", std::to_string(n)});
  t.row({"... with a port + egress-policer", std::to_string(ports)});
  t.row({"VMs running (status)", running.out.substr(0, running.out.find('\n'))});
  t.row({"bulk add-vm --wait (one transaction) ms", fmt("%.0f", converge_ms)});
  t.row({"capsuled RSS idle KiB", std::to_string(rss_idle)});
  t.row({"capsuled RSS with all VMs KiB", std::to_string(rss_full)});
  t.row({"capsule-ctl show median ms", fmt("%.1f", median(show_ms))});
  t.row({"capsule-ctl show output bytes", std::to_string(show_bytes)});
  t.row({"ovs-appctl capsule/show median ms", fmt("%.1f", median(appctl_ms))});
  t.print();
  std::cout << "bulk apply of " << n << " VMs (one transaction, --wait): " << fmt("%.0f", converge_ms) << " ms\n";
  // Tear down: remove the rows first so capsuled restores 500 VMs' threads
  // while they still exist (the destructors then stop everything).
  (void)harness::ctl(*s.db, {"--wait", "--all", "destroy", "VM"});
  return 0;
}

CAPSULE_BENCH("ctl-latency", "DB row written -> SCHED_DEADLINE applied, p50/p99 over --changes N", ctl_latency,
              {{"--changes", BenchOption::Kind::kCount, "row changes timed"},
               {"--vcpus", BenchOption::Kind::kCount, "vCPU threads of the VM"}},
              {"--changes", "5"});
CAPSULE_BENCH("ctl-scale", "bulk apply time, capsuled memory and capsule-ctl show time at --vms N [--ports 16 --idle-ms 100]", ctl_scale,
              {{"--vms", BenchOption::Kind::kCount, "VMs applied in one transaction"},
               {"--idle-ms", BenchOption::Kind::kCount, "idle window for capsuled's CPU"},
               {"--ports", BenchOption::Kind::kCount, "VMs with a datapath port (at most the datapath's slots)"}},
              {"--vms", "10", "--ports", "2", "--idle-ms", "20"});

}  // namespace
}  // namespace capsule::bench

#endif
