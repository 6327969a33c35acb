#include "capsule/rsv/io_isolation.h"

#include <sys/utsname.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/io_steering.h"

namespace capsule::rsv {

namespace {

// The kernel's build configuration, or "" when neither place has it.
std::string kernel_config() {
  if (gzFile gz = gzopen("/proc/config.gz", "rb")) {
    std::string text;
    char buf[65536];
    int n;
    while ((n = gzread(gz, buf, sizeof buf)) > 0) text.append(buf, std::size_t(n));
    gzclose(gz);
    if (!text.empty()) return text;
  }
  utsname u{};
  if (::uname(&u) == 0) {
    std::ifstream f(std::string("/boot/config-") + u.release);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  return "";
}

std::vector<int> overlap(const std::vector<int>& a, const std::vector<int>& b) {
  std::vector<int> out;
  for (int c : a)
    if (std::find(b.begin(), b.end(), c) != b.end()) out.push_back(c);
  return out;
}

}  // namespace

IoIsolationFacts read_io_isolation_facts() {
  IoIsolationFacts f;
  static const std::string config = kernel_config();  // fixed while the kernel runs
  f.config_known = !config.empty();
  f.irq_time_accounting = config.find("\nCONFIG_IRQ_TIME_ACCOUNTING=y") != std::string::npos;
  {
    std::ifstream cpuinfo("/proc/cpuinfo");
    bool guest = false;
    for (std::string line; !guest && std::getline(cpuinfo, line);)
      guest = line.rfind("flags", 0) == 0 && (line + " ").find(" hypervisor ") != std::string::npos;
    std::ifstream stat("/proc/stat");
    std::string cpu;
    unsigned long long v[8] = {};
    stat >> cpu >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7];  // v[7]: steal
    f.guest_without_steal = guest && v[7] == 0;
  }
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/irq", ec)) {
    if (!e.is_directory()) continue;
    bool device = false;  // a handler shows as a directory named after it
    for (const auto& h : std::filesystem::directory_iterator(e.path(), ec)) device |= h.is_directory();
    if (!device) continue;
    auto eff = read_text_file((e.path() / "effective_affinity_list").string());
    if (!eff) continue;
    for (int c : parse_cpu_list(*eff))
      if (std::find(f.device_irq_cpus.begin(), f.device_irq_cpus.end(), c) == f.device_irq_cpus.end())
        f.device_irq_cpus.push_back(c);
  }
  std::sort(f.device_irq_cpus.begin(), f.device_irq_cpus.end());
  if (auto wq = read_text_file(IoSteeringPaths{}.workqueue_cpumask))
    if (auto cpus = parse_cpu_mask(*wq)) f.workqueue_cpus = *cpus;
  return f;
}

IoIsolationVerdict judge_io_isolation(const IoIsolationFacts& facts, AdmissionMode mode,
                                      const std::vector<int>& capsule_cpus_in) {
  const std::vector<int> capsule_cpus = capsule_cpus_in.empty() ? online_cpus() : capsule_cpus_in;
  std::vector<std::string> why;
  if (facts.guest_without_steal)
    why.push_back(
        "this host is a virtual machine whose hypervisor reports no steal time, so the time its vCPUs are stopped "
        "(up to 38 ms at a time beside a disk writer on the development machines) is charged to the "
        "SCHED_DEADLINE thread that was running, which the kernel then throttles until the overrun is paid back at "
        "its budget per period (activations 160-300 ms late with 2 ms / 20 ms, in global and partitioned mode "
        "alike; docs/cpu-rsv.md \"Disk I/O neighbours\"); run capsules on bare metal or under a hypervisor "
        "that reports steal time, or set VM:reclaim=true on the VMs whose latency matters (SCHED_FLAG_RECLAIM leaves "
        "only the stop itself, DL max 13-17 ms as SCHED_FIFO, but lets the capsule use bandwidth others leave idle)");
  if (!facts.irq_time_accounting) {
    const std::string kernel =
        facts.config_known ? "this kernel has no CONFIG_IRQ_TIME_ACCOUNTING, so the time of the interrupts and "
                             "softirqs that land on a CPU is charged to the SCHED_DEADLINE thread running there"
                           : "the kernel's configuration cannot be read (no /proc/config.gz or /boot/config-*), so "
                             "interrupt time may be charged to the SCHED_DEADLINE thread it lands on";
    const auto irq = overlap(facts.device_irq_cpus, capsule_cpus);
    const auto wq = overlap(facts.workqueue_cpus, capsule_cpus);
    if (mode == AdmissionMode::kGlobal)
      why.push_back(kernel + ", and under global admission every capsule thread may run on the CPUs that take the "
                             "disk's interrupts and writeback; use partitioned admission with capsule cores apart "
                             "from a housekeeping core, and steer device interrupts and unbound workqueues to it");
    else if (!irq.empty() || !wq.empty()) {
      std::string where;
      if (!irq.empty()) where = "device interrupts are delivered to capsule cpu " + format_cpu_list(irq);
      if (!wq.empty())
        where += (where.empty() ? "" : ", and ") + std::string("unbound workqueues (writeback) may run on capsule cpu ") +
                 format_cpu_list(wq);
      why.push_back(kernel + ", and " + where +
                    "; steer them to a housekeeping core (capsuled --steer-io, or "
                    "/proc/irq/*/smp_affinity_list and /sys/devices/virtual/workqueue/cpumask)");
    }
  }
  if (why.empty())
    return {true, facts.irq_time_accounting
                      ? "interrupt and softirq time is accounted apart from tasks (CONFIG_IRQ_TIME_ACCOUNTING)"
                      : "partitioned capsule cpus " + format_cpu_list(capsule_cpus) +
                            " take no device interrupts and run no unbound workqueues"};
  std::string reason = "not safe against disk-I/O neighbours: " + why[0];
  for (std::size_t i = 1; i < why.size(); ++i) reason += "; also, " + why[i];
  return {false, reason};
}

}  // namespace capsule::rsv
