// A local Capsule control plane for tests, benchmarks and the demo: an
// ovsdb-server serving a fresh Capsule database in a private directory, a
// capsuled process on it, and capsule-ctl runs. Everything is a child process
// that is stopped (SIGTERM, then SIGKILL) and reaped when its object goes,
// and the directory is removed, also when a test assertion fails.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "capsule/result.h"
#include "capsule/rsv/discovery.h"
#include "capsule/testkit.h"

namespace capsule::harness {

// A program on $PATH or in /usr/sbin, /usr/bin, /sbin, /bin; "" if absent.
std::string find_program(const std::string& name);

struct CmdResult {
  int rc = -1;  // exit status, or 128 + signal
  std::string out, err;
};
// Runs argv[0] (a path) and collects its output; killed after `timeout`.
CmdResult run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = std::chrono::seconds(30));

// A directory under /tmp removed (recursively) on destruction.
using testkit::TempDir;

// ovsdb-server with the Capsule schema, listening on <dir>/db.sock.
class Ovsdb {
 public:
  static Result<std::unique_ptr<Ovsdb>> start(const std::string& dir);
  std::string remote() const { return "unix:" + dir_ + "/db.sock"; }
  pid_t pid() const { return proc_->pid(); }
  // Stops the server (SIGTERM) and starts it again on the same database file.
  void stop();
  Status restart();
  // SIGKILL, as a crash (its socket file stays, as a crash leaves it), then
  // reaped; start_again() brings it back on the same database file.
  void crash();
  Status start_again() { return launch(); }

 private:
  Status launch();
  std::string dir_;
  std::unique_ptr<testkit::ChildProcess> proc_;
};

// A clustered Capsule database (Raft) on loopback: `members` ovsdb-servers,
// each with its own Raft port and client port, created with ovsdb-tool
// create-cluster (member 0) and join-cluster (the others), as
// capsule-service does on real hosts. Everything lives in `dir`.
class OvsdbCluster {
 public:
  static Result<std::unique_ptr<OvsdbCluster>> start(const std::string& dir, int members = 3);
  ~OvsdbCluster();
  int size() const { return int(members_.size()); }
  // Every member's client remote, comma-separated (what capsuled and
  // capsule-ctl take), or one member's.
  std::string remotes() const;
  std::string remote(int i) const { return "tcp:127.0.0.1:" + std::to_string(members_[i].client_port); }
  pid_t pid(int i) const { return members_[i].proc ? members_[i].proc->pid() : 0; }
  // The member that is leader now (cluster/status), -1 if none is.
  int leader() const;
  // The highest Raft term a running member reports (cluster/status), -1 if
  // none answers: how many elections there have been.
  long term() const;
  const std::string& log_file(int i) const { return members_[i].log; }
  // Waits until some member is leader and every running member has joined.
  bool wait_healthy(std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;
  // Raft's election timer (ms; OVS's default is 1000): how long followers
  // wait for the leader before electing another. Set through the leader,
  // doubling at most per step as ovsdb-server allows.
  Status set_election_timer(int ms);
  // SIGKILL (a crash), reaped; start_again() runs it on its database file.
  void kill(int i);
  Status start_again(int i);

 private:
  struct Member {
    std::string db, ctl, log;
    int raft_port = 0, client_port = 0;
    std::unique_ptr<testkit::ChildProcess> proc;
  };
  Status launch(int i);
  std::string cluster_status(int i) const;
  std::string dir_;
  std::vector<Member> members_;
};

// A free TCP port on 127.0.0.1 (bound and released: take it at once).
int free_tcp_port();

// capsuled on an Ovsdb, in the foreground, with its control socket and log
// in `dir`. The metrics endpoint listens on a free loopback port. capsuled
// starts capsule-datapathd (pidfile, socket and log in `dir` too), which is
// not its child and outlives it when it is killed: the destructor ends that
// daemon as well (by its pidfile), whatever happened to capsuled.
class Capsuled {
 public:
  static Result<std::unique_ptr<Capsuled>> start(const Ovsdb& db, const std::string& dir, const std::string& chassis,
                                                 const std::vector<std::string>& extra_args = {});
  // The same on any remote (a cluster's comma-separated list).
  static Result<std::unique_ptr<Capsuled>> start(const std::string& remote, const std::string& dir,
                                                 const std::string& chassis,
                                                 const std::vector<std::string>& extra_args = {});
  ~Capsuled();
  pid_t pid() const { return proc_->pid(); }
  bool running() { return proc_->running(); }
  const std::string& ctl_socket() const { return ctl_socket_; }
  const std::string& log_file() const { return log_; }
  // SIGTERM and wait; the exit status.
  int stop() { return proc_->terminate(std::chrono::seconds(10)); }
  // SIGKILL (a crash: capsuled cleans nothing up) and reap; the wait status
  // (-1 if it was not running). capsule-datapathd keeps running.
  int kill();
  // Starts it again (after stop() or kill()) with the same arguments.
  Status restart(const Ovsdb& db) { return restart(db.remote()); }
  Status restart(const std::string& remote);

  // The datapath daemon capsuled runs its VMs' datapath in: its pid from
  // <dir>/datapathd.pid while that process lives, else 0.
  pid_t datapathd_pid() const;
  std::string datapathd_socket() const { return dir_ + "/datapathd.sock"; }
  std::string datapathd_log() const { return dir_ + "/datapathd.log"; }

 private:
  std::unique_ptr<testkit::ChildProcess> proc_;
  std::string dir_, chassis_, ctl_socket_, log_;
  std::vector<std::string> argv_;
};

// Whether a process runs (rsv/discovery.h: a zombie does not).
using rsv::process_alive;
// SIGTERM, then SIGKILL after `grace`, to a process that is not our child;
// true once it is gone.
bool end_process(pid_t pid, std::chrono::milliseconds grace = std::chrono::seconds(10));

// capsule-ctl --db=<db> --timeout=<timeout> ARGS...
CmdResult ctl(const Ovsdb& db, const std::vector<std::string>& args,
              std::chrono::seconds timeout = std::chrono::seconds(20));
CmdResult ctl(const std::string& remote, const std::vector<std::string>& args,
              std::chrono::seconds timeout = std::chrono::seconds(20));
// Per-second rate of Port `port`'s statistics:KEY as capsuled writes it
// (every --stats-interval): the median of `windows` back-to-back windows of
// about `window`. Each end of a window is taken when a fresh value appears,
// so the interval between capsuled's samples does not blur the rate.
double port_statistic_rate(const Ovsdb& db, const std::string& port, const std::string& key,
                           std::chrono::milliseconds window, int windows = 1);

// ovs-appctl -t <capsuled's socket> ARGS...
CmdResult appctl(const Capsuled& agent, const std::vector<std::string>& args);

// Paths of capsule's binaries (next to the running one, build/bin).
std::string capsule_ctl_path();
std::string capsuled_path();

}  // namespace capsule::harness
