#pragma once

/// @file systemd.hpp
/// The service manager's side: sd_notify(3) messages (READY=1, RELOADING=1,
/// STOPPING=1, MAINPID=, WATCHDOG=1, FDSTORE=1) sent as datagrams to
/// $NOTIFY_SOCKET, without libsystemd. Without NOTIFY_SOCKET every call does
/// nothing.

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <fmt/core.h>

#include "detail/format.hpp"
#include "detail/unique_fd.hpp"

namespace procmodel {

/// Talks to systemd through $NOTIFY_SOCKET (a path, or "@name" for the
/// abstract namespace).
class systemd_notifier {
 public:
  /// Reads NOTIFY_SOCKET (and WATCHDOG_USEC / WATCHDOG_PID) from the environment.
  systemd_notifier() {
    if (const char* s = std::getenv("NOTIFY_SOCKET"); s && *s) path_ = s;
    const char* usec = std::getenv("WATCHDOG_USEC");
    const char* wpid = std::getenv("WATCHDOG_PID");
    if (usec && *usec && (!wpid || std::strtol(wpid, nullptr, 10) == ::getpid())) {
      char* end = nullptr;
      unsigned long long v = std::strtoull(usec, &end, 10);
      if (end && *end == '\0' && v > 0) watchdog_ = std::chrono::microseconds(v);
    }
  }

  [[nodiscard]] bool enabled() const noexcept { return !path_.empty(); }
  /// How often systemd wants WATCHDOG=1, if it does.
  [[nodiscard]] std::optional<std::chrono::microseconds> watchdog() const noexcept {
    return watchdog_;
  }

  /// Sends one message ("READY=1", "STOPPING=1", ...); false if it could not.
  /// With `fd` (>= 0), the descriptor goes along (SCM_RIGHTS), as FDSTORE=1 wants.
  bool notify(std::string_view state, int fd = -1) const noexcept {
    if (path_.empty()) return false;
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path_.size() >= sizeof sa.sun_path) return false;
    std::memcpy(sa.sun_path, path_.data(), path_.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path_.size());
    if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0';  // abstract namespace
    else len += 1;
    detail::unique_fd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!sock) return false;
    iovec iov{const_cast<char*>(state.data()), state.size()};
    msghdr mh{};
    mh.msg_name = &sa;
    mh.msg_namelen = len;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    if (fd >= 0) {
      mh.msg_control = control;
      mh.msg_controllen = sizeof control;
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    return ::sendmsg(sock.get(), &mh, MSG_NOSIGNAL) == static_cast<ssize_t>(state.size());
  }

  /// Keeps `fd` in the service's file-descriptor store under `name`
  /// (FDSTORE=1, FDNAME=): systemd holds it while no master runs and hands
  /// it to the next one (LISTEN_FDS, LISTEN_FDNAMES). It drops a duplicate
  /// of one it holds, and everything when the service stops for good.
  bool store_fd(int fd, std::string_view name) const {
    return notify(detail::format("FDSTORE=1\nFDNAME={}", name), fd);
  }
  /// Takes the descriptors stored under `name` out of the store.
  bool remove_stored_fd(std::string_view name) const {
    return notify(detail::format("FDSTOREREMOVE=1\nFDNAME={}", name));
  }

  /// Whether the service has a file-descriptor store, as systemd 254 and
  /// later say (FDSTORE=, the unit's FileDescriptorStoreMax=).
  static bool has_fd_store() {
    const char* n = std::getenv("FDSTORE");
    return n && std::strtol(n, nullptr, 10) > 0;
  }

  bool ready() const { return notify("READY=1"); }
  bool stopping() const { return notify("STOPPING=1"); }
  /// RELOADING=1 with the monotonic time, as Type=notify-reload wants it.
  bool reloading() const {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    auto usec = static_cast<unsigned long long>(ts.tv_sec) * 1000000ULL +
                static_cast<unsigned long long>(ts.tv_nsec) / 1000ULL;
    return notify(detail::format("RELOADING=1\nMONOTONIC_USEC={}", usec));
  }
  bool main_pid(pid_t pid) const { return notify(detail::format("MAINPID={}", pid)); }
  bool watchdog_ping() const { return notify("WATCHDOG=1"); }

 private:
  std::string path_;
  std::optional<std::chrono::microseconds> watchdog_;
};

}  // namespace procmodel
