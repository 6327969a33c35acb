#include "protocol.h"

#include <cstdlib>

namespace capsule::datapathd {
namespace {

std::string env_or(const char* name, const char* def) {
  const char* v = std::getenv(name);
  return v && *v ? v : def;
}

// nlohmann's errors name the type mismatch; `what` says where.
template <typename T, typename F>
Result<T> parse(const json& j, const char* what, F&& f) {
  try {
    return f(j);
  } catch (const json::exception& e) {
    return Error{std::string("malformed ") + what + ": " + e.what(), EINVAL};
  }
}

json policer(const agent::PolicerConfig& p) { return {{"type", p.type}, {"params", p.params}}; }

}  // namespace

std::string default_socket() { return env_or("CAPSULE_RUNDIR", "/run/capsule") + std::string("/datapathd.sock"); }
std::string default_pidfile() { return env_or("CAPSULE_RUNDIR", "/run/capsule") + std::string("/datapathd.pid"); }
std::string default_log_file() { return env_or("CAPSULE_LOGDIR", "/var/log/capsule") + std::string("/datapathd.log"); }

json to_json(const agent::DatapathSettings& s) {
  return {{"type", s.type}, {"dpdk_options", s.dpdk_options}, {"uplink", s.uplink}};
}

json to_json(const agent::VmNetConfig& c) {
  json ports = json::array();
  for (const auto& p : c.ports) {
    json port = {{"name", p.name},
                 {"vhost_path", p.vhost_path},
                 {"vhost_client", p.vhost_client},
                 {"mac", p.mac},
                 {"ingress_kbps", p.ingress_kbps},
                 {"ingress_burst_kb", p.ingress_burst_kb},
                 {"ingress_kpps", p.ingress_kpps},
                 {"ingress_burst_kpkts", p.ingress_burst_kpkts}};
    port["egress"] = p.egress ? policer(*p.egress) : json(nullptr);
    ports.push_back(std::move(port));
  }
  return {{"vm", c.vm}, {"ports", std::move(ports)}};
}

json to_json(const agent::VmDatapathStats& s) {
  json ports = json::object();
  for (const auto& [name, c] : s.ports)
    ports[name] = {{"rx_packets", c.rx_packets},     {"rx_bytes", c.rx_bytes},
                   {"tx_packets", c.tx_packets},     {"tx_bytes", c.tx_bytes},
                   {"drops", c.drops},               {"connected", c.connected},
                   {"connects", c.connects},         {"socket", c.socket},
                   {"since_ms", c.since_ms},         {"last_connect_ms", c.last_connect_ms},
                   {"last_disconnect_ms", c.last_disconnect_ms}};
  return {{"ports", std::move(ports)}, {"cycles_per_packet", s.cycles_per_packet}};
}

Result<agent::DatapathSettings> settings_from_json(const json& j) {
  return parse<agent::DatapathSettings>(j, "settings", [](const json& v) {
    agent::DatapathSettings s;
    s.type = v.at("type").get<std::string>();
    s.dpdk_options = v.value("dpdk_options", json::object()).get<std::map<std::string, std::string>>();
    s.uplink = v.value("uplink", json::object()).get<std::map<std::string, std::string>>();
    return s;
  });
}

Result<agent::VmNetConfig> vm_from_json(const json& j) {
  return parse<agent::VmNetConfig>(j, "VM configuration", [](const json& v) {
    agent::VmNetConfig c;
    c.vm = v.at("vm").get<std::string>();
    for (const auto& p : v.at("ports")) {
      agent::PortConfig port;
      port.name = p.at("name").get<std::string>();
      port.vhost_path = p.at("vhost_path").get<std::string>();
      port.vhost_client = p.value("vhost_client", true);
      port.mac = p.value("mac", std::string());
      port.ingress_kbps = p.value("ingress_kbps", uint64_t(0));
      port.ingress_burst_kb = p.value("ingress_burst_kb", uint64_t(0));
      port.ingress_kpps = p.value("ingress_kpps", uint64_t(0));
      port.ingress_burst_kpkts = p.value("ingress_burst_kpkts", uint64_t(0));
      if (p.contains("egress") && !p.at("egress").is_null()) {
        agent::PolicerConfig pol;
        pol.type = p.at("egress").at("type").get<std::string>();
        pol.params = p.at("egress").value("params", json::object()).get<std::map<std::string, uint64_t>>();
        port.egress = pol;
      }
      c.ports.push_back(std::move(port));
    }
    return c;
  });
}

Result<agent::VmDatapathStats> stats_from_json(const json& j) {
  return parse<agent::VmDatapathStats>(j, "statistics", [](const json& v) {
    agent::VmDatapathStats s;
    s.cycles_per_packet = v.value("cycles_per_packet", 0.0);
    for (const auto& [name, p] : v.at("ports").items()) {
      agent::PortCounters c;
      c.rx_packets = p.value("rx_packets", uint64_t(0));
      c.rx_bytes = p.value("rx_bytes", uint64_t(0));
      c.tx_packets = p.value("tx_packets", uint64_t(0));
      c.tx_bytes = p.value("tx_bytes", uint64_t(0));
      c.drops = p.value("drops", json::object()).get<std::map<std::string, uint64_t>>();
      c.connected = p.value("connected", false);
      c.connects = p.value("connects", uint64_t(0));
      c.socket = p.value("socket", std::string());
      c.since_ms = p.value("since_ms", int64_t(0));
      c.last_connect_ms = p.value("last_connect_ms", int64_t(0));
      c.last_disconnect_ms = p.value("last_disconnect_ms", int64_t(0));
      s.ports[name] = std::move(c);
    }
    return s;
  });
}

json ok(json body) {
  body["ok"] = true;
  return body;
}

json refusal(const std::string& error) { return {{"ok", false}, {"error", error}}; }

}  // namespace capsule::datapathd
