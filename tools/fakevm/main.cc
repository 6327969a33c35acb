// capsule-fakevm: a stand-in for a QEMU process, for tests, benchmarks and
// the demo. Its threads carry QEMU's names ("CPU 0/KVM", "IO iothread0") so
// that thread discovery and reservations see what they would see on a real
// host; each vCPU thread burns CPU (a guest under load) or idles.
//
//   capsule-fakevm [--vcpus N] [--accel KVM|TCG] [--iothreads N]
//                  [--load busy|idle] [--pidfile FILE] [--seconds S]
//                  [--idle-ms MS]
//
// It prints "pid <pid>" and one "vcpu <n> tid <tid>" line per vCPU, then runs
// until SIGTERM/SIGINT (or --seconds) and exits 0.
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

int usage() {
  std::fprintf(stderr,
               "usage: capsule-fakevm [--vcpus N] [--accel KVM|TCG] [--iothreads N]\n"
               "                      [--load busy|idle] [--pidfile FILE] [--seconds S]\n"
               "                      [--idle-ms MS] (an idle vCPU wakes every MS, default 5)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int vcpus = 1, iothreads = 0;
  double seconds = 0;
  int idle_ms = 5;
  std::string accel = "KVM", load = "busy", pidfile;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--vcpus") vcpus = std::atoi(next().c_str());
    else if (a == "--accel") accel = next();
    else if (a == "--iothreads") iothreads = std::atoi(next().c_str());
    else if (a == "--load") load = next();
    else if (a == "--pidfile") pidfile = next();
    else if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--idle-ms") idle_ms = std::atoi(next().c_str());
    else return usage();
  }
  if (vcpus < 1 || vcpus > 64 || (accel != "KVM" && accel != "TCG") || (load != "busy" && load != "idle") ||
      idle_ms < 1 || idle_ms > 10000)
    return usage();
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  std::vector<std::thread> threads;
  std::vector<std::atomic<pid_t>> tids(std::size_t(vcpus + iothreads));
  for (int n = 0; n < vcpus + iothreads; ++n) {
    const bool is_vcpu = n < vcpus;
    std::string name = is_vcpu ? "CPU " + std::to_string(n) + "/" + accel
                               : "IO iothread" + std::to_string(n - vcpus);
    threads.emplace_back([&, n, name, is_vcpu] {
      pthread_setname_np(pthread_self(), name.c_str());
      tids[std::size_t(n)].store(pid_t(syscall(SYS_gettid)));
      volatile unsigned long long x = 0;
      while (!g_stop.load(std::memory_order_relaxed)) {
        if (is_vcpu && load == "busy") x = x + 1;
        else std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms));
      }
    });
  }
  for (auto& t : tids)
    while (t.load() == 0) std::this_thread::yield();
  std::printf("pid %d\n", int(getpid()));
  for (int n = 0; n < vcpus; ++n) std::printf("vcpu %d tid %d\n", n, int(tids[std::size_t(n)].load()));
  std::fflush(stdout);
  if (!pidfile.empty()) std::ofstream(pidfile) << getpid() << "\n";

  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!g_stop.load() && (seconds <= 0 || std::chrono::steady_clock::now() < end))
    std::this_thread::sleep_for(std::chrono::milliseconds(std::max(20, idle_ms)));
  g_stop.store(true);
  for (auto& t : threads) t.join();
  if (!pidfile.empty()) unlink(pidfile.c_str());
  return 0;
}
