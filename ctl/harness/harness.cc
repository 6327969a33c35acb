#include "capsule/harness.h"
#include "capsule/stats.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
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
  r.out = testkit::read_file(out_tmpl);
  r.err = testkit::read_file(err_tmpl);
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
    return Error{"ovsdb-server did not come up: " + testkit::read_file(dir_ + "/ovsdb-server.log"), EIO};
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

int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0)
    port = ntohs(sa.sin_port);
  ::close(fd);
  return port;
}

Result<std::unique_ptr<OvsdbCluster>> OvsdbCluster::start(const std::string& dir, int members) {
  const std::string tool = find_program("ovsdb-tool");
  if (tool.empty() || find_program("ovsdb-server").empty())
    return Error{"ovsdb-server/ovsdb-tool not found (package openvswitch-common)", ENOENT};
  auto c = std::unique_ptr<OvsdbCluster>(new OvsdbCluster);
  c->dir_ = dir;
  for (int i = 0; i < members; ++i) {
    Member m;
    m.db = dir + "/member" + std::to_string(i) + ".db";
    m.ctl = dir + "/member" + std::to_string(i) + ".ctl";
    m.log = dir + "/member" + std::to_string(i) + ".log";
    m.raft_port = free_tcp_port();
    do m.client_port = free_tcp_port();
    while (m.client_port == m.raft_port);
    const std::string raft = "tcp:127.0.0.1:" + std::to_string(m.raft_port);
    auto r = i == 0 ? run({tool, "create-cluster", m.db, CAPSULE_SCHEMA_PATH, raft})
                    : run({tool, "join-cluster", m.db, "Capsule", raft,
                           "tcp:127.0.0.1:" + std::to_string(c->members_[0].raft_port)});
    if (r.rc != 0) return Error{"ovsdb-tool " + std::string(i ? "join-cluster" : "create-cluster") + ": " + r.err, EIO};
    c->members_.push_back(std::move(m));
  }
  for (int i = 0; i < members; ++i)
    if (Status st = c->launch(i); !st) return st.error();
  if (!c->wait_healthy()) return Error{"the cluster did not elect a leader: " + c->cluster_status(0), EIO};
  return c;
}

OvsdbCluster::~OvsdbCluster() {
  for (auto& m : members_)
    if (m.proc) m.proc->terminate();
}

Status OvsdbCluster::launch(int i) {
  Member& m = members_[i];
  m.proc = testkit::ChildProcess::spawn({find_program("ovsdb-server"), m.db, "-vconsole:off",
                                         "--remote=ptcp:" + std::to_string(m.client_port) + ":127.0.0.1",
                                         "--unixctl=" + m.ctl, "--no-chdir", "--log-file=" + m.log});
  if (!m.proc) return Error{"cannot start ovsdb-server", EIO};
  if (!testkit::wait_until([&] { return cluster_status(i).find("Status:") != std::string::npos || !m.proc->running(); },
                           std::chrono::seconds(10)) ||
      !m.proc->running())
    return Error{"cluster member " + std::to_string(i) + " did not come up: " + testkit::read_file(m.log), EIO};
  return Status::Ok();
}

std::string OvsdbCluster::cluster_status(int i) const {
  if (!members_[i].proc) return "";
  return run({find_program("ovs-appctl"), "-t", members_[i].ctl, "cluster/status", "Capsule"},
             std::chrono::seconds(5))
      .out;
}

std::string OvsdbCluster::remotes() const {
  std::string r;
  for (int i = 0; i < size(); ++i) r += (i ? "," : "") + remote(i);
  return r;
}

int OvsdbCluster::leader() const {
  for (int i = 0; i < size(); ++i)
    if (members_[i].proc && cluster_status(i).find("Role: leader") != std::string::npos) return i;
  return -1;
}

long OvsdbCluster::term() const {
  long t = -1;
  for (int i = 0; i < size(); ++i) {
    const std::string st = cluster_status(i);
    const auto at = st.find("\nTerm: ");
    if (at != std::string::npos) t = std::max(t, std::strtol(st.c_str() + at + 7, nullptr, 10));
  }
  return t;
}

bool OvsdbCluster::wait_healthy(std::chrono::milliseconds timeout) const {
  return testkit::wait_until(
      [&] {
        if (leader() < 0) return false;
        for (int i = 0; i < size(); ++i)
          if (members_[i].proc && cluster_status(i).find("Status: cluster member") == std::string::npos) return false;
        return true;
      },
      timeout);
}

Status OvsdbCluster::set_election_timer(int ms) {
  for (int now = 1000; now != ms;) {
    const int next = ms > now ? std::min(ms, 2 * now) : ms;
    const int l = leader();
    if (l < 0) return Error{"no leader to change the election timer", EAGAIN};
    auto r = run({find_program("ovs-appctl"), "-t", members_[l].ctl, "cluster/change-election-timer", "Capsule",
                  std::to_string(next)});
    if (r.rc != 0) return Error{"cluster/change-election-timer " + std::to_string(next) + ": " + r.err + r.out, EIO};
    now = next;
    // The next step only once this one is committed.
    testkit::wait_until([&] { return cluster_status(l).find("Election timer: " + std::to_string(now)) != std::string::npos; },
                        std::chrono::seconds(10));
  }
  return Status::Ok();
}

void OvsdbCluster::kill(int i) {
  Member& m = members_[i];
  if (!m.proc) return;
  ::kill(m.proc->pid(), SIGKILL);
  m.proc->wait_exit(std::chrono::seconds(10));
  m.proc.reset();
}

Status OvsdbCluster::start_again(int i) { return launch(i); }

std::string capsule_ctl_path() { return testkit::sibling_binary("capsule-ctl"); }
std::string capsuled_path() { return testkit::sibling_binary("capsuled"); }

CmdResult ctl(const Ovsdb& db, const std::vector<std::string>& args, std::chrono::seconds timeout) {
  return ctl(db.remote(), args, timeout);
}

CmdResult ctl(const std::string& remote, const std::vector<std::string>& args, std::chrono::seconds timeout) {
  std::vector<std::string> argv{capsule_ctl_path(), "--db=" + remote,
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


bool end_process(pid_t pid, std::chrono::milliseconds grace) {
  if (!process_alive(pid)) return true;
  ::kill(pid, SIGTERM);
  if (testkit::wait_until([&] { return !process_alive(pid); }, grace)) return true;
  ::kill(pid, SIGKILL);
  return testkit::wait_until([&] { return !process_alive(pid); }, std::chrono::seconds(5));
}

Result<std::unique_ptr<Capsuled>> Capsuled::start(const Ovsdb& db, const std::string& dir, const std::string& chassis,
                                                  const std::vector<std::string>& extra_args) {
  return start(db.remote(), dir, chassis, extra_args);
}

Result<std::unique_ptr<Capsuled>> Capsuled::start(const std::string& remote, const std::string& dir,
                                                  const std::string& chassis,
                                                  const std::vector<std::string>& extra_args) {
  auto c = std::unique_ptr<Capsuled>(new Capsuled);
  c->dir_ = dir;
  c->chassis_ = chassis;
  c->ctl_socket_ = dir + "/capsuled-" + chassis + ".ctl";
  c->log_ = dir + "/capsuled-" + chassis + ".log";
  c->argv_ = {capsuled_path(),         "-vconsole:off",         "--db=" + remote,
              "--chassis=" + chassis,  "--unixctl=" + c->ctl_socket_, "--log-file=" + c->log_,
              "--metrics-port=0",      "--no-chdir"};
  c->argv_.insert(c->argv_.end(), extra_args.begin(), extra_args.end());
  if (Status st = c->restart(remote); !st) return st.error();
  return c;
}

Status Capsuled::restart(const std::string& db) {
  if (proc_ && proc_->running()) return Error{"capsuled is running", EBUSY};
  // capsuled's run directory (it creates it): the test's, not /run/capsule;
  // set for capsuled only, not for whatever this process starts later.
  proc_ = testkit::ChildProcess::spawn(argv_, "", {"CAPSULE_RUNDIR=" + dir_});
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
  if (!up || !proc_->running()) return Error{"capsuled did not come up; its log:\n" + testkit::read_file(log_), EIO};
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
  auto pid = rsv::read_pidfile(dir_ + "/datapathd.pid");
  return pid ? *pid : 0;
}

CmdResult appctl(const Capsuled& agent, const std::vector<std::string>& args) {
  std::vector<std::string> argv{find_program("ovs-appctl"), "-t", agent.ctl_socket()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

}  // namespace capsule::harness
