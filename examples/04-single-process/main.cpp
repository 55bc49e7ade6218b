// 04-single-process: debugging a worker. The same server as 01-minimal, but
// it starts in single-process mode (nginx's `master_process off`): the
// workers are threads of the master, so a debugger attached to the one
// process sees every worker, and a breakpoint in the worker's code is hit
// whichever worker takes the connection. Nothing else changes: readiness,
// reload (HUP), graceful (QUIT) and fast (TERM) stop work as with processes.
//
//   gdb -ex 'break answer' --args debug_server --listen 127.0.0.1:7004 --workers 1
//   debug_server --processes          # the same program, one process per worker

#include <procmodel/procmodel.hpp>

#include <memory>
#include <string>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// A plain function for a breakpoint: what the server answers to a line.
// noinline keeps it a place to stop at in an optimized build too.
[[gnu::noinline]] std::string answer(const procmodel::worker_context& ctx, std::string line) {
  return "worker " + std::to_string(ctx.slot()) + " (pid " + std::to_string(ctx.pid()) +
         "): " + line;
}

class session : public std::enable_shared_from_this<session> {
 public:
  session(procmodel::worker_context& ctx, tcp::socket s, procmodel::connection c)
      : ctx_(ctx), socket_(std::move(s)), conn_(std::move(c)) {
    conn_.on_close([this] { socket_.close(); });
  }

  void read() {
    conn_.idle();
    asio::async_read_until(socket_, asio::dynamic_buffer(in_), '\n',
                           [self = shared_from_this()](auto ec, std::size_t n) {
                             self->conn_.busy();
                             if (!ec)
                               self->reply(n);
                           });
  }

 private:
  void reply(std::size_t n) {
    out_ = answer(ctx_, in_.substr(0, n));
    in_.erase(0, n);
    asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](auto ec, auto) {
      if (!ec && !self->conn_.draining())
        self->read();
    });
  }

  procmodel::worker_context& ctx_;  // outlives every session (docs/ownership.md)
  tcp::socket socket_;
  std::string in_, out_;
  procmodel::connection conn_;
};

struct debug_worker {
  void operator()(procmodel::worker_context& ctx) {
    procmodel::serve(ctx, [&ctx](tcp::socket s, procmodel::connection c) {
      std::make_shared<session>(ctx, std::move(s), std::move(c))->read();
    });
    ctx.ready();
  }
};

}  // namespace

int main(int argc, char** argv) {
  procmodel::options opt;
  opt.listen = {"127.0.0.1:7004"};
  opt.workers = 2;
  opt.single_process = true;  // the default here; --processes turns it off
  procmodel::command_line cli(opt);
  cli.add_flag("--processes", "one process per worker, as in production",
               [&] { opt.single_process = false; });
  if (auto code = cli.parse(argc, argv))
    return *code;
  return procmodel::supervisor<debug_worker>(opt).run();
}
