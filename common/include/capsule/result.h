// Result<T> and Status: errors that carry the sentence a user will read.
//
// capsule reports every failure as text an operator can act on ("budget 30 ms
// is larger than the period 20 ms ..."), plus the errno where one exists so
// callers can branch on it (EBUSY, ESRCH). std::expected is C++23; this is the
// small subset of it we need under C++20.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace capsule {

struct Error {
  std::string message;  // what went wrong and, where possible, what to do
  int errnum = 0;       // errno behind it, 0 when not a system error
};

// "what: strerror(err)" as an Error carrying err.
inline Error errno_error(const std::string& what, int err) {
  return Error{what + ": " + std::strerror(err), err};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}      // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { return std::get<Error>(v_); }

 private:
  std::variant<T, Error> v_;
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : err_(std::move(error)), failed_(true) {}  // NOLINT

  static Status Ok() { return Status(); }
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool failed_ = false;
};

}  // namespace capsule
