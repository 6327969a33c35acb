#include "capsule/ovs/db.h"

#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>

#include "capsule/ovs/shim.h"

namespace capsule::ovs {
namespace {

using nlohmann::json;

template <typename T>
std::optional<T> opt(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return it->get<T>();
}

StringMap smap(const json& j, const char* key) {
  StringMap m;
  if (auto it = j.find(key); it != j.end() && it->is_object())
    for (auto& [k, v] : it->items())
      if (v.is_string()) m[k] = v.get<std::string>();
  return m;
}

PortRow parse_port(const json& p) {
  PortRow r;
  r.uuid = p.at("uuid").get<std::string>();
  r.name = p.at("name").get<std::string>();
  r.vhost_path = p.at("vhost_path").get<std::string>();
  r.vhost_mode = opt<std::string>(p, "vhost_mode");
  r.mac = opt<std::string>(p, "mac");
  r.ingress_policing_rate = p.value("ingress_policing_rate", int64_t{0});
  r.ingress_policing_burst = p.value("ingress_policing_burst", int64_t{0});
  r.ingress_policing_kpkts_rate = p.value("ingress_policing_kpkts_rate", int64_t{0});
  r.ingress_policing_kpkts_burst = p.value("ingress_policing_kpkts_burst", int64_t{0});
  r.options = smap(p, "options");
  if (auto it = p.find("qos"); it != p.end() && it->is_object())
    r.qos = QosRow{it->at("uuid").get<std::string>(), it->at("type").get<std::string>(),
                   smap(*it, "other_config")};
  return r;
}

VmRow parse_vm(const json& v) {
  VmRow r;
  r.uuid = v.at("uuid").get<std::string>();
  r.name = v.at("name").get<std::string>();
  r.chassis = v.at("chassis").get<std::string>();
  r.enabled = opt<bool>(v, "enabled");
  r.pid = opt<int64_t>(v, "pid");
  r.pidfile = opt<std::string>(v, "pidfile");
  r.vcpu_runtime_us = opt<int64_t>(v, "vcpu_runtime_us");
  r.period_us = opt<int64_t>(v, "period_us");
  r.deadline_us = opt<int64_t>(v, "deadline_us");
  r.net_runtime_us = opt<int64_t>(v, "net_runtime_us");
  r.net_budget = opt<std::string>(v, "net_budget");
  r.net_margin = opt<double>(v, "net_margin");
  r.reclaim = opt<bool>(v, "reclaim");
  r.options = smap(v, "options");
  for (const auto& p : v.at("ports")) r.ports.push_back(parse_port(p));
  // Row uuids of ports and QoS change when a QoS is replaced; the
  // fingerprint is the configuration, so drop them from it.
  json cfg = v;
  for (auto& p : cfg["ports"]) {
    p.erase("uuid");
    if (p["qos"].is_object()) p["qos"].erase("uuid");
  }
  r.fingerprint = cfg.dump();
  return r;
}

CalibrationRow parse_calibration(const json& c) {
  CalibrationRow r;
  r.direction = c.at("direction").get<std::string>();
  r.frame_size = c.at("frame_size").get<int64_t>();
  r.period_us = c.at("period_us").get<int64_t>();
  for (auto& [budget, pps] : c.at("throughput").items()) r.throughput[std::stoll(budget)] = pps.get<double>();
  r.pps_per_cpu = c.at("pps_per_cpu").get<double>();
  r.intercept_pps = c.at("intercept_pps").get<double>();
  r.r_squared = c.at("r_squared").get<double>();
  r.cycles_per_packet = c.at("cycles_per_packet").get<double>();
  r.date = c.at("date").get<std::string>();
  return r;
}

}  // namespace

Result<Snapshot> parse_snapshot(const std::string& text) {
  try {
    json j = json::parse(text);
    Snapshot s;
    s.connected = j.value("connected", false);
    s.complete = j.value("complete", true);
    s.chassis = j.value("chassis", std::string());
    if (auto it = j.find("host"); it != j.end() && it->is_object()) {
      const json& h = *it;
      HostRow r;
      r.uuid = h.at("uuid").get<std::string>();
      r.chassis = h.at("chassis").get<std::string>();
      r.datapath_type = opt<std::string>(h, "datapath_type");
      r.dpdk_options = smap(h, "dpdk_options");
      r.uplink = smap(h, "uplink");
      r.other_config = smap(h, "other_config");
      r.admission_mode = opt<std::string>(h, "admission_mode");
      r.utilization_bound = opt<double>(h, "utilization_bound");
      r.capsule_cpus = opt<std::string>(h, "capsule_cpus");
      r.next_cfg = h.value("next_cfg", int64_t{0});
      r.cur_cfg = h.value("cur_cfg", int64_t{0});
      if (auto c = h.find("calibration"); c != h.end())
        for (const auto& curve : *c) r.calibration.push_back(parse_calibration(curve));
      s.host = std::move(r);
    }
    for (const auto& v : j.at("vms")) s.vms.push_back(parse_vm(v));
    return s;
  } catch (const json::exception& e) {
    return Error{std::string("cannot read the database snapshot: ") + e.what(), EINVAL};
  }
}

std::string to_json(const StatusUpdate& u) {
  json j = json::object();
  if (u.cur_cfg) j["cur_cfg"] = *u.cur_cfg;
  j["host"] = {{"status", u.host.status},
               {"capabilities", u.host.capabilities},
               {"statistics", u.host.statistics}};
  auto rows = [](const std::map<std::string, RowStatus>& m) {
    json o = json::object();
    for (const auto& [uuid, r] : m) o[uuid] = {{"status", r.status}, {"statistics", r.statistics}};
    return o;
  };
  j["vms"] = rows(u.vms);
  j["ports"] = rows(u.ports);
  return j.dump();
}

DbConnection::DbConnection(const std::string& remote, const std::string& chassis)
    : db_(capsule_db_create(remote.c_str(), chassis.c_str())) {}

DbConnection::~DbConnection() { capsule_db_destroy(db_); }

void DbConnection::set_leader_only(bool leader_only) { capsule_db_set_leader_only(db_, leader_only); }

bool DbConnection::run() { return capsule_db_run(db_); }

void DbConnection::wait_and_block(long long timeout_ms) { capsule_db_wait_and_block(db_, timeout_ms); }

bool DbConnection::connected() const { return capsule_db_connected(db_); }

Snapshot DbConnection::snapshot() const {
  std::unique_ptr<char, decltype(&std::free)> text(capsule_db_snapshot(db_), &std::free);
  auto s = parse_snapshot(text.get());
  // The shim writes this JSON itself; a parse failure is a bug, not input.
  if (!s) std::abort();
  return std::move(*s);
}

Status DbConnection::set_status(const StatusUpdate& update) {
  if (char* err = capsule_db_set_status(db_, to_json(update).c_str())) {
    Error e{err, EINVAL};
    std::free(err);
    return e;
  }
  return Status::Ok();
}


DbConnection::Counters DbConnection::counters() const {
  const capsule_db_counters c = capsule_db_get_counters(db_);
  return {c.commits, c.sent, c.retried, c.connections};
}

bool DbConnection::status_pending() const { return capsule_db_status_pending(db_); }

unsigned long long DbConnection::updates() const { return capsule_db_updates(db_); }

MonitoredRows DbConnection::monitored() const {
  MonitoredRows m;
  capsule_db_monitored(db_, &m.vms, &m.ports, &m.qos, &m.calibrations);
  return m;
}

}  // namespace capsule::ovs
