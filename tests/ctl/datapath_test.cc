// capsuled with the capsule DPDK datapath, end to end: a real ovsdb-server,
// capsuled, and two emulated VMs (capsule-vm, virtio-user) whose ports the
// VM rows name. The VM's datapath thread joins its reservation, traffic
// flows VM to VM through capsuled's PMD threads and is policed in OVS's
// directions (a Port's QoS limits what its VM receives, its ingress
// policing what its VM sends) at the configured rate, and deleting the row
// stops the thread and restores.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <regex>
#include <thread>

#include "capsule/harness.h"
#include "control_plane_fixture.h"
#include "emulated_vm.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/testkit.h"
#include "capsule/vm/peer.h"

namespace capsule {
namespace {

using namespace std::chrono_literals;
using testing::EmulatedVm;

class DatapathTest : public testing::CapsuleDatapathTest {
 protected:
  DatapathTest() : CapsuleDatapathTest("capsule-dp-test") {}
  double port_rate(const std::string& port, const std::string& key, std::chrono::milliseconds window,
                   int windows = 1) {
    return harness::port_statistic_rate(*db_, port, key, window, windows);
  }
  // A Port statistics counter as capsuled last wrote it (0 while absent).
  long long port_counter(const std::string& port, const std::string& key) {
    auto s = ctl({"get", "Port", port, "statistics:" + key});
    return s.rc == 0 ? std::atoll(s.out.c_str() + (s.out[0] == '"')) : 0;
  }
};

TEST_F(DatapathTest, PmdJoinsTheCapsuleAndQosOnAPortLimitsWhatItsVmReceives) {
  const std::string mac_a = "02:00:00:00:00:0a", mac_b = "02:00:00:00:00:0b";
  EmulatedVm b(dir_, "b", mac_b, {"--mode", "count"});
  // A offers 20 kpps of 1000-byte frames (19.7 MB/s of policed bytes) to B.
  EmulatedVm a(dir_, "a", mac_a, {"--mode", "tx", "--dst", mac_b, "--rate", "20000", "--size", "1000"});
  // Like QEMU with a vhost-user server socket, capsule-vm starts its vCPU
  // only once the backend has connected: capsuled brings the ports up first
  // and reserves the threads when they appear.

  // 4 MB/s egress-policer as the QoS of B's port: it limits what B
  // receives (OVS's meaning), about 4e6 / 986 = 4057 frames/s (OVS's
  // policers count frames without their 14-byte Ethernet header). Read the
  // other way round it would police what B sends (nothing) and B would get
  // all 20 kpps.
  const uint64_t cir = 4'000'000;
  auto r = ctl({"--wait", "add-vm", "a", "pid=" + std::to_string(a.pid()), "--", "--net=6ms", "set-rsv", "a", "4ms",
                "20ms", "--", "add-port", "a", "a0", a.socket(), "mac=\"" + mac_a + "\"", "--", "add-vm", "b",
                "pid=" + std::to_string(b.pid()), "--", "--net=6ms", "set-rsv", "b", "4ms", "20ms", "--",
                "add-port", "b", "b0", b.socket(), "mac=\"" + mac_b + "\"", "--", "set-qos", "b0",
                "egress-policer", "cir=" + std::to_string(cir), "cbs=20000"});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  ASSERT_TRUE(testkit::wait_until([&] {
    return ctl({"get", "VM", "a", "status:state"}).out.find("running") != std::string::npos &&
           ctl({"get", "VM", "b", "status:state"}).out.find("running") != std::string::npos;
  }, 20s)) << a.output() << b.output();

  // The datapath thread of each VM is SCHED_DEADLINE with the network budget.
  for (const char* vm : {"a", "b"}) {
    pid_t pmd = 0;
    ASSERT_TRUE(testkit::wait_until([&] { return (pmd = pmd_thread(vm)) != 0; }, 5s)) << vm;
    auto p = rsv::get_sched_params(pmd);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->policy, rsv::kSchedDeadline) << vm;
    EXPECT_EQ(p->runtime, 6ms) << vm;
    EXPECT_EQ(p->period, 20ms) << vm;
  }
  for (pid_t t : a.vcpus()) EXPECT_TRUE(rsv::get_sched_params(t)->is_deadline());

  // Traffic reaches B at the policed rate.
  ASSERT_TRUE(testkit::wait_until([&] { return b.counter("rx_to_me") > 1000; }, 20s)) << b.output() << a.output();
  // Measure once the policer drops: the initial burst is spent.
  auto policer_drops = [&] { return port_counter("b0", "drops_policer_to_vm"); };
  ASSERT_TRUE(testkit::wait_until([&] { return policer_drops() > 0; }, 5s)) << ctl({"list", "Port", "b0"}).out;
  const double pps = b.own_rate("rx_to_me", 3s);
  const double expect = double(cir) / 986.0;
  // A's vCPU spends its 4 ms in one stretch per period, so its frames come
  // in bursts far above the policer's 20 kB burst; the policer still passes
  // its rate (frames wait for tokens in the datapath's ring for B,
  // dpdk-pmd/src/policed_input.h).
  EXPECT_NEAR(pps, expect, expect * 0.05) << "B received " << pps << " frames/s; policer allows " << expect;
  std::printf("QoS on B's port: B received %.0f frames/s of %.0f allowed (%+.2f %%)\n", pps, expect,
              100 * (pps / expect - 1));

  // Port statistics reach the database (drops by the policer among them:
  // A offers five times the rate). A's port polices nothing.
  const long long drops = policer_drops();
  ASSERT_TRUE(testkit::wait_until([&] { return policer_drops() > drops; }, 5s)) << ctl({"list", "Port", "b0"}).out;
  EXPECT_EQ(port_counter("a0", "drops_policer_from_vm"), 0) << ctl({"list", "Port", "a0"}).out;

  // Deleting the VM stops its datapath thread and restores its vCPUs.
  const auto vcpus = a.vcpus();
  r = ctl({"--wait", "del-vm", "a"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(testkit::wait_until([&] { return pmd_thread("a") == 0; }, 5s));
  for (pid_t t : vcpus) EXPECT_EQ(rsv::get_sched_params(t)->policy, SCHED_OTHER);
}

// The other direction: a Port's ingress policing limits what its VM sends
// (OVS's ingress_policing_rate), and the same port's QoS, which limits what
// the VM receives, does not touch it.
TEST_F(DatapathTest, IngressPolicingOnAPortLimitsWhatItsVmSends) {
  const std::string mac_a = "02:00:00:00:00:0a", mac_b = "02:00:00:00:00:0b";
  EmulatedVm b(dir_, "b", mac_b, {"--mode", "count"});
  // A offers 20 kpps of 1000-byte frames (19.7 MB/s of policed bytes) to B.
  EmulatedVm a(dir_, "a", mac_a, {"--mode", "tx", "--dst", mac_b, "--rate", "20000", "--size", "1000"});
  // On A's port: ingress policing 32000 kbit/s = 4 MB/s, burst 160 kbit =
  // 20 kB (about 4057 frames/s pass), and a QoS of 100 kB/s (101 frames/s)
  // on what A receives. Read the other way round, A's 20 kpps would meet
  // the 100 kB/s policer and B would get about 101 frames/s.
  const uint64_t kbps = 32'000;
  auto r = ctl({"--wait", "add-vm", "a", "pid=" + std::to_string(a.pid()), "--", "--net=6ms", "set-rsv", "a", "4ms",
                "20ms", "--", "add-port", "a", "a0", a.socket(), "mac=\"" + mac_a + "\"",
                "ingress_policing_rate=" + std::to_string(kbps), "ingress_policing_burst=160", "--", "set-qos", "a0",
                "egress-policer", "cir=100000", "cbs=2000", "--", "add-vm", "b", "pid=" + std::to_string(b.pid()),
                "--", "--net=6ms", "set-rsv", "b", "4ms", "20ms", "--", "add-port", "b", "b0", b.socket(),
                "mac=\"" + mac_b + "\""});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  ASSERT_TRUE(testkit::wait_until([&] {
    return ctl({"get", "VM", "a", "status:state"}).out.find("running") != std::string::npos &&
           ctl({"get", "VM", "b", "status:state"}).out.find("running") != std::string::npos;
  }, 20s)) << a.output() << b.output();
  ASSERT_TRUE(testkit::wait_until([&] { return b.counter("rx_to_me") > 1000; }, 20s)) << b.output() << a.output();
  // Measure once A's policer drops: the initial burst is spent.
  auto policer_drops = [&] { return port_counter("a0", "drops_policer_from_vm"); };
  ASSERT_TRUE(testkit::wait_until([&] { return policer_drops() > 0; }, 5s)) << ctl({"list", "Port", "a0"}).out;
  const double pps = b.own_rate("rx_to_me", 3s);
  const double expect = double(kbps) * 1000 / 8 / 986.0;
  // A's vCPU sends in one stretch per period; the frames that wait for
  // tokens wait in A's own virtio ring (back-pressure).
  EXPECT_NEAR(pps, expect, expect * 0.05) << "B received " << pps << " frames/s; A's ingress policing allows " << expect;
  std::printf("ingress policing on A's port: B received %.0f frames/s of %.0f allowed (%+.2f %%)\n", pps, expect,
              100 * (pps / expect - 1));
  const long long drops = policer_drops();
  ASSERT_TRUE(testkit::wait_until([&] { return policer_drops() > drops; }, 5s)) << ctl({"list", "Port", "a0"}).out;
  // What A receives (nothing) met its QoS; B's port polices nothing.
  EXPECT_EQ(port_counter("a0", "drops_policer_to_vm"), 0) << ctl({"list", "Port", "a0"}).out;
  EXPECT_EQ(port_counter("b0", "drops_policer_to_vm"), 0) << ctl({"list", "Port", "b0"}).out;
  // show says which way each polices.
  const std::string show = ctl({"show"}).out;
  EXPECT_NE(show.find("qos: egress-policer cbs=2000 cir=100000 (what the VM receives)"), std::string::npos) << show;
  EXPECT_NE(show.find("ingress_policing: 32000 kbps burst 160 kb, 0 kpps burst 0 kpkts (what the VM sends)"),
            std::string::npos)
      << show;
}

TEST_F(DatapathTest, BestEffortVmGetsItsPortsAndLaterItsCapsule) {
  const std::string mac_a = "02:00:00:00:00:0a", mac_b = "02:00:00:00:00:0b";
  EmulatedVm b(dir_, "b", mac_b, {"--mode", "count"});
  EmulatedVm a(dir_, "a", mac_a, {"--mode", "tx", "--dst", mac_b, "--rate", "5000", "--size", "256"});
  // No set-rsv: best effort. The ports come up and traffic flows in CFS.
  auto r = ctl({"--wait", "add-vm", "a", "pid=" + std::to_string(a.pid()), "--", "add-port", "a", "a0", a.socket(),
                "mac=\"" + mac_a + "\"", "--", "add-vm", "b", "pid=" + std::to_string(b.pid()), "--", "add-port", "b",
                "b0", b.socket(), "mac=\"" + mac_b + "\""});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  ASSERT_TRUE(testkit::wait_until([&] { return b.counter("rx_to_me") > 500; }, 20s)) << a.output() << b.output();
  EXPECT_NE(ctl({"get", "VM", "a", "status:reason"}).out.find("best effort"), std::string::npos);
  const pid_t pmd = pmd_thread("a");
  ASSERT_NE(pmd, 0);
  EXPECT_EQ(rsv::get_sched_params(pmd)->policy, SCHED_OTHER);

  // Giving it a capsule later puts its vCPU and its datapath thread in it.
  r = ctl({"--wait", "--", "--net=3ms", "set-rsv", "a", "2ms", "20ms"});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  ASSERT_TRUE(testkit::wait_until([&] { return rsv::get_sched_params(pmd)->is_deadline(); }, 5s));
  EXPECT_EQ(rsv::get_sched_params(pmd)->runtime, 3ms);
  for (pid_t t : a.vcpus()) EXPECT_EQ(rsv::get_sched_params(t)->runtime, 2ms);
  const long long before = b.counter("rx_to_me");
  EXPECT_TRUE(testkit::wait_until([&] { return b.counter("rx_to_me") > before + 1000; }, 10s)) << b.output();
}

// A VM sending from MACs other than its Port's mac is held at its port
// (port security), and the operator sees it: Port statistics
// drops_port_security, capsule/pmd-stats-show (drops by cause) and
// capsule/fdb-show (no spoofed MAC learned).
TEST_F(DatapathTest, SpoofingVmIsDroppedAtItsPortAndTheCommandsSayWhat) {
  const std::string mac_a = "02:00:00:00:00:0a", mac_b = "02:00:00:00:00:0b";
  EmulatedVm b(dir_, "b", mac_b, {"--mode", "count"});
  EmulatedVm a(dir_, "a", mac_a,
               {"--mode", "tx", "--dst", mac_b, "--src", "random", "--rate", "5000", "--count", "3000"});
  auto r = ctl({"--wait", "add-vm", "a", "pid=" + std::to_string(a.pid()), "--", "add-port", "a", "a0", a.socket(),
                "mac=\"" + mac_a + "\"", "--", "add-vm", "b", "pid=" + std::to_string(b.pid()), "--", "add-port", "b",
                "b0", b.socket(), "mac=\"" + mac_b + "\""});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  ASSERT_TRUE(testkit::wait_until([&] {
    auto s = ctl({"get", "Port", "a0", "statistics:drops_port_security"});
    return s.rc == 0 && std::atoll(s.out.c_str()) == 3000;
  }, 20s)) << ctl({"list", "Port", "a0"}).out << a.output();
  EXPECT_EQ(b.counter("rx_test"), 0) << "no spoofed frame may reach B";

  auto stats = harness::appctl(*agent_, {"capsule/pmd-stats-show", "a"});
  ASSERT_EQ(stats.rc, 0) << stats.err;
  EXPECT_NE(stats.out.find("pmd thread of VM a (tid " + std::to_string(pmd_thread("a")) + ")"),
            std::string::npos)
      << stats.out;
  EXPECT_NE(stats.out.find("port_security: 3000"), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find("from VM: 0 packets"), std::string::npos) << stats.out;
  auto all = harness::appctl(*agent_, {"capsule/pmd-stats-show"});
  EXPECT_NE(all.out.find("pmd thread of VM b"), std::string::npos) << all.out;
  auto none = harness::appctl(*agent_, {"capsule/pmd-stats-show", "nosuch"});
  EXPECT_NE(none.rc, 0);
  EXPECT_NE(none.err.find("no VM 'nosuch'"), std::string::npos) << none.err;

  auto fdb = harness::appctl(*agent_, {"capsule/fdb-show"});
  ASSERT_EQ(fdb.rc, 0) << fdb.err;
  EXPECT_TRUE(std::regex_search(fdb.out, std::regex("\\n a +02:00:00:00:00:0a +static\\n"))) << fdb.out;
  EXPECT_TRUE(std::regex_search(fdb.out, std::regex("\\n b +02:00:00:00:00:0b +static\\n"))) << fdb.out;
  EXPECT_TRUE(std::regex_search(fdb.out, std::regex("learned MAC entries: [0-9]+/8192 \\(mac-table-size\\)")))
      << fdb.out;
  const std::regex port_a("\\n a ");
  const auto lines_of_a =
      std::distance(std::sregex_iterator(fdb.out.begin(), fdb.out.end(), port_a), std::sregex_iterator());
  EXPECT_EQ(lines_of_a, 1) << "only A's own MAC may be on its port\n" << fdb.out;
}

// "auto": the datapath thread's budget follows the VM's policer and the
// host's calibration (capsule-ctl calibrate, a real measurement on this
// host). The VM sends to the uplink, a net_null port (a NIC's transmit
// without a NIC), the path the calibration measures.
TEST_F(DatapathTest, AutoNetBudgetCarriesThePolicedRateAndRefusesWhatCannotBeAdmitted) {
  auto r = ctl({"--wait", "set", "Host", ".", "uplink:devargs=net_null0", "uplink:receive=false"});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  const std::string mac_a = "02:00:00:00:00:0a", mac_c = "02:00:00:00:00:0c";
  // A floods the wire with 64-byte frames, far more than its policer lets
  // through (its vCPU has room to: 12 ms every 20 ms).
  EmulatedVm a(dir_, "a", mac_a, {"--mode", "tx", "--dst", "02:00:00:00:00:ff", "--rate", "0", "--size", "64", "--queue-size", "1024"});
  // Ingress policing on A's port (what A sends): 500 kpps, with a bucket
  // that holds more than a period's worth (see net_budget.h: the datapath
  // thread of a capsule that is sent more than it may pass works in one
  // stretch per period).
  const uint64_t rate = 500'000;
  r = ctl({"--wait", "add-vm", "a", "pid=" + std::to_string(a.pid()), "--", "--net=auto", "set-rsv", "a", "12ms",
           "20ms", "--", "add-port", "a", "a0", a.socket(), "mac=\"" + mac_a + "\"",
           "ingress_policing_kpkts_rate=" + std::to_string(rate / 1000), "ingress_policing_kpkts_burst=30"});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;  // the VM waits for its port to come up
  // capsuled judges a VM once its threads are up; the reason lands in status.
  auto rejected_with = [&](const std::string& vm, const std::string& text) {
    return testkit::wait_until([&] {
      return ctl({"get", "VM", vm, "status:state"}).out.find("rejected") != std::string::npos &&
             ctl({"get", "VM", vm, "status:reason"}).out.find(text) != std::string::npos;
    }, 20s);
  };
  // Without a calibration there is nothing to size the budget from.
  EXPECT_TRUE(rejected_with("a", "run `capsule-ctl calibrate`")) << ctl({"get", "VM", "a", "status"}).out;

  // Calibrate (a short run: 64-byte frames, from the VM).
  auto cal = harness::ctl(*db_, {"--frame-sizes=64", "--directions=from_vm", "--seconds=0.5", "calibrate"}, 120s);
  ASSERT_EQ(cal.rc, 0) << cal.out << cal.err;
  EXPECT_NE(cal.out.find("from_vm 64 B:"), std::string::npos) << cal.out;
  EXPECT_NE(ctl({"show"}).out.find("calibration (the datapath thread's cost curve):"), std::string::npos);
  const double pps_per_cpu = std::stod(ctl({"get", "Calibration", ".", "pps_per_cpu"}).out);
  ASSERT_GT(pps_per_cpu, 4 * double(rate)) << "this host's datapath moves under 2 Mpps per CPU of budget";

  // The new calibration is applied on capsuled's next pass.
  ASSERT_TRUE(testkit::wait_until([&] { return ctl({"get", "VM", "a", "status:state"}).out.find("running") != std::string::npos; }, 20s))
      << ctl({"get", "VM", "a", "status"}).out << a.output();
  const std::string why = ctl({"get", "VM", "a", "status:net_budget"}).out;
  ASSERT_EQ(why.rfind("\"auto: ", 0), 0u) << why;
  EXPECT_EQ(why.find("warning"), std::string::npos) << why;
  // Ingress policing bounds what A sends: the from_vm curve prices it.
  EXPECT_NE(why.find("from_vm 500000 pps (ingress_policing_kpkts_rate 500 kpps on a0)"), std::string::npos) << why;
  const long long budget_us = std::stoll(why.substr(7));
  EXPECT_NE(ctl({"show"}).out.find("net budget: auto: " + std::to_string(budget_us) + " us of 20000 us"), std::string::npos)
      << ctl({"show"}).out;
  // What the measured curve says, + 30 % (the default margin), + 200 us (1 %
  // of the period):
  // between the two calibrated budgets whose rates bracket R (the exact
  // arithmetic: net_budget_test).
  std::map<double, double> points;  // pps -> budget us
  const std::string curve = ctl({"get", "Calibration", ".", "throughput"}).out;
  const std::regex point("(\\d+)=([0-9.e+]+)");
  for (auto it = std::sregex_iterator(curve.begin(), curve.end(), point); it != std::sregex_iterator(); ++it)
    points[std::stod((*it)[2])] = std::stod((*it)[1]);
  const auto above = points.lower_bound(double(rate));
  ASSERT_TRUE(above != points.end() && above != points.begin()) << "R outside the calibrated range: " << curve;
  EXPECT_GE(double(budget_us - 200) / 1.3, std::prev(above)->second - 1) << curve;
  EXPECT_LE(double(budget_us - 200) / 1.3, above->second + 1) << curve;
  pid_t pmd = 0;
  ASSERT_TRUE(testkit::wait_until([&] { return (pmd = pmd_thread("a")) != 0; }, 5s));
  ASSERT_TRUE(testkit::wait_until([&] { return rsv::get_sched_params(pmd)->is_deadline(); }, 5s));
  EXPECT_EQ(rsv::get_sched_params(pmd)->runtime, std::chrono::microseconds(budget_us));

  // Inside its capsule A sustains the policed rate (median of five 1-s
  // windows: one window in a few dips by 10-20 % on this 2-core host),
  // measured once the policer drops (its initial burst is spent).
  ASSERT_TRUE(testkit::wait_until([&] {
    auto s = ctl({"get", "Port", "a0", "statistics:drops_policer_from_vm"});
    return s.rc == 0 && std::atoll(s.out.c_str() + (s.out[0] == '"')) > 0;
  }, 5s)) << ctl({"list", "Port", "a0"}).out;
  EXPECT_NEAR(port_rate("a0", "rx_packets", 1s, 5), double(rate), 0.05 * double(rate))
      << "budget " << why << "\n" << harness::appctl(*agent_, {"capsule/stats"}).out
      << ctl({"get", "Port", "a0", "statistics"}).out;
  // ... and the budget is what carries it: 1 % of the period carries clearly
  // less. (Carrying R in 200 us of 20 ms would take 50 Mpps per CPU, three
  // times the most this datapath ever moved here. Not a fraction of the auto
  // budget or of the calibration: this host's calibration varies up to 4
  // times between runs, which the margin is for.)
  const auto small = std::chrono::microseconds(200);
  r = ctl({"--wait", "--", "--net=" + std::to_string(small.count()) + "us", "set-rsv", "a", "12ms", "20ms"});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  ASSERT_TRUE(testkit::wait_until([&] { return rsv::get_sched_params(pmd)->runtime == small; }, 5s));
  EXPECT_LT(port_rate("a0", "rx_packets", 1s, 3), 0.5 * double(rate)) << "with " << small.count() << " us";
  r = ctl({"--wait", "--", "--net=auto", "set-rsv", "a", "12ms", "20ms"});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_TRUE(testkit::wait_until(
      [&] { return rsv::get_sched_params(pmd)->runtime == std::chrono::microseconds(budget_us); }, 5s));

  // A rate one CPU cannot carry is refused with the arithmetic.
  EmulatedVm c(dir_, "c", mac_c, {"--mode", "count"});
  r = ctl({"--wait", "add-vm", "c", "pid=" + std::to_string(c.pid()), "--", "--net=auto", "set-rsv", "c", "2ms", "20ms",
           "--", "add-port", "c", "c0", c.socket(), "mac=\"" + mac_c + "\"",
           "ingress_policing_kpkts_rate=" + std::to_string(uint64_t(2 * pps_per_cpu / 1000) + 1),
           "ingress_policing_kpkts_burst=1"});
  EXPECT_TRUE(rejected_with("c", "more than the one CPU a thread can use")) << ctl({"get", "VM", "c", "status"}).out;
  // A rate a CPU can carry but this host cannot admit beside the vCPU
  // budget: refused by admission, the reason says where the budget came from.
  // (Half of a CPU's rate: with the margin it stays within the period even
  // where the measured curve bends, unlike 0.7, which once needed 100.2 %.)
  r = ctl({"--wait", "--", "--net=auto", "set-rsv", "c", "19ms", "20ms", "--", "set", "Port", "c0",
           "ingress_policing_kpkts_rate=" + std::to_string(uint64_t(0.5 * pps_per_cpu / 1000))});
  EXPECT_TRUE(rejected_with("c", "cannot be admitted")) << ctl({"get", "VM", "c", "status"}).out;
  EXPECT_EQ(ctl({"get", "VM", "c", "status:reason"}).out.rfind("\"net budget auto: ", 0), 0u)
      << ctl({"get", "VM", "c", "status:reason"}).out;
  // Nothing of A was disturbed.
  EXPECT_EQ(rsv::get_sched_params(pmd)->runtime, std::chrono::microseconds(budget_us));
  EXPECT_NE(ctl({"get", "VM", "a", "status:state"}).out.find("running"), std::string::npos);
  EXPECT_NEAR(port_rate("a0", "rx_packets", 1s, 5), double(rate), 0.05 * double(rate));
}

TEST_F(DatapathTest, PortWithoutMacIsRejectedWithTheReason) {
  // A VM process that is up (capsule-fakevm: vCPU threads, no vhost-user).
  auto vm = testkit::ChildProcess::spawn({testkit::sibling_binary("capsule-fakevm"), "--vcpus", "1", "--load", "idle"},
                                         "/dev/null");
  std::vector<pid_t> vcpus;
  ASSERT_TRUE(testkit::wait_until([&] {
    if (auto all = rsv::discover_threads(vm->pid()))
      for (const auto& t : rsv::threads_with_role(*all, rsv::ThreadRole::kVcpu)) vcpus.push_back(t.tid);
    return !vcpus.empty();
  }, 5s));
  auto r = ctl({"--wait", "add-vm", "a", "pid=" + std::to_string(vm->pid()), "--", "set-rsv", "a", "2ms", "20ms",
                "--", "add-port", "a", "a0", dir_.file("a.sock")});
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("needs the VM's MAC"), std::string::npos) << r.out << r.err;
  for (pid_t t : vcpus) EXPECT_EQ(rsv::get_sched_params(t)->policy, SCHED_OTHER);
}

}  // namespace
}  // namespace capsule
