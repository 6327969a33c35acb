#include "dpdk_datapath.h"

#include <sstream>

#include "capsule/wall_clock.h"
#include "capsule/pmd/show.h"

namespace capsule::agent {
namespace {

Result<uint64_t> number(const std::string& key, const std::string& value) {
  try {
    std::size_t used = 0;
    const unsigned long long v = std::stoull(value, &used);
    if (used == value.size()) return uint64_t(v);
  } catch (...) {
  }
  return Error{"'" + key + "=" + value + "' is not a whole number", EINVAL};
}

Result<bool> boolean(const std::string& key, const std::string& value) {
  if (value == "true") return true;
  if (value == "false") return false;
  return Error{"'" + key + "=" + value + "' must be true or false", EINVAL};
}

}  // namespace

Result<pmd::DatapathConfig> datapath_config(const DatapathSettings& s) {
  pmd::DatapathConfig c;
  for (const auto& [k, v] : s.dpdk_options) {
    if (k == "file-prefix") c.eal.file_prefix = v;
    else if (k == "hugepages") {
      if (v == "auto") c.eal.hugepages = pmd::EalOptions::Hugepages::kAuto;
      else if (v == "on") c.eal.hugepages = pmd::EalOptions::Hugepages::kOn;
      else if (v == "off") c.eal.hugepages = pmd::EalOptions::Hugepages::kOff;
      else return Error{"Host:dpdk_options: hugepages=" + v + " must be auto, on or off", EINVAL};
    } else if (k == "memory-mb") {
      auto n = number(k, v);
      if (!n) return Error{"Host:dpdk_options: " + n.error().message, EINVAL};
      c.eal.memory_mb = unsigned(*n);
    } else if (k == "allow-pci") {
      auto b = boolean(k, v);
      if (!b) return Error{"Host:dpdk_options: " + b.error().message, EINVAL};
      c.eal.allow_pci = *b;
    } else if (k == "log-level") {
      c.eal.log_level = v;
    } else if (k == "extra") {
      std::istringstream ss(v);
      for (std::string w; ss >> w;) c.eal.extra.push_back(w);
    } else {
      return Error{"Host:dpdk_options: unknown key '" + k +
                       "' (known: file-prefix, hugepages, memory-mb, allow-pci, log-level, extra)",
                   EINVAL};
    }
  }
  for (const auto& [k, v] : s.uplink) {
    if (k == "devargs") {
      c.uplink_devargs = v;
    } else if (k == "receive") {
      auto b = boolean(k, v);
      if (!b) return Error{"Host:uplink: " + b.error().message, EINVAL};
      c.uplink_receive = *b;
    } else if (k == "max_vms" || k == "ring_size" || k == "mbufs") {
      auto n = number(k, v);
      if (!n) return Error{"Host:uplink: " + n.error().message, EINVAL};
      (k == "max_vms" ? c.max_vms : k == "ring_size" ? c.ring_size : c.mbufs) = unsigned(*n);
    } else {
      return Error{"Host:uplink: unknown key '" + k + "' (known: devargs, receive, max_vms, ring_size, mbufs)",
                   EINVAL};
    }
  }
  return c;
}

Result<pmd::VmConfig> vm_config(const VmNetConfig& config) {
  const std::string who = "VM '" + config.vm + "'";
  if (config.ports.size() != 1)
    return Error{who + " has " + std::to_string(config.ports.size()) +
                     " ports; the capsule datapath serves one vhost-user port per VM",
                 EINVAL};
  const PortConfig& p = config.ports.front();
  if (p.mac.empty())
    return Error{who + ", port '" + p.name + "': the capsule datapath needs the VM's MAC (set Port:mac)", EINVAL};
  auto mac = pmd::MacAddr::parse(p.mac);
  if (!mac) return Error{who + ", port '" + p.name + "': " + mac.error().message, EINVAL};

  pmd::VmConfig vm;
  vm.name = config.vm;
  vm.port.socket_path = p.vhost_path;
  vm.port.mode = p.vhost_client ? pmd::VhostPortConfig::Mode::kClient : pmd::VhostPortConfig::Mode::kServer;
  vm.mac = *mac;
  // OVS's directions: the port's QoS polices what the switch sends to the
  // VM (OVS runs it in netdev_dpdk_vhost_send), ingress policing what it
  // receives from the VM (netdev_dpdk_vhost_rxq_recv).
  if (p.egress) {
    const auto& e = *p.egress;
    auto get = [&](const char* key) { auto it = e.params.find(key); return it == e.params.end() ? 0 : it->second; };
    if (e.type == "egress-policer")
      vm.qos.to_vm.bytes = pmd::BytePolicerConfig::egress_policer(get("cir"), get("cbs"));
    else if (e.type == "trtcm-policer")
      vm.qos.to_vm.bytes = pmd::BytePolicerConfig::trtcm_policer(get("cir"), get("cbs"), get("eir"), get("ebs"));
    else if (e.type == "pkt-policer")
      vm.qos.to_vm.packets = pmd::PacketPolicerConfig{get("pir"), get("pbs")};
    else
      return Error{who + ", port '" + p.name + "': QoS type '" + e.type + "' is not supported by the capsule datapath",
                   EINVAL};
  }
  if (p.ingress_kbps) vm.qos.from_vm.bytes = pmd::BytePolicerConfig::ingress_policing(p.ingress_kbps, p.ingress_burst_kb);
  if (p.ingress_kpps) vm.qos.from_vm.packets = pmd::PacketPolicerConfig{p.ingress_kpps * 1000, p.ingress_burst_kpkts * 1000};
  return vm;
}

std::string CapsuleDpdkDatapath::detail() const {
  const auto u = dp_->uplink_stats();
  return u.present ? "capsule DPDK datapath, uplink " + u.name : "capsule DPDK datapath, no uplink";
}

Status CapsuleDpdkDatapath::add_vm(const VmNetConfig& config) {
  // A VM without ports has no packet work: no port, no PMD thread.
  if (config.ports.empty()) return remove_vm(config.vm);
  auto next = vm_config(config);
  if (!next) return next.error();
  auto cur = held_.find(config.vm);
  int64_t since_ms = cur == held_.end() ? 0 : cur->second.since_ms;
  if (cur == held_.end()) {
    if (Status st = dp_->add_vm(*next); !st) return st;
    since_ms = unix_ms_now();
  } else if (cur->second.net == config) {
    return Status::Ok();  // nothing to change: the port stays connected
  } else {
    const pmd::VmConfig& old = cur->second.cfg;
    const bool same_port = old.port.socket_path == next->port.socket_path && old.port.mode == next->port.mode &&
                           old.mac == next->mac;
    if (same_port) {
      // Only policers changed: swap them under traffic.
      if (Status st = dp_->set_qos(config.vm, next->qos); !st) return st;
    } else {
      if (Status st = dp_->remove_vm(config.vm); !st) return st;
      if (Status st = dp_->add_vm(*next); !st) {
        // The previous port comes back: nothing in force changed.
        if (Status back = dp_->add_vm(old); !back) {
          held_.erase(cur);
          return Error{st.error().message + "; the previous port could not be restored either: " +
                           back.error().message,
                       st.error().errnum};
        }
        return st;
      }
      since_ms = unix_ms_now();
    }
  }
  held_[config.vm] = Held{config, *next, since_ms};
  return Status::Ok();
}

Status CapsuleDpdkDatapath::remove_vm(const std::string& vm) {
  if (!held_.count(vm)) return Status::Ok();
  Status st = dp_->remove_vm(vm);
  held_.erase(vm);
  return st;
}

std::vector<VmNetConfig> CapsuleDpdkDatapath::in_force() const {
  std::vector<VmNetConfig> out;
  for (const auto& [name, h] : held_) out.push_back(h.net);
  return out;
}

const VmNetConfig* CapsuleDpdkDatapath::find(const std::string& vm) const {
  auto it = held_.find(vm);
  return it == held_.end() ? nullptr : &it->second.net;
}

std::optional<pid_t> CapsuleDpdkDatapath::pmd_tid(const std::string& vm) const {
  auto t = dp_->pmd_tid(vm);
  if (!t) return std::nullopt;
  return *t;
}

Result<std::string> CapsuleDpdkDatapath::pmd_stats_show(const std::string& vm) const {
  return pmd::format_pmd_stats(*dp_, vm);
}

Result<std::string> CapsuleDpdkDatapath::fdb_show() const { return pmd::format_fdb(*dp_); }

Result<VmDatapathStats> CapsuleDpdkDatapath::stats(const std::string& vm) const {
  auto s = dp_->stats(vm);
  if (!s) return s.error();
  PortCounters c;
  c.rx_packets = s->from_vm_packets;  // OVS's convention: rx = received from the VM
  c.rx_bytes = s->from_vm_bytes;
  c.tx_packets = s->to_vm_packets;
  c.tx_bytes = s->to_vm_bytes;
  c.drops["policer_from_vm"] = s->from_vm_drops_red + s->from_vm_drops_pps;
  c.drops["policer_to_vm"] = s->to_vm_drops_red + s->to_vm_drops_pps;
  c.drops["port_security"] = s->from_vm_drops_port_security;
  c.drops["ring_full"] = s->ring_full_drops;
  c.drops["vhost_enqueue"] = s->vhost_enqueue_drops;
  c.drops["not_connected"] = s->not_connected_drops;
  c.drops["uplink_tx"] = s->uplink_tx_drops;
  c.connected = s->connected;
  c.connects = s->connects;
  c.last_connect_ms = s->last_connect_ms;
  c.last_disconnect_ms = s->last_disconnect_ms;
  VmDatapathStats out;
  auto it = held_.find(vm);
  if (it != held_.end()) {
    c.socket = it->second.cfg.port.socket_path;
    c.since_ms = it->second.since_ms;
  }
  out.ports[it == held_.end() ? vm : it->second.net.ports.front().name] = c;
  out.cycles_per_packet = s->cycles_per_packet;
  return out;
}

Result<std::unique_ptr<CapsuleDpdkDatapath>> make_capsule_dpdk_datapath(const DatapathSettings& settings) {
  if (settings.type != "capsule")
    return Error{"datapath type '" + settings.type + "' is not available in this capsuled (use \"capsule\")", EINVAL};
  auto cfg = datapath_config(settings);
  if (!cfg) return cfg.error();
  auto dp = pmd::Datapath::create(*cfg);
  if (!dp) return dp.error();
  return std::make_unique<CapsuleDpdkDatapath>(std::move(*dp));
}

}  // namespace capsule::agent
