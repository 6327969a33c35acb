#include "capsule/harness.h"
#include "capsule/stats.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#ifndef CAPSULE_SCHEMA_PATH
#error "CAPSULE_SCHEMA_PATH must name capsule.ovsschema"
#endif

namespace capsule::harness {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

std::string find_program(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream s(path);
    for (std::string d; std::getline(s, d, ':');) dirs.push_back(d);
  }
  for (const char* d : {"/usr/sbin", "/usr/bin", "/sbin", "/bin"}) dirs.emplace_back(d);
  for (const auto& d : dirs) {
    std::string p = d + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

CmdResult run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  CmdResult r;
  char out_tmpl[] = "/tmp/capsule-run-out-XXXXXX", err_tmpl[] = "/tmp/capsule-run-err-XXXXXX";
  int out_fd = ::mkstemp(out_tmpl), err_fd = ::mkstemp(err_tmpl);
  if (out_fd < 0 || err_fd < 0) {
    r.err = "mkstemp failed";
    return r;
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(out_fd);
  ::close(err_fd);
  // Poll finely: benchmarks time these runs.
  int status = 0;
  bool done = false;
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!(done = ::waitpid(pid, &status, WNOHANG) == pid) && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out_tmpl);
  r.err = slurp(err_tmpl);
  if (!done) r.err += "\n(killed after timeout)";
  ::unlink(out_tmpl);
  ::unlink(err_tmpl);
  return r;
}

Result<std::unique_ptr<Ovsdb>> Ovsdb::start(const std::string& dir) {
  const std::string server = find_program("ovsdb-server"), tool = find_program("ovsdb-tool");
  if (server.empty() || tool.empty()) return Error{"ovsdb-server/ovsdb-tool not found (package openvswitch-common)", ENOENT};
  const std::string db = dir + "/conf.db";
  auto created = run({tool, "create", db, CAPSULE_SCHEMA_PATH});
  if (created.rc != 0) return Error{"ovsdb-tool create: " + created.err, EIO};
  auto o = std::unique_ptr<Ovsdb>(new Ovsdb);
  o->dir_ = dir;
  if (Status st = o->launch(); !st) return st.error();
  return o;
}

namespace {
bool socket_answers(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return ok;
}
}  // namespace

Status Ovsdb::launch() {
  const std::string sock = dir_ + "/db.sock";
  proc_ = testkit::ChildProcess::spawn({find_program("ovsdb-server"), dir_ + "/conf.db", "-vconsole:off",
                                        "--remote=punix:" + sock, "--unixctl=" + dir_ + "/ovsdb-server.ctl",
                                        "--no-chdir", "--log-file=" + dir_ + "/ovsdb-server.log"});
  if (!proc_) return Error{"cannot start ovsdb-server", EIO};
  // Up when it answers (a crashed predecessor's socket file may still be there).
  if (!testkit::wait_until([&] { return socket_answers(sock) || !proc_->running(); },
                           std::chrono::seconds(10)) ||
      !proc_->running())
    return Error{"ovsdb-server did not come up: " + slurp(dir_ + "/ovsdb-server.log"), EIO};
  return Status::Ok();
}

void Ovsdb::stop() {
  if (proc_) proc_->terminate();
  proc_.reset();
}

void Ovsdb::crash() {
  if (!proc_) return;
  ::kill(proc_->pid(), SIGKILL);
  proc_->wait_exit(std::chrono::seconds(10));
}

Status Ovsdb::restart() {
  stop();
  return launch();
}

std::string capsule_ctl_path() { return testkit::sibling_binary("capsule-ctl"); }
std::string capsuled_path() { return testkit::sibling_binary("capsuled"); }

CmdResult ctl(const Ovsdb& db, const std::vector<std::string>& args, std::chrono::seconds timeout) {
  std::vector<std::string> argv{capsule_ctl_path(), "--db=" + db.remote(),
                                "--timeout=" + std::to_string(timeout.count())};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, timeout + std::chrono::seconds(5));
}

double port_statistic_rate(const Ovsdb& db, const std::string& port, const std::string& key,
                           std::chrono::milliseconds window, int windows) {
  auto read = [&] {
    auto r = ctl(db, {"get", "Port", port, "statistics:" + key});
    return r.rc == 0 && !r.out.empty() ? std::atof(r.out.c_str() + (r.out[0] == '"')) : -1.0;
  };
  auto fresh = [&] {
    const double before = read();
    double v = before;
    testkit::wait_until([&] { return (v = read()) != before; }, std::chrono::seconds(5));
    return std::make_pair(v, std::chrono::steady_clock::now());
  };
  std::vector<double> rates;
  auto [v0, t0] = fresh();
  for (int i = 0; i < std::max(1, windows); ++i) {
    std::this_thread::sleep_for(window);
    const auto [v1, t1] = fresh();
    rates.push_back((v1 - v0) / std::chrono::duration<double>(t1 - t0).count());
    v0 = v1;
    t0 = t1;
  }
  return median(std::move(rates));
}

bool process_alive(pid_t pid) {
  if (pid <= 0 || (::kill(pid, 0) != 0 && errno == ESRCH)) return false;
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

bool end_process(pid_t pid, std::chrono::milliseconds grace) {
  if (!process_alive(pid)) return true;
  ::kill(pid, SIGTERM);
  if (testkit::wait_until([&] { return !process_alive(pid); }, grace)) return true;
  ::kill(pid, SIGKILL);
  return testkit::wait_until([&] { return !process_alive(pid); }, std::chrono::seconds(5));
}

Result<std::unique_ptr<Capsuled>> Capsuled::start(const Ovsdb& db, const std::string& dir, const std::string& chassis,
                                                  const std::vector<std::string>& extra_args) {
  auto c = std::unique_ptr<Capsuled>(new Capsuled);
  c->dir_ = dir;
  c->chassis_ = chassis;
  c->ctl_socket_ = dir + "/capsuled-" + chassis + ".ctl";
  c->log_ = dir + "/capsuled-" + chassis + ".log";
  c->argv_ = {capsuled_path(),         "-vconsole:off",         "--db=" + db.remote(),
              "--chassis=" + chassis,  "--unixctl=" + c->ctl_socket_, "--log-file=" + c->log_,
              "--metrics-port=0",      "--no-chdir"};
  c->argv_.insert(c->argv_.end(), extra_args.begin(), extra_args.end());
  if (Status st = c->restart(db); !st) return st.error();
  return c;
}

Status Capsuled::restart(const Ovsdb& db) {
  if (proc_ && proc_->running()) return Error{"capsuled is running", EBUSY};
  // capsuled's run directory (it creates it): the test's, not /run/capsule.
  ::setenv("CAPSULE_RUNDIR", dir_.c_str(), 1);
  proc_ = testkit::ChildProcess::spawn(argv_);
  if (!proc_) return Error{"cannot start capsuled", EIO};
  // Up when it has registered its chassis (Host row with status) under its
  // own pid: a killed predecessor's row still says running.
  const std::string pid = std::to_string(proc_->pid());
  bool up = testkit::wait_until(
      [&] {
        if (!proc_->running()) return true;
        auto r = ctl(db, {"--if-exists", "get", "Host", chassis_, "status:state", "status:pid"});
        std::string lines = "\n" + r.out;
        lines.erase(std::remove(lines.begin(), lines.end(), '"'), lines.end());
        return r.rc == 0 && lines.find("\nrunning\n") != std::string::npos &&
               lines.find("\n" + pid + "\n") != std::string::npos;
      },
      std::chrono::seconds(15));
  if (!up || !proc_->running()) return Error{"capsuled did not come up; its log:\n" + slurp(log_), EIO};
  return Status::Ok();
}

Capsuled::~Capsuled() {
  if (proc_) proc_->terminate(std::chrono::seconds(10));
  // A graceful stop has stopped it already; after a crash it still runs.
  end_process(datapathd_pid());
}

int Capsuled::kill() {
  if (!proc_->running()) return -1;
  ::kill(proc_->pid(), SIGKILL);
  return proc_->wait_exit(std::chrono::seconds(10));
}

pid_t Capsuled::datapathd_pid() const {
  const pid_t pid = pid_t(std::atol(slurp(dir_ + "/datapathd.pid").c_str()));
  return process_alive(pid) ? pid : 0;
}

CmdResult appctl(const Capsuled& agent, const std::vector<std::string>& args) {
  std::vector<std::string> argv{find_program("ovs-appctl"), "-t", agent.ctl_socket()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

}  // namespace capsule::harness
