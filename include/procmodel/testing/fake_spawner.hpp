#pragma once

/// @file testing/fake_spawner.hpp
/// A Spawner that starts nothing, for testing a supervisor without forking:
/// it records each spawn_request, hands out fake pids, records kill() calls,
/// and reports at the next reap() the exits a test queued.
///
/// @code
/// using sup = procmodel::basic_supervisor<my_worker, procmodel::testing::fake_spawner,
///                                         procmodel::nginx_signals, procmodel::nginx_lifecycle,
///                                         procmodel::testing::fake_loop>;
/// // in the loop's script:
/// auto& spawner = procmodel::testing::fake_spawner::of(loop.context());
/// spawner.exit(1000, procmodel::testing::exited_with(1));
/// loop.raise(SIGCHLD);  // the supervisor reaps: 1000 exited
/// @endcode

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <deque>
#include <functional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <sys/types.h>

#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>

#include "../channel.hpp"
#include "../spawner.hpp"
#include "wait_status.hpp"

namespace procmodel::testing {

/// Records spawns, kills and reaps; pids count up from `first_pid` (1000).
///
/// `separate_processes()` is false, so basic_supervisor hands over the worker's
/// end of each channel (the last of `keep_fds`) instead of closing it; the
/// fake keeps it open as worker_channel(pid), where a test reads what the
/// master sent and writes what a worker would report.
class fake_spawner {
 public:
  /// Workers "share the master's process": their channel ends come to us.
  static constexpr bool separate_processes() noexcept { return false; }

  /// One spawn the fake answered.
  struct worker {
    pid_t pid = 0;             ///< the fake pid handed out
    spawn_request request;     ///< what the supervisor asked for
    channel channel_end;       ///< the worker's end of its channel, if adopted
    bool exited = false;       ///< an exit for it was reported by reap()
  };

  /// A spawner whose first worker gets `first_pid`.
  explicit fake_spawner(pid_t first_pid = 1000) noexcept : next_pid_(first_pid) {}
  fake_spawner(const fake_spawner&) = delete;
  fake_spawner& operator=(const fake_spawner&) = delete;
  ~fake_spawner() {
    if (registry_ && registry_->spawner == this) registry_->spawner = nullptr;
  }

  // --- the Spawner contract ---

  /// Records `req` and returns a fresh pid, or throws std::system_error if a
  /// failure was queued with fail_next().
  pid_t spawn(const spawn_request& req) {
    if (req.master) register_with(*req.master);
    if (!failures_.empty()) {
      int error = failures_.front();
      failures_.pop_front();
      throw std::system_error(error, std::generic_category(), "fake_spawner: spawn");
    }
    worker w;
    w.pid = next_pid_++;
    w.request = req;
    if (adopt_channels_ && !req.keep_fds.empty())
      w.channel_end = channel(detail::unique_fd(req.keep_fds.back()));
    workers_.push_back(std::move(w));
    return workers_.back().pid;
  }

  /// Records the kill; with exit_on_kill(), also queues a SIGKILL exit.
  void kill(pid_t id) {
    kills_.push_back(id);
    if (exit_on_kill_) exit(id, killed_by(SIGKILL));
  }

  /// Reports every queued exit, in the order queued.
  void reap(const std::function<void(pid_t, int)>& on_exit) {
    ++reaps_;
    auto due = std::exchange(exits_, {});
    for (const auto& [pid, status] : due) {
      if (worker* w = find(pid)) w->exited = true;
      on_exit(pid, status);
    }
  }

  // --- for the test ---

  /// Queues an exit of `pid` with wait status `status` for the next reap().
  void exit(pid_t pid, int status = exited_with(0)) { exits_.emplace_back(pid, status); }

  /// Queues an exit for every worker not yet reported exited.
  void exit_all(int status = exited_with(0)) {
    for (const auto& w : workers_)
      if (!w.exited && !queued(w.pid)) exit(w.pid, status);
  }

  /// Makes the next spawn() throw std::system_error(error); queue several for several.
  void fail_next(int error = EAGAIN) { failures_.push_back(error); }

  /// Whether kill() also queues an exit by SIGKILL.
  void exit_on_kill(bool on) noexcept { exit_on_kill_ = on; }

  /// Whether spawn() takes ownership of the last of keep_fds as the worker's
  /// channel end (on by default; basic_supervisor puts the channel there).
  void adopt_channels(bool on) noexcept { adopt_channels_ = on; }

  /// Every spawn answered, in order.
  [[nodiscard]] const std::deque<worker>& workers() const noexcept { return workers_; }
  /// The spawn requests answered, in order.
  [[nodiscard]] std::vector<spawn_request> requests() const {
    std::vector<spawn_request> out;
    for (const auto& w : workers_) out.push_back(w.request);
    return out;
  }
  /// How many spawns were answered (failures not counted).
  [[nodiscard]] std::size_t spawn_count() const noexcept { return workers_.size(); }
  /// The pids of workers not yet reported exited.
  [[nodiscard]] std::vector<pid_t> live() const {
    std::vector<pid_t> out;
    for (const auto& w : workers_)
      if (!w.exited) out.push_back(w.pid);
    return out;
  }
  /// The pids kill() was called with, in order.
  [[nodiscard]] const std::vector<pid_t>& kills() const noexcept { return kills_; }
  /// How many times reap() was called.
  [[nodiscard]] std::size_t reaps() const noexcept { return reaps_; }
  /// Exits queued and not yet reaped.
  [[nodiscard]] std::size_t pending_exits() const noexcept { return exits_.size(); }

  /// The record of `pid`; throws std::out_of_range if it was never spawned.
  worker& at(pid_t pid) {
    if (worker* w = find(pid)) return *w;
    throw std::out_of_range("fake_spawner: no worker " + std::to_string(pid));
  }
  /// The worker's end of `pid`'s channel.
  channel& worker_channel(pid_t pid) { return at(pid).channel_end; }

  /// The fake_spawner that last spawned for the master running on `master`
  /// (the spawn_request's `master`): how a test finds the spawner inside a
  /// basic_supervisor. Throws std::logic_error if there is none.
  static fake_spawner& of(boost::asio::io_context& master) {
    if (boost::asio::has_service<registry>(master))
      if (auto* s = boost::asio::use_service<registry>(master).spawner) return *s;
    throw std::logic_error("fake_spawner::of: no fake_spawner has spawned for this loop");
  }

 private:
  // Ties a spawner to the master's io_context, where a test can find it.
  class registry : public boost::asio::execution_context::service {
   public:
    using key_type = registry;
    static inline boost::asio::execution_context::id id;
    explicit registry(boost::asio::execution_context& ctx) : service(ctx) {}
    fake_spawner* spawner = nullptr;

   private:
    void shutdown() override {}
  };

  void register_with(boost::asio::io_context& master) {
    registry_ = &boost::asio::use_service<registry>(master);
    registry_->spawner = this;
  }

  worker* find(pid_t pid) {
    for (auto& w : workers_)
      if (w.pid == pid) return &w;
    return nullptr;
  }
  [[nodiscard]] bool queued(pid_t pid) const {
    for (const auto& e : exits_)
      if (e.first == pid) return true;
    return false;
  }

  pid_t next_pid_;
  std::deque<worker> workers_;
  std::vector<std::pair<pid_t, int>> exits_;
  std::deque<int> failures_;
  std::vector<pid_t> kills_;
  std::size_t reaps_ = 0;
  bool exit_on_kill_ = false;
  bool adopt_channels_ = true;
  registry* registry_ = nullptr;
};

}  // namespace procmodel::testing
