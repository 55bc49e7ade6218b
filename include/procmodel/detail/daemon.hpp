#pragma once

#include <cerrno>
#include <cstdlib>

#include <fcntl.h>
#include <unistd.h>

#include "unique_fd.hpp"

namespace procmodel::detail {

/// Detaches from the terminal: fork, setsid, stdin and stdout (and stderr
/// unless `keep_stderr`) to /dev/null. The parent waits until the daemon says
/// it is up (notify_started) or gives up, and exits with the daemon's verdict,
/// so `prog --daemon` fails visibly when the daemon cannot start.
class daemonizer {
 public:
  void detach(bool keep_stderr) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe");
    unique_fd rd(fds[0]), wr(fds[1]);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid > 0) {
      wr.reset();
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
