#pragma once

/// @file spawner.hpp
/// The Spawner policy: how a worker comes to be. `fork_spawner` forks and runs
/// the worker in the child; `inline_spawner` runs each worker on a thread of
/// the master's own process (single-process mode for debugging, like nginx's
/// `master_process off`); `runtime_spawner`, the default, is one or the other
/// as `options::single_process` (`--single-process`) says.
///
/// @par Spawner policy contract (copy and edit to write your own)
/// @code
/// class my_spawner {
///  public:
///   // The supervisor makes its own once the command line is parsed: from the
///   // options when this constructor exists, else with my_spawner().
///   explicit my_spawner(const procmodel::options& opt);
///   // Whether workers are processes of their own (they get their own signals
///   // and copies of the listeners); may be static constexpr.
///   bool separate_processes() const;
///   // Start a worker running req.body; return an id that is unique while it lives
///   // (its pid for a process). Throw std::system_error when it cannot start.
///   pid_t spawn(const procmodel::spawn_request& req);
///   // End a worker that ignored its commands (SIGKILL for a process).
///   void kill(pid_t id);
///   // Report every worker that has exited since the last call (on SIGCHLD).
///   void reap(const std::function<void(pid_t id, int wait_status)>& on_exit);
/// };
/// @endcode

#include <cerrno>
#include <chrono>
#include <concepts>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "detail/close_fds.hpp"
#include "detail/profile_counters.hpp"
#include "detail/signal_fd.hpp"
#include "listener.hpp"
#include "log.hpp"
#include "options.hpp"
#include "program.hpp"

namespace procmodel {

namespace detail {
struct worker_plan;  // detail/worker_setup.hpp
}  // namespace detail

/// What a spawner is asked to start.
struct spawn_request {
  unsigned slot = 0;
  std::uint64_t generation = 0;
  /// Descriptors a forked worker keeps besides stdio: listeners, its channel end.
  std::vector<int> keep_fds;
  /// Runs the worker; returns its exit code. `own_process` is false when the
  /// worker shares the master's process. The body calls `attach(&loop)` once
  /// its loop exists and `attach(nullptr)` before the loop is gone, so that
  /// an in-process worker can be stopped from outside.
  using attach_fn = std::function<void(boost::asio::io_context*)>;
  std::function<int(bool own_process, const attach_fn& attach)> body;
  /// The master's loop, where in-process workers report their exit.
  boost::asio::io_context* master = nullptr;
  /// Called on the master's loop when an in-process worker ends.
  std::function<void(pid_t id, int wait_status)> on_exit;

  // For a spawner that runs a program instead of `body` (exec_spawner).
  /// The program, when the Worker names one (`exec_program()`); else null.
  const program* exec = nullptr;
  /// The worker's end of its channel (in keep_fds): such a spawner speaks
  /// for the program on it.
  int channel_fd = -1;
  /// The listeners among keep_fds, in order, with their addresses.
  std::vector<listener> listeners;
  /// Applies the per-worker settings (limits, CPU, user) in the child;
  /// false (logged) when one failed. Empty when there are none.
  std::function<bool()> enter;
  /// The same settings as data, resolved by the master (null: none); it
  /// outlives spawn(). exec_spawner applies them without `enter`, in a
  /// child that shares the master's memory.
  const detail::worker_plan* plan = nullptr;
  /// The heartbeat the master expects (0: none): WATCHDOG_USEC for a program.
  std::chrono::milliseconds heartbeat_timeout{0};
  /// Where a spawner reports what it sees of a worker (a bad notify datagram).
  std::function<void(log_level, const std::string&)> log;
};

/// Forks; the child runs the worker and exits without unwinding the master's
/// stack, holding only stdio, the listeners and its channel.
class fork_spawner {
 public:
  static constexpr bool separate_processes() noexcept { return true; }

  pid_t spawn(const spawn_request& req) {
    std::fflush(nullptr);  // or buffered output is written twice
    pid_t pid = ::fork();
    if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
    if (pid > 0) return pid;
    int code = 1;
    try {
      // Signals stay blocked, as in the master, until the worker's handlers exist.
      detail::reset_dispositions_after_fork();
      detail::close_all_except(req.keep_fds);
      code = req.body(true, [](boost::asio::io_context*) {});
    } catch (const std::exception& e) {
      std::fprintf(stderr, "worker %d: %s\n", static_cast<int>(::getpid()), e.what());
    } catch (...) {
    }
    std::fflush(nullptr);
    detail::write_profile_counters();  // exit() would write them; _exit() does not
    ::_exit(code);
  }

  void kill(pid_t pid) { ::kill(pid, SIGKILL); }

  /// Reaps every exited child, ours or adopted: no zombie is left behind.
  void reap(const std::function<void(pid_t, int)>& on_exit) {
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) {
        if (pid < 0 && errno == EINTR) continue;
        return;
      }
      on_exit(pid, status);
    }
  }
};

/// Runs each worker on a thread of the master's process. Ids are negative so
/// they can never be mistaken for a process. For debugging (one process to
/// attach a debugger to), not for production: a crash takes the master down.
class inline_spawner {
 public:
  static constexpr bool separate_processes() noexcept { return false; }

  inline_spawner() = default;
  inline_spawner(const inline_spawner&) = delete;
  inline_spawner& operator=(const inline_spawner&) = delete;
  ~inline_spawner() {
    for (auto& [id, w] : workers_) w.loop->stop();
    for (auto& [id, w] : workers_)
      if (w.thread.joinable()) w.thread.join();
  }

  pid_t spawn(const spawn_request& req) {
    pid_t id = next_id_--;
    auto loop = std::make_shared<stoppable>();
    auto& w = workers_[id];
    w.loop = loop;
    w.thread = std::thread([this, id, loop, body = req.body, master = req.master,
                            on_exit = req.on_exit] {
      int code = 1;
      try {
        code = body(false, [&](boost::asio::io_context* io) { loop->attach(io); });
      } catch (const std::exception& e) {
        std::fprintf(stderr, "in-process worker %d: %s\n", static_cast<int>(id), e.what());
      }
      boost::asio::post(*master, [this, id, code, on_exit] {
        auto it = workers_.find(id);
        if (it == workers_.end()) return;
        it->second.thread.join();
        workers_.erase(it);
        on_exit(id, W_EXITCODE(code & 0xff, 0));
      });
    });
    return id;
  }

  void kill(pid_t id) {
    if (auto it = workers_.find(id); it != workers_.end()) it->second.loop->stop();
  }

  void reap(const std::function<void(pid_t, int)>& on_exit) {
    // Threads report through the loop; children of ours (helpers) still exist.
    fork_spawner{}.reap(on_exit);
  }

 private:
  // The worker thread's loop, stoppable from the master's thread.
  class stoppable {
   public:
    void attach(boost::asio::io_context* io) {
      std::lock_guard lock(mutex_);
      io_ = io;
      if (io_ && stop_requested_) io_->stop();
    }
    void stop() {
      std::lock_guard lock(mutex_);
      stop_requested_ = true;
      if (io_) io_->stop();
    }

   private:
    std::mutex mutex_;
    boost::asio::io_context* io_ = nullptr;
    bool stop_requested_ = false;
  };
  struct worker {
    std::thread thread;
    std::shared_ptr<stoppable> loop;
  };
  std::map<pid_t, worker> workers_;
  pid_t next_id_ = -1;
};

/// Forks, or with `options::single_process` (`--single-process`) runs the
/// workers as threads of the master, as inline_spawner does: the choice is
/// made when the program runs, not when it is compiled. The default Spawner.
class runtime_spawner {
 public:
  /// Forks.
  runtime_spawner() = default;
  /// Threads of the master when `single_process`, else processes.
  explicit runtime_spawner(bool single_process) {
    if (single_process) threads_.emplace();
  }
  /// As `opt.single_process` says.
  explicit runtime_spawner(const options& opt) : runtime_spawner(opt.single_process) {}

  [[nodiscard]] bool separate_processes() const noexcept { return !threads_; }

  pid_t spawn(const spawn_request& req) {
    return threads_ ? threads_->spawn(req) : fork_spawner{}.spawn(req);
  }

  void kill(pid_t id) {
    if (threads_) threads_->kill(id); else fork_spawner{}.kill(id);
  }

  void reap(const std::function<void(pid_t, int)>& on_exit) {
    if (threads_) threads_->reap(on_exit); else fork_spawner{}.reap(on_exit);
  }

 private:
  std::optional<inline_spawner> threads_;  // non-movable: built in place
};

namespace detail {

/// Checks a Spawner policy member by member; each message names what is missing.
template <class S>
constexpr bool check_spawner_policy() {
  static_assert(std::default_initializable<S> || std::constructible_from<S, const options&>,
                "Spawner policy is missing: a constructor S() or S(const procmodel::options&)");
  static_assert(requires(const S& s) { { s.separate_processes() } -> std::convertible_to<bool>; },
                "Spawner policy is missing: bool separate_processes() const");
  static_assert(requires(S& s, const spawn_request& r) { { s.spawn(r) } -> std::same_as<pid_t>; },
                "Spawner policy is missing: pid_t spawn(const spawn_request&)");
  static_assert(requires(S& s, pid_t id) { s.kill(id); },
                "Spawner policy is missing: void kill(pid_t id)");
  static_assert(requires(S& s, const std::function<void(pid_t, int)>& f) { s.reap(f); },
                "Spawner policy is missing: void reap(const std::function<void(pid_t, int)>&)");
  return true;
}

}  // namespace detail
}  // namespace procmodel
