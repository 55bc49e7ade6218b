#pragma once

#include <csignal>
#include <initializer_list>
#include <span>

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

/// In a freshly forked child: every signal unblocked and at its default
/// disposition, but SIGPIPE ignored (a server wants EPIPE, not death).
inline void reset_signals_after_fork() noexcept {
  sigset_t none;
  sigemptyset(&none);
  ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
  for (int s = 1; s < NSIG; ++s)
    if (s != SIGKILL && s != SIGSTOP) ::signal(s, SIG_DFL);
  ::signal(SIGPIPE, SIG_IGN);
}

}  // namespace procmodel::detail
