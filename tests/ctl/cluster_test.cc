// One Capsule database for many hosts (docs/scale.md):
//  - each capsuled monitors only its own chassis' rows, ports, QoS and
//    calibration included: a change for host A never wakes host B's agent;
//  - capsuled on a 3-member Raft cluster (real ovsdb-servers on loopback)
//    keeps applying while a follower, then the leader, is killed and
//    restarted, and a change made during the failover is applied once.
#include <sys/stat.h>

#include <fstream>
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

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A number from capsuled's capsule/db-show ("monitor updates received: N").
long db_show_number(const harness::Capsuled& agent, const std::string& label) {
  auto r = harness::appctl(agent, {"capsule/db-show"});
  std::smatch m;
  if (r.rc != 0 || !std::regex_search(r.out, m, std::regex(label + R"(:? (\d+))"))) return -1;
  return std::stol(m[1]);
}

// How often capsuled's log says a reservation was put in force or changed.
int applies_logged(const harness::Capsuled& agent, const std::string& vm) {
  const std::string log = slurp(agent.log_file());
  int n = 0;
  for (const std::string& what : {"VM " + vm + ": reserved: ", "VM " + vm + ": reservation changed: "})
    for (std::size_t at = 0; (at = log.find(what, at)) != std::string::npos; at += what.size()) ++n;
  return n;
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
  EXPECT_TRUE(testkit::wait_until([&] { return has_deadline(vm_a.vcpu_tids().at(0), 1500us, 20ms); }, 5s));
  const std::string show_b = harness::appctl(**b, {"capsule/db-show"}).out;
  EXPECT_NE(show_b.find("VM 2, Port 2, QoS 2"), std::string::npos) << show_b;
  const std::string show_a3 = harness::appctl(**a, {"capsule/db-show"}).out;
  EXPECT_NE(show_a3.find("VM 0, Port 0, QoS 0"), std::string::npos) << show_a3;
  EXPECT_EQ(trim(ctl({"get", "VM", "vma", "status:state"})), "running");
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
    if (HasFailure() && agent_) std::cerr << "---- capsuled log ----\n" << slurp(agent_->log_file());
  }
  harness::CmdResult ctl(const std::vector<std::string>& args) {
    return harness::ctl(cluster_->remotes(), args, std::chrono::seconds(30));
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
  const int leader = cluster_->leader();
  ASSERT_GE(leader, 0);
  const int follower = (leader + 1) % 3;
  cluster_->kill(follower);
  r = ctl({"--wait", "set", "VM", "vm1", "vcpu_runtime_us=1100"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has_deadline(vcpu, 1100us, 20ms));
  ASSERT_TRUE(cluster_->start_again(follower));
  ASSERT_TRUE(cluster_->wait_healthy());
  r = ctl({"--wait", "set", "VM", "vm1", "vcpu_runtime_us=1200"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has_deadline(vcpu, 1200us, 20ms));
  EXPECT_EQ(applies_logged(*agent_, "vm1"), 3);

  // The leader dies. The change is written while the cluster elects a new
  // one (capsule-ctl tries the members until one leads): the agent follows
  // the new leader, applies it once, and what it held stays meanwhile.
  const int old_leader = cluster_->leader();
  ASSERT_GE(old_leader, 0);
  cluster_->kill(old_leader);
  EXPECT_TRUE(has_deadline(vcpu, 1200us, 20ms));
  r = ctl({"--wait", "set", "VM", "vm1", "vcpu_runtime_us=1300"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has_deadline(vcpu, 1300us, 20ms));
  const int new_leader = cluster_->leader();
  EXPECT_GE(new_leader, 0);
  EXPECT_NE(new_leader, old_leader);
  EXPECT_EQ(applies_logged(*agent_, "vm1"), 4);

  // The old leader comes back as a follower; nothing is applied again.
  ASSERT_TRUE(cluster_->start_again(old_leader));
  ASSERT_TRUE(cluster_->wait_healthy());
  r = ctl({"--wait", "set", "VM", "vm1", "vcpu_runtime_us=1400"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has_deadline(vcpu, 1400us, 20ms));
  EXPECT_EQ(applies_logged(*agent_, "vm1"), 5);
  EXPECT_EQ(testing::trim(ctl({"get", "VM", "vm1", "status:state"}).out), "running");
  EXPECT_EQ(testing::trim(ctl({"get", "Host", "host-a", "cur_cfg"}).out),
            testing::trim(ctl({"get", "Host", "host-a", "next_cfg"}).out));
}

}  // namespace
}  // namespace capsule
