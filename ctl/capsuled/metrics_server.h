// A minimal HTTP/1.0 server for Prometheus scraping: GET /metrics on a
// loopback address answers with the text exposition format (0.0.4); anything
// else gets 404. One request per connection, bounded request size.
#pragma once

// Boost 1.74 asio/awaitable.hpp uses std::exchange without <utility> (C++20).
#include <utility>

#include <boost/asio.hpp>
#include <cstdint>
#include <functional>
#include <string>

namespace capsule::agent {

class MetricsServer {
 public:
  using Render = std::function<std::string()>;
  // Listens on 127.0.0.1:port (0: the kernel picks one; see port()).
  MetricsServer(boost::asio::io_context& io, uint16_t port, Render render);
  uint16_t port() const { return port_; }
  void close();

 private:
  void accept();
  boost::asio::ip::tcp::acceptor acceptor_;
  Render render_;
  uint16_t port_ = 0;
};

}  // namespace capsule::agent
