// The baseline of bench/compile_cost.sh: the job of the README's quick start
// (greet each client, then echo every line it sends), written against
// Boost.Asio alone. One process, no workers, no reload, no drain: it stops
// on SIGINT or SIGTERM.
#include <csignal>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;
using asio::ip::tcp;

struct session : std::enable_shared_from_this<session> {
  explicit session(tcp::socket s) : sock(std::move(s)) {}
  void say(std::string text) {
    out = std::move(text);
    asio::async_write(sock, asio::buffer(out), [self = shared_from_this()](auto ec, auto) {
      if (!ec) self->read();
    });
  }
  void read() {
    auto on_line = [self = shared_from_this()](auto ec, std::size_t n) {
      if (ec) return;
      std::string line = self->in.substr(0, n);
      self->in.erase(0, n);
      self->say(line);
    };
    asio::async_read_until(sock, asio::dynamic_buffer(in), '\n', on_line);
  }
  tcp::socket sock;
  std::string in, out;
};

int main() {
  asio::io_context io;
  tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 8080});
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) { io.stop(); });
  std::function<void()> accept = [&] {
    acceptor.async_accept([&](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      std::make_shared<session>(std::move(s))->say("hello\n");
      accept();
    });
  };
  accept();
  io.run();
}
