#pragma once

#include <cerrno>
#include <csignal>
#include <cstdlib>

#include <fcntl.h>
#include <unistd.h>

#include "unique_fd.hpp"

namespace procmodel::detail {

/// Opens /dev/null on whichever of descriptors 0, 1 and 2 is closed. A
/// program started with them closed would otherwise get its log, a listener
/// or a pipe there, and stdio (or a daemon's redirection to /dev/null)
/// would later write to it or replace it.
inline void open_missing_stdio() noexcept {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    int null = ::open("/dev/null", O_RDWR);  // inherited by what we start: no O_CLOEXEC
    if (null >= 0 && null != fd) {
      ::dup2(null, fd);
      ::close(null);
    }
  }
}

/// `fd` moved above the stdio descriptors (close-on-exec), so that nothing
/// meant for stdio ever reaches it.
inline unique_fd above_stdio(int fd) {
  unique_fd f(fd);
  if (fd > 2) return f;
  unique_fd moved(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
  if (!moved) throw_errno("fcntl");
  return moved;
}

/// Detaches from the terminal: fork, setsid, stdin and stdout (and stderr
/// unless `keep_stderr`) to /dev/null. The parent waits until the daemon says
/// it is up (notify_started) or gives up, and exits with the daemon's verdict,
/// so `prog --daemon` fails visibly when the daemon cannot start.
class daemonizer {
 public:
  void detach(bool keep_stderr) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe");
    // The verdict travels alone on this pipe: never on a descriptor that
    // stdio, the log or /dev/null may take over.
    unique_fd rd = above_stdio(fds[0]);
    unique_fd wr = above_stdio(fds[1]);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid > 0) {
      wr.reset();
      // The launcher waits as a plain program: a ^C ends it.
      sigset_t none;
      sigemptyset(&none);
      ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
      char verdict = 1;
      ssize_t n = retry_eintr([&] { return ::read(rd.get(), &verdict, 1); });
      ::_exit(n == 1 ? verdict : 1);
    }
    rd.reset();
    ::setsid();
    unique_fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (null) {
      ::dup2(null.get(), STDIN_FILENO);
      ::dup2(null.get(), STDOUT_FILENO);
      if (!keep_stderr) ::dup2(null.get(), STDERR_FILENO);
    }
    report_ = std::move(wr);
  }

  /// Tells the waiting parent how starting went (0: up and serving).
  void notify_started(char code = 0) noexcept {
    if (!report_) return;
    retry_eintr([&] { return ::write(report_.get(), &code, 1); });
    report_.reset();
  }

 private:
  unique_fd report_;
};

}  // namespace procmodel::detail
