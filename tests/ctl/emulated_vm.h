// An emulated VM for the control-plane tests: capsule-vm serving its
// vhost-user socket in a test directory, reporting its own counters every
// 200 ms (what the VM counts, not what capsule says).
#pragma once

#include <string>
#include <sys/types.h>
#include <vector>

#include "capsule/harness.h"
#include "capsule/vm/peer.h"

namespace capsule::testing {

// An emulated VM (capsule-vm serving its vhost-user socket) in `dir`.
class EmulatedVm : public vm::VmPeer {
 public:
  EmulatedVm(const harness::TempDir& dir, const std::string& name, const std::string& mac,
             std::vector<std::string> mode_args)
      : VmPeer(dir.file(name + ".out"), dir.file(name + ".sock"), mac, with_reports(std::move(mode_args))),
        socket_(dir.file(name + ".sock")) {}
  const std::string& socket() const { return socket_; }
  // A counter from the newest report line, -1 if none yet.
  long long counter(const std::string& key) const {
    auto c = counters();
    auto it = c.find(key);
    return it == c.end() ? -1 : (long long)it->second;
  }
  std::vector<pid_t> vcpus() const {
    const pid_t t = vcpu_tid();
    return t > 0 ? std::vector<pid_t>{t} : std::vector<pid_t>{};
  }

 private:
  static std::vector<std::string> with_reports(std::vector<std::string> args) {
    args.insert(args.end(), {"--report-ms", "200"});
    return args;
  }
  std::string socket_;
};

}  // namespace capsule::testing
