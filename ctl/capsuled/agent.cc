#include "agent.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "capsule/ovs/shim.h"
#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/rsv/spec.h"
#include "net_budget.h"
#include "port_link.h"
#include "prometheus_label.h"
#include "vhost_path_check.h"

namespace capsule::agent {
namespace {

using std::chrono::microseconds;

void log(capsule_ovs_log_level level, const std::string& msg) { capsule_ovs_log(level, msg.c_str()); }

std::string fixed(double v, int digits = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

bool same_threads(const rsv::VmReservationSpec& a, const rsv::VmReservationSpec& b) {
  if (a.period != b.period || a.effective_deadline() != b.effective_deadline() || a.reclaim != b.reclaim ||
      a.threads.size() != b.threads.size())
    return false;
  for (std::size_t i = 0; i < a.threads.size(); ++i)
    if (a.threads[i].tid != b.threads[i].tid || a.threads[i].runtime != b.threads[i].runtime ||
        a.threads[i].role != b.threads[i].role)
      return false;
  return true;
}

std::string describe(const rsv::VmReservationSpec& spec) {
  std::ostringstream s;
  for (std::size_t i = 0; i < spec.threads.size(); ++i)
    s << (i ? ", " : "") << spec.threads[i].role << " " << rsv::format_duration(spec.threads[i].runtime);
  s << " every " << rsv::format_duration(spec.period);
  if (spec.deadline.count() && spec.deadline != spec.period)
    s << " (deadline " << rsv::format_duration(spec.deadline) << ")";
  return s.str();
}

}  // namespace

Agent::Agent(AgentConfig config, DatapathFactory datapath_factory)
    : config_(std::move(config)),
      datapath_factory_(std::move(datapath_factory)),
      datapath_(std::make_unique<DetachedDatapath>()) {
  if (!config_.journal.empty()) {
    // Interrupt and workqueue affinity a killed predecessor changed goes
    // back first: this agent decides again what to steer.
    if (auto n = rsv::IoSteering::recover(config_.journal + ".io-steering"); !n)
      log(CAPSULE_LOG_ERR, n.error().message);
    else if (*n > 0)
      log(CAPSULE_LOG_INFO, "restored " + std::to_string(*n) + " interrupt/workqueue affinity setting(s) a previous capsuled changed");
    auto state = rsv::Journal(config_.journal).load();
    if (state) {
      if (!state->empty()) pending_adoption_ = std::move(*state);
    } else {
      // Never guess about threads: keep the file for the operator, start empty.
      const std::string aside = config_.journal + ".unreadable";
      (void)std::rename(config_.journal.c_str(), aside.c_str());
      log(CAPSULE_LOG_ERR, state.error().message + "; kept as " + aside +
                               " (its threads keep what they have: check them with capsule-rsv show)");
    }
  }
  configure_admission(nullptr);
}

void Agent::adopt_journal() {
  if (!pending_adoption_) return;
  const rsv::JournalState state = std::move(*pending_adoption_);
  pending_adoption_.reset();
  for (const auto& [name, outcome] : rsv_->adopt(state)) {
    if (name.rfind("host:", 0) == 0) continue;  // a datapath thread's (HostCapsules takes it over)
    if (!outcome) {
      log(CAPSULE_LOG_WARN, "VM " + name + ": capsule of the previous capsuled not adopted: " + outcome.error().message);
      continue;
    }
    const rsv::AdmissionDecision* decision = rsv_->decision(name);
    VmState& st = vms_[name];
    st.reserved = true;
    if (decision) st.decision = *decision;
    st.pid = 0;  // known once its row is read (reconcile_vm)
    st.state = "running";
    st.reason = "adopted from the previous capsuled's journal";
    start_meter(st);
    std::string what;
    for (const auto& a : outcome->adopted) what += (what.empty() ? "" : ", ") + a;
    if (!outcome->gone.empty()) what += "; exited: " + std::to_string(outcome->gone.size());
    if (!outcome->not_ours.empty()) what += "; no longer SCHED_DEADLINE: " + std::to_string(outcome->not_ours.size());
    for (const auto& r : outcome->released) what += "; released " + r;
    log(CAPSULE_LOG_INFO, "VM " + name + ": adopted its capsule (" + what + ")");
    if (!outcome->over_bound.empty())
      log(CAPSULE_LOG_WARN, "VM " + name + ": the adopted capsule is over this host's admission bound now (" +
                                outcome->over_bound + "); it stays, and its next change is judged as usual");
  }
}

void Agent::check_drift() {
  for (const auto& [name, found] : rsv_->drift()) {
    auto it = vms_.find(name);
    if (it == vms_.end()) continue;
    VmState& st = it->second;
    std::string what;
    for (const auto& f : found) what += (what.empty() ? "" : "; ") + f;
    Status repaired = rsv_->repair(name);
    st.drift = what + (repaired ? "; repaired" : "; not repaired: " + repaired.error().message);
    log(repaired ? CAPSULE_LOG_WARN : CAPSULE_LOG_ERR, "VM " + name + ": " + st.drift);
    if (!repaired) {
      st.state = "degraded";
      st.reason = "its capsule was changed outside capsule and cannot be put back: " + repaired.error().message;
    }
  }
}

bool Agent::configure_datapath(const ovs::HostRow* host) {
  if (!datapath_factory_ || !host) return false;
  DatapathSettings settings;
  settings.type = host->datapath_type.value_or("capsule");
  settings.dpdk_options = host->dpdk_options;
  settings.uplink = host->uplink;
  if (settings.type == "ovs")
    for (const auto& [key, value] : host->other_config)
      if (key.rfind("ovs-", 0) == 0) settings.ovs[key] = value;
  // Same settings: keep it, unless it is gone (its daemon exited).
  if (settings == datapath_settings_ && !datapath_->lost()) {
    refused_settings_.reset();
    datapath_refused_.clear();
    return false;
  }
  if (settings == refused_settings_ && !datapath_->lost()) return false;
  const std::string lost = datapath_->lost() ? datapath_->detail() : "";
  if (!lost.empty()) log(CAPSULE_LOG_WARN, lost + ": starting a new datapath");
  Result<std::unique_ptr<Datapath>> made = Error{"", 0};
  if (datapath_->attached() && lost.empty()) {
    // A running datapath is replaced only once its replacement exists:
    // settings it refuses (its daemon checks them before it stops anything)
    // change nothing, and no VM loses its network over a bad Host row.
    made = datapath_factory_(settings);
    if (!made) {
      refused_settings_ = settings;
      datapath_refused_ = made.error().message + "; the datapath keeps its previous settings";
      log(CAPSULE_LOG_ERR, "datapath " + settings.type + ": new settings refused: " + datapath_refused_);
      return false;
    }
  } else {
    datapath_ = std::make_unique<DetachedDatapath>();
    made = datapath_factory_(settings);
  }
  // The VMs' ports and datapath threads were the old datapath's: this pass
  // puts them on the new one, and each capsule swaps its old datapath
  // thread for the new one. The vCPUs keep their budgets throughout.
  for (auto& [name, st] : vms_) {
    st.net_added = false;
    st.net = {};
    st.dp_stats.reset();
  }
  refused_settings_.reset();
  datapath_refused_.clear();
  datapath_settings_ = settings;
  if (made) {
    datapath_ = std::move(*made);
    log(CAPSULE_LOG_INFO, "datapath " + datapath_->name() + " ready (" + settings.type + ")");
    // VMs an earlier agent left on it are this agent's now, as if it had
    // added them: unchanged rows change nothing, a refused change puts them
    // back as they were, and VMs no longer in the database leave as usual.
    for (const auto& vm : datapath_->in_force()) {
      VmState& st = vms_[vm.vm];
      st.net_added = true;
      st.net = vm;
    }
    if (!lost.empty()) datapath_last_exit_ = lost + "; replaced at " + format_utc(unix_ms_now());
  } else {
    datapath_ = std::make_unique<DetachedDatapath>("not attached: " + made.error().message);
    log(CAPSULE_LOG_ERR, "datapath " + settings.type + ": " + made.error().message);
  }
  return true;
}


bool Agent::configure_admission(const ovs::HostRow* host) {
  rsv::AdmissionConfig cfg;
  const std::string mode = host ? host->admission_mode.value_or("global") : "global";
  if (mode == "partitioned") cfg.mode = rsv::AdmissionMode::kPartitioned;
  cfg.bound = host ? host->utilization_bound.value_or(-1) : -1;
  const std::string cpus = host ? host->capsule_cpus.value_or("") : "";
  if (!cpus.empty()) cfg.cpus = rsv::parse_cpu_list(cpus);
  const std::string key = mode + "|" + fixed(cfg.bound, 6) + "|" + cpus;
  if (rsv_ && key == admission_key_) return false;
  if (rsv_) {
    log(CAPSULE_LOG_INFO, "admission settings changed (" + key + "): re-admitting every VM");
    release_all();
  }
  const bool changed = rsv_ != nullptr;
  rsv_ = config_.reservations ? config_.reservations(cfg) : kernel_reservations(cfg);
  if (!config_.journal.empty()) rsv_->set_journal(rsv::Journal(config_.journal));
  configure_io_steering(cfg);
  admission_key_ = key;
  return changed;
}

void Agent::configure_io_steering(const rsv::AdmissionConfig& cfg) {
  steering_.reset();  // restores what the previous settings steered
  if (!config_.steer_io || !rsv_->real_kernel()) return;
  if (cfg.mode != rsv::AdmissionMode::kPartitioned || cfg.cpus.empty()) {
    log(CAPSULE_LOG_WARN, "--steer-io needs partitioned admission and Host:capsule_cpus (the other CPUs take the "
                          "interrupts): nothing steered");
    return;
  }
  std::vector<int> housekeeping;
  for (int c : rsv::online_cpus())
    if (std::find(cfg.cpus.begin(), cfg.cpus.end(), c) == cfg.cpus.end()) housekeeping.push_back(c);
  auto s = rsv::IoSteering::apply(housekeeping, config_.journal.empty() ? "" : config_.journal + ".io-steering");
  if (!s) {
    log(CAPSULE_LOG_ERR, "steering interrupts and workqueues: " + s.error().message);
    return;
  }
  steering_ = std::move(*s);
  log(CAPSULE_LOG_INFO, "io steering: " + steering_->describe() + " (restored when capsuled stops)");
}

void Agent::update(ovs::Snapshot snapshot) {
  snapshot_ = std::move(snapshot);
  have_snapshot_ = true;
}

void Agent::release_vm(const std::string& name, VmState& st) {
  if (st.reserved) {
    ++admission_epoch_;
    if (Status s = rsv_->release(name); !s)
      log(CAPSULE_LOG_WARN, "VM " + name + ": restoring threads: " + s.error().message);
    else
      log(CAPSULE_LOG_INFO, "VM " + name + ": reservation released, threads restored");
  }
  if (st.net_added) (void)datapath_->remove_vm(name);
  st.reserved = st.net_added = false;
  st.net = {};
  st.meter.reset();
  st.threads.clear();
  st.dp_stats.reset();
  st.in_force.clear();
  st.net_budget.clear();
  st.drift.clear();
}

void Agent::bring_up_ports(const ovs::VmRow& row, VmState& st) {
  if (!datapath_->attached()) return;
  VmNetConfig net{row.name, {}};
  for (const auto& port : row.ports) {
    auto p = port_from_row(port);
    if (!p) return;  // the port's own status says why
    net.ports.push_back(std::move(*p));
  }
  if (st.net_added && net == st.net) return;
  if (Status s = datapath_->add_vm(net); !s) {
    log(CAPSULE_LOG_WARN, "VM " + row.name + ": datapath: " + s.error().message);
    return;
  }
  st.net_added = !net.ports.empty();
  st.net = net;
}

std::string Agent::admission_inputs(const ovs::VmRow& row, const DesiredVm& desired,
                                    const std::optional<NetBudget>& auto_budget) const {
  std::ostringstream o;
  o << row.fingerprint << '|' << desired.pid << '|' << admission_epoch_ << '|'
    << (auto_budget ? auto_budget->runtime_us : -1);
  for (const auto& t : desired.spec.threads) o << '|' << t.tid << ':' << t.runtime.count();
  // SCHED_DEADLINE threads outside capsule (sampled every pass and every
  // second) come and go too.
  for (const auto& d : load_) o << '|' << d.external + d.kernel;
  return o.str();
}

void Agent::reject(const std::string& name, VmState& st, const std::string& reason) {
  if (st.state != "rejected" || st.reason != reason) {  // news, not every pass
    ++rejections_;
    log(CAPSULE_LOG_WARN, "VM " + name + " rejected: " + reason);
  }
  st.state = "rejected";
  st.reason = reason;
}

void Agent::start_meter(VmState& st) {
  st.meter.reset();
  st.threads.clear();
  if (!st.reserved) return;
  std::vector<pid_t> tids;
  for (const auto& p : st.decision.threads) {
    tids.push_back(p.tid);
    st.threads.push_back(ThreadSample{p.tid, p.role, 0, -1});
  }
  if (rsv_->real_kernel()) st.meter = std::make_unique<rsv::UtilisationMeter>(tids);
}

void Agent::reconcile_vm(const ovs::VmRow& row, int64_t next_cfg, bool reevaluated, Result<DesiredVm>* planned) {
  VmState& st = vms_[row.name];
  st.uuid = row.uuid;
  if (row.fingerprint != st.fingerprint || reevaluated) {
    st.fingerprint = row.fingerprint;
    st.cfg = next_cfg;
  }

  // Ports are validated even without a datapath, so status tells the truth
  // about them before one is attached.
  st.ports.clear();
  for (const auto& port : row.ports) {
    ovs::RowStatus ps;
    auto p = port_from_row(port);
    if (!p) {
      ps.status = {{"state", "rejected"}, {"reason", p.error().message}};
    } else if (auto why = vhost_server_obstacle(p->vhost_path, p->vhost_client); !why.empty()) {
      ps.status = {{"state", "rejected"}, {"reason", "port " + p->name + ": " + why}};
    } else if (!datapath_->attached()) {
      ps.status = {{"state", "not attached"}, {"reason", datapath_->detail()}};
    }
    st.ports[port.uuid] = std::move(ps);
  }

  if (row.enabled && !*row.enabled) {
    release_vm(row.name, st);
    st.state = "disabled";
    st.reason = "enabled=false";
    return;
  }

  // A row with no reservation at all is a best-effort VM: its ports are on
  // the datapath, its threads (and its datapath thread) stay with CFS.
  const bool auto_net = row.net_budget.value_or("fixed") == "auto";
  const bool best_effort = !row.vcpu_runtime_us && !row.period_us && !row.net_runtime_us && !auto_net;
  if (best_effort) {
    if (st.reserved) {
      ++admission_epoch_;
      (void)rsv_->release(row.name);
      st.reserved = false;
      st.meter.reset();
      st.threads.clear();
    }
    bring_up_ports(row, st);
    st.state = "running";
    st.reason = "best effort: no reservation (set-rsv gives it a capsule)";
    st.in_force.clear();
    return;
  }

  auto desired = planned ? std::move(*planned) : desired_from_row(row, *rsv_);
  if (!desired && desired.error().errnum == ENOENT && !st.reserved && datapath_->attached()) {
    // The VM is not up yet (no pidfile, or no vCPU threads: QEMU with a
    // vhost-user server socket waits for its backend before it starts its
    // vCPUs). Bring its ports up now so it can connect, as OVS does for a
    // dpdkvhostuserclient port; the reservation follows on a later pass.
    bring_up_ports(row, st);
    if (st.state != "waiting" || st.reason.rfind(desired.error().message, 0) != 0)
      log(CAPSULE_LOG_INFO, "VM " + row.name + " waiting: " + desired.error().message);
    st.state = "waiting";
    st.reason = desired.error().message + (st.net_added ? "; its ports are up, the reservation follows" : "");
    return;
  }
  if (!desired) {
    // The process is gone: nothing left to hold. A configuration error: keep
    // what was admitted before, ports included (like OVS keeps the last good
    // configuration).
    // ENOENT on a reserved VM: its vCPU threads or its pidfile went away,
    // which is a VM on its way out, not a bad row.
    if (desired.error().errnum == ESRCH || desired.error().errnum == ENOENT)
      release_vm(row.name, st);
    else if (st.reserved)
      st.in_force = describe(*rsv_->find(row.name));
    reject(row.name, st, desired.error().message);
    return;
  }

  // An `auto` network budget follows the port's policers and the host's
  // calibration; derived before anything changes, so a refusal changes nothing.
  std::optional<NetBudget> auto_budget;
  if (auto_net && datapath_->attached() && !datapath_->auto_budget_obstacle().empty()) {
    if (st.reserved && rsv_->find(row.name)) st.in_force = describe(*rsv_->find(row.name));
    reject(row.name, st, datapath_->auto_budget_obstacle());
    return;
  }
  if (auto_net && datapath_->attached()) {
    auto b = derive_net_budget(desired->net, snapshot_.host ? snapshot_.host->calibration : std::vector<ovs::CalibrationRow>{},
                               row.period_us.value_or(0), row.net_margin.value_or(kDefaultNetMargin), row.options);
    if (!b) {
      // What is in force stays, with the net_budget that explains it.
      if (st.reserved && rsv_->find(row.name)) st.in_force = describe(*rsv_->find(row.name));
      reject(row.name, st, b.error().message);
      return;
    }
    auto_budget = *b;
  }

  // Refused by admission as it is, on a host that has not made room since:
  // judging it again would put its new port settings on the datapath and
  // take them off again, every pass.
  const std::string judged_on = admission_inputs(row, *desired, auto_budget);
  if (st.state == "rejected" && !reevaluated && st.refused_on == judged_on) return;
  st.refused_on.clear();

  // The datapath first (it owns the PMD thread the reservation must hold);
  // only when the VM's network configuration changed.
  bool net_added_now = false, net_changed = false;
  const VmNetConfig net_before = st.net;
  if (datapath_->attached()) {
    if (!st.net_added || desired->net != st.net) {
      if (Status s = datapath_->add_vm(desired->net); !s) {
        if (st.reserved) st.in_force = describe(*rsv_->find(row.name));
        reject(row.name, st, "datapath: " + s.error().message);
        return;
      }
      net_added_now = !st.net_added;
      net_changed = st.net_added;
      st.net_added = true;
      st.net = desired->net;
    }
    if (auto tid = datapath_->pmd_tid(row.name)) {
      auto net_us = auto_budget ? auto_budget->runtime_us : row.net_runtime_us.value_or(0);
      if (net_us > 0)
        desired->spec.threads.push_back(rsv::ThreadBudget{*tid, microseconds(net_us), -1, "pmd"});
    }
  }

  // All or nothing: a refusal below puts the datapath back as it was.
  auto undo_net = [&] {
    if (net_added_now) {
      (void)datapath_->remove_vm(row.name);
      st.net_added = false;
        st.net = {};
    } else if (net_changed) {
      if (Status s = datapath_->add_vm(net_before); !s)
        log(CAPSULE_LOG_ERR, "VM " + row.name + ": cannot restore its datapath configuration: " + s.error().message);
      st.net = net_before;
    }
  };

  // A thread belongs to one capsule: two rows naming one process would
  // fight over its threads.
  for (const auto& [other, ost] : vms_) {
    if (other == row.name || !ost.reserved) continue;
    for (const auto& p : ost.decision.threads)
      for (const auto& t : desired->spec.threads)
        if (p.tid == t.tid) {
          undo_net();
          if (st.reserved) st.in_force = describe(*rsv_->find(row.name));
          reject(row.name, st, "thread " + std::to_string(t.tid) + " (" + t.role + ") already belongs to VM " + other +
                         "'s capsule");
          return;
        }
  }

  const rsv::VmReservationSpec* current = rsv_->find(row.name);
  // (An adopted capsule's pid is not known until its row is read.)
  if (st.reserved && current && (st.pid == desired->pid || st.pid == 0) && same_threads(*current, desired->spec)) {
    st.pid = desired->pid;
    st.net_budget = auto_budget ? auto_budget->explanation : "";
    st.state = "running";  // nothing to change (a vanished process failed above)
    st.reason.clear();
    st.in_force.clear();
    return;
  }

  auto decision = rsv_->reserve(desired->spec);
  if (!decision) {
    // reserve() left whatever was in force before untouched.
    undo_net();
    st.refused_on = judged_on;
    if (st.reserved && rsv_->find(row.name)) st.in_force = describe(*rsv_->find(row.name));
    reject(row.name, st,
           (auto_budget ? "net budget " + auto_budget->explanation + ": cannot be admitted: " : std::string()) +
               decision.error().message);
    return;
  }
  const bool changed = st.reserved;
  if (changed) ++admission_epoch_;  // a smaller capsule leaves room
  if (auto_budget && auto_budget->warning && st.net_budget != auto_budget->explanation)
    log(CAPSULE_LOG_WARN, "VM " + row.name + ": net budget " + auto_budget->explanation);
  st.net_budget = auto_budget ? auto_budget->explanation : "";
  st.reserved = true;
  st.pid = desired->pid;
  st.decision = *decision;
  st.state = "running";
  st.reason.clear();
  st.in_force.clear();
  ++applies_;
  start_meter(st);
  log(CAPSULE_LOG_INFO, "VM " + row.name + (changed ? ": reservation changed: " : ": reserved: ") +
                            describe(desired->spec) + " (pid " + std::to_string(st.pid) + ")");
}

void Agent::reconcile() {
  // Without a live database view, keep everything as it is: a lost
  // connection is not a request to release every VM.
  if (!have_snapshot_ || !snapshot_.connected) return;
  // Rows still arriving (the monitor follows this chassis' references): a
  // VM would look as if its ports were gone. The next update completes it.
  if (!snapshot_.complete) return;
  ++reconciles_;
  const ovs::HostRow* host = snapshot_.host ? &*snapshot_.host : nullptr;
  // New admission settings re-admit every VM: each outcome then belongs to
  // this configuration (what --wait reports).
  const bool readmit = configure_datapath(host) | configure_admission(host);
  adopt_journal();
  const int64_t next_cfg = host ? host->next_cfg : 0;

  // Releases first (VMs gone, moved to another chassis): their bandwidth is
  // then free for the admissions below.
  std::map<std::string, const ovs::VmRow*> rows;
  for (const auto& row : snapshot_.vms)
    if (row.chassis == config_.chassis) rows[row.name] = &row;
  // VMs that are new to the kernel: their threads found once, here, and
  // recorded in the journal together (one write for the pass, not one per
  // VM: rsv::ReservationManager::begin_batch).
  std::map<std::string, Result<DesiredVm>> planned;
  std::vector<rsv::VmReservationSpec> expected;
  for (const auto& [name, row] : rows) {
    if (rsv_->find(name) || (row->enabled && !*row->enabled) || !row->vcpu_runtime_us || !row->period_us) continue;
    // Refused as it is: it is tried again below, but not recorded ahead
    // every pass (a journal write each time for a VM that waits for room).
    if (auto st = vms_.find(name); st != vms_.end() && st->second.state == "rejected" &&
                                   st->second.fingerprint == row->fingerprint && !readmit)
      continue;
    auto d = planned.emplace(name, desired_from_row(*row, *rsv_)).first;
    if (d->second) expected.push_back(d->second->spec);
  }
  rsv_->begin_batch(expected);
  for (auto it = vms_.begin(); it != vms_.end();) {
    if (!rows.count(it->first)) {
      release_vm(it->first, it->second);
      log(CAPSULE_LOG_INFO, "VM " + it->first + " left the database");
      it = vms_.erase(it);
    } else {
      ++it;
    }
  }
  // The datapath's own threads (OVS's uplink PMD) before the VMs: host
  // infrastructure is admitted first.
  host_capsules_.reconcile(*rsv_, datapath_->attached() ? datapath_->host_threads() : std::vector<HostThread>{});
  // Shrinking or unchanged VMs before growing ones would be kinder to
  // admission; names give a stable order, and a refused VM is retried on the
  // next pass anyway.
  for (const auto& [name, row] : rows) {
    auto p = planned.find(name);
    reconcile_vm(*row, next_cfg, readmit, p == planned.end() ? nullptr : &p->second);
  }
  check_drift();
  rsv_->end_batch();
  load_ = rsv_->load();
  if (host) reconciled_cfg_ = host->next_cfg;
}

void Agent::sample() {
  load_ = rsv_->load();  // outside SCHED_DEADLINE threads come and go between passes
  for (auto& [name, st] : vms_) {
    if (st.meter) {
      auto usage = st.meter->sample();
      for (auto& t : st.threads) {
        auto it = usage.find(t.tid);
        if (it == usage.end()) continue;
        t.utilisation = it->second.utilisation;
        t.budget_used = it->second.budget_used;
      }
    }
    if (st.net_added) {
      auto s = datapath_->stats(name);
      if (s) st.dp_stats = *s;
    }
  }
  std::map<std::string, uint64_t> delivered;  // packets the datapath sent to each VM so far
  for (const auto& [name, st] : vms_)
    if (st.dp_stats)
      for (const auto& [port, c] : st.dp_stats->ports) delivered[name] += c.tx_packets;
  host_capsules_.sample(delivered);
}

void Agent::release_all() {
  for (auto& [name, st] : vms_) release_vm(name, st);
  if (rsv_) host_capsules_.release(*rsv_);
  if (rsv_) rsv_->release_all();
}

Agent::~Agent() {
  release_all();
  datapath_.reset();  // after the VMs' threads are restored
}

void Agent::shutdown() {
  release_all();
  steering_.reset();  // interrupt and workqueue affinity as capsuled found it
  datapath_->shutdown();  // a graceful stop leaves no datapath running
  stopped_ = true;
  for (auto& [name, st] : vms_) {
    st.state = "stopped";
    st.reason = "capsuled stopped: threads restored";
  }
}

ovs::StatusUpdate Agent::status() const {
  ovs::StatusUpdate u;
  if (have_snapshot_ && snapshot_.host && reconciled_cfg_ >= 0) u.cur_cfg = reconciled_cfg_;

  int running = 0, rejected = 0;
  for (const auto& [name, st] : vms_) {
    ovs::RowStatus rs;
    rs.status["state"] = st.state;
    if (!st.reason.empty()) rs.status["reason"] = st.reason;
    if (!st.in_force.empty()) rs.status["in_force"] = st.in_force;
    if (!st.drift.empty()) rs.status["drift"] = st.drift;
    rs.status["cfg"] = std::to_string(st.cfg);
    rs.status["datapath"] = datapath_->attached() ? (st.net_added ? "attached" : "none") : "not attached";
    if (!datapath_->attached() && !st.ports.empty()) rs.status["datapath_reason"] = datapath_->detail();
    if (st.net_added && datapath_->attached())
      if (std::string serving = datapath_->serving(name); !serving.empty()) rs.status["datapath_thread"] = serving;
    if (st.state == "running") ++running;
    if (st.state == "rejected") ++rejected;
    if (st.reserved) {
      rs.status["pid"] = std::to_string(st.pid);
      std::string threads, placement;
      bool pinned = false;
      for (const auto& p : st.decision.threads) {
        threads += (threads.empty() ? "" : " ") + p.role + "=" + std::to_string(p.tid);
        placement += (placement.empty() ? "" : " ") + p.role + ":" + (p.cpu < 0 ? "any" : "cpu" + std::to_string(p.cpu));
        pinned = pinned || p.cpu >= 0;
      }
      rs.status["threads"] = threads;
      rs.status["placement"] = pinned ? "partitioned: " + placement : "global EDF (unpinned)";
      rs.status["admitted_utilization"] = fixed(st.decision.bandwidth);
      // With a deadline shorter than the period, admission booked more than
      // the VM may use (its density): show what it took from the domain.
      if (st.decision.density > st.decision.bandwidth + 1e-9)
        rs.status["admitted_density"] = fixed(st.decision.density);
      if (const auto* r = rsv_->find(name)) rs.status["reservation"] = describe(*r);
      if (!st.net_budget.empty()) rs.status["net_budget"] = st.net_budget;
      double cpu = 0, worst_budget = 0;
      for (const auto& t : st.threads) {
        cpu += t.utilisation;
        worst_budget = std::max(worst_budget, t.budget_used);
        rs.statistics[t.role + "_utilization"] = t.utilisation;
      }
      rs.statistics["cpu_utilization"] = cpu;
      rs.statistics["reserved_utilization"] = st.decision.bandwidth;
      rs.statistics["budget_used"] = st.decision.bandwidth > 0 ? cpu / st.decision.bandwidth : 0;
      rs.statistics["max_thread_budget_used"] = worst_budget;
      rs.statistics["threads"] = double(st.threads.size());
      if (st.dp_stats && st.dp_stats->cycles_per_packet > 0)
        rs.statistics["cycles_per_packet"] = st.dp_stats->cycles_per_packet;
      if (auto outside = host_capsules_.outside(name)) rs.statistics["outside_utilization"] = *outside;
    }
    u.vms[st.uuid] = std::move(rs);
    for (const auto& [uuid, ps] : st.ports) {
      u.ports[uuid] = ps;
      if (ps.status.count("state")) continue;
      if (!datapath_->attached())  // it went away since the last pass
        u.ports[uuid].status = {{"state", "not attached"}, {"reason", datapath_->detail()}};
      else if (!st.net_added)  // a valid port of a VM that is not on the datapath: say why
        u.ports[uuid].status = {{"state", "waiting"},
                                {"reason", "VM " + name + " is " + st.state + (st.reason.empty() ? "" : ": " + st.reason)}};
    }
  }
  // Per-port counters (attached datapath): match by name through the snapshot.
  if (have_snapshot_)
    for (const auto& row : snapshot_.vms) {
      auto it = vms_.find(row.name);
      if (it == vms_.end() || !it->second.dp_stats || !datapath_->attached()) continue;
      for (const auto& port : row.ports) {
        auto c = it->second.dp_stats->ports.find(port.name);
        if (c == it->second.dp_stats->ports.end()) continue;
        auto& stats = u.ports[port.uuid].statistics;
        stats["rx_packets"] = double(c->second.rx_packets);
        stats["rx_bytes"] = double(c->second.rx_bytes);
        stats["tx_packets"] = double(c->second.tx_packets);
        stats["tx_bytes"] = double(c->second.tx_bytes);
        for (const auto& [cause, n] : c->second.drops) stats["drops_" + cause] = double(n);
        auto& ps = u.ports[port.uuid].status;
        const auto link = port_link_status(c->second);
        ps["state"] = link.state;
        if (!link.reason.empty()) ps["reason"] = link.reason;
        if (!link.since.empty()) ps["connected_at"] = link.since;
      }
    }

  auto& h = u.host;
  // "running" only once this agent has reconciled: the VM and Port rows it
  // writes in the same transaction are then its own, not what a killed
  // predecessor left (what capsule-service and the harness wait for).
  h.status["state"] = stopped_ ? "stopped" : reconciles_ ? "running" : "starting";
  h.status["chassis"] = config_.chassis;
  h.status["version"] = config_.version;
  h.status["pid"] = std::to_string(::getpid());
  h.status["datapath"] = datapath_->attached() ? datapath_->name() : datapath_->detail();
  if (!datapath_last_exit_.empty()) h.status["datapath_last_exit"] = datapath_last_exit_;
  if (!datapath_refused_.empty()) h.status["datapath_refused"] = datapath_refused_;
  h.status["vms_running"] = std::to_string(running);
  h.status["vms_rejected"] = std::to_string(rejected);
  if (!config_.metrics_url.empty()) h.status["metrics"] = config_.metrics_url;
  const auto fs = rsv::CpusetFs::detect();
  h.capabilities["sched_deadline"] = "true";
  h.capabilities["kernel_dl_bound"] = fixed(rsv::kernel_dl_bound(), 3);
  h.capabilities["online_cpus"] = rsv::format_cpu_list(rsv::online_cpus());
  h.capabilities["cpuset"] = fs.kind() == rsv::CpusetFs::Kind::kV1 ? "cgroup-v1"
                             : fs.kind() == rsv::CpusetFs::Kind::kV2 ? "cgroup-v2"
                                                                      : "none";
  h.capabilities["admission_modes"] = "global,partitioned";
  if (!rsv_->real_kernel()) h.capabilities["kernel"] = "simulated (scale runs only: nothing is applied)";
  h.capabilities["qos_types"] = "egress-policer,trtcm-policer,pkt-policer";
  h.capabilities["datapath_types"] = datapath_->attached() ? "capsule,ovs" : "";
  if (rsv_->real_kernel()) {
    // Issue 11: whether a disk-writing neighbour can make capsules late here.
    const auto io = io_isolation();
    h.capabilities["io_isolation"] = io.safe ? "safe" : "unsafe";
    h.status["io_isolation"] = io.reason;
  }
  double capacity = 0, booked = 0, external = 0;
  for (const auto& d : load_) {
    capacity += d.capacity;
    booked += d.capsule;
    external += d.external;
  }
  h.statistics["capacity"] = capacity;
  h.statistics["booked_utilization"] = booked;
  h.statistics["external_utilization"] = external;
  h.statistics["free_utilization"] = capacity - booked - external;
  host_capsules_.report(h);
  return u;
}

rsv::IoIsolationVerdict Agent::io_isolation() const {
  const auto& cfg = rsv_->admission().config();
  return rsv::judge_io_isolation(rsv::read_io_isolation_facts(), cfg.mode, cfg.cpus);
}

std::string Agent::show() const {
  std::ostringstream o;
  o << "capsuled " << config_.version << " on chassis " << config_.chassis << "\n";
  o << "  database: " << (snapshot_.connected ? "connected" : "not connected");
  if (snapshot_.host) o << ", next_cfg " << snapshot_.host->next_cfg << ", applied " << reconciled_cfg_;
  o << "\n  datapath: " << (datapath_->attached() ? datapath_->name() : datapath_->detail()) << "\n";
  o << "  admission: "
    << (rsv_->admission().config().mode == rsv::AdmissionMode::kPartitioned ? "partitioned" : "global")
    << ", bound " << fixed(rsv_->admission().bound(), 3) << " per cpu\n";
  if (rsv_->real_kernel()) {
    const auto io = io_isolation();
    o << "  io isolation: " << (io.safe ? "safe (" + io.reason + ")" : io.reason) << "\n";
    if (steering_) o << "  io steering: " << steering_->describe() << "\n";
  }
  for (const auto& d : load_)
    o << "    " << d.name << ": capsule " << rsv::format_percent(d.capsule) << ", other DL "
      << rsv::format_percent(d.external) << ", free " << rsv::format_percent(d.free()) << " of "
      << rsv::format_percent(d.capacity) << "\n";
  o << host_capsules_.show();
  for (const auto& [name, st] : vms_) {
    o << "  VM " << name << ": " << st.state;
    if (!st.reason.empty()) o << " (" << st.reason << ")";
    o << "\n";
    if (!st.in_force.empty()) o << "    still in force: " << st.in_force << "\n";
    if (!datapath_->attached() && !st.ports.empty()) o << "    datapath down: " << datapath_->detail() << "\n";
    if (st.net_added && datapath_->attached())
      if (std::string serving = datapath_->serving(name); !serving.empty()) o << "    served by " << serving << "\n";
    if (st.dp_stats && datapath_->attached())
      for (const auto& [port, c] : st.dp_stats->ports) {
        const auto link = port_link_status(c);
        o << "    port " << port << ": " << link.state
          << (link.reason.empty() ? " (connected at " + link.since + ")" : " (" + link.reason + ")") << "\n";
      }
    if (!st.drift.empty()) o << "    changed outside capsule: " << st.drift << "\n";
    if (auto outside = host_capsules_.outside(name))
      o << "    outside its capsule: " << rsv::format_percent(*outside) << " CPU of the datapath's shared threads\n";
    if (!st.reserved) continue;
    if (const auto* r = rsv_->find(name)) o << "    reservation: " << describe(*r) << "\n";
    if (!st.net_budget.empty()) o << "    net budget: " << st.net_budget << "\n";
    o << "    pid " << st.pid << ", admitted " << rsv::format_percent(st.decision.bandwidth) << "\n";
    for (const auto& p : st.decision.threads) {
      auto params = rsv_->real_kernel() ? rsv::get_sched_params(p.tid)
                                        : Result<rsv::SchedParams>(Error{"simulated host", ENOTSUP});
      o << "    " << p.role << " tid " << p.tid << ": ";
      if (params)
        o << rsv::policy_name(params->policy) << " runtime " << rsv::format_duration(params->runtime)
          << " period " << rsv::format_duration(params->period);
      else
        o << params.error().message;
      o << (p.cpu >= 0 ? ", cpu " + std::to_string(p.cpu) : std::string()) << "\n";
    }
  }
  return o.str();
}

std::string Agent::stats() const {
  std::ostringstream o;
  for (const auto& [name, st] : vms_) {
    o << "VM " << name << " (" << st.state << ")\n";
    double cpu = 0;
    for (const auto& t : st.threads) {
      cpu += t.utilisation;
      o << "  " << t.role << " tid " << t.tid << ": cpu " << rsv::format_percent(t.utilisation);
      if (t.budget_used >= 0) o << ", budget used " << rsv::format_percent(t.budget_used);
      o << "\n";
    }
    if (st.reserved)
      o << "  total: cpu " << rsv::format_percent(cpu) << " of " << rsv::format_percent(st.decision.bandwidth)
        << " reserved\n";
    if (st.dp_stats)
      for (const auto& [port, c] : st.dp_stats->ports)
        o << "  port " << port << ": rx " << c.rx_packets << " pkts, tx " << c.tx_packets << " pkts\n";
  }
  return o.str();
}

std::string Agent::metrics() const {
  std::ostringstream o;
  const std::string ch = "chassis=\"" + prometheus_label(config_.chassis) + "\"";
  o << "# HELP capsule_up Whether capsuled is running.\n# TYPE capsule_up gauge\n"
    << "capsule_up{" << ch << "} 1\n";
  o << "# HELP capsule_db_connected Whether capsuled is connected to its database.\n"
    << "# TYPE capsule_db_connected gauge\ncapsule_db_connected{" << ch << "} " << (snapshot_.connected ? 1 : 0)
    << "\n";
  o << "# HELP capsule_datapath_attached Whether a datapath is attached.\n"
    << "# TYPE capsule_datapath_attached gauge\ncapsule_datapath_attached{" << ch << "} "
    << (datapath_->attached() ? 1 : 0) << "\n";
  o << "# HELP capsule_reconcile_total Reconcile passes.\n# TYPE capsule_reconcile_total counter\n"
    << "capsule_reconcile_total{" << ch << "} " << reconciles_ << "\n";
  o << "# HELP capsule_apply_total Reservations applied or changed.\n# TYPE capsule_apply_total counter\n"
    << "capsule_apply_total{" << ch << "} " << applies_ << "\n";
  o << "# HELP capsule_reject_total VM configurations rejected.\n# TYPE capsule_reject_total counter\n"
    << "capsule_reject_total{" << ch << "} " << rejections_ << "\n";
  o << "# HELP capsule_domain_utilization EDF bandwidth per scheduling domain.\n"
    << "# TYPE capsule_domain_utilization gauge\n";
  for (const auto& d : load_) {
    const std::string l = ch + ",domain=\"" + prometheus_label(d.name) + "\"";
    o << "capsule_domain_utilization{" << l << ",kind=\"capacity\"} " << d.capacity << "\n"
      << "capsule_domain_utilization{" << l << ",kind=\"capsule\"} " << d.capsule << "\n"
      << "capsule_domain_utilization{" << l << ",kind=\"external\"} " << d.external << "\n";
  }
  o << "# HELP capsule_vm_state 1 for the state each VM is in.\n# TYPE capsule_vm_state gauge\n";
  for (const auto& [name, st] : vms_)
    o << "capsule_vm_state{" << ch << ",vm=\"" << prometheus_label(name) << "\",state=\"" << st.state << "\"} 1\n";
  o << "# HELP capsule_vm_reserved_utilization Admitted EDF bandwidth of a VM (fraction of one CPU).\n"
    << "# TYPE capsule_vm_reserved_utilization gauge\n";
  for (const auto& [name, st] : vms_)
    if (st.reserved)
      o << "capsule_vm_reserved_utilization{" << ch << ",vm=\"" << prometheus_label(name) << "\"} " << st.decision.bandwidth
        << "\n";
  o << "# HELP capsule_thread_cpu_utilization CPU use of a reserved thread over the last sample.\n"
    << "# TYPE capsule_thread_cpu_utilization gauge\n";
  for (const auto& [name, st] : vms_)
    for (const auto& t : st.threads)
      o << "capsule_thread_cpu_utilization{" << ch << ",vm=\"" << prometheus_label(name) << "\",thread=\"" << t.role
        << "\",tid=\"" << t.tid << "\"} " << t.utilisation << "\n";
  o << "# HELP capsule_thread_budget_used CPU use of a reserved thread over its own budget (runtime/period).\n"
    << "# TYPE capsule_thread_budget_used gauge\n";
  for (const auto& [name, st] : vms_)
    for (const auto& t : st.threads)
      if (t.budget_used >= 0)
        o << "capsule_thread_budget_used{" << ch << ",vm=\"" << prometheus_label(name) << "\",thread=\"" << t.role
          << "\",tid=\"" << t.tid << "\"} " << t.budget_used << "\n";
  o << host_capsules_.metrics(ch);
  if (datapath_->attached()) {
    o << datapath_->metrics(ch);
    o << "# HELP capsule_port_packets_total Packets per port and direction.\n"
      << "# TYPE capsule_port_packets_total counter\n";
    for (const auto& [name, st] : vms_)
      if (st.dp_stats)
        for (const auto& [port, c] : st.dp_stats->ports) {
          const std::string l = ch + ",vm=\"" + prometheus_label(name) + "\",port=\"" + prometheus_label(port) + "\"";
          o << "capsule_port_packets_total{" << l << ",direction=\"rx\"} " << c.rx_packets << "\n"
            << "capsule_port_packets_total{" << l << ",direction=\"tx\"} " << c.tx_packets << "\n";
        }
  }
  return o.str();
}

}  // namespace capsule::agent
