// Where the agent's capsules are made: the kernel (rsv::ReservationManager:
// SCHED_DEADLINE, cpusets, thread discovery in /proc, the journal), or, for
// scale runs only, a simulated host that books without a system call
// (simulated_host.h, linked into capsule-simhost and never into capsuled).
// The agent sees only this interface, so both run the same reconciler.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "capsule/result.h"
#include "capsule/rsv/admission.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/journal.h"
#include "capsule/rsv/reservation.h"
#include "capsule/rsv/spec.h"

namespace capsule::agent {

class Reservations {
 public:
  virtual ~Reservations() = default;

  // rsv::ReservationManager's verbs (manager.h).
  virtual Result<rsv::AdmissionDecision> reserve(const rsv::VmReservationSpec& spec) = 0;
  virtual Status release(const std::string& name) = 0;
  virtual void release_all() = 0;
  // What is in force for a VM, or nullptr.
  virtual const rsv::VmReservationSpec* find(const std::string& name) const = 0;
  virtual const rsv::AdmissionDecision* decision(const std::string& name) const = 0;
  virtual std::vector<rsv::DomainLoad> load() const = 0;
  virtual const rsv::AdmissionControl& admission() const = 0;
  virtual std::map<std::string, Result<rsv::AdoptReport>> adopt(const rsv::JournalState& state) = 0;
  virtual std::map<std::string, std::vector<std::string>> drift() const = 0;
  virtual Status repair(const std::string& name) = 0;
  virtual void set_journal(std::optional<rsv::Journal> journal) = 0;
  virtual void begin_batch(const std::vector<rsv::VmReservationSpec>& expected) = 0;
  virtual void end_batch() = 0;

  // Finding a VM's threads (discovery.h).
  virtual Result<std::vector<rsv::DiscoveredThread>> discover_threads(pid_t pid) const = 0;
  virtual Result<pid_t> read_pidfile(const std::string& path) const = 0;

  // False on a simulated host: there is no thread to measure or to show.
  virtual bool real_kernel() const { return true; }
};

using ReservationsFactory = std::function<std::unique_ptr<Reservations>(const rsv::AdmissionConfig&)>;

// The kernel: what capsuled runs on.
std::unique_ptr<Reservations> kernel_reservations(const rsv::AdmissionConfig& config);

}  // namespace capsule::agent
