#pragma once

/// @file testing/fake_loop.hpp
/// A Loop that waits for nothing, for testing a supervisor without real
/// time or real signals: a manual clock, timers fired by advance(), signals
/// delivered by raise(), readability reported by readable()/poll_readable().
/// run() runs a script the test provides, then returns.
///
/// @code
/// sup.loop().on_run([&](procmodel::testing::fake_loop& loop) {
///   loop.raise(SIGQUIT);           // as if the master got SIGQUIT
///   loop.advance(10s);             // the kill escalation falls due
/// });
/// int code = sup.run();
/// @endcode

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include <poll.h>

#include <boost/asio/io_context.hpp>

#include "../lifecycle.hpp"

namespace procmodel::testing {

/// Satisfies the Loop contract of asio_loop.hpp with everything under the
/// test's control. Its io_context is never run.
class fake_loop {
 public:
  /// The clock's time points.
  using time_point = steady_clock::time_point;
  /// What run() runs.
  using script = std::function<void(fake_loop&)>;

  fake_loop() = default;
  fake_loop(const fake_loop&) = delete;
  fake_loop& operator=(const fake_loop&) = delete;

  /// Time zero of the manual clock (an arbitrary, fixed point).
  static time_point origin() noexcept { return time_point{} + std::chrono::hours(1); }

  // --- the Loop contract ---

  /// An io_context for whoever wants one; nothing runs it.
  boost::asio::io_context& context() noexcept { return io_; }
  /// The manual clock.
  [[nodiscard]] time_point now() const noexcept { return now_; }

  /// Stores the handler; raise() calls it. The process's signal mask is untouched.
  void watch_signals(std::span<const int> signals, std::function<void(int)> on_signal) {
    signals_.assign(signals.begin(), signals.end());
    on_signal_ = std::move(on_signal);
  }

  /// Stores the handler; readable() and poll_readable() call it.
  void watch_readable(int fd, std::function<bool()> on_readable) {
    watches_[fd] = std::move(on_readable);
  }

  /// Forgets `fd`'s handler.
  void unwatch(int fd) { watches_.erase(fd); }

  /// Arms (or re-arms) timer `id` to fire `after` from now().
  void arm_timer(timer_id id, milliseconds after, std::function<void()> fire) {
    timers_[id] = timer{now_ + after, std::move(fire)};
  }

  /// Disarms timer `id`.
  void cancel_timer(timer_id id) { timers_.erase(id); }

  /// Runs the script given to on_run(), then returns.
  void run() {
    ++runs_;
    if (script_) script_(*this);
  }

  /// Records that the loop was asked to stop.
  void stop() noexcept { ++stops_; }

  // --- for the test ---

  /// Sets what run() runs.
  void on_run(script s) { script_ = std::move(s); }

  /// Moves the clock `d` forward, firing each timer that falls due on the way,
  /// at its own deadline and in deadline order. Returns how many fired.
  std::size_t advance(milliseconds d) {
    const time_point target = now_ + d;
    std::size_t fired = 0;
    for (;;) {
      auto due = timers_.end();
      for (auto it = timers_.begin(); it != timers_.end(); ++it)
        if (it->second.at <= target && (due == timers_.end() || it->second.at < due->second.at))
          due = it;
      if (due == timers_.end()) break;
      now_ = std::max(now_, due->second.at);
      auto fire = std::move(due->second.fire);
      timers_.erase(due);
      ++fired;
      fire();
    }
    now_ = target;
    return fired;
  }

  /// Delivers `signo` to the watch_signals() handler; false if it is not watched.
  bool raise(int signo) {
    if (!on_signal_ || std::find(signals_.begin(), signals_.end(), signo) == signals_.end())
      return false;
    on_signal_(signo);
    return true;
  }

  /// Calls `fd`'s handler once, as if it were readable; unwatches it when the
  /// handler returns false. False if `fd` is not watched.
  bool readable(int fd) {
    auto it = watches_.find(fd);
    if (it == watches_.end()) return false;
    auto handler = it->second;  // it may unwatch or re-watch itself
    if (!handler()) unwatch(fd);
    return true;
  }

  /// Calls the handler of every watched descriptor that poll(2) finds readable
  /// (or hung up) now. Returns how many were called.
  std::size_t poll_readable() {
    std::vector<pollfd> fds;
    for (const auto& [fd, h] : watches_) fds.push_back({fd, POLLIN, 0});
    if (fds.empty() || ::poll(fds.data(), fds.size(), 0) <= 0) return 0;
    std::size_t called = 0;
    for (const auto& p : fds)
      if (p.revents != 0 && readable(p.fd)) ++called;
    return called;
  }

  /// The signals watch_signals() was given.
  [[nodiscard]] const std::vector<int>& watched_signals() const noexcept { return signals_; }
  /// Whether `fd` is watched.
  [[nodiscard]] bool watching(int fd) const { return watches_.count(fd) != 0; }
  /// The watched descriptors, ascending.
  [[nodiscard]] std::vector<int> watched_fds() const {
    std::vector<int> out;
    for (const auto& [fd, h] : watches_) out.push_back(fd);
    return out;
  }
  /// Whether timer `id` is armed.
  [[nodiscard]] bool armed(timer_id id) const { return timers_.count(id) != 0; }
  /// How long until timer `id` fires, if armed.
  [[nodiscard]] std::optional<milliseconds> due_in(timer_id id) const {
    auto it = timers_.find(id);
    if (it == timers_.end()) return std::nullopt;
    return std::chrono::duration_cast<milliseconds>(it->second.at - now_);
  }
  /// How many timers are armed.
  [[nodiscard]] std::size_t armed_timers() const noexcept { return timers_.size(); }
  /// Whether stop() was called.
  [[nodiscard]] bool stopped() const noexcept { return stops_ != 0; }
  /// How many times stop() was called.
  [[nodiscard]] std::size_t stop_calls() const noexcept { return stops_; }
  /// How many times run() was called.
  [[nodiscard]] std::size_t run_calls() const noexcept { return runs_; }

 private:
  struct timer {
    time_point at;
    std::function<void()> fire;
  };

  boost::asio::io_context io_{1};
  time_point now_ = origin();
  std::vector<int> signals_;
  std::function<void(int)> on_signal_;
  std::map<int, std::function<bool()>> watches_;
  std::map<timer_id, timer> timers_;
  script script_;
  std::size_t runs_ = 0;
  std::size_t stops_ = 0;
};

}  // namespace procmodel::testing
