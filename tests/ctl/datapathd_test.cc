// The datapath process outlives the agent (issue 9, docs/reliability.md):
// real ovsdb-server, capsuled, capsule-datapathd and emulated VMs
// (capsule-vm) that count what they receive themselves.
//
// - SIGKILL of capsuled: the VMs' traffic keeps flowing while no agent
//   runs; the next capsuled adopts the datapath (same daemon, same PMD
//   threads, ports attached), and traffic is never interrupted for > 2 s;
// - a graceful stop leaves no datapath process and no socket;
// - SIGKILL of capsule-datapathd: status says the datapath is down and
//   since when, capsuled starts a new one, the VMs come back;
// - a port is `attached` only while its VM is connected.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <signal.h>
#include <sstream>
#include <string>
#include <thread>

#include "capsule/harness.h"
#include "capsule/rsv/discovery.h"
#include "capsule/rsv/sched_attr.h"
#include "capsule/testkit.h"
#include "client.h"
#include "control_plane_fixture.h"
#include "emulated_vm.h"

namespace capsule {
namespace {

using namespace std::chrono_literals;
using testing::EmulatedVm;
using nlohmann::json;


bool exists(const std::string& path) {
  struct stat st{};
  return ::lstat(path.c_str(), &st) == 0;
}

class DatapathdTest : public testing::CapsuleDatapathTest {
 protected:
  DatapathdTest() : CapsuleDatapathTest("capsule-dpd-test") {}

  // Two best-effort VMs, a sending 5 kpps of 256-byte frames to b.
  void start_traffic() {
    b_ = std::make_unique<EmulatedVm>(dir_, "b", kMacB, std::vector<std::string>{"--mode", "count"});
    a_ = std::make_unique<EmulatedVm>(dir_, "a", kMacA,
                                      std::vector<std::string>{"--mode", "tx", "--dst", kMacB, "--rate", "5000", "--size", "256"});
    auto r = ctl({"--wait", "add-vm", "a", "pid=" + std::to_string(a_->pid()), "--", "add-port", "a", "a0", a_->socket(),
                  "mac=\"" + std::string(kMacA) + "\"", "--", "add-vm", "b", "pid=" + std::to_string(b_->pid()), "--",
                  "add-port", "b", "b0", b_->socket(), "mac=\"" + std::string(kMacB) + "\""});
    ASSERT_EQ(r.rc, 0) << r.out << r.err;
    ASSERT_TRUE(testkit::wait_until([&] { return b_->counter("rx_to_me") > 1000; }, 20s)) << a_->output() << b_->output();
    ASSERT_TRUE(testkit::wait_until([&] { return column("Port", "b0", "status:state") == "attached"; }, 5s))
        << ctl({"list", "Port", "b0"}).out;
  }
  // b counts more frames within `timeout`.
  bool b_receives(long long frames, std::chrono::milliseconds timeout) {
    const long long before = b_->counter("rx_to_me");
    return testkit::wait_until([&] { return b_->counter("rx_to_me") > before + frames; }, timeout);
  }

  static constexpr const char* kMacA = "02:00:00:00:00:0a";
  static constexpr const char* kMacB = "02:00:00:00:00:0b";
  std::unique_ptr<EmulatedVm> a_, b_;
};

TEST_F(DatapathdTest, AgentSigkillKeepsTrafficFlowingAndTheNextAgentAdoptsTheDatapath) {
  start_traffic();
  if (HasFatalFailure()) return;
  const pid_t daemon = agent_->datapathd_pid();
  ASSERT_NE(daemon, 0);
  const pid_t pmd_a = pmd_thread("a"), pmd_b = pmd_thread("b");
  ASSERT_NE(pmd_a, 0);
  ASSERT_NE(pmd_b, 0);

  const double killed_at = double(b_->counter("elapsed_ms"));
  agent_->kill();
  // No agent: b keeps counting what a sends (2 s worth at 5 kpps).
  EXPECT_TRUE(b_receives(10'000, 10s)) << b_->output();
  EXPECT_EQ(agent_->datapathd_pid(), daemon) << "the datapath died with the agent";

  ASSERT_TRUE(agent_->restart(*db_).ok());
  // It adopts: the same daemon, the same PMD threads, status as before.
  ASSERT_TRUE(wait_datapath()) << ctl({"show"}).out;
  EXPECT_EQ(agent_->datapathd_pid(), daemon);
  EXPECT_EQ(pmd_thread("a"), pmd_a);
  EXPECT_EQ(pmd_thread("b"), pmd_b);
  for (const char* vm : {"a", "b"})
    EXPECT_TRUE(testkit::wait_until([&] { return status(vm, "state") == "running"; }, 10s))
        << ctl({"list", "VM", vm}).out;
  // Port status is written afresh by the new agent (its pid in the Host
  // row, its first statistics sample) and says attached.
  EXPECT_TRUE(testkit::wait_until([&] {
    return column("Port", "a0", "status:state") == "attached" && column("Port", "b0", "status:state") == "attached";
  }, 5s)) << ctl({"list", "Port"}).out;
  EXPECT_NE(harness::run({"/bin/cat", agent_->log_file()}).out.find("adopted the datapath in capsule-datapathd (pid " +
                                                                    std::to_string(daemon) + ") (same settings): 2 VMs"),
            std::string::npos);
  // Traffic never stopped for more than 2 s (the VM's 200-ms reports).
  ASSERT_TRUE(b_receives(2'000, 5s)) << b_->output();
  const double gap = b_->longest_gap_ms("rx_to_me", killed_at - 1000);
  EXPECT_LE(gap, 2000) << "b received nothing for " << gap << " ms around the agent's crash";
  std::cout << "[ info     ] longest pause in b's traffic around the crash: " << gap << " ms\n";
}

// With reservations: the adopted datapath keeps the PMD thread (same tid),
// and the agent's journal adopts that thread's reservation.
TEST_F(DatapathdTest, AgentSigkillKeepsTheReservedPmdThreadAndItsBudget) {
  b_ = std::make_unique<EmulatedVm>(dir_, "b", kMacB, std::vector<std::string>{"--mode", "count"});
  a_ = std::make_unique<EmulatedVm>(dir_, "a", kMacA,
                                    std::vector<std::string>{"--mode", "tx", "--dst", kMacB, "--rate", "5000", "--size", "256"});
  auto r = ctl({"--wait", "add-vm", "a", "pid=" + std::to_string(a_->pid()), "--", "--net=4ms", "set-rsv", "a", "4ms",
                "20ms", "--", "add-port", "a", "a0", a_->socket(), "mac=\"" + std::string(kMacA) + "\"", "--", "add-vm",
                "b", "pid=" + std::to_string(b_->pid()), "--", "--net=4ms", "set-rsv", "b", "4ms", "20ms", "--",
                "add-port", "b", "b0", b_->socket(), "mac=\"" + std::string(kMacB) + "\""});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  ASSERT_TRUE(testkit::wait_until([&] {
    return status("b", "state") == "running" && status("a", "state") == "running";
  }, 20s));
  ASSERT_TRUE(b_receives(1000, 20s)) << b_->output();
  const pid_t pmd_b = pmd_thread("b");
  ASSERT_TRUE(testkit::wait_until([&] { return rsv::get_sched_params(pmd_b)->is_deadline(); }, 5s));

  const double killed_at = double(b_->counter("elapsed_ms"));
  agent_->kill();
  EXPECT_TRUE(b_receives(10'000, 10s)) << b_->output();
  ASSERT_TRUE(agent_->restart(*db_).ok());
  ASSERT_TRUE(testkit::wait_until([&] { return status("b", "state") == "running"; }, 10s))
      << ctl({"list", "VM", "b"}).out;
  EXPECT_EQ(pmd_thread("b"), pmd_b);
  auto p = rsv::get_sched_params(pmd_b);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->policy, rsv::kSchedDeadline);
  EXPECT_EQ(p->runtime, 4ms);
  EXPECT_EQ(p->period, 20ms);
  EXPECT_TRUE(testkit::wait_until([&] { return column("Port", "b0", "status:state") == "attached"; }, 5s));
  ASSERT_TRUE(b_receives(2'000, 5s)) << b_->output();
  EXPECT_LE(b_->longest_gap_ms("rx_to_me", killed_at - 1000), 2000);
}

TEST_F(DatapathdTest, GracefulStopLeavesNoDatapathProcessAndNoSocket) {
  start_traffic();
  if (HasFatalFailure()) return;
  const pid_t daemon = agent_->datapathd_pid();
  ASSERT_NE(daemon, 0);
  ASSERT_TRUE(exists(agent_->datapathd_socket()));
  // SIGTERM (what `ovs-appctl exit` and capsule-service stop also reach):
  // capsuled returns once the daemon is gone.
  EXPECT_EQ(agent_->stop(), 0);
  EXPECT_FALSE(harness::process_alive(daemon));
  EXPECT_FALSE(exists(agent_->datapathd_socket()));
  EXPECT_FALSE(exists(dir_.file("datapathd.pid")));
  // The agent took the VMs' ports off first (their threads restored), then
  // asked the daemon to stop.
  const std::string log = harness::run({"/bin/cat", agent_->datapathd_log()}).out;
  EXPECT_NE(log.find("VM a: removed"), std::string::npos) << log;
  EXPECT_NE(log.find("VM b: removed"), std::string::npos) << log;
  EXPECT_NE(log.find("|datapathd|INFO|stopping (shutdown request)"), std::string::npos) << log;
  // The next agent starts a new one.
  ASSERT_TRUE(agent_->restart(*db_).ok());
  ASSERT_TRUE(testkit::wait_until([&] { return agent_->datapathd_pid() != 0; }, 20s));
  EXPECT_NE(agent_->datapathd_pid(), daemon);
}

TEST_F(DatapathdTest, KilledDatapathDaemonIsReportedAndReplaced) {
  start_traffic();
  if (HasFatalFailure()) return;
  const pid_t daemon = agent_->datapathd_pid();
  ASSERT_NE(daemon, 0);
  ::kill(daemon, SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  // capsuled notices at once, starts a new daemon, and the Host row keeps
  // what happened and when.
  ASSERT_TRUE(testkit::wait_until([&] {
    const pid_t now = agent_->datapathd_pid();
    return now != 0 && now != daemon && host_status("datapath") == "capsule-dpdk";
  }, 20s)) << ctl({"list", "Host"}).out;
  const std::string last_exit = host_status("datapath_last_exit");
  EXPECT_NE(last_exit.find("capsule-datapathd (pid " + std::to_string(daemon) + ") exited at 20"), std::string::npos)
      << last_exit;
  EXPECT_NE(last_exit.find("; replaced at 20"), std::string::npos) << last_exit;
  // The VMs come back on the new daemon: their ports are reconnected by
  // capsule (vhost client) to the sockets the VMs serve.
  const bool back = b_receives(1000, 20s);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  std::cout << "[ info     ] traffic " << (back ? "back" : "NOT back") << " " << secs
            << " s after SIGKILL of capsule-datapathd\n";
  EXPECT_TRUE(back) << "b: " << b_->output() << "\na: " << a_->output() << "\n" << ctl({"list", "Port"}).out;
  EXPECT_TRUE(testkit::wait_until([&] { return column("Port", "b0", "status:state") == "attached"; }, 5s))
      << ctl({"list", "Port", "b0"}).out;
}

TEST_F(DatapathdTest, PortIsAttachedOnlyWhileItsVmIsConnected) {
  // A port whose VM never came: waiting, since when it was made.
  auto r = ctl({"--wait", "add-vm", "c", "pid=" + std::to_string(::getpid()), "--", "add-port", "c", "c0",
                dir_.file("c.sock"), "mac=\"02:00:00:00:00:0c\""});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_TRUE(testkit::wait_until([&] { return column("Port", "c0", "status:state") == "waiting"; }, 5s))
      << ctl({"list", "Port", "c0"}).out;
  EXPECT_EQ(column("Port", "c0", "status:reason").rfind("the VM has not connected to " + dir_.file("c.sock") + " (since 20", 0),
            0u)
      << column("Port", "c0", "status:reason");

  start_traffic();  // b0 attached
  if (HasFatalFailure()) return;
  EXPECT_FALSE(column("Port", "b0", "status:connected_at").empty());
  b_->finish();  // the VM goes away
  EXPECT_TRUE(testkit::wait_until([&] { return column("Port", "b0", "status:state") == "waiting"; }, 5s))
      << ctl({"list", "Port", "b0"}).out;
  EXPECT_EQ(column("Port", "b0", "status:reason").rfind("VM disconnected at 20", 0), 0u) << column("Port", "b0", "status:reason");
  EXPECT_NE(harness::appctl(*agent_, {"capsule/show"}).out.find("port b0: waiting (VM disconnected at 20"),
            std::string::npos)
      << harness::appctl(*agent_, {"capsule/show"}).out;
}

// The daemon refuses what it cannot do with the client's own text, and a
// refusal changes nothing.
TEST_F(DatapathdTest, DaemonRefusesBadRequestsAndKeepsWhatIsInForce) {
  start_traffic();
  if (HasFatalFailure()) return;
  auto c = datapathd::Client::connect(agent_->datapathd_socket());
  ASSERT_TRUE(c.ok()) << c.error().message;
  const pid_t a_pmd = pmd_thread("a"), b_pmd = pmd_thread("b");
  ASSERT_NE(a_pmd, 0);
  auto before = c->call({{"op", "hello"}});
  ASSERT_TRUE(before.ok()) << before.error().message;
  auto bad = c->call({{"op", "add_vm"}, {"vm", {{"vm", "a"}, {"ports", "not a list"}}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("malformed VM configuration: vm.ports must be an array"), std::string::npos) << bad.error().message;
  bad = c->call({{"op", "frobnicate"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("unknown op \"frobnicate\""), std::string::npos);
  bad = c->call({{"op", "configure"}, {"settings", {{"type", "capsule"}, {"uplink", {{"bogus", "1"}}}}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("unknown key 'bogus'"), std::string::npos) << bad.error().message;
  // Fields of the wrong JSON type are refused too, naming the field; the
  // daemon lives on.
  for (const auto& [req, says] :
       {std::pair{json{{"op", "pmd_stats_show"}, {"vm", 1}}, std::string("pmd_stats_show needs \"vm\": the VM's name")},
        std::pair{json{{"op", "remove_vm"}, {"vm", {"a"}}}, std::string("remove_vm needs \"vm\": the VM's name")},
        std::pair{json{{"op", "add_vm"}, {"vm", {{"vm", "a"}, {"ports", {{{"name", 5}}}}}}},
                  std::string("malformed VM configuration: vm.ports[0].name must be a string")}}) {
    bad = c->call(req);
    ASSERT_FALSE(bad.ok()) << req.dump();
    EXPECT_NE(bad.error().message.find(says), std::string::npos) << req.dump() << ": " << bad.error().message;
  }
  // What is in force is what it was: the same VMs and configurations, the
  // same datapath threads; b still receives.
  auto after = c->call({{"op", "hello"}});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->at("vms"), before->at("vms"));
  EXPECT_EQ(after->at("vms").size(), 2u);
  EXPECT_EQ(pmd_thread("a"), a_pmd);
  EXPECT_EQ(pmd_thread("b"), b_pmd);
  EXPECT_TRUE(b_receives(1000, 5s));
}

// A daemon that is stopped or wedged must not hold capsuled, which serves
// every other VM: connecting to a socket that accepts nothing, and a call
// nobody answers, end with ETIMEDOUT within the client's timeout.
TEST(DatapathdClient, AWedgedDaemonTimesOutInsteadOfHoldingTheAgent) {
  testkit::TempDir dir;
  const std::string path = dir.file("wedged.sock");
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(::listen(listener, 0), 0);
  // Fill its backlog: nobody accepts.
  std::vector<int> queued;
  for (int i = 0; i < 64; ++i) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      ::close(fd);
      break;
    }
    queued.push_back(fd);
  }
  ASSERT_FALSE(queued.empty());
  auto t0 = std::chrono::steady_clock::now();
  auto c = datapathd::Client::connect(path, 300ms);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().errnum, ETIMEDOUT) << c.error().message;
  EXPECT_NE(c.error().message.find("accepted no connection within 300 ms"), std::string::npos) << c.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);

  // Connected (room in the backlog again), but nobody answers.
  for (int fd : queued) {
    ::close(fd);
    ::close(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  }
  auto quiet = datapathd::Client::connect(path, 300ms);
  ASSERT_TRUE(quiet.ok()) << quiet.error().message;
  t0 = std::chrono::steady_clock::now();
  auto r = quiet->call({{"op", "hello"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().errnum, ETIMEDOUT) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_FALSE(quiet->connected()) << "a late answer must not be read as the next call's";
  ::close(listener);
}

}  // namespace
}  // namespace capsule
