// A thread pinned to one core can be SCHED_DEADLINE inside a capsule
// partition, and the partition is gone afterwards.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "capsule/rsv/manager.h"
#include "capsule/rsv/partition.h"
#include "capsule/rsv/reservation.h"
#include "capsule/testkit.h"

using namespace capsule;
using namespace capsule::rsv;
using namespace std::chrono_literals;

namespace {

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

class PartitionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs_ = CpusetFs::detect();
    if (fs_.kind() != CpusetFs::Kind::kV1) GTEST_SKIP() << "needs the cgroup v1 cpuset controller";
    if (online_cpus().size() < 2) GTEST_SKIP() << "needs 2 CPUs (one stays with the system)";
    if (auto f = PartitionSet::foreign_cpuset_holding(online_cpus().back(), fs_); !f.empty())
      GTEST_SKIP() << "cpuset " << f << " holds the last core: no exclusive partition can be made on this host";
    // A partition left by a killed run would be taken for this test's own.
    ASSERT_EQ(PartitionSet::root_split(fs_), "") << "partition tests start from an unpartitioned host";
    root_lb_ = *read_text_file(fs_.path("/") + "/cpuset.sched_load_balance");
    cpu_ = online_cpus().back();
    set_up_ = true;
  }
  void TearDown() override {
    if (!set_up_) return;  // skipped
    EXPECT_FALSE(exists(fs_.path(PartitionSet::partition_name(cpu_)))) << "partition left behind";
    EXPECT_FALSE(exists(fs_.path("/capsule-system"))) << "capsule-system left behind";
    EXPECT_EQ(*read_text_file(fs_.path("/") + "/cpuset.sched_load_balance"), root_lb_);
  }
  CpusetFs fs_;
  std::string root_lb_;
  int cpu_ = 1;
  bool set_up_ = false;
};

}  // namespace

TEST_F(PartitionTest, PinnedThreadBecomesDeadlineInsideAPartition) {
  testkit::BusyThread t("pmd");
  cpu_set_t before;
  CPU_ZERO(&before);
  sched_getaffinity(t.tid(), sizeof before, &before);
  {
    PartitionSet parts(fs_);
    auto r = VmReservation::apply(VmReservationSpec{"vm1", 20ms, 0ns, false, {{t.tid(), 4ms, cpu_, "pmd"}}}, &parts);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*fs_.thread_cpuset(t.tid()), PartitionSet::partition_name(cpu_));
    auto p = get_sched_params(t.tid());
    EXPECT_EQ(p->policy, kSchedDeadline);
    cpu_set_t now;
    CPU_ZERO(&now);
    sched_getaffinity(t.tid(), sizeof now, &now);
    EXPECT_EQ(affinity_cpus(now), std::vector<int>{cpu_});
    EXPECT_EQ(*read_text_file(fs_.path(PartitionSet::partition_name(cpu_)) + "/cpuset.cpu_exclusive"), "1");
    EXPECT_EQ(*read_text_file(fs_.path("/") + "/cpuset.sched_load_balance"), "0");
    // What `capsule-rsv cleanup` reports as in use, with the thread in it.
    const auto parts_now = PartitionSet::existing(fs_);
    ASSERT_EQ(parts_now.size(), 1u);
    EXPECT_EQ(parts_now[0].name, PartitionSet::partition_name(cpu_));
    EXPECT_EQ(parts_now[0].tasks, std::vector<pid_t>{t.tid()});
    EXPECT_NE(PartitionSet::root_split(fs_).find(PartitionSet::partition_name(cpu_)), std::string::npos);

    ASSERT_TRUE((*r)->release());
    EXPECT_EQ(*fs_.thread_cpuset(t.tid()), "/");
    EXPECT_EQ(get_sched_params(t.tid())->policy, SCHED_OTHER);
    cpu_set_t after;
    CPU_ZERO(&after);
    sched_getaffinity(t.tid(), sizeof after, &after);
    EXPECT_TRUE(CPU_EQUAL(&before, &after));
    EXPECT_FALSE(exists(fs_.path(PartitionSet::partition_name(cpu_))));
  }
}

TEST_F(PartitionTest, PartitionedManagerPlacesOnTheCapsuleCore) {
  testkit::BusyThread v("vcpu"), p("pmd");
  ReservationManager mgr(AdmissionConfig{AdmissionMode::kPartitioned, PlacementPolicy::kWorstFit, -1, {cpu_}});
  auto d = mgr.reserve(VmReservationSpec{"vm1", 20ms, 0ns, false, {{v.tid(), 6ms, -1, "vcpu0"}, {p.tid(), 4ms, -1, "pmd"}}});
  ASSERT_TRUE(d) << d.error().message;
  for (const auto& t : d->threads) EXPECT_EQ(t.cpu, cpu_);
  EXPECT_EQ(*fs_.thread_cpuset(v.tid()), PartitionSet::partition_name(cpu_));
  EXPECT_EQ(get_sched_params(p.tid())->policy, kSchedDeadline);
  // The core is full at 0.95: a further 80 % thread is refused, naming the core.
  testkit::BusyThread w("vcpu2");
  auto r = mgr.reserve(VmReservationSpec{"vm2", 20ms, 0ns, false, {{w.tid(), 16ms, -1, "vcpu0"}}});
  ASSERT_FALSE(r);
  const std::string booked = format_percent(0.5 + fair_server_bandwidth());
  EXPECT_NE(r.error().message.find("core " + std::to_string(cpu_) + ": " + booked + " booked"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(*fs_.thread_cpuset(w.tid()), "/");
  mgr.release_all();
  EXPECT_EQ(*fs_.thread_cpuset(v.tid()), "/");
}

TEST_F(PartitionTest, TheLastSystemCoreCannotBeTaken) {
  PartitionSet parts(fs_);
  auto a = parts.acquire(cpu_);
  ASSERT_TRUE(a) << a.error().message;
  auto b = parts.acquire(online_cpus().front());
  ASSERT_FALSE(b);
  EXPECT_NE(b.error().message.find("last core"), std::string::npos) << b.error().message;
  EXPECT_TRUE(parts.release(cpu_));
}

TEST_F(PartitionTest, StaleCpusetsAreCleanedUp) {
  // What a crashed owner leaves behind, made by hand: an empty partition, a
  // capsule-system sibling and the root's load balancing switched off.
  const std::string root = fs_.path("/");
  const std::string part = fs_.path(PartitionSet::partition_name(cpu_));
  const std::string sys = fs_.path("/capsule-system");
  const std::string mems = *read_text_file(root + "/cpuset.mems");
  ASSERT_EQ(::mkdir(sys.c_str(), 0755), 0);
  ASSERT_TRUE(write_text_file(sys + "/cpuset.cpus", std::to_string(online_cpus().front())));
  ASSERT_EQ(::mkdir(part.c_str(), 0755), 0);
  ASSERT_TRUE(write_text_file(part + "/cpuset.cpus", std::to_string(cpu_)));
  ASSERT_TRUE(write_text_file(part + "/cpuset.mems", mems));
  ASSERT_TRUE(write_text_file(part + "/cpuset.cpu_exclusive", "1"));
  ASSERT_TRUE(write_text_file(root + "/cpuset.sched_load_balance", "0"));

  // A test of global admission, meeting this, says what is wrong and the cure.
  const std::string split = PartitionSet::root_split(fs_);
  EXPECT_NE(split.find(PartitionSet::partition_name(cpu_) + " (no tasks"), std::string::npos) << split;
  EXPECT_NE(split.find("capsule-rsv cleanup"), std::string::npos) << split;

  auto removed = PartitionSet::cleanup_stale(fs_);
  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_EQ(removed->size(), 2u);
  EXPECT_EQ(PartitionSet::root_split(fs_), "");
  // TearDown checks both are gone and balancing is back.
}

TEST_F(PartitionTest, ACpusetOfSomeoneElseOnTheCoreIsNamedInTheRefusal) {
  // As libvirt's /machine: a sibling cpuset that holds every core.
  const std::string foreign = fs_.path("/cap-test-foreign");
  ::rmdir(foreign.c_str());  // a crashed run's
  ASSERT_EQ(::mkdir(foreign.c_str(), 0755), 0) << std::strerror(errno);
  const bool made = write_text_file(foreign + "/cpuset.cpus", format_cpu_list(online_cpus())).ok() &&
                    write_text_file(foreign + "/cpuset.mems", *read_text_file(fs_.path("/") + "/cpuset.mems")).ok();
  Result<std::string> r = Error{"not tried", 0};
  if (made) {
    PartitionSet set(fs_);
    r = set.acquire(cpu_);
  }
  ::rmdir(foreign.c_str());
  ASSERT_TRUE(made);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("cpuset /cap-test-foreign (cpus " + format_cpu_list(online_cpus()) + ") also holds core " +
                                   std::to_string(cpu_)),
            std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("global admission mode"), std::string::npos) << r.error().message;
}
