// Helpers shared by tests, benchmarks and the demo: threads that burn CPU,
// CFS hogs, and child processes that are always reaped. Everything here
// undoes itself in its destructor, also when a test assertion fails.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace capsule::testkit {

pid_t current_tid();

// A thread that spins (or runs `body` in a loop) until stopped. tid() is
// valid once the constructor returns.
class BusyThread {
 public:
  explicit BusyThread(std::string name = "busy", int pin_cpu = -1);
  ~BusyThread();
  BusyThread(const BusyThread&) = delete;
  BusyThread& operator=(const BusyThread&) = delete;

  pid_t tid() const { return tid_; }
  void stop();

 private:
  std::atomic<bool> stop_{false};
  std::atomic<pid_t> tid_{0};
  std::thread thread_;
};

// One spinning SCHED_OTHER thread per online CPU (each pinned to its CPU),
// the "noisy neighbour" every share measurement runs against.
class CpuHogs {
 public:
  explicit CpuHogs(int per_cpu = 1);
  std::vector<pid_t> tids() const;

 private:
  std::vector<std::unique_ptr<BusyThread>> hogs_;
};

// A child process, killed (SIGTERM, then SIGKILL) and reaped on destruction.
class ChildProcess {
 public:
  // argv[0] is the program path; stdout and stderr go to `stdout_file`
  // when one is given. `env` (NAME=VALUE entries) is added to, or replaces
  // in, the child's copy of this process's environment only. nullptr if
  // the process could not be created.
  static std::unique_ptr<ChildProcess> spawn(const std::vector<std::string>& argv,
                                             const std::string& stdout_file = "",
                                             const std::vector<std::string>& env = {});
  ~ChildProcess();
  pid_t pid() const { return pid_; }
  bool running();
  int terminate(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));  // wait status
  // Waits up to `timeout` for the process to exit by itself; its wait
  // status, or -1 if it is still running.
  int wait_exit(std::chrono::milliseconds timeout);

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  bool reaped_ = false;
  int status_ = 0;
};

// A directory under /tmp (mkdtemp), removed with what it holds on
// destruction. path() is "" when it could not be made.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "capsule");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Polls `pred` every few ms until it holds or `timeout` passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

// Path of a binary built next to the running one (build/bin/NAME).
std::string sibling_binary(const std::string& name);

// A file's contents ("" if it cannot be read).
std::string read_file(const std::string& path);
// How often `what` occurs in `text` (a log line counted, ...).
int count_of(const std::string& text, const std::string& what);

}  // namespace capsule::testkit
