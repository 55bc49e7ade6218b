#pragma once

/// @file connections.hpp
/// The accept/serve/drain pattern, written once: serve() accepts on the
/// listeners and, on a drain, takes what the kernel queued; a connection_set
/// counts the connections (so the worker exits when the last one goes), tells
/// them that the worker drains, and closes the idle ones at the drain
/// deadline.

#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include <fmt/core.h>

#include "detail/config.hpp"
#include "worker_context.hpp"

namespace procmodel {

class connection_set;

namespace detail {

// Circular and intrusive: a node unlinks itself from whichever list holds it.
struct list_hook {
  list_hook* prev = this;
  list_hook* next = this;
  list_hook() = default;
  list_hook(const list_hook&) = delete;
  list_hook& operator=(const list_hook&) = delete;
  ~list_hook() { unlink(); }
  [[nodiscard]] bool empty() const noexcept { return next == this; }
  void unlink() noexcept {
    prev->next = next;
    next->prev = prev;
    prev = next = this;
  }
  void link_before(list_hook& at) noexcept {
    unlink();
    prev = at.prev;
    next = &at;
    at.prev->next = this;
    at.prev = this;
  }
};

struct connection_node : list_hook {
  connection_guard guard;
  std::function<void()> close;
  bool idle = false;
};

}  // namespace detail

/// One connection's place in a connection_set: it keeps the drain from
/// finishing while it lives, and says whether the connection is idle (between
/// requests, nothing received), which the set may close at the drain
/// deadline. Movable; declare it as the session's last member, after what its
/// close action uses.
class connection {
 public:
  connection() noexcept = default;
  connection(connection&&) noexcept = default;
  connection& operator=(connection&& o) noexcept {
    if (this != &o) {
      leave();
      set_ = std::move(o.set_);
      node_ = std::move(o.node_);
    }
    return *this;
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() { leave(); }

  /// How the set closes this connection when it must: while idle at the
  /// drain deadline. Without one, an idle connection stays until the worker's
  /// hard stop.
  PROCMODEL_DECL void on_close(std::function<void()> close);
  /// Waiting for the next request with nothing received: closed if still so
  /// at the drain deadline; after the deadline, closed at once.
  PROCMODEL_DECL void idle();
  /// Serving a request: kept until it is done (or the worker's hard stop).
  void busy() noexcept {
    if (node_) node_->idle = false;
  }
  /// Whether the worker drains: end the connection after this answer (HTTP:
  /// `Connection: close`).
  [[nodiscard]] bool draining() const noexcept;
  /// Leaves the set now; the drain no longer waits for this connection.
  PROCMODEL_DECL void leave() noexcept;

 private:
  friend class connection_set;
  connection(std::shared_ptr<connection_set> set, std::unique_ptr<detail::connection_node> node)
      : set_(std::move(set)), node_(std::move(node)) {}
  std::shared_ptr<connection_set> set_;
  std::unique_ptr<detail::connection_node> node_;
};

/// A worker's connections. On a drain they see draining(); at the deadline
/// the handlers get, the idle ones are closed, and one that becomes idle
/// later is closed then; busy ones finish (or meet the worker's hard stop).
/// The worker exits as soon as the last connection has left. Connections
/// share ownership of their set; it must not outlive the worker's loop.
class connection_set : public std::enable_shared_from_this<connection_set> {
  struct token {};

 public:
  /// A set that follows `ctx`'s drain, even one that started already.
  [[nodiscard]] PROCMODEL_DECL static std::shared_ptr<connection_set> create(worker_context& ctx);

  PROCMODEL_DECL connection_set(token, worker_context& ctx);
  PROCMODEL_DECL ~connection_set();
  connection_set(const connection_set&) = delete;
  connection_set& operator=(const connection_set&) = delete;

  /// A new member, busy until it says idle().
  [[nodiscard]] PROCMODEL_DECL connection join();

  /// The connections in the set.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool draining() const noexcept { return ctx_.draining(); }
  /// Whether the drain deadline has passed: idle now means closed.
  [[nodiscard]] bool past_deadline() const noexcept { return past_deadline_; }

  /// Closes every idle connection now, as the drain deadline does.
  PROCMODEL_DECL void close_idle();

 private:
  friend class connection;

  PROCMODEL_DECL void drain(steady_clock::time_point deadline);
  PROCMODEL_DECL static void close(detail::connection_node& n);

  worker_context& ctx_;
  detail::list_hook members_;
  std::size_t size_ = 0;
  bool past_deadline_ = false;
  boost::asio::steady_timer deadline_timer_;
};

inline bool connection::draining() const noexcept { return set_ && set_->draining(); }

/// Called with each accepted socket and its connection, already in the set.
using connection_handler = std::function<void(boost::asio::ip::tcp::socket, connection)>;
/// The same for a unix-socket listener (`unix:/PATH`).
using local_connection_handler =
    std::function<void(boost::asio::local::stream_protocol::socket, connection)>;

namespace detail {

// Accepts on `acceptor` into `set` until the drain, then takes what is queued.
template <class Acceptor, class SocketHandler>
void serve_acceptor(worker_context& ctx, std::shared_ptr<Acceptor> acceptor,
                    const std::shared_ptr<connection_set>& set,
                    const std::shared_ptr<SocketHandler>& handler) {
  using socket = typename Acceptor::protocol_type::socket;
  std::function<void(socket)> on_socket = [set, handler](socket s) {
    (*handler)(std::move(s), set->join());
  };
  accept_loop(ctx, acceptor, on_socket);
  ctx.on_drain([acceptor, on_socket](steady_clock::time_point) {
    drain_acceptor(*acceptor, on_socket);
  });
}

// Serves listeners [first, last) with `handler` (`every`: serve(ctx, f),
// which leaves datagram listeners alone): TCP ones if it takes a
// tcp::socket, unix ones if it takes a local socket (a generic lambda takes
// both). Every server shares the two std::function types, and one whose
// handler takes only TCP sockets instantiates nothing for unix ones.
template <class Handler>
void serve_listeners(worker_context& ctx, std::size_t first, std::size_t last,
                     const std::shared_ptr<connection_set>& set, Handler&& handler,
                     bool every) {
  using type = std::decay_t<Handler>;
  using local_socket = boost::asio::local::stream_protocol::socket;
  constexpr bool takes_tcp = std::is_invocable_v<type&, boost::asio::ip::tcp::socket, connection>;
  constexpr bool takes_local = std::is_invocable_v<type&, local_socket, connection>;
  static_assert(takes_tcp || takes_local,
                "serve(): the handler must be callable as void(tcp::socket, procmodel::connection) "
                "(or, for unix sockets, void(local::stream_protocol::socket, procmodel::connection))");
  static_assert(std::is_copy_constructible_v<type>,
                "serve(): the handler must be copyable (own what it uses through shared_ptr)");
  std::shared_ptr<connection_handler> tcp;
  std::shared_ptr<local_connection_handler> local;
  if constexpr (takes_tcp) tcp = std::make_shared<connection_handler>(handler);
  if constexpr (takes_local) local = std::make_shared<local_connection_handler>(handler);
  for (std::size_t i = first; i < last; ++i) {
    // Datagram listeners have no connections: serve(ctx, f) leaves them to
    // the worker (datagram_socket()); serve(ctx, i, f) on one is a mistake.
    if (i < ctx.listeners().size() && ctx.listeners()[i].datagram()) {
      if (every) continue;
      throw std::logic_error(fmt::format(
          "serve(): listener {} is {}, a datagram socket; use ctx.datagram_socket({})", i,
          ctx.listeners()[i].local, i));
    }
    const bool unix_socket = i < ctx.listeners().size() && ctx.listeners()[i].family == AF_UNIX;
    if (unix_socket) {
      if constexpr (takes_local)
        serve_acceptor(ctx, std::make_shared<boost::asio::local::stream_protocol::acceptor>(
                                ctx.local_acceptor(i)), set, local);
      else
        throw std::logic_error(fmt::format(
            "serve(): listener {} is {}, and the handler takes only tcp::socket; give it one that "
            "takes local::stream_protocol::socket too (a generic lambda takes both)",
            i, ctx.listeners()[i].local));
    } else {
      if constexpr (takes_tcp)
        serve_acceptor(ctx, std::make_shared<boost::asio::ip::tcp::acceptor>(ctx.acceptor(i)),
                       set, tcp);
      else
        throw std::logic_error(fmt::format(
            "serve(): listener {} is not a unix socket, and the handler takes only "
            "local::stream_protocol::socket",
            i));
    }
  }
}

}  // namespace detail

/// Serves listener `i`: accepts until the worker drains, then accepts what the
/// kernel already queued and stops; each connection goes to `handler`, a
/// `void(tcp::socket, connection)`, with its place in the returned set. A
/// unix-socket listener needs a handler that takes a
/// `local::stream_protocol::socket` (a generic lambda, `auto socket`, takes
/// both). Call ctx.ready() once serving.
/// @par Example
/// @code
/// procmodel::serve(ctx, 0, [](tcp::socket s, procmodel::connection c) {
///   std::make_shared<session>(std::move(s), std::move(c))->read();
/// });
/// ctx.ready();
/// @endcode
template <class Handler>
std::shared_ptr<connection_set> serve(worker_context& ctx, std::size_t i, Handler handler) {
  auto set = connection_set::create(ctx);
  detail::serve_listeners(ctx, i, i + 1, set, std::move(handler), false);
  return set;
}

/// Serves every stream listener (TCP, unix), as serve(ctx, i, handler) does,
/// with one set; UDP listeners are the worker's to read (datagram_socket()).
template <class Handler>
std::shared_ptr<connection_set> serve(worker_context& ctx, Handler handler) {
  auto set = connection_set::create(ctx);
  detail::serve_listeners(ctx, 0, ctx.listeners().size(), set, std::move(handler), true);
  return set;
}

}  // namespace procmodel

#if defined(PROCMODEL_HEADER_ONLY)
#include "impl/connections.ipp"
#endif
