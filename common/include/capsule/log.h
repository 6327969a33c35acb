// The libraries' log (cpu-rsv, dpdk-pmd): what they do that a person should
// know and no caller hears of (a guest connected, frames dropped, a rollback
// that failed, a wait that timed out).
//
// A library does not own the process's output: the program routes the log
// with set_sink() (capsuled to OVS's vlog, capsule-datapathd to its log
// file); without a sink, lines go to stderr in OVS's format. Messages a
// guest or a busy host can repeat go through a RateLimit, as OVS's
// VLOG_*_RL do: a burst, then a few a minute, and the count of what was left
// out in the next line that is written.
//
// Never call this from a PMD thread's round: a write is a system call inside
// the VM's reservation. Poll threads count; a control thread reports.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

#include "capsule/wall_clock.h"

namespace capsule::log {

enum class Level { kErr, kWarn, kInfo, kDbg };

inline const char* level_name(Level l) {
  static const char* names[] = {"ERR", "WARN", "INFO", "DBG"};
  return names[int(l)];
}

// `module` names the library part ("pmd", "rsv"), like a vlog module.
using Sink = void (*)(Level level, const char* module, const std::string& message);

namespace detail {
inline void stderr_sink(Level level, const char* module, const std::string& message) {
  const std::string line = format_utc(unix_ms_now()) + "|" + module + "|" + level_name(level) + "|" + message + "\n";
  std::fputs(line.c_str(), stderr);
}
inline std::atomic<Sink>& sink() {
  static std::atomic<Sink> s{&stderr_sink};
  return s;
}
}  // namespace detail

// For tools whose output is for a person (tables, benchmarks): warnings and
// errors only, as "module: LEVEL: text"; INFO lines (guests attaching, ...)
// would interleave with the tables.
inline void warnings_to_stderr(Level level, const char* module, const std::string& message) {
  if (level <= Level::kWarn) std::fputs((std::string(module) + ": " + level_name(level) + ": " + message + "\n").c_str(), stderr);
}

// Set once by the program before it starts threads that log; nullptr puts
// stderr back. Returns the sink it replaces.
inline Sink set_sink(Sink s) { return detail::sink().exchange(s ? s : &detail::stderr_sink); }

inline void write(Level level, const char* module, const std::string& message) {
  detail::sink().load()(level, module, message);
}

// OVS's vlog_rate_limit: `burst` messages at once, refilled at `per_minute`.
// Thread-safe (control threads only: it takes a mutex).
class RateLimit {
 public:
  constexpr RateLimit(unsigned per_minute = 5, unsigned burst = 20) : per_minute_(per_minute), burst_(burst) {}

  // Writes `message` if the limit allows it, preceded (when messages were
  // left out) by how many and over how long, in OVS's words.
  void write(Level level, const char* module, const std::string& message) {
    write_at(steady_ms(), level, module, message);
  }
  // write() at a given steady-clock instant, in ms (tests).
  void write_at(int64_t now, Level level, const char* module, const std::string& message) {
    std::string dropped;
    {
      std::lock_guard lk(mu_);
      if (!started_) {
        started_ = true;
        tokens_ = burst_;
        last_refill_ms_ = now;
      }
      const int64_t refill_every_ms = 60000 / (per_minute_ ? per_minute_ : 1);
      if (const int64_t n = (now - last_refill_ms_) / refill_every_ms; n > 0) {
        tokens_ = unsigned(std::min<int64_t>(burst_, tokens_ + n));
        last_refill_ms_ += n * refill_every_ms;
      }
      if (tokens_ == 0) {
        if (n_dropped_++ == 0) first_dropped_ms_ = now;
        last_dropped_ms_ = now;
        return;
      }
      --tokens_;
      if (n_dropped_ > 0) {
        dropped = "Dropped " + std::to_string(n_dropped_) + " log messages in last " +
                  std::to_string((now - first_dropped_ms_) / 1000) + " seconds (most recently, " +
                  std::to_string((now - last_dropped_ms_) / 1000) + " seconds ago) due to excessive rate";
        n_dropped_ = 0;
      }
    }
    if (!dropped.empty()) log::write(Level::kInfo, module, dropped);
    log::write(level, module, message);
  }

 private:
  static int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  std::mutex mu_;
  unsigned per_minute_, burst_;
  bool started_ = false;
  unsigned tokens_ = 0;
  int64_t last_refill_ms_ = 0;
  unsigned n_dropped_ = 0;
  int64_t first_dropped_ms_ = 0, last_dropped_ms_ = 0;
};

}  // namespace capsule::log
