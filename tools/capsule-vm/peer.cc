#include "capsule/vm/peer.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <fstream>
#include <sstream>

namespace capsule::vm {

VmPeer::VmPeer(const std::string& out_file, const std::string& socket, const std::string& mac,
               const std::vector<std::string>& args, int cpu)
    : out_(out_file) {
  std::vector<std::string> argv;
  if (cpu >= 0) argv = {"/usr/bin/taskset", "-c", std::to_string(cpu)};
  argv.push_back(testkit::sibling_binary("capsule-vm"));
  argv.insert(argv.end(), {"--socket", socket, "--mac", mac, "--die-with-parent"});
  argv.insert(argv.end(), args.begin(), args.end());
  proc_ = testkit::ChildProcess::spawn(argv, out_);
}

VmPeer::~VmPeer() {
  if (proc_) proc_->terminate(std::chrono::milliseconds(3000));
}

std::string VmPeer::output() const {
  std::ifstream in(out_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool VmPeer::wait_ready(std::chrono::milliseconds timeout) {
  auto ready = [&] { return output().find("capsule-vm: ready") != std::string::npos; };
  testkit::wait_until([&] { return ready() || !proc_ || !proc_->running(); }, timeout);
  return ready();
}

Counters parse_counters(const std::string& output) {
  std::istringstream in(output);
  std::string line, last;
  while (std::getline(in, line))
    if (line.rfind("report ", 0) == 0 || line.rfind("final ", 0) == 0) last = line;
  Counters c;
  std::istringstream ls(last);
  std::string kv;
  ls >> kv;  // the event
  while (ls >> kv)
    if (auto eq = kv.find('='); eq != std::string::npos) c[kv.substr(0, eq)] = std::stoull(kv.substr(eq + 1));
  return c;
}

Counters VmPeer::counters() const { return parse_counters(output()); }

double VmPeer::own_rate(const std::string& key, std::chrono::milliseconds window) const {
  const auto c0 = counters();
  std::this_thread::sleep_for(window);  // the measurement window
  const auto c1 = counters();
  if (!c0.count("elapsed_ms") || !c1.count("elapsed_ms") || !c0.count(key) || !c1.count(key)) return 0;
  const double ms = double(c1.at("elapsed_ms")) - double(c0.at("elapsed_ms"));
  return ms > 0 ? double(c1.at(key) - c0.at(key)) * 1000 / ms : 0;
}

double VmPeer::longest_gap_ms(const std::string& key, double from_ms) const {
  std::istringstream in(output());
  double last_growth = -1, prev = -1, last_elapsed = -1, gap = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("report ", 0) != 0) continue;
    const auto c = parse_counters(line);
    if (!c.count("elapsed_ms") || !c.count(key)) continue;
    const double t = double(c.at("elapsed_ms")), v = double(c.at(key));
    if (t < from_ms) {
      prev = v;
      continue;
    }
    if (last_growth < 0) last_growth = t;
    if (prev >= 0 && v > prev) {
      gap = std::max(gap, t - last_growth);
      last_growth = t;
    }
    prev = v;
    last_elapsed = t;
  }
  return std::max(gap, last_elapsed - last_growth);
}

Counters VmPeer::finish() {
  if (proc_) proc_->terminate(std::chrono::milliseconds(5000));
  return counters();
}

Counters VmPeer::wait_exit(std::chrono::milliseconds timeout) {
  if (proc_) testkit::wait_until([&] { return !proc_->running(); }, timeout);
  return finish();
}

pid_t VmPeer::vcpu_tid() const {
  const std::string o = output();
  const auto p = o.find("vcpu_tids=");
  return p == std::string::npos ? 0 : pid_t(std::atoi(o.c_str() + p + 10));
}

uint64_t thread_cpu_ns(pid_t pid, pid_t tid) {
  const std::string task = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid);
  // schedstat: time on CPU in ns (exact); stat: utime + stime in ticks.
  std::ifstream sched(task + "/schedstat");
  uint64_t ns = 0;
  if (sched >> ns) return ns;
  std::ifstream in(task + "/stat");
  const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto p = s.rfind(')');
  if (p == std::string::npos) return 0;
  std::istringstream ss(s.substr(p + 2));
  std::string f;
  uint64_t ut = 0, st = 0;
  for (int i = 3; i <= 15 && ss >> f; ++i) {  // fields 14 and 15: utime, stime
    if (i == 14) ut = std::stoull(f);
    if (i == 15) st = std::stoull(f);
  }
  return (ut + st) * (1'000'000'000ull / uint64_t(sysconf(_SC_CLK_TCK)));
}

int run_shell(const std::string& cmd, std::string* out) {
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return -1;
  std::string s;
  char buf[512];
  while (fgets(buf, sizeof buf, f)) s += buf;
  const int st = pclose(f);
  if (out) *out = s;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace capsule::vm
