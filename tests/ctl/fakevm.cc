// capsule-fakevm: a process that looks like QEMU to capsule's thread
// discovery: N threads named "CPU <n>/KVM" plus the main thread. The vCPU
// threads do a little work and sleep (a lightly loaded guest), so tests can
// reserve them without loading the machine.
//
//   capsule-fakevm [--vcpus N] [--pidfile PATH] [--work-us US] [--sleep-us US]
//
// Exits on SIGTERM/SIGINT, removing its pidfile.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<bool> stop{false};

void vcpu(int index, long work_us, long sleep_us) {
  char name[16];
  std::snprintf(name, sizeof name, "CPU %d/KVM", index);
  pthread_setname_np(pthread_self(), name);
  volatile unsigned long sink = 0;
  while (!stop) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(work_us);
    while (std::chrono::steady_clock::now() < until) sink = sink + 1;
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
  }
}

}  // namespace

int main(int argc, char** argv) {
  int vcpus = 2;
  long work_us = 100, sleep_us = 10'000;
  std::string pidfile;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--vcpus") vcpus = std::atoi(argv[i + 1]);
    else if (a == "--pidfile") pidfile = argv[i + 1];
    else if (a == "--work-us") work_us = std::atol(argv[i + 1]);
    else if (a == "--sleep-us") sleep_us = std::atol(argv[i + 1]);
    else {
      std::fprintf(stderr, "capsule-fakevm: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  // Block the stop signals in every thread; main waits for them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  std::vector<std::thread> threads;
  for (int i = 0; i < vcpus; ++i) threads.emplace_back(vcpu, i, work_us, sleep_us);
  if (!pidfile.empty()) {
    std::ofstream f(pidfile + ".tmp");
    f << ::getpid() << "\n";
    f.close();
    std::rename((pidfile + ".tmp").c_str(), pidfile.c_str());
  }
  int sig = 0;
  sigwait(&set, &sig);
  stop = true;
  for (auto& t : threads) t.join();
  if (!pidfile.empty()) ::unlink(pidfile.c_str());
  return 0;
}
