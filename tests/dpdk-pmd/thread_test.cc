// The per-VM thread: named cpmd-<vm>, registered with DPDK, not pinned,
// discoverable by cpu-rsv; in interrupt mode an idle VM's thread sleeps
// (blocks on the kick / ring eventfds) and wakes for traffic.
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <thread>

#include "capsule/rsv/discovery.h"
#include "pmd_fixture.h"

namespace capsule::pmd::testing {
namespace {

using namespace std::chrono_literals;

class PmdThread : public DatapathTest {};

TEST_F(PmdThread, IsNamedUnpinnedAndDiscoverable) {
  ASSERT_TRUE(dp->add_vm(vm_config("web1", dir.file("a.sock"), kMacA)).ok());
  const pid_t tid = dp->pmd_tid("web1").value();
  ASSERT_GT(tid, 0);
  EXPECT_EQ(thread_name(getpid(), tid), "cpmd-web1");
  cpu_set_t mine, its;
  ASSERT_EQ(sched_getaffinity(0, sizeof mine, &mine), 0);
  ASSERT_EQ(sched_getaffinity(tid, sizeof its, &its), 0);
  EXPECT_TRUE(CPU_EQUAL(&mine, &its)) << "the PMD thread was pinned";
  auto all = rsv::discover_threads(getpid());
  ASSERT_TRUE(all.ok());
  auto pmds = rsv::threads_with_role(all.value(), rsv::ThreadRole::kCapsulePmd);
  ASSERT_EQ(pmds.size(), 1u);
  EXPECT_EQ(pmds[0].tid, tid);
  // Pinning on request.
  auto v = vm_config("pinned", dir.file("p.sock"), kMacB);
  v.pin_cpu = 0;
  ASSERT_TRUE(dp->add_vm(v).ok());
  const pid_t ptid = dp->pmd_tid("pinned").value();
  ASSERT_EQ(sched_getaffinity(ptid, sizeof its, &its), 0);
  EXPECT_EQ(CPU_COUNT(&its), 1);
  EXPECT_TRUE(CPU_ISSET(0, &its));
  ASSERT_TRUE(dp->remove_vm("web1").ok());
  EXPECT_TRUE(testkit::wait_until([&] { return thread_name(getpid(), tid).empty(); }, 1s)) << "thread still there";
}

TEST_F(PmdThread, EmulatedVmHasAVcpuThreadForReservations) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  VmProcess a(dir, "a", dir.file("a.sock"), kMacA, {"--mode", "count"});
  ASSERT_TRUE(a.wait_ready());
  auto all = rsv::discover_threads(a.pid());
  ASSERT_TRUE(all.ok());
  auto vcpus = rsv::threads_with_role(all.value(), rsv::ThreadRole::kVcpu);
  ASSERT_EQ(vcpus.size(), 1u);
  EXPECT_EQ(vcpus[0].tid, a.vcpu_tid());
}

// Idle CPU of a connected VM's thread, in percent of one CPU, over `secs`.
double idle_cpu_percent(Datapath& dp, const std::string& vm, double secs) {
  const pid_t tid = dp.pmd_tid(vm).value();
  const uint64_t c0 = tid_cpu_ns(getpid(), tid);
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));  // the measurement window
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 100.0 * double(tid_cpu_ns(getpid(), tid) - c0) / 1e9 / wall;
}

TEST_F(PmdThread, InterruptModeSleepsWhenIdleAndWakesForTraffic) {
  ASSERT_TRUE(dp->add_vm(vm_config("a", dir.file("a.sock"), kMacA)).ok());
  ASSERT_TRUE(dp->add_vm(vm_config("b", dir.file("b.sock"), kMacB)).ok());
  VmProcess b(dir, "b", dir.file("b.sock"), kMacB, {"--mode", "count"});
  auto a = std::make_unique<VmProcess>(dir, "a", dir.file("a.sock"), kMacA, std::vector<std::string>{"--mode", "count"});
  ASSERT_TRUE(b.wait_ready() && a->wait_ready());
  // Measure once A's thread has gone idle: it has blocked.
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "a").blocks > 0; }, 5s));
  const double idle = idle_cpu_percent(*dp, "a", 2.0);
  const auto s0 = stats_of(*dp, "a");
  EXPECT_LE(idle, 2.0) << "an idle VM's PMD thread used " << idle << " % of a CPU; blocks " << s0.blocks
                       << " kicks " << s0.wakeups_by_kick << " ring " << s0.wakeups_by_ring << " room "
                       << s0.wakeups_by_room << " idle rounds " << s0.idle_iterations;
  EXPECT_GT(s0.blocks, 0u);
  a.reset();
  // Now A sends: its thread is woken by the guest's kicks.
  VmProcess a2(dir, "a2", dir.file("a.sock"), kMacA, {"--mode", "tx", "--dst", kMacB, "--rate", "1000", "--count", "1000"});
  ASSERT_TRUE(a2.wait_ready());
  a2.wait_exit(10s);
  ASSERT_TRUE(testkit::wait_until([&] { return stats_of(*dp, "b").to_vm_packets >= 1000; }, 2s));
  const auto s1 = stats_of(*dp, "a");
  const auto sb = stats_of(*dp, "b");
  EXPECT_GT(s1.wakeups_by_kick, s0.wakeups_by_kick + 100) << "A's thread was not woken by kicks";
  EXPECT_GT(sb.wakeups_by_ring, 100u) << "B's thread was not woken through its ring";
  EXPECT_EQ(b.finish()["rx_test"], 1000u);
}

TEST_F(PmdThread, BusyPolicySpinsAndSleepPolicySleeps) {
  auto busy = vm_config("busy", dir.file("a.sock"), kMacA);
  busy.poll.policy = PollPolicy::kBusy;
  auto sleepy = vm_config("sleepy", dir.file("b.sock"), kMacB);
  sleepy.poll.policy = PollPolicy::kSleep;
  sleepy.poll.sleep_us = 1000;
  ASSERT_TRUE(dp->add_vm(busy).ok());
  ASSERT_TRUE(dp->add_vm(sleepy).ok());
  const double b = idle_cpu_percent(*dp, "busy", 1.0);
  ASSERT_TRUE(dp->remove_vm("busy").ok());  // stop spinning now
  const double s = idle_cpu_percent(*dp, "sleepy", 1.0);
  EXPECT_GT(b, 30.0) << "busy policy did not spin";
  EXPECT_LT(s, 15.0);
  EXPECT_GT(stats_of(*dp, "sleepy").sleeps, 100u);
}

}  // namespace
}  // namespace capsule::pmd::testing
