// 03-signal-table: a Signals policy of its own. This service runs under a
// container runtime or systemd, which stop it with SIGTERM and SIGKILL it a
// grace period later, so here SIGTERM drains (a graceful stop) and SIGINT is
// the fast stop. HUP reloads, USR1 reopens the log. Nothing else is a
// command: USR2, WINCH, TTIN and TTOU are ignored (`-s upgrade` still works:
// it goes over the control socket).
//
//   signal_table_server --listen 127.0.0.1:7003 --pid-file /tmp/signals.pid
//   kill -TERM $(cat /tmp/signals.pid)     # workers finish what they serve, then exit

#include <procmodel/procmodel.hpp>
#include <procmodel/supervisor.hpp>  // basic_supervisor with policies of one's own

#include <array>
#include <csignal>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// The contract (docs/policies.md): which signals the master watches, the
// command each means, what a worker signalled directly does, and which
// signal `-s COMMAND` sends.
struct container_signals {
  // Watched signals that mean no command are ignored: a stray USR2 or WINCH
  // must not kill the master (their default action would), nor SIGPIPE.
  static constexpr std::array<int, 10> watched = {SIGTERM, SIGINT,   SIGQUIT, SIGHUP,  SIGUSR1,
                                                  SIGUSR2, SIGWINCH, SIGTTIN, SIGTTOU, SIGPIPE};

  static constexpr std::optional<procmodel::command> master(int signo) noexcept {
    switch (signo) {
      case SIGTERM:
      case SIGQUIT: return procmodel::command::quit;
      case SIGINT: return procmodel::command::stop;
      case SIGHUP: return procmodel::command::reload;
      case SIGUSR1: return procmodel::command::reopen;
      default: return std::nullopt;
    }
  }

  static constexpr procmodel::worker_reaction worker(int signo) noexcept {
    switch (signo) {
      case SIGTERM:
      case SIGQUIT: return procmodel::worker_reaction::drain;
      case SIGINT: return procmodel::worker_reaction::terminate;
      case SIGUSR1: return procmodel::worker_reaction::reopen;
      default: return procmodel::worker_reaction::ignore;
    }
  }

  static constexpr int signal_for(procmodel::command c) noexcept {
    switch (c) {
      case procmodel::command::stop: return SIGINT;
      case procmodel::command::quit: return SIGTERM;
      case procmodel::command::reload: return SIGHUP;
      case procmodel::command::reopen: return SIGUSR1;
      default: return 0;  // `-s upgrade` goes over the control socket, not a signal
    }
  }
};

class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket s, procmodel::connection c) : socket_(std::move(s)), conn_(std::move(c)) {
    conn_.on_close([this] { socket_.close(); });
  }

  void read() {
    conn_.idle();
    asio::async_read_until(socket_, asio::dynamic_buffer(in_), '\n',
                           [self = shared_from_this()](auto ec, std::size_t n) {
                             self->conn_.busy();
                             if (!ec) self->echo(n);
                           });
  }

 private:
  void echo(std::size_t n) {
    out_ = in_.substr(0, n);
    in_.erase(0, n);
    asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](auto ec, auto) {
      if (!ec && !self->conn_.draining()) self->read();
    });
  }

  tcp::socket socket_;
  std::string in_, out_;
  procmodel::connection conn_;
};

struct echo_worker {
  void operator()(procmodel::worker_context& ctx) {
    procmodel::serve(ctx, [](tcp::socket s, procmodel::connection c) {
      std::make_shared<session>(std::move(s), std::move(c))->read();
    });
    ctx.ready();
  }
};

// Only the Signals policy changes; the others keep their defaults.
using server = procmodel::supervisor_with<echo_worker, procmodel::use_signals<container_signals>>;

}  // namespace

int main(int argc, char** argv) {
  procmodel::options opt;
  opt.listen = {"127.0.0.1:7003"};
  return server(opt).run(argc, argv);
}
