// bench/bare_http: http_server's session (examples/http/session.hpp) without
// procmodel: N processes forked from one that bound the listener, each
// accepting on it in a plain Asio loop, each answering with a body as long as
// http_server's. What procmodel adds to a request is what http_server does
// beyond this.
//
//   bench_bare_http --port P [--workers N]      (SIGTERM, SIGINT or SIGQUIT stop it)
//
// Started by a supervisor the systemd way (LISTEN_FDS=1 and LISTEN_PID its
// own, as exec_spawner and systemd pass a socket), it is one such process
// serving descriptor 3, and sends READY=1 to NOTIFY_SOCKET: a program for
// procmodel's exec_spawner (bench/big_master --exec).

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <procmodel/systemd.hpp>

#include "session.hpp"

namespace {

using http_example::tcp;

struct no_hooks {
  void attach(http_example::session<no_hooks>&) {}
  void idle() {}
  void busy() {}
  [[nodiscard]] bool draining() const { return false; }
  void served() {}
  bool answer(const http_example::request&, http_example::response&) { return false; }
  void after_write() {}
};

void accept_next(tcp::acceptor& acceptor, const std::shared_ptr<const std::string>& body) {
  acceptor.async_accept([&acceptor, body](boost::system::error_code ec, tcp::socket s) {
    if (!ec)
      std::make_shared<http_example::session<no_hooks>>(std::move(s), body, no_hooks{})->read();
    accept_next(acceptor, body);
  });
}

// Whether a supervisor passed this process one socket at descriptor 3.
bool socket_activated() {
  const char* fds = std::getenv("LISTEN_FDS");
  const char* pid = std::getenv("LISTEN_PID");
  return fds && pid && std::string_view(fds) == "1" && std::atol(pid) == ::getpid();
}

int serve(int listen_fd, unsigned slot) {
  boost::asio::io_context loop(1);
  tcp::acceptor acceptor(loop, tcp::v4(), listen_fd);
  acceptor.non_blocking(true);
  // As long as http_server's "hello from worker 0 generation 1 pid 4242".
  auto body = std::make_shared<const std::string>(
      fmt::format("hello from worker {} generation 1 pid {}\n", slot, ::getpid()));
  accept_next(acceptor, body);
  boost::asio::signal_set stop(loop, SIGTERM, SIGINT, SIGQUIT);
  stop.async_wait([&](boost::system::error_code, int) { loop.stop(); });
  loop.run();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (socket_activated()) {
    const char* slot = std::getenv("PROCMODEL_SLOT");
    // Descriptor 3 listens already: what connects now waits in its queue.
    procmodel::systemd_notifier{}.ready();
    return serve(3, slot ? static_cast<unsigned>(std::atoi(slot)) : 0);
  }
  unsigned workers = 1;
  unsigned short port = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view a = argv[i];
    if (a == "--port")
      port = static_cast<unsigned short>(std::stoi(argv[i + 1]));
    else if (a == "--workers")
      workers = static_cast<unsigned>(std::stoi(argv[i + 1]));
  }
  if (port == 0 || workers == 0) {
    std::fprintf(stderr, "usage: %s --port P [--workers N]\n", argv[0]);
    return 2;
  }
  boost::asio::io_context setup;
  tcp::acceptor acceptor(setup, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
  acceptor.listen(511);  // nginx's backlog, as http_server's
  int fd = acceptor.release();

  // Signals wait for the children: the parent forwards them.
  sigset_t stops;
  sigemptyset(&stops);
  for (int sig : {SIGTERM, SIGINT, SIGQUIT})
    sigaddset(&stops, sig);
  ::sigprocmask(SIG_BLOCK, &stops, nullptr);
  std::vector<pid_t> children;
  for (unsigned slot = 0; slot < workers; ++slot) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::sigprocmask(SIG_UNBLOCK, &stops, nullptr);
      return serve(fd, slot);
    }
    children.push_back(pid);
  }
  int sig = 0;
  ::sigwait(&stops, &sig);
  for (pid_t c : children)
    ::kill(c, SIGTERM);
  for (pid_t c : children)
    ::waitpid(c, nullptr, 0);
  return 0;
}
