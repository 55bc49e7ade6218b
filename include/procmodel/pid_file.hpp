#pragma once

/// @file pid_file.hpp
/// The master's pid file: written atomically (temporary file, then rename),
/// never through a symbolic link, removed on exit only if it still names us.

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>

#include "detail/format.hpp"
#include "detail/unique_fd.hpp"

namespace procmodel {

/// Reads, writes and removes pid files. Errors are std::runtime_error with a
/// message that names the file and says what is wrong with it.
struct pid_file {
  /// Reads the pid a file names. Refuses a symbolic link, a file that is not
  /// regular, and anything but a positive decimal pid and a newline.
  static pid_t read(const std::string& path) {
    detail::unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (!fd) {
      if (errno == ELOOP)
        throw std::runtime_error(
            detail::format("pid file {} is a symbolic link; refusing it", path));
      throw std::runtime_error(
          detail::format("cannot open pid file {}: {}", path, std::strerror(errno)));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
      throw std::runtime_error(detail::format("pid file {} is not a regular file", path));
    char buf[32] = {};
    ssize_t n = detail::retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf - 1); });
    if (n < 0)
      throw std::runtime_error(
          detail::format("cannot read pid file {}: {}", path, std::strerror(errno)));
    std::string_view text(buf, static_cast<std::size_t>(n));
    if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    long long pid = 0;
    // At most 10 digits, checked before any arithmetic: no overflow on junk.
    bool ok = !text.empty() && text.size() <= 10;
    for (std::size_t i = 0; ok && i < text.size(); ++i) {
      char c = text[i];
      ok = c >= '0' && c <= '9';
      pid = pid * 10 + (c - '0');
    }
    if (!ok || pid <= 1 || pid > INT_MAX)
      throw std::runtime_error(detail::format("pid file {} does not hold a pid", path));
    return static_cast<pid_t>(pid);
  }

  /// Whether a pid file names a live process running the same executable as
  /// this one (another master): then starting again would fight over it.
  static bool names_live_master(const std::string& path, pid_t self) {
    pid_t pid = 0;
    try {
      pid = read(path);
    } catch (const std::runtime_error&) {
      return false;  // stale or junk: it will be replaced
    }
    if (pid == self || (::kill(pid, 0) != 0 && errno == ESRCH)) return false;
    return same_executable(pid).value_or(false);  // unknown: a stranger's reused pid
  }

  /// Writes `pid` to `path` atomically. Refuses when `path` is a symbolic link
  /// or not a regular file.
  static void write(const std::string& path, pid_t pid) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (S_ISLNK(st.st_mode))
        throw std::runtime_error(
            detail::format("pid file {} is a symbolic link; refusing to write through it", path));
      if (!S_ISREG(st.st_mode))
        throw std::runtime_error(
            detail::format("pid file {} exists and is not a regular file", path));
    }
    std::string tmp = detail::format("{}.tmp.{}", path, ::getpid());
    detail::unique_fd fd(
        ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!fd && errno == EEXIST) {  // left by a crashed master of the same pid
      ::unlink(tmp.c_str());
      fd.reset(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    }
    if (!fd)
      throw std::runtime_error(
          detail::format("cannot create pid file {}: {}", tmp, std::strerror(errno)));
    std::string text = detail::format("{}\n", pid);
    ssize_t n = detail::retry_eintr([&] { return ::write(fd.get(), text.data(), text.size()); });
    if (n != static_cast<ssize_t>(text.size()) || ::rename(tmp.c_str(), path.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      throw std::runtime_error(
          detail::format("cannot write pid file {}: {}", path, std::strerror(err)));
    }
  }

  /// Removes `path` if it still names `pid`; true if it did.
  static bool remove_if_ours(const std::string& path, pid_t pid) noexcept {
    try {
      if (read(path) != pid) return false;
    } catch (const std::runtime_error&) {
      return false;
    }
    return ::unlink(path.c_str()) == 0;
  }

 private:
  /// Whether two files hold the same bytes; nothing when one cannot be read.
  static std::optional<bool> same_contents(const std::string& a, const std::string& b) {
    detail::unique_fd fa(::open(a.c_str(), O_RDONLY | O_CLOEXEC));
    detail::unique_fd fb(::open(b.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat sa {}, sb {};
    if (!fa || !fb || ::fstat(fa.get(), &sa) != 0 || ::fstat(fb.get(), &sb) != 0)
      return std::nullopt;
    if (sa.st_size != sb.st_size) return false;
    // Up to `size` bytes, fewer only at the end of the file; -1 on error.
    auto fill = [](int fd, char* buf, std::size_t size) {
      std::size_t got = 0;
      while (got < size) {
        ssize_t n = detail::retry_eintr([&] { return ::read(fd, buf + got, size - got); });
        if (n < 0) return ssize_t{-1};
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
      }
      return static_cast<ssize_t>(got);
    };
    std::string ba(1 << 16, '\0'), bb(1 << 16, '\0');
    for (;;) {
      ssize_t na = fill(fa.get(), ba.data(), ba.size());
      ssize_t nb = fill(fb.get(), bb.data(), bb.size());
      if (na < 0 || nb < 0) return std::nullopt;
      if (na != nb || std::memcmp(ba.data(), bb.data(), static_cast<std::size_t>(na)) != 0)
        return false;
      if (na == 0) return true;
    }
  }

  /// The executable a process runs, "" when it cannot be read. A binary
  /// replaced on disk (a package upgrade) reads "PATH (deleted)": that is PATH.
  static std::string executable_of(const std::string& proc_link) {
    char buf[PATH_MAX + 1] = {};
    ssize_t n = ::readlink(proc_link.c_str(), buf, PATH_MAX);
    if (n <= 0) return {};
    std::string path(buf, static_cast<std::size_t>(n));
    constexpr std::string_view deleted = " (deleted)";
    if (path.ends_with(deleted)) path.resize(path.size() - deleted.size());
    return path;
  }

 public:
  /// Whether process `pid` runs the same program as this process: the same
  /// file, by whatever path (a symbolic or hard link); a copy of it, byte
  /// for byte; or the file at the path it was started from, replaced on disk
  /// since (a package upgrade). Nothing when that cannot be told (another
  /// user's process, no /proc).
  static std::optional<bool> same_executable(pid_t pid) {
    const std::string theirs_link = detail::format("/proc/{}/exe", pid);
    struct stat mine {}, theirs {};
    if (::stat("/proc/self/exe", &mine) != 0 || ::stat(theirs_link.c_str(), &theirs) != 0)
      return std::nullopt;
    if (mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino) return true;
    std::string my_path = executable_of("/proc/self/exe");
    std::string their_path = executable_of(theirs_link);
    if (my_path.empty() || their_path.empty()) return std::nullopt;
    if (my_path == their_path) return true;
    return same_contents("/proc/self/exe", theirs_link);
  }

  /// The executable of process `pid`, for messages.
  static std::string executable(pid_t pid) {
    return executable_of(detail::format("/proc/{}/exe", pid));
  }
};

}  // namespace procmodel
