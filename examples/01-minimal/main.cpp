// 01-minimal: the smallest complete server. Every worker echoes each line a
// client sends; the master keeps N of them running, reloads on HUP, stops
// gracefully on QUIT and fast on TERM.
//
//   minimal_server --listen 127.0.0.1:7001 --workers 2 --pid-file /tmp/minimal.pid

#include <procmodel/procmodel.hpp>

#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// One client: read a line, write it back, until the client leaves. Owned by
// the handlers of its pending read or write (shared_ptr captured).
class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket s, procmodel::connection c) : socket_(std::move(s)), conn_(std::move(c)) {
    conn_.on_close([this] { socket_.close(); });  // idle at the drain deadline
  }

  void read() {
    conn_.idle();  // between lines: may be closed at the drain deadline
    asio::async_read_until(socket_, asio::dynamic_buffer(in_), '\n',
                           [self = shared_from_this()](auto ec, std::size_t n) {
                             self->conn_.busy();
                             if (!ec)
                               self->echo(n);
                           });
  }

 private:
  void echo(std::size_t n) {
    out_ = in_.substr(0, n);
    in_.erase(0, n);
    asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](auto ec, auto) {
      if (!ec && !self->conn_.draining())
        self->read();  // draining: that was the last line
    });
  }

  tcp::socket socket_;
  std::string in_, out_;
  procmodel::connection conn_;  // last: leaves its set before the socket closes
};

struct echo_worker {
  void operator()(procmodel::worker_context& ctx) {
    procmodel::serve(ctx, [](tcp::socket s, procmodel::connection c) {
      std::make_shared<session>(std::move(s), std::move(c))->read();
    });
    ctx.ready();  // the master counts this worker as serving from now on
  }
};

}  // namespace

int main(int argc, char** argv) {
  procmodel::options opt;
  opt.listen = {"127.0.0.1:7001"};  // --listen replaces it
  return procmodel::supervisor<echo_worker>(opt).run(argc, argv);
}
