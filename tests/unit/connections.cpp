#include <procmodel/connections.hpp>
#include "support/catch.hpp"
#include "support/loopback.hpp"

// serve() and connection_set with real sockets on loopback, in one process:
// a worker_context on the test's io_context, the test's clients on the same
// loop, and the drain started by calling ctx.drain() as the runtime does.
// The server speaks lines: "ping" is answered "pong" (or "bye", then closed,
// once draining), "wait N" is answered N ms later; between lines the
// connection is idle.

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

using namespace std::chrono_literals;
using namespace procmodel;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

using clock_type = std::chrono::steady_clock;

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A loop whose pending handlers can be destroyed while ctx still exists, as
// the runtime's worker loop does.
struct test_loop : asio::io_context {
  using asio::io_context::io_context;
  using asio::io_context::shutdown;
};

using test_support::listen_loopback;

worker_context::setup quiet_setup() {
  worker_context::setup s;
  s.log_file = "/dev/null";
  return s;
}

unsigned short port_of(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
  return ntohs(sa.sin_port);
}

class line_session : public std::enable_shared_from_this<line_session> {
 public:
  line_session(tcp::socket s, connection c, bool answer_while_draining)
      : socket_(std::move(s)), timer_(socket_.get_executor()),
        answer_while_draining_(answer_while_draining), conn_(std::move(c)) {
    conn_.on_close([this] { close(); });
  }

  void read() {
    conn_.idle();
    asio::async_read_until(socket_, asio::dynamic_buffer(in_), '\n',
                           [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                             self->conn_.busy();
                             if (ec) return self->close();
                             std::string line = self->in_.substr(0, n - 1);
                             self->in_.erase(0, n);
                             self->handle(line);
                           });
  }

 private:
  void handle(const std::string& line) {
    if (line.rfind("wait ", 0) == 0) {
      timer_.expires_after(std::chrono::milliseconds(std::stoi(line.substr(5))));
      timer_.async_wait([self = shared_from_this()](boost::system::error_code) { self->answer(); });
      return;
    }
    answer();
  }
  void answer() {
    const bool last = conn_.draining() && !answer_while_draining_;
    out_ = last ? "bye\n" : "pong\n";
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this(), last](boost::system::error_code ec, std::size_t) {
                        if (ec || last) return self->close();
                        self->read();
                      });
  }
  void close() {
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    socket_.close(ec);
  }

  tcp::socket socket_;
  asio::steady_timer timer_;
  std::string in_;
  std::string out_;
  bool answer_while_draining_;
  connection conn_;
};

// What one client saw, with when.
struct client_log {
  std::string got;
  std::optional<clock_type::time_point> closed_at;  // end of file (or reset)
};

// A client on the test's loop: records what it reads until the server closes.
class client : public std::enable_shared_from_this<client> {
 public:
  client(asio::io_context& io, unsigned short port) : socket_(io) {
    socket_.connect(tcp::endpoint(asio::ip::address_v4::loopback(), port));
  }
  void start() { read(); }
  void send(const std::string& line) { asio::write(socket_, asio::buffer(line + "\n")); }
  void hang_up() {
    boost::system::error_code ec;
    socket_.close(ec);
  }
  const client_log& log() const { return log_; }
  // After the loop: whether the server closed its end (end of file or a
  // reset), waiting up to a second; what was still unread is added to got.
  bool closed_by_server() {
    for (;;) {
      pollfd p{socket_.native_handle(), POLLIN, 0};
      if (::poll(&p, 1, 1000) != 1) return false;
      ssize_t n = ::recv(p.fd, buf_.data(), buf_.size(), MSG_DONTWAIT);
      if (n > 0) {
        log_.got.append(buf_.data(), static_cast<std::size_t>(n));
        continue;
      }
      return n == 0 || errno == ECONNRESET;
    }
  }

 private:
  void read() {
    socket_.async_read_some(asio::buffer(buf_), [self = shared_from_this()](boost::system::error_code ec,
                                                                         std::size_t n) {
      if (ec) {
        if (ec != asio::error::operation_aborted && ec != asio::error::bad_descriptor)
          self->log_.closed_at = clock_type::now();
        return;
      }
      self->log_.got.append(self->buf_.data(), n);
      self->read();
    });
  }
  tcp::socket socket_;
  std::array<char, 256> buf_{};
  client_log log_;
};

// One worker serving one loopback listener with line sessions, and the
// clients that talk to it.
struct rig {
  test_loop io{1};
  procmodel::listener l = listen_loopback();
  unsigned short port = port_of(l.fd);
  std::optional<worker_context> ctx;
  std::shared_ptr<connection_set> set;
  clock_type::time_point drain_at{};
  clock_type::time_point stopped_at{};

  explicit rig(bool answer_while_draining = false) {
    worker_context::setup s = quiet_setup();
    s.listeners = {l};
    s.owns_listeners = true;  // as a forked worker's copies: the drain closes them
    auto [master, worker] = channel::make_pair();
    master_ = std::move(master);
    ctx.emplace(io, std::move(worker), std::move(s));
    set = serve(*ctx, 0, [answer_while_draining](tcp::socket sock, connection c) {
      std::make_shared<line_session>(std::move(sock), std::move(c), answer_while_draining)->read();
    });
    // A worker that misses every deadline must fail the test, not hang it.
    at(5s, [this] { ctx->stop(99); });
  }
  rig(const rig&) = delete;
  rig& operator=(const rig&) = delete;
  ~rig() {
    io.shutdown();  // handlers (sessions, clients) go while ctx lives
    ctx.reset();
  }

  std::shared_ptr<client> connect() {
    auto c = std::make_shared<client>(io, port);
    c->start();
    return c;
  }
  // Runs `f` on the loop `after` from now.
  void at(std::chrono::milliseconds after, std::function<void()> f) {
    auto t = std::make_shared<asio::steady_timer>(io, after);
    t->async_wait([t, f = std::move(f)](boost::system::error_code ec) {
      if (!ec) f();
    });
  }
  // Runs `f` once `done()` holds, checking every 10 ms.
  void when(std::function<bool()> done, std::function<void()> f) {
    if (done()) return f();
    at(10ms, [this, done = std::move(done), f = std::move(f)]() mutable {
      when(std::move(done), std::move(f));
    });
  }
  // Starts a drain now, as a quit with `within` would.
  void drain(std::chrono::milliseconds within) {
    drain_at = clock_type::now();
    ctx->drain(drain_reason::quit, within);
  }
  // Runs the loop until the worker stops; its exit code.
  int run() {
    io.run();
    stopped_at = clock_type::now();
    return ctx->exit_code();
  }
  double ms_after_drain(clock_type::time_point t) const { return ms_between(drain_at, t); }
  // When the worker closed `c`'s connection, in ms after the drain started: as
  // the client saw it, or the worker's stop if that came first. Empty if the
  // connection was still open when the loop stopped.
  std::optional<double> ms_to_close(client& c) const {
    if (c.log().closed_at) return ms_after_drain(*c.log().closed_at);
    if (c.closed_by_server()) return ms_after_drain(stopped_at);
    return std::nullopt;
  }

 private:
  channel master_;
};

// A worker with no listener and a set, for what needs no socket.
struct bare_worker {
  test_loop io{1};
  std::pair<channel, channel> ends = channel::make_pair();
  worker_context ctx{io, std::move(ends.second), quiet_setup()};
  std::shared_ptr<connection_set> set = connection_set::create(ctx);
};

}  // namespace

// Drains below use within = 2000 ms: the handlers' deadline is 1600 ms after
// the drain started, the worker's hard stop 1800 ms. Each starts once the
// clients' first answers are in, so that a loaded machine changes no order.

TEST_CASE("an idle connection is closed at the drain deadline, not before, and the worker exits then",
          "[connections]") {
  rig r;
  auto c = r.connect();
  c->send("ping");
  std::optional<bool> open_before_deadline;
  r.when([&] { return c->log().got == "pong\n"; }, [&] {
    r.drain(2000ms);
    r.at(1300ms, [&] { open_before_deadline = !c->log().closed_at; });
  });
  CHECK(r.run() == 0);  // not the 5 s limit
  INFO("client got '" << c->log().got << "'");
  CHECK(c->log().got == "pong\n");
  CHECK(open_before_deadline == true);
  auto closed = r.ms_to_close(*c);
  REQUIRE(closed.has_value());  // while the loop ran: by the set
  INFO("closed " << *closed << " ms after the drain started");
  CHECK(*closed >= 1590);
  // The worker drained: it did not wait for its hard stop with the session open.
  CHECK(r.ctx->live_connections() == 0);
  CHECK(r.set->size() == 0);
  CHECK(r.set->past_deadline());
}

TEST_CASE("a busy connection is kept past the deadline until its answer is out", "[connections]") {
  rig r;
  auto idle = r.connect();
  auto busy = r.connect();
  idle->send("ping");
  r.when([&] { return idle->log().got == "pong\n"; }, [&] {
    r.drain(2000ms);
    busy->send("wait 1680");  // answered after the deadline, before the hard stop
  });
  CHECK(r.run() == 0);
  INFO("busy client got '" << busy->log().got << "', idle client '" << idle->log().got << "'");
  CHECK(busy->closed_by_server());
  CHECK(busy->log().got == "bye\n");
  auto idle_closed = r.ms_to_close(*idle);
  REQUIRE(idle_closed.has_value());
  CHECK(*idle_closed >= 1590);
  CHECK(r.ctx->live_connections() == 0);  // drained before the hard stop
  CHECK(r.set->size() == 0);
}

TEST_CASE("a connection that becomes idle after the deadline is closed at once", "[connections]") {
  rig r(/*answer_while_draining=*/true);  // a protocol that keeps its connection open
  auto c = r.connect();
  r.drain(2000ms);
  c->send("wait 1680");  // answered after the deadline, then idle
  CHECK(r.run() == 0);
  auto closed = r.ms_to_close(*c);
  INFO("client got '" << c->log().got << "'");
  CHECK(c->log().got == "pong\n");  // the answer, then closed on going idle
  REQUIRE(closed.has_value());
  INFO("closed " << *closed << " ms after the drain started");
  CHECK(*closed >= 1670);
  CHECK(r.ctx->live_connections() == 0);  // by the set, not the hard stop
}

TEST_CASE("draining() is seen by a connection: its next answer is its last", "[connections]") {
  rig r;
  auto c = r.connect();
  c->send("ping");
  std::optional<bool> draining_before;
  r.when([&] { return c->log().got == "pong\n"; }, [&] {
    draining_before = r.set->draining();
    r.drain(2000ms);
    c->send("ping");
  });
  CHECK(r.run() == 0);
  CHECK(c->closed_by_server());
  INFO("client got '" << c->log().got << "'");
  CHECK(draining_before == false);
  CHECK(c->log().got == "pong\nbye\n");
  CHECK(r.ms_after_drain(r.stopped_at) < 1500);  // at the answer, not the deadline
}

TEST_CASE("the worker exits when the last connection ends, long before the deadline", "[connections]") {
  rig r;
  auto a = r.connect();
  auto b = r.connect();
  std::optional<std::size_t> size_at_drain;
  std::optional<clock_type::time_point> b_left;
  a->send("ping");
  b->send("ping");
  r.when([&] { return a->log().got == "pong\n" && b->log().got == "pong\n"; }, [&] {
    r.drain(4000ms);  // deadline 3500 ms after the drain
    size_at_drain = r.set->size();
    r.at(200ms, [&] { a->hang_up(); });
    r.at(400ms, [&] {
      b_left = clock_type::now();
      b->hang_up();
    });
  });
  CHECK(r.run() == 0);
  INFO("exited " << r.ms_after_drain(r.stopped_at) << " ms after the drain started");
  REQUIRE(b_left.has_value());  // not before the last connection left
  CHECK(r.ms_after_drain(r.stopped_at) < 2000);
  CHECK(size_at_drain == 2u);
  CHECK(r.set->size() == 0);
  CHECK(r.ctx->live_connections() == 0);
}

TEST_CASE("a connection still in the accept queue when the drain starts is served and waited for",
          "[connections]") {
  rig r;
  // Connected and its line sent before the loop runs: the kernel holds both.
  auto c = r.connect();
  c->send("ping");
  r.drain(2000ms);  // accepts it, then closes the listener
  CHECK(r.set->size() == 1);
  CHECK(r.ctx->live_connections() == 1);
  CHECK(r.run() == 0);
  INFO("client got '" << c->log().got << "'");
  CHECK(c->log().got == "bye\n");  // it joined a draining set
  CHECK(c->closed_by_server());
  CHECK(r.ms_after_drain(r.stopped_at) < 1500);
}

TEST_CASE("a set made after the drain started follows it: its idle members close at the deadline",
          "[connections]") {
  rig r;
  r.drain(2000ms);
  auto late = connection_set::create(*r.ctx);
  connection c = late->join();
  CHECK(c.draining());
  std::optional<clock_type::time_point> closed_at;
  c.on_close([&] {
    closed_at = clock_type::now();
    c.leave();
  });
  c.idle();
  CHECK(r.run() == 0);
  REQUIRE(closed_at.has_value());
  const double closed = r.ms_after_drain(*closed_at);
  INFO("closed " << closed << " ms after the drain started");
  CHECK(closed >= 1590);
  CHECK(late->size() == 0);
  CHECK(r.ctx->live_connections() == 0);
}

TEST_CASE("a close action may end other connections of the set", "[connections]") {
  bare_worker w;
  worker_context& ctx = w.ctx;
  auto& set = w.set;
  std::vector<std::optional<connection>> conns(4);
  std::vector<int> closed;
  for (int i = 0; i < 4; ++i) {
    conns[i].emplace(set->join());
    // Each ends itself and the next one.
    conns[i]->on_close([&conns, &closed, i] {
      closed.push_back(i);
      conns[i].reset();
      if (i + 1 < 4) conns[i + 1].reset();
    });
    conns[i]->idle();
  }
  CHECK(set->size() == 4);
  CHECK(ctx.live_connections() == 4);
  set->close_idle();
  CHECK(closed == std::vector<int>{0, 2});
  CHECK(set->size() == 0);
  CHECK(ctx.live_connections() == 0);
}

TEST_CASE("a moved connection stays one member; leave() and assignment release it", "[connections]") {
  bare_worker w;
  worker_context& ctx = w.ctx;
  auto& set = w.set;
  connection a = set->join();
  connection b = std::move(a);
  CHECK(set->size() == 1);
  CHECK(ctx.live_connections() == 1);
  // A moved-from connection is in no set: harmless, and never draining.
  a.idle();  // NOLINT(bugprone-use-after-move)
  CHECK_FALSE(a.draining());
  b = set->join();  // the old membership leaves
  CHECK(set->size() == 1);
  CHECK(ctx.live_connections() == 1);
  b.leave();
  b.leave();
  CHECK(set->size() == 0);
  CHECK(ctx.live_connections() == 0);
}
