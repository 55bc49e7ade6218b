// The smallest embedding of procmodel: an echo server whose workers drain
// cleanly on a graceful stop, on TCP and unix sockets alike.
//
//   echo_server --listen 127.0.0.1:7000 --workers 2 --pid-file /tmp/echo.pid
//   echo_server --listen 'unix:/tmp/echo.sock mode=0660' --pid-file /tmp/echo.pid

#include <procmodel/procmodel.hpp>

#include <array>
#include <cstdlib>
#include <memory>
#include <string_view>

#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
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
