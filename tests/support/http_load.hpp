#pragma once

// A small HTTP/1.1 load client for integration tests: N connections on one
// poll loop, each with exactly one request in flight at a time. It tells
// apart what the design allows (a connect refused after the server stopped)
// from what it forbids (a request sent and never answered: reset, EOF,
// garbage), and counts apart what would otherwise hide a stall: a connect or
// an answer that timed out, an answer slower than a bound. Each failure
// carries when it happened and which worker pid served that connection
// last. Plain POSIX, no Asio.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <unistd.h>

namespace test_support {

struct load_result {
  std::uint64_t ok = 0;         ///< 2xx responses
  std::uint64_t non_2xx = 0;    ///< answered, but not 2xx
  std::uint64_t failed = 0;     ///< sent and never answered: reset, EOF, garbage; other connect errors
  std::uint64_t refused = 0;    ///< connect refused, ECONNREFUSED (server gone: allowed on a stop)
  std::uint64_t timed_out = 0;  ///< connect or answer not done within its timeout
  std::uint64_t slow = 0;       ///< answered, but later than load_options::slow_after
  std::uint64_t closes = 0;     ///< answers that carried Connection: close
  double max_latency_ms = 0;    ///< the slowest answer
  /// When the first connect was refused (nothing if none was).
  std::optional<std::chrono::steady_clock::time_point> first_refused;
  std::vector<std::string> failures;       ///< first few descriptions of each kind, with time and pid
  std::map<std::string, std::uint64_t> bodies;  ///< body text -> count
};

struct load_options {
  int connections = 20;
  bool connection_close = false;  ///< send Connection: close on every request
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds response_timeout{10000};
  /// An answer later than this counts as slow (a stall the design forbids).
  std::chrono::milliseconds slow_after{2000};
  bool stop_on_refused = true;  ///< a connection that is refused stops (server gone)
  bool record_bodies = true;
};

/// Runs in its own thread from start() until stop().
class http_load {
 public:
  http_load(std::uint16_t port, load_options opt = {}) : port_(port), opt_(opt) {}
  ~http_load() { stop(); }

  void start() {
    running_ = true;
    thread_ = std::thread([this] { run(); });
  }
  load_result stop() {
    running_ = false;
    if (thread_.joinable()) thread_.join();
    std::lock_guard lock(mutex_);
    return result_;
  }
  load_result snapshot() {
    std::lock_guard lock(mutex_);
    return result_;
  }
  /// Ends the run without abandoning a request: no new request is sent, the
  /// ones in flight get up to `grace` to be answered, and any still
  /// unanswered then counts as failed ("no answer by the end of the run").
  /// stop() instead drops what is in flight uncounted.
  load_result finish(std::chrono::milliseconds grace = std::chrono::seconds(5)) {
    finish_by_ = clock::now() + grace;
    finishing_ = true;
    if (thread_.joinable()) thread_.join();
    running_ = false;
    std::lock_guard lock(mutex_);
    return result_;
  }
  /// True when every connection has stopped (refused after the server left).
  bool all_stopped() const { return active_ == 0 && started_; }

 private:
  using clock = std::chrono::steady_clock;
  enum class st { connecting, sending, reading, done };
  struct conn {
    int fd = -1;
    st state = st::done;
    std::string out;
    std::size_t sent = 0;
    std::string in;
    clock::time_point since;
    long served_by = 0;  ///< the pid the last answer on this connection named
  };

  // "+1234.5 ms (20:10:52.123), connection last served by pid 4242: why"
  std::string stamp(const conn& c, const std::string& why) const {
    const auto now = clock::now();
    const double rel = std::chrono::duration<double, std::milli>(now - started_at_).count();
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    std::tm tm{};
    ::localtime_r(&ts.tv_sec, &tm);
    char buf[96];
    std::snprintf(buf, sizeof buf, "+%.1f ms (%02d:%02d:%02d.%03ld), ", rel, tm.tm_hour, tm.tm_min,
                  tm.tm_sec, ts.tv_nsec / 1000000);
    std::string who = c.served_by ? "connection last served by pid " + std::to_string(c.served_by)
                                  : std::string("connection not served yet");
    return buf + who + ": " + why;
  }

  // Counts one event of a kind and keeps its description (the first 10 of each kind).
  void note(std::uint64_t& counter, std::map<std::uint64_t*, int>& kept, const conn& c,
            const std::string& why) {
    std::lock_guard lock(mutex_);
    ++counter;
    if (kept[&counter]++ < 10) result_.failures.push_back(stamp(c, why));
  }

  void fail(conn& c, const std::string& why) {
    note(result_.failed, kept_, c, why);
    reconnect(c);
  }

  void timed_out(conn& c, const std::string& why) {
    note(result_.timed_out, kept_, c, why);
    reconnect(c);
  }

  // A connect that did not succeed: refused (allowed once the server is
  // gone), timed out, or another error.
  void connect_failed(conn& c, int err, bool timeout) {
    if (timeout) {
      note(result_.timed_out, kept_, c, "connect not done within the connect timeout");
      return give_up(c);
    }
    if (err != ECONNREFUSED) {
      note(result_.failed, kept_, c, std::string("connect: ") + std::strerror(err));
      return give_up(c);
    }
    {
      std::lock_guard lock(mutex_);
      ++result_.refused;
      if (!result_.first_refused) result_.first_refused = clock::now();
    }
    give_up(c);
  }

  void give_up(conn& c) {
    ::close(c.fd);
    c.fd = -1;
    if (opt_.stop_on_refused) {
      c.state = st::done;
      --active_;
    } else {
      reconnect(c);
    }
  }

  // The connection ends here (finish(): nothing more is sent on it).
  void retire(conn& c) {
    if (c.fd >= 0) ::close(c.fd);
    c.fd = -1;
    c.state = st::done;
  }

  void reconnect(conn& c) {
    if (finishing_) return retire(c);
    if (c.fd >= 0) ::close(c.fd);
    c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port_);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = ::connect(c.fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    c.since = clock::now();
    c.in.clear();
    if (rc == 0) {
      begin_request(c);
    } else if (errno == EINPROGRESS) {
      c.state = st::connecting;
    } else {
      connect_failed(c, errno, false);
    }
  }

  void begin_request(conn& c) {
    c.out = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    if (opt_.connection_close) c.out += "Connection: close\r\n";
    c.out += "\r\n";
    c.sent = 0;
    c.in.clear();
    c.state = st::sending;
    c.since = clock::now();
  }

  // Parses a complete response in c.in; returns false while incomplete.
  bool parse(conn& c, bool eof) {
    auto end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    std::string head = c.in.substr(0, end);
    std::size_t length = 0;
    bool close = false;
    std::string lower;
    for (char ch : head) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (auto p = lower.find("\r\ncontent-length:"); p != std::string::npos)
      length = std::strtoul(lower.c_str() + p + 17, nullptr, 10);
    if (lower.find("\r\nconnection: close") != std::string::npos) close = true;
    if (c.in.size() < end + 4 + length) return false;
    (void)eof;
    int status = 0;
    if (head.rfind("HTTP/1.", 0) == 0 && head.size() > 12) status = std::atoi(head.c_str() + 9);
    std::string body = c.in.substr(end + 4, length);
    if (auto p = body.rfind(" pid "); p != std::string::npos)
      c.served_by = std::strtol(body.c_str() + p + 5, nullptr, 10);
    const auto took = clock::now() - c.since;
    const double ms = std::chrono::duration<double, std::milli>(took).count();
    {
      std::lock_guard lock(mutex_);
      if (status >= 200 && status < 300) ++result_.ok;
      else ++result_.non_2xx;
      if (close) ++result_.closes;
      if (opt_.record_bodies) ++result_.bodies[body];
      result_.max_latency_ms = std::max(result_.max_latency_ms, ms);
    }
    if (took > opt_.slow_after)
      note(result_.slow, kept_, c, "slow: answered after " + std::to_string(static_cast<long>(ms)) +
                                       " ms (bound " + std::to_string(opt_.slow_after.count()) +
                                       " ms)");
    if (finishing_) {
      retire(c);
    } else if (close || opt_.connection_close) {
      reconnect(c);
    } else {
      begin_request(c);
    }
    return true;
  }

  void run() {
    std::vector<conn> conns(static_cast<std::size_t>(opt_.connections));
    started_at_ = clock::now();
    active_ = opt_.connections;
    started_ = true;
    for (auto& c : conns) reconnect(c);
    std::vector<pollfd> pfds;
    while (running_ && active_ > 0) {
      if (finishing_ && !finish_step(conns)) break;
      pfds.clear();
      for (auto& c : conns) {
        short ev = 0;
        if (c.state == st::connecting || c.state == st::sending) ev = POLLOUT;
        if (c.state == st::reading) ev = POLLIN;
        pfds.push_back({c.state == st::done ? -1 : c.fd, ev, 0});
      }
      ::poll(pfds.data(), pfds.size(), 20);
      auto now = clock::now();
      for (std::size_t i = 0; i < conns.size(); ++i) {
        conn& c = conns[i];
        short re = pfds[i].revents;
        if (c.state == st::done) continue;
        if (c.state == st::connecting) {
          if (re) {
            int err = 0;
            socklen_t len = sizeof err;
            ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err == 0) begin_request(c);
            else connect_failed(c, err, false);
          } else if (now - c.since > opt_.connect_timeout) {
            connect_failed(c, 0, true);
          }
          continue;
        }
        if (c.state == st::sending) {
          if (re & (POLLERR | POLLHUP)) {
            fail(c, "connection closed before the request was sent");
            continue;
          }
          if (re & POLLOUT) {
            ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN) {
              fail(c, std::string("send: ") + std::strerror(errno));
              continue;
            }
            if (n > 0) c.sent += static_cast<std::size_t>(n);
            if (c.sent == c.out.size()) c.state = st::reading;
          }
          continue;
        }
        // reading
        if (re & (POLLIN | POLLERR | POLLHUP)) {
          char buf[4096];
          ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
          if (n > 0) {
            c.in.append(buf, static_cast<std::size_t>(n));
            parse(c, false);
          } else if (n == 0) {
            if (!parse(c, true)) fail(c, "EOF before a complete response");
          } else if (errno != EAGAIN) {
            fail(c, std::string("recv: ") + std::strerror(errno));
          }
        } else if (now - c.since > opt_.response_timeout) {
          timed_out(c, "no answer within the response timeout (" +
                           std::to_string(opt_.response_timeout.count()) + " ms)");
        }
      }
    }
    for (auto& c : conns)
      if (c.fd >= 0) ::close(c.fd);
  }

  // finish(): drops connections that have not sent anything yet; false once
  // nothing is in flight, or at the deadline (what is left counts as failed).
  bool finish_step(std::vector<conn>& conns) {
    bool in_flight = false;
    for (auto& c : conns) {
      if (c.state == st::connecting || (c.state == st::sending && c.sent == 0)) retire(c);
      if (c.state == st::sending || c.state == st::reading) in_flight = true;
    }
    if (!in_flight) return false;
    if (clock::now() < finish_by_.load()) return true;
    for (auto& c : conns) {
      if (c.state != st::sending && c.state != st::reading) continue;
      note(result_.failed, kept_, c,
           "no answer by the end of the run (request sent " +
               std::to_string(
                   std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - c.since)
                       .count()) +
               " ms before)");
      retire(c);
    }
    return false;
  }

  std::uint16_t port_;
  load_options opt_;
  std::atomic<bool> running_{false};
  std::atomic<int> active_{0};
  std::atomic<bool> started_{false};
  std::atomic<bool> finishing_{false};
  std::atomic<clock::time_point> finish_by_{};
  std::thread thread_;
  std::mutex mutex_;
  load_result result_;
  std::map<std::uint64_t*, int> kept_;  // failure descriptions kept per counter
  clock::time_point started_at_{};
};

/// One GET on a fresh connection; the body of a 200 answer, or nothing.
inline std::optional<std::string> http_get(std::uint16_t port,
                                           std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string in;
  const std::string req = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
      ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  auto end = in.find("\r\n\r\n");
  if (in.rfind("HTTP/1.1 200", 0) != 0 || end == std::string::npos) return std::nullopt;
  return in.substr(end + 4);
}

}  // namespace test_support
