#include "remote_datapath.h"

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <deque>
#include <fstream>

#include "capsule/ovs/shim.h"
#include "capsule/rsv/discovery.h"
#include "capsule/wall_clock.h"
#include "detached_process.h"
#include "protocol.h"

namespace capsule::agent {
namespace {

using datapathd::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

void log(capsule_ovs_log_level level, const std::string& msg) { capsule_ovs_log(level, msg.c_str()); }

std::string who(pid_t pid) { return std::string(datapathd::kProgram) + " (pid " + std::to_string(pid) + ")"; }

std::string self_dir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, std::size_t(n));
  return p.substr(0, p.rfind('/'));
}

// The last lines of a log, for an error a user reads.
std::string tail(const std::string& file, std::size_t lines = 5) {
  std::ifstream f(file);
  std::deque<std::string> last;
  for (std::string l; std::getline(f, l);) {
    last.push_back(l);
    if (last.size() > lines) last.pop_front();
  }
  std::string out;
  for (const auto& l : last) out += "\n  " + l;
  return out;
}

bool wait_for(const std::function<bool()>& pred, milliseconds timeout) {
  const auto end = steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
}

// A shutdown request, then the process's exit (SIGKILL after 10 s).
void stop_daemon(datapathd::Client& client, pid_t pid) {
  if (auto r = client.call({{"op", "shutdown"}}); !r)
    log(CAPSULE_LOG_WARN, who(pid) + ": shutdown: " + r.error().message);
  if (!wait_for([&] { return !rsv::process_alive(pid); }, std::chrono::seconds(10))) {
    log(CAPSULE_LOG_WARN, who(pid) + " did not exit 10 s after shutdown: killed");
    ::kill(pid, SIGKILL);
    wait_for([&] { return !rsv::process_alive(pid); }, std::chrono::seconds(5));
  }
}

// Connects to the daemon, starting it first when nobody serves the socket.
Result<datapathd::Client> connect_or_start(const DatapathdOptions& o) {
  auto c = datapathd::Client::connect(o.socket);
  if (c) return c;
  // One that is starting (its pidfile is written once it listens, so this
  // is rare) is waited for; otherwise a new one is started.
  auto running = rsv::read_pidfile(o.pidfile);
  pid_t pid = running ? *running : 0;
  if (!running) {
    if (::access(o.program.c_str(), X_OK) != 0)
      return errno_error("cannot start the datapath daemon " + o.program, errno);
    auto spawned = spawn_detached({o.program, "--socket=" + o.socket, "--pidfile=" + o.pidfile,
                                   "--log-file=" + o.log_file},
                                  o.log_file);
    if (!spawned) return spawned.error();
    pid = *spawned;
    log(CAPSULE_LOG_INFO, "started " + who(pid) + " on " + o.socket + ", log " + o.log_file);
  }
  bool died = false;
  wait_for([&] {
    c = datapathd::Client::connect(o.socket);
    if (c) return true;
    died = !rsv::process_alive(pid);
    return died;
  }, o.start_timeout);
  if (c) return c;
  if (died) {
    // Another agent's daemon may have won the socket.
    if (auto again = datapathd::Client::connect(o.socket)) return again;
    return Error{who(pid) + " exited during start-up; " + o.log_file + " ends:" + tail(o.log_file), ECHILD};
  }
  return Error{who(pid) + " did not serve " + o.socket + " within " +
                   std::to_string(o.start_timeout.count() / 1000) + " s; " + o.log_file + " ends:" + tail(o.log_file),
               ETIMEDOUT};
}

}  // namespace

DatapathdOptions default_datapathd_options(const std::string& log_dir) {
  DatapathdOptions o;
  o.program = self_dir() + "/" + datapathd::kProgram;
  o.socket = datapathd::default_socket();
  o.pidfile = datapathd::default_pidfile();
  o.log_file = log_dir.empty() ? datapathd::default_log_file() : log_dir + "/datapathd.log";
  return o;
}

RemoteDatapath::RemoteDatapath(datapathd::Client client, pid_t pid, std::string detail,
                               std::vector<VmNetConfig> in_force, std::function<void()> on_lost)
    : client_(std::move(client)),
      pid_(pid),
      detail_(std::move(detail)),
      in_force_(std::move(in_force)),
      on_lost_(std::move(on_lost)) {
  pidfd_ = int(::syscall(SYS_pidfd_open, pid_, 0));
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (pidfd_ < 0 && !rsv::process_alive(pid_)) {
    exited_ms_ = unix_ms_now();
    exited_ = true;
  }
  watcher_ = std::thread([this] { watch(); });
}

RemoteDatapath::~RemoteDatapath() {
  stopping_ = true;
  const uint64_t one = 1;
  if (stop_fd_ >= 0) (void)!::write(stop_fd_, &one, sizeof one);
  if (watcher_.joinable()) watcher_.join();
  if (pidfd_ >= 0) ::close(pidfd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

// Sees the daemon exit the moment it does (its pidfd becomes readable).
void RemoteDatapath::watch() {
  if (pidfd_ < 0 || exited_) return;
  pollfd fds[2] = {{pidfd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
  }
  if (stopping_ || !(fds[0].revents & POLLIN)) return;
  exited_ms_ = unix_ms_now();
  exited_ = true;
  log(CAPSULE_LOG_ERR, "datapath daemon " + who(pid_) + " exited: the VMs' ports are down until a new one runs");
  if (on_lost_) on_lost_();
}

std::string RemoteDatapath::detail() const {
  if (exited_)
    return "datapath daemon " + std::string(datapathd::kProgram) + " (pid " + std::to_string(pid_) + ") exited at " +
           format_utc(exited_ms_.load());
  return detail_ + " in " + who(pid_);
}

Result<json> RemoteDatapath::call(const json& request) const {
  if (exited_) return Error{detail(), ENOTCONN};
  if (!client_.connected()) {  // a broken connection to a live daemon: once more
    auto c = datapathd::Client::connect(client_.socket());
    if (!c) return Error{"datapath daemon " + who(pid_) + ": " + c.error().message, c.error().errnum};
    client_ = std::move(*c);
  }
  auto r = client_.call(request);
  if (!r && r.error().errnum != EINVAL) return Error{"datapath daemon " + who(pid_) + ": " + r.error().message, r.error().errnum};
  return r;
}

Status RemoteDatapath::add_vm(const VmNetConfig& config) {
  auto r = call({{"op", "add_vm"}, {"vm", datapathd::to_json(config)}});
  if (!r) return r.error();
  return Status::Ok();
}

Status RemoteDatapath::remove_vm(const std::string& vm) {
  auto r = call({{"op", "remove_vm"}, {"vm", vm}});
  if (!r) return r.error();
  return Status::Ok();
}

std::optional<pid_t> RemoteDatapath::pmd_tid(const std::string& vm) const {
  auto r = call({{"op", "pmd_tid"}, {"vm", vm}});
  if (!r || !r->contains("tid") || !r->at("tid").is_number_integer()) return std::nullopt;
  return pid_t(r->at("tid").get<int>());
}

Result<VmDatapathStats> RemoteDatapath::stats(const std::string& vm) const {
  auto r = call({{"op", "stats"}, {"vm", vm}});
  if (!r) return r.error();
  if (!r->contains("stats")) return Error{"datapath daemon " + who(pid_) + " sent no statistics", EPROTO};
  return datapathd::stats_from_json(r->at("stats"));
}

Result<std::string> RemoteDatapath::pmd_stats_show(const std::string& vm) const {
  json request{{"op", "pmd_stats_show"}};
  if (!vm.empty()) request["vm"] = vm;  // without "vm": every VM
  auto r = call(request);
  if (!r) return r.error();
  return r->value("text", std::string());
}

Result<std::string> RemoteDatapath::fdb_show() const {
  auto r = call({{"op", "fdb_show"}});
  if (!r) return r.error();
  return r->value("text", std::string());
}

void RemoteDatapath::shutdown() {
  if (exited_) return;
  stopping_ = true;  // its exit is expected now
  log(CAPSULE_LOG_INFO, "stopping datapath daemon " + who(pid_));
  stop_daemon(client_, pid_);
}

Result<std::unique_ptr<Datapath>> make_remote_datapath(const DatapathdOptions& o, const DatapathSettings& s) {
  if (s.type != "capsule")
    return Error{"datapath type '" + s.type + "' is not available in this capsuled (use \"capsule\")", EINVAL};
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto client = connect_or_start(o);
    if (!client) return client.error();
    auto hello = client->call({{"op", "hello"}});
    if (!hello) return Error{"datapath daemon at " + o.socket + ": " + hello.error().message, hello.error().errnum};
    const pid_t pid = hello->value("pid", 0);
    // A daemon from before a package upgrade keeps forwarding (stopping it
    // would cut every VM's network); the operator chooses when.
    if (const std::string v = hello->value("version", std::string("?")); v != datapathd::kVersion)
      log(CAPSULE_LOG_WARN, who(pid) + " is version " + v + ", this capsuled " + datapathd::kVersion +
                                ": restart capsule-datapathd to run the new one (every VM's network stops briefly)");
    if (hello->value("configured", false)) {
      auto cur = datapathd::settings_from_json(hello->at("settings"));
      // EAL options are fixed for a process's life: other ones need a new daemon.
      if (!cur || cur->type != s.type || cur->dpdk_options != s.dpdk_options) {
        log(CAPSULE_LOG_INFO, who(pid) + " runs with other EAL settings: stopping it to start a new one");
        stop_daemon(*client, pid);
        continue;
      }
    }
    const bool was_configured = hello->value("configured", false);
    auto conf = client->call({{"op", "configure"}, {"settings", datapathd::to_json(s)}});
    if (!conf) {
      // A refusal changed nothing: a daemon that forwards for VMs keeps
      // forwarding; only one with nothing configured is not left behind.
      if (!was_configured) stop_daemon(*client, pid);
      return Error{conf.error().message, conf.error().errnum};
    }
    std::vector<VmNetConfig> in_force;
    if (!conf->value("changed", true))
      for (const auto& vm : hello->value("vms", json::array()))
        if (auto c = datapathd::vm_from_json(vm)) in_force.push_back(std::move(*c));
    if (conf->value("changed", true)) {
      log(CAPSULE_LOG_INFO, "datapath configured in " + who(pid));
    } else {
      std::string names;
      for (const auto& vm : in_force) names += (names.empty() ? "" : ", ") + vm.vm;
      log(CAPSULE_LOG_INFO, "adopted the datapath in " + who(pid) + " (same settings): " +
                                std::to_string(in_force.size()) + " VMs in force" +
                                (names.empty() ? "" : " (" + names + ")"));
    }
    return std::unique_ptr<Datapath>(
        new RemoteDatapath(std::move(*client), pid, conf->value("detail", std::string()), std::move(in_force), o.on_lost));
  }
  return Error{"the datapath daemon at " + o.socket + " kept other EAL settings after a restart", EAGAIN};
}

}  // namespace capsule::agent
