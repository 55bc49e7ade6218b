#pragma once

/// @file listeners.hpp
/// Listening sockets: parsed from HOST:PORT, bound once by the master before
/// any worker exists, inherited by every worker.

#include <algorithm>
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
#include <grp.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/core.h>

#include "detail/format.hpp"
#include "detail/unique_fd.hpp"
#include "listen_spec.hpp"
#include "listener.hpp"
#include "options.hpp"

namespace procmodel {

/// "127.0.0.1:8080", "[::1]:8080" or "unix:/run/app.sock" for a socket address.
inline std::string format_address(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return detail::format("{}:{}", host, ntohs(in->sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return detail::format("[{}]:{}", host, ntohs(in6->sin6_port));
  }
  if (sa->sa_family == AF_UNIX) {
    auto* un = reinterpret_cast<const sockaddr_un*>(sa);
    std::string_view path(un->sun_path, ::strnlen(un->sun_path, sizeof un->sun_path));
    return detail::format("unix:{}", path);
  }
  return detail::format("(family {})", sa->sa_family);
}

namespace detail {

inline int socket_type(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
  return type;
}

/// The bound address of a socket, formatted ("udp://" first for a datagram socket).
inline std::string local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return (socket_type(fd) == SOCK_DGRAM ? "udp://" : "") +
         format_address(reinterpret_cast<sockaddr*>(&ss));
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
    return std::runtime_error(detail::format("{}='{}{}' is not usable: {}", handover_env,
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
    if (colon == std::string_view::npos) throw fail(detail::format("'{}' is not INDEX:FD", item));
    inherited_fd f;
    try {
      f.index = static_cast<std::size_t>(parse_number("index", item.substr(0, colon), 0, 1023));
      f.fd = static_cast<int>(parse_number("descriptor", item.substr(colon + 1), 3, 1 << 20));
    } catch (const std::invalid_argument& e) {
      throw fail(e.what());
    }
    for (const auto& seen : out)
      if (seen.fd == f.fd) throw fail(detail::format("descriptor {} is named twice", f.fd));
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
    throw std::runtime_error(detail::format("LISTEN_PID='{}' is not a pid", pid));
  }
  if (owner != self) return std::nullopt;  // meant for another process
  long long n = 0;
  try {
    n = parse_number("LISTEN_FDS", fds, 1, 4096);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(detail::format("LISTEN_FDS='{}' is not usable: {}", fds, e.what()));
  }
  std::vector<int> out;
  for (int i = 0; i < n; ++i) out.push_back(3 + i);
  return out;
}

namespace detail {

/// Checks that `fd` is a listening stream socket, or a bound datagram socket
/// (UDP); throws std::runtime_error naming `what` and the problem otherwise.
inline void check_listening(int fd, std::string_view what) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw std::runtime_error(detail::format("{}: descriptor {} is not open", what, fd));
  if (!S_ISSOCK(st.st_mode))
    throw std::runtime_error(detail::format("{}: descriptor {} is not a socket", what, fd));
  int type = 0, accepting = 0;
  socklen_t len = sizeof type;
  ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
  len = sizeof accepting;
  ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len);
  if (type == SOCK_DGRAM) {
    sockaddr_storage ss{};
    len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
        (ss.ss_family == AF_INET && reinterpret_cast<sockaddr_in&>(ss).sin_port == 0) ||
        (ss.ss_family == AF_INET6 && reinterpret_cast<sockaddr_in6&>(ss).sin6_port == 0))
      throw std::runtime_error(detail::format(
          "{}: descriptor {} is a datagram socket not bound to a UDP port", what, fd));
    return;
  }
  if (type != SOCK_STREAM || !accepting)
    throw std::runtime_error(
        detail::format("{}: descriptor {} is not a listening stream socket", what, fd));
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
  if (wanted.ss_family == AF_UNIX) {
    auto& a = reinterpret_cast<const sockaddr_un&>(wanted);
    auto& b = reinterpret_cast<const sockaddr_un&>(got);
    return ::strncmp(a.sun_path, b.sun_path, sizeof a.sun_path) == 0;
  }
  return false;
}

/// A user or group named in a listen parameter, by name or number.
inline uid_t resolve_owner(std::string_view what, const std::string& name, bool group) {
  if (name.find_first_not_of("0123456789") == std::string::npos)
    return static_cast<uid_t>(parse_number(what, name, 0, (1LL << 32) - 2));
  if (group) {
    if (const ::group* g = ::getgrnam(name.c_str())) return g->gr_gid;
  } else if (const ::passwd* p = ::getpwnam(name.c_str())) {
    return p->pw_uid;
  }
  throw std::runtime_error(
      detail::format("{}: no {} named '{}'", what, group ? "group" : "user", name));
}

/// Makes `path` free for a new unix socket: nothing there, or a socket
/// nobody accepts on (left by a master that died), which is removed. Refuses
/// a symbolic link, anything that is not a socket, and a socket in use.
inline void claim_unix_path(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw std::runtime_error(
        detail::format("cannot check unix:{}: {}", path, std::strerror(errno)));
  }
  if (S_ISLNK(st.st_mode))
    throw std::runtime_error(detail::format(
        "refusing to listen on unix:{}: it is a symbolic link (never followed; remove it)", path));
  if (!S_ISSOCK(st.st_mode))
    throw std::runtime_error(detail::format(
        "refusing to listen on unix:{}: the file exists and is not a socket", path));
  // A socket file: in use when something accepts on it (a full queue too).
  unique_fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe) throw std::runtime_error(detail::format("socket(AF_UNIX): {}", std::strerror(errno)));
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path.c_str(), path.size());
  if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&un), sizeof un) == 0 || errno == EAGAIN ||
      errno == EINPROGRESS)
    throw std::runtime_error(detail::format(
        "cannot listen on unix:{}: another process accepts on it", path));
  if (errno != ECONNREFUSED)
    throw std::runtime_error(detail::format("cannot check whether unix:{} is in use: {}", path,
                                         std::strerror(errno)));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    throw std::runtime_error(detail::format("cannot remove the stale socket unix:{}: {}", path,
                                         std::strerror(errno)));
}

}  // namespace detail

/// A listening socket as systemd's file-descriptor store keeps it: named
/// "procmodel-listen-INDEX-SLOT" (FDNAME=), INDEX being the position of its
/// address in the listen list and SLOT its per-slot socket (0 when shared).
struct stored_fd {
  std::size_t index = 0;
  unsigned slot = 0;
  int fd = -1;

  [[nodiscard]] std::string name() const {
    return detail::format("procmodel-listen-{}-{}", index, slot);
  }

  /// The index and slot a name says, if it is one of these names.
  static std::optional<stored_fd> from_name(std::string_view name, int fd) {
    constexpr std::string_view prefix = "procmodel-listen-";
    if (!name.starts_with(prefix)) return std::nullopt;
    name.remove_prefix(prefix.size());
    auto dash = name.find('-');
    if (dash == std::string_view::npos) return std::nullopt;
    try {
      stored_fd s;
      s.index = static_cast<std::size_t>(parse_number("index", name.substr(0, dash), 0, 1023));
      s.slot = static_cast<unsigned>(parse_number("slot", name.substr(dash + 1), 0, 1023));
      s.fd = fd;
      return s;
    } catch (const std::invalid_argument&) {
      return std::nullopt;
    }
  }
};

/// The master's listening sockets. Owns the descriptors.
///
/// Shared mode (the default): one socket per address, inherited by every
/// worker. Per-slot mode (`SO_REUSEPORT`): one socket per TCP address and
/// worker slot, in one reuseport group; slot k's worker holds only slot k's
/// sockets, and the socket passes from the old worker of slot k to the new one
/// on a reload. A reuseport program steers new connections to the first `n`
/// sockets only, so a slot that goes away (fewer workers) gets nothing new
/// while its worker drains the queue; its socket is kept, never closed with
/// connections queued, and serves the slot again if it comes back. A unix
/// socket is always shared: a path names one socket.
///
/// Each address is written as parse_listen() reads it, with nginx's listen
/// parameters (backlog=, deferred, fastopen=, so_keepalive=, rcvbuf=, ...).
class listener_set {
 public:
  /// Binds every address: shared, or `reuseport_slots` sockets each.
  /// Throws std::runtime_error naming the first address that fails.
  void bind_all(const std::vector<std::string>& addresses, int backlog,
                unsigned reuseport_slots = 0) {
    backlog_ = backlog;
    reuseport_ = reuseport_slots > 0;
    for (const auto& a : addresses) {
      groups_.push_back(configure(a));
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
        throw std::runtime_error(detail::format(
            "{}: descriptor {} is for listen address #{}, but only {} are configured",
            handover_env, h.fd, h.index, addresses.size()));
    for (std::size_t i = 0; i < addresses.size(); ++i) {
      group g = configure(addresses[i]);
      for (const auto& h : handed) {
        if (h.index != i) continue;
        std::string what =
            detail::format("{} descriptor {} for {}", handover_env, h.fd, g.configured);
        if (auto why = problem(g, h.fd); !why.empty())
          throw std::runtime_error(detail::format("{}: {}", what, why));
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

  /// Of the sockets a previous master stored with systemd (its file-descriptor
  /// store), those that still fit `addresses` (listening, bound to the address
  /// at their index, made for this --reuseport mode, one per shared address),
  /// in adopt_all()'s order; each other one goes to `dropped` with the reason.
  /// Asked of a set that holds nothing yet, before adopt_all().
  [[nodiscard]] std::vector<inherited_fd> still_fitting(
      const std::vector<std::string>& addresses, unsigned reuseport_slots,
      std::vector<stored_fd> stored, std::vector<std::pair<stored_fd, std::string>>& dropped) {
    reuseport_ = reuseport_slots > 0;
    std::sort(stored.begin(), stored.end(), [](const stored_fd& a, const stored_fd& b) {
      return std::pair(a.index, a.slot) < std::pair(b.index, b.slot);
    });
    std::vector<inherited_fd> out;
    std::vector<group> groups;
    for (const auto& a : addresses) groups.push_back(configure(a));
    std::vector<std::size_t> taken(addresses.size(), 0);
    for (const auto& s : stored) {
      std::string why;
      if (s.index >= groups.size())
        why = detail::format("no listen address #{} is configured now", s.index);
      else if (why = problem(groups[s.index], s.fd); why.empty() && groups[s.index].shared &&
                                                     taken[s.index] > 0)
        why = "a second socket for a shared address";
      if (!why.empty()) {
        dropped.emplace_back(s, std::move(why));
        continue;
      }
      ++taken[s.index];
      out.push_back({s.index, s.fd});
    }
    reuseport_ = false;
    return out;
  }

  /// Names for systemd's file-descriptor store, one per socket: a master
  /// restarted after a crash takes them back by name (still_fitting()).
  [[nodiscard]] std::vector<stored_fd> to_store() const {
    std::vector<stored_fd> out;
    for (std::size_t i = 0; i < groups_.size(); ++i)
      for (std::size_t k = 0; k < groups_[i].views.size(); ++k)
        if (!groups_[i].activated)
          out.push_back({i, static_cast<unsigned>(k), groups_[i].views[k].fd});
    return out;
  }

  /// Takes over systemd's sockets (socket activation) as the listeners, in
  /// order. systemd made them and removes its unix socket files itself.
  void adopt_activated(const std::vector<int>& fds) {
    for (int fd : fds) {
      detail::check_listening(fd, "LISTEN_FDS");
      group g;
      g.configured = detail::local_address(fd);
      socklen_t len = sizeof g.addr;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&g.addr), &len);
      g.addr_len = len;
      g.family = g.addr.ss_family;
      g.type = detail::socket_type(fd);
      g.activated = true;
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
        out += detail::format("{}{}:{}", out.empty() ? "" : ",", i, v.fd);
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
      if (g.shared)
        out.push_back(g.views.front());
      else if (slot < g.views.size())
        out.push_back(g.views[slot]);
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
      while (!g.shared && g.views.size() < n) add_socket(g);
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
    // UDP: by the flow's hash instead, so that a flow's datagrams stay with
    // one worker while the slots stay the same (a reload moves none).
    sock_filter by_flow[] = {
        {BPF_LD | BPF_W | BPF_ABS, 0, 0, static_cast<std::uint32_t>(SKF_AD_OFF + SKF_AD_RXHASH)},
        {BPF_ALU | BPF_MOD | BPF_K, 0, 0, n},
        {BPF_RET | BPF_A, 0, 0, 0},
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(pick)), pick};
    sock_fprog flow_prog{static_cast<unsigned short>(std::size(by_flow)), by_flow};
    for (auto& g : groups_)
      if (!g.shared && ::setsockopt(g.views.front().fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
                                    g.type == SOCK_DGRAM ? &flow_prog : &prog, sizeof prog) != 0)
        throw std::runtime_error(detail::format("cannot steer connections on {}: {}", g.configured,
                                             std::strerror(errno)));
  }

  /// Stops the accept queues from filling: a socket filter makes the kernel
  /// drop new handshakes (a TCP segment with SYN and without ACK), while
  /// handshakes already under way complete and connections already queued stay
  /// there for the workers to accept. A client that arrives later is refused
  /// once the last worker closes the socket, instead of being accepted and reset.
  /// (A unix socket has no handshake to drop: its clients are refused once
  /// the file is removed.)
  void freeze() const noexcept {
    for (const auto& l : all())
      if (l.family != AF_UNIX && !l.datagram()) freeze(l.fd);
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

  /// Removes the unix socket files this master bound or took over, each only
  /// while the path still holds that very file (the same inode): for the last
  /// master of the service, as it stops for good. New clients are refused
  /// from then on; workers still serve the connections they have.
  /// Returns the paths removed.
  std::vector<std::string> remove_socket_files() noexcept {
    std::vector<std::string> removed;
    for (const auto& f : unix_files_) {
      struct stat st {};
      if (::lstat(f.path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_dev != f.dev ||
          st.st_ino != f.ino)
        continue;
      if (::unlink(f.path.c_str()) == 0) removed.push_back(f.path);
    }
    unix_files_.clear();
    return removed;
  }

 private:
  struct group {
    std::string configured;  ///< as written, parameters too
    listen_spec spec;
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    int family = AF_INET;
    int type = SOCK_STREAM;
    bool shared = true;      ///< one socket for every slot
    bool activated = false;  ///< systemd's
    std::vector<detail::unique_fd> socks;
    std::vector<listener> views;
  };

  // A unix socket file this master answers for.
  struct unix_file {
    std::string path;
    dev_t dev = 0;
    ino_t ino = 0;
  };

  // What makes `fd` unfit to be a socket of `g`; empty if nothing does.
  std::string problem(const group& g, int fd) const {
    try {
      detail::check_listening(fd, "it");
    } catch (const std::runtime_error& e) {
      return std::string(e.what()).substr(4);  // past "it: "
    }
    if (detail::socket_type(fd) != g.type)
      return detail::format("is a {} socket, not one for {}",
                         detail::socket_type(fd) == SOCK_DGRAM ? "datagram" : "stream",
                         g.spec.address);
    sockaddr_storage got{};
    socklen_t len = sizeof got;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&got), &len);
    if (!detail::same_address(g.addr, got))
      return detail::format("is bound to {}, not to {}", detail::local_address(fd), g.spec.address);
    int rp = 0;
    len = sizeof rp;
    ::getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &rp, &len);
    if ((rp != 0) != !g.shared)
      return detail::format("was made {} SO_REUSEPORT; this master is configured {} --reuseport",
                         rp ? "with" : "without", reuseport_ ? "with" : "without");
    if (g.shared && !g.socks.empty()) return "a second socket for a shared address";
    return {};
  }

  group configure(const std::string& address) {
    group g;
    g.configured = address;
    try {
      g.spec = parse_listen(address);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(e.what());
    }
    g.shared = !reuseport_ || g.spec.type == listen_spec::kind::unix_stream;
    g.type = g.spec.type == listen_spec::kind::udp ? SOCK_DGRAM : SOCK_STREAM;
    resolve(g);
    return g;
  }

  void resolve(group& g) {
    if (g.spec.type == listen_spec::kind::unix_stream) {
      sockaddr_un un{};
      un.sun_family = AF_UNIX;
      std::memcpy(un.sun_path, g.spec.path.c_str(), g.spec.path.size());
      std::memcpy(&g.addr, &un, sizeof un);
      g.addr_len = sizeof un;
      g.family = AF_UNIX;
      return;
    }
    const endpoint_spec& spec = g.spec.endpoint;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = g.type;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    std::string port = std::to_string(spec.port);
    int rc = ::getaddrinfo(spec.host.empty() ? nullptr : spec.host.c_str(), port.c_str(), &hints,
                           &res);
    if (rc != 0)
      throw std::runtime_error(detail::format("cannot resolve listen address '{}': {}",
                                           g.spec.address, ::gai_strerror(rc)));
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

  // Sets an option the address asks for, or throws naming it.
  static void set(int fd, const group& g, int level, int name, int value, std::string_view what) {
    if (::setsockopt(fd, level, name, &value, sizeof value) != 0)
      throw std::runtime_error(
          detail::format("cannot set {} on {}: {}", what, g.spec.address, std::strerror(errno)));
  }

  // The listen parameters that apply before bind() (buffers, IPV6_V6ONLY),
  // then those after listen().
  void configure_before_bind(int fd, const group& g) {
    int one = 1;
    const listen_spec& s = g.spec;
    if (g.family != AF_UNIX && g.type == SOCK_STREAM)
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (!g.shared) ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (g.family == AF_INET6) set(fd, g, IPPROTO_IPV6, IPV6_V6ONLY, s.ipv6only.value_or(true), "ipv6only");
    // Past net.core.rmem_max / wmem_max where the master may (CAP_NET_ADMIN),
    // as systemd's ReceiveBuffer= does; within them otherwise.
    if (s.rcvbuf && ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &*s.rcvbuf, sizeof(int)) != 0)
      set(fd, g, SOL_SOCKET, SO_RCVBUF, *s.rcvbuf, "rcvbuf");
    if (s.sndbuf && ::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &*s.sndbuf, sizeof(int)) != 0)
      set(fd, g, SOL_SOCKET, SO_SNDBUF, *s.sndbuf, "sndbuf");
    if (s.fastopen) set(fd, g, IPPROTO_TCP, TCP_FASTOPEN, *s.fastopen, "fastopen");
  }

  void configure_after_listen(int fd, const group& g) {
    const listen_spec& s = g.spec;
    // nginx's deferred: wake the worker when data arrives, not on the handshake.
    if (s.deferred) set(fd, g, IPPROTO_TCP, TCP_DEFER_ACCEPT, 1, "deferred");
    // Accepted connections inherit these from the listening socket.
    if (s.keepalive) {
      set(fd, g, SOL_SOCKET, SO_KEEPALIVE, s.keepalive->on, "so_keepalive");
      if (s.keepalive->idle) set(fd, g, IPPROTO_TCP, TCP_KEEPIDLE, *s.keepalive->idle, "so_keepalive idle");
      if (s.keepalive->interval)
        set(fd, g, IPPROTO_TCP, TCP_KEEPINTVL, *s.keepalive->interval, "so_keepalive interval");
      if (s.keepalive->count) set(fd, g, IPPROTO_TCP, TCP_KEEPCNT, *s.keepalive->count, "so_keepalive count");
    }
  }

  // The socket file of a unix listener just bound: its owner and mode, as asked.
  void configure_unix_file(const group& g) {
    const listen_spec& s = g.spec;
    const std::string& path = s.path;
    if (!s.user.empty() || !s.group.empty()) {
      std::string what = detail::format("listen address '{}'", s.address);
      uid_t uid = s.user.empty() ? static_cast<uid_t>(-1) : detail::resolve_owner(what, s.user, false);
      gid_t gid = s.group.empty() ? static_cast<gid_t>(-1) : detail::resolve_owner(what, s.group, true);
      if (::lchown(path.c_str(), uid, gid) != 0)
        throw std::runtime_error(
            detail::format("cannot set the owner of unix:{}: {}", path, std::strerror(errno)));
    }
    if (s.mode && ::fchmodat(AT_FDCWD, path.c_str(), *s.mode, 0) != 0)
      throw std::runtime_error(
          detail::format("cannot set the mode of unix:{}: {}", path, std::strerror(errno)));
    remember_unix_file(path);
  }

  void remember_unix_file(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode))
      unix_files_.push_back({path, st.st_dev, st.st_ino});
  }

  void add_socket(group& g) {
    const bool unix_socket = g.family == AF_UNIX;
    detail::unique_fd fd(::socket(g.family, g.type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd)
      throw std::runtime_error(
          detail::format("cannot listen on {}: {}", g.spec.address, std::strerror(errno)));
    configure_before_bind(fd.get(), g);
    if (unix_socket) detail::claim_unix_path(g.spec.path);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&g.addr), g.addr_len) != 0 ||
        (g.type == SOCK_STREAM && ::listen(fd.get(), g.spec.backlog.value_or(backlog_)) != 0))
      throw std::runtime_error(
          detail::format("cannot listen on {}: {}", g.spec.address, std::strerror(errno)));
    if (unix_socket) configure_unix_file(g);
    configure_after_listen(fd.get(), g);
    if (g.socks.empty()) {
      // Port 0: the sockets that join later take the port the first one got.
      socklen_t len = sizeof g.addr;
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&g.addr), &len);
      g.addr_len = len;
    }
    g.views.push_back(view(g, fd.get()));
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
    // A unix socket handed over by a previous master: this one removes its
    // file when it stops for good, as that one would have.
    if (g.family == AF_UNIX && !g.activated && g.socks.empty()) remember_unix_file(g.spec.path);
    g.views.push_back(view(g, fd));
    g.socks.emplace_back(fd);
  }

  static listener view(const group& g, int fd) {
    listener l;
    l.fd = fd;
    l.configured = g.configured;
    l.local = detail::local_address(fd);
    l.family = g.family;
    l.type = g.type;
    return l;
  }

  int backlog_ = 511;
  bool reuseport_ = false;
  std::vector<group> groups_;
  std::vector<unix_file> unix_files_;
};

}  // namespace procmodel
