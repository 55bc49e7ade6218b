#pragma once

/// @file listener.hpp
/// One listening socket, as a worker is handed it (listeners.hpp binds them).

#include <string>

#include <sys/socket.h>

namespace procmodel {

/// One listening socket, as a worker sees it.
struct listener {
  int fd = -1;             ///< the descriptor; non-blocking, close-on-exec
  std::string configured;  ///< as written in the options
  std::string local;       ///< the bound address, port resolved ("127.0.0.1:43211",
                           ///< "unix:/run/app.sock", "udp://127.0.0.1:5353")
  int family = AF_INET;    ///< AF_INET, AF_INET6 or AF_UNIX
  int type = SOCK_STREAM;  ///< SOCK_STREAM, or SOCK_DGRAM for UDP

  [[nodiscard]] bool datagram() const noexcept { return type == SOCK_DGRAM; }
};

}  // namespace procmodel
