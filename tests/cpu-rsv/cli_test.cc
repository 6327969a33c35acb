// capsule-rsv, the reservation CLI: a reservation lasts while the command
// runs and the VM's threads are restored when it exits; bad input is refused
// with the reason and changes nothing.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "capsule/rsv/discovery.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/testkit.h"

using namespace capsule;
using namespace capsule::rsv;
using namespace std::chrono_literals;

namespace {

using testkit::read_file;

class RsvCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vm_ = testkit::ChildProcess::spawn({testkit::sibling_binary("capsule-fakevm"), "--vcpus", "2", "--load", "busy"},
                                       "/dev/null");
    ASSERT_TRUE(vm_);
    ASSERT_TRUE(testkit::wait_until([&] {
      auto t = discover_threads(vm_->pid());
      if (t) vcpus_ = threads_with_role(*t, ThreadRole::kVcpu);
      return vcpus_.size() == 2;
    }, 5s));
  }
  void TearDown() override { ::unlink(out_.c_str()); }

  std::unique_ptr<testkit::ChildProcess> vm_;
  std::vector<DiscoveredThread> vcpus_;
  const std::string out_ = "/tmp/capsule-rsv-cli-test-" + std::to_string(::getpid()) + ".out";
};

}  // namespace

TEST_F(RsvCliTest, ReservationLastsWhileTheCommandRuns) {
  auto cli = testkit::ChildProcess::spawn({testkit::sibling_binary("capsule-rsv"), "reserve", "--pid",
                                           std::to_string(vm_->pid()), "--runtime", "4ms", "--period", "20ms",
                                           "--seconds", "1"},
                                          out_);
  ASSERT_TRUE(cli);
  ASSERT_TRUE(testkit::wait_until([&] {
    for (const auto& v : vcpus_) {
      auto p = get_sched_params(v.tid);
      if (!p || !p->is_deadline()) return false;
    }
    return true;
  }, 3s)) << read_file(out_);
  auto p = get_sched_params(vcpus_[1].tid);
  EXPECT_EQ(p->runtime, 4ms);
  EXPECT_EQ(p->period, 20ms);
  const int status = cli->wait_exit(5s);
  ASSERT_TRUE(WIFEXITED(status)) << read_file(out_);
  EXPECT_EQ(WEXITSTATUS(status), 0) << read_file(out_);
  for (const auto& v : vcpus_) EXPECT_EQ(get_sched_params(v.tid)->policy, SCHED_OTHER);
  EXPECT_NE(read_file(out_).find("threads restored"), std::string::npos);
}

TEST_F(RsvCliTest, SigtermEndsTheReservationAndRestores) {
  auto cli = testkit::ChildProcess::spawn({testkit::sibling_binary("capsule-rsv"), "reserve", "--pid",
                                           std::to_string(vm_->pid()), "--runtime", "2ms", "--period", "20ms"},
                                          out_);
  ASSERT_TRUE(testkit::wait_until([&] { return get_sched_params(vcpus_[0].tid)->is_deadline(); }, 3s))
      << read_file(out_);
  const int status = cli->terminate();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  for (const auto& v : vcpus_) EXPECT_EQ(get_sched_params(v.tid)->policy, SCHED_OTHER);
}

TEST_F(RsvCliTest, BudgetAbovePeriodIsRefusedAndChangesNothing) {
  auto cli = testkit::ChildProcess::spawn({testkit::sibling_binary("capsule-rsv"), "reserve", "--pid",
                                           std::to_string(vm_->pid()), "--runtime", "30ms", "--period", "20ms"},
                                          out_);
  const int status = cli->wait_exit(5s);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string out = read_file(out_);
  EXPECT_NE(out.find("budget 30 ms is larger than the period 20 ms"), std::string::npos) << out;
  for (const auto& v : vcpus_) EXPECT_EQ(get_sched_params(v.tid)->policy, SCHED_OTHER);
}

TEST_F(RsvCliTest, UnknownProcessIsRefused) {
  auto cli = testkit::ChildProcess::spawn({testkit::sibling_binary("capsule-rsv"), "reserve", "--pid", "999999999",
                                           "--runtime", "2ms", "--period", "20ms"},
                                          out_);
  const int status = cli->wait_exit(5s);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(read_file(out_).find("process 999999999 does not exist"), std::string::npos) << read_file(out_);
}

TEST_F(RsvCliTest, MalformedNumbersAreRefusedNamingTheOptionAndChangeNothing) {
  // atoi read "12ab" as process 12 and "x" seconds as 0 (no time limit).
  const std::string pid = std::to_string(vm_->pid());
  for (const auto& [args, want] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--pid", pid + "ab"}, "--pid: '" + pid + "ab' is not a process id"},
           {{"--pid", "-1"}, "--pid: '-1' is not a process id"},
           {{"--pid", pid, "--seconds", "x"}, "--seconds: 'x' is not a number of seconds >= 0"}}) {
    std::vector<std::string> argv = {testkit::sibling_binary("capsule-rsv"), "reserve"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--runtime", "2ms", "--period", "20ms"});
    auto cli = testkit::ChildProcess::spawn(argv, out_);
    const int status = cli->wait_exit(5s);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 1);
    EXPECT_NE(read_file(out_).find(want), std::string::npos) << read_file(out_);
    for (const auto& v : vcpus_) EXPECT_EQ(get_sched_params(v.tid)->policy, SCHED_OTHER);
  }
}
