// Port security, as OVN's Logical_Switch_Port:port_security with a MAC only:
// a VM port forwards only frames whose source MAC is the VM's configured
// MAC. Anything else (spoofed, random, multicast sources) is dropped and
// counted before it can reach the forwarding table, a policer or another
// VM, so a VM cannot impersonate a neighbour or flood the MAC table.
#pragma once

#include <rte_ether.h>

#include <cstring>

#include "core.h"

namespace capsule::pmd::detail {

inline bool source_allowed(const Vm& vm, const rte_ether_hdr* eth) {
  return !vm.cfg.port_security || std::memcmp(eth->src_addr.addr_bytes, vm.cfg.mac.b.data(), RTE_ETHER_ADDR_LEN) == 0;
}

}  // namespace capsule::pmd::detail
