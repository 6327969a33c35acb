#include "host_capsules.h"

#include <cstdio>
#include <iterator>
#include <sstream>

#include "capsule/ovs/shim.h"
#include "capsule/rsv/spec.h"
#include "prometheus_label.h"

namespace capsule::agent {
namespace {

void log(capsule_ovs_log_level level, const std::string& msg) { capsule_ovs_log(level, msg.c_str()); }

// "host:ovs-uplink-pmd" -> "ovs_uplink_pmd": a status/statistics key.
std::string key_of(const std::string& name) {
  std::string k = name.rfind("host:", 0) == 0 ? name.substr(5) : name;
  for (char& c : k)
    if (c == '-') c = '_';
  return k;
}

std::string budget(const HostThread& t) {
  return rsv::format_duration(t.runtime) + " every " + rsv::format_duration(t.period);
}

}  // namespace

void HostCapsules::reconcile(Reservations& rsv, const std::vector<HostThread>& wanted) {
  std::map<std::string, const HostThread*> want;
  for (const auto& t : wanted) want[t.name] = &t;
  for (auto it = held_.begin(); it != held_.end();) {
    if (want.count(it->first)) {
      ++it;
      continue;
    }
    if (rsv.find(it->first)) (void)rsv.release(it->first);
    it = held_.erase(it);
  }
  for (const auto& [name, t] : want) {
    Held& h = held_[name];
    const rsv::VmReservationSpec* now = rsv.find(name);
    const bool same = now && h.reserved && h.thread == *t && now->threads.size() == 1 &&
                      now->threads[0].tid == t->tid;
    if (same) continue;
    h.thread = *t;
    h.meter.reset();
    h.utilisation = 0;
    h.budget_used = -1;
    if (t->tid == 0) {
      if (now) (void)rsv.release(name);
      h.reserved = false;
      h.refused = "the thread is not running";
      continue;
    }
    rsv::VmReservationSpec spec;
    spec.name = name;
    spec.period = t->period;
    spec.threads.push_back(rsv::ThreadBudget{t->tid, t->runtime, -1, t->role});
    auto decision = rsv.reserve(spec);
    if (!decision) {
      if (h.refused != decision.error().message)
        log(CAPSULE_LOG_WARN, t->what + ": reservation " + budget(*t) + " refused: " + decision.error().message);
      // What was in force (an older thread's) stays until it can be swapped.
      h.reserved = rsv.find(name) != nullptr;
      h.refused = decision.error().message;
      continue;
    }
    log(CAPSULE_LOG_INFO, t->what + ": reserved " + budget(*t));
    h.reserved = true;
    h.refused.clear();
    if (rsv.real_kernel()) h.meter = std::make_unique<rsv::UtilisationMeter>(std::vector<pid_t>{t->tid});
  }
}

void HostCapsules::release(Reservations& rsv) {
  for (auto& [name, h] : held_)
    if (h.reserved) (void)rsv.release(name);
  held_.clear();
}

void HostCapsules::sample(const std::map<std::string, uint64_t>& delivered) {
  for (auto& [name, h] : held_) {
    if (!h.meter) continue;
    auto usage = h.meter->sample();
    auto it = usage.find(h.thread.tid);
    if (it == usage.end()) continue;
    h.utilisation = it->second.utilisation;
    h.budget_used = it->second.budget_used;
  }
  // OVS refreshes its Interface statistics every few seconds: the shares
  // change when the counts move, and hold in between.
  std::map<std::string, double> moved;
  double total = 0;
  for (const auto& [vm, n] : delivered) {
    auto last = delivered_.find(vm);
    const double d = last == delivered_.end() || n < last->second ? 0 : double(n - last->second);
    moved[vm] = d;
    total += d;
  }
  if (total > 0) {
    share_.clear();
    for (const auto& [vm, d] : moved) share_[vm] = d / total;
  }
  for (auto it = share_.begin(); it != share_.end();)
    it = delivered.count(it->first) ? std::next(it) : share_.erase(it);
  delivered_ = delivered;
}

std::optional<double> HostCapsules::outside(const std::string& vm) const {
  if (held_.empty()) return std::nullopt;
  double cpu = 0;
  for (const auto& [name, h] : held_) cpu += h.utilisation;
  auto s = share_.find(vm);
  return cpu * (s == share_.end() ? 0.0 : s->second);
}

void HostCapsules::report(ovs::HostStatus& host) const {
  for (const auto& [name, h] : held_) {
    const std::string key = key_of(name);
    host.status[key] = h.thread.what + ": " +
                       (h.reserved && h.refused.empty() ? "SCHED_DEADLINE " + budget(h.thread)
                                                        : "no reservation: " + h.refused);
    if (h.meter) {
      host.statistics[key + "_utilization"] = h.utilisation;
      if (h.budget_used >= 0) host.statistics[key + "_budget_used"] = h.budget_used;
    }
  }
}

std::string HostCapsules::show() const {
  std::ostringstream o;
  for (const auto& [name, h] : held_) {
    o << "  " << h.thread.what << ": ";
    if (h.reserved && h.refused.empty()) {
      o << "reserved " << budget(h.thread) << ", cpu " << rsv::format_percent(h.utilisation);
      if (h.budget_used >= 0) o << ", budget used " << rsv::format_percent(h.budget_used);
    } else {
      o << "no reservation (" << h.refused << ")";
    }
    o << "\n";
  }
  return o.str();
}

std::string HostCapsules::metrics(const std::string& labels) const {
  if (held_.empty()) return "";
  std::ostringstream o;
  o << "# HELP capsule_host_thread_cpu_utilization CPU use of a datapath thread in a capsule of its own (the OVS "
       "uplink PMD).\n# TYPE capsule_host_thread_cpu_utilization gauge\n";
  for (const auto& [name, h] : held_)
    o << "capsule_host_thread_cpu_utilization{" << labels << ",capsule=\"" << name << "\",thread=\"" << h.thread.role
      << "\",tid=\"" << h.thread.tid << "\"} " << h.utilisation << "\n";
  o << "# HELP capsule_host_thread_budget_used CPU use of that thread over its reserved bandwidth.\n"
       "# TYPE capsule_host_thread_budget_used gauge\n";
  for (const auto& [name, h] : held_)
    if (h.budget_used >= 0)
      o << "capsule_host_thread_budget_used{" << labels << ",capsule=\"" << name << "\",thread=\"" << h.thread.role
        << "\",tid=\"" << h.thread.tid << "\"} " << h.budget_used << "\n";
  o << "# HELP capsule_vm_outside_utilization CPU the datapath's own threads (the OVS uplink PMD) spend on what a "
       "VM receives, outside its capsule: their CPU use split by the packets delivered to each VM (an estimate).\n"
       "# TYPE capsule_vm_outside_utilization gauge\n";
  for (const auto& [vm, share] : share_)
    o << "capsule_vm_outside_utilization{" << labels << ",vm=\"" << prometheus_label(vm) << "\"} " << *outside(vm) << "\n";
  o << "# HELP capsule_host_thread_reserved Whether that thread holds its reservation (0: refused, see "
       "Host:status).\n# TYPE capsule_host_thread_reserved gauge\n";
  for (const auto& [name, h] : held_)
    o << "capsule_host_thread_reserved{" << labels << ",capsule=\"" << name << "\"} "
      << (h.reserved && h.refused.empty() ? 1 : 0) << "\n";
  return o.str();
}

}  // namespace capsule::agent
