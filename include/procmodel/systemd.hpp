#pragma once

/// @file systemd.hpp
/// The service manager's side: sd_notify(3) messages (READY=1, RELOADING=1,
/// STOPPING=1, MAINPID=, WATCHDOG=1) sent as datagrams to $NOTIFY_SOCKET,
/// without libsystemd. Without NOTIFY_SOCKET every call does nothing.

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <fmt/format.h>

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
  bool notify(std::string_view state) const noexcept {
    if (path_.empty()) return false;
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path_.size() >= sizeof sa.sun_path) return false;
    std::memcpy(sa.sun_path, path_.data(), path_.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path_.size());
    if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0';  // abstract namespace
    else len += 1;
    detail::unique_fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return false;
    return ::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
                    reinterpret_cast<sockaddr*>(&sa), len) == static_cast<ssize_t>(state.size());
  }

  bool ready() const { return notify("READY=1"); }
  bool stopping() const { return notify("STOPPING=1"); }
  /// RELOADING=1 with the monotonic time, as Type=notify-reload wants it.
  bool reloading() const {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    auto usec = static_cast<unsigned long long>(ts.tv_sec) * 1000000ULL +
                static_cast<unsigned long long>(ts.tv_nsec) / 1000ULL;
    return notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", usec));
  }
  bool main_pid(pid_t pid) const { return notify(fmt::format("MAINPID={}", pid)); }
  bool watchdog_ping() const { return notify("WATCHDOG=1"); }

 private:
  std::string path_;
  std::optional<std::chrono::microseconds> watchdog_;
};

}  // namespace procmodel
