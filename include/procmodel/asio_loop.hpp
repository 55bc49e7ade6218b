#pragma once

/// @file asio_loop.hpp
/// The Loop policy: the reactor the master runs on. Signals arrive through a
/// signalfd (nothing runs in a signal handler), timers are keyed by the
/// lifecycle's timer ids, descriptors are watched for readability.
///
/// @par Loop policy contract (copy and edit to write your own)
/// @code
/// class my_loop {
///  public:
///   my_loop();  // the supervisor makes its own
///   boost::asio::io_context& context();                 // what spawners and workers post to
///   procmodel::steady_clock::time_point now() const;
///   // Block `signals` and call `on_signal(signo)` on the loop for each delivery.
///   void watch_signals(std::span<const int> signals, std::function<void(int)> on_signal);
///   // Call `on_readable()` on the loop while `fd` is readable, until it returns false.
///   void watch_readable(int fd, std::function<bool()> on_readable);
///   void unwatch(int fd);
///   void arm_timer(procmodel::timer_id id, procmodel::milliseconds after, std::function<void()> fire);
///   void cancel_timer(procmodel::timer_id id);
///   void run();   // until stop()
///   void stop();
/// };
/// @endcode

#include <concepts>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "detail/signal_fd.hpp"
#include "lifecycle.hpp"

namespace procmodel {

/// The default Loop: Boost.Asio's io_context, one thread.
class asio_loop {
 public:
  asio_loop() = default;
  asio_loop(const asio_loop&) = delete;
  asio_loop& operator=(const asio_loop&) = delete;
  ~asio_loop() {
    for (auto& [fd, w] : watches_) w->desc.release();
    if (signal_desc_) signal_desc_->release();
  }

  boost::asio::io_context& context() noexcept { return io_; }
  [[nodiscard]] steady_clock::time_point now() const { return steady_clock::now(); }

  void watch_signals(std::span<const int> signals, std::function<void(int)> on_signal) {
    signals_ = detail::signal_fd(signals);
    on_signal_ = std::move(on_signal);
    signal_desc_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, signals_.fd());
    wait_signal();
  }

  void watch_readable(int fd, std::function<bool()> on_readable) {
    unwatch(fd);
    auto w = std::make_shared<watch>(io_, fd, std::move(on_readable));
    watches_[fd] = w;
    wait_readable(w);
  }

  void unwatch(int fd) {
    auto it = watches_.find(fd);
    if (it == watches_.end()) return;
    it->second->active = false;
    it->second->desc.cancel();
    it->second->desc.release();
    watches_.erase(it);
  }

  void arm_timer(timer_id id, milliseconds after, std::function<void()> fire) {
    auto& t = timers_[id];
    if (!t) t = std::make_unique<timer>(io_);
    // Loop-wide, so that a handler of a timer since erased never matches a
    // new timer of the same id.
    std::uint64_t seq = ++last_seq_;
    t->seq = seq;
    t->t.expires_after(after);
    t->t.async_wait([this, id, seq, fire = std::move(fire)](boost::system::error_code ec) {
      auto it = timers_.find(id);
      // A timer re-armed or cancelled after it expired must not fire.
      if (ec || it == timers_.end() || it->second->seq != seq) return;
      // Forgotten once it fired: ids (pids, generations) do not repeat, and
      // the table must not grow with every one ever armed.
      timers_.erase(it);
      fire();
    });
  }

  void cancel_timer(timer_id id) {
    auto it = timers_.find(id);
    if (it == timers_.end()) return;
    // Destroying the timer cancels its wait; a handler already queued finds
    // no entry (or a newer one, with another seq) and does nothing.
    timers_.erase(it);
  }

  /// Runs until stop() (or until nothing is left to wait for).
  void run() {
    io_.restart();
    io_.run();
  }

  void stop() { io_.stop(); }

 private:
  struct watch {
    watch(boost::asio::io_context& io, int fd, std::function<bool()> f)
        : desc(io, fd), on_readable(std::move(f)) {}
    boost::asio::posix::stream_descriptor desc;
    std::function<bool()> on_readable;
    bool active = true;
  };
  struct timer {
    explicit timer(boost::asio::io_context& io) : t(io) {}
    boost::asio::steady_timer t;
    std::uint64_t seq = 0;
  };

  void wait_signal() {
    signal_desc_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                             [this](boost::system::error_code ec) {
                               if (ec) return;
                               signalfd_siginfo info{};
                               while (signals_.read(info)) on_signal_(static_cast<int>(info.ssi_signo));
                               wait_signal();
                             });
  }

  void wait_readable(const std::shared_ptr<watch>& w) {
    w->desc.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                       [this, w](boost::system::error_code ec) {
                         if (ec || !w->active) return;
                         if (w->on_readable() && w->active) wait_readable(w);
                         else if (w->active) unwatch(w->desc.native_handle());
                       });
  }

  boost::asio::io_context io_{1};
  detail::signal_fd signals_;
  std::function<void(int)> on_signal_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> signal_desc_;
  std::map<int, std::shared_ptr<watch>> watches_;
  std::map<timer_id, std::unique_ptr<timer>> timers_;  // armed timers only
  std::uint64_t last_seq_ = 0;
};

namespace detail {

/// Checks a Loop policy member by member; each message names what is missing.
template <class L>
constexpr bool check_loop_policy() {
  static_assert(std::default_initializable<L>, "Loop policy is missing: a default constructor L()");
  static_assert(requires(L& l) { { l.context() } -> std::same_as<boost::asio::io_context&>; },
                "Loop policy is missing: boost::asio::io_context& context()");
  static_assert(requires(const L& l) { { l.now() } -> std::same_as<steady_clock::time_point>; },
                "Loop policy is missing: steady_clock::time_point now() const");
  static_assert(requires(L& l, std::span<const int> s, std::function<void(int)> f) {
                  l.watch_signals(s, f);
                }, "Loop policy is missing: void watch_signals(std::span<const int>, std::function<void(int)>)");
  static_assert(requires(L& l, int fd, std::function<bool()> f) { l.watch_readable(fd, f); },
                "Loop policy is missing: void watch_readable(int fd, std::function<bool()>)");
  static_assert(requires(L& l, int fd) { l.unwatch(fd); },
                "Loop policy is missing: void unwatch(int fd)");
  static_assert(requires(L& l, timer_id id, milliseconds d, std::function<void()> f) {
                  l.arm_timer(id, d, f);
                }, "Loop policy is missing: void arm_timer(timer_id, milliseconds, std::function<void()>)");
  static_assert(requires(L& l, timer_id id) { l.cancel_timer(id); },
                "Loop policy is missing: void cancel_timer(timer_id)");
  static_assert(requires(L& l) { l.run(); l.stop(); },
                "Loop policy is missing: void run() and void stop()");
  return true;
}

}  // namespace detail
}  // namespace procmodel
