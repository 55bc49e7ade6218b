#pragma once

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <initializer_list>
#include <span>
#include <stdexcept>

#include <fcntl.h>

#include <sys/signalfd.h>
#include <unistd.h>

#include "unique_fd.hpp"

namespace procmodel::detail {

/// Blocks `signals` in the calling thread and opens a signalfd for them, so a
/// signal becomes a readable descriptor on the loop; no handler ever runs.
class signal_fd {
 public:
  signal_fd() = default;
  explicit signal_fd(std::span<const int> signals) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : signals) sigaddset(&set, s);
    if (::pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) throw_errno("pthread_sigmask");
    fd_.reset(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!fd_) throw_errno("signalfd");
  }

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  /// Reads one pending signal; false when none is pending.
  bool read(signalfd_siginfo& info) const noexcept {
    ssize_t n = retry_eintr([&] { return ::read(fd_.get(), &info, sizeof info); });
    return n == static_cast<ssize_t>(sizeof info);
  }

 private:
  unique_fd fd_;
};

/// Makes `signals` the master's to watch, whatever its parent left behind:
/// exactly these blocked (a signalfd sees only blocked signals; anything else
/// blocked would also be blocked in what the master starts), and each back at
/// its default disposition. An inherited SIG_IGN on SIGCHLD makes the kernel
/// reap children itself, so no exit would ever be seen. Blocked first, so that
/// none of them can kill the process meanwhile.
inline void take_over_signals(std::span<const int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals) sigaddset(&set, s);
  if (::pthread_sigmask(SIG_SETMASK, &set, nullptr) != 0) throw_errno("pthread_sigmask");
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int s : signals)
    if (::sigaction(s, &dfl, nullptr) != 0) throw_errno("sigaction");
}

/// In a freshly forked worker: every signal at its default disposition, but
/// SIGPIPE ignored (a server wants EPIPE, not death). The mask stays the
/// master's, whose watched signals are blocked: one sent to the process group
/// while the worker starts waits for the worker's handlers instead of killing
/// it. signal_pipe unblocks them once it is ready.
inline void reset_dispositions_after_fork() noexcept {
  for (int s = 1; s < NSIG; ++s)
    if (s != SIGKILL && s != SIGSTOP) ::signal(s, SIG_DFL);
  ::signal(SIGPIPE, SIG_IGN);
}

/// As reset_dispositions_after_fork(), and every signal unblocked: for a
/// child that execs at once.
inline void reset_signals_after_fork() noexcept {
  reset_dispositions_after_fork();
  sigset_t none;
  sigemptyset(&none);
  ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
}

namespace signal_pipe_state {
inline std::atomic<int> write_fd{-1};
inline std::array<std::atomic<bool>, NSIG> pending{};

// Async-signal-safe: lock-free atomics and write(2).
inline void on_signal(int signo) noexcept {
  const int saved_errno = errno;
  if (signo > 0 && signo < NSIG) pending[static_cast<std::size_t>(signo)].store(true);
  if (int fd = write_fd.load(); fd >= 0) {
    char wake = 0;
    [[maybe_unused]] auto n = ::write(fd, &wake, 1);  // full pipe: a wake-up is pending anyway
  }
  errno = saved_errno;
}
}  // namespace signal_pipe_state

/// A worker's signals through handlers and a self-pipe, with an empty mask.
/// Unlike a signalfd, which needs its signals blocked, this leaves nothing
/// blocked for the programs the worker starts (`system`, `popen`, fork/exec),
/// and exec resets handled signals to their default. One per process.
class signal_pipe {
 public:
  /// Installs the handlers, then unblocks every signal: those sent while the
  /// worker started (and were blocked since the fork) arrive now.
  explicit signal_pipe(std::span<const int> signals) {
    if (signal_pipe_state::write_fd.load() >= 0) throw std::logic_error("a signal_pipe exists");
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw_errno("pipe2");
    read_.reset(fds[0]);
    write_.reset(fds[1]);
    signal_pipe_state::write_fd.store(write_.get());
    struct sigaction sa {};
    sa.sa_handler = signal_pipe_state::on_signal;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // the worker's blocking calls do not see EINTR
    for (int s : signals)
      if (::sigaction(s, &sa, nullptr) != 0) throw_errno("sigaction");
    sigset_t none;
    sigemptyset(&none);
    if (::pthread_sigmask(SIG_SETMASK, &none, nullptr) != 0) throw_errno("pthread_sigmask");
  }
  signal_pipe(const signal_pipe&) = delete;
  signal_pipe& operator=(const signal_pipe&) = delete;
  /// The handlers stay: a late signal is dropped, not the default action.
  ~signal_pipe() { signal_pipe_state::write_fd.store(-1); }

  [[nodiscard]] int fd() const noexcept { return read_.get(); }

  /// One pending signal; false when none is pending. Several of one kind
  /// count once, as with a signalfd.
  bool read(int& signo) const noexcept {
    char buf[64];
    while (retry_eintr([&] { return ::read(read_.get(), buf, sizeof buf); }) > 0) {
    }
    for (int s = 1; s < NSIG; ++s)
      if (signal_pipe_state::pending[static_cast<std::size_t>(s)].exchange(false)) {
        signo = s;
        return true;
      }
    return false;
  }

 private:
  unique_fd read_;
  unique_fd write_;
};

}  // namespace procmodel::detail
