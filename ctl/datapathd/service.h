// What capsule-datapathd does with each request (protocol.h): it holds one
// CapsuleDpdkDatapath made from the settings capsuled last configured, and
// the VMs in force on it. Single-threaded: the daemon's loop calls it.
//
// Every refusal leaves what was in force untouched. The daemon keeps
// forwarding whether or not any client is connected: nothing here depends
// on capsuled being alive.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "capsule/log.h"
#include "dpdk_datapath.h"
#include "protocol.h"

namespace capsule::datapathd {

using LogLevel = log::Level;
using LogFn = std::function<void(LogLevel, const std::string&)>;

class Service {
 public:
  explicit Service(LogFn log) : log_(std::move(log)), started_ms_(unix_ms_now()) {}
  ~Service() { stop(); }

  // One request -> one response; never throws.
  json handle(const json& request);
  // A shutdown request was answered: the daemon should exit.
  bool shutdown_requested() const { return shutdown_; }
  // Removes every VM and stops the datapath (shutdown, SIGTERM).
  void stop();
  // Logs what the VMs lost since the last report, by cause, at most once a
  // second (the daemon's loop calls it whenever it wakes). Guest attach and
  // detach are logged by the datapath as they happen.
  void log_drops();

 private:
  json dispatch(const json& request);  // handle() without the catch
  json hello() const;
  json configure(const json& request);
  json add_vm(const json& request);
  json remove_vm(const json& request);
  json pmd_tid(const json& request) const;
  json stats(const json& request) const;

  LogFn log_;
  int64_t started_ms_;
  std::optional<agent::DatapathSettings> settings_;      // configured and running
  std::optional<std::map<std::string, std::string>> eal_options_;  // what the EAL was started with
  std::unique_ptr<agent::CapsuleDpdkDatapath> dp_;
  int64_t drops_logged_ms_ = 0;
  bool shutdown_ = false;
};

}  // namespace capsule::datapathd
