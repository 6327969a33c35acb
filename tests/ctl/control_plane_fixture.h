// A test fixture with a private control plane: ovsdb-server with a fresh
// Capsule database and a capsuled ("host-a", statistics every 200 ms) on it,
// both stopped when the test ends. On failure the capsuled log and
// `capsule-ctl show` are printed, which is what one reads first.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "capsule/harness.h"
#include "capsule/testkit.h"

namespace capsule::testing {

// A value as `capsule-ctl get` prints it, without quotes and newline.
inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '"')) s.pop_back();
  while (!s.empty() && s.front() == '"') s.erase(s.begin());
  return s;
}

class ControlPlaneTest : public ::testing::Test {
 protected:
  explicit ControlPlaneTest(const std::string& dir_prefix) : dir_(dir_prefix) {}

  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto db = harness::Ovsdb::start(dir_.path());
    ASSERT_TRUE(db.ok()) << db.error().message;
    db_ = std::move(*db);
    auto agent = harness::Capsuled::start(*db_, dir_.path(), "host-a", {"--stats-interval=200"});
    ASSERT_TRUE(agent.ok()) << agent.error().message;
    agent_ = std::move(*agent);
  }
  void TearDown() override {
    if (HasFailure() && agent_) {
      std::cerr << "---- capsuled log ----\n" << harness::run({"/bin/cat", agent_->log_file()}).out;
      std::cerr << "---- datapathd log ----\n" << harness::run({"/bin/cat", agent_->datapathd_log()}).out;
      std::cerr << "---- capsule-ctl show ----\n" << ctl({"show"}).out;
    }
  }
  harness::CmdResult ctl(const std::vector<std::string>& args) { return harness::ctl(*db_, args); }
  // Runs capsule-ctl and requires success.
  std::string ok(const std::vector<std::string>& args) {
    auto r = ctl(args);
    EXPECT_EQ(r.rc, 0) << "capsule-ctl " << (args.empty() ? "" : args.front()) << " failed: " << r.err;
    return r.out;
  }
  // A column (or COLUMN:KEY) of a row, unquoted ("" when absent).
  std::string column(const std::string& table, const std::string& row, const std::string& col) {
    return trim(ctl({"--if-exists", "get", table, row, col}).out);
  }
  // VM `vm`'s status:KEY.
  std::string status(const std::string& vm, const std::string& key) { return column("VM", vm, "status:" + key); }
  // host-a's status:KEY.
  std::string host_status(const std::string& key) { return column("Host", "host-a", "status:" + key); }

  harness::TempDir dir_;
  std::unique_ptr<harness::Ovsdb> db_;
  std::unique_ptr<harness::Capsuled> agent_;
};

// The same, once capsuled has its capsule DPDK datapath (in
// capsule-datapathd) up.
class CapsuleDatapathTest : public ControlPlaneTest {
 protected:
  using ControlPlaneTest::ControlPlaneTest;
  void SetUp() override {
    ControlPlaneTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(wait_datapath()) << ctl({"show"}).out;
  }
  // The datapath thread of a VM ("cpmd-<vm>" in capsule-datapathd), 0 if none.
  pid_t pmd_thread(const std::string& vm) const { return rsv::find_capsule_pmd(agent_->datapathd_pid(), vm); }
  bool wait_datapath() {
    return testkit::wait_until([&] { return host_status("datapath") == "capsule-dpdk"; }, std::chrono::seconds(20));
  }
};

}  // namespace capsule::testing
