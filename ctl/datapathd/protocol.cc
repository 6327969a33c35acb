#include "protocol.h"

#include <cstdlib>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace capsule::datapathd {
namespace {

std::string env_or(const char* name, const char* def) {
  const char* v = std::getenv(name);
  return v && *v ? v : def;
}

// A field that is missing or of the wrong type, by its path
// ("vm.ports[0].name must be a string").
struct BadField : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Reads the fields of one JSON object, saying which one is wrong.
class Fields {
 public:
  Fields(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) throw BadField(path_ + " must be an object");
  }
  template <typename T>
  T get(const char* key) const {
    if (!j_.contains(key)) throw BadField(at(key) + " is missing");
    return as<T>(j_.at(key), at(key));
  }
  template <typename T>
  T get(const char* key, T def) const {
    return j_.contains(key) && !j_.at(key).is_null() ? as<T>(j_.at(key), at(key)) : def;
  }
  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  Fields object(const char* key) const {
    if (!j_.contains(key)) throw BadField(at(key) + " is missing");
    return Fields(j_.at(key), at(key));
  }
  // The objects of an array field, each with its path.
  std::vector<Fields> objects(const char* key) const {
    if (!j_.contains(key) || !j_.at(key).is_array()) throw BadField(at(key) + " must be an array");
    std::vector<Fields> out;
    for (std::size_t i = 0; i < j_.at(key).size(); ++i)
      out.emplace_back(j_.at(key).at(i), at(key) + "[" + std::to_string(i) + "]");
    return out;
  }

 private:
  std::string at(const char* key) const { return path_ + "." + key; }
  template <typename T>
  static T as(const json& v, const std::string& path) {
    if constexpr (std::is_same_v<T, std::string>) {
      if (!v.is_string()) throw BadField(path + " must be a string");
    } else if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) throw BadField(path + " must be true or false");
    } else if constexpr (std::is_same_v<T, uint64_t>) {
      if (!v.is_number_unsigned()) throw BadField(path + " must be a non-negative integer");
    } else {  // a map of strings or of non-negative integers
      using V = typename T::mapped_type;
      if (!v.is_object()) throw BadField(path + " must be an object");
      T m;
      for (const auto& [k, x] : v.items()) m[k] = as<V>(x, path + "." + k);
      return m;
    }
    return v.get<T>();
  }
  const json& j_;
  std::string path_;
};

template <typename T, typename F>
Result<T> parse(const json& j, const char* what, F&& f) {
  try {
    return f(j);
  } catch (const BadField& e) {
    return Error{std::string("malformed ") + what + ": " + e.what(), EINVAL};
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
    using Map = std::map<std::string, std::string>;
    const Fields f(v, "settings");
    agent::DatapathSettings s;
    s.type = f.get<std::string>("type");
    s.dpdk_options = f.get<Map>("dpdk_options", {});
    s.uplink = f.get<Map>("uplink", {});
    return s;
  });
}

Result<agent::VmNetConfig> vm_from_json(const json& j) {
  return parse<agent::VmNetConfig>(j, "VM configuration", [](const json& v) {
    const Fields f(v, "vm");
    agent::VmNetConfig c;
    c.vm = f.get<std::string>("vm");
    for (const Fields& p : f.objects("ports")) {
      agent::PortConfig port;
      port.name = p.get<std::string>("name");
      port.vhost_path = p.get<std::string>("vhost_path");
      port.vhost_client = p.get<bool>("vhost_client", true);
      port.mac = p.get<std::string>("mac", "");
      port.ingress_kbps = p.get<uint64_t>("ingress_kbps", 0);
      port.ingress_burst_kb = p.get<uint64_t>("ingress_burst_kb", 0);
      port.ingress_kpps = p.get<uint64_t>("ingress_kpps", 0);
      port.ingress_burst_kpkts = p.get<uint64_t>("ingress_burst_kpkts", 0);
      if (p.has("egress")) {
        const Fields e = p.object("egress");
        port.egress = agent::PolicerConfig{e.get<std::string>("type"), e.get<std::map<std::string, uint64_t>>("params", {})};
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
