// The reconciler (ctl/capsuled/agent.h) without a database: hand-made
// snapshots, a fake VM process, and a recording Datapath, so the datapath path
// (PMD thread joins the VM's reservation, rollback on refusal, counters into
// Port statistics) is exercised before dpdk-pmd is wired in.
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <chrono>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "agent.h"
#include "capsule/ovs/shim.h"
#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/testkit.h"

namespace capsule::agent {
namespace {

using namespace std::chrono_literals;

// A sleeping thread named like capsule's datapath thread.
class PmdThread {
 public:
  explicit PmdThread(const std::string& name) {
    thread_ = std::thread([this, name] {
      pthread_setname_np(pthread_self(), name.c_str());
      tid_ = testkit::current_tid();
      while (!stop_) std::this_thread::sleep_for(5ms);
    });
    testkit::wait_until([this] { return tid_ != 0; }, 2s);
  }
  ~PmdThread() {
    stop_ = true;
    thread_.join();
  }
  pid_t tid() const { return tid_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<pid_t> tid_{0};
  std::thread thread_;
};

class RecordingDatapath final : public Datapath {
 public:
  // `found`: VMs on it when it is attached (an earlier agent's).
  explicit RecordingDatapath(pid_t pmd, std::vector<VmNetConfig> found = {}) : found_(std::move(found)), pmd_(pmd) {
    for (const auto& c : found_) vms[c.vm] = c;
  }
  std::vector<VmNetConfig> in_force() const override { return found_; }
  std::string name() const override { return "recording"; }
  bool attached() const override { return !gone; }
  std::string detail() const override { return gone ? "recording datapath exited at noon" : "recording"; }
  bool lost() const override { return gone; }
  void shutdown() override { shut_down = true; }
  Status add_vm(const VmNetConfig& c) override {
    ++adds;
    if (fail_next_add) return Error{"no more queues", EBUSY};
    vms[c.vm] = c;
    return Status::Ok();
  }
  Status remove_vm(const std::string& vm) override {
    ++removes;
    vms.erase(vm);
    return Status::Ok();
  }
  std::optional<pid_t> pmd_tid(const std::string& vm) const override {
    return vms.count(vm) ? std::optional<pid_t>(pmd_) : std::nullopt;
  }
  Result<VmDatapathStats> stats(const std::string& vm) const override {
    VmDatapathStats s;
    for (const auto& p : vms.at(vm).ports) {
      PortCounters& c = s.ports[p.name];
      c.rx_packets = 10;
      c.rx_bytes = 1000;
      c.tx_packets = 20;
      c.tx_bytes = 2000;
      c.drops = {{"policer", 3}};
      c.connected = guest_connected;
      s.ports[p.name].socket = p.vhost_path;
    }
    s.cycles_per_packet = 250;
    return s;
  }

  std::map<std::string, VmNetConfig> vms;
  int adds = 0, removes = 0;
  bool fail_next_add = false;
  bool gone = false, shut_down = false, guest_connected = true;

 private:
  std::vector<VmNetConfig> found_;
  pid_t pmd_;
};

// A factory that makes a RecordingDatapath and tells the test where it is.
DatapathFactory recording(pid_t pmd, RecordingDatapath** out, int* made = nullptr,
                          std::vector<VmNetConfig> found = {}) {
  return [pmd, out, made, found](const DatapathSettings& s) -> Result<std::unique_ptr<Datapath>> {
    if (made) ++*made;
    if (s.uplink.count("devargs") && s.uplink.at("devargs") == "bogus") return Error{"unknown driver bogus", EINVAL};
    auto dp = std::make_unique<RecordingDatapath>(pmd, found);
    *out = dp.get();
    return std::unique_ptr<Datapath>(std::move(dp));
  };
}

AgentConfig config() {
  AgentConfig c;
  c.chassis = "c1";
  return c;
}

ovs::VmRow vm_row(const std::string& name, pid_t pid, int64_t runtime_us, int64_t period_us) {
  ovs::VmRow r;
  r.uuid = "00000000-0000-0000-0000-00000000000" + std::to_string(name.size() % 10);
  r.name = name;
  r.chassis = "c1";
  r.pid = pid;
  r.vcpu_runtime_us = runtime_us;
  r.period_us = period_us;
  r.fingerprint = name + std::to_string(runtime_us) + "/" + std::to_string(period_us);
  return r;
}

ovs::PortRow port_row() {
  ovs::PortRow port;
  port.uuid = "22222222-2222-2222-2222-222222222222";
  port.name = "p1";
  port.vhost_path = "/tmp/p1.sock";
  return port;
}

ovs::Snapshot snapshot(std::vector<ovs::VmRow> vms, double bound = -1, const std::string& devargs = "") {
  ovs::Snapshot s;
  s.connected = true;
  s.chassis = "c1";
  ovs::HostRow h;
  h.uuid = "11111111-1111-1111-1111-111111111111";
  h.chassis = "c1";
  if (bound > 0) h.utilization_bound = bound;
  if (!devargs.empty()) h.uplink["devargs"] = devargs;
  h.next_cfg = 7;
  s.host = h;
  s.vms = std::move(vms);
  return s;
}

std::vector<pid_t> vcpus(pid_t pid) {
  std::vector<pid_t> out;
  if (auto all = rsv::discover_threads(pid))
    for (const auto& t : rsv::threads_with_role(*all, rsv::ThreadRole::kVcpu)) out.push_back(t.tid);
  return out;
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The agent logs through vlog; keep the test's console for gtest.
    free(capsule_ovs_set_verbosity("console:off"));
    vm_ = testkit::ChildProcess::spawn(
        {testkit::sibling_binary("capsule-fakevm"), "--vcpus", "2", "--load", "idle"}, "/dev/null");
    ASSERT_TRUE(testkit::wait_until([&] { return vcpus(vm_->pid()).size() == 2; }, 5s));
  }
  std::unique_ptr<testkit::ChildProcess> vm_;
  PmdThread pmd_{"cpmd-vm1"};
};

TEST_F(AgentTest, PmdThreadJoinsTheVmsReservation) {
  RecordingDatapath* rec = nullptr;
  Agent agent(config(), recording(pmd_.tid(), &rec));
  auto row = vm_row("vm1", vm_->pid(), 2000, 20000);
  row.net_runtime_us = 3000;
  ovs::PortRow port = port_row();
  port.qos = ovs::QosRow{"q", "egress-policer", {{"cir", "125000"}, {"cbs", "1500"}}};
  row.ports.push_back(port);
  agent.update(snapshot({row}));
  agent.reconcile();

  ASSERT_EQ(rec->vms.count("vm1"), 1u);
  ASSERT_EQ(rec->vms["vm1"].ports.size(), 1u);
  EXPECT_EQ(rec->vms["vm1"].ports[0].egress->params.at("cir"), 125000u);
  auto p = rsv::get_sched_params(pmd_.tid());
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->is_deadline());
  EXPECT_EQ(p->runtime, 3ms);
  EXPECT_EQ(p->period, 20ms);
  for (pid_t tid : vcpus(vm_->pid())) EXPECT_EQ(rsv::get_sched_params(tid)->runtime, 2ms);

  agent.sample();
  auto st = agent.status();
  EXPECT_EQ(st.cur_cfg, 7);
  const auto& vs = st.vms.at(row.uuid);
  EXPECT_EQ(vs.status.at("state"), "running");
  EXPECT_EQ(vs.status.at("datapath"), "attached");
  EXPECT_NE(vs.status.at("threads").find("pmd=" + std::to_string(pmd_.tid())), std::string::npos);
  EXPECT_EQ(vs.status.at("admitted_utilization"), "0.3500");
  EXPECT_EQ(vs.statistics.at("cycles_per_packet"), 250);
  const auto& ps = st.ports.at(port.uuid);
  EXPECT_EQ(ps.statistics.at("rx_packets"), 10);
  EXPECT_EQ(ps.statistics.at("drops_policer"), 3);

  // Idempotent: a second pass does not touch the datapath; a QoS change does.
  const int adds = rec->adds;
  agent.reconcile();
  EXPECT_EQ(rec->removes, 0);
  EXPECT_EQ(rec->adds, adds);
  row.ports[0].qos->other_config["cir"] = "250000";
  agent.update(snapshot({row}));
  agent.reconcile();
  EXPECT_EQ(rec->adds, adds + 1);
  EXPECT_EQ(rec->vms["vm1"].ports[0].egress->params.at("cir"), 250000u);
  EXPECT_EQ(rec->removes, 0);

  agent.update(snapshot({}));
  agent.reconcile();
  EXPECT_EQ(rec->vms.count("vm1"), 0u);
  EXPECT_FALSE(rsv::get_sched_params(pmd_.tid())->is_deadline());
}

TEST_F(AgentTest, RefusedAdmissionRollsTheNewDatapathVmBack) {
  RecordingDatapath* rec = nullptr;
  Agent agent(config(), recording(pmd_.tid(), &rec));
  auto row = vm_row("vm1", vm_->pid(), 15000, 20000);  // 2 x 0.75 + pmd > 0.2 x 2 CPUs, whatever else runs
  row.net_runtime_us = 1000;
  agent.update(snapshot({row}, 0.2));
  agent.reconcile();
  auto st = agent.status();
  EXPECT_EQ(st.vms.at(row.uuid).status.at("state"), "rejected");
  EXPECT_NE(st.vms.at(row.uuid).status.at("reason").find("cannot admit"), std::string::npos);
  EXPECT_EQ(rec->vms.count("vm1"), 0u) << "datapath VM left behind";
  EXPECT_EQ(rec->removes, 1);
  EXPECT_FALSE(rsv::get_sched_params(pmd_.tid())->is_deadline());
}

TEST_F(AgentTest, RefusedChangePutsTheDatapathConfigurationBack) {
  RecordingDatapath* rec = nullptr;
  Agent agent(config(), recording(pmd_.tid(), &rec));
  auto row = vm_row("vm1", vm_->pid(), 2000, 20000);
  ovs::PortRow port = port_row();
  row.ports.push_back(port);
  agent.update(snapshot({row}));
  agent.reconcile();
  ASSERT_EQ(agent.status().vms.at(row.uuid).status.at("state"), "running");

  // A port change and a budget over any bound (2 x 100 %) in one change:
  // refused as a whole.
  auto changed = vm_row("vm1", vm_->pid(), 20000, 20000);
  changed.ports = row.ports;
  changed.ports[0].ingress_policing_rate = 1000;
  agent.update(snapshot({changed}));
  agent.reconcile();
  EXPECT_EQ(agent.status().vms.at(row.uuid).status.at("state"), "rejected");
  ASSERT_EQ(rec->vms.count("vm1"), 1u);
  EXPECT_EQ(rec->vms["vm1"].ports.at(0).ingress_kbps, 0u) << "datapath kept the refused configuration";
  for (pid_t tid : vcpus(vm_->pid())) EXPECT_EQ(rsv::get_sched_params(tid)->runtime, 2ms);

  // Later passes (any row of this chassis changing wakes the agent) leave
  // the refused VM's ports alone: nothing made room, so the verdict stands
  // without its port settings going on and off the datapath each time.
  const int adds = rec->adds, removes = rec->removes;
  for (int pass = 0; pass < 3; ++pass) {
    agent.update(snapshot({changed}));
    agent.reconcile();
  }
  EXPECT_EQ(rec->adds, adds) << "the refused port settings were applied and undone again";
  EXPECT_EQ(rec->removes, removes);
  EXPECT_EQ(agent.status().vms.at(row.uuid).status.at("state"), "rejected");

  // A change the host can take is judged at once.
  auto fits = vm_row("vm1", vm_->pid(), 3000, 20000);
  fits.ports = changed.ports;
  agent.update(snapshot({fits}));
  agent.reconcile();
  EXPECT_EQ(agent.status().vms.at(row.uuid).status.at("state"), "running");
  EXPECT_EQ(rec->vms["vm1"].ports.at(0).ingress_kbps, 1000u);
  for (pid_t tid : vcpus(vm_->pid())) EXPECT_EQ(rsv::get_sched_params(tid)->runtime, 3ms);
}

// A VM that waits for room is admitted on the pass after a neighbour's
// capsule goes, without any change to its own row.
TEST_F(AgentTest, ARefusedVmIsAdmittedOnceANeighbourMakesRoom) {
  RecordingDatapath* rec = nullptr;
  Agent agent(config(), recording(pmd_.tid(), &rec));
  auto other = testkit::ChildProcess::spawn(
      {testkit::sibling_binary("capsule-fakevm"), "--vcpus", "2", "--load", "idle"}, "/dev/null");
  ASSERT_TRUE(testkit::wait_until([&] { return vcpus(other->pid()).size() == 2; }, 5s));
  auto big = vm_row("big", other->pid(), 6000, 20000);  // 2 x 0.3 of a bound of 0.45 x 2 CPUs
  big.uuid = "33333333-3333-3333-3333-333333333333";
  auto waits = vm_row("vm1", vm_->pid(), 6000, 20000);
  agent.update(snapshot({big, waits}, 0.45));
  agent.reconcile();
  ASSERT_EQ(agent.status().vms.at(big.uuid).status.at("state"), "running");
  ASSERT_EQ(agent.status().vms.at(waits.uuid).status.at("state"), "rejected");
  agent.update(snapshot({waits}, 0.45));  // big leaves the database
  agent.reconcile();
  EXPECT_EQ(agent.status().vms.at(waits.uuid).status.at("state"), "running");
  for (pid_t tid : vcpus(vm_->pid())) EXPECT_EQ(rsv::get_sched_params(tid)->runtime, 6ms);
}

TEST_F(AgentTest, DatapathFailureRejectsAndKeepsWhatWasInForce) {
  RecordingDatapath* rec = nullptr;
  Agent agent(config(), recording(pmd_.tid(), &rec));
  auto row = vm_row("vm1", vm_->pid(), 2000, 20000);
  agent.update(snapshot({row}));
  agent.reconcile();
  ASSERT_EQ(agent.status().vms.at(row.uuid).status.at("state"), "running");

  rec->fail_next_add = true;
  auto changed = vm_row("vm1", vm_->pid(), 4000, 20000);
  ovs::PortRow port = port_row();  // a new port: the datapath is asked, and refuses
  changed.ports.push_back(port);
  agent.update(snapshot({changed}));
  agent.reconcile();
  auto st = agent.status().vms.at(row.uuid).status;
  EXPECT_EQ(st.at("state"), "rejected");
  EXPECT_EQ(st.at("reason"), "datapath: no more queues");
  EXPECT_NE(st.at("in_force").find("2 ms every 20 ms"), std::string::npos) << st.at("in_force");
  for (pid_t tid : vcpus(vm_->pid())) EXPECT_EQ(rsv::get_sched_params(tid)->runtime, 2ms);
}

TEST_F(AgentTest, DatapathIsMadeFromTheHostRowAndRemadeWhenItChanges) {
  RecordingDatapath* rec = nullptr;
  int made = 0;
  Agent agent(config(), recording(pmd_.tid(), &rec, &made));
  EXPECT_FALSE(agent.datapath().attached());  // no Host row seen yet
  auto row = vm_row("vm1", vm_->pid(), 2000, 20000);
  row.net_runtime_us = 1000;
  agent.update(snapshot({row}, -1, "net_null0"));
  agent.reconcile();
  ASSERT_EQ(made, 1);
  ASSERT_TRUE(agent.datapath().attached());
  EXPECT_TRUE(rsv::get_sched_params(pmd_.tid())->is_deadline());
  agent.reconcile();
  EXPECT_EQ(made, 1) << "same settings, same datapath";

  // New uplink settings: a new datapath, the VM admitted again on it.
  agent.update(snapshot({row}, -1, "net_null1"));
  agent.reconcile();
  EXPECT_EQ(made, 2);
  EXPECT_EQ(rec->vms.count("vm1"), 1u);
  EXPECT_EQ(agent.status().vms.at(row.uuid).status.at("state"), "running");

  // Settings the datapath cannot start with: refused, and nothing changes
  // (the same datapath, the VM's network and its datapath thread's budget);
  // Host status says why, until the row is mended.
  agent.update(snapshot({row}, -1, "bogus"));
  agent.reconcile();
  EXPECT_EQ(made, 3);
  ASSERT_TRUE(agent.datapath().attached());
  auto st = agent.status();
  EXPECT_EQ(st.host.status.at("datapath_refused"),
            "unknown driver bogus; the datapath keeps its previous settings");
  EXPECT_EQ(st.vms.at(row.uuid).status.at("state"), "running");
  EXPECT_EQ(st.vms.at(row.uuid).status.at("datapath"), "attached");
  EXPECT_TRUE(rsv::get_sched_params(pmd_.tid())->is_deadline());
  agent.reconcile();
  EXPECT_EQ(made, 3) << "refused settings are not tried again until they change";
  agent.update(snapshot({row}, -1, "net_null1"));
  agent.reconcile();
  EXPECT_EQ(made, 3) << "the settings in force again: nothing to make";
  EXPECT_EQ(agent.status().host.status.count("datapath_refused"), 0u);
}

// With no datapath running, one that cannot start leaves the VMs their
// vCPU reservations, and every status says why there is no datapath.
TEST_F(AgentTest, ADatapathThatCannotStartLeavesVcpuReservations) {
  RecordingDatapath* rec = nullptr;
  Agent agent(config(), recording(pmd_.tid(), &rec));
  auto row = vm_row("vm1", vm_->pid(), 2000, 20000);
  row.net_runtime_us = 1000;
  agent.update(snapshot({row}, -1, "bogus"));
  agent.reconcile();
  EXPECT_FALSE(agent.datapath().attached());
  auto st = agent.status();
  EXPECT_EQ(st.host.status.at("datapath"), "not attached: unknown driver bogus");
  EXPECT_EQ(st.vms.at(row.uuid).status.at("state"), "running");
  EXPECT_EQ(st.vms.at(row.uuid).status.at("datapath"), "not attached");
  EXPECT_FALSE(rsv::get_sched_params(pmd_.tid())->is_deadline());
  for (pid_t tid : vcpus(vm_->pid())) EXPECT_TRUE(rsv::get_sched_params(tid)->is_deadline());
}

// A datapath whose process went away is replaced on the next pass, status
// keeps what happened; only a graceful stop ends the datapath.
TEST_F(AgentTest, LostDatapathIsReplacedAndOnlyAGracefulStopEndsIt) {
  RecordingDatapath* rec = nullptr;
  int made = 0;
  Agent agent(config(), recording(pmd_.tid(), &rec, &made));
  auto row = vm_row("vm1", vm_->pid(), 2000, 20000);
  row.net_runtime_us = 1000;
  row.ports.push_back(port_row());
  row.ports[0].mac = "02:00:00:00:00:01";
  agent.update(snapshot({row}));
  agent.reconcile();
  ASSERT_EQ(made, 1);
  ASSERT_TRUE(rsv::get_sched_params(pmd_.tid())->is_deadline());
  const auto applies = [&] {
    const std::string m = agent.metrics();
    const auto at = m.find("capsule_apply_total{");
    return at == std::string::npos ? std::string() : m.substr(at, m.find('\n', at) - at);
  };
  const std::string applies_before = applies();
  ASSERT_FALSE(applies_before.empty());
  agent.sample();
  EXPECT_EQ(agent.status().ports.at(row.ports[0].uuid).status.at("state"), "attached");
  rec->guest_connected = false;
  agent.sample();
  auto ps = agent.status().ports.at(row.ports[0].uuid).status;
  EXPECT_EQ(ps.at("state"), "waiting");
  EXPECT_EQ(ps.at("reason").rfind("the VM has not connected to /tmp/p1.sock (since ", 0), 0u) << ps.at("reason");

  rec->gone = true;
  auto st = agent.status();
  EXPECT_EQ(st.host.status.at("datapath"), "recording datapath exited at noon");
  EXPECT_EQ(st.vms.at(row.uuid).status.at("datapath_reason"), "recording datapath exited at noon");
  EXPECT_EQ(st.ports.at(row.ports[0].uuid).status.at("state"), "not attached");
  EXPECT_EQ(st.ports.at(row.ports[0].uuid).status.at("reason"), "recording datapath exited at noon");
  agent.reconcile();
  ASSERT_EQ(made, 2) << "a lost datapath is made anew";
  EXPECT_EQ(rec->vms.count("vm1"), 1u);
  st = agent.status();
  EXPECT_EQ(st.host.status.at("datapath"), "recording");
  EXPECT_EQ(st.host.status.at("datapath_last_exit").rfind("recording datapath exited at noon; replaced at 20", 0), 0u)
      << st.host.status.at("datapath_last_exit");
  EXPECT_EQ(st.vms.at(row.uuid).status.at("state"), "running");
  EXPECT_EQ(applies(), applies_before) << "the capsule was released and admitted again";
  for (pid_t tid : vcpus(vm_->pid())) EXPECT_EQ(rsv::get_sched_params(tid)->runtime, 2ms);
  EXPECT_TRUE(rsv::get_sched_params(pmd_.tid())->is_deadline()) << "the datapath thread left its capsule";
  agent.shutdown();
  EXPECT_TRUE(rec->shut_down);
}

TEST(PortFromRow, ValidatesLikeTheDocsSay) {
  ovs::PortRow p;
  p.name = "p";
  p.vhost_path = "/run/x.sock";
  EXPECT_TRUE(port_from_row(p).ok());
  EXPECT_TRUE(port_from_row(p)->vhost_client);
  p.vhost_mode = "server";
  EXPECT_FALSE(port_from_row(p)->vhost_client);
  p.mac = "52:54:00:AB:cd:01";
  EXPECT_TRUE(port_from_row(p).ok());
  p.mac = "52:54:00:ab:cd";
  EXPECT_FALSE(port_from_row(p).ok());
  p.mac.reset();
  p.qos = ovs::QosRow{"q", "pkt-policer", {{"pir", "1000"}, {"pbs", "32"}}};
  ASSERT_TRUE(port_from_row(p).ok());
  EXPECT_EQ(port_from_row(p)->egress->params.at("pbs"), 32u);
  p.qos->other_config = {{"pbs", "32"}};
  EXPECT_NE(port_from_row(p).error().message.find("needs pir"), std::string::npos);
  p.qos->other_config = {{"pir", "-5"}};
  EXPECT_NE(port_from_row(p).error().message.find("not a non-negative integer"), std::string::npos);
  p.qos->other_config = {{"pir", "99999999999999999999999"}};
  EXPECT_FALSE(port_from_row(p).ok());
  // "12\0abc" would pass the rules as 12 (they read C strings).
  p.qos->other_config = {{"pir", std::string("12\0abc", 6)}};
  EXPECT_EQ(port_from_row(p).error().message, "port p: QoS pir \"12\\0abc\" holds a NUL byte");
  p.qos.reset();
  p.mac = "01:00:5e:00:00:01";
  EXPECT_EQ(port_from_row(p).error().message,
            "port p: mac \"01:00:5e:00:00:01\" is a multicast address: a port needs a unicast MAC");
  p.mac = "00:00:00:00:00:00";
  EXPECT_FALSE(port_from_row(p).ok());
  p.mac.reset();
  p.ingress_policing_rate = -1;  // the schema forbids it; another client's row is checked anyway
  EXPECT_EQ(port_from_row(p).error().message,
            "port p: ingress_policing_rate -1 is negative (0 turns the policer off)");
}

// Durations far beyond the kernel's nanoseconds (what fuzz_rows found
// overflowing) are refused with the column and the value.
TEST(DesiredFromRow, RefusesDurationsOutOfRangeWithTheirColumn) {
  const auto host = kernel_reservations(rsv::AdmissionConfig{});
  auto row = vm_row("vm1", ::getpid(), 1000, 9'223'363'238'420'179'308);
  EXPECT_EQ(desired_from_row(row, *host).error().message,
            "period_us 9223363238420179308 is out of range (0 .. 9223372036854775 µs)");
  row.period_us = 10000;
  row.net_runtime_us = -3;
  EXPECT_EQ(desired_from_row(row, *host).error().message, "net_runtime_us -3 is out of range (0 .. 9223372036854775 µs)");
  // A pid beyond pid_t would wrap onto another process.
  row.net_runtime_us.reset();
  row.pid = 4294967297;
  EXPECT_EQ(desired_from_row(row, *host).error().message, "pid 4294967297 is not a process id (1 .. 2147483647)");
}

// A best-effort VM whose row then asks for an impossible reservation is
// refused with the reason and keeps what it had: its port stays on the
// datapath.
TEST_F(AgentTest, ABadReservationOnABestEffortVmLeavesItsNetworkUp) {
  RecordingDatapath* rec = nullptr;
  Agent agent(config(), recording(pmd_.tid(), &rec));
  auto row = vm_row("vm1", vm_->pid(), 0, 0);
  row.vcpu_runtime_us.reset();
  row.period_us.reset();
  row.ports.push_back(port_row());
  row.ports[0].mac = "02:00:00:00:00:01";
  agent.update(snapshot({row}));
  agent.reconcile();
  ASSERT_EQ(rec->vms.count("vm1"), 1u);
  ASSERT_EQ(agent.status().vms.at(row.uuid).status.at("state"), "running");

  row.vcpu_runtime_us = 30000;  // above the period
  row.period_us = 20000;
  row.fingerprint += "+";
  agent.update(snapshot({row}));
  agent.reconcile();
  const auto st = agent.status().vms.at(row.uuid).status;
  EXPECT_EQ(st.at("state"), "rejected");
  EXPECT_NE(st.at("reason").find("larger than the period"), std::string::npos) << st.at("reason");
  EXPECT_EQ(rec->vms.count("vm1"), 1u) << "a refused row took the VM's port down";
  EXPECT_EQ(rec->removes, 0);
}

// A datapath that outlived the previous agent holds VMs: they are this
// agent's now. An unchanged row is not added again, a VM no longer in the
// database leaves, and a change that is refused puts the port back as it was.
TEST_F(AgentTest, VmsFoundOnAnAdoptedDatapathAreTheAgentsOwn) {
  auto row = vm_row("vm1", vm_->pid(), 2000, 20000);
  row.ports.push_back(port_row());
  row.ports[0].mac = "02:00:00:00:00:01";
  auto port = port_from_row(row.ports[0]);
  ASSERT_TRUE(port.ok());
  VmNetConfig vm1{"vm1", {*port}}, gone{"gone", {*port}};
  gone.ports[0].vhost_path = "/tmp/gone.sock";
  RecordingDatapath* rec = nullptr;
  Agent agent(config(), recording(pmd_.tid(), &rec, nullptr, {vm1, gone}));
  agent.update(snapshot({row}));
  agent.reconcile();
  ASSERT_NE(rec, nullptr);
  EXPECT_EQ(rec->adds, 0) << "an unchanged VM found in force is not added again";
  EXPECT_EQ(rec->vms.count("vm1"), 1u);
  EXPECT_EQ(rec->vms.count("gone"), 0u) << "a VM deleted while no agent ran leaves the datapath";
  EXPECT_EQ(agent.status().vms.at(row.uuid).status.at("state"), "running");

  // A new MAC with a budget the host cannot admit: refused, the port is
  // what it was.
  auto bigger = row;
  bigger.ports[0].mac = "02:00:00:00:00:09";
  bigger.vcpu_runtime_us = 19900;
  bigger.fingerprint += "+";
  agent.update(snapshot({bigger}));
  agent.reconcile();
  EXPECT_EQ(agent.status().vms.at(row.uuid).status.at("state"), "rejected");
  ASSERT_EQ(rec->vms.count("vm1"), 1u) << "a refused change took the VM's port down";
  EXPECT_EQ(rec->vms.at("vm1").ports.at(0).mac, "02:00:00:00:00:01");
}

// Issue 11: a host where a disk-writing neighbour can make capsules late
// says so, with the reason, in Host:capabilities / status and in show; the
// verdict follows the admission mode and the capsule cores.
TEST_F(AgentTest, HostSaysWhetherCapsulesAreSafeAgainstDiskIo) {
  const auto facts = rsv::read_io_isolation_facts();
  if (facts.irq_time_accounting && !facts.guest_without_steal)
    GTEST_SKIP() << "interrupt time is accounted apart (CONFIG_IRQ_TIME_ACCOUNTING) and this is no guest without "
                    "steal time: the warning's condition does not hold here";
  Agent agent(config(), nullptr);
  agent.update(snapshot({}));
  agent.reconcile();
  auto st = agent.status();
  EXPECT_EQ(st.host.capabilities.at("io_isolation"), "unsafe");
  const std::string global = st.host.status.at("io_isolation");
  EXPECT_EQ(global.rfind("not safe against disk-I/O neighbours: ", 0), 0u) << global;
  EXPECT_NE(global.find(facts.guest_without_steal ? "reports no steal time" : "global admission"), std::string::npos)
      << global;
  EXPECT_NE(agent.show().find("io isolation: " + global), std::string::npos) << agent.show();
  // The warning does not change what a VM row means: without reclaim the
  // budget stays a cap (the operator opts in with VM:reclaim=true).
  agent.update(snapshot({vm_row("vm1", vm_->pid(), 2000, 20000)}));
  agent.reconcile();
  for (pid_t tid : vcpus(vm_->pid())) {
    auto p = rsv::get_sched_params(tid);
    ASSERT_TRUE(p.ok());
    EXPECT_TRUE(p->is_deadline());
    EXPECT_EQ(p->flags & rsv::kFlagReclaim, 0u) << "tid " << tid;
  }
  agent.update(snapshot({}));
  agent.reconcile();

  // Partitioned on the last core: safe only if that core takes no device
  // interrupts and runs no unbound workqueues.
  const auto online = rsv::online_cpus();
  if (online.size() < 2) GTEST_SKIP() << "partitioned mode needs 2 CPUs";
  const int core = online.back();
  auto s = snapshot({});
  s.host->admission_mode = "partitioned";
  s.host->capsule_cpus = std::to_string(core);
  agent.update(s);
  agent.reconcile();
  st = agent.status();
  const auto has = [](const std::vector<int>& v, int c) { return std::find(v.begin(), v.end(), c) != v.end(); };
  const bool busy = !facts.irq_time_accounting && (has(facts.device_irq_cpus, core) || has(facts.workqueue_cpus, core));
  EXPECT_EQ(st.host.capabilities.at("io_isolation"), busy || facts.guest_without_steal ? "unsafe" : "safe");
  if (busy) {
    EXPECT_NE(st.host.status.at("io_isolation").find("capsule cpu " + std::to_string(core)), std::string::npos)
        << st.host.status.at("io_isolation");
  }
}

}  // namespace
}  // namespace capsule::agent
