// Captures what the libraries log (capsule/log.h) while it lives, and puts
// the previous route back when it goes, whatever the test did.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "capsule/log.h"

namespace capsule::testkit {

class LogCapture {
 public:
  LogCapture() {
    clear();
    previous_ = log::set_sink(&capture);
  }
  ~LogCapture() { log::set_sink(previous_); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // "LEVEL|module|message" lines so far.
  std::vector<std::string> lines() const {
    std::lock_guard lk(state().mu);
    return state().lines;
  }
  // The lines that contain `text`.
  std::vector<std::string> matching(const std::string& text) const {
    std::vector<std::string> out;
    for (const auto& l : lines())
      if (l.find(text) != std::string::npos) out.push_back(l);
    return out;
  }

 private:
  struct State {
    std::mutex mu;
    std::vector<std::string> lines;
  };
  static State& state() {
    static State s;
    return s;
  }
  static void capture(log::Level level, const char* module, const std::string& message) {
    std::lock_guard lk(state().mu);
    state().lines.push_back(std::string(log::level_name(level)) + "|" + module + "|" + message);
  }
  log::Sink previous_;
  static void clear() {
    std::lock_guard lk(state().mu);
    state().lines.clear();
  }
};

}  // namespace capsule::testkit
