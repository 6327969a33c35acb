// capsuled dies (SIGKILL) and starts again; VMs exit mid-apply; operators
// change capsules by hand; bandwidth disappears while the agent is down.
// The kernel is the judge: sched_getattr on every thread, the cpuset tree.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "capsule/harness.h"
#include "capsule/rsv/admission.h"
#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/partition.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/rsv/thread_state.h"
#include "capsule/testkit.h"
#include "control_plane_fixture.h"
#include "fake_vm.h"

namespace capsule {
namespace {

using namespace std::chrono_literals;

bool is_deadline(pid_t tid) {
  auto p = rsv::get_sched_params(tid);
  return p && p->is_deadline();
}


class AgentCrashTest : public testing::ControlPlaneTest {
 protected:
  AgentCrashTest() : ControlPlaneTest("capsule-faults") {}
  // A test that failed while its agent was dead leaves the partitions that
  // agent made: stop the agent, then take away what no thread uses.
  void TearDown() override {
    ControlPlaneTest::TearDown();
    agent_.reset();
    (void)rsv::PartitionSet::cleanup_stale();
  }

  // SCHED_DEADLINE threads left in what capsuled touches (the test's VM
  // processes and its datapath daemon) that are none of `allowed`. Other
  // processes on the machine are not this test's to judge.
  std::vector<pid_t> stray_deadline_threads(const std::vector<pid_t>& vm_pids,
                                            const std::vector<pid_t>& allowed = {}) const {
    std::vector<pid_t> processes = vm_pids, out;
    processes.push_back(agent_->datapathd_pid());
    for (pid_t pid : processes) {
      if (pid <= 0) continue;
      auto threads = rsv::discover_threads(pid);
      if (!threads) continue;  // gone: nothing of it is left
      for (const auto& t : *threads)
        if (is_deadline(t.tid) && std::find(allowed.begin(), allowed.end(), t.tid) == allowed.end())
          out.push_back(t.tid);
    }
    return out;
  }

  // SIGKILL, as a crash.
  void crash_agent() {
    const int ws = agent_->kill();
    ASSERT_TRUE(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL) << ws;
  }
  // A new capsuled on the same database and run directory (so the same
  // journal and the same datapath daemon).
  void restart_agent() {
    auto st = agent_->restart(*db_);
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  bool wait_state(const std::string& vm, const std::string& state, std::chrono::milliseconds t = 5s) {
    return testkit::wait_until([&] { return status(vm, "state") == state; }, t);
  }
  std::string journal() { return dir_.path() + "/capsuled.journal"; }
};

TEST_F(AgentCrashTest, ARestartedAgentAdoptsItsCapsuleAndCanChangeAndReleaseIt) {
  FakeVm vm(2);
  const auto vcpus = vm.vcpu_tids();
  ASSERT_EQ(vcpus.size(), 2u);
  const auto before = rsv::get_sched_params(vcpus[0]);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "20ms"});
  ASSERT_EQ(status("vm1", "state"), "running") << status("vm1", "reason");
  const std::string threads = status("vm1", "threads");

  ASSERT_NO_FATAL_FAILURE(crash_agent());
  for (pid_t t : vcpus) ASSERT_TRUE(has_deadline(t, 2000us, 20000us)) << "a crash leaves the capsule in force";
  ASSERT_NO_FATAL_FAILURE(restart_agent());

  // Adopted, not "already SCHED_DEADLINE under someone else's control".
  ASSERT_TRUE(testkit::wait_until([&] { return status("vm1", "state") == "running"; }, 5s))
      << status("vm1", "state") << ": " << status("vm1", "reason");
  EXPECT_EQ(status("vm1", "threads"), threads);
  EXPECT_NE(harness::run({"/bin/cat", agent_->log_file()}).out.find("adopted its capsule"), std::string::npos);
  EXPECT_EQ(status("vm1", "admitted_utilization"), "0.2000") << "adopted bandwidth booked once";

  // Budget changes reach the threads again, and del-vm restores them.
  ok({"--wait", "set-rsv", "vm1", "3ms", "20ms"});
  for (pid_t t : vcpus) EXPECT_TRUE(has_deadline(t, 3000us, 20000us)) << t;
  ok({"--wait", "del-vm", "vm1"});
  for (pid_t t : vcpus) {
    auto p = rsv::get_sched_params(t);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->policy, before->policy) << t;
    EXPECT_EQ(p->nice, before->nice) << t;
  }
  EXPECT_TRUE(stray_deadline_threads({vm.pid()}).empty());
}

TEST_F(AgentCrashTest, AVmDeletedWhileTheAgentWasDownGetsItsThreadsBack) {
  FakeVm vm(2), neighbour(1);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "20ms"});
  ok({"--wait", "add-vm", "vm2", "pid=" + std::to_string(neighbour.pid()), "--", "set-rsv", "vm2", "1ms", "10ms"});
  ASSERT_NO_FATAL_FAILURE(crash_agent());
  ok({"del-vm", "vm1"});  // while nobody applies it
  ASSERT_NO_FATAL_FAILURE(restart_agent());
  EXPECT_TRUE(testkit::wait_until([&] {
    for (pid_t t : vm.vcpu_tids())
      if (is_deadline(t)) return false;
    return true;
  }, 5s)) << "vm1's threads keep SCHED_DEADLINE after its row went away";
  ASSERT_TRUE(wait_state("vm2", "running"));
  EXPECT_TRUE(has_deadline(neighbour.vcpu_tids().at(0), 1000us, 10000us)) << "the neighbour is untouched";
  ok({"--wait", "del-vm", "vm2"});
  EXPECT_TRUE(stray_deadline_threads({vm.pid(), neighbour.pid()}).empty());
}

TEST_F(AgentCrashTest, KilledMidApplyLeavesNoHalfAppliedCapsule) {
  // The kill lands at a different point of the apply each round: before the
  // journal, between journal and kernel, between two threads, after.
  FakeVm vm(4);
  const auto vcpus = vm.vcpu_tids();
  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    auto add = harness::run({harness::capsule_ctl_path(), "--db=" + db_->remote(), "add-vm", "vm1",
                             "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "40ms"});
    ASSERT_EQ(add.rc, 0) << add.err;
    std::this_thread::sleep_for(std::chrono::milliseconds(round * 4));  // the point of the kill, not a wait
    ASSERT_NO_FATAL_FAILURE(crash_agent());
    ASSERT_NO_FATAL_FAILURE(restart_agent());
    // The new agent makes the capsule whole: every vCPU, same budget.
    EXPECT_TRUE(testkit::wait_until([&] {
      for (pid_t t : vcpus)
        if (!has_deadline(t, 2000us, 40000us)) return false;
      return status("vm1", "state") == "running";
    }, 5s)) << status("vm1", "state") << ": " << status("vm1", "reason");
    ok({"--wait", "del-vm", "vm1"});
    for (pid_t t : vcpus) EXPECT_FALSE(is_deadline(t)) << "tid " << t << " left under SCHED_DEADLINE";
  }
  EXPECT_TRUE(stray_deadline_threads({vm.pid()}).empty());
}

TEST_F(AgentCrashTest, AVmExitingMidApplyIsReleasedAndItsNeighbourUntouched) {
  FakeVm neighbour(1);
  ok({"--wait", "add-vm", "vm2", "pid=" + std::to_string(neighbour.pid()), "--", "set-rsv", "vm2", "1ms", "10ms"});
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    auto vm = std::make_unique<FakeVm>(3);
    ok({"add-vm", "vm1", "pid=" + std::to_string(vm->pid()), "--", "set-rsv", "vm1", "2ms", "40ms"});
    std::this_thread::sleep_for(std::chrono::milliseconds(round * 3));  // the point of the exit, not a wait
    vm.reset();  // SIGTERM, then reaped: its threads vanish while capsuled applies
    EXPECT_TRUE(testkit::wait_until([&] {
      return status("vm1", "state") == "rejected" && status("vm1", "threads").empty();
    }, 5s)) << status("vm1", "state") << ": " << status("vm1", "reason");
    EXPECT_TRUE(has_deadline(neighbour.vcpu_tids().at(0), 1000us, 10000us));
    ok({"--wait", "del-vm", "vm1"});
  }
  EXPECT_EQ(stray_deadline_threads({neighbour.pid()}, neighbour.vcpu_tids()).size(), 0u);
  EXPECT_TRUE(agent_->running());
}

TEST_F(AgentCrashTest, ACapsuleChangedByHandIsReportedAndPutBack) {
  FakeVm vm(1);
  const pid_t tid = vm.vcpu_tids().at(0);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "20ms"});
  rsv::SchedParams other;  // an operator's `chrt -o -p 0 TID`
  ASSERT_TRUE(rsv::set_sched_params(tid, other).ok());
  EXPECT_TRUE(testkit::wait_until([&] {
    const std::string d = status("vm1", "drift");
    return d.find("not SCHED_DEADLINE") != std::string::npos && d.find("repaired") != std::string::npos;
  }, 5s)) << status("vm1", "drift");
  EXPECT_TRUE(has_deadline(tid, 2000us, 20000us));
  EXPECT_EQ(status("vm1", "state"), "running");
}

TEST_F(AgentCrashTest, APartitionRemovedByHandIsReportedAndMadeAgain) {
  int cpu = -1;
  if (auto why = partition_unavailable(&cpu); !why.empty()) GTEST_SKIP() << why;
  const auto fs = rsv::CpusetFs::detect();
  const std::string part = rsv::PartitionSet::partition_name(cpu);
  FakeVm vm(1);
  const pid_t tid = vm.vcpu_tids().at(0);
  ok({"set", "Host", "host-a", "admission_mode=partitioned", "capsule_cpus=\"" + std::to_string(cpu) + "\""});
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "vcpu_runtime_us=1000", "period_us=20000"});
  ASSERT_EQ(status("vm1", "state"), "running") << status("vm1", "reason");
  ASSERT_EQ(*fs.thread_cpuset(tid), part);

  // What an operator must do to remove it: the thread out of SCHED_DEADLINE
  // and out of the cpuset, then rmdir.
  ASSERT_TRUE(rsv::set_sched_params(tid, rsv::SchedParams{}).ok());
  ASSERT_TRUE(fs.move_thread(tid, "/").ok());
  ASSERT_EQ(::rmdir(fs.path(part).c_str()), 0) << std::strerror(errno);

  EXPECT_TRUE(testkit::wait_until([&] {
    const std::string d = status("vm1", "drift");
    return d.find("not its partition") != std::string::npos && d.find("repaired") != std::string::npos;
  }, 5s)) << status("vm1", "drift");
  EXPECT_TRUE(testkit::wait_until([&] { return has_deadline(tid, 1000us, 20000us); }, 2s));
  EXPECT_EQ(*fs.thread_cpuset(tid), part);
  // A crash now, and a restart, adopts the pinned capsule too; stopping
  // removes the partition.
  ASSERT_NO_FATAL_FAILURE(crash_agent());
  ASSERT_NO_FATAL_FAILURE(restart_agent());
  ASSERT_TRUE(wait_state("vm1", "running")) << status("vm1", "reason");
  EXPECT_EQ(status("vm1", "placement"), "partitioned: vcpu0:cpu" + std::to_string(cpu));
  EXPECT_EQ(agent_->stop() & 0x7f, 0);
  EXPECT_FALSE(is_deadline(tid));
  EXPECT_NE(::access(fs.path(part).c_str(), F_OK), 0) << part << " left behind";
  EXPECT_NE(::access(fs.path("/capsule-system").c_str(), F_OK), 0) << "capsule-system left behind";
}

TEST_F(AgentCrashTest, BandwidthTakenWhileTheAgentWasDownRefusesTheGrowthAndKeepsWhatIsInForce) {
  FakeVm vm(1);
  const pid_t tid = vm.vcpu_tids().at(0);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "20ms"});
  ASSERT_NO_FATAL_FAILURE(crash_agent());
  // While the agent is down: another program takes most of the machine's
  // DL bandwidth (what is in force, 10 %, still fits beside it; 75 % does
  // not), and the operator asks vm1 for 75 %.
  const double n = double(rsv::online_cpus().size());
  const double capacity = rsv::kernel_dl_bound() * n - rsv::fair_server_bandwidth() * n;
  const double take = capacity - (0.10 + 0.75) / 2;
  const int k = int(std::ceil(take / 0.9));
  std::vector<std::unique_ptr<testkit::BusyThread>> foreign;
  for (int i = 0; i < k; ++i) {
    foreign.push_back(std::make_unique<testkit::BusyThread>("foreign-dl"));
    rsv::SchedParams dl;
    dl.policy = rsv::kSchedDeadline;
    dl.period = dl.deadline = 10ms;
    dl.runtime = std::chrono::nanoseconds(int64_t(take / k * 10e6));
    auto taken = rsv::set_sched_params(foreign.back()->tid(), dl);
    if (!taken) GTEST_SKIP() << "cannot make a foreign DL thread: " << taken.error().message;
  }
  ok({"set-rsv", "vm1", "15ms", "20ms"});
  ASSERT_NO_FATAL_FAILURE(restart_agent());
  EXPECT_TRUE(testkit::wait_until([&] { return status("vm1", "state") == "rejected"; }, 5s)) << status("vm1", "state");
  EXPECT_NE(status("vm1", "reason").find("cannot admit"), std::string::npos) << status("vm1", "reason");
  EXPECT_NE(status("vm1", "in_force").find("2 ms every 20 ms"), std::string::npos) << status("vm1", "in_force");
  EXPECT_TRUE(has_deadline(tid, 2000us, 20000us)) << "what was in force stays";
  for (auto& f : foreign) ASSERT_TRUE(rsv::set_sched_params(f->tid(), rsv::SchedParams{}).ok());
  foreign.clear();
  ok({"--wait", "del-vm", "vm1"});
  EXPECT_FALSE(is_deadline(tid));
}

TEST_F(AgentCrashTest, ADatabaseKilledAndRestartedChangesNothingAndTheNextChangeAppliesOnce) {
  FakeVm vm(1);
  const pid_t tid = vm.vcpu_tids().at(0);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "20ms"});
  db_->crash();
  auto log = [&] { return harness::run({"/bin/cat", agent_->log_file()}).out; };
  ASSERT_TRUE(testkit::wait_until([&] { return log().find("lost connection to") != std::string::npos; }, 10s))
      << log();
  // A lost database is not a request to release anything.
  EXPECT_TRUE(has_deadline(tid, 2000us, 20000us));
  EXPECT_TRUE(agent_->running());
  ASSERT_TRUE(db_->start_again().ok());
  ok({"--wait", "set-rsv", "vm1", "3ms", "20ms"});
  EXPECT_TRUE(has_deadline(tid, 3000us, 20000us));
  const std::string l = log();
  std::size_t changes = 0;
  for (auto at = l.find("reservation changed"); at != std::string::npos; at = l.find("reservation changed", at + 1))
    ++changes;
  EXPECT_EQ(changes, 1u) << l;
  EXPECT_EQ(status("vm1", "state"), "running");
}

}  // namespace
}  // namespace capsule
