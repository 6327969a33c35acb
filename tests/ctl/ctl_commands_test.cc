// capsule-ctl against a real ovsdb-server serving the Capsule schema: the
// generic db-ctl-base commands and capsule's own, as one table run in order
// on one database (later rows see what earlier rows wrote). docs/ctl.md
// lists the same table.
#include <regex>

#include <gtest/gtest.h>

#include "capsule/harness.h"

namespace capsule {
namespace {

struct Step {
  std::vector<std::string> args;
  int rc;
  std::string out;  // regex the whole stdout must match (ECMAScript, multiline via [\s\S])
  std::string err = "";  // substring of stderr ("" = anything)
};

class CtlCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = harness::Ovsdb::start(dir_.path());
    ASSERT_TRUE(db.ok()) << db.error().message;
    db_ = std::move(*db);
  }
  void run_steps(const std::vector<Step>& steps) {
    for (const auto& s : steps) {
      auto r = harness::ctl(*db_, s.args);
      std::string cmd;
      for (const auto& a : s.args) cmd += a + " ";
      EXPECT_EQ(r.rc, s.rc) << "capsule-ctl " << cmd << "\nstdout: " << r.out << "\nstderr: " << r.err;
      EXPECT_TRUE(std::regex_match(r.out, std::regex(s.out)))
          << "capsule-ctl " << cmd << "\nstdout: \"" << r.out << "\"\nwanted: " << s.out;
      if (!s.err.empty()) {
        EXPECT_NE(r.err.find(s.err), std::string::npos) << "capsule-ctl " << cmd << "\nstderr: " << r.err;
      }
    }
  }
  harness::TempDir dir_{"capsule-ctl-test"};
  std::unique_ptr<harness::Ovsdb> db_;
};

const std::string kUuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n";

TEST_F(CtlCommandsTest, GenericCommands) {
  run_steps({
      // create / get / set / list / find with records found by name
      {{"create", "Host", "chassis=h1"}, 0, kUuid},
      {{"get", "Host", "h1", "next_cfg", "cur_cfg"}, 0, "0\n0\n"},
      {{"set", "Host", "h1", "utilization_bound=0.5", "capsule_cpus=\"0-1\""}, 0, ""},
      {{"get", "Host", "h1", "utilization_bound", "capsule_cpus"}, 0, "0.5\n\"0-1\"\n"},
      {{"get", "Host", ".", "chassis"}, 0, "h1\n"},  // "." = the only row
      {{"create", "VM", "name=vm1", "chassis=h1", "pid=42"}, 0, kUuid},
      {{"list", "VM", "vm1"}, 0, "[\\s\\S]*name +: vm1\n[\\s\\S]*"},
      {{"--columns=name,pid", "list", "VM"}, 0, "name +: vm1\npid +: 42\n"},
      {{"--columns=name", "find", "VM", "pid=42"}, 0, "name +: vm1\n"},
      {{"--columns=name", "find", "VM", "pid=43"}, 0, ""},
      // maps: add, remove, get KEY, set KEY
      {{"add", "VM", "vm1", "options", "a=1", "b=2"}, 0, ""},
      {{"get", "VM", "vm1", "options:a"}, 0, "\"1\"\n"},
      {{"set", "VM", "vm1", "options:c=3"}, 0, ""},
      {{"remove", "VM", "vm1", "options", "a"}, 0, ""},
      {{"get", "VM", "vm1", "options"}, 0, "\\{b=\"2\", c=\"3\"\\}\n"},
      {{"clear", "VM", "vm1", "options"}, 0, ""},
      {{"get", "VM", "vm1", "options"}, 0, "\\{\\}\n"},
      // --if-exists
      {{"get", "VM", "nope", "name"}, 1, "", "no row \"nope\" in table VM"},
      {{"--if-exists", "get", "VM", "nope", "name"}, 0, ""},
      {{"--if-exists", "set", "VM", "nope", "pid=1"}, 0, ""},
      // "--" chains commands in one transaction; --id=@name refers to a new row
      {{"--", "--id=@q", "create", "QoS", "type=egress-policer", "other_config:cir=1000", "--", "create", "Port",
        "name=p1", "vhost_path=/tmp/p1.sock", "qos=@q", "--", "add", "VM", "vm1", "ports", "@p"},
       1, "", "row id \"@p\" is referenced but never created"},
      {{"--", "--id=@q", "create", "QoS", "type=egress-policer", "other_config:cir=1000", "--", "--id=@p", "create",
        "Port", "name=p1", "vhost_path=/tmp/p1.sock", "qos=@q", "--", "add", "VM", "vm1", "ports", "@p"},
       0, kUuid + kUuid},  // one line per create
      {{"get", "QoS", "p1", "type"}, 0, "egress-policer\n"},  // QoS found through its Port's name
      {{"get", "Port", "p1", "qos:type"}, 1, ""},
      // output formats
      {{"--format=csv", "--columns=name,pid", "list", "VM"}, 0, "name,pid\nvm1,42\n"},
      {{"--format=json", "--columns=name", "list", "VM"}, 0,
       "\\{\"data\":\\[\\[\"vm1\"\\]\\],\"headings\":\\[\"name\"\\]\\}\n"},
      {{"--format=table", "--columns=name,pid", "list", "VM"}, 0, "name +pid\n-+ +-+\nvm1 +42 *\n"},
      {{"--oneline", "get", "Host", "h1", "next_cfg", "cur_cfg"}, 0, "0\\\\n0\n"},
      // wait-until returns at once when the condition already holds
      {{"wait-until", "VM", "vm1", "pid=42"}, 0, ""},
      // comment is a no-op that shows in the database log
      {{"comment", "hello"}, 0, ""},
      // --dry-run leaves the database alone
      {{"--dry-run", "set", "VM", "vm1", "pid=7"}, 0, ""},
      {{"get", "VM", "vm1", "pid"}, 0, "42\n"},
      // the schema is enforced by ovsdb-server
      {{"set", "Host", "h1", "utilization_bound=2"}, 1, "", "constraint violation"},
      {{"set", "Host", "h1", "datapath_type=bogus"}, 1, "", "constraint violation"},
      {{"set", "VM", "vm1", "pid=0"}, 1, "", "constraint violation"},
      {{"create", "VM", "name=vm1", "chassis=h1"}, 1, "", "constraint violation"},  // name is an index
      {{"get", "Nope", "x", "y"}, 1, "", "unknown table \"Nope\""},
      {{"get", "VM", "vm1", "nope"}, 1, "", "does not contain a column whose name matches \"nope\""},
      // destroy: ports and QoS are not root, so they go with the VM
      {{"destroy", "VM", "vm1"}, 0, ""},
      {{"list", "Port"}, 0, ""},
      {{"list", "QoS"}, 0, ""},
      {{"--if-exists", "destroy", "VM", "vm1"}, 0, ""},
      {{"destroy", "VM", "vm1"}, 1, "", "no row \"vm1\" in table VM"},
      {{"--all", "destroy", "Host"}, 0, ""},
      {{"list", "Host"}, 0, ""},
  });
}

TEST_F(CtlCommandsTest, CapsuleCommands) {
  run_steps({
      {{"add-vm", "vm1"}, 1, "", "the database has no Host row"},
      {{"create", "Host", "chassis=h1"}, 0, kUuid},
      {{"add-vm", "vm1", "pid=42", "--", "set-rsv", "vm1", "2ms", "20ms"}, 0, ""},
      {{"get", "VM", "vm1", "chassis", "vcpu_runtime_us", "period_us", "deadline_us"}, 0, "h1\n2000\n20000\n\\[\\]\n"},
      {{"add-vm", "vm1"}, 1, "", "cannot create VM vm1 because it already exists"},
      {{"--may-exist", "add-vm", "vm1", "pid=43"}, 0, ""},
      {{"get", "VM", "vm1", "pid"}, 0, "43\n"},
      {{"--chassis=h2", "add-vm", "vm2", "pid=44"}, 0, ""},  // a chassis without Host row yet
      {{"get", "VM", "vm2", "chassis"}, 0, "h2\n"},
      {{"create", "Host", "chassis=h2"}, 0, kUuid},
      {{"add-vm", "vm3"}, 1, "", "the database holds 2 hosts: say which with --chassis"},
      // set-rsv: durations, deadline, network budget; nonsense refused
      {{"--net=500us", "set-rsv", "vm1", "1.5ms", "10ms", "8ms"}, 0, ""},
      {{"get", "VM", "vm1", "vcpu_runtime_us", "period_us", "deadline_us", "net_runtime_us"}, 0,
       "1500\n10000\n8000\n500\n"},
      {{"set-rsv", "vm1", "3", "10"}, 0, ""},  // bare numbers are microseconds
      {{"get", "VM", "vm1", "vcpu_runtime_us"}, 0, "3\n"},
      {{"set-rsv", "vm1", "20ms", "10ms"}, 1, "", "the runtime is above the period: need 0 < RUNTIME <= DEADLINE <= PERIOD"},
      {{"set-rsv", "vm1", "0", "10ms"}, 1, "", "the runtime is zero: need 0 < RUNTIME <= DEADLINE <= PERIOD"},
      {{"set-rsv", "vm1", "2ms", "10ms", "1ms"}, 1, "", "the deadline is below the runtime: need 0 < RUNTIME"},
      {{"set-rsv", "vm1", "2ms", "10ms", "12ms"}, 1, "",
       "set-rsv vm1: the deadline is above the period: need 0 < RUNTIME <= DEADLINE <= PERIOD (got runtime 2000 us, "
       "deadline 12000 us, period 10000 us)"},
      // a refused set-rsv writes nothing: the last good row stands
      {{"get", "VM", "vm1", "vcpu_runtime_us", "period_us", "deadline_us"}, 0, "3\n10\n\\[\\]\n"},
      // a deadline shorter than the period, and back to D = P without one
      {{"set-rsv", "vm1", "1ms", "20ms", "5ms"}, 0, ""},
      {{"get", "VM", "vm1", "deadline_us"}, 0, "5000\n"},
      {{"show"}, 0, "[\\s\\S]*reservation: vcpu 1000 us, period 20000 us, deadline 5000 us[\\s\\S]*"},
      {{"set-rsv", "vm1", "3", "10"}, 0, ""},
      {{"get", "VM", "vm1", "deadline_us"}, 0, "\\[\\]\n"},
      {{"set-rsv", "vm1", "2 fortnights", "10ms"}, 1, "", "unknown unit"},
      {{"set-rsv", "nope", "2ms", "10ms"}, 1, "", "no VM named nope"},
      // --net=auto: capsuled derives the budget (from the policers and the
      // host's calibration); a fixed budget again clears auto and its margin
      {{"--net=auto", "--net-margin=35%", "set-rsv", "vm1", "2ms", "20ms"}, 0, ""},
      {{"get", "VM", "vm1", "net_budget", "net_margin", "net_runtime_us"}, 0, "auto\n0.35\n\\[\\]\n"},
      {{"show"}, 0, "[\\s\\S]*reservation: vcpu 2000 us, period 20000 us, net auto \\(\\+35 % margin\\)\n[\\s\\S]*"},
      {{"--net=auto", "set-rsv", "vm1", "2ms", "20ms"}, 0, ""},
      {{"get", "VM", "vm1", "net_margin"}, 0, "\\[\\]\n"},  // capsuled's default (20 %)
      {{"--net-margin=10", "set-rsv", "vm1", "2ms", "20ms"}, 1, "", "--net-margin applies to --net=auto only"},
      {{"--net=auto", "--net-margin=lots", "set-rsv", "vm1", "2ms", "20ms"}, 1, "", "is not a percentage"},
      {{"--net=1ms", "set-rsv", "vm1", "2ms", "20ms"}, 0, ""},
      {{"get", "VM", "vm1", "net_budget", "net_margin", "net_runtime_us"}, 0, "\\[\\]\n\\[\\]\n1000\n"},
      {{"set", "VM", "vm1", "net_budget=sometimes"}, 1, "", "sometimes"},  // the schema's enum
      // calibrate refuses to store what it could not measure
      {{"--budgets=150", "calibrate"}, 1, "", "nothing was stored"},
      {{"list", "Calibration"}, 0, ""},
      // ports and QoS
      {{"add-port", "vm1", "p1", "/run/vm1.sock", "mac=\"52:54:00:00:00:01\"", "vhost_mode=server"}, 0, ""},
      {{"get", "Port", "p1", "vhost_path", "mac", "vhost_mode"}, 0,
       "\"/run/vm1.sock\"\n\"52:54:00:00:00:01\"\nserver\n"},
      {{"add-port", "vm2", "p1", "/run/x.sock"}, 1, "", "already exists on VM vm1"},
      {{"set-qos", "p1", "trtcm-policer", "cir=1000", "cbs=100", "eir=2000", "ebs=200"}, 0, ""},
      {{"get", "QoS", "p1", "type", "other_config"}, 0,
       "trtcm-policer\n\\{cbs=\"100\", cir=\"1000\", ebs=\"200\", eir=\"2000\"\\}\n"},
      {{"set-qos", "p1", "egress-policer", "cir=1000", "eir=1"}, 1, "", "egress-policer has no key \"eir\" (its keys: cir cbs)"},
      // Values as OVS documents them (non-negative integers) and in range; the
      // user's own text in the message, and nothing written (the trtcm-policer stays).
      {{"set-qos", "p1", "egress-policer", "cir=-5"}, 1, "", "egress-policer: cir=-5 is not a non-negative integer"},
      {{"set-qos", "p1", "egress-policer", "cir=+5"}, 1, "", "cir=+5 is not a non-negative integer"},
      {{"set-qos", "p1", "egress-policer", "cir=0x10"}, 1, "", "cir=0x10 is not a non-negative integer"},
      {{"set-qos", "p1", "egress-policer", "cir=1000", "cbs=12k"}, 1, "", "cbs=12k is not a non-negative integer"},
      {{"set-qos", "p1", "egress-policer", "cir="}, 1, "", "cir= is not a non-negative integer"},
      {{"set-qos", "p1", "egress-policer", "cir=125000000001"}, 1, "", "cir=125000000001 is out of range"},
      {{"set-qos", "p1", "pkt-policer", "pir=99999999999999999999999"}, 1, "", "pir=99999999999999999999999 is not"},
      {{"set-qos", "p1", "egress-policer", "cbs=2000"}, 1, "", "egress-policer needs cir"},
      {{"set-qos", "p1", "egress-policer", "=5"}, 1, "", "\"=5\" is not KEY=VALUE"},
      {{"get", "QoS", "p1", "type", "other_config"}, 0,
       "trtcm-policer\n\\{cbs=\"100\", cir=\"1000\", ebs=\"200\", eir=\"2000\"\\}\n"},
      {{"set-qos", "p1", "bogus"}, 1, "", "unknown QoS type"},
      {{"set-qos", "p1", "pkt-policer", "pir=10000", "pbs=64"}, 0, ""},
      {{"--columns=type,other_config", "list", "QoS"}, 0,
       "type +: pkt-policer\nother_config +: \\{pbs=\"64\", pir=\"10000\"\\}\n"},  // the old QoS row is gone
      {{"set", "Port", "p1", "ingress_policing_rate=10000", "ingress_policing_burst=1000"}, 0, ""},
      {{"show"}, 0,
       "Host \"h1\"\n[\\s\\S]*VM \"vm1\"\n[\\s\\S]*Port \"p1\"\n +vhost: /run/vm1.sock \\(server\\)\n +mac: "
       "52:54:00:00:00:01\n +qos: pkt-policer pbs=64 pir=10000 \\(what the VM receives\\)\n +ingress_policing: 10000 "
       "kbps burst 1000 kb, 0 kpps burst 0 kpkts \\(what the VM sends\\)\nHost \"h2\"\n[\\s\\S]*VM \"vm2\"\n[\\s\\S]*"},
      {{"set-qos", "p1", "none"}, 0, ""},
      {{"list", "QoS"}, 0, ""},
      {{"del-port", "vm2", "p1"}, 1, "", "port p1 is not on VM vm2"},
      {{"del-port", "vm1", "p1"}, 0, ""},
      {{"list", "Port"}, 0, ""},
      {{"del-port", "p1"}, 1, "", "no port named p1"},
      {{"--if-exists", "del-port", "p1"}, 0, ""},
      {{"add-port", "vm1", "p2", "/run/vm1b.sock"}, 0, ""},
      {{"del-vm", "vm1"}, 0, ""},
      {{"list", "Port"}, 0, ""},  // ports go with their VM
      {{"del-vm", "vm1"}, 1, "", "no VM named vm1"},
      {{"--if-exists", "del-vm", "vm1"}, 0, ""},
      {{"--wait", "--chassis=h9", "add-vm", "vm9"}, 1, "", "no Host row for chassis \"h9\""},
      {{"--version"}, 0, "[\\s\\S]*DB Schema 2.0.0\n"},
      {{"--help"}, 0, "[\\s\\S]*Examples:[\\s\\S]*"},
  });
}

}  // namespace
}  // namespace capsule
