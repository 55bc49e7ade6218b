// The smallest embedding of procmodel: an echo server whose workers drain
// cleanly on a graceful stop, on TCP and unix sockets alike.
//
//   echo_server --listen 127.0.0.1:7000 --workers 2 --pid-file /tmp/echo.pid
//   echo_server --listen 'unix:/tmp/echo.sock mode=0660' --pid-file /tmp/echo.pid
//   echo_server --listen udp://127.0.0.1:7000 --reuseport

#include <procmodel/procmodel.hpp>

#include <array>
#include <cstdlib>
#include <memory>
#include <string_view>

#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;

namespace {

// Socket: tcp::socket or local::stream_protocol::socket.
template <class Socket>
class echo_session : public std::enable_shared_from_this<echo_session<Socket>> {
 public:
  echo_session(Socket socket, procmodel::connection conn)
      : socket_(std::move(socket)), conn_(std::move(conn)) {}

  void read() {
    socket_.async_read_some(asio::buffer(buf_), [self = this->shared_from_this()](auto ec, std::size_t n) {
      if (ec) return;  // the connection leaves its set with the last reference
      asio::async_write(self->socket_, asio::buffer(self->buf_, n),
                        [self](auto wec, std::size_t) {
                          if (!wec) self->read();
                        });
    });
  }

 private:
  Socket socket_;
  std::array<char, 4096> buf_{};
  // Never idle(): a byte stream has no pause between requests, so a drain
  // waits for the client to hang up, or for the deadline.
  procmodel::connection conn_;
};

// Echoes every datagram on a UDP listener back to its sender. At the drain
// it answers what is already queued, then closes its copy of the socket:
// the workers that serve on (and the master) keep the socket, so what
// arrives later is theirs, never lost with this worker.
class udp_echo : public std::enable_shared_from_this<udp_echo> {
 public:
  explicit udp_echo(asio::ip::udp::socket socket) : socket_(std::move(socket)) {}

  void start(procmodel::worker_context& ctx) {
    ctx.on_drain([self = shared_from_this()](auto) { self->drain(); });
    receive();
  }

 private:
  void receive() {
    socket_.async_receive_from(asio::buffer(buf_), peer_, [self = shared_from_this()](auto ec, std::size_t n) {
      boost::system::error_code ignored;
      // Even after the drain began: a receive that had completed holds a
      // datagram, answered here.
      if (!ec) self->socket_.send_to(asio::buffer(self->buf_, n), self->peer_, 0, ignored);
      if (self->draining_)
        self->socket_.close(ignored);
      else if (!ec)
        self->receive();
    });
  }

  // Answers what is queued now, with buffers of its own (the pending
  // receive's may already hold a datagram), then cancels the pending receive,
  // whose handler closes the socket.
  void drain() {
    draining_ = true;
    std::array<char, 65536> buf;
    asio::ip::udp::endpoint peer;
    boost::system::error_code ec;
    for (;;) {
      std::size_t n = socket_.receive_from(asio::buffer(buf), peer, 0, ec);
      if (ec) break;  // would block: nothing queued any more
      socket_.send_to(asio::buffer(buf, n), peer, 0, ec);
    }
    socket_.cancel(ec);
  }

  asio::ip::udp::socket socket_;
  asio::ip::udp::endpoint peer_;
  std::array<char, 65536> buf_{};
  bool draining_ = false;
};

// Test hooks: whether the file named by environment variable `var` exists.
bool hook_file_exists(const char* var) {
  const char* path = std::getenv(var);
  return path && *path && ::access(path, F_OK) == 0;
}

struct echo_worker {
  void operator()(procmodel::worker_context& ctx) {
    if (std::getenv("ECHO_CRASH_AT_START")) ::_exit(3);  // for the crash-loop test
    // For the reload tests: a worker that starts while ECHO_CRASH_FILE's file
    // exists exits at once; one that starts while ECHO_NOT_READY_FILE's file
    // exists neither serves nor reports ready (it leaves when told to quit).
    if (hook_file_exists("ECHO_CRASH_FILE")) ::_exit(3);
    if (hook_file_exists("ECHO_NOT_READY_FILE")) return;
    // One that starts while ECHO_SERVE_NOT_READY_FILE's file exists serves
    // but never reports ready: a reload to it is rolled back with
    // connections it has already accepted.
    const bool report_ready = !hook_file_exists("ECHO_SERVE_NOT_READY_FILE");
    // Until the drain, then what the kernel already queued; backs off when
    // out of descriptors.
    // A generic handler: TCP and unix listeners alike.
    procmodel::serve(ctx, [](auto s, procmodel::connection c) {
      std::make_shared<echo_session<decltype(s)>>(std::move(s), std::move(c))->read();
    });
    // UDP listeners: datagrams, no connections.
    for (std::size_t i = 0; i < ctx.listeners().size(); ++i)
      if (ctx.listeners()[i].datagram())
        std::make_shared<udp_echo>(ctx.datagram_socket(i))->start(ctx);
    if (report_ready) ctx.ready();
    // For the signal tests: a command run with system() once serving, as a
    // worker would start a helper program.
    if (const char* cmd = std::getenv("ECHO_RUN_AT_START"); cmd && *cmd)
      [[maybe_unused]] int rc = std::system(cmd);
  }
};

}  // namespace

int main(int argc, char** argv) {
  procmodel::options opt;
  opt.listen = {"127.0.0.1:7000"};
  // A default pid file, as a program sets options::pid_file: then `-s` needs
  // no --pid-file. From the environment here, so that tests can choose it.
  if (const char* pid = std::getenv("ECHO_PID_FILE")) opt.pid_file = pid;
  // ECHO_GRACEFUL_TERM=1: SIGTERM drains, as systemd and container runtimes
  // expect (the signal table's policy; SIGINT stays the fast stop).
  if (const char* v = std::getenv("ECHO_GRACEFUL_TERM"); v && std::string_view(v) == "1")
    return procmodel::graceful_term_supervisor<echo_worker>(opt).run(argc, argv);
  return procmodel::supervisor<echo_worker>(opt).run(argc, argv);
}
