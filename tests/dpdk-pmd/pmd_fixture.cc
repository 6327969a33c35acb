#include "pmd_fixture.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace capsule::pmd::testing {

TempDir::TempDir() {
  char tmpl[] = "/tmp/capsule-pmd-XXXXXX";
  const char* p = mkdtemp(tmpl);
  path_ = p ? p : "/tmp";
}

TempDir::~TempDir() {
  if (path_.rfind("/tmp/capsule-pmd-", 0) == 0) shell("rm -rf '" + path_ + "'");
}

VmProcess::VmProcess(const TempDir& dir, const std::string& name, const std::string& socket, const std::string& mac,
                     std::vector<std::string> extra) {
  out_ = dir.file(name + ".out");
  std::vector<std::string> argv = {testkit::sibling_binary("capsule-vm"), "--socket", socket, "--mac", mac, "--die-with-parent"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  proc_ = testkit::ChildProcess::spawn(argv, out_);
}

VmProcess::~VmProcess() {
  if (proc_) proc_->terminate(std::chrono::milliseconds(3000));
}

std::string VmProcess::output() const {
  std::ifstream in(out_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool VmProcess::wait_ready(std::chrono::milliseconds timeout) {
  return testkit::wait_until(
      [&] { return output().find("capsule-vm: ready") != std::string::npos || (proc_ && !proc_->running()); },
             timeout) &&
         output().find("capsule-vm: ready") != std::string::npos;
}

Counters VmProcess::last_counters() const {
  std::istringstream in(output());
  std::string line, last;
  while (std::getline(in, line))
    if (line.rfind("report ", 0) == 0 || line.rfind("final ", 0) == 0) last = line;
  Counters c;
  std::istringstream ls(last);
  std::string kv;
  ls >> kv;  // event
  while (ls >> kv) {
    auto eq = kv.find('=');
    if (eq != std::string::npos) c[kv.substr(0, eq)] = std::stoull(kv.substr(eq + 1));
  }
  return c;
}

Counters VmProcess::finish() {
  if (proc_) proc_->terminate(std::chrono::milliseconds(5000));
  return last_counters();
}

Counters VmProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (proc_) testkit::wait_until([&] { return !proc_->running(); }, timeout);
  return finish();
}

pid_t VmProcess::vcpu_tid() const {
  const std::string o = output();
  auto p = o.find("vcpu_tids=");
  return p == std::string::npos ? 0 : pid_t(std::atoi(o.c_str() + p + 10));
}

Netns::Netns(const std::string& name) : name_(name) {
  shell("ip netns del " + name_ + " 2>/dev/null");
  ok_ = shell("ip netns add " + name_) == 0;
  if (ok_) {
    exec("ip link set lo up");
    // Quiet namespace: no IPv6 router/neighbour chatter in the counters.
    exec("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
  }
}

Netns::~Netns() {
  if (ok_) shell("ip netns del " + name_);
}

int Netns::exec(const std::string& cmd, std::string* out) const {
  return shell("ip netns exec " + name_ + " sh -c '" + cmd + "'", out);
}

int shell(const std::string& cmd, std::string* out) {
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return -1;
  std::string s;
  char buf[512];
  while (fgets(buf, sizeof buf, f)) s += buf;
  const int st = pclose(f);
  if (out) *out = s;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

uint64_t tid_cpu_ns(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto p = s.rfind(')');
  if (p == std::string::npos) return 0;
  std::istringstream ss(s.substr(p + 2));
  std::string f;
  uint64_t ut = 0, st = 0;
  for (int i = 3; i <= 15 && ss >> f; ++i) {
    if (i == 14) ut = std::stoull(f);
    if (i == 15) st = std::stoull(f);
  }
  return (ut + st) * (1'000'000'000ull / uint64_t(sysconf(_SC_CLK_TCK)));
}

std::string thread_name(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/comm");
  std::string s;
  std::getline(in, s);
  return s;
}

Result<std::unique_ptr<Datapath>> make_datapath(const std::string& uplink, PollOptions dispatcher, unsigned ring_size) {
  DatapathConfig cfg;
  cfg.ring_size = ring_size;
  cfg.mbufs = std::max(16383u, 4 * ring_size - 1);
  cfg.eal.program = "test_dpdk_pmd";
  cfg.uplink_devargs = uplink;
  cfg.dispatcher_poll = dispatcher;
  cfg.max_vms = 8;
  return Datapath::create(cfg);
}

VmConfig vm_config(const std::string& name, const std::string& socket, const std::string& mac) {
  VmConfig v;
  v.name = name;
  v.port.socket_path = socket;
  v.mac = MacAddr::parse(mac).value();
  return v;
}

VmStats stats_of(Datapath& dp, const std::string& vm) {
  auto s = dp.stats(vm);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  return s.ok() ? s.value() : VmStats{};
}

}  // namespace capsule::pmd::testing
