#include "service.h"

#include <unistd.h>

#include "capsule/pmd/eal.h"
#include "capsule/wall_clock.h"

namespace capsule::datapathd {
namespace {

std::string text(const std::map<std::string, std::string>& m) {
  std::string s = "{";
  for (const auto& [k, v] : m) s += (s.size() > 1 ? ", " : "") + k + "=" + v;
  return s + "}";
}

Result<std::string> vm_name(const json& request) {
  if (!request.contains("vm") || !request.at("vm").is_string() || request.at("vm").get<std::string>().empty())
    return Error{"request " + request.value("op", std::string("?")) + " needs \"vm\": the VM's name", EINVAL};
  return request.at("vm").get<std::string>();
}

}  // namespace

json Service::handle(const json& request) {
  // A field of the wrong JSON type anywhere below throws; every op reads
  // and checks its whole request before it changes anything, so a refusal
  // here has changed nothing.
  try {
    return dispatch(request);
  } catch (const json::exception& e) {
    return refusal(std::string("malformed request: ") + e.what() + "; nothing was changed");
  }
}

json Service::dispatch(const json& request) {
  if (!request.is_object() || !request.contains("op") || !request.at("op").is_string())
    return refusal(std::string("a request is a JSON object with \"op\" (") + kOps + ")");
  const std::string op = request.at("op").get<std::string>();
  if (op == "hello") return hello();
  if (op == "configure") return configure(request);
  if (op == "add_vm") return add_vm(request);
  if (op == "remove_vm") return remove_vm(request);
  if (op == "pmd_tid") return pmd_tid(request);
  if (op == "stats") return stats(request);
  if (op == "pmd_stats_show" || op == "fdb_show") {  // capsule/pmd-stats-show, capsule/fdb-show
    if (!dp_) return refusal("the datapath is not configured");
    std::string vm;  // pmd_stats_show: one VM, or every VM without "vm"
    if (op == "pmd_stats_show" && request.contains("vm")) {
      auto name = vm_name(request);
      if (!name) return refusal(name.error().message);
      vm = *name;
    }
    auto text = op == "fdb_show" ? dp_->fdb_show() : dp_->pmd_stats_show(vm);
    if (!text) return refusal(text.error().message);
    return ok({{"text", *text}});
  }
  if (op == "shutdown") {
    log_(LogLevel::kInfo, "shutdown requested: removing " + std::to_string(dp_ ? dp_->in_force().size() : 0) + " VMs");
    stop();
    shutdown_ = true;
    return ok();
  }
  return refusal("unknown op \"" + op + "\" (" + kOps + ")");
}

json Service::hello() const {
  json vms = json::array();
  if (dp_)
    for (const auto& c : dp_->in_force()) vms.push_back(to_json(c));
  return ok({{"pid", ::getpid()},
             {"version", kVersion},
             {"started_ms", started_ms_},
             {"configured", dp_ != nullptr},
             {"settings", settings_ ? to_json(*settings_) : json(nullptr)},
             {"detail", dp_ ? dp_->detail() : std::string("not configured")},
             {"vms", std::move(vms)}});
}

json Service::configure(const json& request) {
  if (!request.contains("settings")) return refusal("configure needs \"settings\"");
  auto s = settings_from_json(request.at("settings"));
  if (!s) return refusal(s.error().message);
  if (dp_ && settings_ == *s) return ok({{"changed", false}, {"detail", dp_->detail()}});
  // rte_eal_init runs once per process: other EAL options need a new daemon.
  if (eal_options_ && pmd::eal_running() && *eal_options_ != s->dpdk_options)
    return refusal("the EAL of this " + std::string(kProgram) + " runs with dpdk_options " + text(*eal_options_) +
                   "; dpdk_options " + text(s->dpdk_options) + " need a new daemon (shutdown, then start it again)");
  // Keys and values first: a malformed request changes nothing.
  if (s->type != "capsule")
    return refusal("datapath type '" + s->type + "' is not available in " + kProgram + " (use \"capsule\")");
  if (auto cfg = agent::datapath_config(*s); !cfg) return refusal(cfg.error().message);
  const auto old_settings = settings_;
  const auto old_vms = dp_ ? dp_->in_force() : std::vector<agent::VmNetConfig>{};
  if (dp_) {
    log_(LogLevel::kInfo, "new settings: removing " + std::to_string(old_vms.size()) + " VMs and the datapath");
    stop();
  }
  const bool eal_before = pmd::eal_running();
  auto made = agent::make_capsule_dpdk_datapath(*s);
  if (!eal_before && pmd::eal_running()) eal_options_ = s->dpdk_options;
  if (!made) {
    log_(LogLevel::kErr, "configure: " + made.error().message);
    std::string restored;
    if (old_settings) {  // what was in force comes back
      if (auto again = agent::make_capsule_dpdk_datapath(*old_settings)) {
        dp_ = std::move(*again);
        settings_ = old_settings;
        for (const auto& c : old_vms) (void)dp_->add_vm(c);
        restored = "; the previous datapath and " + std::to_string(dp_->in_force().size()) + " of its " +
                   std::to_string(old_vms.size()) + " VMs were restored";
      }
    }
    return refusal(made.error().message + restored);
  }
  dp_ = std::move(*made);
  settings_ = *s;
  log_(LogLevel::kInfo, "datapath ready: " + dp_->detail() + " (dpdk_options " + text(s->dpdk_options) +
                            ", uplink " + text(s->uplink) + ")");
  return ok({{"changed", true}, {"detail", dp_->detail()}});
}

json Service::add_vm(const json& request) {
  if (!dp_) return refusal("the datapath is not configured (configure first)");
  if (!request.contains("vm")) return refusal("add_vm needs \"vm\": the VM's network configuration");
  auto c = vm_from_json(request.at("vm"));
  if (!c) return refusal(c.error().message);
  if (c->vm.empty()) return refusal("add_vm: the VM has no name");
  const agent::VmNetConfig* cur = dp_->find(c->vm);
  // The same configuration (an agent adopting what is in force): nothing to
  // do, so the port stays connected and the PMD thread keeps its tid.
  if (cur && *cur == *c) return ok({{"changed", false}});
  const bool added = !cur;
  if (Status st = dp_->add_vm(*c); !st) {
    log_(LogLevel::kWarn, "VM " + c->vm + ": " + st.error().message);
    return refusal(st.error().message);
  }
  log_(LogLevel::kInfo, "VM " + c->vm + (added ? ": added, " : ": changed, ") + std::to_string(c->ports.size()) +
                            " ports" + (c->ports.empty() ? "" : " (" + c->ports.front().vhost_path + ")"));
  return ok({{"changed", true}});
}

json Service::remove_vm(const json& request) {
  auto name = vm_name(request);
  if (!name) return refusal(name.error().message);
  if (!dp_ || !dp_->find(*name)) return ok();
  Status st = dp_->remove_vm(*name);
  log_(LogLevel::kInfo, "VM " + *name + ": removed" + (st ? "" : " (" + st.error().message + ")"));
  return ok();
}

json Service::pmd_tid(const json& request) const {
  auto name = vm_name(request);
  if (!name) return refusal(name.error().message);
  json tid = nullptr;  // also while its thread is starting (tid 0)
  if (dp_ && dp_->find(*name))
    if (auto t = dp_->pmd_tid(*name); t && *t > 0) tid = *t;
  return ok({{"tid", tid}});
}

json Service::stats(const json& request) const {
  auto name = vm_name(request);
  if (!name) return refusal(name.error().message);
  if (!dp_ || !dp_->find(*name)) return refusal("no VM '" + *name + "' in this datapath");
  auto s = dp_->stats(*name);
  if (!s) return refusal(s.error().message);
  return ok({{"stats", to_json(*s)}});
}

void Service::log_drops() {
  if (!dp_) return;
  const int64_t now = unix_ms_now();
  if (now - drops_logged_ms_ < 1000) return;
  drops_logged_ms_ = now;
  dp_->log_drops();
}

void Service::stop() {
  if (!dp_) return;
  for (const auto& c : dp_->in_force()) (void)dp_->remove_vm(c.vm);
  dp_.reset();
  settings_.reset();
}

}  // namespace capsule::datapathd
