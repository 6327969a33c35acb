#include "client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace capsule::datapathd {

Result<Client> Client::connect(const std::string& socket, std::chrono::milliseconds timeout) {
  sockaddr_un sa{};
  if (socket.size() >= sizeof sa.sun_path)
    return Error{"datapath daemon socket path " + socket + " is too long for a unix socket", ENAMETOOLONG};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, socket.c_str(), socket.size() + 1);
  // Non-blocking: a daemon that is stopped or wedged (its listen backlog
  // full) must not hold the agent, which serves every other VM, forever.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return errno_error("cannot create a unix socket", errno);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    const int err = errno;
    if (err == EINTR) continue;
    // A unix socket says EAGAIN while the backlog is full (nothing to poll
    // for): try again until the deadline.
    if (err == EAGAIN && std::chrono::steady_clock::now() < deadline) {
      ::poll(nullptr, 0, 10);
      continue;
    }
    ::close(fd);
    if (err == EAGAIN)
      return Error{"the datapath daemon at " + socket + " accepted no connection within " +
                       std::to_string(timeout.count()) + " ms (is it stopped?)",
                   ETIMEDOUT};
    return errno_error("cannot connect to the datapath daemon at " + socket, err);
  }
  return Client(fd, socket, timeout);
}

Client::Client(Client&& o) noexcept
    : fd_(o.fd_), socket_(std::move(o.socket_)), timeout_(o.timeout_), pending_(std::move(o.pending_)) {
  o.fd_ = -1;
}

Client& Client::operator=(Client&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    socket_ = std::move(o.socket_);
    timeout_ = o.timeout_;
    pending_ = std::move(o.pending_);
    o.fd_ = -1;
  }
  return *this;
}

Client::~Client() { close(); }

void Client::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  pending_.clear();
}

Result<json> Client::call(const json& request) {
  if (fd_ < 0) return Error{"not connected to the datapath daemon at " + socket_, ENOTCONN};
  const std::string line = request.dump() + "\n";
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  auto timed_out = [&] {
    close();  // a late answer would be read as the next one's
    return Error{"datapath daemon at " + socket_ + " did not answer " + request.value("op", "") + " within " +
                     std::to_string(timeout_.count()) + " ms",
                 ETIMEDOUT};
  };
  // Waits until fd_ is ready for `events` or the deadline: false on timeout.
  auto wait_for = [&](short events) {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fd_, events, 0};
      const int r = left.count() > 0 ? ::poll(&p, 1, int(left.count())) : 0;
      if (r < 0 && errno == EINTR) continue;
      return r != 0;
    }
  };
  for (std::size_t sent = 0; sent < line.size();) {
    const ssize_t n = ::send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (!wait_for(POLLOUT)) return timed_out();
      continue;
    }
    if (n < 0) {
      const int err = errno;
      close();
      return errno_error("datapath daemon at " + socket_ + ": cannot send", err);
    }
    sent += std::size_t(n);
  }
  std::size_t eol;
  while ((eol = pending_.find('\n')) == std::string::npos) {
    if (!wait_for(POLLIN)) return timed_out();
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      const int err = n == 0 ? ECONNRESET : errno;
      close();
      return Error{"datapath daemon at " + socket_ + " closed the connection" +
                       (n < 0 ? std::string(": ") + std::strerror(err) : std::string()),
                   err};
    }
    pending_.append(buf, std::size_t(n));
  }
  const std::string reply = pending_.substr(0, eol);
  pending_.erase(0, eol + 1);
  json j = json::parse(reply, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("ok") || !j.at("ok").is_boolean()) {
    close();
    return Error{"datapath daemon at " + socket_ + " answered something that is not a reply (protocol.h)", EPROTO};
  }
  if (!j.at("ok").get<bool>()) {
    const auto e = j.find("error");
    return Error{e != j.end() && e->is_string() ? e->get<std::string>() : "refused without a reason", EINVAL};
  }
  return j;
}

}  // namespace capsule::datapathd
