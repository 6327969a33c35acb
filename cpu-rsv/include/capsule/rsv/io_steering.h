// Steering of device interrupts and unbound kernel workqueues to
// housekeeping CPUs, as tuned's realtime profiles do, so that a disk-writing
// neighbour's interrupt handlers, softirqs and writeback workers run outside
// the CPUs that hold capsules. On kernels without
// CONFIG_IRQ_TIME_ACCOUNTING the time of an interrupt is charged to whatever
// task it lands on, a SCHED_DEADLINE task's budget included (docs/cpu-rsv.md,
// "Disk I/O neighbours").
//
// These are host settings other programs may rely on: IoSteering records
// each original value in a journal file before it writes (so a crashed
// owner's successor can put them back with recover()), and restores them
// when it is destroyed. Interrupts the kernel manages itself (multi-queue
// devices' per-CPU vectors, EIO on write) cannot be moved; they are listed,
// not hidden.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "capsule/result.h"

namespace capsule::rsv {

// Where the settings live (a test may point them elsewhere only for
// parsing; the kernel's files are the real ones).
struct IoSteeringPaths {
  std::string proc_irq = "/proc/irq";
  std::string workqueue_cpumask = "/sys/devices/virtual/workqueue/cpumask";
};

// One host setting as found and as written.
struct HostSetting {
  std::string path;
  std::string original;
  std::string applied;
};

class IoSteering {
 public:
  // Moves every device interrupt whose affinity reaches beyond `housekeeping`
  // onto it, and the unbound workqueues' cpumask too. `journal` ("" for
  // none) receives the original values before the first write. A setting
  // the kernel refuses is listed in unmoved(); an error only when nothing
  // could be recorded or no CPU given.
  static Result<std::unique_ptr<IoSteering>> apply(const std::vector<int>& housekeeping,
                                                   const std::string& journal = "",
                                                   const IoSteeringPaths& paths = {});
  ~IoSteering();  // restore()
  IoSteering(const IoSteering&) = delete;
  IoSteering& operator=(const IoSteering&) = delete;

  // Writes every original value back (once) and removes the journal.
  Status restore();
  // Puts back what a crashed owner recorded in `journal`, then removes the
  // file. No file: nothing to do (0). Returns how many settings it wrote.
  static Result<int> recover(const std::string& journal);

  const std::vector<HostSetting>& changed() const { return changed_; }
  const std::vector<std::string>& unmoved() const { return unmoved_; }
  const std::vector<int>& housekeeping() const { return housekeeping_; }
  // "2 interrupts and the unbound workqueues moved to cpu 0; not movable: ..."
  std::string describe() const;

 private:
  IoSteering() = default;
  std::vector<int> housekeeping_;
  std::vector<HostSetting> changed_;
  std::vector<std::string> unmoved_;
  std::string journal_;
  bool restored_ = false;
};

// A CPU set as the kernel's hex mask ("3", "1,00000000" past 32 CPUs), and
// back; "" / an error for what is not a mask.
std::string format_cpu_mask(const std::vector<int>& cpus);
Result<std::vector<int>> parse_cpu_mask(const std::string& mask);

}  // namespace capsule::rsv
