#pragma once

// A listening socket on 127.0.0.1, port 0, as the master would hand one to a
// worker: for unit tests that build a worker_context themselves.

#include <netinet/in.h>
#include <sys/socket.h>

#include <procmodel/listeners.hpp>

#include "support/catch.hpp"

namespace test_support {

inline procmodel::listener listen_loopback() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  REQUIRE(fd >= 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  REQUIRE(::listen(fd, 16) == 0);
  procmodel::listener l;
  l.fd = fd;
  l.local = procmodel::detail::local_address(fd);
  return l;
}

}  // namespace test_support
