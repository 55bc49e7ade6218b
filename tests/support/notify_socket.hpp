#pragma once

// systemd's side of NOTIFY_SOCKET, for the tests: a unix datagram socket that
// tells who sent each message (SO_PASSCRED) and takes the descriptors sent
// with it (SCM_RIGHTS), as systemd does. `fd_store` builds the file-descriptor
// store on top of it.

#include "catch.hpp"
#include "process.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace test_support {

using pmtest::milliseconds;
using pmtest::steady;

class notify_socket {
 public:
  struct message {
    std::string text;
    pid_t sender = 0;
    std::vector<int> fds;  ///< descriptors sent with it; the receiver closes them
  };

  /// A path, or "@name" for Linux's abstract namespace (as systemd may give).
  explicit notify_socket(std::string path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    REQUIRE((!path_.empty() && path_.size() < sizeof sa.sun_path));
    std::memcpy(sa.sun_path, path_.data(), path_.size());
    socklen_t len = sizeof sa;
    if (path_[0] == '@') {  // abstract: a leading NUL, and exactly the name's length
      sa.sun_path[0] = '\0';
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path_.size());
    }
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), len) == 0);
    int one = 1;
    REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) == 0);
  }
  notify_socket(const notify_socket&) = delete;
  notify_socket& operator=(const notify_socket&) = delete;
  ~notify_socket() {
    ::close(fd_);
    if (path_[0] != '@') ::unlink(path_.c_str());
  }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

  /// The next message, waiting up to `timeout`. Its descriptors are the
  /// caller's (close-on-exec); the copy kept in seen() has none.
  std::optional<message> next(milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    char buf[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 16)];
    iovec iov{buf, sizeof buf};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd_, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0) return std::nullopt;
    message m;
    m.text.assign(buf, static_cast<std::size_t>(n));
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred{};
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        m.sender = cred.pid;
      } else if (c->cmsg_type == SCM_RIGHTS) {
        for (std::size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++k) {
          int fd = -1;
          std::memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
          m.fds.push_back(fd);
        }
      }
    }
    seen_.push_back(message{m.text, m.sender, {}});
    return m;
  }

  /// Reads until a message whose text is `text` arrives (true) or `timeout` passes.
  bool until(const std::string& text, milliseconds timeout) {
    auto deadline = steady::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
      if (left.count() <= 0) return false;
      auto m = next(left);
      if (!m) continue;
      close_all(m->fds);
      if (m->text == text) return true;
    }
  }

  /// Whatever arrives within `quiet` of the last message.
  void drain(milliseconds quiet) {
    while (auto m = next(quiet)) close_all(m->fds);
  }

  /// Every message so far.
  [[nodiscard]] const std::vector<message>& seen() const noexcept { return seen_; }
  [[nodiscard]] std::string describe() const {
    std::string out = "notifications:\n";
    for (const auto& m : seen_) {
      std::string t = m.text;
      std::replace(t.begin(), t.end(), '\n', '|');
      out += "  from " + std::to_string(m.sender) + ": " + t + "\n";
    }
    return out;
  }

  static void close_all(const std::vector<int>& fds) {
    for (int fd : fds) ::close(fd);
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<message> seen_;
};

// systemd's file-descriptor store: keeps the descriptors sent with FDSTORE=1
// under their FDNAME= (a duplicate name replaces nothing: the first stays, as
// systemd drops duplicates), drops them on FDSTOREREMOVE=1, and hands them
// over in name order.
class fd_store {
 public:
  explicit fd_store(std::string path) : socket_(std::move(path)) {}
  fd_store(const fd_store&) = delete;
  fd_store& operator=(const fd_store&) = delete;
  ~fd_store() {
    for (auto& [name, fd] : fds_) ::close(fd);
  }
  [[nodiscard]] const std::string& path() const noexcept { return socket_.path(); }

  /// Reads what has arrived (waiting up to `timeout` for the first message).
  void receive(milliseconds timeout) {
    for (auto wait = timeout;; wait = milliseconds(0)) {
      auto m = socket_.next(wait);
      if (!m) return;
      std::smatch found;
      std::string name = std::regex_search(m->text, found, std::regex(R"(FDNAME=([^\n]*))"))
                             ? found[1].str()
                             : "stored";
      if (m->text.find("FDSTORE=1") != std::string::npos && m->fds.size() == 1 &&
          !fds_.count(name)) {
        fds_[name] = m->fds[0];
        m->fds.clear();
      } else if (m->text.find("FDSTOREREMOVE=1") != std::string::npos) {
        removed_.push_back(name);
        if (auto it = fds_.find(name); it != fds_.end()) {
          ::close(it->second);
          fds_.erase(it);
        }
      }
      notify_socket::close_all(m->fds);
    }
  }
  [[nodiscard]] std::size_t size() const { return fds_.size(); }
  /// The names FDSTOREREMOVE=1 named, in order.
  [[nodiscard]] const std::vector<std::string>& removed() const { return removed_; }
  [[nodiscard]] std::vector<int> fds() const {
    std::vector<int> out;
    for (const auto& [name, fd] : fds_) out.push_back(fd);
    return out;
  }
  /// LISTEN_FDNAMES's value.
  [[nodiscard]] std::string names() const {
    std::string out;
    for (const auto& [name, fd] : fds_) out += (out.empty() ? "" : ":") + name;
    return out;
  }

 private:
  notify_socket socket_;
  std::map<std::string, int> fds_;
  std::vector<std::string> removed_;
};

}  // namespace test_support
