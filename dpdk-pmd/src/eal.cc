// EAL start-up with defaults that work on a machine without a NIC.
#include "capsule/pmd/eal.h"

#include <rte_eal.h>
#include <rte_errno.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

namespace capsule::pmd {
namespace {

std::mutex g_mu;
bool g_running = false;
bool g_huge = false;

bool hugetlbfs_mounted() {
  std::ifstream in("/proc/mounts");
  std::string dev, dir, type;
  std::string rest;
  while (in >> dev >> dir >> type) {
    std::getline(in, rest);
    if (type == "hugetlbfs") return true;
  }
  return false;
}

// "0@(0,1,3)": lcore 0 may run on every CPU this process may use, so the
// EAL does not pin the thread that calls rte_eal_init.
std::string lcores_arg() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::string cpus;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus += (cpus.empty() ? "" : ",") + std::to_string(c);
  }
  if (cpus.empty()) cpus = "0";
  return "--lcores=0@(" + cpus + ")";
}

bool use_huge(const EalOptions& o) {
  switch (o.hugepages) {
    case EalOptions::Hugepages::kOn: return true;
    case EalOptions::Hugepages::kOff: return false;
    case EalOptions::Hugepages::kAuto: break;
  }
  return hugepages_available();
}

}  // namespace

bool hugepages_available(unsigned pages) {
  if (!hugetlbfs_mounted()) return false;
  std::ifstream in("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
  unsigned free_pages = 0;
  in >> free_pages;
  return free_pages >= pages;
}

std::vector<std::string> eal_arguments(const EalOptions& o) {
  std::vector<std::string> a{o.program};
  a.push_back("--file-prefix=" + (o.file_prefix.empty() ? "capsule-" + std::to_string(getpid()) : o.file_prefix));
  if (!o.allow_pci) a.push_back("--no-pci");
  a.push_back(lcores_arg());
  a.push_back("--no-telemetry");
  // CAPSULE_DPDK_LOG overrides the log level ("lib.vhost.*:debug", "info").
  const char* env_level = std::getenv("CAPSULE_DPDK_LOG");
  a.push_back("--log-level=" + (env_level && *env_level ? std::string(env_level) : o.log_level));
  if (use_huge(o)) {
    // No files in hugetlbfs: nothing is left behind if we die.
    a.push_back("--in-memory");
  } else {
    a.push_back("--no-huge");
    a.push_back("-m");
    a.push_back(std::to_string(o.memory_mb));
    // No shared config file nor multi-process socket: capsule never runs DPDK
    // secondary processes, and those files would outlive a crash.
    a.push_back("--no-shconf");
  }
  for (const auto& e : o.extra) a.push_back(e);
  return a;
}

Status eal_init(const EalOptions& opts) {
  std::lock_guard lk(g_mu);
  if (g_running) return Status::Ok();
  auto args = eal_arguments(opts);
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  const bool huge = use_huge(opts);
  if (rte_eal_init(int(args.size()), argv.data()) < 0) {
    std::ostringstream cmd;
    for (auto& s : args) cmd << " " << s;
    return Error{"DPDK EAL did not start (" + std::string(rte_strerror(rte_errno)) + ") with arguments:" + cmd.str() +
                     (huge ? "" : "; without hugepages DPDK needs -m memory: reserve hugepages (scripts/lib/setup.sh) or lower memory_mb"),
                 rte_errno};
  }
  // With --in-memory or --no-shconf EAL writes nothing into its runtime
  // directory (/var/run/dpdk/<file-prefix>) but still creates it, and never
  // removes it: thousands piled up on a test machine. It is empty now (rmdir
  // refuses otherwise, e.g. when --extra asked for shared files), so remove it
  // while we are alive: a process that dies later leaves nothing behind.
  rmdir(rte_eal_get_runtime_dir());
  g_running = true;
  g_huge = huge;
  return Status::Ok();
}

bool eal_running() {
  std::lock_guard lk(g_mu);
  return g_running;
}

bool eal_uses_hugepages() {
  std::lock_guard lk(g_mu);
  return g_huge;
}

}  // namespace capsule::pmd
