// A private OVS-DPDK for OVS-mode tests: ovsdb-server with a fresh
// Open_vSwitch database and ovs-vswitchd-dpdk (Debian's
// openvswitch-switch-dpdk) in one temporary directory, with
// `--dummy-numa 0,0,0,0,0,0` (fake cores 0-5 without affinity, as OVS's own
// tests use, so PMD threads can outnumber this host's CPUs), pmd-cpu-mask
// 0x3c (PMDs on fake cores 2-5), DPDK `--no-pci --in-memory` (no hugepage
// files, no PCI probe) with a file prefix of this branch and pid, 256 MB,
// pmd-maxsleep=1000 (idle PMDs sleep up to 1 ms instead of spinning on a
// shared test machine) and a netdev bridge br0. OVS_RUNDIR points into the directory, so nothing
// lands in /run/openvswitch. Both processes are children, stopped on
// destruction.
#pragma once

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "capsule/harness.h"
#include "capsule/rsv/discovery.h"
#include "capsule/testkit.h"

namespace capsule::testing {

class OvsDpdkHost {
 public:
  static constexpr const char* kVswitchd = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
  static constexpr const char* kSchema = "/usr/share/openvswitch/vswitch.ovsschema";

  // "" when it runs, else why not (the test skips or fails with it).
  std::string start() {
    if (::access(kVswitchd, X_OK) != 0) return std::string(kVswitchd) + " is missing (package openvswitch-switch-dpdk)";
    if (dir_.path().empty()) return "cannot make a directory";
    auto created = harness::run({harness::find_program("ovsdb-tool"), "create", dir_.file("ovs.db"), kSchema});
    if (created.rc) return "ovsdb-tool create: " + created.err;
    ovsdb_ = testkit::ChildProcess::spawn(
        env({harness::find_program("ovsdb-server"), dir_.file("ovs.db"), "--remote=punix:" + socket(),
             "--unixctl=" + dir_.file("ovsdb.ctl"), "--log-file=" + dir_.file("ovsdb.log"), "-vconsole:off",
             "--no-chdir"}),
        dir_.file("ovsdb.out"));
    if (!testkit::wait_until([&] { return ::access(socket().c_str(), F_OK) == 0 && vsctl({"--no-wait", "init"}).rc == 0; },
                             std::chrono::seconds(10)))
      return "ovsdb-server did not come up: " + testkit::read_file(dir_.file("ovsdb.log"));
    auto r = vsctl({"--no-wait", "set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
                    "other_config:dpdk-extra=\"--no-pci --in-memory --file-prefix=" + file_prefix() + "\"",
                    "other_config:dpdk-socket-mem=256", "other_config:dpdk-socket-limit=256",
                    "other_config:pmd-cpu-mask=0x3c", "other_config:pmd-maxsleep=1000"});
    if (r.rc) return "cannot configure OVS: " + r.err;
    if (std::string why = start_vswitchd(); !why.empty()) return why;
    r = vsctl({"add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev"});
    if (r.rc) return "cannot add bridge br0: " + r.err;
    return "";
  }

  ~OvsDpdkHost() {
    stop_vswitchd();
    if (ovsdb_) ovsdb_->terminate(std::chrono::seconds(3));
    // EAL's runtime directory, made even with --in-memory.
    std::error_code ignored;
    std::filesystem::remove_all("/var/run/dpdk/" + file_prefix(), ignored);
  }

  // ovs-vswitchd stopped (ovs-appctl exit, as its service does) and started
  // again on the same database: new PMD threads, new tids.
  std::string restart_vswitchd() {
    stop_vswitchd();
    return start_vswitchd();
  }

  std::string file_prefix() const { return "ovsmode-" + std::to_string(getpid()); }
  std::string socket() const { return dir_.file("ovs.sock"); }
  std::string remote() const { return "unix:" + socket(); }
  std::string pidfile() const { return dir_.file("ovs-vswitchd.pid"); }
  std::string dir() const { return dir_.path(); }
  std::string log() const { return testkit::read_file(dir_.file("ovs-vswitchd.log")); }
  pid_t vswitchd_pid() const { return vswitchd_ ? vswitchd_->pid() : 0; }

  // The PMD thread of fake core `core` ("pmd-c<core>/id:<n>"), 0 if none.
  pid_t pmd_thread(int core) const {
    auto all = rsv::discover_threads(vswitchd_pid());
    if (!all) return 0;
    for (const auto& t : rsv::threads_with_role(*all, rsv::ThreadRole::kOvsPmd))
      if (t.index == core) return t.tid;
    return 0;
  }

  harness::CmdResult vsctl(std::vector<std::string> args) const {
    args.insert(args.begin(), {"/usr/bin/ovs-vsctl", "--db=" + remote(), "--timeout=20"});
    return harness::run(env(args));
  }
  // ovs-ofctl on this OVS's bridges (a controller's flows), e.g.
  // ofctl({"add-flow", "br0", "in_port=p0,actions=drop"}).
  harness::CmdResult ofctl(std::vector<std::string> args) const {
    args.insert(args.begin(), "/usr/bin/ovs-ofctl");
    return harness::run(env(args));
  }
  harness::CmdResult appctl(std::vector<std::string> args) const {
    args.insert(args.begin(), {"/usr/bin/ovs-appctl", "-t", dir_.file("ovs-vswitchd.ctl")});
    return harness::run(env(args));
  }
  // The configuration an operator or controller writes (no status columns,
  // which ovs-vswitchd rewrites as it runs), for before/after comparisons.
  std::string configuration() const {
    std::string out;
    const std::vector<std::vector<std::string>> tables = {
        {"Open_vSwitch", "bridges", "other_config", "external_ids"},
        {"Bridge", "name", "ports", "datapath_type", "other_config", "external_ids"},
        {"Port", "name", "interfaces", "qos", "other_config", "external_ids"},
        {"Interface", "name", "type", "options", "other_config", "external_ids", "ingress_policing_rate",
         "ingress_policing_burst"},
        {"QoS", "type", "other_config", "queues", "external_ids"}};
    for (const auto& table : tables) {
      std::vector<std::string> argv{"/usr/bin/ovsdb-client", "dump", remote(), "Open_vSwitch"};
      argv.insert(argv.end(), table.begin(), table.end());
      auto r = harness::run(argv);
      out += r.out + r.err;
    }
    return out;
  }

 private:
  std::vector<std::string> env(std::vector<std::string> argv) const {
    argv.insert(argv.begin(), {"/usr/bin/env", "OVS_RUNDIR=" + dir_.path(), "OVS_LOGDIR=" + dir_.path(),
                               "OVS_DBDIR=" + dir_.path(), "OVS_SYSCONFDIR=" + dir_.path()});
    return argv;
  }

  std::string start_vswitchd() {
    vswitchd_ = testkit::ChildProcess::spawn(
        env({kVswitchd, remote(), "--dummy-numa", "0,0,0,0,0,0", "--unixctl=" + dir_.file("ovs-vswitchd.ctl"),
             "--pidfile=" + pidfile(), "--log-file=" + dir_.file("ovs-vswitchd.log"), "-vconsole:off", "--no-chdir"}),
        dir_.file("ovs-vswitchd.out"));
    if (!vswitchd_) return "cannot start ovs-vswitchd-dpdk";
    if (!testkit::wait_until(
            [&] {
              return !vswitchd_->running() ||
                     vsctl({"--no-wait", "get", "Open_vSwitch", ".", "dpdk_initialized"}).out.find("true") !=
                         std::string::npos;
            },
            std::chrono::seconds(60)) ||
        !vswitchd_->running())
      return "ovs-vswitchd-dpdk did not initialise DPDK: " + log();
    // Up once it serves its control socket and wrote its pidfile.
    if (!testkit::wait_until([&] { return rsv::read_pidfile(pidfile()).ok() && appctl({"version"}).rc == 0; },
                             std::chrono::seconds(20)))
      return "ovs-vswitchd-dpdk does not answer: " + log();
    return "";
  }

  void stop_vswitchd() {
    if (!vswitchd_) return;
    (void)appctl({"exit"});
    vswitchd_->wait_exit(std::chrono::seconds(10));
    vswitchd_->terminate(std::chrono::seconds(3));
    vswitchd_.reset();
  }

  testkit::TempDir dir_{"capsule-ovsmode"};
  std::unique_ptr<testkit::ChildProcess> ovsdb_, vswitchd_;
};

}  // namespace capsule::testing
