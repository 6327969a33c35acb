// The libraries' log: routed where the program says, rate-limited as OVS's
// VLOG_*_RL (a burst, then a few a minute, and a count of what was left out).
#include <gtest/gtest.h>

#include "capsule/log.h"
#include "capsule/log_capture.h"

namespace capsule::log {
namespace {

TEST(Log, GoesWhereTheProgramRoutesIt) {
  testkit::LogCapture capture;
  write(Level::kWarn, "pmd", "VM a: guest connected");
  ASSERT_EQ(capture.lines(), std::vector<std::string>{"WARN|pmd|VM a: guest connected"});
}

TEST(LogRateLimit, ABurstThenAFewAMinuteAndACountOfWhatWasLeftOut) {
  testkit::LogCapture capture;
  RateLimit rl(/*per_minute=*/6, /*burst=*/3);  // one every 10 s
  const int64_t t0 = 1'000'000;
  for (int i = 0; i < 10; ++i) rl.write_at(t0 + i, Level::kWarn, "pmd", "drop " + std::to_string(i));
  EXPECT_EQ(capture.lines(),
            (std::vector<std::string>{"WARN|pmd|drop 0", "WARN|pmd|drop 1", "WARN|pmd|drop 2"}));
  // 9.9 s on: still nothing; at 10 s one message, after the count of the
  // seven left out.
  rl.write_at(t0 + 9'900, Level::kWarn, "pmd", "drop 10");
  EXPECT_EQ(capture.lines().size(), 3u);
  rl.write_at(t0 + 10'000, Level::kWarn, "pmd", "drop 11");
  const auto lines = capture.lines();
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[3],
            "INFO|pmd|Dropped 8 log messages in last 9 seconds (most recently, 0 seconds ago) due to excessive rate");
  EXPECT_EQ(lines[4], "WARN|pmd|drop 11");
  // A quiet minute refills the burst, not more.
  for (int i = 0; i < 5; ++i) rl.write_at(t0 + 100'000 + i, Level::kInfo, "pmd", "again");
  EXPECT_EQ(capture.matching("again").size(), 3u);
}

}  // namespace
}  // namespace capsule::log
