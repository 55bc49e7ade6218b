#include <procmodel/worker_context.hpp>

#include "support/catch.hpp"

#include <atomic>
#include <csignal>
#include <memory>

#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <procmodel/spawner.hpp>
#include <procmodel/supervisor.hpp>

// How a worker is torn down, in single-process mode (where a mistake corrupts
// the master's heap). Asio's rules: an I/O object must go before the services
// of its io_context are destroyed, and a handler that refers to something must
// be destroyed before that thing is. A Worker that owns an acceptor and a
// timer, with handlers that refer to it pending, must be safe on both stops.

namespace {

namespace asio = boost::asio;

// What the teardown did, seen from each object's destructor.
struct teardown_record {
  std::atomic<int> owned_destroyed{0};       // Worker-owned I/O objects that died
  std::atomic<int> owned_after_loop{0};      // ... after their io_context's services were gone
  std::atomic<int> handler_destroyed{0};     // handler-owned objects that died
  std::atomic<int> handler_after_worker{0};  // ... after the Worker copy they refer to
  std::atomic<int> started{0};
};
teardown_record rec;

// A service on the worker's io_context that says when it is destroyed: the
// io_context's services go together, so this one stands for all of them.
class probe_service : public asio::execution_context::service {
 public:
  static inline asio::execution_context::id id;
  explicit probe_service(asio::execution_context& c)
      : asio::execution_context::service(c), gone_(std::make_shared<std::atomic<bool>>(false)) {}
  ~probe_service() override { *gone_ = true; }
  [[nodiscard]] std::shared_ptr<std::atomic<bool>> gone() const { return gone_; }

 private:
  void shutdown() override {}
  std::shared_ptr<std::atomic<bool>> gone_;
};

// What the Worker copy owns: an acceptor and a timer, both with a wait pending.
struct owned_io {
  explicit owned_io(procmodel::worker_context& ctx)
      : acceptor(ctx.acceptor(0)),
        timer(ctx.loop(), std::chrono::hours(1)),
        loop_gone(asio::use_service<probe_service>(ctx.loop()).gone()) {}
  ~owned_io() {
    *alive = false;
    ++rec.owned_destroyed;
    if (*loop_gone)
      ++rec.owned_after_loop;
  }
  asio::ip::tcp::acceptor acceptor;
  asio::steady_timer timer;
  std::shared_ptr<std::atomic<bool>> loop_gone;
  std::shared_ptr<std::atomic<bool>> alive = std::make_shared<std::atomic<bool>>(true);
};

// Owned by a pending handler; refers to the Worker copy's objects (as the http
// example's sessions refer to its server).
struct handler_state {
  explicit handler_state(std::shared_ptr<std::atomic<bool>> a) : worker_alive(std::move(a)) {}
  ~handler_state() {
    ++rec.handler_destroyed;
    if (!*worker_alive)
      ++rec.handler_after_worker;
  }
  std::shared_ptr<std::atomic<bool>> worker_alive;
};

struct io_owning_worker {
  int stop_signal = SIGQUIT;
  std::shared_ptr<owned_io> io;  // null in the prototype; each copy makes its own
  void operator()(procmodel::worker_context& ctx) {
    io = std::make_shared<owned_io>(ctx);
    auto state = std::make_shared<handler_state>(io->alive);
    io->timer.async_wait([state](boost::system::error_code) {});
    io->acceptor.async_accept([state](boost::system::error_code, asio::ip::tcp::socket) {});
    ctx.ready();
    if (++rec.started == 2)
      ::kill(::getpid(), stop_signal);
  }
};

void run_until(int stop_signal) {
  rec.owned_destroyed = rec.owned_after_loop = rec.handler_destroyed = rec.handler_after_worker =
      rec.started = 0;
  sigset_t before;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &before);

  procmodel::options opt;
  opt.workers = 2;
  opt.listen = {"127.0.0.1:0"};
  opt.level = procmodel::log_level::warn;
  procmodel::basic_supervisor<io_owning_worker, procmodel::inline_spawner> master(
      opt, io_owning_worker{stop_signal, nullptr});
  int code = master.run();

  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  CHECK(code == 0);
  REQUIRE(rec.started == 2);
  CHECK(rec.owned_destroyed == 2);
  CHECK(rec.handler_destroyed == 2);
  CHECK(rec.owned_after_loop == 0);
  CHECK(rec.handler_after_worker == 0);
}

}  // namespace

TEST_CASE("a Worker owning an acceptor and a timer is torn down safely on QUIT",
          "[worker][teardown][inline]") {
  run_until(SIGQUIT);
}

TEST_CASE("a Worker owning an acceptor and a timer is torn down safely on TERM",
          "[worker][teardown][inline]") {
  run_until(SIGTERM);
}
