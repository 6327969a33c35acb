#include "pmd_common.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rte_lcore.h>

#include <chrono>
#include <cstring>
#include <cstdio>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace capsule::bench::pmd {

using namespace std::chrono_literals;

double rate_per_second(const std::function<uint64_t()>& count, double warm, double secs) {
  std::this_thread::sleep_for(std::chrono::duration<double>(warm));
  const uint64_t c0 = count();
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  const uint64_t c1 = count();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(c1 - c0) / dt;
}

EmuVm::EmuVm(const std::string& dir, const std::string& name, const std::string& socket, const std::string& mac,
             std::vector<std::string> args, int cpu)
    : VmPeer(dir + "/" + name + ".out", socket, mac,
             [&] {
               args.insert(args.begin(), {"--report-ms", "200"});
               return args;
             }(),
             cpu) {}

OvsDpdk::OvsDpdk(Options o) {
  dir_ = tmp_.path();
  if (dir_.empty()) {
    error_ = "cannot create a directory for OVS";
    return;
  }
  env_ = "OVS_RUNDIR=" + dir_ + " OVS_LOGDIR=" + dir_ + " OVS_DBDIR=" + dir_ + " OVS_SYSCONFDIR=" + dir_ + " ";
  const std::string vswitchd = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
  if (access(vswitchd.c_str(), X_OK) != 0) {
    error_ = vswitchd + " is missing (package openvswitch-switch-dpdk)";
    return;
  }
  std::string out;
  if (run("ovsdb-tool create " + dir_ + "/conf.db /usr/share/openvswitch/vswitch.ovsschema", &out) != 0) {
    error_ = "ovsdb-tool create failed: " + out;
    return;
  }
  // Every OVS file (mgmt sockets, pidfiles, logs) in dir_: nothing in
  // /var/run/openvswitch, where another OVS may live.
  const std::vector<std::string> env = {"/usr/bin/env", "OVS_RUNDIR=" + dir_, "OVS_LOGDIR=" + dir_,
                                        "OVS_DBDIR=" + dir_, "OVS_SYSCONFDIR=" + dir_};
  auto with_env = [&](std::vector<std::string> argv) {
    argv.insert(argv.begin(), env.begin(), env.end());
    return argv;
  };
  ovsdb_ = testkit::ChildProcess::spawn(with_env({"/usr/sbin/ovsdb-server", dir_ + "/conf.db", "--remote=punix:" + dir_ + "/db.sock",
                                         "--unixctl=" + dir_ + "/ovsdb.ctl", "--log-file=" + dir_ + "/ovsdb.log", "-vconsole:off"}),
                                        dir_ + "/ovsdb.out");
  if (!testkit::wait_until([&] { return access((dir_ + "/db.sock").c_str(), F_OK) == 0; }, 5s)) {
    error_ = "ovsdb-server did not start";
    return;
  }
  int rc = 0;
  vsctl("--no-wait init", &rc);
  std::string cfg = "--no-wait set Open_vSwitch . other_config:dpdk-init=true "
                    "other_config:dpdk-extra=\"--no-pci --in-memory --file-prefix=capsule-ovs-" +
                    std::to_string(getpid()) +
                    "\" other_config:dpdk-socket-mem=512 other_config:dpdk-socket-limit=512 "
                    "other_config:pmd-cpu-mask=" +
                    std::to_string(1 << o.pmd_cpu);
  if (o.pmd_maxsleep_us >= 0) cfg += " other_config:pmd-maxsleep=" + std::to_string(o.pmd_maxsleep_us);
  vsctl(cfg, &rc);
  if (rc != 0) {
    error_ = "cannot configure OVS";
    return;
  }
  vswitchd_ = testkit::ChildProcess::spawn(with_env({vswitchd, "unix:" + dir_ + "/db.sock", "--unixctl=" + dir_ + "/vswitchd.ctl",
                                            "--log-file=" + dir_ + "/vswitchd.log", "-vconsole:off"}),
                                           dir_ + "/vswitchd.out");
  if (!testkit::wait_until([&] { return vsctl("get Open_vSwitch . dpdk_initialized").find("true") != std::string::npos; },
                           30s)) {
    error_ = "ovs-vswitchd-dpdk did not initialise DPDK (see " + dir_ + "/vswitchd.log)";
    return;
  }
  vsctl("add-br br0 -- set bridge br0 datapath_type=netdev", &rc);
  if (rc != 0) {
    error_ = "cannot add bridge br0";
    return;
  }
  run(env_ + "ovs-ofctl del-flows br0");
  ok_ = true;
}

OvsDpdk::~OvsDpdk() {
  if (vswitchd_) {
    run(env_ + "ovs-appctl -t " + dir_ + "/vswitchd.ctl exit");
    testkit::wait_until([&] { return !vswitchd_->running(); }, 5s);
    vswitchd_->terminate(std::chrono::milliseconds(3000));
  }
  if (ovsdb_) ovsdb_->terminate(std::chrono::milliseconds(3000));
  // EAL's runtime directory: --in-memory writes nothing into it but OVS's
  // EAL still creates it and never removes it.
  std::error_code ignored;
  std::filesystem::remove_all("/var/run/dpdk/capsule-ovs-" + std::to_string(getpid()), ignored);
}

std::string OvsDpdk::vsctl(const std::string& args, int* rc) {
  std::string out;
  const int r = run(env_ + "ovs-vsctl --db=unix:" + dir_ + "/db.sock --timeout=20 " + args, &out);
  if (rc) *rc = r;
  return out;
}

bool OvsDpdk::add_vhost_port(const std::string& name, const std::string& socket) {
  int rc = 0;
  vsctl("add-port br0 " + name + " -- set Interface " + name +
            " type=dpdkvhostuserclient options:vhost-server-path=" + socket,
        &rc);
  return rc == 0;
}

bool OvsDpdk::add_dpdk_port(const std::string& name, const std::string& devargs) {
  int rc = 0;
  vsctl("add-port br0 " + name + " -- set Interface " + name + " type=dpdk options:dpdk-devargs=" + devargs, &rc);
  return rc == 0;
}

bool OvsDpdk::flow(const std::string& spec) { return run(env_ + "ovs-ofctl add-flow br0 '" + spec + "'") == 0; }

namespace {
uint64_t field(const std::string& text, const std::string& key) {
  auto p = text.find(key);
  if (p == std::string::npos) return 0;
  return std::strtoull(text.c_str() + p + key.size(), nullptr, 10);
}
}  // namespace

uint64_t OvsDpdk::port_tx_packets(const std::string& port) {
  std::string out;
  run(env_ + "ovs-ofctl dump-ports br0 " + port, &out);
  auto p = out.find("tx pkts=");
  return p == std::string::npos ? 0 : field(out.substr(p), "tx pkts=");
}

uint64_t OvsDpdk::port_rx_packets(const std::string& port) {
  std::string out;
  run(env_ + "ovs-ofctl dump-ports br0 " + port, &out);
  return field(out, "rx pkts=");
}

void OvsDpdk::clear_pmd_stats() { run(env_ + "ovs-appctl -t " + dir_ + "/vswitchd.ctl dpif-netdev/pmd-stats-clear"); }

double OvsDpdk::pmd_cycles_per_packet() {
  std::string out;
  run(env_ + "ovs-appctl -t " + dir_ + "/vswitchd.ctl dpif-netdev/pmd-stats-show", &out);
  const std::string key = "avg processing cycles per packet:";
  auto p = out.find(key);
  return p == std::string::npos ? 0 : std::atof(out.c_str() + p + key.size());
}

std::vector<pid_t> OvsDpdk::pmd_tids() const {
  std::vector<pid_t> v;
  if (!vswitchd_) return v;
  const std::string base = "/proc/" + std::to_string(vswitchd_->pid()) + "/task";
  if (DIR* d = opendir(base.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream in(base + "/" + e->d_name + "/comm");
      std::string comm;
      std::getline(in, comm);
      if (comm.rfind("pmd-", 0) == 0) v.push_back(pid_t(std::atoi(e->d_name)));
    }
    closedir(d);
  }
  return v;
}

}  // namespace capsule::bench::pmd
