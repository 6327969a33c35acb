// capsuled: the capsule host agent.
//
// Two threads:
//   - the agent thread runs a Boost.Asio event loop: signals, the statistics
//     timer, the Prometheus endpoint, and every reconcile (it owns the Agent,
//     hence the ReservationManager and the Datapath);
//   - the OVS thread owns everything from libopenvswitch: the IDL connection
//     to the Capsule database and the unixctl server (OVS's poll loop is per
//     thread). It hands database snapshots to the agent thread and writes the
//     status the agent thread hands back.
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <utility>  // before Boost 1.74 asio (std::exchange)

#include <boost/asio.hpp>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <future>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

#include "agent.h"
#include "capsule/log.h"
#include "capsule/number.h"
#include "capsule/ovs/db.h"
#include "capsule/ovs/shim.h"
#include "capsule/rsv/partition.h"
#include "capsule/rsv/reservation.h"
#include "metrics_server.h"
#include "ovs_datapath.h"
#include "remote_datapath.h"
#ifdef CAPSULE_SIMULATED_HOST
// capsule-simhost: this agent on a simulated host (scale runs only).
#include "simulated_host.h"
constexpr bool kSimulatedHost = true;
#else
constexpr bool kSimulatedHost = false;
#endif

namespace {

namespace asio = boost::asio;
using namespace capsule;
using std::chrono::milliseconds;

constexpr const char* kVersion = CAPSULE_VERSION;

void log(capsule_ovs_log_level level, const std::string& msg) { capsule_ovs_log(level, msg.c_str()); }

// cpu-rsv's own messages (capsule/log.h) go to vlog too, marked with their
// library.
void library_log(capsule::log::Level level, const char* module, const std::string& msg) {
  static const capsule_ovs_log_level levels[] = {CAPSULE_LOG_ERR, CAPSULE_LOG_WARN, CAPSULE_LOG_INFO, CAPSULE_LOG_DBG};
  log(levels[int(level)], std::string(module) + ": " + msg);
}

std::string env_or(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v && *v ? v : def;
}

struct Options {
  std::string db;
  std::string chassis;
  std::string journal;
  long stats_interval_ms = 5000;
  int metrics_port = 9477;  // -1: off, 0: any free port
  std::optional<std::string> unixctl;
  bool detach = false, no_chdir = false;
  bool leader_only = false;
  bool steer_io = false;
  bool pidfile = false;
  std::optional<std::string> pidfile_path;
  bool log_file = false;
  std::optional<std::string> log_file_path;
  std::vector<std::string> verbose;
  std::optional<std::string> private_key, certificate, ca_cert;
};

[[noreturn]] void usage() {
  std::cout << R"(capsuled: the capsule host agent
usage: capsuled [OPTIONS]

Reconciles this host's rows of the Capsule database (VM, Port, QoS) to EDF
reservations of the VMs' threads and to the per-VM datapath, and writes
status and statistics back.

Options:
  --db=REMOTE              OVSDB remote of the Capsule database
                           (default: unix:$CAPSULE_RUNDIR/db.sock,
                           CAPSULE_RUNDIR defaults to /run/capsule); a
                           clustered database's members comma-separated
                           (ssl:10.0.0.1:6641,ssl:10.0.0.2:6641,...): capsuled
                           stays on any member that is in the cluster (its
                           writes are forwarded to the leader) and moves to
                           another when that member goes
  --leader-only            with a cluster: stay on the leader only, and
                           follow it when it moves (every agent reconnects
                           at each election)
  --chassis=NAME           this host's chassis name (default: $CAPSULE_CHASSIS,
                           else the host name); only VM rows naming it apply
  --stats-interval=MS      statistics and liveness period (default 5000)
  --journal=FILE           reservation journal, written before every change
                           so that a restarted capsuled adopts the capsules
                           this one leaves (default:
                           $CAPSULE_RUNDIR/capsuled.journal)
  --steer-io               with partitioned admission and Host:capsule_cpus,
                           move device interrupts and unbound workqueues to
                           the other CPUs while capsuled runs (restored when
                           it stops; after a crash, at the next start)
  --private-key=FILE       TLS key, certificate and CA certificate for ssl:
  --certificate=FILE       remotes (as OVS daemons take them)
  --ca-cert=FILE
  --metrics-port=PORT      Prometheus /metrics on 127.0.0.1:PORT (default
                           9477; 0: any free port; "off": no endpoint); the
                           URL is in Host:status:metrics

Daemon options (as in OVS):
  --pidfile[=FILE]         create pidfile (default: $CAPSULE_RUNDIR/capsuled.pid)
  --detach                 run in background as daemon
  --no-chdir               do not chdir to '/'
  --unixctl=SOCKET         override default control socket name
                           ($CAPSULE_RUNDIR/capsuled.<pid>.ctl)
  --log-file[=FILE]        enable logging to FILE (default:
                           $CAPSULE_LOGDIR/capsuled.log, /var/log/capsule)
  -v, --verbose[=SPEC]     set logging levels (vlog syntax)
  -h, --help               this help
  -V, --version            print the version

Runtime control: ovs-appctl -t <control socket> COMMAND, with COMMAND one of
  capsule/show             VMs, reservations as the kernel reports them, load
  capsule/stats            CPU use and budget use per thread
  capsule/reconcile        reconcile now and report
  capsule/pmd-stats-show [VM]  each VM's datapath thread: traffic, drops by cause,
                           busy/idle rounds, wake-ups (capsule datapath)
  capsule/fdb-show         the forwarding table: port, MAC, age; its limits
  capsule/db-show          the database connection: rows monitored for this
                           chassis, monitor updates received, commits
  exit                     stop (threads restored, cpusets removed)
  vlog/list, vlog/set ...  OVS's logging commands
With the default socket and --pidfile:
  OVS_RUNDIR=/run/capsule ovs-appctl -t capsuled capsule/show
)";
  std::exit(0);
}

Options parse_options(int argc, char** argv) {
  enum { OPT_DB = 256, OPT_CHASSIS, OPT_JOURNAL, OPT_STATS, OPT_METRICS, OPT_UNIXCTL, OPT_DETACH, OPT_NO_CHDIR, OPT_PIDFILE, OPT_LOG_FILE, OPT_PRIVATE_KEY, OPT_CERTIFICATE, OPT_CA_CERT, OPT_LEADER_ONLY, OPT_STEER_IO };
  static const option long_options[] = {
      {"db", required_argument, nullptr, OPT_DB},
      {"chassis", required_argument, nullptr, OPT_CHASSIS},
      {"journal", required_argument, nullptr, OPT_JOURNAL},
      {"steer-io", no_argument, nullptr, OPT_STEER_IO},
      {"stats-interval", required_argument, nullptr, OPT_STATS},
      {"metrics-port", required_argument, nullptr, OPT_METRICS},
      {"unixctl", required_argument, nullptr, OPT_UNIXCTL},
      {"detach", no_argument, nullptr, OPT_DETACH},
      {"no-chdir", no_argument, nullptr, OPT_NO_CHDIR},
      {"pidfile", optional_argument, nullptr, OPT_PIDFILE},
      {"log-file", optional_argument, nullptr, OPT_LOG_FILE},
      {"private-key", required_argument, nullptr, OPT_PRIVATE_KEY},
      {"certificate", required_argument, nullptr, OPT_CERTIFICATE},
      {"ca-cert", required_argument, nullptr, OPT_CA_CERT},
      {"leader-only", no_argument, nullptr, OPT_LEADER_ONLY},
      {"verbose", optional_argument, nullptr, 'v'},
      {"help", no_argument, nullptr, 'h'},
      {"version", no_argument, nullptr, 'V'},
      {nullptr, 0, nullptr, 0},
  };
  Options o;
  const std::string rundir = env_or("CAPSULE_RUNDIR", "/run/capsule");
  o.db = "unix:" + rundir + "/db.sock";
  o.journal = rundir + "/capsuled.journal";
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  o.chassis = env_or("CAPSULE_CHASSIS", host);
  for (;;) {
    int which = -1;  // index in long_options of the option just read
    int c = getopt_long(argc, argv, "v::hV", long_options, &which);
    if (c == -1) break;
    auto number = [&](long lo, long hi) {
      const auto n = parse_whole(optarg, uint64_t(hi));
      if (!n || long(*n) < lo) {
        std::cerr << "capsuled: --" << long_options[which].name << "=" << optarg << " must be a number in ["
                  << lo << ", " << hi << "]\n";
        std::exit(2);
      }
      return long(*n);
    };
    switch (c) {
      case OPT_DB: o.db = optarg; break;
      case OPT_CHASSIS: o.chassis = optarg; break;
      case OPT_JOURNAL: o.journal = optarg; break;
      case OPT_STEER_IO: o.steer_io = true; break;
      case OPT_STATS: o.stats_interval_ms = number(100, 3'600'000); break;
      case OPT_METRICS: o.metrics_port = std::string(optarg) == "off" ? -1 : int(number(0, 65535)); break;
      case OPT_UNIXCTL: o.unixctl = optarg; break;
      case OPT_DETACH: o.detach = true; break;
      case OPT_NO_CHDIR: o.no_chdir = true; break;
      case OPT_PIDFILE:
        o.pidfile = true;
        if (optarg) o.pidfile_path = optarg;
        break;
      case OPT_LOG_FILE:
        o.log_file = true;
        if (optarg) o.log_file_path = optarg;
        break;
      case OPT_PRIVATE_KEY: o.private_key = optarg; break;
      case OPT_CERTIFICATE: o.certificate = optarg; break;
      case OPT_CA_CERT: o.ca_cert = optarg; break;
      case OPT_LEADER_ONLY: o.leader_only = true; break;
      case 'v': o.verbose.push_back(optarg ? optarg : ""); break;
      case 'h': usage();
      case 'V':
        std::cout << "capsuled (capsule) " << kVersion << "\n";
        std::exit(0);
      default: std::exit(2);
    }
  }
  if (optind != argc) {
    std::cerr << "capsuled: unexpected argument " << argv[optind] << " (capsuled --help)\n";
    std::exit(2);
  }
  if (o.private_key.has_value() != o.certificate.has_value()) {
    std::cerr << "capsuled: --private-key and --certificate go together\n";
    std::exit(2);
  }
  if (o.chassis.empty()) {
    std::cerr << "capsuled: no chassis name (--chassis)\n";
    std::exit(2);
  }
  return o;
}

// What the two threads exchange. The agent thread produces status and
// rendered answers; the OVS thread produces snapshots.
struct Exchange {
  std::mutex mu;
  std::optional<ovs::StatusUpdate> status;  // newest status to write
  bool snapshot_posted = false;             // a snapshot is queued for the agent
  std::optional<ovs::Snapshot> snapshot;
  std::atomic<bool> stopping{false};        // agent thread: finish writing, then stop
  std::atomic<bool> final_posted{false};    // the last status (every VM stopped) is queued
};

class Daemon {
 public:
  explicit Daemon(Options opts) : opts_(std::move(opts)), signals_(io_), stats_timer_(io_) {}

  int run();

 private:
  // -- agent thread --
  void on_snapshot();
  void publish();
  void arm_stats_timer();
  void shutdown(const std::string& why);
  // Runs fn on the agent thread and waits (from the OVS thread).
  std::optional<std::string> ask_agent(std::function<std::string()> fn);
  // Replies to a unixctl request with what fn returns on the agent thread.
  void reply_from_agent(capsule_unixctl_conn* conn, std::function<std::string()> fn);
  // The same for an answer that may be an error (replied as one).
  void reply_result_from_agent(capsule_unixctl_conn* conn, std::function<Result<std::string>()> fn);

  // -- OVS thread --
  void ovs_main();
  static void cmd_show(capsule_unixctl_conn*, int, const char*[], void*);
  static void cmd_stats(capsule_unixctl_conn*, int, const char*[], void*);
  static void cmd_reconcile(capsule_unixctl_conn*, int, const char*[], void*);
  static void cmd_pmd_stats_show(capsule_unixctl_conn*, int, const char*[], void*);
  static void cmd_fdb_show(capsule_unixctl_conn*, int, const char*[], void*);
  static void cmd_exit(capsule_unixctl_conn*, int, const char*[], void*);
  static void cmd_db_show(capsule_unixctl_conn*, int, const char*[], void*);

  Options opts_;
  asio::io_context io_;
  asio::signal_set signals_;
  asio::steady_timer stats_timer_;
  std::unique_ptr<agent::Agent> agent_;
  std::unique_ptr<agent::MetricsServer> metrics_;
  Exchange x_;
  std::thread ovs_thread_;
  ovs::DbConnection* db_ = nullptr;  // OVS thread only
};

void Daemon::publish() {
  auto status = agent_->status();  // reads /proc: not under the lock
  {
    std::lock_guard<std::mutex> lock(x_.mu);
    x_.status = std::move(status);
  }
  capsule_ovs_wake();
}

void Daemon::on_snapshot() {
  std::optional<ovs::Snapshot> snap;
  {
    std::lock_guard<std::mutex> lock(x_.mu);
    snap.swap(x_.snapshot);
    x_.snapshot_posted = false;
  }
  if (!snap || x_.stopping) return;
  agent_->update(std::move(*snap));
  agent_->reconcile();
  publish();
}

void Daemon::arm_stats_timer() {
  stats_timer_.expires_after(milliseconds(opts_.stats_interval_ms));
  stats_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || x_.stopping) return;
    agent_->sample();
    agent_->reconcile();  // liveness: exited VMs, late pidfiles, new vCPUs
    publish();
    arm_stats_timer();
  });
}

void Daemon::shutdown(const std::string& why) {
  if (x_.stopping.exchange(true)) return;
  log(CAPSULE_LOG_INFO, "stopping (" + why + "): restoring every VM's threads");
  stats_timer_.cancel();
  if (metrics_) metrics_->close();
  signals_.cancel();
  agent_->shutdown();
  if (!kSimulatedHost) {  // a simulated host changed nothing in the kernel
    rsv::VmReservation::release_all();
    (void)rsv::PartitionSet::cleanup_stale();
  }
  publish();  // the OVS thread writes it, then leaves its loop
  x_.final_posted = true;
  capsule_ovs_wake();
}

std::optional<std::string> Daemon::ask_agent(std::function<std::string()> fn) {
  auto task = std::make_shared<std::packaged_task<std::string()>>(std::move(fn));
  auto fut = task->get_future();
  asio::post(io_, [task] { (*task)(); });
  if (fut.wait_for(std::chrono::seconds(5)) != std::future_status::ready) return std::nullopt;
  return fut.get();
}

void Daemon::reply_from_agent(capsule_unixctl_conn* conn, std::function<std::string()> fn) {
  if (auto text = ask_agent(std::move(fn)))
    capsule_unixctl_reply(conn, text->c_str());
  else
    capsule_unixctl_reply_error(conn, "agent thread busy (no answer within 5 s)");
}

void Daemon::reply_result_from_agent(capsule_unixctl_conn* conn, std::function<Result<std::string>()> fn) {
  auto failed = std::make_shared<bool>(false);
  auto text = ask_agent([fn = std::move(fn), failed] {
    auto r = fn();
    if (r) return std::move(r.value());
    *failed = true;
    return r.error().message;
  });
  if (!text)
    capsule_unixctl_reply_error(conn, "agent thread busy (no answer within 5 s)");
  else if (*failed)
    capsule_unixctl_reply_error(conn, text->c_str());
  else
    capsule_unixctl_reply(conn, text->c_str());
}

void Daemon::cmd_pmd_stats_show(capsule_unixctl_conn* conn, int argc, const char* argv[], void* aux) {
  auto* d = static_cast<Daemon*>(aux);
  const std::string vm = argc > 1 ? argv[1] : "";
  d->reply_result_from_agent(conn, [d, vm] { return d->agent_->datapath().pmd_stats_show(vm); });
}

void Daemon::cmd_fdb_show(capsule_unixctl_conn* conn, int, const char*[], void* aux) {
  auto* d = static_cast<Daemon*>(aux);
  d->reply_result_from_agent(conn, [d] { return d->agent_->datapath().fdb_show(); });
}

void Daemon::cmd_show(capsule_unixctl_conn* conn, int, const char*[], void* aux) {
  auto* d = static_cast<Daemon*>(aux);
  d->reply_from_agent(conn, [d] { return d->agent_->show(); });
}

void Daemon::cmd_stats(capsule_unixctl_conn* conn, int, const char*[], void* aux) {
  auto* d = static_cast<Daemon*>(aux);
  d->reply_from_agent(conn, [d] {
    d->agent_->sample();
    return d->agent_->stats();
  });
}

void Daemon::cmd_reconcile(capsule_unixctl_conn* conn, int, const char*[], void* aux) {
  auto* d = static_cast<Daemon*>(aux);
  auto snap = std::make_shared<ovs::Snapshot>(d->db_->snapshot());
  d->reply_from_agent(conn, [d, snap] {
    d->agent_->update(std::move(*snap));
    d->agent_->reconcile();
    d->publish();
    auto st = d->agent_->status();
    return "reconciled (pass " + std::to_string(d->agent_->reconcile_count()) + "): " +
           st.host.status["vms_running"] + " running, " + st.host.status["vms_rejected"] + " rejected\n";
  });
}

// Answered on the OVS thread, which owns the connection.
void Daemon::cmd_db_show(capsule_unixctl_conn* conn, int, const char*[], void* aux) {
  auto* d = static_cast<Daemon*>(aux);
  if (!d->db_) return capsule_unixctl_reply_error(conn, "no database connection");
  const auto m = d->db_->monitored();
  const auto c = d->db_->counters();
  const std::string text = "database " + d->opts_.db + ": " + (d->db_->connected() ? "connected" : "not connected") +
                           "\n  monitored rows of chassis " + d->opts_.chassis + ": VM " + std::to_string(m.vms) +
                           ", Port " + std::to_string(m.ports) + ", QoS " + std::to_string(m.qos) +
                           ", Calibration " + std::to_string(m.calibrations) +
                           "\n  monitor updates received: " + std::to_string(d->db_->updates()) +
                           "\n  status transactions committed: " + std::to_string(c.commits) +
                           "\n  status transactions sent: " + std::to_string(c.sent) + ", sent again: " +
                           std::to_string(c.retried) + "\n  connections made: " + std::to_string(c.connections) + "\n";
  capsule_unixctl_reply(conn, text.c_str());
}

void Daemon::cmd_exit(capsule_unixctl_conn* conn, int, const char*[], void* aux) {
  auto* d = static_cast<Daemon*>(aux);
  asio::post(d->io_, [d] { d->shutdown("unixctl exit"); });
  capsule_unixctl_reply(conn, nullptr);
}

void Daemon::ovs_main() {
  ovs::DbConnection db(opts_.db, opts_.chassis);
  db.set_leader_only(opts_.leader_only);
  db_ = &db;
  bool was_connected = false;
  auto deadline = std::chrono::steady_clock::time_point::max();
  for (;;) {
    std::optional<ovs::StatusUpdate> status;
    {
      std::lock_guard<std::mutex> lock(x_.mu);
      status.swap(x_.status);
    }
    if (status)
      if (Status st = db.set_status(*status); !st) log(CAPSULE_LOG_ERR, st.error().message);
    bool changed = db.run();
    if (db.connected() != was_connected) {
      was_connected = db.connected();
      log(was_connected ? CAPSULE_LOG_INFO : CAPSULE_LOG_WARN,
          std::string(was_connected ? "connected to " : "lost connection to ") + opts_.db);
      changed = true;
    }
    if (x_.final_posted) {
      // Leave once the final status is written (or after 2 s without a
      // database). Until it is posted (stopping the datapath daemon takes a
      // moment) the loop goes on.
      if (deadline == std::chrono::steady_clock::time_point::max())
        deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      std::lock_guard<std::mutex> lock(x_.mu);
      if ((!x_.status && !db.status_pending()) || std::chrono::steady_clock::now() > deadline) break;
    } else if (changed) {
      auto snapshot = db.snapshot();
      std::lock_guard<std::mutex> lock(x_.mu);
      x_.snapshot = std::move(snapshot);
      if (!x_.snapshot_posted) {
        x_.snapshot_posted = true;
        asio::post(io_, [this] { on_snapshot(); });
      }
    }
    db.wait_and_block(x_.stopping ? 100 : -1);
  }
  db_ = nullptr;
  capsule_unixctl_destroy();
  asio::post(io_, [this] { io_.stop(); });
}

int Daemon::run() {
  // Reservations a crashed predecessor left: only cpusets can outlive a
  // process (thread policies die with it or stay with the VM's threads).
  if (!kSimulatedHost)
    if (auto stale = rsv::PartitionSet::cleanup_stale(); stale && !stale->empty())
      log(CAPSULE_LOG_WARN, "removed " + std::to_string(stale->size()) + " stale capsule cpusets");


  // OVS's fatal-signal handlers are installed by now (daemon, unixctl);
  // these replace them so that SIGTERM restores threads before exiting.
  signals_.add(SIGTERM);
  signals_.add(SIGINT);
  signals_.add(SIGHUP);
  signals_.async_wait([this](boost::system::error_code ec, int sig) {
    if (!ec) shutdown(std::string("signal ") + strsignal(sig));
  });
  if (opts_.metrics_port >= 0) {
    try {
      metrics_ = std::make_unique<agent::MetricsServer>(io_, uint16_t(opts_.metrics_port),
                                                        [this] { return agent_->metrics(); });
      log(CAPSULE_LOG_INFO, "metrics on http://127.0.0.1:" + std::to_string(metrics_->port()) + "/metrics");
    } catch (const boost::system::system_error& e) {
      log(CAPSULE_LOG_ERR, "cannot serve metrics on 127.0.0.1:" + std::to_string(opts_.metrics_port) + ": " +
                               e.what());
      return 1;
    }
  }
  std::string metrics_url =
      metrics_ ? "http://127.0.0.1:" + std::to_string(metrics_->port()) + "/metrics" : std::string();
  // The Host row's datapath settings start (or adopt) capsule-datapathd,
  // the process that runs the DPDK datapath and outlives this one
  // (remote_datapath.h); until then, or when that fails, the agent runs on a
  // DetachedDatapath that says why. Its log goes beside ours.
  std::string log_dir;
  if (opts_.log_file_path && opts_.log_file_path->find('/') != std::string::npos)
    log_dir = opts_.log_file_path->substr(0, opts_.log_file_path->rfind('/'));
  auto datapathd = agent::default_datapathd_options(log_dir);
  // A dead daemon: status says so at once, then the next pass (run now)
  // starts a new one.
  datapathd.on_lost = [this] {
    asio::post(io_, [this] {
      if (x_.stopping) return;
      publish();
      asio::post(io_, [this] {
        if (x_.stopping) return;
        agent_->reconcile();
        publish();
      });
    });
  };
#ifdef CAPSULE_SIMULATED_HOST
  // Bookings without a system call and a datapath that records: no journal
  // (nothing outlives a simulated agent), no capsule-datapathd.
  (void)datapathd;
  agent_ = std::make_unique<agent::Agent>(
      agent::AgentConfig{opts_.chassis, kVersion, metrics_url, "", agent::simulated_reservations},
      [](const agent::DatapathSettings&) -> Result<std::unique_ptr<agent::Datapath>> {
        return std::unique_ptr<agent::Datapath>(std::make_unique<agent::RecordingDatapath>());
      });
#else
  // OVS mode: a replaced OVS PMD thread (ovs-vswitchd restarted, its mask
  // changed) is reserved again by a pass run at once.
  auto ovs_pmd_changed = [this] {
    asio::post(io_, [this] {
      if (x_.stopping) return;
      agent_->reconcile();
      publish();
    });
  };
  agent_ = std::make_unique<agent::Agent>(
      agent::AgentConfig{opts_.chassis, kVersion, metrics_url, opts_.journal, nullptr, opts_.steer_io},
      [datapathd, ovs_pmd_changed](const agent::DatapathSettings& s) {
        if (s.type == "ovs") return agent::make_ovs_datapath(s, ovs_pmd_changed);
        return agent::make_remote_datapath(datapathd, s);
      });
#endif
  capsule_unixctl_register("capsule/show", "", 0, 0, cmd_show, this);
  capsule_unixctl_register("capsule/stats", "", 0, 0, cmd_stats, this);
  capsule_unixctl_register("capsule/reconcile", "", 0, 0, cmd_reconcile, this);
  capsule_unixctl_register("capsule/pmd-stats-show", "[VM]", 0, 1, cmd_pmd_stats_show, this);
  capsule_unixctl_register("capsule/fdb-show", "", 0, 0, cmd_fdb_show, this);
  capsule_unixctl_register("capsule/db-show", "", 0, 0, cmd_db_show, this);
  capsule_unixctl_register("exit", "", 0, 0, cmd_exit, this);
  if (kSimulatedHost)
    log(CAPSULE_LOG_WARN, "SIMULATED HOST (capsule-simhost, scale runs only): reservations are booked, "
                          "nothing is applied to any thread, the datapath only records");
  log(CAPSULE_LOG_INFO, std::string("capsuled ") + kVersion + " starting: chassis " + opts_.chassis + ", database " +
                            opts_.db + ", control socket " + capsule_unixctl_path());

  arm_stats_timer();
  ovs_thread_ = std::thread([this] { ovs_main(); });
  capsule_ovs_daemonize_complete();
  io_.run();
  if (!x_.stopping) shutdown("event loop ended");
  x_.stopping = true;
  x_.final_posted = true;
  capsule_ovs_wake();
  ovs_thread_.join();
  agent_.reset();
  log(CAPSULE_LOG_INFO, "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opts = parse_options(argc, argv);
  capsule_ovs_init(argv[0]);
  capsule::log::set_sink(&library_log);
  for (const auto& v : opts.verbose) {
    if (char* err = capsule_ovs_set_verbosity(v.c_str())) {
      std::cerr << "capsuled: --verbose: " << err << "\n";
      std::free(err);
      return 2;
    }
  }
  ::mkdir(capsule_ovs_rundir(), 0755);
  if (opts.log_file) {
    if (!opts.log_file_path) ::mkdir(env_or("CAPSULE_LOGDIR", "/var/log/capsule").c_str(), 0755);
    if (char* err = capsule_ovs_set_log_file(opts.log_file_path ? opts.log_file_path->c_str() : nullptr)) {
      std::cerr << "capsuled: " << err << "\n";
      std::free(err);
      return 1;
    }
  }
  if (opts.private_key || opts.ca_cert)
    capsule_ovs_set_ssl(opts.private_key ? opts.private_key->c_str() : nullptr,
                        opts.certificate ? opts.certificate->c_str() : nullptr,
                        opts.ca_cert ? opts.ca_cert->c_str() : nullptr);
  if (opts.pidfile) capsule_ovs_set_pidfile(opts.pidfile_path ? opts.pidfile_path->c_str() : nullptr);
  if (opts.detach) capsule_ovs_set_detach();
  if (opts.no_chdir) capsule_ovs_set_no_chdir();

  capsule_ovs_daemonize_start();  // forks with --detach: before any thread
  if (int err = capsule_unixctl_create(opts.unixctl ? opts.unixctl->c_str() : nullptr)) {
    capsule_ovs_log(CAPSULE_LOG_ERR, (std::string("cannot create the control socket: ") + std::strerror(err)).c_str());
    return 1;
  }
  Daemon daemon(std::move(opts));
  return daemon.run();
}
