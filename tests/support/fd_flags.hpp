#pragma once

// Descriptor flags the tests check (close-on-exec from birth, non-blocking),
// and socket options.

#include <fcntl.h>
#include <sys/socket.h>

namespace test_support {

/// Whether `fd` is open and close-on-exec.
inline bool cloexec(int fd) {
  int flags = ::fcntl(fd, F_GETFD);
  return flags >= 0 && (flags & FD_CLOEXEC) != 0;
}

/// Whether `fd` is open and non-blocking.
inline bool nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && (flags & O_NONBLOCK) != 0;
}

/// An int socket option of `fd` (getsockopt), or -1 when it cannot be read.
inline int int_option(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, level, name, &v, &len) == 0 ? v : -1;
}

}  // namespace test_support
