// capsule-datapathd: the process that runs capsule's DPDK datapath (the
// EAL, the uplink, one vhost-user port and one PMD thread per VM) on behalf
// of capsuled, and outlives it, as ovs-vswitchd outlives ovsdb-server: when
// the agent crashes, VMs keep their network; the next agent adopts what is
// in force (docs/reliability.md).
//
// capsuled starts it (detached, in its own session) when nobody serves the
// socket, and stops it with a shutdown request on a graceful stop. One
// thread serves the socket (protocol.h); the datapath's own threads forward.
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "capsule/wall_clock.h"
#include "client.h"
#include "protocol.h"
#include "service.h"

namespace {

using namespace capsule;
using namespace capsule::datapathd;

struct Options {
  std::string socket = default_socket();
  std::optional<std::string> pidfile;
  std::optional<std::string> log_file;
  bool debug = false;
};

[[noreturn]] void usage() {
  std::cout << R"(capsule-datapathd: capsule's DPDK datapath, in a process of its own
usage: capsule-datapathd [OPTIONS]

Runs the per-VM datapath (EAL, uplink, vhost-user ports, PMD threads) for
capsuled, which configures it over a unix socket (newline-delimited JSON:
protocol.h's ops: hello, configure, add_vm, ...). It keeps
forwarding when capsuled dies; the next capsuled adopts it. capsuled starts it
when nobody serves the socket; a graceful stop of capsuled stops it.

Options:
  --socket=PATH            control socket (default $CAPSULE_RUNDIR/datapathd.sock,
                           CAPSULE_RUNDIR defaults to /run/capsule)
  --pidfile[=FILE]         create pidfile (default $CAPSULE_RUNDIR/datapathd.pid)
  --log-file[=FILE]        log there instead of stderr (default
                           $CAPSULE_LOGDIR/datapathd.log, /var/log/capsule)
  --verbose                also log debug messages (each request)
  -h, --help               this help
  -V, --version            print the version
SIGTERM or SIGINT: every VM removed, datapath stopped, exit 0 (like shutdown).
)";
  std::exit(0);
}

Options parse_options(int argc, char** argv) {
  enum { OPT_SOCKET = 256, OPT_PIDFILE, OPT_LOG_FILE, OPT_VERBOSE };
  static const option long_options[] = {
      {"socket", required_argument, nullptr, OPT_SOCKET},
      {"pidfile", optional_argument, nullptr, OPT_PIDFILE},
      {"log-file", optional_argument, nullptr, OPT_LOG_FILE},
      {"verbose", no_argument, nullptr, OPT_VERBOSE},
      {"help", no_argument, nullptr, 'h'},
      {"version", no_argument, nullptr, 'V'},
      {nullptr, 0, nullptr, 0},
  };
  Options o;
  for (;;) {
    const int c = getopt_long(argc, argv, "hV", long_options, nullptr);
    if (c == -1) break;
    // An empty path would bind an abstract socket or write "/.tmp".
    if ((c == OPT_SOCKET || c == OPT_PIDFILE || c == OPT_LOG_FILE) && optarg && !*optarg) {
      std::cerr << kProgram << ": --" << long_options[c - OPT_SOCKET].name << "= needs a path (--help)\n";
      std::exit(2);
    }
    switch (c) {
      case OPT_SOCKET: o.socket = optarg; break;
      case OPT_PIDFILE: o.pidfile = optarg ? optarg : default_pidfile(); break;
      case OPT_LOG_FILE: o.log_file = optarg ? optarg : default_log_file(); break;
      case OPT_VERBOSE: o.debug = true; break;
      case 'h': usage();
      case 'V':
        std::cout << kProgram << " (capsule) " << kVersion << "\n";
        std::exit(0);
      default: std::exit(2);
    }
  }
  if (optind != argc) {
    std::cerr << kProgram << ": unexpected argument " << argv[optind] << " (--help)\n";
    std::exit(2);
  }
  return o;
}

// OVS's log line format, so one reader reads both daemons' logs:
// 2026-12-01T21:03:04.123Z|datapathd|INFO|text
class Log {
 public:
  Status open(const std::optional<std::string>& path, bool debug) {
    debug_ = debug;
    if (!path) return Status::Ok();
    const int fd = ::open(path->c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return errno_error("cannot open log file " + *path, errno);
    // DPDK writes its own messages to stderr: they belong in the log too.
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
    return Status::Ok();
  }
  void operator()(LogLevel level, const std::string& msg) { write(level, "datapathd", msg); }
  // `module`: "datapathd", or the library that logs ("pmd": capsule/log.h).
  void write(LogLevel level, const char* module, const std::string& msg) {
    if (level == LogLevel::kDbg && !debug_) return;
    const std::string line =
        format_utc(unix_ms_now()) + "|" + module + "|" + log::level_name(level) + "|" + msg + "\n";
    std::lock_guard lk(mu_);
    (void)!::write(STDERR_FILENO, line.data(), line.size());
  }

 private:
  bool debug_ = false;
  std::mutex mu_;
};

Log g_log;

// A socket file left by a dead daemon blocks bind(): remove it if nobody
// answers on it; refuse if a live daemon does.
Status claim_socket_path(const std::string& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) return Status::Ok();
  if (!S_ISSOCK(st.st_mode)) return Error{path + " exists and is not a socket", EEXIST};
  if (auto c = Client::connect(path, std::chrono::seconds(2)); c.ok()) {
    auto hello = c->call({{"op", "hello"}});
    return Error{path + " is served by another " + std::string(kProgram) +
                     (hello ? " (pid " + std::to_string(hello->value("pid", 0)) + ")" : std::string()),
                 EADDRINUSE};
  }
  ::unlink(path.c_str());
  return Status::Ok();
}

Result<int> listen_on(const std::string& path) {
  sockaddr_un sa{};
  if (path.size() >= sizeof sa.sun_path) return Error{"socket path " + path + " is too long", ENAMETOOLONG};
  if (Status st = claim_socket_path(path); !st) return st.error();
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return errno_error("cannot create a unix socket", errno);
  const mode_t old = ::umask(0077);  // root's datapath: nobody else configures it
  const int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  ::umask(old);
  if (rc != 0 || ::listen(fd, 16) != 0) {
    const int err = errno;
    ::close(fd);
    return errno_error("cannot listen on " + path, err);
  }
  return fd;
}

Status write_pidfile(const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << ::getpid() << "\n";
    if (!f) return errno_error("cannot write pidfile " + tmp, errno);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return errno_error("cannot create pidfile " + path, errno);
  return Status::Ok();
}

// Removes the pidfile only while it still names this process.
void remove_pidfile(const std::string& path) {
  std::ifstream f(path);
  long pid = 0;
  if (f >> pid && pid == long(::getpid())) ::unlink(path.c_str());
}

struct Connection {
  int fd;
  std::string in;
};

constexpr std::size_t kMaxRequest = 1 << 20;

// Reads what a client sent and answers each complete line. False: close it.
bool serve(Connection& c, Service& service, bool& stop) {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) return false;
    c.in.append(buf, std::size_t(n));
  }
  for (std::size_t eol; (eol = c.in.find('\n')) != std::string::npos;) {
    const std::string line = c.in.substr(0, eol);
    c.in.erase(0, eol + 1);
    json request = json::parse(line, nullptr, false);
    json response = request.is_discarded() ? refusal("a request is one line of JSON (protocol.h)")
                                           : service.handle(request);
    g_log(LogLevel::kDbg, "request " + line.substr(0, 200) + " -> " + response.dump().substr(0, 200));
    const std::string out = response.dump() + "\n";
    for (std::size_t sent = 0; sent < out.size();) {
      const ssize_t n = ::send(c.fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        pollfd p{c.fd, POLLOUT, 0};
        ::poll(&p, 1, 1000);
        continue;
      }
      if (n < 0) return false;
      sent += std::size_t(n);
    }
    if (service.shutdown_requested()) {
      stop = true;
      return false;
    }
  }
  if (c.in.size() > kMaxRequest) {
    g_log(LogLevel::kWarn, "a client sent more than 1 MiB without a newline: closed");
    return false;
  }
  return true;
}

int run(const Options& o) {
  // SIGTERM/SIGINT end the loop (as a shutdown request); SIGHUP is ignored:
  // this daemon has no terminal, and the agent's session ending must not
  // touch it. SIGPIPE: a client gone mid-answer is an error, not death.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  const int sig_fd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sig_fd < 0) {
    g_log(LogLevel::kErr, std::string("signalfd: ") + std::strerror(errno));
    return 1;
  }
  auto listener = listen_on(o.socket);
  if (!listener) {
    g_log(LogLevel::kErr, listener.error().message);
    return 1;
  }
  if (o.pidfile)
    if (Status st = write_pidfile(*o.pidfile); !st) {
      g_log(LogLevel::kErr, st.error().message);
      ::unlink(o.socket.c_str());
      return 1;
    }
  g_log(LogLevel::kInfo, std::string(kProgram) + " " + kVersion + " (pid " + std::to_string(::getpid()) +
                             ") serving " + o.socket);

  Service service([](LogLevel l, const std::string& m) { g_log(l, m); });
  std::vector<Connection> clients;
  bool stop = false;
  std::string why = "shutdown request";
  while (!stop) {
    std::vector<pollfd> fds{{*listener, POLLIN, 0}, {sig_fd, POLLIN, 0}};
    for (const auto& c : clients) fds.push_back({c.fd, POLLIN, 0});
    const int r = ::poll(fds.data(), fds.size(), 1000);
    if (r < 0 && errno != EINTR) {
      g_log(LogLevel::kErr, std::string("poll: ") + std::strerror(errno));
      why = "poll failed";
      break;
    }
    service.log_drops();
    if (r <= 0) continue;
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo si{};
      if (::read(sig_fd, &si, sizeof si) == sizeof si) {
        why = std::string("signal ") + strsignal(int(si.ssi_signo));
        break;
      }
    }
    // Clients first (the vector changes below).
    for (std::size_t i = clients.size(); i-- > 0;) {
      if (!fds[2 + i].revents) continue;
      if (!serve(clients[i], service, stop)) {
        ::close(clients[i].fd);
        clients.erase(clients.begin() + long(i));
      }
      if (stop) break;
    }
    if (!stop && (fds[0].revents & POLLIN))
      for (int fd; (fd = ::accept4(*listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0;)
        clients.push_back({fd, {}});
  }
  // Gone from the file system first: a new agent then starts a new daemon
  // instead of talking to this one while it stops.
  ::unlink(o.socket.c_str());
  ::close(*listener);
  g_log(LogLevel::kInfo, "stopping (" + why + ")");
  service.stop();
  for (const auto& c : clients) ::close(c.fd);
  if (o.pidfile) remove_pidfile(*o.pidfile);
  g_log(LogLevel::kInfo, "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_options(argc, argv);
  capsule::log::set_sink([](LogLevel l, const char* module, const std::string& m) { g_log.write(l, module, m); });
  if (Status st = g_log.open(o.log_file, o.debug); !st) {
    std::cerr << kProgram << ": " << st.error().message << "\n";
    return 1;
  }
  return run(o);
}
