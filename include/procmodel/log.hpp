#pragma once

/// @file log.hpp
/// A small line logger on top of fmt: one write(2) per line, to stderr or to a
/// file opened with O_APPEND, which USR1 can reopen after logrotate moved it.

#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>

#include "detail/format.hpp"
#include "detail/unique_fd.hpp"

namespace procmodel {

/// Severity of a log line; lines below the logger's level are dropped.
enum class log_level { debug, info, notice, warn, error };

/// The name a level is printed with.
constexpr std::string_view to_string(log_level level) noexcept {
  switch (level) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::notice: return "notice";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
  }
  return "?";
}

/// Writes timestamped lines `2026-11-28 23:17:33.123 [notice] 4242 master: text`.
class logger {
 public:
  /// Logs to stderr until open() names a file.
  logger() = default;

  /// Opens `path` for appending (created 0644); an empty path means stderr.
  /// Throws std::system_error when the file cannot be opened.
  void open(std::string path) {
    if (path.empty()) {
      file_.reset();
      path_.clear();
      return;
    }
    detail::unique_fd fd = open_file(path);
    if (!fd) detail::throw_errno(("cannot open log file " + path).c_str());
    file_ = std::move(fd);
    path_ = std::move(path);
  }

  /// Opens the log file again by its path (after a rotation moved it away).
  /// On failure the old file stays in use and the reason is logged to it.
  bool reopen() {
    if (path_.empty()) return true;
    detail::unique_fd fd = open_file(path_);
    if (!fd) {
      int err = errno;
      error("cannot reopen log file {}: {}", path_, std::strerror(err));
      return false;
    }
    file_ = std::move(fd);
    return true;
  }

  /// The role printed on each line: "master", "worker 3", ...
  void set_role(std::string role) { role_ = std::move(role); }
  void set_level(log_level level) noexcept { level_ = level; }
  [[nodiscard]] log_level level() const noexcept { return level_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  /// The descriptor lines go to (a worker keeps it open across fork).
  [[nodiscard]] int fd() const noexcept { return file_ ? file_.get() : STDERR_FILENO; }

  template <class... Args>
  void log(log_level level, fmt::format_string<Args...> format, Args&&... args) {
    if (level < level_) return;
    write_line(level, fmt::vformat(format, fmt::make_format_args(args...)));
  }
  template <class... Args>
  void debug(fmt::format_string<Args...> f, Args&&... a) { log(log_level::debug, f, std::forward<Args>(a)...); }
  template <class... Args>
  void info(fmt::format_string<Args...> f, Args&&... a) { log(log_level::info, f, std::forward<Args>(a)...); }
  template <class... Args>
  void notice(fmt::format_string<Args...> f, Args&&... a) { log(log_level::notice, f, std::forward<Args>(a)...); }
  template <class... Args>
  void warn(fmt::format_string<Args...> f, Args&&... a) { log(log_level::warn, f, std::forward<Args>(a)...); }
  template <class... Args>
  void error(fmt::format_string<Args...> f, Args&&... a) { log(log_level::error, f, std::forward<Args>(a)...); }

  /// Writes one already formatted line.
  void write_line(log_level level, std::string_view text) {
    if (level < level_) return;
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    std::tm tm{};
    ::localtime_r(&now.tv_sec, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    // fmt::format, not format_to: its engine is compiled into libfmt once,
    // not instantiated in every program that includes this header.
    const std::string line = fmt::format("{}.{:03} [{}] {} {}: {}\n", stamp,
                                         now.tv_nsec / 1000000, to_string(level), ::getpid(),
                                         role_, text);
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
      ssize_t n = ::write(fd(), p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;  // nowhere left to complain to
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }

 private:
  static detail::unique_fd open_file(const std::string& path) {
    return detail::unique_fd(
        ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644));
  }

  detail::unique_fd file_;
  std::string path_;
  std::string role_ = "master";
  log_level level_ = log_level::info;
};

}  // namespace procmodel
