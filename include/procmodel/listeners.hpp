#pragma once

/// @file listeners.hpp
/// Listening sockets: parsed from HOST:PORT, bound once by the master before
/// any worker exists, inherited by every worker.

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include "detail/unique_fd.hpp"
#include "listener.hpp"
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
    if (host.empty() || host == "*")
      throw fail("no address between '[' and ']' (write '*:PORT' for any address)");
    if (close + 1 >= text.size() || text[close + 1] != ':') throw fail("expected [HOST]:PORT");
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) throw fail("expected HOST:PORT");
    host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) throw fail("write IPv6 addresses as [HOST]:PORT");
    if (host.find_first_of("[]") != std::string_view::npos) throw fail("unbalanced '[' or ']'");
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

namespace detail {

/// The bound address of a socket, formatted.
inline std::string local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return format_address(reinterpret_cast<sockaddr*>(&ss));
}

}  // namespace detail

/// The environment variable a master hands its listeners to its successor in
/// (hot upgrade): "INDEX:FD,INDEX:FD,...", INDEX being the position of the
/// address in the options' listen list; per-slot sockets of one address are
/// listed in slot order.
inline constexpr const char* handover_env = "PROCMODEL_LISTENERS";

/// One descriptor named by handover_env.
struct inherited_fd {
  std::size_t index = 0;
  int fd = -1;
};

/// Parses the value of handover_env; throws std::runtime_error saying what is wrong.
inline std::vector<inherited_fd> parse_handover(std::string_view text) {
  const std::string_view whole = text;
  auto fail = [&](std::string_view why) {
    // Quoted up to a point: the value comes from the environment, of any size.
    constexpr std::size_t shown = 64;
    return std::runtime_error(fmt::format("{}='{}{}' is not usable: {}", handover_env,
                                          whole.substr(0, shown),
                                          whole.size() > shown ? "..." : "", why.substr(0, 200)));
  };
  std::vector<inherited_fd> out;
  if (text.empty()) throw fail("it is empty");
  for (bool more = true; more;) {
    auto comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    more = comma != std::string_view::npos;
    text = more ? text.substr(comma + 1) : std::string_view{};
    if (item.empty()) throw fail("an item is empty");
    auto colon = item.find(':');
    if (colon == std::string_view::npos) throw fail(fmt::format("'{}' is not INDEX:FD", item));
    inherited_fd f;
    try {
      f.index = static_cast<std::size_t>(parse_number("index", item.substr(0, colon), 0, 1023));
      f.fd = static_cast<int>(parse_number("descriptor", item.substr(colon + 1), 3, 1 << 20));
    } catch (const std::invalid_argument& e) {
      throw fail(e.what());
    }
    for (const auto& seen : out)
      if (seen.fd == f.fd) throw fail(fmt::format("descriptor {} is named twice", f.fd));
    out.push_back(f);
  }
  return out;
}

/// Descriptors handed over by systemd socket activation (LISTEN_FDS from 3
/// on), honoured only when LISTEN_PID names this process; nothing otherwise.
/// Throws std::runtime_error when LISTEN_FDS is garbage.
inline std::optional<std::vector<int>> systemd_listen_fds(pid_t self) {
  const char* fds = std::getenv("LISTEN_FDS");
  const char* pid = std::getenv("LISTEN_PID");
  if (!fds || !pid) return std::nullopt;  // no LISTEN_PID: meant for no one (as sd_listen_fds)
  long long owner = 0;
  try {
    owner = parse_number("LISTEN_PID", pid, 1, 1LL << 31);
  } catch (const std::invalid_argument&) {
    throw std::runtime_error(fmt::format("LISTEN_PID='{}' is not a pid", pid));
  }
  if (owner != self) return std::nullopt;  // meant for another process
  long long n = 0;
  try {
    n = parse_number("LISTEN_FDS", fds, 1, 4096);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(fmt::format("LISTEN_FDS='{}' is not usable: {}", fds, e.what()));
  }
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(3 + i);
  return out;
}

namespace detail {

/// Checks that `fd` is a listening stream socket; throws std::runtime_error
/// naming `what` and the problem otherwise.
inline void check_listening(int fd, std::string_view what) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw std::runtime_error(fmt::format("{}: descriptor {} is not open", what, fd));
  if (!S_ISSOCK(st.st_mode))
    throw std::runtime_error(fmt::format("{}: descriptor {} is not a socket", what, fd));
  int type = 0, accepting = 0;
  socklen_t len = sizeof type;
  ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
  len = sizeof accepting;
  ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len);
  if (type != SOCK_STREAM || !accepting)
    throw std::runtime_error(
        fmt::format("{}: descriptor {} is not a listening stream socket", what, fd));
}

/// Whether two socket addresses name the same place; port 0 in `wanted`
/// matches any port.
inline bool same_address(const sockaddr_storage& wanted, const sockaddr_storage& got) {
  if (wanted.ss_family != got.ss_family) return false;
  if (wanted.ss_family == AF_INET) {
    auto& a = reinterpret_cast<const sockaddr_in&>(wanted);
    auto& b = reinterpret_cast<const sockaddr_in&>(got);
    return a.sin_addr.s_addr == b.sin_addr.s_addr && (a.sin_port == 0 || a.sin_port == b.sin_port);
  }
  if (wanted.ss_family == AF_INET6) {
    auto& a = reinterpret_cast<const sockaddr_in6&>(wanted);
    auto& b = reinterpret_cast<const sockaddr_in6&>(got);
    return std::memcmp(&a.sin6_addr, &b.sin6_addr, sizeof a.sin6_addr) == 0 &&
           (a.sin6_port == 0 || a.sin6_port == b.sin6_port);
  }
  return false;
}

}  // namespace detail

/// The master's listening sockets. Owns the descriptors.
///
/// Shared mode (the default): one socket per address, inherited by every
/// worker. Per-slot mode (`SO_REUSEPORT`): one socket per address and worker
/// slot, in one reuseport group; slot k's worker holds only slot k's sockets,
/// and the socket passes from the old worker of slot k to the new one on a
/// reload. A reuseport program steers new connections to the first `n`
/// sockets only, so a slot that goes away (fewer workers) gets nothing new
/// while its worker drains the queue; its socket is kept, never closed with
/// connections queued, and serves the slot again if it comes back.
class listener_set {
 public:
  /// Binds every address: shared, or `reuseport_slots` sockets each.
  /// Throws std::runtime_error naming the first address that fails.
  void bind_all(const std::vector<std::string>& addresses, int backlog,
                unsigned reuseport_slots = 0) {
    backlog_ = backlog;
    reuseport_ = reuseport_slots > 0;
    for (const auto& a : addresses) {
      group g;
      g.configured = a;
      resolve(g);
      groups_.push_back(std::move(g));
      add_socket(groups_.back());
    }
    if (reuseport_) {
      ensure_slots(reuseport_slots);
      steer(reuseport_slots);
    }
  }

  /// Takes over sockets a previous master handed over (hot upgrade) instead of
  /// binding: each must be a listening stream socket bound to the address at
  /// its index (and made with SO_REUSEPORT in per-slot mode). Addresses with no
  /// socket handed over are bound. Throws std::runtime_error naming the
  /// descriptor and what is wrong with it; nothing is guessed.
  void adopt_all(const std::vector<std::string>& addresses, int backlog, unsigned reuseport_slots,
                 const std::vector<inherited_fd>& handed) {
    backlog_ = backlog;
    reuseport_ = reuseport_slots > 0;
    for (const auto& h : handed)
      if (h.index >= addresses.size())
        throw std::runtime_error(fmt::format(
            "{}: descriptor {} is for listen address #{}, but only {} are configured",
            handover_env, h.fd, h.index, addresses.size()));
    for (std::size_t i = 0; i < addresses.size(); ++i) {
      group g;
      g.configured = addresses[i];
      resolve(g);
      for (const auto& h : handed) {
        if (h.index != i) continue;
        std::string what = fmt::format("{} descriptor {} for {}", handover_env, h.fd, g.configured);
        detail::check_listening(h.fd, what);
        sockaddr_storage got{};
        socklen_t len = sizeof got;
        ::getsockname(h.fd, reinterpret_cast<sockaddr*>(&got), &len);
        if (!detail::same_address(g.addr, got))
          throw std::runtime_error(fmt::format("{} is bound to {}, not to {}", what,
                                               detail::local_address(h.fd), g.configured));
        int rp = 0;
        len = sizeof rp;
        ::getsockopt(h.fd, SOL_SOCKET, SO_REUSEPORT, &rp, &len);
        if ((rp != 0) != reuseport_)
          throw std::runtime_error(fmt::format(
              "{} was made {} SO_REUSEPORT; this master is configured {} --reuseport", what,
              rp ? "with" : "without", reuseport_ ? "with" : "without"));
        if (!reuseport_ && !g.socks.empty())
          throw std::runtime_error(fmt::format("{}: a second socket for a shared address", what));
        adopt_socket(g, h.fd);
      }
      if (g.socks.empty()) add_socket(g);
      groups_.push_back(std::move(g));
    }
    if (reuseport_) {
      ensure_slots(reuseport_slots);
      steer(reuseport_slots);
    }
  }

  /// Takes over systemd's sockets (socket activation) as the listeners, in order.
  void adopt_activated(const std::vector<int>& fds) {
    for (int fd : fds) {
      detail::check_listening(fd, "LISTEN_FDS");
      group g;
      g.configured = detail::local_address(fd);
      socklen_t len = sizeof g.addr;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&g.addr), &len);
      g.addr_len = len;
      g.family = g.addr.ss_family;
      adopt_socket(g, fd);
      groups_.push_back(std::move(g));
    }
  }

  /// What a successor master needs to take the sockets over: the value of
  /// handover_env. The descriptors must be made inheritable by the caller.
  [[nodiscard]] std::string handover() const {
    std::string out;
    for (std::size_t i = 0; i < groups_.size(); ++i)
      for (const auto& v : groups_[i].views)
        out += fmt::format("{}{}:{}", out.empty() ? "" : ",", i, v.fd);
    return out;
  }

  [[nodiscard]] bool per_slot() const noexcept { return reuseport_; }

  /// Every socket the master holds (shared mode: one per address).
  [[nodiscard]] std::vector<listener> all() const {
    std::vector<listener> out;
    for (const auto& g : groups_) out.insert(out.end(), g.views.begin(), g.views.end());
    return out;
  }
  [[nodiscard]] std::vector<int> fds() const {
    std::vector<int> out;
    for (const auto& l : all()) out.push_back(l.fd);
    return out;
  }

  /// The sockets the worker of `slot` gets, one per address.
  [[nodiscard]] std::vector<listener> for_slot(unsigned slot) const {
    if (!reuseport_) return all();
    std::vector<listener> out;
    for (const auto& g : groups_)
      if (slot < g.views.size()) out.push_back(g.views[slot]);
    return out;
  }

  [[nodiscard]] std::vector<int> fds_for_slot(unsigned slot) const {
    std::vector<int> out;
    for (const auto& l : for_slot(slot)) out.push_back(l.fd);
    return out;
  }

  /// Per-slot mode: makes sure slots 0..n-1 have their sockets.
  void ensure_slots(unsigned n) {
    if (!reuseport_) return;
    for (auto& g : groups_)
      while (g.views.size() < n) add_socket(g);
  }

  /// Per-slot mode: new connections go to the sockets of slots 0..n-1 only.
  void steer(unsigned n) {
    if (!reuseport_ || n == 0) return;
    ensure_slots(n);
    // A random pick among the first n sockets of the group (join order = slot).
    sock_filter pick[] = {
        {BPF_LD | BPF_W | BPF_ABS, 0, 0, static_cast<std::uint32_t>(SKF_AD_OFF + SKF_AD_RANDOM)},
        {BPF_ALU | BPF_MOD | BPF_K, 0, 0, n},
        {BPF_RET | BPF_A, 0, 0, 0},
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(pick)), pick};
    for (auto& g : groups_)
      if (::setsockopt(g.views.front().fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
                       sizeof prog) != 0)
        throw std::runtime_error(fmt::format("cannot steer connections on {}: {}", g.configured,
                                             std::strerror(errno)));
  }

  /// Stops the accept queues from filling: a socket filter makes the kernel
  /// drop new handshakes (a TCP segment with SYN and without ACK), while
  /// handshakes already under way complete and connections already queued stay
  /// there for the workers to accept. A client that arrives later is refused
  /// once the last worker closes the socket, instead of being accepted and reset.
  void freeze() const noexcept {
    for (const auto& l : all()) freeze(l.fd);
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
  void close_all() noexcept { groups_.clear(); }

 private:
  struct group {
    std::string configured;
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    int family = AF_INET;
    std::vector<detail::unique_fd> socks;
    std::vector<listener> views;
  };

  void resolve(group& g) {
    endpoint_spec spec;
    try {
      spec = parse_endpoint(g.configured);
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
      throw std::runtime_error(fmt::format("cannot resolve listen address '{}': {}",
                                           g.configured, ::gai_strerror(rc)));
    // Prefer IPv4 for names like localhost that resolve to both.
    addrinfo* pick = res;
    for (addrinfo* ai = res; ai; ai = ai->ai_next)
      if (ai->ai_family == AF_INET) {
        pick = ai;
        break;
      }
    std::memcpy(&g.addr, pick->ai_addr, pick->ai_addrlen);
    g.addr_len = pick->ai_addrlen;
    g.family = pick->ai_family;
    ::freeaddrinfo(res);
  }

  void add_socket(group& g) {
    detail::unique_fd fd(::socket(g.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    int err = errno;
    if (fd) {
      int one = 1;
      ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (reuseport_) ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
      if (g.family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
      if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&g.addr), g.addr_len) != 0 ||
          ::listen(fd.get(), backlog_) != 0) {
        err = errno;
        fd.reset();
      }
    }
    if (!fd)
      throw std::runtime_error(
          fmt::format("cannot listen on {}: {}", g.configured, std::strerror(err)));
    if (g.socks.empty()) {
      // Port 0: the sockets that join later take the port the first one got.
      socklen_t len = sizeof g.addr;
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&g.addr), &len);
      g.addr_len = len;
    }
    listener l;
    l.fd = fd.get();
    l.configured = g.configured;
    l.local = detail::local_address(fd.get());
    l.family = g.family;
    g.views.push_back(std::move(l));
    g.socks.push_back(std::move(fd));
  }

  void adopt_socket(group& g, int fd) {
    // Ours now: close-on-exec and non-blocking like the ones we bind.
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (g.socks.empty()) {
      socklen_t len = sizeof g.addr;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&g.addr), &len);
      g.addr_len = len;
    }
    listener l;
    l.fd = fd;
    l.configured = g.configured;
    l.local = detail::local_address(fd);
    l.family = g.family;
    g.views.push_back(std::move(l));
    g.socks.emplace_back(fd);
  }

  int backlog_ = 511;
  bool reuseport_ = false;
  std::vector<group> groups_;
};

}  // namespace procmodel
