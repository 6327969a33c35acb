#include "capsule/rsv/admission.h"

#include <dirent.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/rsv/thread_state.h"

namespace capsule::rsv {
namespace {

// Headroom for rounding: the kernel books bandwidth in 20-bit fixed point.
constexpr double kEpsilon = 1e-6;

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9') out.emplace_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

}  // namespace

double kernel_dl_bound() {
  auto rt = read_text_file("/proc/sys/kernel/sched_rt_runtime_us");
  auto per = read_text_file("/proc/sys/kernel/sched_rt_period_us");
  if (!rt || !per) return 0.95;
  const double r = std::atof(rt->c_str()), p = std::atof(per->c_str());
  if (r < 0) return 1.0;
  return p > 0 ? r / p : 0.95;
}

double fair_server_bandwidth() {
  auto rt = read_text_file("/sys/kernel/debug/sched/fair_server/cpu0/runtime");
  auto per = read_text_file("/sys/kernel/debug/sched/fair_server/cpu0/period");
  if (rt && per && std::atof(per->c_str()) > 0) return std::atof(rt->c_str()) / std::atof(per->c_str());
  utsname u{};
  if (::uname(&u) != 0) return 0;
  int major = 0, minor = 0;
  std::sscanf(u.release, "%d.%d", &major, &minor);
  return (major > 6 || (major == 6 && minor >= 12)) ? 0.05 : 0.0;
}

std::vector<DeadlineThread> scan_deadline_threads() {
  std::vector<DeadlineThread> out;
  for (const auto& pid : list_dir("/proc")) {
    for (const auto& tid : list_dir("/proc/" + pid + "/task")) {
      // One sched_getattr per thread (not a parse of its /proc sched file):
      // the scan visits every thread of the host.
      const pid_t t = std::atoi(tid.c_str());
      auto sp = get_sched_params(t);
      if (!sp || !sp->is_deadline()) continue;  // not deadline, or exited meanwhile
      DeadlineThread d;
      d.tid = t;
      d.bandwidth = sp->bandwidth();
      d.density = sp->density();
      if (auto id = read_thread_identity(t)) d.comm = id->second;
      cpu_set_t set;
      CPU_ZERO(&set);
      if (sched_getaffinity(t, sizeof set, &set) == 0) d.cpus = affinity_cpus(set);
      out.push_back(std::move(d));
    }
  }
  return out;
}

AdmissionControl::AdmissionControl(AdmissionConfig config) : cfg_(std::move(config)) {
  if (cfg_.bound < 0) cfg_.bound = kernel_dl_bound();
  if (cfg_.cpus.empty()) cfg_.cpus = online_cpus();
  std::sort(cfg_.cpus.begin(), cfg_.cpus.end());
}

std::vector<DomainLoad> AdmissionControl::load(const std::vector<DeadlineThread>& external) const {
  return load_without("", external);
}

std::vector<DomainLoad> AdmissionControl::load_without(const std::string& skip,
                                                       const std::vector<DeadlineThread>& external) const {
  std::set<pid_t> ours;
  for (const auto& [owner, d] : booked_)
    for (const auto& t : d.threads) ours.insert(t.tid);
  std::vector<DomainLoad> doms;
  if (cfg_.mode == AdmissionMode::kGlobal) {
    DomainLoad d;
    d.name = "root domain (cpus " + format_cpu_list(cfg_.cpus) + ")";
    d.cpus = cfg_.cpus;
    d.capacity = cfg_.bound * double(cfg_.cpus.size());
    d.kernel = fair_server_bandwidth() * double(cfg_.cpus.size());
    doms.push_back(d);
  } else {
    for (int c : cfg_.cpus) {
      DomainLoad d;
      d.name = "core " + std::to_string(c);
      d.cpus = {c};
      d.capacity = cfg_.bound;
      d.kernel = fair_server_bandwidth();
      doms.push_back(d);
    }
  }
  auto domain_of = [&](int cpu) -> DomainLoad* {
    for (auto& d : doms)
      if (std::find(d.cpus.begin(), d.cpus.end(), cpu) != d.cpus.end()) return &d;
    return nullptr;
  };
  for (const auto& [owner, dec] : booked_) {
    if (owner == skip) continue;
    for (const auto& t : dec.threads) {
      DomainLoad* d = cfg_.mode == AdmissionMode::kGlobal ? &doms.front() : domain_of(t.cpu);
      if (d) d->capsule += t.density;
    }
  }
  for (const auto& e : external) {
    if (ours.count(e.tid)) continue;
    if (cfg_.mode == AdmissionMode::kGlobal) {
      // Any DL thread whose affinity touches our cores is in our root domain.
      bool touches = false;
      for (int c : e.cpus) touches |= std::binary_search(cfg_.cpus.begin(), cfg_.cpus.end(), c);
      if (touches || e.cpus.empty()) doms.front().external += e.density;
    } else if (e.cpus.size() == 1) {
      if (DomainLoad* d = domain_of(e.cpus.front())) d->external += e.density;
    }
  }
  return doms;
}

namespace {

// The decision a spec asks for: each thread where its cpu says.
AdmissionDecision as_asked(const VmReservationSpec& spec) {
  AdmissionDecision dec;
  dec.owner = spec.name;
  for (const auto& t : spec.threads) {
    const ReservationSpec one = spec.thread_spec(t);
    dec.threads.push_back(ThreadPlacement{t.tid, t.role, t.cpu, one.bandwidth(), one.density()});
    dec.bandwidth += one.bandwidth();
    dec.density += one.density();
  }
  return dec;
}

}  // namespace

AdmissionDecision AdmissionControl::book_in_force(const VmReservationSpec& spec) {
  AdmissionDecision dec = as_asked(spec);
  booked_[spec.name] = dec;
  return dec;
}

Result<AdmissionDecision> AdmissionControl::admit(const VmReservationSpec& spec,
                                                  const std::vector<DeadlineThread>& external) {
  if (Status st = validate(spec); !st) return st.error();
  // The VM's own threads are demand, not someone else's load, even when
  // they are SCHED_DEADLINE already (a capsule adopted after a restart).
  std::vector<DeadlineThread> others;
  for (const auto& e : external) {
    bool own = false;
    for (const auto& t : spec.threads) own |= t.tid == e.tid;
    if (!own) others.push_back(e);
  }
  auto doms = load_without(spec.name, others);
  const std::string who = "VM '" + spec.name + "'";
  auto describe = [&](const DomainLoad& d) {
    return d.name + ": " + format_percent(d.capsule + d.external + d.kernel) + " booked (" +
           format_percent(d.capsule) + " by capsule, " + format_percent(d.external) +
           " by other SCHED_DEADLINE threads, " + format_percent(d.kernel) +
           " by the kernel's fair server), bound " + format_percent(d.capacity) + ", free " +
           format_percent(std::max(0.0, d.free()));
  };
  // With D < P a thread takes its density, not its share: say so, or the
  // numbers in the refusal would not add up for the reader.
  const bool constrained = spec.effective_deadline() < spec.period;
  auto needs = [&](double density) {
    std::string s = format_percent(density);
    if (constrained)
      s += " (budget over its deadline " + format_duration(spec.effective_deadline()) + ", shorter than its period " +
           format_duration(spec.period) + ": EDF must have that free for the deadline to hold)";
    return s;
  };
  const std::string advice = constrained
                                 ? ". Lower the budget, lengthen the deadline or the period, or remove another VM"
                                 : ". Lower the budget, lengthen the period, or remove another VM";

  AdmissionDecision dec = as_asked(spec);

  if (cfg_.mode == AdmissionMode::kGlobal) {
    for (const auto& t : dec.threads)
      if (t.cpu >= 0)
        return Error{who + ": thread " + std::to_string(t.tid) + " asks for core " +
                         std::to_string(t.cpu) + ", but pinning needs partitioned mode",
                     EINVAL};
    DomainLoad& d = doms.front();
    if (dec.density > d.free() + kEpsilon)
      return Error{"cannot admit " + who + ": it needs " + needs(dec.density) +
                       " of a CPU, and " + describe(d) + advice,
                   EBUSY};
    booked_[spec.name] = dec;
    return dec;
  }

  // Partitioned: biggest threads first, each onto one core.
  std::vector<std::size_t> order(dec.threads.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) {
    return dec.threads[a].density > dec.threads[b].density;
  });
  for (std::size_t i : order) {
    auto& t = dec.threads[i];
    DomainLoad* pick = nullptr;
    if (t.cpu >= 0) {
      for (auto& d : doms)
        if (d.cpus.front() == t.cpu) pick = &d;
      if (!pick)
        return Error{who + ": thread " + std::to_string(t.tid) + " asks for core " +
                         std::to_string(t.cpu) + ", which is not a capsule core (capsule cores: " +
                         format_cpu_list(cfg_.cpus) + ")",
                     EINVAL};
      if (t.density > pick->free() + kEpsilon)
        return Error{"cannot admit " + who + ": thread " + std::to_string(t.tid) +
                         (t.role.empty() ? "" : " (" + t.role + ")") + " needs " + needs(t.density) + " on " +
                         describe(*pick) + advice,
                     EBUSY};
    } else {
      for (auto& d : doms) {
        if (t.density > d.free() + kEpsilon) continue;
        if (!pick) pick = &d;
        if (cfg_.placement == PlacementPolicy::kFirstFit) break;
        if (d.free() > pick->free()) pick = &d;
      }
      if (!pick) {
        std::string all;
        for (const auto& d : doms) all += "; " + describe(d);
        return Error{"cannot admit " + who + ": thread " + std::to_string(t.tid) +
                         (t.role.empty() ? "" : " (" + t.role + ")") + " needs " + needs(t.density) +
                         " of one core and no core has that free" + all +
                         advice,
                     EBUSY};
      }
      t.cpu = pick->cpus.front();
    }
    pick->capsule += t.density;
  }
  booked_[spec.name] = dec;
  return dec;
}

void AdmissionControl::release(const std::string& owner) { booked_.erase(owner); }

}  // namespace capsule::rsv
