// Is a capsule on this host safe against a disk-I/O neighbour? (issue 11,
// docs/cpu-rsv.md "Disk I/O neighbours"). The host facts that decide it are
// read once (read_io_isolation_facts) and judged by a pure function, so the
// rule is tested on any machine and capsuled reports it in
// Host:capabilities:io_isolation and `capsule-ctl show`.
#pragma once

#include <string>
#include <vector>

#include "capsule/rsv/admission.h"

namespace capsule::rsv {

struct IoIsolationFacts {
  // CONFIG_IRQ_TIME_ACCOUNTING: interrupt and softirq time is accounted
  // apart from tasks. Without it, it is charged to the task it lands on, a
  // SCHED_DEADLINE thread's budget included.
  bool irq_time_accounting = false;
  bool config_known = false;  // the kernel's config could be read
  // A virtual machine (the CPU's "hypervisor" flag) whose hypervisor has
  // reported no steal time (/proc/stat): while a vCPU is stopped the guest's
  // clock goes on and the time is charged to the task that was running.
  bool guest_without_steal = false;
  // CPUs on which device interrupts are delivered now (effective affinity),
  // and those allowed for unbound workqueues (writeback runs there).
  std::vector<int> device_irq_cpus;
  std::vector<int> workqueue_cpus;
};

// From /proc/config.gz (or /boot/config-<release>), /proc/irq and sysfs.
IoIsolationFacts read_io_isolation_facts();

struct IoIsolationVerdict {
  bool safe = false;
  std::string reason;  // why not, and what to do; or what makes it safe
};

// Capsules in `mode` on `capsule_cpus` (empty: every online CPU) are safe
// when the host is not a guest without steal time, and interrupt time
// cannot be charged to them (IRQ time accounting, or partitioned capsule
// cores that take no device interrupts and run no unbound workqueues).
IoIsolationVerdict judge_io_isolation(const IoIsolationFacts& facts, AdmissionMode mode,
                                      const std::vector<int>& capsule_cpus);

}  // namespace capsule::rsv
