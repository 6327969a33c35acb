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

bool delivery_settled(Datapath& dp, const std::string& vm, std::chrono::milliseconds timeout) {
  auto seen = [&] {
    const auto s = stats_of(dp, vm);
    return s.to_vm_packets + s.ring_full_drops + s.vhost_enqueue_drops + s.not_connected_drops + s.to_vm_drops_red +
           s.to_vm_drops_pps;
  };
  uint64_t last = seen();
  auto since = std::chrono::steady_clock::now();
  return testkit::wait_until([&] {
    const uint64_t now = seen();
    if (now != last) {
      last = now;
      since = std::chrono::steady_clock::now();
    }
    return std::chrono::steady_clock::now() - since >= std::chrono::milliseconds(50);
  }, timeout);
}

}  // namespace capsule::pmd::testing
