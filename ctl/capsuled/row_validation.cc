#include "row_validation.h"

#include <cerrno>
#include <limits>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "capsule/rsv/discovery.h"
#include "capsule/rsv/spec.h"
#include "qos/qos-rules.h"

namespace capsule::agent {
namespace {

// The kernel, DPDK and the QoS rules read C strings: a NUL inside a value
// would make them check and use less than the row says (fuzz_rows found
// "12\0..." passing as 12). The message shows the NUL as \0.
Status no_nul(const std::string& column, const std::string& text) {
  if (text.find('\0') == std::string::npos) return Status::Ok();
  std::string shown;
  for (char c : text) shown += c ? std::string(1, c) : std::string("\\0");
  return Error{column + " \"" + shown + "\" holds a NUL byte", EINVAL};
}

}  // namespace

using std::chrono::microseconds;

Result<PortConfig> port_from_row(const ovs::PortRow& row) {
  PortConfig p;
  p.name = row.name;
  const std::string where = "port " + row.name + ": ";
  std::vector<std::pair<std::string, const std::string*>> texts{{"name", &row.name}, {"vhost_path", &row.vhost_path}};
  if (row.mac) texts.emplace_back("mac", &*row.mac);
  if (row.qos) {
    texts.emplace_back("QoS type", &row.qos->type);
    for (const auto& [k, v] : row.qos->other_config) texts.emplace_back("QoS key", &k), texts.emplace_back("QoS " + k, &v);
  }
  for (const auto& [column, text] : texts)
    if (Status st = no_nul(column, *text); !st) return Error{where + st.error().message, EINVAL};
  if (row.vhost_path.empty() || row.vhost_path[0] != '/')
    return Error{where + "vhost_path \"" + row.vhost_path + "\" is not an absolute path", EINVAL};
  p.vhost_path = row.vhost_path;
  p.vhost_client = row.vhost_mode.value_or("client") == "client";
  if (row.mac) {
    static const std::regex mac_re("^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$");
    if (!std::regex_match(*row.mac, mac_re))
      return Error{where + "mac \"" + *row.mac + "\" is not an Ethernet address (xx:xx:xx:xx:xx:xx)", EINVAL};
    // What the datapath can give a VM's port (dpdk-pmd refuses the rest too,
    // later and without the port's name).
    if (std::stoi(row.mac->substr(0, 2), nullptr, 16) & 1)
      return Error{where + "mac \"" + *row.mac + "\" is a multicast address: a port needs a unicast MAC", EINVAL};
    if (row.mac->find_first_not_of("0:") == std::string::npos)
      return Error{where + "mac \"" + *row.mac + "\" is the zero address: a port needs a unicast MAC", EINVAL};
    p.mac = *row.mac;
  }
  if (row.qos) {
    PolicerConfig pol;
    pol.type = row.qos->type;
    // The rules capsule-ctl applies too (qos/qos-rules.h), for rows from any client.
    std::vector<const char*> keys, values;
    for (const auto& [k, v] : row.qos->other_config) keys.push_back(k.c_str()), values.push_back(v.c_str());
    char err[256];
    if (capsule_qos_check(pol.type.c_str(), keys.size(), keys.data(), values.data(), err, sizeof err))
      return Error{where + err, EINVAL};
    for (const auto& [k, v] : row.qos->other_config)
      if (capsule_qos_parse(pol.type.c_str(), k.c_str(), v.c_str(), &pol.params[k], err, sizeof err))
        return Error{where + err, EINVAL};
    p.egress = pol;
  }
  // The schema says minInteger 0; a row is still checked as untrusted.
  for (const auto& [column, value] : {std::pair<const char*, int64_t>{"ingress_policing_rate", row.ingress_policing_rate},
                                      {"ingress_policing_burst", row.ingress_policing_burst},
                                      {"ingress_policing_kpkts_rate", row.ingress_policing_kpkts_rate},
                                      {"ingress_policing_kpkts_burst", row.ingress_policing_kpkts_burst}})
    if (value < 0)
      return Error{where + column + " " + std::to_string(value) + " is negative (0 turns the policer off)", EINVAL};
  p.ingress_kbps = uint64_t(row.ingress_policing_rate);
  p.ingress_burst_kb = uint64_t(row.ingress_policing_burst);
  p.ingress_kpps = uint64_t(row.ingress_policing_kpkts_rate);
  p.ingress_burst_kpkts = uint64_t(row.ingress_policing_kpkts_burst);
  return p;
}

Result<DesiredVm> desired_from_row(const ovs::VmRow& row, const Reservations& host) {
  DesiredVm d;
  d.net.vm = row.name;
  for (const auto& port : row.ports) {
    auto p = port_from_row(port);
    if (!p) return p.error();
    d.net.ports.push_back(std::move(*p));
  }

  if (Status st = no_nul("name", row.name); !st) return st.error();
  if (row.pidfile)
    if (Status st = no_nul("pidfile", *row.pidfile); !st) return st.error();
  if (row.pid && row.pidfile) return Error{"both pid and pidfile are set: set one of them", EINVAL};
  // pid_t is 32 bits: a larger number would wrap onto some other process.
  if (row.pid && (*row.pid <= 0 || *row.pid > std::numeric_limits<pid_t>::max()))
    return Error{"pid " + std::to_string(*row.pid) + " is not a process id (1 .. " +
                     std::to_string(std::numeric_limits<pid_t>::max()) + ")",
                 EINVAL};
  if (!row.pid && !row.pidfile)
    return Error{"neither pid nor pidfile is set: capsuled cannot find the VM's threads", EINVAL};
  if (!row.vcpu_runtime_us || !row.period_us)
    return Error{"no reservation: set vcpu_runtime_us and period_us (capsule-ctl set-rsv " + row.name +
                     " RUNTIME PERIOD)",
                 EINVAL};
  // The kernel counts in nanoseconds: a column must convert without
  // overflow before the kernel's own limits are checked (fuzz_rows found it).
  constexpr int64_t kMaxUs = std::numeric_limits<int64_t>::max() / 1000;
  for (const auto& [column, value] : {std::pair{"vcpu_runtime_us", row.vcpu_runtime_us}, std::pair{"period_us", row.period_us},
                                      std::pair{"deadline_us", row.deadline_us},
                                      std::pair{"net_runtime_us", row.net_runtime_us}})
    if (value && (*value < 0 || *value > kMaxUs))
      return Error{std::string(column) + " " + std::to_string(*value) + " is out of range (0 .. " +
                       std::to_string(kMaxUs) + " µs)",
                   EINVAL};

  rsv::VmReservationSpec& spec = d.spec;
  spec.name = row.name;
  spec.period = microseconds(*row.period_us);
  spec.deadline = microseconds(row.deadline_us.value_or(0));
  // Unset: no reclaim, so the budget is a cap as well as a guarantee (what
  // throughput per budget rests on). On a guest without steal time the
  // io_isolation verdict tells the operator about reclaim (issue 11).
  spec.reclaim = row.reclaim.value_or(false);
  // The parameters alone first, so a malformed row reads as such even when
  // its process is missing.
  rsv::ReservationSpec one{microseconds(*row.vcpu_runtime_us), spec.period, spec.deadline, spec.reclaim};
  if (Status st = rsv::validate(one); !st) return st.error();

  if (row.pid) {
    d.pid = pid_t(*row.pid);
  } else {
    auto pid = host.read_pidfile(*row.pidfile);
    if (!pid) return pid.error();
    d.pid = *pid;
  }
  auto threads = host.discover_threads(d.pid);
  if (!threads) return threads.error();
  auto vcpus = rsv::threads_with_role(*threads, rsv::ThreadRole::kVcpu);
  if (vcpus.empty())
    return Error{"process " + std::to_string(d.pid) + " has no vCPU threads (threads named \"CPU <n>/KVM\"; QEMU names them only "
                     "with -name <vm>,debug-threads=on, as libvirt starts it)",
                 ENOENT};
  for (const auto& t : vcpus)
    spec.threads.push_back(rsv::ThreadBudget{t.tid, one.runtime, -1, "vcpu" + std::to_string(t.index)});
  return d;
}

}  // namespace capsule::agent
