// capsuled's side of capsule-datapathd: the Datapath the agent uses is a
// client of the daemon that runs the DPDK datapath in its own process
// (ctl/datapathd), so that VM traffic survives the agent (docs/reliability.md).
//
// make_remote_datapath() connects to the daemon's socket, or starts the
// daemon (detached: its own session, reaped by init) when nobody answers,
// and configures it with the Host row's settings. A daemon that already
// runs with those settings is adopted: the VMs it holds stay in force, and
// the agent's add_vm with the same configuration changes nothing (no port
// flap, the PMD thread keeps its tid and so its reservation).
//
// When the daemon dies, attached() turns false at once (a pidfd watcher),
// detail() says "datapath daemon capsule-datapathd (pid N) exited at TIME",
// lost() is true and the agent makes a new one (a new daemon).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "client.h"
#include "datapath.h"

namespace capsule::agent {

struct DatapathdOptions {
  std::string program;   // capsule-datapathd (default: beside this executable)
  std::string socket;    // default $CAPSULE_RUNDIR/datapathd.sock
  std::string pidfile;   // default $CAPSULE_RUNDIR/datapathd.pid
  std::string log_file;  // default $CAPSULE_LOGDIR/datapathd.log
  std::chrono::milliseconds start_timeout = std::chrono::seconds(20);
  std::function<void()> on_lost;  // called (from a watcher thread) when the daemon exits
};
// The defaults above, the log beside `log_dir` when it is not empty.
DatapathdOptions default_datapathd_options(const std::string& log_dir = "");

class RemoteDatapath final : public Datapath {
 public:
  RemoteDatapath(datapathd::Client client, pid_t pid, std::string detail, std::vector<VmNetConfig> in_force,
                 std::function<void()> on_lost);
  ~RemoteDatapath() override;

  std::string name() const override { return "capsule-dpdk"; }
  bool attached() const override { return !exited_.load(); }
  std::string detail() const override;
  Status add_vm(const VmNetConfig& config) override;
  Status remove_vm(const std::string& vm) override;
  std::optional<pid_t> pmd_tid(const std::string& vm) const override;
  Result<VmDatapathStats> stats(const std::string& vm) const override;
  bool lost() const override { return exited_.load(); }
  std::vector<VmNetConfig> in_force() const override { return in_force_; }
  void shutdown() override;
  Result<std::string> pmd_stats_show(const std::string& vm) const override;
  Result<std::string> fdb_show() const override;


 private:
  Result<datapathd::json> call(const datapathd::json& request) const;
  void watch();

  mutable datapathd::Client client_;
  pid_t pid_;
  std::string detail_;
  std::vector<VmNetConfig> in_force_;  // VMs found on the daemon when it was adopted
  std::function<void()> on_lost_;
  int pidfd_ = -1, stop_fd_ = -1;
  std::atomic<bool> exited_{false}, stopping_{false};
  std::atomic<int64_t> exited_ms_{0};
  std::thread watcher_;
};

Result<std::unique_ptr<Datapath>> make_remote_datapath(const DatapathdOptions& options,
                                                       const DatapathSettings& settings);

}  // namespace capsule::agent
