#pragma once

/// @file listeners.hpp
/// Listening sockets: parsed from HOST:PORT, bound once by the master before
/// any worker exists, inherited by every worker.

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include "detail/unique_fd.hpp"
#include "options.hpp"

namespace procmodel {

/// HOST and PORT of a listen address; HOST is empty for every interface.
struct endpoint_spec {
  std::string host;
  std::uint16_t port = 0;
};

/// Parses "127.0.0.1:8080", "[::1]:8080", "localhost:80", "*:80" or ":80".
/// Throws std::invalid_argument with a message naming the address.
inline endpoint_spec parse_endpoint(std::string_view text) {
  auto fail = [&](std::string_view why) {
    return std::invalid_argument(fmt::format("invalid listen address '{}': {}", text, why));
  };
  std::string_view host, port;
  if (text.starts_with('[')) {
    auto close = text.find(']');
    if (close == std::string_view::npos) throw fail("missing ']'");
    host = text.substr(1, close - 1);
    if (close + 1 >= text.size() || text[close + 1] != ':') throw fail("expected [HOST]:PORT");
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) throw fail("expected HOST:PORT");
    host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) throw fail("write IPv6 addresses as [HOST]:PORT");
    port = text.substr(colon + 1);
  }
  if (host == "*") host = {};
  endpoint_spec spec;
  spec.host = std::string(host);
  spec.port = static_cast<std::uint16_t>(parse_number(fmt::format("port of '{}'", text), port, 0, 65535));
  return spec;
}

/// "127.0.0.1:8080" or "[::1]:8080" for a socket address.
inline std::string format_address(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return fmt::format("{}:{}", host, ntohs(in->sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return fmt::format("[{}]:{}", host, ntohs(in6->sin6_port));
  }
  return fmt::format("(family {})", sa->sa_family);
}

/// One listening socket, as a worker sees it.
struct listener {
  int fd = -1;             ///< the descriptor; non-blocking, close-on-exec
  std::string configured;  ///< as written in the options
  std::string local;       ///< the bound address, port resolved ("127.0.0.1:43211")
  int family = AF_INET;
};

namespace detail {

/// The bound address of a socket, formatted.
inline std::string local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return format_address(reinterpret_cast<sockaddr*>(&ss));
}

}  // namespace detail

/// The master's listening sockets. Owns the descriptors.
class listener_set {
 public:
  /// Binds every address; throws std::runtime_error naming the first that fails.
  void bind_all(const std::vector<std::string>& addresses, int backlog) {
    for (const auto& a : addresses) bind_one(a, backlog);
  }

  [[nodiscard]] const std::vector<listener>& all() const noexcept { return listeners_; }
  [[nodiscard]] std::vector<int> fds() const {
    std::vector<int> out;
    for (const auto& l : listeners_) out.push_back(l.fd);
    return out;
  }

  /// Stops the accept queues from filling: a socket filter makes the kernel
  /// drop new handshakes (a TCP segment with SYN and without ACK), while
  /// handshakes already under way complete and connections already queued stay
  /// there for the workers to accept. A client that arrives later is refused
  /// once the last worker closes the socket, instead of being accepted and reset.
  void freeze() const noexcept {
    for (const auto& l : listeners_) freeze(l.fd);
  }

  static bool freeze(int fd) noexcept {
    // The filter sees the segment from its TCP header; byte 13 holds the flags.
    sock_filter drop_syn[] = {
        {BPF_LD | BPF_B | BPF_ABS, 0, 0, 13},
        {BPF_ALU | BPF_AND | BPF_K, 0, 0, 0x12},  // SYN | ACK
        {BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0x02},  // SYN alone: a new handshake
        {BPF_RET | BPF_K, 0, 0, 0},               // drop
        {BPF_RET | BPF_K, 0, 0, 0xffffffff},      // keep
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(drop_syn)), drop_syn};
    return ::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0;
  }

  /// Closes the master's copies (workers keep theirs).
  void close_all() noexcept {
    owned_.clear();
    listeners_.clear();
  }

 private:
  void bind_one(const std::string& address, int backlog) {
    endpoint_spec spec;
    try {
      spec = parse_endpoint(address);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(e.what());
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    std::string port = std::to_string(spec.port);
    int rc = ::getaddrinfo(spec.host.empty() ? nullptr : spec.host.c_str(), port.c_str(), &hints,
                           &res);
    if (rc != 0)
      throw std::runtime_error(
          fmt::format("cannot resolve listen address '{}': {}", address, ::gai_strerror(rc)));
    // Prefer IPv4 for names like localhost that resolve to both.
    addrinfo* pick = res;
    for (addrinfo* ai = res; ai; ai = ai->ai_next)
      if (ai->ai_family == AF_INET) {
        pick = ai;
        break;
      }
    detail::unique_fd fd(::socket(pick->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    int err = errno;
    if (fd) {
      int one = 1;
      ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (pick->ai_family == AF_INET6)
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
      if (::bind(fd.get(), pick->ai_addr, pick->ai_addrlen) != 0 || ::listen(fd.get(), backlog) != 0) {
        err = errno;
        fd.reset();
      }
    }
    int family = pick->ai_family;
    ::freeaddrinfo(res);
    if (!fd)
      throw std::runtime_error(
          fmt::format("cannot listen on {}: {}", address, std::strerror(err)));
    listener l;
    l.fd = fd.get();
    l.configured = address;
    l.local = detail::local_address(fd.get());
    l.family = family;
    listeners_.push_back(std::move(l));
    owned_.push_back(std::move(fd));
  }

  std::vector<listener> listeners_;
  std::vector<detail::unique_fd> owned_;
};

}  // namespace procmodel
