// Thread discovery finds QEMU's vCPU, emulator and I/O threads from a pid,
// OVS PMD threads, and capsule's own datapath threads.
#include <gtest/gtest.h>
#include <pthread.h>
#include <unistd.h>

#include <fstream>

#include "capsule/rsv/discovery.h"
#include "capsule/testkit.h"

using namespace capsule;
using namespace capsule::rsv;
using namespace std::chrono_literals;

TEST(Discovery, FindsQemuThreadsOfAnEmulatedVm) {
  const std::string pidfile = "/tmp/capsule-discovery-test.pid";
  auto vm = testkit::ChildProcess::spawn({testkit::sibling_binary("capsule-fakevm"), "--vcpus", "3", "--accel", "TCG",
                                          "--iothreads", "1", "--load", "idle", "--pidfile", pidfile},
                                         "/dev/null");
  ASSERT_TRUE(vm);
  std::vector<DiscoveredThread> all;
  ASSERT_TRUE(testkit::wait_until([&] {
    auto r = discover_threads(vm->pid());
    if (r) all = *r;
    return threads_with_role(all, ThreadRole::kVcpu).size() == 3 &&
           !threads_with_role(all, ThreadRole::kIoThread).empty();
  }, 5s));
  auto vcpus = threads_with_role(all, ThreadRole::kVcpu);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(vcpus[std::size_t(i)].index, i);
    EXPECT_EQ(vcpus[std::size_t(i)].comm, "CPU " + std::to_string(i) + "/TCG");
  }
  auto emu = threads_with_role(all, ThreadRole::kEmulator);
  ASSERT_EQ(emu.size(), 1u);
  EXPECT_EQ(emu[0].tid, vm->pid());
  EXPECT_EQ(threads_with_role(all, ThreadRole::kIoThread)[0].comm, "IO iothread0");

  ASSERT_TRUE(testkit::wait_until([&] { return bool(read_pidfile(pidfile)); }, 5s));
  EXPECT_EQ(*read_pidfile(pidfile), vm->pid());
  vm->terminate();
  EXPECT_FALSE(discover_threads(vm->pid()));
  auto gone = read_pidfile(pidfile);
  EXPECT_FALSE(gone);
}

TEST(Discovery, FindsOvsPmdAndCapsulePmdThreadsByName) {
  testkit::BusyThread ovs_pmd("pmd-c01/id:7"), our_pmd("cpmd-vm1"), other("worker");
  auto all = discover_threads(getpid());
  ASSERT_TRUE(all) << all.error().message;
  auto pmds = threads_with_role(*all, ThreadRole::kOvsPmd);
  ASSERT_EQ(pmds.size(), 1u);
  EXPECT_EQ(pmds[0].tid, ovs_pmd.tid());
  EXPECT_EQ(pmds[0].index, 1);  // the core OVS pinned it to
  auto ours = threads_with_role(*all, ThreadRole::kCapsulePmd);
  ASSERT_EQ(ours.size(), 1u);
  EXPECT_EQ(ours[0].tid, our_pmd.tid());
}

TEST(Discovery, ClassifiesNames) {
  EXPECT_EQ(classify_thread(100, 101, "CPU 12/KVM").role, ThreadRole::kVcpu);
  EXPECT_EQ(classify_thread(100, 101, "CPU 12/KVM").index, 12);
  EXPECT_EQ(classify_thread(100, 101, "CPU x/KVM").role, ThreadRole::kOther);
  EXPECT_EQ(classify_thread(100, 100, "qemu-system-x86").role, ThreadRole::kEmulator);
  EXPECT_EQ(classify_thread(100, 105, "vhost-100").role, ThreadRole::kVhostWorker);
  EXPECT_EQ(classify_thread(100, 105, "vhost-999").role, ThreadRole::kOther);
}

TEST(Discovery, MissingProcessIsAClearError) {
  auto r = discover_threads(999999999);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("does not exist"), std::string::npos);
  auto p = read_pidfile("/nonexistent/capsule.pid");
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("/nonexistent/capsule.pid"), std::string::npos);
}
