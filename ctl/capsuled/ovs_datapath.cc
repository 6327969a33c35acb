#include "ovs_datapath.h"

#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "capsule/ovs/shim.h"
#include "capsule/ovs/vswitch.h"
#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/spec.h"
#include "capsule/wall_clock.h"
#include "port_link.h"
#include "prometheus_label.h"

namespace capsule::agent {
namespace {

using nlohmann::json;

constexpr long long kTimeoutMs = 10'000;
// Rx queues pinned per port: a vhost port has as many as the guest enables
// (OVS ignores entries past the port's count, and queues it does not pin
// would go to a shared PMD, outside the VM's capsule).
constexpr int kMaxQueues = 8;

void log(capsule_ovs_log_level level, const std::string& msg) { capsule_ovs_log(level, msg.c_str()); }

// A malloc'd C string from the shim, as a std::string (freed).
std::string take(char* s) {
  std::string out = s ? s : "";
  std::free(s);
  return out;
}

// "2-5,8" -> {2,3,4,5,8}; an error names the text.
Result<std::vector<int>> parse_cores(const std::string& text) {
  std::vector<int> cores;
  std::stringstream s(text);
  for (std::string item; std::getline(s, item, ',');) {
    char* end = nullptr;
    const long lo = std::strtol(item.c_str(), &end, 10);
    long hi = lo;
    if (end != item.c_str() && *end == '-') hi = std::strtol(end + 1, &end, 10);
    if (item.empty() || *end || lo < 0 || hi < lo || hi > 1023)
      return Error{"Host other_config:ovs-pmd-cores=\"" + text + "\" is not a list of cores (e.g. 2-5,8)", EINVAL};
    for (long c = lo; c <= hi; ++c) cores.push_back(int(c));
  }
  if (cores.empty()) return Error{"Host other_config:ovs-pmd-cores is empty", EINVAL};
  return cores;
}

// OVS's pmd-cpu-mask (hex, "0x" optional) as a set of cores.
std::set<int> mask_cores(const std::string& mask) {
  std::set<int> cores;
  std::string hex = mask.rfind("0x", 0) == 0 || mask.rfind("0X", 0) == 0 ? mask.substr(2) : mask;
  int bit = 0;
  for (auto it = hex.rbegin(); it != hex.rend(); ++it, bit += 4) {
    const char c = char(std::tolower(*it));
    const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return {};
    for (int b = 0; b < 4; ++b)
      if (v & (1 << b)) cores.insert(bit + b);
  }
  return cores;
}

std::string affinity(int core) {
  std::string s;
  for (int q = 0; q < kMaxQueues; ++q) s += (q ? "," : "") + std::to_string(q) + ":" + std::to_string(core);
  return s;
}

// The core of "0:5,1:5,..." (capsule writes one core for every queue).
int core_of_affinity(const std::string& text) {
  const auto colon = text.find(':');
  if (colon == std::string::npos) return -1;
  return std::atoi(text.c_str() + colon + 1);
}

std::string pmd_name(int core) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "pmd-c%02d", core);
  return buf;
}

// "1ms/20ms" -> runtime, period.
Status parse_budget(const std::string& text, OvsSettings& s) {
  const auto bad = [&](const std::string& why) {
    return Error{"Host other_config:ovs-uplink-pmd-budget=\"" + text + "\" " + why, EINVAL};
  };
  const auto slash = text.find('/');
  if (slash == std::string::npos) return bad("is not RUNTIME/PERIOD (e.g. 1ms/20ms)");
  auto runtime = rsv::parse_duration(text.substr(0, slash));
  auto period = rsv::parse_duration(text.substr(slash + 1));
  if (!runtime || !period) return bad("is not RUNTIME/PERIOD (e.g. 1ms/20ms)");
  if (runtime->count() <= 0 || *runtime > *period) return bad("needs 0 < RUNTIME <= PERIOD");
  s.uplink_runtime = *runtime;
  s.uplink_period = *period;
  return Status::Ok();
}

}  // namespace

Result<OvsSettings> ovs_settings(const std::map<std::string, std::string>& keys) {
  OvsSettings s;
  for (const auto& [key, value] : keys) {
    if (key == "ovs-db") {
      s.db = value;
    } else if (key == "ovs-bridge") {
      s.bridge = value;
    } else if (key == "ovs-pidfile") {
      s.pidfile = value;
    } else if (key == "ovs-pmd-cores") {
      auto cores = parse_cores(value);
      if (!cores) return cores.error();
      s.pmd_cores = *cores;
    } else if (key == "ovs-uplink-pmd-core") {
      auto cores = parse_cores(value);
      if (!cores || cores->size() != 1)
        return Error{"Host other_config:ovs-uplink-pmd-core=\"" + value + "\" is not one core (e.g. 2)", EINVAL};
      s.uplink_core = cores->front();
    } else if (key == "ovs-uplink-pmd-budget") {
      if (Status b = parse_budget(value, s); !b) return b.error();
    } else {
      return Error{"Host other_config:" + key + " is not a setting of OVS mode (ovs-db, ovs-bridge, ovs-pidfile, "
                   "ovs-pmd-cores, ovs-uplink-pmd-core, ovs-uplink-pmd-budget)", EINVAL};
    }
    if (value.empty() || value.find('\0') != std::string::npos)
      return Error{"Host other_config:" + key + " is empty", EINVAL};
  }
  if ((s.uplink_core >= 0) != (s.uplink_period.count() > 0))
    return Error{"Host other_config:ovs-uplink-pmd-core and ovs-uplink-pmd-budget go together: the uplink's PMD "
                 "core and its reservation (e.g. 2 and 1ms/20ms)", EINVAL};
  for (int c : s.pmd_cores)
    if (c == s.uplink_core)
      return Error{"Host other_config:ovs-uplink-pmd-core=" + std::to_string(c) +
                       " is one of ovs-pmd-cores: the uplink's PMD is shared, a VM's PMD serves only that VM",
                   EINVAL};
  if (s.pmd_cores.empty())
    return Error{"datapath_type=ovs needs Host other_config:ovs-pmd-cores: the OVS PMD cores capsule gives to VMs, "
                 "one each (all in OVS's pmd-cpu-mask)", EINVAL};
  return s;
}

Result<std::unique_ptr<Datapath>> make_ovs_datapath(const DatapathSettings& settings, std::function<void()> on_change) {
  auto s = ovs_settings(settings.ovs);
  if (!s) return s.error();
  char* err = nullptr;
  capsule_vswitch* vs = capsule_vswitch_create(s->db.c_str(), kTimeoutMs, &err);
  if (!vs) return Error{take(err), ECONNREFUSED};
  return std::unique_ptr<Datapath>(new OvsDatapath(std::move(*s), vs, std::move(on_change)));
}

OvsDatapath::OvsDatapath(OvsSettings settings, capsule_vswitch* vs, std::function<void()> on_change)
    : settings_(std::move(settings)), vs_(vs), on_change_(std::move(on_change)) {
  // What an earlier capsuled left in OVS is this one's: the VMs and their
  // cores. The agent compares them with the rows (an empty port list never
  // equals a row's, so each is written once more, in place: OVS sees no
  // change and no port flaps).
  const json owned = json::parse(take(capsule_vswitch_owned(vs_)), nullptr, false);
  if (owned.is_object())
    for (const auto& [vm, ports] : owned.items()) {
      in_force_.push_back(VmNetConfig{vm, {}});
      vms_[vm] = VmNetConfig{vm, {}};
      since_ms_[vm] = unix_ms_now();
      for (const auto& p : ports)
        if (int core = core_of_affinity(p.value("rxq_affinity", std::string())); core >= 0) core_[vm] = core;
    }
  if (!in_force_.empty())
    log(CAPSULE_LOG_INFO, "OVS mode: " + std::to_string(in_force_.size()) + " VMs found in OVS's database");
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  watcher_ = std::thread([this] { watch(); });
}

OvsDatapath::~OvsDatapath() {
  stopping_ = true;
  const uint64_t one = 1;
  if (stop_fd_ >= 0) (void)!::write(stop_fd_, &one, sizeof one);
  if (watcher_.joinable()) watcher_.join();
  if (stop_fd_ >= 0) ::close(stop_fd_);
  // The agent released the uplink PMD's capsule first (~Agent, release_all).
  if (uplink_given_ > 0) restore_affinity(uplink_given_);
  capsule_vswitch_destroy(vs_);
}

std::string OvsDatapath::detail() const {
  return std::string("OVS-DPDK through ") + settings_.db + ", bridge " + settings_.bridge +
         (capsule_vswitch_connected(vs_) ? "" : " (database connection lost: reconnecting)");
}

std::string OvsDatapath::unsupported(const PortConfig& p) {
  if (!p.vhost_client)
    return "port " + p.name + ": vhost_mode=server is not available in OVS mode (OVS's server-mode dpdkvhostuser "
           "ports are deprecated): use vhost_mode=client, QEMU serving the socket";
  if (p.egress && p.egress->type == "pkt-policer")
    return "port " + p.name + ": QoS pkt-policer is not available in OVS mode (OVS 3.1 has no packet-rate QoS "
           "for DPDK ports): use egress-policer/trtcm-policer, or capsule mode";
  if (p.ingress_kpps || p.ingress_burst_kpkts)
    return "port " + p.name + ": ingress_policing_kpkts_rate is not available in OVS mode (OVS 3.1 does not "
           "implement it for DPDK ports): use ingress_policing_rate (kbps), or capsule mode";
  return "";
}

std::string OvsDatapath::auto_budget_obstacle() const {
  return "net_budget=auto is not available in OVS mode yet (the Calibration rows measure capsule's own datapath "
         "thread, not OVS's PMD): set net_runtime_us";
}

Status OvsDatapath::add_vm(const VmNetConfig& config) {
  for (const auto& p : config.ports)
    if (std::string why = unsupported(p); !why.empty()) return Error{why, ENOTSUP};

  // The VM's own PMD core: the one it has, else the first free one.
  int core = -1;
  {
    std::lock_guard lock(mu_);
    if (auto it = core_.find(config.vm); it != core_.end()) core = it->second;
    for (int c : settings_.pmd_cores) {
      if (core >= 0) break;
      bool used = false;
      for (const auto& [vm, taken] : core_) used = used || taken == c;
      if (!used) core = c;
    }
  }
  if (core < 0) {
    std::string cores;
    for (int c : settings_.pmd_cores) cores += (cores.empty() ? "" : ",") + std::to_string(c);
    return Error{"no free OVS PMD core for VM " + config.vm + ": every core of Host other_config:ovs-pmd-cores (" +
                     cores + ") serves another VM",
                 ENOSPC};
  }
  const std::string mask = take(capsule_vswitch_other_config(vs_, "pmd-cpu-mask"));
  if (!mask_cores(mask).count(core))
    return Error{"OVS PMD core " + std::to_string(core) + " (Host other_config:ovs-pmd-cores) is not in OVS's " +
                     "other_config:pmd-cpu-mask" + (mask.empty() ? " (unset)" : "=" + mask) +
                     ": OVS would not poll the VM's queues",
                 EINVAL};

  // The shim's view of the ports (the strings live in `config` and these).
  const std::string aff = affinity(core);
  std::vector<std::vector<std::string>> qos_keys(config.ports.size()), qos_values(config.ports.size());
  std::vector<std::vector<const char*>> key_ptrs(config.ports.size()), value_ptrs(config.ports.size());
  std::vector<capsule_vswitch_port> ports;
  for (std::size_t i = 0; i < config.ports.size(); ++i) {
    const PortConfig& p = config.ports[i];
    capsule_vswitch_port cp{};
    cp.name = p.name.c_str();
    cp.vhost_server_path = p.vhost_path.c_str();
    cp.rxq_affinity = aff.c_str();
    if (p.egress) {
      cp.qos_type = p.egress->type.c_str();
      for (const auto& [k, v] : p.egress->params) {
        qos_keys[i].push_back(k);
        qos_values[i].push_back(std::to_string(v));
      }
      for (std::size_t k = 0; k < qos_keys[i].size(); ++k) {
        key_ptrs[i].push_back(qos_keys[i][k].c_str());
        value_ptrs[i].push_back(qos_values[i][k].c_str());
      }
      cp.n_qos = key_ptrs[i].size();
      cp.qos_keys = key_ptrs[i].data();
      cp.qos_values = value_ptrs[i].data();
    }
    cp.ingress_kbps = (long long)p.ingress_kbps;
    cp.ingress_burst_kb = (long long)p.ingress_burst_kb;
    ports.push_back(cp);
  }
  if (std::string err = take(capsule_vswitch_apply(vs_, settings_.bridge.c_str(), config.vm.c_str(), ports.data(),
                                                   ports.size(), kTimeoutMs));
      !err.empty())
    return Error{err, EINVAL};
  {
    std::lock_guard lock(mu_);
    if (!core_.count(config.vm))
      log(CAPSULE_LOG_INFO, "VM " + config.vm + ": OVS PMD core " + std::to_string(core) + " on bridge " +
                                settings_.bridge);
    core_[config.vm] = core;
  }
  if (!vms_.count(config.vm)) since_ms_[config.vm] = unix_ms_now();
  vms_[config.vm] = config;
  return Status::Ok();
}

Status OvsDatapath::remove_vm(const std::string& vm) {
  std::string err = take(capsule_vswitch_remove(vs_, vm.c_str(), kTimeoutMs));
  if (!err.empty()) return Error{err, EIO};
  vms_.erase(vm);
  since_ms_.erase(vm);
  std::lock_guard lock(mu_);
  // The agent released the reservation first (release_vm): the thread is
  // back in CFS and can have its own affinity again.
  if (auto g = given_.find(vm); g != given_.end()) restore_affinity(g->second);
  core_.erase(vm);
  given_.erase(vm);
  announced_.erase(vm);
  return Status::Ok();
}

std::map<int, pid_t> OvsDatapath::pmd_threads() const {
  std::map<int, pid_t> out;
  auto pid = rsv::read_pidfile(settings_.pidfile);
  if (!pid) return out;
  auto threads = rsv::discover_threads(*pid);
  if (!threads) return out;
  for (const auto& t : rsv::threads_with_role(*threads, rsv::ThreadRole::kOvsPmd)) out.emplace(t.index, t.tid);
  return out;
}

std::optional<pid_t> OvsDatapath::pmd_tid(const std::string& vm) const {
  int core;
  {
    std::lock_guard lock(mu_);
    auto it = core_.find(vm);
    if (it == core_.end()) return std::nullopt;
    core = it->second;
  }
  const auto threads = pmd_threads();
  auto t = threads.find(core);
  std::lock_guard lock(mu_);
  given_[vm] = t == threads.end() ? 0 : t->second;
  if (t == threads.end()) return std::nullopt;
  unpin(t->second);
  return t->second;
}

// ovs-vswitchd --dummy-numa never pins its PMDs, but they inherit the main
// thread's affinity, which DPDK's EAL narrowed to its main lcore (OVS 3.1
// restores it only without dummy NUMA): a thread whose affinity is narrower
// than its root domain cannot be SCHED_DEADLINE (EPERM). The VM's PMD is
// let run on every CPU its cpuset allows (global EDF places it), and gets
// its own affinity back when the VM leaves OVS mode.
void OvsDatapath::unpin(pid_t tid) const {
  cpu_set_t now, all;
  CPU_ZERO(&now);
  if (::sched_getaffinity(tid, sizeof now, &now) != 0) return;
  CPU_ZERO(&all);
  for (int cpu : rsv::online_cpus()) CPU_SET(cpu, &all);
  if (CPU_EQUAL(&now, &all)) return;
  if (::sched_setaffinity(tid, sizeof all, &all) != 0) {
    log(CAPSULE_LOG_WARN, "OVS PMD thread " + std::to_string(tid) + ": cannot widen its CPU affinity: " +
                              std::strerror(errno));
    return;
  }
  if (!pinned_.count(tid)) pinned_.emplace(tid, now);
}

void OvsDatapath::restore_affinity(pid_t tid) {
  auto it = pinned_.find(tid);
  if (it == pinned_.end()) return;
  (void)::sched_setaffinity(tid, sizeof it->second, &it->second);  // ESRCH: the thread is gone
  pinned_.erase(it);
}

// OVS makes a new PMD thread (new tid) when ovs-vswitchd restarts or
// pmd-cpu-mask changes, unpinned and under CFS: the agent must reserve it
// again. /proc is read every 250 ms (a few dozen threads), and on_change
// fires once per new thread.
void OvsDatapath::watch() {
  pollfd fd{stop_fd_, POLLIN, 0};
  while (!stopping_) {
    if (::poll(&fd, 1, 250) > 0) break;
    std::map<std::string, int> cores;
    bool uplink_asked;
    {
      std::lock_guard lock(mu_);
      cores = core_;
      uplink_asked = settings_.uplink_core >= 0 && uplink_given_ >= 0;
    }
    if (cores.empty() && !uplink_asked) continue;
    const auto threads = pmd_threads();
    bool changed = false;
    {
      std::lock_guard lock(mu_);
      for (const auto& [vm, core] : cores) {
        auto t = threads.find(core);
        const pid_t now = t == threads.end() ? 0 : t->second;
        auto given = given_.find(vm);
        if (given == given_.end() || given->second == now || announced_[vm] == now) continue;
        announced_[vm] = now;
        changed = true;
        log(CAPSULE_LOG_INFO, "VM " + vm + ": OVS PMD thread of core " + std::to_string(core) + " is " +
                                  (now ? "now tid " + std::to_string(now) : "gone") + " (was tid " +
                                  std::to_string(given->second) + ")");
      }
      if (uplink_asked) {
        auto t = threads.find(settings_.uplink_core);
        const pid_t now = t == threads.end() ? 0 : t->second;
        if (uplink_given_ != now && uplink_announced_ != now) {
          uplink_announced_ = now;
          changed = true;
          log(CAPSULE_LOG_INFO, "OVS uplink PMD thread of core " + std::to_string(settings_.uplink_core) + " is " +
                                    (now ? "now tid " + std::to_string(now) : "gone") + " (was tid " +
                                    std::to_string(uplink_given_) + ")");
        }
      }
    }
    if (changed && on_change_) on_change_();
  }
}

Result<VmDatapathStats> OvsDatapath::stats(const std::string& vm) const {
  const json owned = json::parse(take(capsule_vswitch_owned(vs_)), nullptr, false);
  VmDatapathStats out;
  auto vm_it = vms_.find(vm);
  if (!owned.is_object() || !owned.contains(vm)) return out;
  for (const auto& p : owned.at(vm)) {
    PortCounters c;
    const json st = p.value("statistics", json::object());
    c.rx_packets = st.value("rx_packets", uint64_t(0));
    c.rx_bytes = st.value("rx_bytes", uint64_t(0));
    c.tx_packets = st.value("tx_packets", uint64_t(0));
    c.tx_bytes = st.value("tx_bytes", uint64_t(0));
    for (const auto& [key, value] : st.items())
      if (key.find("drop") != std::string::npos && value.is_number_integer() && value.get<int64_t>() > 0)
        c.drops[key] = value.get<uint64_t>();
    c.connected = p.value("link_state", std::string()) == "up";
    c.connects = c.connected ? 1 : 0;
    const std::string name = p.value("port", std::string());
    if (vm_it != vms_.end())
      for (const auto& pc : vm_it->second.ports)
        if (pc.name == name) c.socket = pc.vhost_path;
    auto since = since_ms_.find(vm);
    c.since_ms = since == since_ms_.end() ? 0 : since->second;
    c.last_connect_ms = c.connected ? c.since_ms : 0;
    out.ports[name] = c;
  }
  return out;
}

std::string OvsDatapath::serving(const std::string& vm) const {
  int core;
  {
    std::lock_guard lock(mu_);
    auto it = core_.find(vm);
    if (it == core_.end()) return "";
    core = it->second;
  }
  const auto threads = pmd_threads();
  auto t = threads.find(core);
  return "OVS PMD " + pmd_name(core) + " (core " + std::to_string(core) + ", " +
         (t == threads.end() ? std::string("no such thread in ovs-vswitchd now") : "tid " + std::to_string(t->second)) +
         ") polls only this VM's rx queues: what the VM sends is switched inside its capsule; what it receives is "
         "switched by the PMD polling the sender's queue, outside it (the uplink's: " +
         (settings_.uplink_core >= 0 ? pmd_name(settings_.uplink_core) + ", in a capsule of its own)"
                                     : std::string("a shared PMD in no capsule)"));
}

Result<std::string> OvsDatapath::pmd_stats_show(const std::string& vm) const {
  std::ostringstream o;
  const auto threads = pmd_threads();
  std::map<std::string, int> cores;
  {
    std::lock_guard lock(mu_);
    cores = core_;
  }
  if (!vm.empty() && !cores.count(vm)) return Error{"no VM " + vm + " on the OVS datapath", ENOENT};
  o << "OVS datapath: bridge " << settings_.bridge << ", database " << settings_.db << "\n";
  for (const auto& [vm_name, core] : cores) {
    if (!vm.empty() && vm_name != vm) continue;
    auto t = threads.find(core);
    o << "VM " << vm_name << ": " << pmd_name(core) << " (core " << core << ")"
      << (t == threads.end() ? ", no thread" : ", tid " + std::to_string(t->second)) << "\n";
    auto counters = stats(vm_name);
    if (counters)
      for (const auto& [port, c] : counters->ports)
        o << "  port " << port << ": " << port_link_status(c).state << ", from VM " << c.rx_packets << " pkts, to VM "
          << c.tx_packets << " pkts\n";
  }
  o << "(ovs-appctl dpif-netdev/pmd-rxq-show and pmd-stats-show tell OVS's side)\n";
  return o.str();
}

std::vector<HostThread> OvsDatapath::host_threads() const {
  if (settings_.uplink_core < 0) return {};
  const int core = settings_.uplink_core;
  const auto threads = pmd_threads();
  auto t = threads.find(core);
  HostThread h;
  h.name = "host:ovs-uplink-pmd";
  h.role = "pmd";
  h.tid = t == threads.end() ? 0 : t->second;
  h.runtime = settings_.uplink_runtime;
  h.period = settings_.uplink_period;
  h.what = "OVS uplink PMD " + pmd_name(core) + " (core " + std::to_string(core) + ", " +
           (h.tid ? "tid " + std::to_string(h.tid) : std::string("no such thread in ovs-vswitchd now")) + ")";
  std::lock_guard lock(mu_);
  uplink_given_ = h.tid;
  if (h.tid) unpin(h.tid);
  return {h};
}

std::string OvsDatapath::metrics(const std::string& labels) const {
  std::map<std::string, int> cores;
  {
    std::lock_guard lock(mu_);
    cores = core_;
  }
  const auto threads = pmd_threads();
  std::ostringstream o;
  o << "# HELP capsule_ovs_pmd Which OVS PMD thread polls a VM's rx queues (vm), or the uplink's (vm=\"\").\n"
    << "# TYPE capsule_ovs_pmd gauge\n";
  auto line = [&](const std::string& vm, int core) {
    auto t = threads.find(core);
    o << "capsule_ovs_pmd{" << labels << ",vm=\"" << prometheus_label(vm) << "\",pmd=\"" << pmd_name(core) << "\",core=\"" << core
      << "\",tid=\"" << (t == threads.end() ? 0 : t->second) << "\"} " << (t == threads.end() ? 0 : 1) << "\n";
  };
  for (const auto& [vm, core] : cores) line(vm, core);
  if (settings_.uplink_core >= 0) line("", settings_.uplink_core);
  return o.str();
}

}  // namespace capsule::agent
