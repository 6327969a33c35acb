// Finding the threads a capsule must hold: a QEMU process's vCPU, emulator,
// I/O and vhost worker threads, OVS-DPDK's PMD threads, capsule's own
// datapath threads. Names follow what those programs set with
// pthread_setname_np (15 characters at most).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "capsule/result.h"

namespace capsule::rsv {

enum class ThreadRole {
  kVcpu,         // QEMU "CPU <n>/KVM" or "CPU <n>/TCG"
  kEmulator,     // QEMU's main thread (tid == pid)
  kIoThread,     // QEMU "IO <id>" iothreads
  kVhostWorker,  // "vhost-<qemu pid>": kernel vhost-net workers of this VM
  kOvsPmd,       // OVS-DPDK "pmd-c<core>/id:<n>"
  kCapsulePmd,   // capsule's per-VM datapath thread "cpmd-<vm>"
  kOther,
};
std::string role_name(ThreadRole role);

struct DiscoveredThread {
  pid_t tid = 0;
  std::string comm;
  ThreadRole role = ThreadRole::kOther;
  int index = -1;  // vCPU number, or the core of an OVS PMD
};

// Prefix of capsule's datapath thread names ("cpmd-<vm name>").
inline constexpr const char* kCapsulePmdPrefix = "cpmd-";

// Classifies one thread name. `pid` is the owning process.
DiscoveredThread classify_thread(pid_t pid, pid_t tid, const std::string& comm);

// Every thread of a process, classified. Includes vhost workers that run as
// kernel threads named after the process ("vhost-<pid>") on older kernels.
// ESRCH (with a sentence) when the process does not exist.
Result<std::vector<DiscoveredThread>> discover_threads(pid_t pid);

// Only the threads of one role, sorted by index then tid.
std::vector<DiscoveredThread> threads_with_role(const std::vector<DiscoveredThread>& all, ThreadRole role);

// capsule's datapath thread for VM `vm` in process `pid` (a capsuled, or a
// program running capsule's datapath): "cpmd-<vm>" cut to 15 characters as
// the kernel keeps it. 0 when there is none.
pid_t find_capsule_pmd(pid_t pid, const std::string& vm);

// Reads a pidfile (as QEMU's -pidfile writes it) and checks the process lives.
Result<pid_t> read_pidfile(const std::string& path);
// Whether `pid` names a running process (a zombie, killed and not yet
// reaped, is not one).
bool process_alive(pid_t pid);

}  // namespace capsule::rsv
