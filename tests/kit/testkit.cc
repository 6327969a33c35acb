#include "capsule/testkit.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace capsule::testkit {

TempDir::TempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  if (::mkdtemp(tmpl.data())) path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

pid_t current_tid() { return pid_t(::syscall(SYS_gettid)); }

BusyThread::BusyThread(std::string name, int pin_cpu) {
  thread_ = std::thread([this, name, pin_cpu] {
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    if (pin_cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(pin_cpu, &set);
      sched_setaffinity(0, sizeof set, &set);
    }
    tid_.store(current_tid());
    volatile unsigned long long x = 0;
    while (!stop_.load(std::memory_order_relaxed)) x = x + 1;
  });
  while (tid_.load() == 0) std::this_thread::yield();
}

void BusyThread::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

BusyThread::~BusyThread() { stop(); }

CpuHogs::CpuHogs(int per_cpu) {
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  for (int c = 0; c < n; ++c)
    for (int i = 0; i < per_cpu; ++i)
      hogs_.push_back(std::make_unique<BusyThread>("hog-c" + std::to_string(c), c));
}

std::vector<pid_t> CpuHogs::tids() const {
  std::vector<pid_t> v;
  for (const auto& h : hogs_) v.push_back(h->tid());
  return v;
}

std::unique_ptr<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& argv,
                                                  const std::string& stdout_file,
                                                  const std::vector<std::string>& env) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // The child's environment, built before fork (a multi-threaded parent's
  // child may only make async-signal-safe calls): ours, with `env` over it.
  std::vector<std::string> entries;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const auto& mine : env) replaced = replaced || mine.compare(0, name.size(), name) == 0;
    if (!replaced) entries.push_back(entry);
  }
  entries.insert(entries.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : entries) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return nullptr;
  if (pid == 0) {
    if (!stdout_file.empty()) {
      int fd = ::open(stdout_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::close(fd);
      }
    }
    ::execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid));
}

bool ChildProcess::running() {
  if (reaped_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = st;
    return false;
  }
  return r == 0;
}

int ChildProcess::terminate(std::chrono::milliseconds grace) {
  if (!running()) return status_;
  ::kill(pid_, SIGTERM);
  if (!wait_until([this] { return !running(); }, grace)) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    reaped_ = true;
    status_ = st;
  }
  return status_;
}

int ChildProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (!wait_until([this] { return !running(); }, timeout)) return -1;
  return status_;
}

ChildProcess::~ChildProcess() { terminate(); }

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = 0; (at = text.find(what, at)) != std::string::npos; at += what.size()) ++n;
  return n;
}

std::string sibling_binary(const std::string& name) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return name;
  std::string self(buf, std::size_t(n));
  return self.substr(0, self.rfind('/') + 1) + name;
}

}  // namespace capsule::testkit
