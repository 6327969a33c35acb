// OVS datapath mode (Host:datapath_type=ovs, docs/ovs-mode.md) against a
// real ovs-vswitchd-dpdk (tests/ctl/ovs_dpdk_host.h): capsuled writes each
// VM's ports, policers and rx-queue affinity into OVS's database marked
// capsule-owner, puts the OVS PMD thread that serves the VM into the VM's
// capsule, reserves it again when OVS replaces it, and takes away exactly
// what it wrote.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "control_plane_fixture.h"
#include "fake_vm.h"
#include "ovs_dpdk_host.h"

namespace capsule {
namespace {

using namespace std::chrono_literals;
using testing::trim;

// OVS's PMD core capsule gives to the first VM (ovs-pmd-cores=3-5; core 2
// stays OVS's shared PMD).
constexpr int kFirstCore = 3;

class OvsModeTest : public testing::ControlPlaneTest {
 protected:
  OvsModeTest() : ControlPlaneTest("capsule-ovsmode") {}

  void SetUp() override {
    if (::access(testing::OvsDpdkHost::kVswitchd, X_OK) != 0)
      GTEST_SKIP() << testing::OvsDpdkHost::kVswitchd << " is missing (package openvswitch-switch-dpdk)";
    const std::string why = ovs_.start();
    ASSERT_EQ(why, "");
    auto db = harness::Ovsdb::start(dir_.path());
    ASSERT_TRUE(db.ok()) << db.error().message;
    db_ = std::move(*db);
    // The Host row before capsuled starts: its first datapath is OVS's.
    ok({"create", "Host", "chassis=host-a", "datapath_type=ovs",
        "other_config:ovs-db=\"" + ovs_.remote() + "\"", "other_config:ovs-bridge=br0",
        "other_config:ovs-pidfile=\"" + ovs_.pidfile() + "\"", "other_config:ovs-pmd-cores=\"3-5\""});
    auto agent = harness::Capsuled::start(*db_, dir_.path(), "host-a", {"--stats-interval=200"});
    ASSERT_TRUE(agent.ok()) << agent.error().message;
    agent_ = std::move(*agent);
    ASSERT_TRUE(testkit::wait_until([&] { return host_status("datapath") == "ovs-dpdk"; }, 20s))
        << host_status("datapath");
  }
  void TearDown() override {
    ControlPlaneTest::TearDown();
    if (HasFailure()) {
      std::cerr << "---- ovs-vswitchd log (tail) ----\n";
      const std::string log = ovs_.log();
      std::cerr << log.substr(log.size() > 4000 ? log.size() - 4000 : 0) << "\n";
      std::cerr << "---- OVS configuration ----\n" << ovs_.configuration();
    }
    agent_.reset();  // capsuled first: it restores the threads it holds
  }

  // An OVS column (or COLUMN:KEY), unquoted; "" when absent.
  std::string ovs_get(const std::string& table, const std::string& row, const std::string& col) {
    return trim(ovs_.vsctl({"--if-exists", "get", table, row, col}).out);
  }
  // A VM `name` with 1 vCPU (1 ms / 20 ms) and a PMD budget of 2 ms, and one
  // port `port`; extra capsule-ctl commands appended (after "--").
  harness::CmdResult add_vm(const FakeVm& vm, const std::string& name, const std::string& port,
                            const std::vector<std::string>& more = {}) {
    std::vector<std::string> args{"--wait", "add-vm", name, "pid=" + std::to_string(vm.pid()), "--", "--net=2ms",
                                  "set-rsv", name, "1ms", "20ms", "--", "add-port", name, port,
                                  dir_.file(port + ".sock")};
    args.insert(args.end(), more.begin(), more.end());
    return ctl(args);
  }

  testing::OvsDpdkHost ovs_;
};

TEST_F(OvsModeTest, VmPortsPolicersAndAffinityLandInOvsMarkedAsCapsules) {
  FakeVm vm(1);
  auto r = add_vm(vm, "vm1", "p0",
                  {"ingress_policing_rate=2000", "ingress_policing_burst=200", "--", "set-qos", "p0",
                   "egress-policer", "cir=125000", "cbs=15000"});
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_EQ(status("vm1", "state"), "running") << status("vm1", "reason");

  // The Interface: a vhost-user client of the VM's socket, pinned to its own
  // PMD core, policing what OVS receives from the VM.
  EXPECT_EQ(ovs_get("Interface", "p0", "type"), "dpdkvhostuserclient");
  EXPECT_EQ(ovs_get("Interface", "p0", "options:vhost-server-path"), dir_.file("p0.sock"));
  EXPECT_EQ(ovs_get("Interface", "p0", "other_config:pmd-rxq-affinity").rfind("0:3,1:3", 0), 0u)
      << ovs_get("Interface", "p0", "other_config:pmd-rxq-affinity");
  EXPECT_EQ(ovs_get("Interface", "p0", "ingress_policing_rate"), "2000");
  EXPECT_EQ(ovs_get("Interface", "p0", "ingress_policing_burst"), "200");
  EXPECT_EQ(ovs_get("Interface", "p0", "external_ids:capsule-owner"), "vm1");
  EXPECT_EQ(ovs_get("Port", "p0", "external_ids:capsule-owner"), "vm1");
  // Its Port on br0, with capsule's QoS: what OVS sends to the VM.
  EXPECT_NE(ovs_get("Bridge", "br0", "ports").find(ovs_get("Port", "p0", "_uuid")), std::string::npos);
  const std::string qos = ovs_get("Port", "p0", "qos");
  ASSERT_FALSE(qos.empty() || qos == "[]");
  EXPECT_EQ(ovs_get("QoS", qos, "type"), "egress-policer");
  EXPECT_EQ(ovs_get("QoS", qos, "other_config:cir"), "125000");
  EXPECT_EQ(ovs_get("QoS", qos, "other_config:cbs"), "15000");
  EXPECT_EQ(ovs_get("QoS", qos, "external_ids:capsule-owner"), "vm1");

  // OVS itself agrees: the queue is on core 3's PMD, isolated.
  std::string rxq;
  EXPECT_TRUE(testkit::wait_until(
      [&] {
        rxq = ovs_.appctl({"dpif-netdev/pmd-rxq-show"}).out;
        const auto core = rxq.find("core_id " + std::to_string(kFirstCore) + ":");
        return core != std::string::npos && rxq.find("port: p0", core) != std::string::npos &&
               rxq.find("isolated : true", core) < rxq.find("port: p0", core);
      },
      10s))
      << rxq;
}

TEST_F(OvsModeTest, ServingPmdThreadJoinsTheVmsCapsuleAndIsReservedAgainAfterARestart) {
  FakeVm vm(1);
  auto r = add_vm(vm, "vm1", "p0");
  ASSERT_EQ(r.rc, 0) << r.err << r.out;

  // OVS makes its PMD threads once a PMD port exists; capsuled reserves the
  // one of the VM's core as soon as it appears.
  pid_t pmd = 0;
  ASSERT_TRUE(testkit::wait_until(
      [&] {
        pmd = ovs_.pmd_thread(kFirstCore);
        return pmd && has_deadline(pmd, 2ms, 20ms);
      },
      10s))
      << "pmd-c03 tid " << pmd << "; VM status: " << status("vm1", "threads") << " " << status("vm1", "reason");
  EXPECT_TRUE(has_deadline(vm.vcpu_tids().at(0), 1ms, 20ms));
  EXPECT_NE(status("vm1", "threads").find("pmd=" + std::to_string(pmd)), std::string::npos) << status("vm1", "threads");
  EXPECT_NE(status("vm1", "datapath_thread").find("pmd-c03"), std::string::npos) << status("vm1", "datapath_thread");
  // The other PMDs (OVS's shared one on core 2, free ones) are not ours.
  for (int core : {2, 4, 5}) {
    const pid_t other = ovs_.pmd_thread(core);
    ASSERT_NE(other, 0) << "core " << core;
    auto p = rsv::get_sched_params(other);
    ASSERT_TRUE(p.ok());
    EXPECT_FALSE(p->is_deadline()) << "core " << core;
  }
  const std::string show = trim(harness::appctl(*agent_, {"capsule/show"}).out);
  EXPECT_NE(show.find("served by OVS PMD pmd-c03"), std::string::npos) << show;

  // ovs-vswitchd restarts: new PMD threads, under CFS. The new one of the
  // VM's core is found and reserved within 1 s of appearing.
  ASSERT_EQ(ovs_.restart_vswitchd(), "");
  pid_t fresh = 0;
  ASSERT_TRUE(testkit::wait_until([&] { return (fresh = ovs_.pmd_thread(kFirstCore)) != 0 && fresh != pmd; }, 20s));
  const auto appeared = std::chrono::steady_clock::now();
  ASSERT_TRUE(testkit::wait_until([&] { return has_deadline(fresh, 2ms, 20ms); }, 5s))
      << "new pmd-c03 tid " << fresh << " not reserved; VM: " << status("vm1", "threads") << " "
      << status("vm1", "reason");
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - appeared);
  EXPECT_LE(took, 1000ms);
  std::cout << "new OVS PMD thread reserved " << took.count() << " ms after it appeared\n";
  EXPECT_TRUE(has_deadline(vm.vcpu_tids().at(0), 1ms, 20ms));
  EXPECT_TRUE(testkit::wait_until(
      [&] { return status("vm1", "threads").find("pmd=" + std::to_string(fresh)) != std::string::npos; }, 5s))
      << status("vm1", "threads");

  // Removing the VM gives the PMD thread back to CFS (or OVS ends it: the
  // last PMD port left the datapath).
  ok({"--wait", "del-vm", "vm1"});
  auto p = rsv::get_sched_params(fresh);
  if (p.ok()) {
    EXPECT_FALSE(p->is_deadline());
  }
}

TEST_F(OvsModeTest, RemovingVmsLeavesOvsAsTheOperatorHadIt) {
  // The operator's own rows: a port with its own QoS, and the vhost port a
  // VM will use (same name and socket as its Capsule port).
  auto r = ovs_.vsctl({"add-port", "br0", "op0", "--", "set", "Interface", "op0", "type=dpdkvhostuserclient",
                       "options:vhost-server-path=" + dir_.file("op0.sock"), "external_ids:team=net", "--", "set",
                       "Port", "op0", "qos=@q", "--", "--id=@q", "create", "QoS", "type=egress-policer",
                       "other_config:cir=1000000", "--", "add-port", "br0", "p9", "--", "set", "Interface", "p9",
                       "type=dpdkvhostuserclient", "options:vhost-server-path=" + dir_.file("p9.sock"),
                       "external_ids:team=net"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string before = ovs_.configuration();
  ASSERT_NE(before.find("op0"), std::string::npos) << before;

  FakeVm a(1), b(1);
  r = add_vm(a, "vm1", "p0", {"ingress_policing_rate=1000", "--", "set-qos", "p0", "trtcm-policer", "cir=125000",
                              "eir=250000", "cbs=15000", "ebs=15000"});
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  // vm2's port is the operator's p9: capsule adds only what it needs.
  r = add_vm(b, "vm2", "p9", {"ingress_policing_rate=500", "--", "set-qos", "p9", "egress-policer", "cir=62500"});
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_EQ(status("vm2", "state"), "running") << status("vm2", "reason");
  EXPECT_EQ(ovs_get("Interface", "p9", "external_ids:team"), "net");
  EXPECT_EQ(ovs_get("Interface", "p9", "external_ids:capsule-owner"), "vm2");
  EXPECT_EQ(ovs_get("Interface", "p9", "other_config:pmd-rxq-affinity").rfind("0:4,", 0), 0u);
  EXPECT_EQ(ovs_get("Interface", "p9", "ingress_policing_rate"), "500");
  EXPECT_EQ(ovs_get("QoS", ovs_get("Port", "p9", "qos"), "external_ids:capsule-owner"), "vm2");
  EXPECT_EQ(ovs_get("QoS", ovs_get("Port", "p0", "qos"), "type"), "trtcm-policer");
  // The operator's QoS on op0 is not capsule's.
  EXPECT_EQ(ovs_get("QoS", ovs_get("Port", "op0", "qos"), "external_ids:capsule-owner"), "");

  ok({"--wait", "del-vm", "vm1"});
  ok({"--wait", "del-vm", "vm2"});
  EXPECT_EQ(ovs_.configuration(), before);
}

TEST_F(OvsModeTest, WhatOvsCannotDoIsRefusedWithAReasonAndChangesNothing) {
  const std::string before = ovs_.configuration();
  FakeVm vm(1);
  auto r = add_vm(vm, "vm1", "p0", {"--", "set-qos", "p0", "pkt-policer", "pir=10000"});
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(status("vm1", "state"), "rejected");
  EXPECT_NE(status("vm1", "reason").find("pkt-policer is not available in OVS mode"), std::string::npos)
      << status("vm1", "reason");
  EXPECT_EQ(ovs_.configuration(), before);

  // An operator's interface of the port's name pinned elsewhere: capsule
  // would have to overwrite the operator's affinity, so it refuses.
  r = ovs_.vsctl({"add-port", "br0", "q0", "--", "set", "Interface", "q0", "type=dpdkvhostuserclient",
                  "options:vhost-server-path=" + dir_.file("q0.sock"), "other_config:pmd-rxq-affinity=0:2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string operators = ovs_.configuration();
  FakeVm other(1);
  r = add_vm(other, "vm2", "q0");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(status("vm2", "reason").find("pmd-rxq-affinity=0:2 set by someone else"), std::string::npos)
      << status("vm2", "reason");
  EXPECT_EQ(ovs_.configuration(), operators);
  EXPECT_FALSE(has_deadline(other.vcpu_tids().at(0), 1ms, 20ms));
}

}  // namespace
}  // namespace capsule
