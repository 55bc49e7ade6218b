#pragma once

/// @file channel.hpp
/// The master/worker channel: a SOCK_SEQPACKET socketpair per worker, so each
/// message arrives whole and end-of-file means the other side is gone.
/// Commands go down (quit, terminate, reopen), reports come up (ready).

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <poll.h>
#include <sys/socket.h>

#include <fmt/core.h>

#include "detail/unique_fd.hpp"
#include "signals.hpp"

namespace procmodel {

/// A message on the channel.
enum class message_type : std::uint8_t {
  quit = static_cast<std::uint8_t>(worker_command::quit),
  terminate = static_cast<std::uint8_t>(worker_command::terminate),
  reopen = static_cast<std::uint8_t>(worker_command::reopen),
  ready = 16,      ///< worker -> master: serving
  heartbeat = 17,  ///< worker -> master: its loop runs
  served = 18,     ///< worker -> master: units of work done in all (argument)
  stopping = 19,   ///< worker -> master: leaving of its own accord (sd_notify's STOPPING=1)
};

struct message {
  message_type type{};
  std::int64_t argument = 0;
};

/// Outcome of a non-blocking receive.
enum class receive_status { received, would_block, closed, failed };

namespace detail {

inline constexpr std::uint32_t channel_magic = 0x706d6331;  // "pmc1"
inline constexpr std::size_t wire_size = 16;

}  // namespace detail

namespace detail {

/// Checks that an inherited `fd` can be a channel end: an open, connected
/// unix SOCK_SEQPACKET socket. Throws std::runtime_error naming `what`.
inline void check_channel_fd(int fd, std::string_view what) {
  int type = 0, domain = 0, accepting = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    throw std::runtime_error(fmt::format("{}: descriptor {} is not an open socket", what, fd));
  len = sizeof domain;
  ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
  len = sizeof accepting;
  ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len);
  if (domain != AF_UNIX || type != SOCK_SEQPACKET || accepting)
    throw std::runtime_error(
        fmt::format("{}: descriptor {} is not a unix seqpacket channel", what, fd));
}

}  // namespace detail

/// One end of a channel. Non-blocking, close-on-exec from birth.
class channel {
 public:
  channel() = default;
  explicit channel(detail::unique_fd fd) noexcept : fd_(std::move(fd)) {}

  /// Both ends of a new channel: first for the master, second for the worker.
  static std::pair<channel, channel> make_pair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) != 0)
      detail::throw_errno("socketpair");
    return {channel(detail::unique_fd(fds[0])), channel(detail::unique_fd(fds[1]))};
  }

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  [[nodiscard]] bool is_open() const noexcept { return static_cast<bool>(fd_); }
  void close() noexcept { fd_.reset(); }
  int release() noexcept { return fd_.release(); }

  /// Sends without blocking; false if the peer is gone or its queue is full.
  bool send(const message& m) const noexcept {
    if (!fd_) return false;
    std::array<unsigned char, detail::wire_size> buf{};
    std::memcpy(buf.data(), &detail::channel_magic, 4);
    buf[4] = static_cast<unsigned char>(m.type);
    std::memcpy(buf.data() + 8, &m.argument, 8);
    ssize_t n = detail::retry_eintr(
        [&] { return ::send(fd_.get(), buf.data(), buf.size(), MSG_NOSIGNAL | MSG_DONTWAIT); });
    return n == static_cast<ssize_t>(buf.size());
  }

  /// Receives one message without blocking. A malformed datagram is `failed`.
  receive_status receive(message& m) const noexcept {
    if (!fd_) return receive_status::closed;
    std::array<unsigned char, detail::wire_size + 1> buf{};
    ssize_t n = detail::retry_eintr(
        [&] { return ::recv(fd_.get(), buf.data(), buf.size(), MSG_DONTWAIT); });
    // Zero bytes is end-of-file, or an empty datagram from a live peer.
    if (n == 0) return peer_gone() ? receive_status::closed : receive_status::failed;
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return receive_status::would_block;
      if (errno == ECONNRESET) return receive_status::closed;
      return receive_status::failed;
    }
    std::uint32_t magic = 0;
    std::memcpy(&magic, buf.data(), 4);
    if (n != static_cast<ssize_t>(detail::wire_size) || magic != detail::channel_magic)
      return receive_status::failed;
    m.type = static_cast<message_type>(buf[4]);
    std::memcpy(&m.argument, buf.data() + 8, 8);
    return receive_status::received;
  }

 private:
  [[nodiscard]] bool peer_gone() const noexcept {
    pollfd p{fd_.get(), POLLRDHUP, 0};
    int r = detail::retry_eintr([&] { return ::poll(&p, 1, 0); });
    return r < 0 || (r == 1 && (p.revents & (POLLHUP | POLLRDHUP)) != 0);
  }

  detail::unique_fd fd_;
};

}  // namespace procmodel
