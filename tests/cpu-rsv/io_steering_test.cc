// Steering device interrupts and unbound workqueues to housekeeping CPUs
// (issue 11) changes host settings: they must come back exactly, when the
// owner lets go and when it was killed (from its journal). And the verdict
// that tells an operator whether capsules are safe against disk I/O.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include <gtest/gtest.h>

#include "capsule/rsv/cpuset.h"
#include "capsule/rsv/io_isolation.h"
#include "capsule/rsv/io_steering.h"
#include "capsule/testkit.h"

using namespace capsule;
using namespace capsule::rsv;

namespace {

// Every setting IoSteering may touch, as it is now.
std::map<std::string, std::string> host_settings() {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/irq", ec))
    if (auto v = read_text_file((e.path() / "smp_affinity_list").string())) out[e.path().string()] = *v;
  if (auto v = read_text_file(IoSteeringPaths{}.workqueue_cpumask)) out["wq"] = *v;
  return out;
}

// Puts back whatever a failed test left changed (belt and braces: the
// code under test is what restores).
class HostSettingsGuard {
 public:
  HostSettingsGuard() : saved_(host_settings()) {}
  ~HostSettingsGuard() {
    for (const auto& [k, v] : saved_)
      (void)write_text_file(k == "wq" ? IoSteeringPaths{}.workqueue_cpumask : k + "/smp_affinity_list", v);
  }
  const std::map<std::string, std::string>& saved() const { return saved_; }

 private:
  std::map<std::string, std::string> saved_;
};

bool can_steer() {
  return ::geteuid() == 0 && online_cpus().size() >= 2 && read_text_file(IoSteeringPaths{}.workqueue_cpumask).ok();
}

}  // namespace

TEST(CpuMask, ParsesAndFormatsTheKernelsHexMasks) {
  EXPECT_EQ(format_cpu_mask({0, 1}), "3");
  EXPECT_EQ(format_cpu_mask({0}), "1");
  EXPECT_EQ(format_cpu_mask({4, 33}), "2,00000010");
  EXPECT_EQ(*parse_cpu_mask("2,00000010"), (std::vector<int>{4, 33}));
  EXPECT_EQ(*parse_cpu_mask("3"), (std::vector<int>{0, 1}));
  auto bad = parse_cpu_mask("0-1");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("'0-1' is not a CPU mask"), std::string::npos);
}

TEST(IoSteering, MovesInterruptsAndWorkqueuesToHousekeepingAndRestoresThem) {
  if (!can_steer()) GTEST_SKIP() << "needs root, 2 CPUs and /sys/devices/virtual/workqueue/cpumask";
  HostSettingsGuard guard;
  const int hk = online_cpus().front();
  {
    auto s = IoSteering::apply({hk});
    ASSERT_TRUE(s.ok()) << s.error().message;
    // The unbound workqueues now run on the housekeeping CPU only.
    EXPECT_EQ(*parse_cpu_mask(*read_text_file(IoSteeringPaths{}.workqueue_cpumask)), std::vector<int>{hk});
    for (const auto& c : (*s)->changed()) {
      if (c.path.find("/irq/") != std::string::npos) {
        EXPECT_EQ(*read_text_file(c.path), std::to_string(hk)) << c.path;
      }
    }
    EXPECT_FALSE((*s)->changed().empty());
    EXPECT_NE((*s)->describe().find("moved to cpu " + std::to_string(hk)), std::string::npos) << (*s)->describe();
  }
  EXPECT_EQ(host_settings(), guard.saved()) << "every interrupt's and the workqueues' affinity is as before";
}

TEST(IoSteering, AKilledOwnersChangesAreUndoneFromItsJournal) {
  if (!can_steer()) GTEST_SKIP() << "needs root, 2 CPUs and /sys/devices/virtual/workqueue/cpumask";
  HostSettingsGuard guard;
  testkit::TempDir dir("rsvio-steer");
  const std::string journal = dir.file("io-steering.journal");
  const int hk = online_cpus().front();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto s = IoSteering::apply({hk}, journal);
    ::kill(::getpid(), SIGKILL);  // dies holding the change: no destructor runs
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));
  // Left changed, and recorded.
  EXPECT_EQ(*parse_cpu_mask(*read_text_file(IoSteeringPaths{}.workqueue_cpumask)), std::vector<int>{hk});
  ASSERT_TRUE(std::filesystem::exists(journal));
  auto n = IoSteering::recover(journal);
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_GE(*n, 1);
  EXPECT_EQ(host_settings(), guard.saved());
  EXPECT_FALSE(std::filesystem::exists(journal)) << "a recovered journal is removed";
  EXPECT_EQ(*IoSteering::recover(journal), 0) << "nothing left to do";
}

TEST(IoSteering, NoHousekeepingCpuIsRefusedAndChangesNothing) {
  const auto before = host_settings();
  auto s = IoSteering::apply({});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("at least one housekeeping CPU"), std::string::npos);
  EXPECT_EQ(host_settings(), before);
}

TEST(IoIsolation, JudgesTheModeTheKernelAndWhereInterruptsLand) {
  IoIsolationFacts f;
  f.config_known = true;
  f.device_irq_cpus = {1};
  f.workqueue_cpus = {0, 1};
  auto v = judge_io_isolation(f, AdmissionMode::kGlobal, {0, 1});
  EXPECT_FALSE(v.safe);
  EXPECT_NE(v.reason.find("no CONFIG_IRQ_TIME_ACCOUNTING"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("global admission"), std::string::npos) << v.reason;
  v = judge_io_isolation(f, AdmissionMode::kPartitioned, {1});
  EXPECT_FALSE(v.safe);
  EXPECT_NE(v.reason.find("device interrupts are delivered to capsule cpu 1"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("unbound workqueues (writeback) may run on capsule cpu 1"), std::string::npos) << v.reason;
  f.device_irq_cpus = {0};
  f.workqueue_cpus = {0};  // steered to the housekeeping core
  v = judge_io_isolation(f, AdmissionMode::kPartitioned, {1});
  EXPECT_TRUE(v.safe) << v.reason;
  EXPECT_FALSE(judge_io_isolation(f, AdmissionMode::kGlobal, {0, 1}).safe);
  f.irq_time_accounting = true;
  EXPECT_TRUE(judge_io_isolation(f, AdmissionMode::kGlobal, {0, 1}).safe);
  // A guest whose vCPU stops are charged to the running thread is unsafe
  // whatever the placement.
  f.guest_without_steal = true;
  v = judge_io_isolation(f, AdmissionMode::kPartitioned, {1});
  EXPECT_FALSE(v.safe);
  EXPECT_NE(v.reason.find("reports no steal time"), std::string::npos) << v.reason;
}
