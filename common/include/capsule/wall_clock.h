// Wall-clock instants as status texts show them: Unix milliseconds inside
// capsule (they cross process boundaries), ISO 8601 UTC for people.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

namespace capsule {

inline int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "2026-12-01T21:03:04.123Z"; "never" for 0.
inline std::string format_utc(int64_t unix_ms) {
  if (unix_ms <= 0) return "never";
  const std::time_t secs = std::time_t(unix_ms / 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[48];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[64];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, int(unix_ms % 1000));
  return out;
}

}  // namespace capsule
