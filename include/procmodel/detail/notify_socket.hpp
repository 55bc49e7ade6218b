#pragma once

/// @file notify_socket.hpp
/// The master's side of sd_notify(3) for one exec'd worker: a datagram
/// socket in the abstract namespace whose name goes to the worker as
/// NOTIFY_SOCKET, and the parsing of what arrives on it.

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "unique_fd.hpp"

namespace procmodel::detail {

/// The longest datagram taken; longer ones are refused whole (systemd's limit).
inline constexpr std::size_t notify_max = 4096;

/// What one datagram says.
struct notify_message {
  bool ready = false;     ///< READY=1
  bool stopping = false;  ///< STOPPING=1
  bool watchdog = false;  ///< WATCHDOG=1
  std::optional<std::string> status;  ///< STATUS=...
  std::string problem;    ///< not KEY=VALUE lines: nothing else is taken from it
};

/// `text` with each control character written as \xHH: what a program says
/// reaches an operator's terminal through `-s status`, where an escape
/// sequence could redraw it.
inline std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

/// Parses a datagram of newline-separated KEY=VALUE assignments. Unknown
/// keys are ignored, as systemd does; a datagram that is not assignments
/// at all (a NUL, a line without '=', a key that is not [A-Z0-9_]) is refused whole.
inline notify_message parse_notify(std::string_view text) {
  notify_message m;
  if (text.empty()) {
    m.problem = "empty datagram";
    return m;
  }
  std::vector<std::pair<std::string_view, std::string_view>> pairs;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.empty()) continue;
    auto eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      m.problem = "a line is not KEY=VALUE";
      return m;
    }
    std::string_view key = line.substr(0, eq);
    for (char c : key)
      if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) {
        m.problem = "a key is not upper-case letters, digits and '_'";
        return m;
      }
    for (char c : line)
      if (c == '\0') {
        m.problem = "a NUL byte";
        return m;
      }
    pairs.emplace_back(key, line.substr(eq + 1));
  }
  for (auto [key, value] : pairs) {
    if (key == "READY") m.ready = value == "1";
    else if (key == "STOPPING") m.stopping = value == "1";
    else if (key == "WATCHDOG") m.watchdog = value == "1";
    else if (key == "STATUS") m.status = printable(value);
  }
  return m;
}

/// The parent of process `pid` from /proc; 0 if unknown.
inline pid_t parent_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  auto close = line.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos || close + 4 > line.size()) return 0;
  // ") S PPID ..."
  auto rest = line.substr(close + 4);
  return static_cast<pid_t>(std::strtol(rest.c_str(), nullptr, 10));
}

/// Whether `sender` is `worker` or one of its descendants (a program that
/// forks a helper of its own may let that one notify).
inline bool sent_by(pid_t sender, pid_t worker) {
  for (int depth = 0; sender > 1 && depth < 16; ++depth) {
    if (sender == worker) return true;
    sender = parent_of(sender);
  }
  return false;
}

/// A datagram socket bound to a name the kernel picks in the abstract
/// namespace (autobind), non-blocking, close-on-exec, with the sender's
/// credentials on every datagram (SO_PASSCRED).
class notify_socket {
 public:
  /// Throws std::system_error when the socket cannot be made.
  notify_socket() {
    fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd_) throw_errno("notify socket");
    int on = 1;
    if (::setsockopt(fd_.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0)
      throw_errno("notify socket: SO_PASSCRED");
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    // An address of the family alone: the kernel picks a unique abstract name.
    if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa_family_t)) != 0)
      throw_errno("notify socket: bind");
    socklen_t len = sizeof sa;
    if (::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0)
      throw_errno("notify socket: getsockname");
    std::size_t n = len - offsetof(sockaddr_un, sun_path);
    name_ = "@" + std::string(sa.sun_path + 1, n > 0 ? n - 1 : 0);
  }

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  int release() noexcept { return fd_.release(); }
  /// NOTIFY_SOCKET's value: "@" and the abstract name.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  unique_fd fd_;
  std::string name_;
};

/// One datagram as received: its text and sender, or why it was refused.
struct notify_datagram {
  std::string text;
  pid_t sender = 0;       ///< 0: no credentials came with it
  bool oversized = false;  ///< longer than notify_max: text is empty
};

/// Reads one datagram without blocking; nothing when none waits. Descriptors
/// sent along (SCM_RIGHTS) are closed: a worker has nothing to store.
inline std::optional<notify_datagram> receive_notify(int fd) {
  std::string buf(notify_max, '\0');
  iovec iov{buf.data(), buf.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 16)];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(fd, &mh, MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return std::nullopt;
  notify_datagram d;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(ucred))) {
      ucred cred{};
      std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
      d.sender = cred.pid;
    } else if (c->cmsg_type == SCM_RIGHTS) {
      std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int passed = -1;
        std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
        if (passed >= 0) ::close(passed);
      }
    }
  }
  if (static_cast<std::size_t>(n) > notify_max || (mh.msg_flags & MSG_TRUNC)) {
    d.oversized = true;
    return d;
  }
  buf.resize(static_cast<std::size_t>(n));
  d.text = std::move(buf);
  return d;
}

}  // namespace procmodel::detail
