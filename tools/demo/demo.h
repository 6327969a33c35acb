// capsule-demo's two acts (see main.cc).
#pragma once

namespace capsule::demo {

// CPU shares of emulated VMs under CFS and in capsules, next to CPU hogs.
int cpu_share_act(double seconds);

// A capsule host (ovsdb-server, capsuled, the DPDK datapath) with emulated
// VMs on vhost-user ports: a VM's response times and its neighbour's
// throughput with and without capsules while the neighbour is flooded.
int network_act(double seconds);

}  // namespace capsule::demo
