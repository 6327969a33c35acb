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
#include "capsule/vm/peer.h"

namespace capsule::pmd::testing {

using Counters = vm::Counters;

inline constexpr const char* kMacA = "02:00:00:00:00:0a";
inline constexpr const char* kMacB = "02:00:00:00:00:0b";
inline constexpr const char* kMacC = "02:00:00:00:00:0c";

// mkdtemp under /tmp, removed (with its sockets) on destruction.
using testkit::TempDir;

// One capsule-vm process whose output lives in the test's directory.
class VmProcess : public vm::VmPeer {
 public:
  // extra: capsule-vm options after --socket/--mac.
  VmProcess(const TempDir& dir, const std::string& name, const std::string& socket, const std::string& mac,
            const std::vector<std::string>& extra)
      : vm::VmPeer(dir.file(name + ".out"), socket, mac, extra) {}
  Counters last_counters() const { return counters(); }
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

inline int shell(const std::string& cmd, std::string* out = nullptr) { return vm::run_shell(cmd, out); }
inline uint64_t tid_cpu_ns(pid_t pid, pid_t tid) { return vm::thread_cpu_ns(pid, tid); }
std::string thread_name(pid_t pid, pid_t tid);

// A datapath for a test; EAL options fixed for the test process.
Result<std::unique_ptr<Datapath>> make_datapath(const std::string& uplink = "", PollOptions dispatcher = {},
                                                unsigned ring_size = 1024);
VmConfig vm_config(const std::string& name, const std::string& socket, const std::string& mac);

// A test with a datapath (no uplink) and a directory for its sockets; the
// datapath goes before the directory.
class DatapathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = make_datapath();
    ASSERT_TRUE(r.ok()) << r.error().message;
    dp = std::move(r.value());
  }
  TempDir dir;
  std::unique_ptr<Datapath> dp;
};

// Sum of counters over a window: rates from two stats snapshots.
VmStats stats_of(Datapath& dp, const std::string& vm);

// Waits until nothing more arrives for `vm` (what it was delivered and what
// was dropped on the way stay the same for 50 ms): in-flight frames are in.
bool delivery_settled(Datapath& dp, const std::string& vm, std::chrono::milliseconds timeout);

}  // namespace capsule::pmd::testing
