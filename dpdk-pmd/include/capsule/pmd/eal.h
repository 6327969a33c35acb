// DPDK's Environment Abstraction Layer, started once per process.
//
// rte_eal_init can run only once in a process, so this is a process-wide
// singleton: the first eal_init() decides the arguments, later calls with
// other options are refused. The defaults work on a machine without a NIC:
// --no-pci, a file prefix of our own, --in-memory on hugepages when a
// hugetlbfs is mounted and has free pages, --no-huge otherwise, and the main
// lcore mapped to every CPU the process may use (so rte_eal_init does not pin
// the caller).
#pragma once

#include <string>
#include <vector>

#include "capsule/result.h"

namespace capsule::pmd {

struct EalOptions {
  enum class Hugepages { kAuto, kOn, kOff };
  std::string program = "capsule";
  std::string file_prefix;          // "" = "capsule-<pid>"
  Hugepages hugepages = Hugepages::kAuto;
  unsigned memory_mb = 512;         // -m with --no-huge
  bool allow_pci = false;           // false adds --no-pci (a NIC uplink needs true)
  std::string log_level = "error";  // --log-level (EAL and drivers)
  std::vector<std::string> extra;   // appended verbatim (e.g. "--vdev=...")
};

// The argv that eal_init would pass (for logs and docs).
std::vector<std::string> eal_arguments(const EalOptions& opts);

// Starts the EAL (once). A second call succeeds when the EAL is already up.
Status eal_init(const EalOptions& opts = {});
bool eal_running();
// Whether the running EAL uses hugepages.
bool eal_uses_hugepages();

// True when a hugetlbfs is mounted and at least `pages` 2 MiB pages are free.
bool hugepages_available(unsigned pages = 64);

}  // namespace capsule::pmd
