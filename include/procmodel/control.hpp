#pragma once

/// @file control.hpp
/// `prog -s COMMAND`: tells the running master what to do. Signals go through
/// the pid file; `status` and `upgrade` (which need an answer) go over the
/// master's control socket, a unix socket of mode 0600 whose peer's uid is
/// checked.

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <optional>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/core.h>

#include "detail/format.hpp"
#include "detail/unique_fd.hpp"

#include "options.hpp"
#include "pid_file.hpp"
#include "signals.hpp"

namespace procmodel {

/// Sends `c` to the master named by `opt.pid_file`. Returns the exit code
/// for the program: 0 when the signal was delivered, 1 otherwise (with a
/// message on stderr that says why).
template <class Signals = nginx_signals>
int send_command(const options& opt, command c) {
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "%s: -s %s: %s\n", opt.program_name.c_str(), std::string(to_string(c)).c_str(),
                 why.c_str());
    return 1;
  };
  if (opt.pid_file.empty()) return fail("needs --pid-file PATH to find the master");
  int signo = Signals::signal_for(c);
  if (signo == 0) return fail("no signal carries this command");
  pid_t pid = 0;
  try {
    pid = pid_file::read(opt.pid_file);
  } catch (const std::runtime_error& e) {
    return fail(e.what());
  }
  // A pid file left behind by a crash may name a pid reused by anything.
  if (::kill(pid, 0) == 0 && !pid_file::same_executable(pid).value_or(true))
    return fail(detail::format("pid file {} names process {}, which runs {}: another program, "
                            "neither this one ({}) nor a copy of it",
                            opt.pid_file, pid, pid_file::executable(pid),
                            pid_file::executable(::getpid())));
  if (::kill(pid, signo) != 0) {
    if (errno == ESRCH)
      return fail(
          detail::format("no process {} is running (stale pid file {})", pid, opt.pid_file));
    return fail(detail::format("cannot signal process {}: {}", pid, std::strerror(errno)));
  }
  return 0;
}

/// Where the control socket is: options::control_socket, else "<pid file>.sock".
inline std::string control_path(const options& opt) {
  if (!opt.control_socket.empty()) return opt.control_socket;
  if (!opt.pid_file.empty()) return opt.pid_file + ".sock";
  return {};
}

namespace detail {

/// The address of a unix socket at any path. A path that fits in sun_path
/// (107 characters) is used as it is; a longer one is reached through its
/// directory, opened O_PATH and named "/proc/self/fd/N/NAME", so that a pid
/// file deep in a tree still has its control socket beside it, found the
/// same way by `-s status`. Only NAME (the last component) must be short.
class unix_address {
 public:
  explicit unix_address(const std::string& path) {
    sa_.sun_family = AF_UNIX;
    if (path.empty()) throw std::runtime_error("control socket path is empty");
    std::string via = path;
    if (path.size() >= sizeof sa_.sun_path) {
      auto slash = path.rfind('/');
      std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
      std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
      dir_.reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!dir_)
        throw std::runtime_error(detail::format("control socket {}: cannot open {}: {}", path, dir,
                                                std::strerror(errno)));
      via = detail::format("/proc/self/fd/{}/{}", dir_.get(), name);
      if (name.empty() || via.size() >= sizeof sa_.sun_path)
        throw std::runtime_error(detail::format(
            "control socket {}: its file name '{}' is too long for a unix socket; use --control "
            "with a shorter name",
            path, name));
    }
    std::memcpy(sa_.sun_path, via.data(), via.size());
  }

  [[nodiscard]] const sockaddr* get() const noexcept {
    return reinterpret_cast<const sockaddr*>(&sa_);
  }
  [[nodiscard]] static socklen_t size() noexcept { return sizeof(sockaddr_un); }

 private:
  sockaddr_un sa_{};
  unique_fd dir_;  // the directory a long path is reached through
};

}  // namespace detail

/// The master's end of the control socket.
class control_server {
 public:
  /// Listens on `path` (mode 0600). A stale socket file is replaced; a live
  /// one is an error unless `take_over` (a new master during an upgrade).
  void open(const std::string& path, bool take_over) {
    detail::unix_address sa(path);
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode))
        throw std::runtime_error(
            detail::format("control socket path {} exists and is not a socket", path));
      detail::unique_fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      bool live = ::connect(probe.get(), sa.get(), sa.size()) == 0;
      if (live && !take_over)
        throw std::runtime_error(
            detail::format("another master answers on control socket {}", path));
      ::unlink(path.c_str());
    }
    detail::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) detail::throw_errno("socket");
    mode_t old = ::umask(0177);  // born 0600: no window where others may connect
    int rc = ::bind(fd.get(), sa.get(), sa.size());
    int err = errno;
    ::umask(old);
    if (rc != 0 || ::listen(fd.get(), 16) != 0)
      throw std::runtime_error(detail::format("cannot listen on control socket {}: {}", path,
                                              std::strerror(rc ? err : errno)));
    ::chmod(path.c_str(), 0600);
    struct stat bound {};
    bound_inode_ = ::stat(path.c_str(), &bound) == 0 ? bound.st_ino : 0;
    fd_ = std::move(fd);
    path_ = path;
  }

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

  /// Accepts one client whose uid is ours (or root's); others are told no.
  /// Returns nothing when no client is waiting (`error` 0) or accept failed
  /// (`error` is its errno: EMFILE, ENFILE, ENOBUFS, ENOMEM ...).
  std::optional<detail::unique_fd> accept(int& error) {
    for (;;) {
      error = 0;
      detail::unique_fd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!c) {
        // A client that gave up while queued is no failure of ours.
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
          error = errno;
        return std::nullopt;
      }
      ucred cred{};
      socklen_t len = sizeof cred;
      if (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
          (cred.uid == ::geteuid() || cred.uid == 0))
        return c;
      static constexpr std::string_view denied = "error: permission denied\n";
      (void)!::send(c.get(), denied.data(), denied.size(), MSG_NOSIGNAL);
    }
  }

  /// Stops listening; removes the socket file if it is still ours.
  void close(bool unlink_path) noexcept {
    if (!fd_) return;
    struct stat on_disk {};
    // Only if the file is the socket we bound (a successor may have replaced it).
    if (unlink_path && ::stat(path_.c_str(), &on_disk) == 0 && on_disk.st_ino == bound_inode_)
      ::unlink(path_.c_str());
    fd_.reset();
  }

 private:
  detail::unique_fd fd_;
  std::string path_;
  ino_t bound_inode_ = 0;
};

/// Sends one request line to the master's control socket and returns its
/// whole answer. Throws std::runtime_error when the master cannot be reached.
inline std::string control_request(const std::string& path, std::string_view request,
                                   milliseconds timeout) {
  detail::unix_address sa(path);
  detail::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) detail::throw_errno("socket");
  if (::connect(fd.get(), sa.get(), sa.size()) != 0)
    throw std::runtime_error(detail::format("cannot reach the master on {}: {}", path,
                                         std::strerror(errno)));
  std::string line = std::string(request) + "\n";
  if (::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size()))
    throw std::runtime_error(detail::format("cannot talk to the master on {}", path));
  std::string answer;
  auto deadline = steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
    if (left.count() <= 0) throw std::runtime_error("no answer from the master in time");
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
  }
  return answer;
}

/// `-s status`, `-s upgrade`, `-s reload`: asks the master, prints its
/// answer. 0 for an explicit "ok" (status: any table), 1 otherwise: an
/// error, or no verdict at all (the master stopped or hung up).
inline int query_master(const options& opt) {
  std::string path = control_path(opt);
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "%s: -s %s: %s\n", opt.program_name.c_str(), opt.query.c_str(),
                 why.c_str());
    return 1;
  };
  if (path.empty()) return fail("needs --pid-file PATH (or --control PATH) to find the master");
  std::string request = opt.query;
  if (opt.query == "status" && opt.json) request += " json";
  if (opt.query == "upgrade") request += detail::format(" {}", opt.upgrade_timeout.count());
  milliseconds timeout = opt.query == "upgrade"  ? opt.upgrade_timeout + milliseconds(10'000)
                         : opt.query == "reload" ? opt.ready_timeout + milliseconds(15'000)
                                                 : milliseconds(5'000);
  std::string answer;
  try {
    answer = control_request(path, request, timeout);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  if (answer.rfind("error", 0) == 0) return fail(answer.substr(answer.find(' ') + 1));
  if (opt.query != "status" && answer.rfind("ok", 0) != 0) {
    while (!answer.empty() && answer.back() == '\n') answer.pop_back();
    return fail(answer.empty() ? "the master hung up without a verdict (did it stop?)"
                               : "unexpected answer: " + answer);
  }
  std::fputs(answer.c_str(), stdout);
  return 0;
}

}  // namespace procmodel
