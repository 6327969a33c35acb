// capsule-demo: what a temporal capsule buys a VM, in two acts.
//
//   capsule-demo [--seconds S] [--act cpu|net|all]
//
// Act 1 (cpu): emulated VMs' CPU shares next to CPU hogs, CFS vs capsules.
// Act 2 (net): the whole stack (ovsdb-server, capsuled on the DPDK datapath,
// capsule-ctl) with four emulated VMs on vhost-user ports: a client asking
// VM 1 for 20 kB every 20 ms, a flood aimed at VM 2 (VM 1's neighbour),
// first without capsules, then with them.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "demo.h"

int main(int argc, char** argv) {
  double seconds = 4;
  std::string act = "all";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) seconds = std::atof(argv[++i]);
    else if (a == "--act" && i + 1 < argc) act = argv[++i];
    else {
      std::fprintf(stderr, "usage: capsule-demo [--seconds S] [--act cpu|net|all]\n");
      return 2;
    }
  }
  if (geteuid() != 0) {
    std::fprintf(stderr, "capsule-demo: run as root (SCHED_DEADLINE, cpusets and DPDK need it)\n");
    return 1;
  }
  int rc = 0;
  if (act == "cpu" || act == "all") {
    std::printf("\n=== Act 1: CPU shares ===\n\n");
    rc |= capsule::demo::cpu_share_act(seconds);
  }
  if (act == "net" || act == "all") {
    std::printf("\n=== Act 2: a capsule host with emulated VMs on vhost-user ports ===\n\n");
    rc |= capsule::demo::network_act(seconds);
  }
  return rc;
}
