// scripts/capsule-service: start creates the database and runs ovsdb-server
// and capsuled, status reports them, stop undoes everything it started.
#include <signal.h>

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>

#include <gtest/gtest.h>

#include "capsule/harness.h"
#include "capsule/testkit.h"

namespace capsule {
namespace {

using namespace std::chrono_literals;

int pid_in(const std::string& file) {
  std::ifstream f(file);
  int pid = 0;
  f >> pid;
  return pid;
}

std::string comm_of(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(f, comm);
  return comm;
}

TEST(CapsuleService, StartStatusStop) {
  harness::TempDir dir("capsule-service-test");
  const std::string script = std::string(CAPSULE_SOURCE_DIR) + "/scripts/capsule-service";
  const std::string bindir = harness::capsuled_path().substr(0, harness::capsuled_path().rfind('/'));
  auto svc = [&](const std::string& cmd) {
    return harness::run({"/bin/bash", script, cmd, "--rundir", dir.path(), "--chassis", "svc-test", "--metrics-port",
                         "0", "--bindir", bindir});
  };
  // Whatever fails below, stop what start began (ovsdb-server included).
  struct StopAtEnd {
    std::function<void()> fn;
    ~StopAtEnd() { fn(); }
  } stop_at_end{[&] { svc("stop"); }};
  auto r = svc("status");
  EXPECT_EQ(r.rc, 3) << r.out;

  r = svc("start");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("Creating empty database"), std::string::npos) << r.out;
  const int ovsdb = pid_in(dir.file("ovsdb-server.pid")), agent = pid_in(dir.file("capsuled.pid"));
  ASSERT_GT(ovsdb, 0);
  ASSERT_GT(agent, 0);
  EXPECT_EQ(::kill(ovsdb, 0), 0);
  EXPECT_EQ(::kill(agent, 0), 0);

  r = svc("status");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("capsuled is running with pid " + std::to_string(agent)), std::string::npos) << r.out;

  // The stack answers: capsule-ctl on its socket, ovs-appctl on capsuled.
  auto show = harness::run({harness::capsule_ctl_path(), "--db=unix:" + dir.file("db.sock"), "show"});
  EXPECT_EQ(show.rc, 0) << show.err;
  EXPECT_NE(show.out.find("Host \"svc-test\""), std::string::npos) << show.out;
  auto appctl = harness::run({harness::find_program("ovs-appctl"), "-t", dir.file("capsuled.ctl"), "capsule/show"});
  EXPECT_EQ(appctl.rc, 0) << appctl.err;
  EXPECT_NE(appctl.out.find("on chassis svc-test"), std::string::npos) << appctl.out;

  // A second start is harmless.
  r = svc("start");
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("already running"), std::string::npos) << r.out;

  r = svc("stop");
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(::kill(agent, 0), 0) << "capsuled still runs";
  EXPECT_NE(::kill(ovsdb, 0), 0) << "ovsdb-server still runs";
  r = svc("status");
  EXPECT_EQ(r.rc, 3) << r.out;
  // The database survives a stop (state dir), the sockets do not.
  EXPECT_EQ(::access(dir.file("capsule.db").c_str(), F_OK), 0);
  EXPECT_NE(::access(dir.file("db.sock").c_str(), F_OK), 0);
  EXPECT_NE(::access(dir.file("capsuled.ctl").c_str(), F_OK), 0);
  // After a failed stop nothing may outlive the test: end what start began
  // (checked by name, so a recycled pid is never hit).
  if (comm_of(agent) == "capsuled") ::kill(agent, SIGTERM);
  if (comm_of(ovsdb) == "ovsdb-server") ::kill(ovsdb, SIGTERM);
}

// capsuled's datapath daemon outlives a crash of capsuled (it keeps the VMs'
// traffic flowing); `stop` ends it all the same, so nothing is left running.
TEST(CapsuleService, StopEndsTheDatapathDaemonACrashedAgentLeft) {
  harness::TempDir dir("capsule-service-dpd");
  const std::string script = std::string(CAPSULE_SOURCE_DIR) + "/scripts/capsule-service";
  const std::string bindir = harness::capsuled_path().substr(0, harness::capsuled_path().rfind('/'));
  auto svc = [&](const std::string& cmd) {
    return harness::run({"/bin/bash", script, cmd, "--rundir", dir.path(), "--chassis", "svc-dpd", "--metrics-port",
                         "off", "--bindir", bindir});
  };
  auto r = svc("start");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  const int agent = pid_in(dir.file("capsuled.pid"));
  int daemon = 0;
  ASSERT_TRUE(testkit::wait_until([&] { return (daemon = pid_in(dir.file("datapathd.pid"))) > 0; }, 20s))
      << harness::run({"/bin/cat", dir.file("capsuled.log")}).out;
  EXPECT_EQ(comm_of(daemon), "capsule-datapat");  // the kernel's 15 characters
  ::kill(agent, SIGKILL);
  ASSERT_TRUE(testkit::wait_until([&] { return !harness::process_alive(agent); }, 5s));
  EXPECT_TRUE(harness::process_alive(daemon)) << "the datapath died with capsuled";

  r = svc("stop");
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_FALSE(harness::process_alive(daemon)) << r.out;
  EXPECT_NE(::access(dir.file("datapathd.sock").c_str(), F_OK), 0);
  // Nothing may outlive the test (checked by name: a recycled pid is never hit).
  for (int pid : {agent, pid_in(dir.file("capsuled.pid")), daemon, pid_in(dir.file("ovsdb-server.pid"))})
    if (harness::process_alive(pid) && (comm_of(pid) == "capsuled" || comm_of(pid) == "capsule-datapat" ||
                                         comm_of(pid) == "ovsdb-server"))
      harness::end_process(pid);
}

// The monitor: capsuled killed by SIGKILL is started again at once, and the
// new one registers itself (its own pid in the Host row); a second start
// while the killed one is still being reaped does not mistake it for alive;
// stop ends the monitor and capsuled.
TEST(CapsuleService, AMonitorRestartsACrashedCapsuled) {
  harness::TempDir dir("capsule-service-test");
  const std::string script = std::string(CAPSULE_SOURCE_DIR) + "/scripts/capsule-service";
  const std::string bindir = harness::capsuled_path().substr(0, harness::capsuled_path().rfind('/'));
  auto svc = [&](const std::string& cmd) {
    return harness::run({"/bin/bash", script, cmd, "--rundir", dir.path(), "--chassis", "svc-mon", "--metrics-port",
                         "0", "--bindir", bindir});
  };
  // Whatever fails below, stop what start began (ovsdb-server included).
  struct StopAtEnd {
    std::function<void()> fn;
    ~StopAtEnd() { fn(); }
  } stop_at_end{[&] { svc("stop"); }};
  auto r = svc("start");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  const int monitor = pid_in(dir.file("capsuled-monitor.pid")), first = pid_in(dir.file("capsuled.pid"));
  const int ovsdb = pid_in(dir.file("ovsdb-server.pid"));
  ASSERT_GT(monitor, 0);
  ASSERT_GT(first, 0);
  auto host_pid = [&] {
    auto g = harness::run({harness::capsule_ctl_path(), "--db=unix:" + dir.file("db.sock"), "get", "Host", "svc-mon",
                           "status:pid"});
    std::string v = g.out;
    std::erase(v, '"');
    std::erase(v, '\n');
    return v;
  };
  EXPECT_EQ(host_pid(), std::to_string(first));

  const auto killed = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  int second = 0;
  EXPECT_TRUE(testkit::wait_until([&] {
    second = pid_in(dir.file("capsuled.pid"));
    return second > 0 && second != first && host_pid() == std::to_string(second);
  }, 10s)) << "no new capsuled registered; monitor log:\n"
           << harness::run({"/bin/cat", dir.file("capsuled-monitor.log")}).out;
  const double back_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_LT(back_s, 5.0) << "the monitor took " << back_s << " s";
  EXPECT_NE(harness::run({"/bin/cat", dir.file("capsuled-monitor.log")}).out.find("died (signal 9): restarting"),
            std::string::npos);

  r = svc("start");  // already running: the monitor says so, nothing new starts
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("monitor is already running"), std::string::npos) << r.out;

  r = svc("stop");
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_TRUE(testkit::wait_until([&] { return ::kill(monitor, 0) != 0 && ::kill(second, 0) != 0; }, 5s))
      << "the monitor or capsuled still runs after stop";
  // Nothing may outlive the test (checked by name, so a recycled pid is never hit).
  if (comm_of(second) == "capsuled") ::kill(second, SIGKILL);
  if (comm_of(monitor) == "capsule-service" || comm_of(monitor) == "bash") ::kill(monitor, SIGKILL);
  if (comm_of(ovsdb) == "ovsdb-server") ::kill(ovsdb, SIGTERM);
}

}  // namespace
}  // namespace capsule

namespace capsule {
namespace {

// --ovs-ctl: the Capsule database joins OVS's own running ovsdb-server
// (ovsdb-server/add-db), and stop takes it out again.
TEST(CapsuleService, AddsTheDatabaseToOvsOwnServer) {
  const std::string vswitch = "/usr/share/openvswitch/vswitch.ovsschema";
  if (::access(vswitch.c_str(), F_OK) != 0) GTEST_SKIP() << "no " << vswitch;
  harness::TempDir dir("capsule-service-ovs");
  ASSERT_EQ(harness::run({harness::find_program("ovsdb-tool"), "create", dir.file("ovs.db"), vswitch}).rc, 0);
  auto ovs = testkit::ChildProcess::spawn({harness::find_program("ovsdb-server"), dir.file("ovs.db"), "-vconsole:off",
                                           "--remote=punix:" + dir.file("ovs.sock"),
                                           "--unixctl=" + dir.file("ovs.ctl"), "--no-chdir"},
                                          "/dev/null");
  ASSERT_TRUE(testkit::wait_until([&] { return ::access(dir.file("ovs.ctl").c_str(), F_OK) == 0; }, 10s));
  const std::string script = std::string(CAPSULE_SOURCE_DIR) + "/scripts/capsule-service";
  const std::string bindir = harness::capsuled_path().substr(0, harness::capsuled_path().rfind('/'));
  auto svc = [&](const std::string& cmd) {
    return harness::run({"/bin/bash", script, cmd, "--rundir", dir.path(), "--chassis", "svc-ovs", "--metrics-port",
                         "off", "--bindir", bindir, "--ovs-ctl", dir.file("ovs.ctl"), "--ovs-remote",
                         "unix:" + dir.file("ovs.sock")});
  };
  auto list_dbs = [&] {
    return harness::run({harness::find_program("ovs-appctl"), "-t", dir.file("ovs.ctl"), "ovsdb-server/list-dbs"}).out;
  };
  auto r = svc("start");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(list_dbs().find("Capsule\n"), std::string::npos) << list_dbs();
  EXPECT_NE(list_dbs().find("Open_vSwitch\n"), std::string::npos);
  EXPECT_EQ(svc("status").rc, 0);
  auto show = harness::run({harness::capsule_ctl_path(), "--db=unix:" + dir.file("ovs.sock"), "show"});
  EXPECT_NE(show.out.find("Host \"svc-ovs\""), std::string::npos) << show.out << show.err;
  const int agent = pid_in(dir.file("capsuled.pid"));

  r = svc("stop");
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_EQ(list_dbs().find("Capsule\n"), std::string::npos) << list_dbs();
  EXPECT_NE(list_dbs().find("Open_vSwitch\n"), std::string::npos) << "OVS's own database must stay";
  EXPECT_TRUE(ovs->running()) << "OVS's ovsdb-server must keep running";
  EXPECT_EQ(svc("status").rc, 3);
  if (comm_of(agent) == "capsuled") ::kill(agent, SIGTERM);
}

}  // namespace
}  // namespace capsule
