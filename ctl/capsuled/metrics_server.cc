#include "metrics_server.h"

#include <memory>

namespace capsule::agent {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, MetricsServer::Render render)
      : socket_(std::move(socket)), render_(std::move(render)), buffer_(8192) {}

  void start() {
    auto self = shared_from_this();
    asio::async_read_until(socket_, buffer_, "\r\n\r\n", [self](boost::system::error_code ec, std::size_t) {
      if (!ec) self->respond();
    });
  }

 private:
  void respond() {
    std::istream in(&buffer_);
    std::string method, target;
    in >> method >> target;
    std::string body, status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8";
    if (method != "GET") {
      status = "405 Method Not Allowed";
      body = "only GET\n";
      type = "text/plain";
    } else if (target == "/metrics") {
      body = render_();
    } else {
      status = "404 Not Found";
      body = "capsuled serves /metrics\n";
      type = "text/plain";
    }
    reply_ = "HTTP/1.0 " + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(reply_), [self](boost::system::error_code, std::size_t) {
      boost::system::error_code ignored;
      self->socket_.shutdown(tcp::socket::shutdown_both, ignored);
    });
  }

  tcp::socket socket_;
  MetricsServer::Render render_;
  asio::streambuf buffer_;
  std::string reply_;
};

}  // namespace

MetricsServer::MetricsServer(asio::io_context& io, uint16_t port, Render render)
    : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port)), render_(std::move(render)) {
  port_ = acceptor_.local_endpoint().port();
  accept();
}

void MetricsServer::close() {
  boost::system::error_code ignored;
  acceptor_.close(ignored);
}

void MetricsServer::accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec) return;  // closed
    std::make_shared<Session>(std::move(socket), render_)->start();
    accept();
  });
}

}  // namespace capsule::agent
