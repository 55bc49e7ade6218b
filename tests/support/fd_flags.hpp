#pragma once

// Descriptor flags the tests check: close-on-exec from birth, non-blocking.

#include <fcntl.h>

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

}  // namespace test_support
