// Test helpers for the datapath: a temp directory for sockets, emulated VMs
// (capsule-vm processes) whose counters are read from their output, and a
// network namespace with the uplink's tap device in it. Everything is
// undone in destructors, also when an assertion fails.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "capsule/pmd/datapath.h"
#include "capsule/testkit.h"

namespace capsule::pmd::testing {

using Counters = std::map<std::string, uint64_t>;

// mkdtemp under /tmp, removed (with its sockets) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// One capsule-vm process.
class VmProcess {
 public:
  // extra: capsule-vm options after --socket/--mac.
  VmProcess(const TempDir& dir, const std::string& name, const std::string& socket, const std::string& mac,
            std::vector<std::string> extra);
  ~VmProcess();
  bool wait_ready(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  // The last counters line ("report" or "final") printed so far.
  Counters last_counters() const;
  // Stops the VM (SIGTERM) and returns its final counters.
  Counters finish();
  // Waits for the process to end by itself (tx --count, --duration).
  Counters wait_exit(std::chrono::milliseconds timeout);
  pid_t pid() const { return proc_ ? proc_->pid() : 0; }
  pid_t vcpu_tid() const;
  std::string output() const;

 private:
  std::string out_;
  std::unique_ptr<testkit::ChildProcess> proc_;
};

// A network namespace; deleted (with the devices moved into it) on destruction.
class Netns {
 public:
  explicit Netns(const std::string& name);
  ~Netns();
  const std::string& name() const { return name_; }
  bool ok() const { return ok_; }
  // Runs a shell command inside the namespace; returns its exit status and
  // puts stdout into *out when given.
  int exec(const std::string& cmd, std::string* out = nullptr) const;

 private:
  std::string name_;
  bool ok_ = false;
};

int shell(const std::string& cmd, std::string* out = nullptr);
uint64_t tid_cpu_ns(pid_t pid, pid_t tid);  // utime + stime of a thread
std::string thread_name(pid_t pid, pid_t tid);

// A datapath for a test; EAL options fixed for the test process.
Result<std::unique_ptr<Datapath>> make_datapath(const std::string& uplink = "", PollOptions dispatcher = {},
                                                unsigned ring_size = 1024);
VmConfig vm_config(const std::string& name, const std::string& socket, const std::string& mac);

// Sum of counters over a window: rates from two stats snapshots.
VmStats stats_of(Datapath& dp, const std::string& vm);

}  // namespace capsule::pmd::testing
