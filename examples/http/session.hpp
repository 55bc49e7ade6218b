#pragma once

// http_server's request handling, with no procmodel in it: an HTTP/1.1
// keep-alive Boost.Beast session that answers GET and HEAD with one body.
// What a server adds is a Hooks value the session owns (declared last: it
// goes first when the session does):
//
//   struct hooks {
//     void attach(session<hooks>& s);  // once, when the session is made
//     void idle();                     // waiting for a request, nothing read
//     void busy();                     // a request is in
//     bool draining();                 // this answer ends the connection
//     void served();                   // one request answered
//     // Answers a request itself (true), or leaves it to the session.
//     bool answer(const request& req, response& res);
//     void after_write();              // the answer is out
//   };
//
// http_server's hooks track the connection for procmodel's drain;
// bench/bare_http.cpp runs the same session alone, with hooks that do nothing.

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

namespace http_example {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

inline constexpr auto keepalive_timeout = std::chrono::seconds(75);  // as nginx

template <class Hooks>
class session : public std::enable_shared_from_this<session<Hooks>> {
 public:
  session(tcp::socket socket, std::shared_ptr<const std::string> body, Hooks hooks)
      : stream_(std::move(socket)), body_(std::move(body)), hooks_(std::move(hooks)) {
    hooks_.attach(*this);
  }

  void read() {
    request_ = {};
    hooks_.idle();
    stream_.expires_after(keepalive_timeout);
    http::async_read(stream_, buffer_, request_,
                     [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                       self->hooks_.busy();
                       if (ec)
                         return self->close();
                       self->respond();
                     });
  }

  /// Whether nothing of a next request has come in.
  [[nodiscard]] bool nothing_read() const { return buffer_.size() == 0; }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

 private:
  void respond() {
    // Draining: this answer is the connection's last.
    bool keep_alive = request_.keep_alive() && !hooks_.draining();
    hooks_.served();
    response_ = {};
    response_.version(request_.version());
    if (hooks_.answer(request_, response_)) {
      // answered by the hooks
    } else if (request_.method() == http::verb::get || request_.method() == http::verb::head) {
      response_.result(http::status::ok);
      response_.body() = *body_;
    } else {
      response_.result(http::status::method_not_allowed);
      response_.set(http::field::allow, "GET, HEAD");
      response_.body() = "method not allowed\n";
    }
    response_.set(http::field::server, "procmodel-http");
    response_.set(http::field::content_type, "text/plain");
    response_.keep_alive(keep_alive);
    response_.prepare_payload();
    if (request_.method() == http::verb::head)
      response_.body().clear();
    http::async_write(
        stream_, response_,
        [self = this->shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
          self->hooks_.after_write();
          if (ec || !keep_alive)
            return self->close();
          self->read();
        });
  }

  beast::tcp_stream stream_;
  std::shared_ptr<const std::string> body_;
  beast::flat_buffer buffer_;
  request request_;
  response response_;
  Hooks hooks_;  // last: leaves procmodel's connection set before the stream goes
};

}  // namespace http_example
