// capsuled end to end: a real ovsdb-server, a real capsuled process, fake VM
// processes whose threads are named like QEMU's vCPU threads, and the kernel's
// SCHED_DEADLINE as the judge (sched_getattr on every thread).
#include <arpa/inet.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "capsule/harness.h"
#include "control_plane_fixture.h"
#include "fake_vm.h"
#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/partition.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/rsv/thread_state.h"
#include "capsule/testkit.h"

namespace capsule {
namespace {

using namespace std::chrono_literals;
using harness::CmdResult;

rsv::SchedParams params(pid_t tid) {
  auto p = rsv::get_sched_params(tid);
  EXPECT_TRUE(p.ok()) << (p ? "" : p.error().message);
  return p ? *p : rsv::SchedParams{};
}

class CapsuledTest : public testing::ControlPlaneTest {
 protected:
  CapsuledTest() : ControlPlaneTest("capsule-test") {}
};

TEST_F(CapsuledTest, CreatedVmGetsItsVcpuThreadsIntoSchedDeadline) {
  FakeVm vm(2);
  const auto main_before = params(vm.pid());
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "20ms"});
  for (pid_t tid : vm.vcpu_tids()) {
    auto p = params(tid);
    EXPECT_TRUE(p.is_deadline()) << "tid " << tid;
    EXPECT_EQ(p.runtime, 2ms);
    EXPECT_EQ(p.period, 20ms);
    EXPECT_EQ(p.deadline, 20ms);
    EXPECT_TRUE(p.flags & rsv::kFlagResetOnFork);
  }
  // The emulator (main) thread is not a vCPU and keeps its policy.
  EXPECT_EQ(params(vm.pid()).policy, main_before.policy);
  EXPECT_EQ(status("vm1", "state"), "running");
  EXPECT_EQ(status("vm1", "admitted_utilization"), "0.2000");
  const std::string threads = status("vm1", "threads");
  for (pid_t tid : vm.vcpu_tids()) EXPECT_NE(threads.find(std::to_string(tid)), std::string::npos) << threads;
  // capsuled runs the capsule DPDK datapath (a VM without ports has no
  // packet work, so no datapath thread).
  EXPECT_EQ(status("vm1", "datapath"), "attached");
}

TEST_F(CapsuledTest, DeadlineShorterThanThePeriodReachesTheKernelAndIsAdmittedAtItsDensity) {
  FakeVm vm(2), big(2);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "1ms", "20ms", "5ms"});
  for (pid_t tid : vm.vcpu_tids()) {
    auto p = params(tid);
    EXPECT_TRUE(p.is_deadline()) << "tid " << tid;
    EXPECT_EQ(p.runtime, 1ms);
    EXPECT_EQ(p.deadline, 5ms);
    EXPECT_EQ(p.period, 20ms);
  }
  EXPECT_EQ(status("vm1", "admitted_utilization"), "0.1000");
  EXPECT_EQ(status("vm1", "admitted_density"), "0.4000");
  // 2 x 10 ms per 100 ms is 20 % of a CPU, which the kernel would admit on
  // this host; due 10 ms after each wake-up it is 2 x 100 %, more than the
  // machine's bound (2 x 95 %): refused, whatever else runs, and nothing changed.
  auto r = ctl({"--wait", "add-vm", "vm2", "pid=" + std::to_string(big.pid()), "--", "set-rsv", "vm2", "10ms", "100ms",
                "10ms"});
  EXPECT_EQ(r.rc, 1);
  const std::string reason = status("vm2", "reason");
  EXPECT_NE(reason.find("needs 200.0 % (budget over its deadline 10 ms, shorter than its period 100 ms"),
            std::string::npos)
      << reason;
  for (pid_t tid : big.vcpu_tids()) EXPECT_FALSE(params(tid).is_deadline());
  // The same budget with D = P is its share only, and fits.
  ok({"--wait", "set-rsv", "vm2", "10ms", "100ms"});
  for (pid_t tid : big.vcpu_tids()) EXPECT_EQ(params(tid).deadline, 100ms);
  EXPECT_EQ(status("vm2", "state"), "running");
  // A deadline change alone reaches the kernel in place.
  ok({"--wait", "set-rsv", "vm1", "1ms", "20ms", "8ms"});
  for (pid_t tid : vm.vcpu_tids()) EXPECT_EQ(params(tid).deadline, 8ms);
  // capsuled refuses a deadline above the period written behind capsule-ctl's back.
  r = ctl({"--wait", "set", "VM", "vm1", "deadline_us=30000"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(status("vm1", "reason").find("the deadline 30 ms is above the period 20 ms"), std::string::npos)
      << status("vm1", "reason");
  for (pid_t tid : vm.vcpu_tids()) EXPECT_EQ(params(tid).deadline, 8ms);
}

// A malformed number on the command line: capsuled names that option and
// its range and starts nothing (the options are not in declaration order in
// getopt's table, and the name once came from the wrong entry).
TEST(CapsuledOptions, AMalformedNumberNamesItsOptionAndStartsNothing) {
  const std::string bin = testkit::sibling_binary("capsuled");
  for (const auto& [arg, want] : std::vector<std::pair<std::string, std::string>>{
           {"--metrics-port=70000", "--metrics-port=70000 must be a number in [0, 65535]"},
           {"--metrics-port=", "--metrics-port= must be a number in [0, 65535]"},
           {"--stats-interval=50", "--stats-interval=50 must be a number in [100, 3600000]"},
           {"--stats-interval=1s", "--stats-interval=1s must be a number in [100, 3600000]"}}) {
    CmdResult r = harness::run({bin, "--db", "unix:/nonexistent/capsule.sock", arg}, 10s);
    EXPECT_EQ(r.rc, 2) << arg << ": " << r.err;
    EXPECT_NE(r.err.find(want), std::string::npos) << arg << ": " << r.err;
  }
}

TEST_F(CapsuledTest, PidfileFindsTheProcess) {
  const std::string pidfile = dir_.file("vm.pid");
  FakeVm vm(1, pidfile);
  ok({"--wait", "add-vm", "vm1", "pidfile=" + pidfile, "vcpu_runtime_us=1000", "period_us=10000"});
  EXPECT_TRUE(has_deadline(vm.vcpu_tids().at(0), 1ms, 10ms));
  EXPECT_EQ(status("vm1", "pid"), std::to_string(vm.pid()));
}

TEST_F(CapsuledTest, BudgetChangeReachesTheKernelWithinOneSecond) {
  FakeVm vm(2);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "1ms", "20ms"});
  const auto tids = vm.vcpu_tids();
  for (int runtime_us : {3000, 1500, 4000, 2000}) {
    // No --wait: the clock runs from the committed row to the kernel.
    ok({"set", "VM", "vm1", "vcpu_runtime_us=" + std::to_string(runtime_us)});
    const auto t0 = std::chrono::steady_clock::now();
    const bool applied = testkit::wait_until(
        [&] {
          for (pid_t tid : tids)
            if (!has_deadline(tid, std::chrono::microseconds(runtime_us), 20ms)) return false;
          return true;
        },
        2s);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    EXPECT_TRUE(applied) << runtime_us << " us never reached the kernel";
    EXPECT_LT(ms.count(), 1000) << runtime_us << " us took " << ms.count() << " ms";
  }
}

TEST_F(CapsuledTest, DeletingTheRowRestoresEveryThread) {
  FakeVm vm(3);
  std::map<pid_t, rsv::ThreadSnapshot> before;
  const auto fs = rsv::CpusetFs::detect();
  for (pid_t tid : vm.all_tids()) before[tid] = *rsv::ThreadSnapshot::capture(tid, fs);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "50ms"});
  for (pid_t tid : vm.vcpu_tids()) ASSERT_TRUE(has_deadline(tid, 2ms, 50ms));

  ok({"--wait", "del-vm", "vm1"});
  for (const auto& [tid, snap] : before) {
    auto now = rsv::ThreadSnapshot::capture(tid, fs);
    ASSERT_TRUE(now.ok());
    EXPECT_EQ(now->sched.policy, snap.sched.policy) << "tid " << tid;
    EXPECT_EQ(now->sched.nice, snap.sched.nice) << "tid " << tid;
    EXPECT_EQ(rsv::affinity_cpus(now->affinity), rsv::affinity_cpus(snap.affinity)) << "tid " << tid;
    EXPECT_EQ(now->cpuset, snap.cpuset) << "tid " << tid;
  }
}

TEST_F(CapsuledTest, OverBoundVmIsRejectedAndTheAdmittedOneUndisturbed) {
  // Numbers that hold whatever other SCHED_DEADLINE threads run on the host:
  // vm1 asks 2 x 1/50 = 4 % of a CPU, vm2 asks 2 x 100 % = 200 %, more than
  // the whole machine's bound (2 x 95 %).
  FakeVm a(2), b(2);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(a.pid()), "--", "set-rsv", "vm1", "1ms", "50ms"});
  ASSERT_EQ(status("vm1", "state"), "running");

  auto r = ctl({"--wait", "add-vm", "vm2", "pid=" + std::to_string(b.pid()), "--", "set-rsv", "vm2", "50ms", "50ms"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("VM vm2 rejected: cannot admit VM 'vm2'"), std::string::npos) << r.err;
  EXPECT_EQ(status("vm2", "state"), "rejected");
  EXPECT_NE(status("vm2", "reason").find("free"), std::string::npos) << status("vm2", "reason");
  for (pid_t tid : b.vcpu_tids()) EXPECT_FALSE(params(tid).is_deadline());
  for (pid_t tid : a.vcpu_tids()) EXPECT_TRUE(has_deadline(tid, 1ms, 50ms));

  // Growing the admitted VM past the bound is refused too; its old
  // reservation stays in force and status says so.
  r = ctl({"--wait", "set-rsv", "vm1", "50ms", "50ms"});
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_EQ(status("vm1", "state"), "rejected");
  EXPECT_NE(status("vm1", "in_force").find("1 ms every 50 ms"), std::string::npos) << status("vm1", "in_force");
  for (pid_t tid : a.vcpu_tids()) EXPECT_TRUE(has_deadline(tid, 1ms, 50ms));

  // Lowering the bound (1 % of each CPU) re-admits every VM; --wait reports
  // the casualties.
  ok({"--wait", "set-rsv", "vm1", "1ms", "50ms"});
  r = ctl({"--wait", "set", "Host", "host-a", "utilization_bound=0.01"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("VM vm1 rejected: cannot admit"), std::string::npos) << r.err;
  for (pid_t tid : a.vcpu_tids()) EXPECT_FALSE(params(tid).is_deadline());
  r = ctl({"--wait", "clear", "Host", "host-a", "utilization_bound"});
  EXPECT_EQ(r.rc, 1);  // vm1 is back, vm2 still does not fit, and says so
  EXPECT_EQ(r.err.find("VM vm1 rejected"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("VM vm2 rejected"), std::string::npos) << r.err;
  EXPECT_EQ(status("vm1", "state"), "running");

  // A budget that fits lets vm2 in.
  ok({"--wait", "set-rsv", "vm2", "2ms", "50ms"});
  EXPECT_EQ(status("vm2", "state"), "running");
  for (pid_t tid : b.vcpu_tids()) EXPECT_TRUE(has_deadline(tid, 2ms, 50ms));
}

TEST_F(CapsuledTest, MalformedRowsAreRejectedWithAReason) {
  FakeVm good(2), victim(1);
  ok({"--wait", "add-vm", "good", "pid=" + std::to_string(good.pid()), "--", "set-rsv", "good", "2ms", "20ms"});
  const std::string p = std::to_string(victim.pid());
  struct Case {
    std::vector<std::string> columns;  // of the VM row
    std::vector<std::string> more;     // extra commands ("--" separated)
    std::string reason;                // substring of status:reason
    std::string state = "rejected";    // "waiting": the VM may still come up
  };
  const std::vector<Case> cases = {
      {{"pid=" + p, "vcpu_runtime_us=30000", "period_us=20000"}, {}, "larger than the period"},
      {{"vcpu_runtime_us=1000", "period_us=20000"}, {}, "neither pid nor pidfile"},
      {{"pid=" + p, "pidfile=/x.pid", "vcpu_runtime_us=1000", "period_us=20000"}, {}, "both pid and pidfile"},
      {{"pidfile=/nonexistent/vm.pid", "vcpu_runtime_us=1000", "period_us=20000"}, {}, "cannot read pidfile", "waiting"},
      {{"pid=4000000", "vcpu_runtime_us=1000", "period_us=20000"}, {}, "does not exist"},
      {{"pid=" + std::to_string(db_->pid()), "vcpu_runtime_us=1000", "period_us=20000"}, {}, "no vCPU threads",
       "waiting"},
      {{"pid=" + p, "vcpu_runtime_us=1000"}, {}, "no reservation"},
      {{"pid=" + p, "vcpu_runtime_us=1000", "period_us=20000"},
       {"--", "add-port", "bad", "p1", "/tmp/p1.sock", "mac=\"52:54:00:zz:00:01\""}, "not an Ethernet address"},
      {{"pid=" + p, "vcpu_runtime_us=1000", "period_us=20000"},
       {"--", "add-port", "bad", "p1", "relative.sock"}, "not an absolute path"},
      {{"pid=" + p, "vcpu_runtime_us=1000", "period_us=20000"},
       {"--", "add-port", "bad", "p1", "/tmp/p1.sock", "--", "--id=@q", "create", "QoS", "type=egress-policer",
        "other_config:cbs=100", "--", "set", "Port", "p1", "qos=@q"},
       "needs cir"},
      {{"pid=" + p, "vcpu_runtime_us=1000", "period_us=20000"},
       {"--", "add-port", "bad", "p1", "/tmp/p1.sock", "--", "--id=@q", "create", "QoS", "type=trtcm-policer",
        "other_config:cir=10", "other_config:pir=5", "--", "set", "Port", "p1", "qos=@q"},
       "trtcm-policer has no key"},
      {{"pid=" + p, "vcpu_runtime_us=1000", "period_us=20000"},
       {"--", "add-port", "bad", "p1", "/tmp/p1.sock", "--", "--id=@q", "create", "QoS", "type=egress-policer",
        "other_config:cir=fast", "--", "set", "Port", "p1", "qos=@q"},
       "not a non-negative integer"},
      // Written by a client that checks nothing (here db-ctl's generic create):
      // capsuled applies capsule-ctl's rules and quotes the row's own text.
      {{"pid=" + p, "vcpu_runtime_us=1000", "period_us=20000"},
       {"--", "add-port", "bad", "p1", "/tmp/p1.sock", "--", "--id=@q", "create", "QoS", "type=egress-policer",
        "other_config:cir=-5", "--", "set", "Port", "p1", "qos=@q"},
       "egress-policer: cir=-5 is not a non-negative integer"},
      {{"pid=" + p, "vcpu_runtime_us=1000", "period_us=20000"},
       {"--", "add-port", "bad", "p1", "/tmp/p1.sock", "--", "--id=@q", "create", "QoS", "type=pkt-policer",
        "other_config:pir=2000000000", "--", "set", "Port", "p1", "qos=@q"},
       "pir=2000000000 is out of range"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args{"--wait", "add-vm", "bad"};
    args.insert(args.end(), c.columns.begin(), c.columns.end());
    args.insert(args.end(), c.more.begin(), c.more.end());
    auto r = ctl(args);
    // A VM that is not up yet (no pidfile, no vCPU threads) waits for it:
    // not an error for --wait, and the reason says what it waits for.
    EXPECT_EQ(r.rc, c.state == "rejected" ? 1 : 0) << c.reason << ": " << r.err;
    if (c.state == "rejected") {
      EXPECT_NE(r.err.find("VM bad rejected"), std::string::npos) << r.err;
    }
    EXPECT_EQ(status("bad", "state"), c.state) << c.reason;
    EXPECT_NE(status("bad", "reason").find(c.reason), std::string::npos)
        << "want \"" << c.reason << "\", got \"" << status("bad", "reason") << "\"";
    EXPECT_FALSE(params(victim.vcpu_tids().at(0)).is_deadline()) << c.reason;
    for (pid_t tid : good.vcpu_tids()) EXPECT_TRUE(has_deadline(tid, 2ms, 20ms)) << c.reason;
    ok({"--wait", "del-vm", "bad"});
  }
  EXPECT_EQ(status("good", "state"), "running");
}

// A server-mode port (capsule creates the socket) that cannot come up says
// why in the Port's status, whichever client wrote it: a missing socket
// directory, or a path naming a file capsule will not replace.
TEST_F(CapsuledTest, ServerModePortThatCannotComeUpSaysWhyInItsStatus) {
  FakeVm vm(1);
  char tmpl[] = "/tmp/capsule-hostile-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl, file = dir + "/disk.img";
  struct Cleanup {
    std::string dir, file;
    ~Cleanup() {
      ::unlink(file.c_str());
      ::rmdir(dir.c_str());
    }
  } cleanup{dir, file};
  {
    FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("the VM's disk", f);
    std::fclose(f);
  }
  ctl({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "vcpu_runtime_us=1000", "period_us=20000", "--",
       "add-port", "vm1", "p1", dir + "/missing/vm1.sock", "vhost_mode=server", "--", "add-port", "vm1", "p2", file,
       "vhost_mode=server", "--", "add-port", "vm1", "p3", dir + "/vm1.sock", "vhost_mode=server"});
  auto port_status = [&](const std::string& port, const std::string& key) {
    return column("Port", port, "status:" + key);
  };
  ASSERT_TRUE(testkit::wait_until([&] { return !port_status("p1", "reason").empty(); }, 10s));
  EXPECT_EQ(port_status("p1", "state"), "rejected");
  EXPECT_NE(port_status("p1", "reason").find("socket directory " + dir + "/missing does not exist"), std::string::npos)
      << port_status("p1", "reason");
  EXPECT_EQ(port_status("p2", "state"), "rejected");
  EXPECT_NE(port_status("p2", "reason").find("vhost_path " + file + " names an existing file, a regular file"),
            std::string::npos)
      << port_status("p2", "reason");
  // A free path in an existing directory: not refused (its status is
  // written in the same pass as p1's, so it is there already).
  const std::string p3 = port_status("p3", "state");
  EXPECT_FALSE(p3.empty()) << "p3 has no status at all";
  EXPECT_NE(p3, "rejected") << port_status("p3", "reason");
  // Its VM is held back (three ports where the datapath serves one): p3
  // says so, not nothing.
  EXPECT_EQ(p3, "waiting");
  EXPECT_NE(port_status("p3", "reason").find("VM vm1 is rejected: "), std::string::npos)
      << port_status("p3", "reason");
  // Nothing was touched.
  struct stat st{};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, 13);
}

TEST_F(CapsuledTest, TwoRowsCannotShareAProcess) {
  FakeVm vm(1);
  const std::string p = "pid=" + std::to_string(vm.pid());
  ok({"--wait", "add-vm", "a", p, "vcpu_runtime_us=1000", "period_us=20000"});
  auto r = ctl({"--wait", "add-vm", "b", p, "vcpu_runtime_us=3000", "period_us=20000"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(status("b", "reason").find("already belongs to VM a"), std::string::npos) << status("b", "reason");
  EXPECT_TRUE(has_deadline(vm.vcpu_tids().at(0), 1ms, 20ms));
}

TEST_F(CapsuledTest, RowsOfAnotherChassisAreIgnored) {
  FakeVm mine(1), theirs(1);
  ok({"--chassis=host-b", "add-vm", "elsewhere", "pid=" + std::to_string(theirs.pid()), "vcpu_runtime_us=1000",
      "period_us=10000"});
  ok({"--wait", "add-vm", "here", "pid=" + std::to_string(mine.pid()), "vcpu_runtime_us=1000", "period_us=10000"});
  // A second pass for good measure: still untouched.
  ASSERT_EQ(harness::appctl(*agent_, {"capsule/reconcile"}).rc, 0);
  EXPECT_TRUE(has_deadline(mine.vcpu_tids().at(0), 1ms, 10ms));
  EXPECT_FALSE(params(theirs.vcpu_tids().at(0)).is_deadline());
  EXPECT_EQ(ok({"get", "VM", "elsewhere", "status"}), "{}\n");
  EXPECT_EQ(harness::appctl(*agent_, {"capsule/show"}).out.find("elsewhere"), std::string::npos);
  // Moving the row to this chassis makes it ours.
  ok({"--wait", "set", "VM", "elsewhere", "chassis=host-a"});
  EXPECT_TRUE(has_deadline(theirs.vcpu_tids().at(0), 1ms, 10ms));
  // ...and moving it away releases it.
  ok({"set", "VM", "elsewhere", "chassis=host-b"});
  EXPECT_TRUE(testkit::wait_until([&] { return !params(theirs.vcpu_tids().at(0)).is_deadline(); }, 2s));
}

TEST_F(CapsuledTest, AppctlAnswersShowStatsReconcileAndVlog) {
  FakeVm vm(2);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "20ms"});
  auto show = harness::appctl(*agent_, {"capsule/show"});
  ASSERT_EQ(show.rc, 0) << show.err;
  EXPECT_NE(show.out.find("on chassis host-a"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("VM vm1: running"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("SCHED_DEADLINE runtime 2 ms period 20 ms"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("datapath: capsule-dpdk"), std::string::npos) << show.out;
  auto stats = harness::appctl(*agent_, {"capsule/stats"});
  ASSERT_EQ(stats.rc, 0) << stats.err;
  EXPECT_NE(stats.out.find("vcpu0 tid"), std::string::npos) << stats.out;
  auto rec = harness::appctl(*agent_, {"capsule/reconcile"});
  ASSERT_EQ(rec.rc, 0) << rec.err;
  EXPECT_NE(rec.out.find("1 running, 0 rejected"), std::string::npos) << rec.out;
  auto vlog = harness::appctl(*agent_, {"vlog/list"});
  ASSERT_EQ(vlog.rc, 0);
  EXPECT_NE(vlog.out.find("capsuled"), std::string::npos);
  EXPECT_EQ(harness::appctl(*agent_, {"vlog/set", "capsuled:file:dbg"}).rc, 0);
}

TEST_F(CapsuledTest, EnabledFalseReleasesAndTrueReapplies) {
  FakeVm vm(1);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "vcpu_runtime_us=1000", "period_us=10000"});
  ASSERT_TRUE(has_deadline(vm.vcpu_tids().at(0), 1ms, 10ms));
  ok({"--wait", "set", "VM", "vm1", "enabled=false"});
  EXPECT_FALSE(params(vm.vcpu_tids().at(0)).is_deadline());
  EXPECT_EQ(status("vm1", "state"), "disabled");
  ok({"--wait", "set", "VM", "vm1", "enabled=true"});
  EXPECT_TRUE(has_deadline(vm.vcpu_tids().at(0), 1ms, 10ms));
  EXPECT_EQ(status("vm1", "state"), "running");
}

TEST_F(CapsuledTest, DatabaseRestartKeepsReservationsAndRewritesStatus) {
  FakeVm vm(2);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "20ms"});
  db_->stop();
  // While the database is away, nothing is released.
  // An observation window (nothing may change in it, so there is no
  // condition to wait for): three statistics passes.
  std::this_thread::sleep_for(600ms);
  for (pid_t tid : vm.vcpu_tids()) EXPECT_TRUE(has_deadline(tid, 2ms, 20ms));
  ASSERT_TRUE(db_->restart().ok());
  // Status columns are ephemeral (lost with the server); capsuled writes
  // them again once it has reconnected.
  EXPECT_TRUE(testkit::wait_until([&] { return status("vm1", "state") == "running"; }, 10s))
      << "status not rewritten after the database restart";
  for (pid_t tid : vm.vcpu_tids()) EXPECT_TRUE(has_deadline(tid, 2ms, 20ms));
  ok({"--wait", "set-rsv", "vm1", "3ms", "20ms"});
  for (pid_t tid : vm.vcpu_tids()) EXPECT_TRUE(has_deadline(tid, 3ms, 20ms));
}

// GET on the loopback metrics endpoint; the whole reply (head and body).
std::string http_get(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  (void)!::write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, std::size_t(n));
  ::close(fd);
  return out;
}

TEST_F(CapsuledTest, MetricsEndpointServesValidPrometheusText) {
  FakeVm vm(2);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "20ms"});
  const std::string url = testing::trim(ok({"get", "Host", "host-a", "status:metrics"}));
  std::smatch m;
  ASSERT_TRUE(std::regex_match(url, m, std::regex(R"(http://127\.0\.0\.1:(\d+)/metrics)"))) << url;
  const int port = std::stoi(m[1]);
  const std::string reply = http_get(port, "/metrics");
  ASSERT_EQ(reply.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << reply;
  EXPECT_NE(reply.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  const std::string body = reply.substr(reply.find("\r\n\r\n") + 4);

  // Text exposition format: HELP/TYPE comments, then samples
  // name{label="value",...} number; every sample's family has a TYPE.
  static const std::regex help(R"(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*)");
  static const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  static const std::regex sample(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf))");
  std::set<std::string> typed;
  std::istringstream in(body);
  int samples = 0;
  for (std::string line; std::getline(in, line);) {
    std::smatch t;
    if (std::regex_match(line, t, type)) {
      typed.insert(t[1]);
    } else if (std::regex_match(line, help)) {
    } else if (std::regex_match(line, t, sample)) {
      ++samples;
      EXPECT_TRUE(typed.count(t[1])) << "no TYPE before " << line;
    } else {
      ADD_FAILURE() << "not Prometheus text: \"" << line << "\"";
    }
  }
  EXPECT_GT(samples, 5);
  EXPECT_NE(body.find("capsule_vm_state{chassis=\"host-a\",vm=\"vm1\",state=\"running\"} 1\n"), std::string::npos)
      << body;
  EXPECT_NE(body.find("capsule_vm_reserved_utilization{chassis=\"host-a\",vm=\"vm1\"} 0.2\n"), std::string::npos)
      << body;
  EXPECT_EQ(http_get(port, "/other").rfind("HTTP/1.0 404", 0), 0u);
}

TEST_F(CapsuledTest, SigtermRestoresThreadsAndSaysStopped) {
  FakeVm vm(2);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "set-rsv", "vm1", "2ms", "20ms"});
  for (pid_t tid : vm.vcpu_tids()) ASSERT_TRUE(params(tid).is_deadline());
  const int rc = agent_->stop();
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << rc;
  for (pid_t tid : vm.vcpu_tids()) EXPECT_FALSE(params(tid).is_deadline()) << tid;
  EXPECT_EQ(status("vm1", "state"), "stopped");
  EXPECT_EQ(testing::trim(ok({"get", "Host", "host-a", "status:state"})), "stopped");
  EXPECT_NE(::access(agent_->ctl_socket().c_str(), F_OK), 0) << "control socket left behind";
}

TEST_F(CapsuledTest, PartitionedModePinsIntoACpusetAndSigtermRemovesIt) {
  int cpu = -1;
  if (auto why = partition_unavailable(&cpu); !why.empty()) GTEST_SKIP() << why;
  const auto fs = rsv::CpusetFs::detect();
  const std::string part = fs.path(rsv::PartitionSet::partition_name(cpu));
  const std::string root_lb = *rsv::read_text_file(fs.path("/") + "/cpuset.sched_load_balance");

  FakeVm vm(1);
  const pid_t tid = vm.vcpu_tids().at(0);
  const auto before = *rsv::ThreadSnapshot::capture(tid, fs);
  ok({"set", "Host", "host-a", "admission_mode=partitioned", "capsule_cpus=\"" + std::to_string(cpu) + "\""});
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "vcpu_runtime_us=1000", "period_us=20000"});
  ASSERT_EQ(status("vm1", "state"), "running") << status("vm1", "reason");
  EXPECT_EQ(status("vm1", "placement"), "partitioned: vcpu0:cpu" + std::to_string(cpu));
  EXPECT_TRUE(has_deadline(tid, 1ms, 20ms));
  EXPECT_EQ(*fs.thread_cpuset(tid), rsv::PartitionSet::partition_name(cpu));
  auto now = *rsv::ThreadSnapshot::capture(tid, fs);
  EXPECT_EQ(rsv::affinity_cpus(now.affinity), std::vector<int>{cpu});

  const int rc = agent_->stop();
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << rc;
  now = *rsv::ThreadSnapshot::capture(tid, fs);
  EXPECT_EQ(now.sched.policy, before.sched.policy);
  EXPECT_EQ(now.cpuset, before.cpuset);
  EXPECT_EQ(rsv::affinity_cpus(now.affinity), rsv::affinity_cpus(before.affinity));
  EXPECT_NE(::access(part.c_str(), F_OK), 0) << part << " left behind";
  EXPECT_NE(::access(fs.path("/capsule-system").c_str(), F_OK), 0) << "capsule-system left behind";
  EXPECT_EQ(*rsv::read_text_file(fs.path("/") + "/cpuset.sched_load_balance"), root_lb);
}

TEST_F(CapsuledTest, ExitedVmIsReleasedAndReported) {
  auto vm = std::make_unique<FakeVm>(1);
  ok({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm->pid()), "vcpu_runtime_us=1000", "period_us=10000"});
  vm.reset();  // the VM process exits
  // While it exits its threads vanish first ("no vCPU threads"), then the
  // process ("does not exist"); either way nothing stays reserved.
  EXPECT_TRUE(testkit::wait_until([&] {
    return status("vm1", "state") == "rejected" && status("vm1", "reason").find("does not exist") != std::string::npos;
  }, 3s)) << status("vm1", "reason");
  EXPECT_EQ(status("vm1", "threads"), "");
}

}  // namespace
}  // namespace capsule
