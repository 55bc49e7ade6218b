#pragma once

/// @file worker_context.hpp
/// What a worker sees: its loop, the listeners, its slot and generation, the
/// drain and reopen notifications, ready(), and connection tracking so that a
/// drain ends as soon as the last connection is done.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "channel.hpp"
#include "detail/signal_fd.hpp"
#include "lifecycle.hpp"
#include "listeners.hpp"
#include "log.hpp"
#include "signals.hpp"

namespace procmodel {

class worker_context;

namespace detail {
struct tracker_state {
  worker_context* owner = nullptr;  // null once the context is gone
};
}  // namespace detail

/// Keeps a drain from finishing while it lives: one per connection (or any
/// other piece of work that must end before the worker exits). Movable.
class connection_guard {
 public:
  connection_guard() = default;
  connection_guard(connection_guard&& o) noexcept = default;
  connection_guard& operator=(connection_guard&& o) noexcept {
    if (this != &o) {
      release();
      state_ = std::move(o.state_);
    }
    return *this;
  }
  connection_guard(const connection_guard&) = delete;
  connection_guard& operator=(const connection_guard&) = delete;
  ~connection_guard() { release(); }

  /// Ends the guard early.
  inline void release() noexcept;

 private:
  friend class worker_context;
  explicit connection_guard(std::shared_ptr<detail::tracker_state> s) noexcept
      : state_(std::move(s)) {}
  std::shared_ptr<detail::tracker_state> state_;
};

/// Why a worker is draining.
enum class drain_reason : std::uint8_t {
  quit,           ///< the master asked (graceful stop, one worker fewer)
  master_lost,    ///< the channel closed: the master is gone
  signal,         ///< a draining signal sent to the worker directly (SIGQUIT; SIGTERM too
                  ///< with graceful_term_signals)
};

/// The worker's view of the world. Passed to `Worker::operator()`.
class worker_context {
 public:
  /// The deadline a drain must meet: finish in-flight work by then.
  using deadline_handler = std::function<void(steady_clock::time_point deadline)>;

  /// The I/O loop this worker runs on (after operator() returns, until stop()).
  [[nodiscard]] boost::asio::io_context& loop() noexcept { return io_; }

  /// The listening sockets, in the order of the options' listen addresses.
  /// Once draining, each `fd` is -1: the number is closed or not ours to use.
  [[nodiscard]] const std::vector<listener>& listeners() const noexcept { return listeners_; }

  /// An acceptor on listener `i`, holding its own duplicate of the socket.
  /// Close it in your drain handler after drain_acceptor() or when done.
  /// Throws std::logic_error once draining: a draining worker accepts nothing new.
  /// Throws std::logic_error for a listener that does not exist.
  [[nodiscard("the acceptor closes its socket when dropped")]]
  boost::asio::ip::tcp::acceptor acceptor(std::size_t i = 0) {
    if (i >= listeners_.size())
      throw std::logic_error(fmt::format(
          "acceptor({}): this worker has {} listener(s); give the master an address to listen "
          "on (options::listen or --listen HOST:PORT, or socket activation)",
          i, listeners_.size()));
    const listener& l = listeners_[i];
    if (l.fd < 0)
      throw std::logic_error(fmt::format("acceptor({}): the listeners are gone (draining)", i));
    int fd = ::fcntl(l.fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) detail::throw_errno("dup listener");
    auto protocol = l.family == AF_INET6 ? boost::asio::ip::tcp::v6() : boost::asio::ip::tcp::v4();
    boost::asio::ip::tcp::acceptor a(io_);
    a.assign(protocol, fd);
    a.non_blocking(true);
    return a;
  }

  [[nodiscard]] unsigned slot() const noexcept { return slot_; }
  [[nodiscard]] std::uint64_t generation() const noexcept { return generation_; }
  [[nodiscard]] pid_t pid() const noexcept { return ::getpid(); }
  [[nodiscard]] logger& log() noexcept { return log_; }

  /// Tells the master this worker serves. Call once listening; later calls do nothing.
  void ready() {
    if (ready_sent_) return;
    ready_sent_ = true;
    channel_.send({message_type::ready, 0});
  }

  /// Called once when the worker must drain: stop accepting, finish what is in
  /// flight by `deadline`. The worker exits when every guard from track() is
  /// gone, or at the deadline.
  void on_drain(deadline_handler h) { drain_handlers_.push_back(std::move(h)); }

  /// Called after the worker's log file was reopened (USR1).
  void on_reopen(std::function<void()> h) { reopen_handlers_.push_back(std::move(h)); }

  [[nodiscard]] bool draining() const noexcept { return draining_; }
  /// Why; becomes master_lost if the master dies during the drain.
  [[nodiscard]] drain_reason why_draining() const noexcept { return drain_reason_; }
  /// The drain's deadline; moves earlier if the master dies during the drain.
  [[nodiscard]] steady_clock::time_point deadline() const noexcept { return deadline_; }

  /// Counts a live connection until the guard is destroyed.
  [[nodiscard("the guard counts the connection only while it lives: keep it with the connection")]]
  connection_guard track() {
    ++live_;
    return connection_guard(tracker_);
  }
  [[nodiscard]] std::size_t live_connections() const noexcept { return live_; }

  /// Ends the worker: the loop stops and the process exits with `code`.
  void stop(int code = 0) {
    exit_code_ = code;
    stopped_ = true;
    io_.stop();
  }
  [[nodiscard]] bool stopped() const noexcept { return stopped_; }

  /// Starts draining now, as if the master had asked. While draining already,
  /// only the master's loss counts: it brings the end forward to `within`.
  void drain(drain_reason why, milliseconds within) {
    if (stopped_) return;
    if (draining_) {
      if (why == drain_reason::master_lost) hasten(within);
      return;
    }
    draining_ = true;
    drain_reason_ = why;
    auto now = steady_clock::now();
    milliseconds margin = margin_of(within);
    deadline_ = now + within - margin;
    // No freeze here, even with the master gone: after an upgrade another
    // master may serve from the same sockets, and a filter would starve it.
    log_.info("draining ({}), deadline in {} ms", why == drain_reason::quit ? "asked by master"
                                                  : why == drain_reason::signal ? "a signal to the worker"
                                                                                : "master is gone",
              (within - margin).count());
    for (auto& h : drain_handlers_) h(deadline_);
    // Not handed out again: a forked worker's copies are closed (and the
    // numbers reused), the master's own may be closed by the master any time.
    for (auto& l : listeners_) {
      if (owns_listeners_) ::close(l.fd);
      l.fd = -1;
    }
    owns_listeners_ = false;
    arm_hard_stop(now + within - margin / 2);
    boost::asio::post(io_, [this] { maybe_finish(); });
  }

  /// Reopens the log file and tells on_reopen handlers.
  void reopen() {
    log_.reopen();
    for (auto& h : reopen_handlers_) h();
  }

  // --- for the runtime (not for workers) ---
  struct setup {
    unsigned slot = 0;
    std::uint64_t generation = 0;
    std::vector<listener> listeners;
    bool owns_listeners = true;  ///< close them on drain (a forked worker's copies)
    std::string log_file;
    log_level level = log_level::info;
    milliseconds shutdown_timeout{10'000};  ///< for a drain asked by SIGQUIT
    milliseconds orphan_timeout{500};       ///< for a drain after the master is gone
  };
  worker_context(boost::asio::io_context& io, channel ch, setup s)
      : io_(io),
        channel_(std::move(ch)),
        listeners_(std::move(s.listeners)),
        slot_(s.slot),
        generation_(s.generation),
        owns_listeners_(s.owns_listeners),
        shutdown_timeout_(s.shutdown_timeout),
        orphan_timeout_(s.orphan_timeout),
        hard_stop_(io) {
    tracker_->owner = this;
    log_.set_level(s.level);
    log_.set_role(fmt::format("worker {}", slot_));
    if (!s.log_file.empty()) log_.open(s.log_file);
  }
  ~worker_context() { tracker_->owner = nullptr; }
  worker_context(const worker_context&) = delete;
  worker_context& operator=(const worker_context&) = delete;
  [[nodiscard]] int exit_code() const noexcept { return exit_code_; }
  channel& master_channel() noexcept { return channel_; }
  [[nodiscard]] milliseconds shutdown_timeout() const noexcept { return shutdown_timeout_; }
  [[nodiscard]] milliseconds orphan_timeout() const noexcept { return orphan_timeout_; }

 private:
  friend class connection_guard;
  void untrack() noexcept {
    if (live_ > 0) --live_;
    if (draining_ && live_ == 0) boost::asio::post(io_, [this] { maybe_finish(); });
  }
  // Handlers get a deadline a little before the hard one, so that closing
  // idle connections happens before the loop is stopped.
  static milliseconds margin_of(milliseconds within) {
    return std::min(within / 5, milliseconds(500));
  }
  void arm_hard_stop(steady_clock::time_point at) {
    hard_stop_.expires_at(at);  // cancels a wait for an earlier setting
    hard_stop_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      log_.warn("drain deadline reached with {} connection(s) open; exiting", live_);
      stop(0);
    });
  }
  // The master died during a drain: no one will SIGKILL this worker at the old
  // deadline, and a new master may need the slot, so orphan_timeout rules.
  void hasten(milliseconds within) {
    auto now = steady_clock::now();
    milliseconds margin = margin_of(within);
    if (now + within - margin / 2 >= hard_stop_.expiry()) return;
    deadline_ = std::min(deadline_, now + within - margin);
    log_.info("master is gone while draining; deadline in {} ms", (within - margin).count());
    drain_reason_ = drain_reason::master_lost;
    arm_hard_stop(now + within - margin / 2);
  }
  void maybe_finish() {
    if (draining_ && live_ == 0 && !stopped_) {
      log_.info("drained; exiting");
      stop(0);
    }
  }

  boost::asio::io_context& io_;
  channel channel_;
  std::vector<listener> listeners_;
  unsigned slot_;
  std::uint64_t generation_;
  bool owns_listeners_;
  milliseconds shutdown_timeout_;
  milliseconds orphan_timeout_;
  std::shared_ptr<detail::tracker_state> tracker_ = std::make_shared<detail::tracker_state>();
  logger log_;
  bool ready_sent_ = false;
  bool draining_ = false;
  drain_reason drain_reason_ = drain_reason::quit;
  bool stopped_ = false;
  int exit_code_ = 0;
  std::size_t live_ = 0;
  steady_clock::time_point deadline_{};
  boost::asio::steady_timer hard_stop_;
  std::vector<deadline_handler> drain_handlers_;
  std::vector<std::function<void()>> reopen_handlers_;
};

inline void connection_guard::release() noexcept {
  if (auto s = std::move(state_); s && s->owner) s->owner->untrack();
}

/// Accepts every connection already queued on `acceptor` (without waiting),
/// hands each to `on_socket`, then closes the acceptor. For drain handlers:
/// nothing the kernel has accepted is left to be reset.
template <class OnSocket>
void drain_acceptor(boost::asio::ip::tcp::acceptor& acceptor, OnSocket&& on_socket) {
  if (!acceptor.is_open()) return;
  boost::system::error_code ec;
  acceptor.non_blocking(true, ec);
  for (;;) {
    boost::asio::ip::tcp::socket s(acceptor.get_executor());
    acceptor.accept(s, ec);
    if (ec == boost::asio::error::interrupted) continue;
    if (ec) break;
    on_socket(std::move(s));
  }
  acceptor.close(ec);
}

namespace detail {

// One accept loop's state, owned by its pending handlers.
template <class OnSocket>
class accept_state : public std::enable_shared_from_this<accept_state<OnSocket>> {
 public:
  accept_state(worker_context& ctx, std::shared_ptr<boost::asio::ip::tcp::acceptor> acceptor,
               OnSocket on_socket)
      : ctx_(ctx), acceptor_(std::move(acceptor)), on_socket_(std::move(on_socket)),
        retry_(ctx.loop()) {}

  void accept() {
    acceptor_->async_accept(
        [self = this->shared_from_this()](boost::system::error_code ec,
                                          boost::asio::ip::tcp::socket s) {
          self->accepted(ec, std::move(s));
        });
  }

 private:
  static constexpr milliseconds first_backoff{100};
  static constexpr milliseconds last_backoff{1000};

  void accepted(boost::system::error_code ec, boost::asio::ip::tcp::socket s) {
    if (!ec) {
      if (failures_ > 0)
        ctx_.log().notice("accepting again after {} failed accept()", failures_);
      failures_ = 0;
      backoff_ = milliseconds(0);
      // Even when a drain has just closed the acceptor: dropping the
      // connection would reset it.
      on_socket_(std::move(s));
    }
    if (!acceptor_->is_open() || ec == boost::asio::error::operation_aborted) return;
    if (!ec) return accept();
    // Out of descriptors (EMFILE, ENFILE) or memory, the connection stays
    // queued and the acceptor stays readable: retrying at once would spin.
    if (failures_++ == 0)
      ctx_.log().error("accept() failed: {}; retrying with backoff", ec.message());
    backoff_ = backoff_.count() == 0 ? first_backoff : std::min(backoff_ * 2, last_backoff);
    retry_.expires_after(backoff_);
    retry_.async_wait([self = this->shared_from_this()](boost::system::error_code e) {
      if (!e && self->acceptor_->is_open()) self->accept();
    });
  }

  worker_context& ctx_;
  std::shared_ptr<boost::asio::ip::tcp::acceptor> acceptor_;
  OnSocket on_socket_;
  boost::asio::steady_timer retry_;
  milliseconds backoff_{0};
  std::size_t failures_ = 0;
};

}  // namespace detail

/// Accepts connections on `acceptor` and hands each to `on_socket`, until the
/// acceptor is closed (drain_acceptor() does that). A failing accept (out of
/// descriptors, EMFILE/ENFILE, or memory) is logged once and retried after
/// 100 ms, doubling up to 1 s, never at once; the recovery is logged too. The
/// loop's handlers own the acceptor and `on_socket`.
template <class OnSocket>
void accept_loop(worker_context& ctx, std::shared_ptr<boost::asio::ip::tcp::acceptor> acceptor,
                 OnSocket on_socket) {
  std::make_shared<detail::accept_state<OnSocket>>(ctx, std::move(acceptor), std::move(on_socket))
      ->accept();
}

namespace detail {

/// A worker's io_context whose pending handlers can be destroyed on demand,
/// while its services (and so every I/O object) still work.
class worker_loop : public boost::asio::io_context {
 public:
  using boost::asio::io_context::io_context;
  /// Destroys every handler not yet run; services stay until the destructor.
  using boost::asio::io_context::shutdown;
};

/// Runs a Worker in this process or thread until it stops; returns its exit code.
/// Each worker gets its own copy of `prototype`. Teardown follows Asio's
/// rules in three steps: the loop's pending handlers are destroyed first
/// (they may own connections that refer to the worker and its context), then
/// the worker copy and the context (which may own acceptors and timers), and
/// the loop's services last, once no I/O object is left to use them.
template <class Signals, class Worker>
int run_worker(const Worker& prototype, channel ch, worker_context::setup setup, bool own_signals,
               const std::function<void(boost::asio::io_context*)>& attach) {
  worker_loop io(1);
  attach(&io);
  struct detach_guard {
    const std::function<void(boost::asio::io_context*)>& attach;
    ~detach_guard() { attach(nullptr); }
  } detach{attach};
  worker_context ctx(io, std::move(ch), std::move(setup));
  Worker worker = prototype;  // after ctx: what it owns may refer to ctx

  // Commands from the master; end-of-file means the master is gone.
  boost::asio::posix::stream_descriptor chan(io, ctx.master_channel().fd());
  std::function<void()> watch_channel = [&] {
    chan.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                    [&](boost::system::error_code ec) {
                      if (ec) return;
                      message m;
                      for (;;) {
                        auto st = ctx.master_channel().receive(m);
                        if (st == receive_status::would_block) break;
                        if (st != receive_status::received) {
                          ctx.drain(drain_reason::master_lost, ctx.orphan_timeout());
                          return;  // stop watching a dead channel
                        }
                        switch (m.type) {
                          case message_type::quit:
                            ctx.drain(drain_reason::quit, milliseconds(std::max<std::int64_t>(m.argument, 0)));
                            break;
                          case message_type::terminate: ctx.stop(0); return;
                          case message_type::reopen: ctx.reopen(); break;
                          default: break;
                        }
                      }
                      if (!ctx.stopped()) watch_channel();
                    });
  };
  watch_channel();

  // Signals sent to the worker directly (a forked worker only). Handlers and
  // a pipe, not a signalfd: the mask is left empty for programs the worker starts.
  std::unique_ptr<signal_pipe> sigs;
  std::unique_ptr<boost::asio::posix::stream_descriptor> sig_desc;
  std::function<void()> watch_signals = [&] {
    sig_desc->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                         [&](boost::system::error_code ec) {
                           if (ec) return;
                           int signo = 0;
                           while (sigs->read(signo)) {
                             switch (Signals::worker(signo)) {
                               case worker_reaction::terminate: ctx.stop(0); return;
                               case worker_reaction::drain:
                                 ctx.drain(drain_reason::signal, ctx.shutdown_timeout());
                                 break;
                               case worker_reaction::reopen: ctx.reopen(); break;
                               case worker_reaction::ignore: break;
                             }
                           }
                           watch_signals();
                         });
  };
  if (own_signals) {
    sigs = std::make_unique<signal_pipe>(std::span<const int>(Signals::watched));
    sig_desc = std::make_unique<boost::asio::posix::stream_descriptor>(io, sigs->fd());
    watch_signals();
  }

  int code = 0;
  try {
    worker(ctx);
    if (!ctx.stopped()) io.run();
    code = ctx.exit_code();
  } catch (const std::exception& e) {
    ctx.log().error("worker failed: {}", e.what());
    code = 1;
  }
  // The descriptors belong to the channel and the signal pipe, not to asio.
  chan.release();
  if (sig_desc) sig_desc->release();
  io.shutdown();  // handlers go while what they refer to lives
  return code;    // then the worker copy, ctx, and the loop's services, in that order
}

}  // namespace detail
}  // namespace procmodel
