#include "capsule/pmd/show.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace capsule::pmd {
namespace {

void vm_block(std::ostringstream& o, const Datapath& dp, const std::string& name, const VmStats& s) {
  auto tid = dp.pmd_tid(name);
  o << "pmd thread of VM " << name << " (tid " << (tid ? std::to_string(*tid) : std::string("?")) << "):\n";
  o << "  device: " << (s.connected ? "connected" : "not connected") << " (connects: " << s.connects << ")\n";
  o << "  from VM: " << s.from_vm_packets << " packets, " << s.from_vm_bytes << " bytes\n";
  o << "  to VM: " << s.to_vm_packets << " packets, " << s.to_vm_bytes << " bytes\n";
  o << "  drops by cause:\n";
  o << "    port_security: " << s.from_vm_drops_port_security << "\n";
  o << "    policer from VM (red/pps): " << s.from_vm_drops_red << "/" << s.from_vm_drops_pps << "\n";
  o << "    policer to VM (red/pps): " << s.to_vm_drops_red << "/" << s.to_vm_drops_pps << "\n";
  o << "    ring_full: " << s.ring_full_drops << "\n";
  o << "    vhost_enqueue: " << s.vhost_enqueue_drops << "\n";
  o << "    not_connected: " << s.not_connected_drops << "\n";
  o << "    uplink_tx: " << s.uplink_tx_drops << "\n";
  char cpp[32];
  std::snprintf(cpp, sizeof cpp, "%.1f", s.cycles_per_packet);
  const uint64_t rounds = s.busy_iterations + s.idle_iterations;
  char idle[32];
  std::snprintf(idle, sizeof idle, "%.1f", rounds ? 100.0 * double(s.idle_iterations) / double(rounds) : 0.0);
  o << "  rounds: " << s.busy_iterations << " busy, " << s.idle_iterations << " idle (" << idle << " % idle)\n";
  o << "  busy cycles: " << s.busy_cycles << " (" << cpp << " cycles/packet)\n";
  o << "  waits: " << s.blocks << " blocks; wake-ups by kick " << s.wakeups_by_kick << ", by ring "
    << s.wakeups_by_ring << ", by room " << s.wakeups_by_room << ", by policer tokens " << s.wakeups_by_policer << "; sleeps " << s.sleeps << ", yields " << s.yields
    << "\n";
}

}  // namespace

Result<std::string> format_pmd_stats(const Datapath& dp, const std::string& vm) {
  std::ostringstream o;
  auto names = dp.vm_names();
  if (!vm.empty()) {
    if (std::find(names.begin(), names.end(), vm) == names.end())
      return Error{"no VM '" + vm + "' in this datapath", ENOENT};
    names = {vm};
  }
  for (const auto& n : names) {
    auto s = dp.stats(n);
    if (s) vm_block(o, dp, n, *s);  // (removed meanwhile: skipped)
  }
  if (names.empty()) o << "no VMs\n";
  if (vm.empty()) {
    const auto u = dp.uplink_stats();
    if (u.present)
      o << "uplink " << u.name << " (port " << u.port_id << ", " << u.tx_queues << " tx queues): " << u.rx_packets
        << " packets received, " << u.rx_no_vm << " for no VM (dropped), dispatcher "
        << (u.rx_interrupts ? "on rx interrupts" : "polling") << ", " << u.dispatcher_blocks << " blocks\n";
    else
      o << "no uplink\n";
  }
  return o.str();
}

std::string format_fdb(const Datapath& dp) {
  auto entries = dp.fdb();
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.port != b.port ? a.port < b.port : a.mac.u64() < b.mac.u64();
  });
  std::size_t w = 4;
  for (const auto& e : entries) w = std::max(w, e.port.size());
  std::ostringstream o;
  char line[128];
  std::snprintf(line, sizeof line, " %-*s  %-17s  %s\n", int(w), "port", "MAC", "Age");
  o << line;
  for (const auto& e : entries) {
    const std::string age = e.configured ? "static" : std::to_string(e.age_s);
    std::snprintf(line, sizeof line, " %-*s  %-17s  %s\n", int(w), e.port.c_str(), e.mac.str().c_str(), age.c_str());
    o << line;
  }
  const auto s = dp.fdb_summary();
  o << "learned MAC entries: " << s.learned << "/" << s.table_size << " (mac-table-size), at most " << s.vm_max
    << " per VM port; aging " << s.aging_s << " s; evicted " << s.evictions << ", not learned for want of room "
    << s.refusals << "\n";
  return o.str();
}

}  // namespace capsule::pmd
