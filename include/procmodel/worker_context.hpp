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
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include "channel.hpp"
#include "detail/config.hpp"
#include "listener.hpp"
#include "log.hpp"
#include "restart_policy.hpp"

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
  PROCMODEL_DECL void release() noexcept;

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

  /// An acceptor on TCP listener `i`, on a duplicate of the socket that is
  /// the worker's own (closing it leaves the listener to the master and the
  /// other workers). On the drain, hand it to drain_acceptor(), which accepts
  /// what is queued and closes it: nothing is left to close. serve() does all
  /// of this for every listener.
  /// Throws std::logic_error once draining: a draining worker accepts nothing new.
  /// Throws std::logic_error for a listener that does not exist or is not TCP.
  [[nodiscard("the acceptor closes its socket when dropped")]] PROCMODEL_DECL
      boost::asio::ip::tcp::acceptor acceptor(std::size_t i = 0);

  /// An acceptor on unix-socket listener `i` (`unix:/PATH`), as acceptor() is
  /// for TCP ones. Throws std::logic_error as acceptor() does, and for a
  /// listener that is not a unix socket.
  [[nodiscard("the acceptor closes its socket when dropped")]] PROCMODEL_DECL
      boost::asio::local::stream_protocol::acceptor local_acceptor(std::size_t i = 0);

  /// A UDP socket on datagram listener `i` (`udp://HOST:PORT`), holding its
  /// own duplicate: receive from it until the drain. A draining worker reads
  /// what is already queued (non-blocking, until it would block) and closes
  /// it: the socket lives on in the master and in the workers that serve on,
  /// which receive what arrives later. Throws std::logic_error as acceptor()
  /// does, and for a listener that is not UDP.
  [[nodiscard("the socket closes when dropped")]] PROCMODEL_DECL
      boost::asio::ip::udp::socket datagram_socket(std::size_t i = 0);

  [[nodiscard]] unsigned slot() const noexcept { return slot_; }
  [[nodiscard]] std::uint64_t generation() const noexcept { return generation_; }
  [[nodiscard]] pid_t pid() const noexcept { return ::getpid(); }
  [[nodiscard]] logger& log() noexcept { return log_; }

  /// Tells the master this worker serves. Call once listening; later calls do nothing.
  PROCMODEL_DECL void ready();

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

  /// Counts `n` units of work done (requests served), for recycling after
  /// options::max_requests. Cheap: the master hears of it in batches.
  void served(std::uint64_t n = 1) {
    served_ += n;
    if (report_every_ != 0 && served_ - reported_ >= report_every_) report_served();
  }
  /// Units of work counted by served().
  [[nodiscard]] std::uint64_t served_count() const noexcept { return served_; }

  /// Starts draining now, as if the master had asked. While draining already,
  /// only the master's loss counts: it brings the end forward to `within`.
  PROCMODEL_DECL void drain(drain_reason why, milliseconds within);

  /// Reopens the log file and tells on_reopen handlers.
  PROCMODEL_DECL void reopen();

  // --- for the runtime (not for workers) ---
  struct setup {
    unsigned slot = 0;
    std::uint64_t generation = 0;
    std::vector<listener> listeners;
    bool owns_listeners = true;  ///< close them on drain, or at the end (the worker's copies)
    std::string log_file;
    log_level level = log_level::info;
    milliseconds shutdown_timeout{10'000};  ///< for a drain asked by SIGQUIT
    milliseconds orphan_timeout{500};       ///< for a drain after the master is gone
    milliseconds heartbeat_interval{0};     ///< 0: no heartbeats
    std::uint64_t report_every = 0;         ///< served() reports in batches of this; 0: never
  };
  PROCMODEL_DECL worker_context(boost::asio::io_context& io, channel ch, setup s);
  PROCMODEL_DECL ~worker_context();
  worker_context(const worker_context&) = delete;
  worker_context& operator=(const worker_context&) = delete;
  [[nodiscard]] int exit_code() const noexcept { return exit_code_; }
  channel& master_channel() noexcept { return channel_; }
  [[nodiscard]] milliseconds shutdown_timeout() const noexcept { return shutdown_timeout_; }
  [[nodiscard]] milliseconds orphan_timeout() const noexcept { return orphan_timeout_; }
  /// Sends a heartbeat now and then every heartbeat interval, from the loop,
  /// until the worker stops. The loop never runs out of work meanwhile.
  PROCMODEL_DECL void start_heartbeat();

 private:
  friend class connection_guard;
  PROCMODEL_DECL void untrack() noexcept;
  // Closes the listeners this worker owns; none is handed out afterwards.
  PROCMODEL_DECL void release_listeners() noexcept;
  // A duplicate of listener `i` for `call` (acceptor, local_acceptor or
  // datagram_socket), which must be the call for that kind of listener.
  PROCMODEL_DECL int duplicate_listener(std::string_view call, std::size_t i);

  // Handlers get a deadline a little before the hard one, so that closing
  // idle connections happens before the loop is stopped.
  static milliseconds margin_of(milliseconds within) {
    return std::min(within / 5, milliseconds(500));
  }
  PROCMODEL_DECL void arm_hard_stop(steady_clock::time_point at);

  // The master died during a drain: no one will SIGKILL this worker at the old
  // deadline, and a new master may need the slot, so orphan_timeout rules.
  PROCMODEL_DECL void hasten(milliseconds within);

  PROCMODEL_DECL void maybe_finish();
  PROCMODEL_DECL void report_served();

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
  milliseconds heartbeat_interval_;
  boost::asio::steady_timer heartbeat_;
  std::uint64_t served_ = 0;
  std::uint64_t reported_ = 0;
  std::uint64_t report_every_;
  std::vector<deadline_handler> drain_handlers_;
  std::vector<std::function<void()>> reopen_handlers_;
};

namespace detail {

/// Checks a Worker type; each message names the rule it breaks.
template <class Worker>
constexpr bool check_worker() {
  static_assert(std::is_invocable_v<Worker&, worker_context&>,
                "Worker is missing: void operator()(procmodel::worker_context&)");
  static_assert(std::is_copy_constructible_v<Worker>,
                "Worker must be copy-constructible: each worker process gets its own copy of the "
                "prototype (and a reload edits a copy); keep non-copyable state in the worker's "
                "handlers or behind shared_ptr");
  return true;
}

}  // namespace detail

/// Accepts every connection already queued on `acceptor` (without waiting),
/// hands each to `on_socket`, then closes the acceptor. For drain handlers:
/// nothing the kernel has accepted is left to be reset.
template <class Protocol, class Executor, class OnSocket>
void drain_acceptor(boost::asio::basic_socket_acceptor<Protocol, Executor>& acceptor,
                    OnSocket&& on_socket) {
  if (!acceptor.is_open()) return;
  boost::system::error_code ec;
  acceptor.non_blocking(true, ec);
  for (;;) {
    typename Protocol::socket s(acceptor.get_executor());
    acceptor.accept(s, ec);
    if (ec == boost::asio::error::interrupted) continue;
    if (ec) break;
    on_socket(std::move(s));
  }
  acceptor.close(ec);
}

namespace detail {

// One accept loop's state, owned by its pending handlers.
template <class Acceptor, class OnSocket>
class accept_state : public std::enable_shared_from_this<accept_state<Acceptor, OnSocket>> {
  using socket = typename Acceptor::protocol_type::socket;

 public:
  accept_state(worker_context& ctx, std::shared_ptr<Acceptor> acceptor, OnSocket on_socket)
      : ctx_(ctx), acceptor_(std::move(acceptor)), on_socket_(std::move(on_socket)),
        retry_(ctx.loop()) {}

  void accept() {
    acceptor_->async_accept(
        [self = this->shared_from_this()](boost::system::error_code ec, socket s) {
          self->accepted(ec, std::move(s));
        });
  }

 private:
  static constexpr milliseconds first_backoff{100};
  static constexpr milliseconds last_backoff{1000};

  void accepted(boost::system::error_code ec, socket s) {
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
  std::shared_ptr<Acceptor> acceptor_;
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
template <class Acceptor, class OnSocket>
void accept_loop(worker_context& ctx, std::shared_ptr<Acceptor> acceptor, OnSocket on_socket) {
  std::make_shared<detail::accept_state<Acceptor, OnSocket>>(ctx, std::move(acceptor),
                                                             std::move(on_socket))
      ->accept();
}

}  // namespace procmodel

#if defined(PROCMODEL_HEADER_ONLY)
#include "impl/worker_context.ipp"
#endif
