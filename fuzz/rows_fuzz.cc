// VM and Port rows as any OVSDB client may write them (the schema's types,
// any values): capsuled's validation (ctl/capsuled/row_validation.h) must
// refuse what it cannot hold with a message, never throw or crash, and what
// it accepts must be what the row said.
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#include "row_validation.h"

namespace {

using namespace capsule;

std::optional<std::string> maybe_string(FuzzedDataProvider& in) {
  if (!in.ConsumeBool()) return std::nullopt;
  return in.ConsumeRandomLengthString(40);
}

ovs::PortRow port_row(FuzzedDataProvider& in) {
  ovs::PortRow p;
  p.name = in.ConsumeRandomLengthString(16);
  p.vhost_path = in.ConsumeBool() ? "/run/capsule/" + in.ConsumeRandomLengthString(20) : in.ConsumeRandomLengthString(30);
  p.vhost_mode = maybe_string(in);
  p.mac = maybe_string(in);
  p.ingress_policing_rate = in.ConsumeIntegral<int64_t>();
  p.ingress_policing_burst = in.ConsumeIntegral<int64_t>();
  p.ingress_policing_kpkts_rate = in.ConsumeIntegral<int64_t>();
  p.ingress_policing_kpkts_burst = in.ConsumeIntegral<int64_t>();
  if (in.ConsumeBool()) {
    static const char* types[] = {"egress-policer", "trtcm-policer", "pkt-policer"};
    ovs::QosRow q;
    q.type = in.ConsumeBool() ? types[in.ConsumeIntegralInRange(0, 2)] : in.ConsumeRandomLengthString(16);
    static const char* keys[] = {"cir", "cbs", "eir", "ebs", "pir", "pbs"};
    for (int n = in.ConsumeIntegralInRange(0, 4); n > 0; --n) {
      const std::string key = in.ConsumeBool() ? keys[in.ConsumeIntegralInRange(0, 5)] : in.ConsumeRandomLengthString(8);
      q.other_config[key] =
          in.ConsumeBool() ? std::to_string(in.ConsumeIntegral<int64_t>()) : in.ConsumeRandomLengthString(24);
    }
    p.qos = q;
  }
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const ovs::PortRow port = port_row(in);
  if (auto p = agent::port_from_row(port); !p) {
    if (p.error().message.empty()) std::abort();  // a refusal says why
  } else {
    if (port.vhost_path.empty() || port.vhost_path[0] != '/') std::abort();
    if (port.mac && p->mac.size() != 17) std::abort();
    if (port.ingress_policing_rate < 0 || p->ingress_kbps != uint64_t(port.ingress_policing_rate)) std::abort();
    if (p->egress)
      for (const auto& [k, v] : port.qos->other_config)
        if (std::to_string(p->egress->params.at(k)) != v.substr(std::min(v.find_first_not_of('0'), v.size() - 1)))
          std::abort();  // the value is the row's, digit for digit
  }

  ovs::VmRow vm;
  vm.name = in.ConsumeRandomLengthString(16);
  // A pid or a pidfile that is not there: the
  // checks before the kernel is asked are what is fuzzed.
  if (in.ConsumeBool()) {
    // Any number; one that names a process is this one (no vCPU threads).
    const int64_t pid = in.ConsumeIntegral<int64_t>();
    vm.pid = pid > 0 && pid <= std::numeric_limits<pid_t>::max() ? int64_t(::getpid()) : pid;
  }
  if (in.ConsumeBool()) vm.pidfile = "/nonexistent/capsule-fuzz.pid";
  auto opt = [&]() -> std::optional<int64_t> {
    if (!in.ConsumeBool()) return std::nullopt;
    return in.ConsumeBool() ? in.ConsumeIntegralInRange<int64_t>(-10, 2'000'000) : in.ConsumeIntegral<int64_t>();
  };
  vm.vcpu_runtime_us = opt();
  vm.period_us = opt();
  vm.deadline_us = opt();
  vm.reclaim = in.ConsumeBool();
  vm.ports.push_back(port);
  static const auto host = agent::kernel_reservations(rsv::AdmissionConfig{});
  if (auto d = agent::desired_from_row(vm, *host); !d) {
    if (d.error().message.empty()) std::abort();
  } else {
    std::abort();  // neither a vCPU thread nor a pidfile exists here
  }
  return 0;
}
