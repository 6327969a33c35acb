// One connection to capsule-datapathd (protocol.h): capsuled's
// RemoteDatapath and the tests speak through it.
#pragma once

#include <chrono>
#include <string>

#include "capsule/result.h"
#include "protocol.h"

namespace capsule::datapathd {

class Client {
 public:
  // Connects to the daemon's socket. errnum ENOENT / ECONNREFUSED: nobody
  // serves it; ETIMEDOUT: a daemon that accepts nothing (stopped, wedged)
  // within `timeout`, which is also each call's.
  static Result<Client> connect(const std::string& socket,
                                std::chrono::milliseconds timeout = std::chrono::seconds(30));
  Client(Client&& other) noexcept;
  Client& operator=(Client&& other) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // Sends one request and reads its response. The daemon's refusal is an
  // Error with its text (errnum EINVAL); a broken or silent connection (the
  // daemon died, or did not answer within the timeout) is an Error with the
  // errno, and the connection is closed (connected() turns false).
  Result<json> call(const json& request);
  bool connected() const { return fd_ >= 0; }
  const std::string& socket() const { return socket_; }

 private:
  Client(int fd, std::string socket, std::chrono::milliseconds timeout)
      : fd_(fd), socket_(std::move(socket)), timeout_(timeout) {}
  void close();
  int fd_ = -1;
  std::string socket_;
  std::chrono::milliseconds timeout_;
  std::string pending_;  // bytes read past the last response line
};

}  // namespace capsule::datapathd
