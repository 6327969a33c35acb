// One Capsule database for many hosts (docs/scale.md):
//  - each capsuled monitors only its own chassis' rows, ports, QoS and
//    calibration included: a change for host A never wakes host B's agent;
//  - capsuled on a 3-member Raft cluster (real ovsdb-servers on loopback)
//    keeps applying while a follower, then the leader, is killed and
//    restarted, and a change made during the failover is applied once.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <regex>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "capsule/harness.h"
#include "control_plane_fixture.h"
#include "fake_vm.h"
#include "capsule/testkit.h"

namespace capsule {
namespace {

using namespace std::chrono_literals;
using testkit::count_of;

// A number from capsuled's capsule/db-show ("monitor updates received: N").
long db_show_number(const harness::Capsuled& agent, const std::string& label) {
  auto r = harness::appctl(agent, {"capsule/db-show"});
  std::smatch m;
  if (r.rc != 0 || !std::regex_search(r.out, m, std::regex(label + R"(:? (\d+))"))) return -1;
  return std::stol(m[1]);
}

// How often capsuled's log says a reservation was put in force or changed.
int applies_logged(const harness::Capsuled& agent, const std::string& vm) {
  const std::string log = testkit::read_file(agent.log_file());
  return count_of(log, "VM " + vm + ": reserved: ") + count_of(log, "VM " + vm + ": reservation changed: ");
}

std::string trim(const harness::CmdResult& r) { return testing::trim(r.out); }

// Two hosts on one (standalone) database.
TEST(ConditionalMonitoring, ChangesForHostANeverWakeHostB) {
  harness::TempDir dir("capsule-scale-cond");
  ASSERT_FALSE(dir.path().empty());
  auto db = harness::Ovsdb::start(dir.path());
  ASSERT_TRUE(db.ok()) << db.error().message;
  const std::string dir_a = dir.file("a"), dir_b = dir.file("b");
  ASSERT_EQ(::mkdir(dir_a.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(dir_b.c_str(), 0755), 0);
  auto a = harness::Capsuled::start(**db, dir_a, "host-a", {"--stats-interval=200"});
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto b = harness::Capsuled::start(**db, dir_b, "host-b", {"--stats-interval=200"});
  ASSERT_TRUE(b.ok()) << b.error().message;
  auto ctl = [&](const std::vector<std::string>& args) {
    auto r = harness::ctl(**db, args);
    EXPECT_EQ(r.rc, 0) << r.err;
    return r;
  };

  FakeVm vm_a(1), vm_b(1);
  for (auto [host, vm, pid] : {std::tuple{"host-a", "vma", vm_a.pid()}, std::tuple{"host-b", "vmb", vm_b.pid()}}) {
    const std::string h = host, v = vm;
    ctl({"--wait", "--chassis=" + h, "add-vm", v, "pid=" + std::to_string(pid), "vcpu_runtime_us=1000",
         "period_us=20000", "--", "add-port", v, v + "-p0", dir.file(v + ".sock"), "mac=\"02:00:00:00:00:0" +
         std::string(h == "host-a" ? "1" : "2") + "\"", "--", "set-qos", v + "-p0", "egress-policer", "cir=125000",
         "cbs=12500"});
  }
  EXPECT_EQ(trim(ctl({"get", "VM", "vmb", "status:state"})), "running");
  // Each agent holds its own rows only.
  const std::string show_a = harness::appctl(**a, {"capsule/db-show"}).out;
  EXPECT_NE(show_a.find("VM 1, Port 1, QoS 1, Calibration 0"), std::string::npos) << show_a;
  const long b_before = db_show_number(**b, "monitor updates received");
  const long a_before = db_show_number(**a, "monitor updates received");
  ASSERT_GE(b_before, 1);

  // Every kind of row host A has: its VM, its port, the port's QoS, a
  // calibration curve on its Host row, and the Host row itself.
  ctl({"--wait", "--chassis=host-a", "set", "VM", "vma", "vcpu_runtime_us=1500"});
  ctl({"--wait", "--chassis=host-a", "set", "Port", "vma-p0", "mac=\"02:00:00:00:00:11\""});
  ctl({"--wait", "--chassis=host-a", "set-qos", "vma-p0", "egress-policer", "cir=250000", "cbs=25000"});
  ctl({"--wait", "--chassis=host-a", "--", "--id=@c", "create", "Calibration", "direction=from_vm", "frame_size=64",
       "period_us=20000", "pps_per_cpu=1000000", "date=\"2026-12-02\"", "--", "add", "Host", "host-a",
       "calibration", "@c"});
  ctl({"--wait", "--chassis=host-a", "set", "Host", "host-a", "other_config:note=scale-test"});
  EXPECT_TRUE(has_deadline(vm_a.vcpu_tids().at(0), 1500us, 20ms));
  const std::string show_a2 = harness::appctl(**a, {"capsule/db-show"}).out;
  EXPECT_NE(show_a2.find("VM 1, Port 1, QoS 1, Calibration 1"), std::string::npos) << show_a2;
  EXPECT_GE(db_show_number(**a, "monitor updates received"), a_before + 5);
  // The port and QoS changes reached A's datapath: the new MAC is in its
  // forwarding table, and its datapath daemon changed the VM twice.
  const std::string fdb_a = harness::appctl(**a, {"capsule/fdb-show"}).out;
  EXPECT_NE(fdb_a.find("02:00:00:00:00:11"), std::string::npos) << fdb_a;
  EXPECT_EQ(count_of(testkit::read_file((*a)->datapathd_log()), "VM vma: changed"), 2)
      << testkit::read_file((*a)->datapathd_log());

  // B saw none of it (its own status writes do not wake it either), and
  // its VM is as it was.
  EXPECT_EQ(db_show_number(**b, "monitor updates received"), b_before) << harness::appctl(**b, {"capsule/db-show"}).out;
  EXPECT_TRUE(has_deadline(vm_b.vcpu_tids().at(0), 1000us, 20ms));

  // A change for B does reach B.
  ctl({"--wait", "--chassis=host-b", "set", "VM", "vmb", "vcpu_runtime_us=1200"});
  EXPECT_GT(db_show_number(**b, "monitor updates received"), b_before);
  EXPECT_TRUE(has_deadline(vm_b.vcpu_tids().at(0), 1200us, 20ms));

  // A VM moved from A to B: A releases it, B applies it with its port.
  ctl({"--wait", "--chassis=host-b", "set", "VM", "vma", "chassis=host-b"});
  EXPECT_EQ(applies_logged(**b, "vma"), 1);
  EXPECT_TRUE(has_deadline(vm_a.vcpu_tids().at(0), 1500us, 20ms));
  const std::string show_b = harness::appctl(**b, {"capsule/db-show"}).out;
  EXPECT_NE(show_b.find("VM 2, Port 2, QoS 2"), std::string::npos) << show_b;
  // A learns it on its own update (the --wait above was B's).
  EXPECT_TRUE(testkit::wait_until([&] {
    return testkit::read_file((*a)->log_file()).find("VM vma left the database") != std::string::npos &&
           harness::appctl(**a, {"capsule/db-show"}).out.find("VM 0, Port 0, QoS 0") != std::string::npos;
  }, 10s)) << harness::appctl(**a, {"capsule/db-show"}).out;
  EXPECT_EQ(trim(ctl({"get", "VM", "vma", "status:state"})), "running");
}

// What capsule-ctl held in its IDL when it composed its transaction
// ("transaction") or saw the change applied ("applied"): its debug log.
struct Replicated {
  std::string scope;  // "named rows" or "whole database"
  int host = -1, vm = -1, port = -1, qos = -1, calibration = -1;
};
Replicated replicated(const std::string& log, const std::string& when) {
  static const std::regex line(
      R"((\w+): rows replicated \(([a-z ]+)\): Host (\d+), VM (\d+), Port (\d+), QoS (\d+), Calibration (\d+))");
  Replicated r;
  for (std::sregex_iterator it(log.begin(), log.end(), line), end; it != end; ++it) {
    const std::smatch& m = *it;
    if (m[1] != when) continue;
    r = {m[2], std::stoi(m[3]), std::stoi(m[4]), std::stoi(m[5]), std::stoi(m[6]), std::stoi(m[7])};
  }
  return r;
}

// capsule-ctl's own commands monitor only the rows they name (as ovs-vsctl
// asks only for the columns it uses): on a database where another host has
// many VMs, ports and policers, a change to one VM pulls that VM (and, with
// --wait, its host's VMs), never the other host's rows. Each command still
// does what it says; generic commands still see everything.
TEST(ConditionalMonitoring, CapsuleCtlPullsOnlyTheRowsItsCommandsName) {
  harness::TempDir dir("capsule-scale-ctlcond");
  ASSERT_FALSE(dir.path().empty());
  auto db = harness::Ovsdb::start(dir.path());
  ASSERT_TRUE(db.ok()) << db.error().message;
  const std::string dir_a = dir.file("a");
  ASSERT_EQ(::mkdir(dir_a.c_str(), 0755), 0);
  auto a = harness::Capsuled::start(**db, dir_a, "host-a", {"--stats-interval=200"});
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto ctl = [&](const std::vector<std::string>& args, int rc = 0) {
    std::vector<std::string> argv{"-vcapsule_ctl:console:dbg"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = harness::ctl(**db, argv);
    EXPECT_EQ(r.rc, rc) << r.err;
    return r;
  };

  FakeVm vm_a(1);
  ctl({"--wait", "--chassis=host-a", "add-vm", "vma", "pid=" + std::to_string(vm_a.pid()), "vcpu_runtime_us=1000",
       "period_us=20000"});
  // host-b: a Host row and 40 VMs with a port and a policer each (no agent).
  constexpr int kVmsOnB = 40;
  ctl({"create", "Host", "chassis=host-b"});
  std::vector<std::string> fill{"--chassis=host-b"};
  for (int i = 0; i < kVmsOnB; ++i) {
    const std::string vm = "vmb" + std::to_string(i);
    for (const auto& w : std::vector<std::string>{"add-vm", vm, "--", "add-port", vm, vm + "-p0",
                                                   dir.file(vm + ".sock"), "--", "set-qos", vm + "-p0",
                                                   "egress-policer", "cir=125000", "cbs=12500", "--"})
      fill.push_back(w);
  }
  fill.pop_back();
  ctl(fill);
  ASSERT_EQ(count_of(ctl({"--bare", "--columns=name", "list", "Port"}).out, "-p0"), kVmsOnB);

  // A reservation change with --wait: host-a's Host row and its one VM.
  auto r = ctl({"--wait", "--chassis=host-a", "set-rsv", "vma", "1500us", "20ms"});
  EXPECT_TRUE(has_deadline(vm_a.vcpu_tids().at(0), 1500us, 20ms));
  for (const char* when : {"transaction", "applied"}) {
    const Replicated rows = replicated(r.err, when);
    EXPECT_EQ(rows.scope, "named rows") << when << "\n" << r.err;
    EXPECT_EQ(rows.host, 1) << when;
    EXPECT_EQ(rows.vm, 1) << when;
    EXPECT_EQ(rows.port, 0) << when;
    EXPECT_EQ(rows.qos, 0) << when;
    EXPECT_EQ(rows.calibration, 0) << when;
  }

  // A policer on one of host-b's ports: that port only (the old QoS row
  // goes with its last reference, capsule-ctl needs not read it).
  r = ctl({"--chassis=host-b", "set-qos", "vmb7-p0", "egress-policer", "cir=250000", "cbs=25000"});
  Replicated rows = replicated(r.err, "transaction");
  EXPECT_EQ(rows.scope, "named rows") << r.err;
  EXPECT_EQ(rows.host, 1);
  EXPECT_EQ(rows.vm, 0);
  EXPECT_EQ(rows.port, 1);
  EXPECT_EQ(rows.qos, 0);
  const std::string qos = trim(ctl({"get", "Port", "vmb7-p0", "qos"}));
  EXPECT_EQ(trim(ctl({"get", "QoS", qos, "other_config:cir"})), "250000");
  EXPECT_EQ(count_of(ctl({"--bare", "--columns=type", "list", "QoS"}).out, "egress-policer"), kVmsOnB);

  // del-port without its VM: the port, then (one more round trip) the VM
  // that owns it, which loses it.
  r = ctl({"del-port", "vmb9-p0"});
  rows = replicated(r.err, "transaction");
  EXPECT_EQ(rows.scope, "named rows") << r.err;
  EXPECT_EQ(rows.vm, 1);
  EXPECT_EQ(rows.port, 1);
  EXPECT_EQ(trim(ctl({"get", "VM", "vmb9", "ports"})), "[]");
  EXPECT_EQ(trim(ctl({"--bare", "--columns=name", "find", "Port", "name=vmb9-p0"})), "");

  // A port that another VM owns: refused with the owner's name, which
  // capsule-ctl learns by asking for that VM alone.
  r = ctl({"add-port", "vmb3", "vmb5-p0", dir.file("x.sock")}, 1);
  EXPECT_NE(r.err.find("cannot create port vmb5-p0 because it already exists on VM vmb5"), std::string::npos)
      << r.err;
  rows = replicated(r.err, "transaction");
  EXPECT_EQ(rows.vm, 2) << r.err;
  EXPECT_EQ(rows.port, 1);

  // del-vm: the VM only; its port goes with it.
  r = ctl({"del-vm", "vmb11"});
  rows = replicated(r.err, "transaction");
  EXPECT_EQ(rows.vm, 1) << r.err;
  EXPECT_EQ(rows.port, 0);
  EXPECT_EQ(trim(ctl({"--bare", "--columns=name", "find", "Port", "name=vmb11-p0"})), "");

  // A generic command reads whole tables, but only the ones it uses (as
  // ovs-vsctl): every VM row, no Host, Port or QoS row.
  r = ctl({"--bare", "--columns=name", "list", "VM"});
  rows = replicated(r.err, "transaction");
  EXPECT_EQ(rows.scope, "whole tables") << r.err;
  EXPECT_EQ(rows.vm, 1 + kVmsOnB - 1);
  EXPECT_EQ(count_of(r.out, "vm"), 1 + kVmsOnB - 1);
  EXPECT_EQ(rows.host, 0);
  EXPECT_EQ(rows.port, 0);
  EXPECT_EQ(rows.qos, 0);
  // show reads everything.
  r = ctl({"show"});
  rows = replicated(r.err, "transaction");
  EXPECT_EQ(rows.host, 2) << r.err;
  EXPECT_EQ(rows.port, kVmsOnB - 2);
  EXPECT_EQ(rows.qos, kVmsOnB - 2);
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto c = harness::OvsdbCluster::start(dir_.path(), 3);
    ASSERT_TRUE(c.ok()) << c.error().message;
    cluster_ = std::move(*c);
    auto a = harness::Capsuled::start(cluster_->remotes(), dir_.path(), "host-a", {"--stats-interval=200"});
    ASSERT_TRUE(a.ok()) << a.error().message;
    agent_ = std::move(*a);
  }
  void TearDown() override {
    if (HasFailure() && agent_) std::cerr << "---- capsuled log ----\n" << testkit::read_file(agent_->log_file());
  }
  harness::CmdResult ctl(const std::vector<std::string>& args) {
    return harness::ctl(cluster_->remotes(), args, std::chrono::seconds(30));
  }
  // The member that leads once there is one (an election may be on).
  int leader() {
    int l = -1;
    EXPECT_TRUE(testkit::wait_until([&] { return (l = cluster_->leader()) >= 0; }, 30s)) << "no leader";
    return l;
  }
  // Sets vm1's budget through the cluster: applied to `vcpu`, and the n-th
  // reservation the agent logged for it (once each, never twice).
  void set_runtime_applied(pid_t vcpu, int runtime_us, int n) {
    auto r = ctl({"--wait", "set", "VM", "vm1", "vcpu_runtime_us=" + std::to_string(runtime_us)});
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_TRUE(has_deadline(vcpu, std::chrono::microseconds(runtime_us), 20ms));
    EXPECT_EQ(applies_logged(*agent_, "vm1"), n);
  }

  harness::TempDir dir_{"capsule-scale-cluster"};
  std::unique_ptr<harness::OvsdbCluster> cluster_;
  std::unique_ptr<harness::Capsuled> agent_;
};

TEST_F(ClusterTest, AgentKeepsApplyingThroughFollowerAndLeaderFailover) {
  FakeVm vm(1);
  const pid_t vcpu = vm.vcpu_tids().at(0);
  auto r = ctl({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "vcpu_runtime_us=1000",
                "period_us=20000"});
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_TRUE(has_deadline(vcpu, 1000us, 20ms));
  ASSERT_EQ(applies_logged(*agent_, "vm1"), 1);

  // A follower dies: writes and the agent go on.
  const int follower = (leader() + 1) % 3;
  cluster_->kill(follower);
  ASSERT_NO_FATAL_FAILURE(set_runtime_applied(vcpu, 1100, 2));
  ASSERT_TRUE(cluster_->start_again(follower));
  ASSERT_TRUE(cluster_->wait_healthy());
  ASSERT_NO_FATAL_FAILURE(set_runtime_applied(vcpu, 1200, 3));

  // The leader dies. The agent stays on any member in the cluster (not
  // --leader-only): if it was on the leader it reconnects to another one,
  // else it keeps its session; either way what it holds stays, the change
  // is written while the cluster elects a new leader (capsule-ctl tries the
  // members until one leads), and the agent applies it once.
  const int old_leader = leader();
  ASSERT_GE(old_leader, 0);
  cluster_->kill(old_leader);
  EXPECT_TRUE(has_deadline(vcpu, 1200us, 20ms));
  ASSERT_NO_FATAL_FAILURE(set_runtime_applied(vcpu, 1300, 4));

  // The old leader comes back as a follower; nothing is applied again.
  ASSERT_TRUE(cluster_->start_again(old_leader));
  ASSERT_TRUE(cluster_->wait_healthy());
  ASSERT_NO_FATAL_FAILURE(set_runtime_applied(vcpu, 1400, 5));
  EXPECT_EQ(testing::trim(ctl({"get", "VM", "vm1", "status:state"}).out), "running");
}

// CPU time (s) a process has used so far, all its threads.
double cpu_seconds(pid_t pid) {
  std::istringstream in(testkit::read_file("/proc/" + std::to_string(pid) + "/stat"));
  std::string field;
  double ticks = 0;
  // utime and stime are fields 14 and 15 (comm, field 2, has no blank here).
  for (int i = 1; i <= 15 && in >> field; ++i)
    if (i >= 14) ticks += std::stod(field);
  return ticks / double(::sysconf(_SC_CLK_TCK));
}

// While the cluster has no leader, an agent stays quiet: its status writes
// (every 200 ms here) are coalesced into one, sent at most once per session
// and, when the session is not ready for them, tried again after a growing
// delay instead of at once (100 agents retrying at once starved a 2-core
// cluster through six elections, docs/scale.md). A change made meanwhile
// is applied once when a leader is back, and its status is written.
TEST_F(ClusterTest, AgentStaysQuietWhileTheClusterHasNoLeaderThenAppliesTheChangeOnce) {
  FakeVm vm(1);
  const pid_t vcpu = vm.vcpu_tids().at(0);
  auto r = ctl({"--wait", "add-vm", "vm1", "pid=" + std::to_string(vm.pid()), "vcpu_runtime_us=1000",
                "period_us=20000"});
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_EQ(applies_logged(*agent_, "vm1"), 1);

  // Two of the three members die: no majority, so no leader for as long as
  // they stay down. The survivor keeps starting elections it cannot win.
  const int survivor = (leader() + 1) % 3;
  const long sent0 = db_show_number(*agent_, "status transactions sent");
  const long again0 = db_show_number(*agent_, "sent again");
  ASSERT_GE(sent0, 1);
  const double cpu0 = cpu_seconds(agent_->pid());
  const auto t0 = std::chrono::steady_clock::now();
  for (int m = 0; m < 3; ++m)
    if (m != survivor) cluster_->kill(m);
  const long term0 = cluster_->term();
  // A change made while there is no leader: capsule-ctl keeps trying the
  // members until one leads.
  // (60 s: the agent, too, finds the cluster again only at its next
  // round over the members, up to 8 s apart after a long outage.)
  auto change = std::async(std::launch::async, [&] {
    return harness::ctl(cluster_->remotes(), {"--wait", "set", "VM", "vm1", "vcpu_runtime_us=1300"}, 60s);
  });
  // Four failed elections (4-8 s with OVS's 1 s timer): after the second the
  // survivor tells its clients it is not connected to its cluster, and the
  // agent's sessions to it end before they can carry a transaction.
  ASSERT_TRUE(testkit::wait_until([&] { return cluster_->term() >= term0 + 4; }, 60s)) << cluster_->term();
  const double window_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const long sent = db_show_number(*agent_, "status transactions sent") - sent0;
  const long again = db_show_number(*agent_, "sent again") - again0;
  const double cpu = cpu_seconds(agent_->pid()) - cpu0;
  // At most one status in flight: a status goes out again only after the
  // one before it was refused (or its session ended), and a refusal waits
  // 100 ms, then twice as long each time up to 2 s: a few a second at first,
  // then one every 1-2 s (at once, the agent tried thousands of times). How
  // many of those the survivor takes before it says it lost its cluster
  // depends on its elections' timing: 1 to 4 sends were seen, so the count
  // of sends is held to the refusals, not to a number.
  EXPECT_LE(sent, again + 1) << window_s << " s without a leader";
  EXPECT_LE(again, 4 + 2 * long(window_s)) << window_s << " s without a leader";
  EXPECT_LT(cpu, 0.2 * window_s) << window_s << " s without a leader";
  EXPECT_TRUE(has_deadline(vcpu, 1000us, 20ms));  // what is in force stays

  // A leader again: the change is committed, applied once, and its status
  // (cur_cfg) written, which ends capsule-ctl's --wait.
  for (int m = 0; m < 3; ++m)
    if (m != survivor) {
      ASSERT_TRUE(cluster_->start_again(m));
    }
  r = change.get();
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has_deadline(vcpu, 1300us, 20ms));
  EXPECT_EQ(applies_logged(*agent_, "vm1"), 2);
  ASSERT_TRUE(cluster_->wait_healthy());
  EXPECT_EQ(testing::trim(ctl({"get", "VM", "vm1", "status:state"}).out), "running");
}

// A list of members none of which answers (a typo, a cluster down): without
// --timeout, capsule-ctl gives up after a while and says so, instead of
// waiting for ever.
TEST(ClusterCtl, AListWithNoLeaderFailsWithTheReason) {
  const int p1 = harness::free_tcp_port(), p2 = harness::free_tcp_port();
  const std::string remotes = "tcp:127.0.0.1:" + std::to_string(p1) + ",tcp:127.0.0.1:" + std::to_string(p2);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = harness::run({harness::capsule_ctl_path(), "--db=" + remotes, "show"}, 60s);
  EXPECT_EQ(r.rc, 1) << r.out << r.err;
  EXPECT_NE(r.err.find(remotes + ": no leader among these members within 15 s"), std::string::npos) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 40s);
}

}  // namespace
}  // namespace capsule
