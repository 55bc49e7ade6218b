// The baseline of bench/compile_cost.sh: what the README's quick start does,
// written against Boost.Asio alone. One process, no workers, no reload: it
// answers every connection with one line and stops on SIGINT or SIGTERM.
#include <csignal>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;
using asio::ip::tcp;

int main() {
  asio::io_context io;
  tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 8080});
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) { io.stop(); });
  std::function<void()> accept = [&] {
    acceptor.async_accept([&](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      auto sock = std::make_shared<tcp::socket>(std::move(s));
      auto text = std::make_shared<std::string>("hello\n");
      asio::async_write(*sock, asio::buffer(*text), [sock, text](auto, auto) {});
      accept();
    });
  };
  accept();
  io.run();
}
