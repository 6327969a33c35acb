// capsule-rsv: put a running VM's vCPU threads into a capsule by hand, look
// at a process's threads, or clear cpusets a crashed owner left behind. The
// reservation lasts while the command runs (like `chrt`, but all or nothing
// over the VM's threads) and is undone when it exits.
//
//   capsule-rsv reserve (--pid PID | --pidfile F) --runtime 4ms --period 20ms
//                       [--deadline D] [--reclaim] [--seconds S]
//   capsule-rsv show (--pid PID | --pidfile F)
//   capsule-rsv cleanup
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <limits>
#include <string>
#include <thread>

#include "capsule/number.h"
#include "capsule/rsv/accounting.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/manager.h"

using namespace capsule;
using namespace capsule::rsv;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

int usage() {
  std::fputs(
      "usage: capsule-rsv reserve (--pid PID | --pidfile FILE) --runtime Q --period P\n"
      "                           [--deadline D] [--reclaim] [--seconds S]\n"
      "       capsule-rsv show (--pid PID | --pidfile FILE)\n"
      "       capsule-rsv cleanup\n"
      "Durations: 20ms, 500us, 1.5s. The reservation holds every vCPU thread\n"
      "(\"CPU n/KVM\", \"CPU n/TCG\") of the process, each with budget Q every P,\n"
      "until the command ends (SIGINT/SIGTERM or --seconds); then the threads get\n"
      "their old policy, affinity and cpuset back.\n",
      stderr);
  return 2;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "capsule-rsv: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Handlers first: a signal that lands while threads are being reserved
  // must still end in the restore path, never in a default kill.
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  if (argc < 2) return usage();
  const std::string cmd = argv[1];
  pid_t pid = 0;
  std::string pidfile;
  nanoseconds runtime{0}, period{0}, deadline{0};
  bool reclaim = false;
  double seconds = 0;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    auto dur = [&](nanoseconds& out) {
      auto d = parse_duration(next());
      if (!d) return false;
      out = *d;
      return true;
    };
    if (a == "--pid") {
      const std::string v = next();
      const auto n = parse_whole(v, uint64_t(std::numeric_limits<pid_t>::max()));
      if (!n || *n == 0) return fail("--pid: '" + v + "' is not a process id");
      pid = pid_t(*n);
    }
    else if (a == "--pidfile") pidfile = next();
    else if (a == "--runtime") { if (!dur(runtime)) return fail("--runtime: " + parse_duration(argv[i]).error().message); }
    else if (a == "--period") { if (!dur(period)) return fail("--period: " + parse_duration(argv[i]).error().message); }
    else if (a == "--deadline") { if (!dur(deadline)) return fail("--deadline: " + parse_duration(argv[i]).error().message); }
    else if (a == "--reclaim") reclaim = true;
    else if (a == "--seconds") {
      const std::string v = next();
      const auto x = parse_nonnegative(v);
      if (!x) return fail("--seconds: '" + v + "' is not a number of seconds >= 0");
      seconds = *x;
    }
    else return usage();
  }

  if (cmd == "cleanup") {
    auto removed = PartitionSet::cleanup_stale();
    if (!removed) return fail(removed.error().message);
    for (const auto& r : *removed) std::printf("removed stale cpuset %s\n", r.c_str());
    if (removed->empty()) std::printf("no stale capsule cpusets\n");
    // What stays is in use: say by whom, so a caller can tell a running
    // capsuled from a stuck process.
    for (const auto& p : PartitionSet::existing()) {
      std::string tids;
      for (pid_t t : p.tasks) tids += " " + std::to_string(t);
      std::printf("in use: cpuset %s (tasks:%s)\n", p.name.c_str(), tids.c_str());
    }
    return 0;
  }
  if (!pidfile.empty()) {
    auto p = read_pidfile(pidfile);
    if (!p) return fail(p.error().message);
    pid = *p;
  }
  if (pid <= 0) return fail("give the VM's process with --pid or --pidfile");
  auto threads = discover_threads(pid);
  if (!threads) return fail(threads.error().message);

  if (cmd == "show") {
    std::vector<pid_t> tids;
    for (const auto& t : *threads) tids.push_back(t.tid);
    UtilisationMeter meter(tids);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    auto use = meter.sample();
    std::printf("%-8s %-16s %-9s %-15s %-28s %s\n", "TID", "NAME", "ROLE", "POLICY", "RESERVATION", "CPU(1s)");
    for (const auto& t : *threads) {
      const auto& u = use[t.tid];
      std::string rsv = u.params.is_deadline()
                            ? ReservationSpec{u.params.runtime, u.params.period, u.params.deadline}.to_string()
                            : "-";
      std::printf("%-8d %-16s %-9s %-15s %-28s %.1f %%\n", int(t.tid), t.comm.c_str(), role_name(t.role).c_str(),
                  policy_name(u.params.policy).c_str(), rsv.c_str(), u.utilisation * 100);
    }
    return 0;
  }
  if (cmd != "reserve") return usage();

  VmReservationSpec spec{"pid" + std::to_string(pid), period, deadline, reclaim, {}};
  for (const auto& t : threads_with_role(*threads, ThreadRole::kVcpu))
    spec.threads.push_back(ThreadBudget{t.tid, runtime, -1, "vcpu" + std::to_string(t.index)});
  if (spec.threads.empty()) return fail("process " + std::to_string(pid) + " has no vCPU threads (named \"CPU n/KVM\"; start QEMU with "
                "-name <vm>,debug-threads=on, as libvirt does)");
  ReservationManager mgr;
  auto dec = mgr.reserve(spec);
  if (!dec) return fail(dec.error().message);
  std::printf("reserved %zu vCPU threads of process %d: %s each\n", spec.threads.size(), int(pid),
              spec.thread_spec(spec.threads.front()).to_string().c_str());
  std::fflush(stdout);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!g_stop.load() && (seconds <= 0 || std::chrono::steady_clock::now() < end))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::printf("released; threads restored\n");
  return 0;  // ~ReservationManager restores the threads
}
