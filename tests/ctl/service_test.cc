// scripts/capsule-service: start creates the database and runs ovsdb-server
// and capsuled, status reports them, stop undoes everything it started.
#include <signal.h>

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "capsule/harness.h"
#include "capsule/testkit.h"
#include "fake_vm.h"

namespace capsule {
namespace {

using namespace std::chrono_literals;

int pid_in(const std::string& file) {
  std::ifstream f(file);
  int pid = 0;
  f >> pid;
  return pid;
}

// A command's output without surrounding blanks and OVSDB's string quotes.
std::string value(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '"')) s.pop_back();
  size_t b = 0;
  while (b < s.size() && (s[b] == ' ' || s[b] == '"')) ++b;
  return s.substr(b);
}

std::string comm_of(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(f, comm);
  return comm;
}

// scripts/capsule-service on a run directory of its own. Whatever a test
// does or fails, the end runs `stop` and then ends anything still running
// from the directory's pidfiles (checked by name, so a recycled pid is
// never hit).
class Service {
 public:
  explicit Service(std::string chassis, std::vector<std::string> options = {"--metrics-port", "0"})
      : dir_("capsule-service-test"), chassis_(std::move(chassis)), options_(std::move(options)) {}
  ~Service() {
    (*this)("stop");
    for (const char* f : {"capsuled-monitor.pid", "capsuled.pid", "datapathd.pid", "ovsdb-server.pid",
                          "ovs/ovs-vswitchd.pid", "ovs/ovsdb-server.pid"}) {
      const int pid = pid_in(file(f));
      const std::string comm = pid > 0 ? comm_of(pid) : "";
      if (comm == "capsuled" || comm == "capsule-datapat" || comm == "ovsdb-server" || comm == "capsule-service" ||
          comm == "ovs-vswitchd-dp")
        harness::end_process(pid);
    }
  }
  // capsule-service CMD with the options; `env` (NAME=VALUE) as systemd sets it.
  harness::CmdResult operator()(const std::string& cmd, const std::vector<std::string>& env = {}) {
    std::vector<std::string> argv{"/usr/bin/env"};
    argv.insert(argv.end(), env.begin(), env.end());
    const std::string bindir = harness::capsuled_path().substr(0, harness::capsuled_path().rfind('/'));
    argv.insert(argv.end(), {"/bin/bash", std::string(CAPSULE_SOURCE_DIR) + "/scripts/capsule-service", cmd,
                             "--rundir", dir_.path(), "--chassis", chassis_, "--bindir", bindir});
    argv.insert(argv.end(), options_.begin(), options_.end());
    return harness::run(argv);
  }
  std::string file(const std::string& name) const { return dir_.file(name); }
  int pid(const std::string& pidfile) const { return pid_in(file(pidfile)); }

 private:
  harness::TempDir dir_;
  std::string chassis_;
  std::vector<std::string> options_;
};

TEST(CapsuleService, StartStatusStop) {
  Service svc("svc-test");
  auto r = svc("status");
  EXPECT_EQ(r.rc, 3) << r.out;

  r = svc("start");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("Creating empty database"), std::string::npos) << r.out;
  const int ovsdb = svc.pid("ovsdb-server.pid"), agent = svc.pid("capsuled.pid");
  ASSERT_GT(ovsdb, 0);
  ASSERT_GT(agent, 0);
  EXPECT_EQ(::kill(ovsdb, 0), 0);
  EXPECT_EQ(::kill(agent, 0), 0);

  r = svc("status");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("capsuled is running with pid " + std::to_string(agent)), std::string::npos) << r.out;

  // The stack answers: capsule-ctl on its socket, ovs-appctl on capsuled.
  auto show = harness::run({harness::capsule_ctl_path(), "--db=unix:" + svc.file("db.sock"), "show"});
  EXPECT_EQ(show.rc, 0) << show.err;
  EXPECT_NE(show.out.find("Host \"svc-test\""), std::string::npos) << show.out;
  auto appctl = harness::run({harness::find_program("ovs-appctl"), "-t", svc.file("capsuled.ctl"), "capsule/show"});
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
  EXPECT_EQ(::access(svc.file("capsule.db").c_str(), F_OK), 0);
  EXPECT_NE(::access(svc.file("db.sock").c_str(), F_OK), 0);
  EXPECT_NE(::access(svc.file("capsuled.ctl").c_str(), F_OK), 0);
}

// --with-ovs: a fresh host gets OVS-DPDK (its own ovsdb-server and
// ovs-vswitchd-dpdk, a netdev bridge) and capsuled in OVS mode pointed at
// it; a VM added with capsule-ctl lands in OVS as capsule's Interface; stop
// ends exactly what start began and leaves no OVS run directory.
TEST(CapsuleService, WithOvsRunsOvsDpdkAndCapsuledInOvsMode) {
  const std::string vswitchd = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
  if (::access(vswitchd.c_str(), X_OK) != 0) GTEST_SKIP() << vswitchd << " is missing (openvswitch-switch-dpdk)";
  Service svc("svc-ovs-mode", {"--metrics-port", "off", "--with-ovs", "--ovs-bridge", "br-svc", "--ovs-vms", "2"});
  auto r = svc("start");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("capsuled runs on OVS's datapath"), std::string::npos) << r.out;
  const int vswitchd_pid = svc.pid("ovs/ovs-vswitchd.pid"), ovs_db = svc.pid("ovs/ovsdb-server.pid");
  const int agent = svc.pid("capsuled.pid"), capsule_db = svc.pid("ovsdb-server.pid");
  ASSERT_GT(vswitchd_pid, 0);
  ASSERT_GT(ovs_db, 0);
  EXPECT_EQ(comm_of(vswitchd_pid), "ovs-vswitchd-dp");
  EXPECT_NE(ovs_db, capsule_db) << "OVS's database has a server of its own";

  const std::string ovs_remote = "--db=unix:" + svc.file("ovs/db.sock");
  auto vsctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"/usr/bin/env", "OVS_RUNDIR=" + svc.file("ovs"), "/usr/bin/ovs-vsctl", ovs_remote,
                               "--timeout=20"});
    auto res = harness::run(args);
    return value(res.out);
  };
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {harness::capsule_ctl_path(), "--db=unix:" + svc.file("db.sock"), "--timeout=30"});
    return harness::run(args);
  };
  // OVS-DPDK is up with its netdev bridge and the PMD cores asked for.
  EXPECT_EQ(vsctl({"get", "Open_vSwitch", ".", "dpdk_initialized"}), "true");
  EXPECT_EQ(vsctl({"get", "Bridge", "br-svc", "datapath_type"}), "netdev");
  EXPECT_EQ(vsctl({"get", "Open_vSwitch", ".", "other_config:pmd-cpu-mask"}), "0xe");
  // capsuled on OVS's datapath, with the settings that point at it.
  EXPECT_EQ(value(ctl({"get", "Host", "svc-ovs-mode", "status:datapath"}).out), "ovs-dpdk");
  EXPECT_EQ(value(ctl({"get", "Host", "svc-ovs-mode", "other_config:ovs-pmd-cores"}).out), "2-3");

  // A VM added as an operator would: its port is capsule's Interface in OVS.
  FakeVm vm(1);
  r = ctl({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "--", "--net=2ms", "set-rsv", "vm1", "1ms",
           "20ms", "--", "add-port", "vm1", "p0", svc.file("p0.sock")});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_EQ(value(ctl({"get", "VM", "vm1", "status:state"}).out), "running");
  EXPECT_EQ(vsctl({"get", "Interface", "p0", "type"}), "dpdkvhostuserclient");
  EXPECT_EQ(vsctl({"get", "Interface", "p0", "external_ids:capsule-owner"}), "vm1");
  EXPECT_NE(vsctl({"list-ports", "br-svc"}).find("p0"), std::string::npos);

  // A second start changes nothing; status names every process.
  r = svc("start", {});
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("ovs-vswitchd-dpdk is already running (pid " + std::to_string(vswitchd_pid) + ")"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(svc.pid("ovs/ovs-vswitchd.pid"), vswitchd_pid);
  r = svc("status");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("ovs-vswitchd-dpdk is running with pid " + std::to_string(vswitchd_pid)), std::string::npos)
      << r.out;

  // stop: every process start began is gone, OVS's run directory too.
  r = svc("stop");
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  for (int pid : {vswitchd_pid, ovs_db, agent, capsule_db}) EXPECT_NE(::kill(pid, 0), 0) << "pid " << pid << " still runs";
  EXPECT_NE(::access(svc.file("ovs").c_str(), F_OK), 0) << "OVS's run directory is left";
  EXPECT_EQ(svc("status").rc, 3);
}

// capsuled's datapath daemon outlives a crash of capsuled (it keeps the VMs'
// traffic flowing). systemd runs ExecStop after a crash too, before it
// restarts capsuled ($SERVICE_RESULT=signal): that stop leaves the daemon
// for the next capsuled; an operator's `stop` ends it, so nothing is left.
TEST(CapsuleService, StopEndsTheDatapathDaemonACrashedAgentLeft) {
  Service svc("svc-dpd", {"--metrics-port", "off", "--no-monitor"});
  auto r = svc("start");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  const int agent = svc.pid("capsuled.pid");
  int daemon = 0;
  ASSERT_TRUE(testkit::wait_until([&] { return (daemon = svc.pid("datapathd.pid")) > 0; }, 20s))
      << harness::run({"/bin/cat", svc.file("capsuled.log")}).out;
  EXPECT_EQ(comm_of(daemon), "capsule-datapat");  // the kernel's 15 characters
  ::kill(agent, SIGKILL);
  ASSERT_TRUE(testkit::wait_until([&] { return !harness::process_alive(agent); }, 5s));
  EXPECT_TRUE(harness::process_alive(daemon)) << "the datapath died with capsuled";

  r = svc("stop", {"SERVICE_RESULT=signal"});
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_TRUE(harness::process_alive(daemon)) << "systemd's ExecStop after a crash ended the datapath: " << r.out;
  EXPECT_NE(r.out.find("left running for the restarted capsuled"), std::string::npos) << r.out;

  r = svc("stop");
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_FALSE(harness::process_alive(daemon)) << r.out;
  EXPECT_NE(::access(svc.file("datapathd.sock").c_str(), F_OK), 0);
}

// The monitor: capsuled killed by SIGKILL is started again at once, and the
// new one registers itself (its own pid in the Host row); a second start
// while the killed one is still being reaped does not mistake it for alive;
// stop ends the monitor and capsuled.
TEST(CapsuleService, AMonitorRestartsACrashedCapsuled) {
  Service svc("svc-mon");
  auto r = svc("start");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  const int monitor = svc.pid("capsuled-monitor.pid"), first = svc.pid("capsuled.pid");
  ASSERT_GT(monitor, 0);
  ASSERT_GT(first, 0);
  auto host_pid = [&] {
    auto g = harness::run({harness::capsule_ctl_path(), "--db=unix:" + svc.file("db.sock"), "get", "Host", "svc-mon",
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
    second = svc.pid("capsuled.pid");
    return second > 0 && second != first && host_pid() == std::to_string(second);
  }, 10s)) << "no new capsuled registered; monitor log:\n"
           << harness::run({"/bin/cat", svc.file("capsuled-monitor.log")}).out;
  const double back_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_LT(back_s, 5.0) << "the monitor took " << back_s << " s";
  EXPECT_NE(harness::run({"/bin/cat", svc.file("capsuled-monitor.log")}).out.find("died (signal 9): restarting"),
            std::string::npos);

  r = svc("start");  // already running: the monitor says so, nothing new starts
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("monitor is already running"), std::string::npos) << r.out;

  r = svc("stop");
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_TRUE(testkit::wait_until([&] { return !harness::process_alive(monitor) && !harness::process_alive(second); }, 5s))
      << "the monitor or capsuled still runs after stop";
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
  harness::TempDir dir("capsule-service-ovs");  // OVS's own server
  ASSERT_EQ(harness::run({harness::find_program("ovsdb-tool"), "create", dir.file("ovs.db"), vswitch}).rc, 0);
  auto ovs = testkit::ChildProcess::spawn({harness::find_program("ovsdb-server"), dir.file("ovs.db"), "-vconsole:off",
                                           "--remote=punix:" + dir.file("ovs.sock"),
                                           "--unixctl=" + dir.file("ovs.ctl"), "--no-chdir"},
                                          "/dev/null");
  ASSERT_TRUE(testkit::wait_until([&] { return ::access(dir.file("ovs.ctl").c_str(), F_OK) == 0; }, 10s));
  Service svc("svc-ovs", {"--metrics-port", "off", "--ovs-ctl", dir.file("ovs.ctl"), "--ovs-remote",
                          "unix:" + dir.file("ovs.sock")});
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

  r = svc("stop");
  EXPECT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_EQ(list_dbs().find("Capsule\n"), std::string::npos) << list_dbs();
  EXPECT_NE(list_dbs().find("Open_vSwitch\n"), std::string::npos) << "OVS's own database must stay";
  EXPECT_TRUE(ovs->running()) << "OVS's ovsdb-server must keep running";
  EXPECT_EQ(svc("status").rc, 3);
}

}  // namespace
// A clustered Capsule database made by capsule-service, as ovn-ctl makes
// OVN's: member 0 creates it (ovsdb-tool create-cluster), members 1 and 2
// join it (join-cluster), each also listening on a TCP client remote; a
// host that runs only capsuled reaches it through the list of those remotes.
TEST(CapsuleServiceCluster, CreatesJoinsAndRunsClusterMembers) {
  std::vector<std::unique_ptr<Service>> members;
  std::string remotes;
  int first_raft = 0;
  for (int i = 0; i < 3; ++i) {
    const int raft = harness::free_tcp_port(), client = harness::free_tcp_port();
    if (i == 0) first_raft = raft;
    std::vector<std::string> opts{"--no-capsuled", "--db-cluster-local-addr", "tcp:127.0.0.1:" + std::to_string(raft),
                                  "--db-listen", "ptcp:" + std::to_string(client) + ":127.0.0.1"};
    if (i > 0) opts.insert(opts.end(), {"--db-cluster-remote-addr", "tcp:127.0.0.1:" + std::to_string(first_raft)});
    members.push_back(std::make_unique<Service>("member" + std::to_string(i), opts));
    auto r = (*members.back())("start");
    ASSERT_EQ(r.rc, 0) << r.out << r.err;
    EXPECT_NE(r.out.find(i ? "Joining the Capsule cluster" : "Creating a Capsule cluster"), std::string::npos) << r.out;
    EXPECT_EQ(harness::run({harness::find_program("ovsdb-tool"), "db-is-clustered", members.back()->file("capsule.db")}).rc,
              0);
    remotes += (i ? "," : "") + std::string("tcp:127.0.0.1:") + std::to_string(client);
  }
  auto st = (*members[2])("status");
  EXPECT_EQ(st.rc, 0) << st.out << st.err;
  EXPECT_NE(st.out.find("Capsule cluster member: cluster member"), std::string::npos) << st.out;

  Service host("host-c", {"--no-ovsdb-server", "--db", remotes, "--metrics-port", "0"});
  auto r = host("start");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  auto state = harness::ctl(remotes, {"get", "Host", "host-c", "status:state"});
  EXPECT_EQ(state.rc, 0) << state.err;
  EXPECT_NE(state.out.find("running"), std::string::npos) << state.out;
  // Starting a member again leaves its database as it is.
  r = (*members[1])("start");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.find("Joining"), std::string::npos) << r.out;
}

}  // namespace capsule
