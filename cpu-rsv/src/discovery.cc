#include "capsule/rsv/discovery.h"

#include <dirent.h>
#include <signal.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <regex>

#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/thread_state.h"

namespace capsule::rsv {
namespace {

std::vector<pid_t> numeric_entries(const std::string& dir) {
  std::vector<pid_t> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9') out.push_back(std::atoi(e->d_name));
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Before Linux 6.4 a vhost-net worker was a kernel thread of its own.
bool vhost_workers_are_kernel_threads() {
  static const bool old_kernel = [] {
    utsname u{};
    if (::uname(&u) != 0) return true;
    int major = 0, minor = 0;
    std::sscanf(u.release, "%d.%d", &major, &minor);
    return major < 6 || (major == 6 && minor < 4);
  }();
  return old_kernel;
}

}  // namespace

std::string role_name(ThreadRole role) {
  switch (role) {
    case ThreadRole::kVcpu: return "vcpu";
    case ThreadRole::kEmulator: return "emulator";
    case ThreadRole::kIoThread: return "iothread";
    case ThreadRole::kVhostWorker: return "vhost";
    case ThreadRole::kOvsPmd: return "ovs-pmd";
    case ThreadRole::kCapsulePmd: return "pmd";
    case ThreadRole::kOther: return "other";
  }
  return "other";
}

DiscoveredThread classify_thread(pid_t pid, pid_t tid, const std::string& comm) {
  static const std::regex vcpu(R"(^CPU (\d+)/(KVM|TCG)$)");
  static const std::regex ovs_pmd(R"(^pmd-c(\d+)/id:\d*$)");
  DiscoveredThread t{tid, comm, ThreadRole::kOther, -1};
  std::smatch m;
  if (std::regex_match(comm, m, vcpu)) {
    t.role = ThreadRole::kVcpu;
    t.index = std::stoi(m[1]);
  } else if (std::regex_match(comm, m, ovs_pmd)) {
    t.role = ThreadRole::kOvsPmd;
    t.index = std::stoi(m[1]);
  } else if (comm.rfind(kCapsulePmdPrefix, 0) == 0) {
    t.role = ThreadRole::kCapsulePmd;
  } else if (comm.rfind("IO ", 0) == 0) {
    t.role = ThreadRole::kIoThread;
  } else if (comm == "vhost-" + std::to_string(pid)) {
    t.role = ThreadRole::kVhostWorker;
  } else if (tid == pid) {
    t.role = ThreadRole::kEmulator;
  }
  return t;
}

Result<std::vector<DiscoveredThread>> discover_threads(pid_t pid) {
  if (pid <= 0 || (::kill(pid, 0) != 0 && errno == ESRCH))
    return Error{"process " + std::to_string(pid) + " does not exist", ESRCH};
  std::vector<DiscoveredThread> out;
  for (pid_t tid : numeric_entries("/proc/" + std::to_string(pid) + "/task")) {
    auto id = read_thread_identity(tid);
    if (!id) continue;  // exited while we looked
    out.push_back(classify_thread(pid, tid, id->second));
  }
  if (out.empty()) return Error{"process " + std::to_string(pid) + " does not exist", ESRCH};
  // vhost-net workers were kernel threads (children of kthreadd) before
  // Linux 6.4; since then they are threads of the QEMU process itself and
  // were found above. Looking for them means reading every process of the
  // host, per VM: only where they can exist.
  if (!vhost_workers_are_kernel_threads()) return out;
  const std::string vhost = "vhost-" + std::to_string(pid);
  for (pid_t other : numeric_entries("/proc")) {
    if (other == pid) continue;
    auto id = read_thread_identity(other);
    if (id && id->second == vhost) out.push_back(DiscoveredThread{other, id->second, ThreadRole::kVhostWorker, -1});
  }
  return out;
}

pid_t find_capsule_pmd(pid_t pid, const std::string& vm) {
  auto all = discover_threads(pid);
  if (!all) return 0;
  const std::string comm = std::string(kCapsulePmdPrefix + vm).substr(0, 15);
  for (const auto& t : threads_with_role(*all, ThreadRole::kCapsulePmd))
    if (t.comm == comm) return t.tid;
  return 0;
}

std::vector<DiscoveredThread> threads_with_role(const std::vector<DiscoveredThread>& all, ThreadRole role) {
  std::vector<DiscoveredThread> out;
  for (const auto& t : all)
    if (t.role == role) out.push_back(t);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.index != b.index ? a.index < b.index : a.tid < b.tid;
  });
  return out;
}

Result<pid_t> read_pidfile(const std::string& path) {
  auto s = read_text_file(path);
  if (!s) return Error{"cannot read pidfile " + path + ": " + s.error().message, s.error().errnum};
  pid_t pid = std::atoi(s->c_str());
  if (pid <= 0) return Error{"pidfile " + path + " does not hold a process id", EINVAL};
  if (!process_alive(pid))
    return Error{"pidfile " + path + " names process " + std::to_string(pid) + ", which is not running", ESRCH};
  return pid;
}

bool process_alive(pid_t pid) {
  if (pid <= 0 || (::kill(pid, 0) != 0 && errno == ESRCH)) return false;
  auto stat = read_text_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return false;
  const auto paren = stat->rfind(')');
  return paren != std::string::npos && paren + 2 < stat->size() && (*stat)[paren + 2] != 'Z';
}

}  // namespace capsule::rsv
