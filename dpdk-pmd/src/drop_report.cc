#include "drop_report.h"

#include <cstdio>
#include <utility>
#include <vector>

namespace capsule::pmd::detail {

DropReport drops_between(const VmStats& before, const VmStats& now, double seconds) {
  // Counters only grow while a VM exists; a smaller one is a new VM's.
  auto d = [](uint64_t b, uint64_t n) { return n >= b ? n - b : n; };
  const std::pair<const char*, uint64_t> expected[] = {
      {"policer from the VM", d(before.from_vm_drops_red + before.from_vm_drops_pps,
                                now.from_vm_drops_red + now.from_vm_drops_pps)},
      {"policer to the VM", d(before.to_vm_drops_red + before.to_vm_drops_pps,
                              now.to_vm_drops_red + now.to_vm_drops_pps)},
      {"guest not connected", d(before.not_connected_drops, now.not_connected_drops)},
  };
  const std::pair<const char*, uint64_t> lost[] = {
      {"port security", d(before.from_vm_drops_port_security, now.from_vm_drops_port_security)},
      {"rx ring full (the VM's datapath thread falls behind its senders)",
       d(before.ring_full_drops, now.ring_full_drops)},
      {"device gone while frames waited", d(before.vhost_enqueue_drops, now.vhost_enqueue_drops)},
      {"uplink tx queue full", d(before.uplink_tx_drops, now.uplink_tx_drops)},
  };
  DropReport r;
  std::string causes;
  auto add = [&](const char* cause, uint64_t n) {
    if (!n) return;
    r.total += n;
    causes += (causes.empty() ? "" : ", ") + std::string(cause) + " " + std::to_string(n);
  };
  for (const auto& [cause, n] : lost) {
    if (n) r.only_expected = false;
    add(cause, n);
  }
  for (const auto& [cause, n] : expected) add(cause, n);
  if (!r.total) return r;
  char span[32];
  std::snprintf(span, sizeof span, "%.1f s", seconds);
  r.text = "lost " + std::to_string(r.total) + " frames in " + span + ": " + causes;
  return r;
}

}  // namespace capsule::pmd::detail
