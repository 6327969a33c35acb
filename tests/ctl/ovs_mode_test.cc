// OVS datapath mode (Host:datapath_type=ovs, docs/ovs-mode.md) against a
// real ovs-vswitchd-dpdk (tests/ctl/ovs_dpdk_host.h): capsuled writes each
// VM's ports, policers and rx-queue affinity into OVS's database marked
// capsule-owner, puts the OVS PMD thread that serves the VM into the VM's
// capsule, reserves it again when OVS replaces it, and takes away exactly
// what it wrote.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "control_plane_fixture.h"
#include "emulated_vm.h"
#include "fake_vm.h"
#include "ovs_dpdk_host.h"

namespace capsule {
namespace {

using namespace std::chrono_literals;
using testing::trim;

// OVS's PMD core capsule gives to the first VM (ovs-pmd-cores=3-5; core 2
// is OVS's shared PMD, which polls the uplink's queues in a reservation of
// its own: ovs-uplink-pmd-core=2, ovs-uplink-pmd-budget=1ms/20ms).
constexpr int kFirstCore = 3;
constexpr int kUplinkCore = 2;
const std::string kVmMac = "02:00:00:00:00:0a", kUplinkMac = "02:00:00:00:00:0b";
// OVS's policers count a frame without its 14-byte Ethernet header: a
// 1000-byte frame is 986 bytes to them.
constexpr double kPolicedBytes = 986;

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
        "other_config:ovs-pidfile=\"" + ovs_.pidfile() + "\"", "other_config:ovs-pmd-cores=\"3-5\"",
        "other_config:ovs-uplink-pmd-core=2", "other_config:ovs-uplink-pmd-budget=\"1ms/20ms\""});
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
    return add_vm(vm.pid(), name, port, more);
  }
  harness::CmdResult add_vm(pid_t pid, const std::string& name, const std::string& port,
                            const std::vector<std::string>& more = {}) {
    std::vector<std::string> args{"--wait", "add-vm", name, "pid=" + std::to_string(pid), "--", "--net=2ms",
                                  "set-rsv", name, "1ms", "20ms", "--", "add-port", name, port,
                                  dir_.file(port + ".sock")};
    args.insert(args.end(), more.begin(), more.end());
    return ctl(args);
  }

  // The uplink: an operator's vhost port up0 on br0 whose rx queue OVS's
  // shared PMD (core 2) polls, with an emulated host behind it (capsule-vm
  // `args`, MAC kUplinkMac).
  std::unique_ptr<testing::EmulatedVm> add_uplink(const std::vector<std::string>& args) {
    auto peer = std::make_unique<testing::EmulatedVm>(dir_, "up0", kUplinkMac, args);
    auto r = ovs_.vsctl({"add-port", "br0", "up0", "--", "set", "Interface", "up0", "type=dpdkvhostuserclient",
                        "options:vhost-server-path=" + peer->socket(),
                        "other_config:pmd-rxq-affinity=0:" + std::to_string(kUplinkCore)});
    EXPECT_EQ(r.rc, 0) << r.err;
    return peer;
  }
  // The emulated VM of port `port` (its vhost-user socket is the one
  // add_vm gives the port), MAC kVmMac.
  std::unique_ptr<testing::EmulatedVm> emulated_vm(const std::string& port, const std::vector<std::string>& args) {
    return std::make_unique<testing::EmulatedVm>(dir_, port, kVmMac, args);
  }
  // Waits until the VM is running with its vCPU found and both peers have
  // received `frames` frames addressed to them (none: `frames` = 0).
  ::testing::AssertionResult traffic_flows(testing::EmulatedVm& vm, testing::EmulatedVm& up, long long vm_frames,
                                           long long up_frames) {
    if (!testkit::wait_until([&] { return status("vm1", "state") == "running" && !vm.vcpus().empty(); }, 30s))
      return ::testing::AssertionFailure() << "vm1 " << status("vm1", "state") << ": " << status("vm1", "reason")
                                           << "\n" << vm.output();
    if (!testkit::wait_until([&] { return vm.counter("rx_to_me") >= vm_frames && up.counter("rx_to_me") >= up_frames; },
                             30s))
      return ::testing::AssertionFailure() << "VM got " << vm.counter("rx_to_me") << " frames, uplink "
                                           << up.counter("rx_to_me") << "\nVM: " << vm.output()
                                           << "\nuplink: " << up.output()
                                           << ovs_.appctl({"dpif-netdev/pmd-rxq-show"}).out;
    return ::testing::AssertionSuccess();
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
  // The VM sends 500 frames/s to the uplink's host; the uplink's PMD (core
  // 2) is in a reservation of its own.
  auto up = add_uplink({"--mode", "count"});
  auto vm = emulated_vm("p0", {"--mode", "tx", "--dst", kUplinkMac, "--rate", "500", "--size", "200"});
  auto r = add_vm(vm->pid(), "vm1", "p0");
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  ASSERT_TRUE(traffic_flows(*vm, *up, 0, 200));

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
  EXPECT_TRUE(has_deadline(vm->vcpus().at(0), 1ms, 20ms));
  EXPECT_NE(status("vm1", "threads").find("pmd=" + std::to_string(pmd)), std::string::npos) << status("vm1", "threads");
  EXPECT_NE(status("vm1", "datapath_thread").find("pmd-c03"), std::string::npos) << status("vm1", "datapath_thread");
  // The uplink's PMD has its own reservation; the free PMDs are not ours.
  pid_t uplink = 0;
  ASSERT_TRUE(testkit::wait_until(
      [&] { return (uplink = ovs_.pmd_thread(kUplinkCore)) && has_deadline(uplink, 1ms, 20ms); }, 10s))
      << "pmd-c02 tid " << uplink << "; Host status: " << host_status("ovs_uplink_pmd");
  EXPECT_NE(host_status("ovs_uplink_pmd").find("pmd-c02 (core 2, tid " + std::to_string(uplink) + ")"),
            std::string::npos)
      << host_status("ovs_uplink_pmd");
  for (int core : {4, 5}) {
    const pid_t other = ovs_.pmd_thread(core);
    ASSERT_NE(other, 0) << "core " << core;
    auto p = rsv::get_sched_params(other);
    ASSERT_TRUE(p.ok());
    EXPECT_FALSE(p->is_deadline()) << "core " << core;
  }
  const std::string show = trim(harness::appctl(*agent_, {"capsule/show"}).out);
  EXPECT_NE(show.find("served by OVS PMD pmd-c03"), std::string::npos) << show;

  // ovs-vswitchd restarts: new PMD threads, under CFS. The new one of the
  // VM's core is found and reserved within 1 s of appearing, the uplink's
  // too, and the VM's traffic flows again.
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
  pid_t fresh_uplink = 0;
  EXPECT_TRUE(testkit::wait_until(
      [&] {
        fresh_uplink = ovs_.pmd_thread(kUplinkCore);
        return fresh_uplink && fresh_uplink != uplink && has_deadline(fresh_uplink, 1ms, 20ms);
      },
      5s))
      << "new pmd-c02 tid " << fresh_uplink << "; Host status: " << host_status("ovs_uplink_pmd");
  EXPECT_TRUE(has_deadline(vm->vcpus().at(0), 1ms, 20ms));
  EXPECT_TRUE(testkit::wait_until(
      [&] { return status("vm1", "threads").find("pmd=" + std::to_string(fresh)) != std::string::npos; }, 5s))
      << status("vm1", "threads");
  const long long before = up->counter("rx_to_me");
  EXPECT_TRUE(testkit::wait_until([&] { return up->counter("rx_to_me") > before + 200; }, 30s))
      << "the VM's traffic did not resume: uplink got " << up->counter("rx_to_me") << " frames (" << before
      << " before the restart)\nVM: " << vm->output() << "\nuplink: " << up->output();
  EXPECT_TRUE(has_deadline(fresh, 2ms, 20ms));

  // Removing the VM gives the PMD thread back to CFS (or OVS ends it: the
  // last PMD port left the datapath).
  ok({"--wait", "del-vm", "vm1"});
  auto p = rsv::get_sched_params(fresh);
  if (p.ok()) {
    EXPECT_FALSE(p->is_deadline());
  }
}

// OVS polices at the Capsule rate, in OVS's directions: the port's
// ingress_policing_rate limits what the VM sends (policed by the VM's own
// PMD, in its capsule), its QoS what the VM receives (policed by the
// uplink's PMD on the way out of OVS). Each side offers about 2000 frames/s
// of 1000 bytes; the limits differ, so directions swapped would show.
TEST_F(OvsModeTest, OvsPolicesTheVmsTrafficAtTheCapsuleRateBothWays) {
  const uint64_t ingress_kbps = 8000;  // 1 MB/s from the VM: 1014 frames/s
  const uint64_t egress_cir = 500'000;  // 500 kB/s to the VM: 507 frames/s
  auto up = add_uplink({"--mode", "tx", "--dst", kVmMac, "--rate", "2000", "--size", "1000"});
  auto vm = emulated_vm("p0", {"--mode", "tx", "--dst", kUplinkMac, "--rate", "2000", "--size", "1000"});
  // Bursts of 100 kB and 50 kB: more than a 20 ms period of each rate (the
  // VM's vCPU and PMD run in stretches of their budgets).
  auto r = add_vm(vm->pid(), "vm1", "p0",
                  {"ingress_policing_rate=" + std::to_string(ingress_kbps), "ingress_policing_burst=800", "--",
                   "set-qos", "p0", "egress-policer", "cir=" + std::to_string(egress_cir), "cbs=50000"});
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  // Past the policers' first bursts (100 and 50 frames).
  ASSERT_TRUE(traffic_flows(*vm, *up, 1000, 1000));
  ASSERT_TRUE(testkit::wait_until([&] { return has_deadline(ovs_.pmd_thread(kFirstCore), 2ms, 20ms); }, 5s));

  const double from_vm = up->own_rate("rx_to_me", 4s);
  const double to_vm = vm->own_rate("rx_to_me", 4s);
  const double from_vm_allowed = double(ingress_kbps) * 1000 / 8 / kPolicedBytes;
  const double to_vm_allowed = double(egress_cir) / kPolicedBytes;
  std::printf("from the VM (ingress_policing_rate %llu kbps): %.0f frames/s of %.0f allowed (%+.2f %%)\n",
              (unsigned long long)ingress_kbps, from_vm, from_vm_allowed, 100 * (from_vm / from_vm_allowed - 1));
  std::printf("to the VM (QoS egress-policer cir %llu B/s): %.0f frames/s of %.0f allowed (%+.2f %%)\n",
              (unsigned long long)egress_cir, to_vm, to_vm_allowed, 100 * (to_vm / to_vm_allowed - 1));
  // OVS's own counters: policer drops and any other loss on the way.
  const std::string counters = "p0: " + ovs_get("Interface", "p0", "statistics") +
                               "\nup0: " + ovs_get("Interface", "up0", "statistics");
  std::printf("%s\n", counters.c_str());
  EXPECT_NEAR(from_vm, from_vm_allowed, from_vm_allowed * 0.05) << counters << "\n" << vm->output() << up->output();
  EXPECT_NEAR(to_vm, to_vm_allowed, to_vm_allowed * 0.05) << counters << "\n" << vm->output() << up->output();
  // Each side offered about twice that: OVS dropped the rest.
  EXPECT_GT(vm->own_rate("tx_packets", 1s), 1.5 * from_vm_allowed);
}

// A controller's OpenFlow rules keep applying to a capsule VM's port: a
// drop rule stops the VM's traffic at the switch, a VLAN push (then a
// rewrite of its id) shows on every frame the uplink's host receives.
TEST_F(OvsModeTest, ControllersOpenFlowRulesApplyToTheVmsPort) {
  auto up = add_uplink({"--mode", "count"});
  auto vm = emulated_vm("p0", {"--mode", "tx", "--dst", kUplinkMac, "--rate", "1000", "--size", "200"});
  auto r = add_vm(vm->pid(), "vm1", "p0");
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  ASSERT_TRUE(traffic_flows(*vm, *up, 0, 300));
  EXPECT_EQ(up->counter("rx_vlan"), 0);

  // Drop everything from the VM's port.
  r = ovs_.ofctl({"add-flow", "br0", "priority=100,in_port=p0,actions=drop"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(testkit::wait_until([&] { return up->own_rate("rx_packets", 1s) == 0; }, 10s)) << up->output();
  EXPECT_GT(vm->own_rate("tx_packets", 1s), 500) << "the VM stopped sending: " << vm->output();
  const std::string flows = ovs_.ofctl({"dump-flows", "br0", "in_port=p0"}).out;
  EXPECT_NE(flows.find("actions=drop"), std::string::npos) << flows;
  EXPECT_EQ(flows.find("n_packets=0,"), std::string::npos) << flows;

  // Push VLAN 100 on the VM's frames and send them to the uplink.
  r = ovs_.ofctl({"add-flow", "br0", "priority=100,in_port=p0,actions=mod_vlan_vid:100,output:up0"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(testkit::wait_until([&] { return up->counter("rx_vlan") > 100 && up->counter("rx_vlan_id") == 100; },
                                  10s))
      << up->output();
  // Rewrite its id: every frame received from then on carries VLAN 200.
  r = ovs_.ofctl({"add-flow", "br0", "priority=100,in_port=p0,actions=mod_vlan_vid:200,output:up0"});
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_TRUE(testkit::wait_until([&] { return up->counter("rx_vlan_id") == 200; }, 10s)) << up->output();
  const long long packets = up->counter("rx_packets"), tagged = up->counter("rx_vlan");
  ASSERT_TRUE(testkit::wait_until([&] { return up->counter("rx_packets") > packets + 300; }, 10s)) << up->output();
  const auto c = up->counters();
  EXPECT_EQ(c.at("rx_vlan") - tagged, c.at("rx_packets") - packets) << up->output();
  EXPECT_EQ(c.at("rx_vlan_id"), 200u);

  // The controller's rules did not disturb the VM's capsule.
  EXPECT_TRUE(has_deadline(ovs_.pmd_thread(kFirstCore), 2ms, 20ms));
  EXPECT_EQ(status("vm1", "state"), "running") << status("vm1", "reason");
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
