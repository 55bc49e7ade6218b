#include <procmodel/listeners.hpp>

#include "support/catch.hpp"
#include "support/fd_flags.hpp"

#include <cerrno>
#include <chrono>
#include <stdexcept>
#include <string>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace procmodel;

namespace {

using test_support::cloexec;
using test_support::nonblocking;

bool accepting(int fd) {
  int on = 0;
  socklen_t len = sizeof on;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on == 1;
}

std::uint16_t port_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

bool ipv6_loopback_available() {
  detail::unique_fd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

// A client socket; connect() starts without waiting unless `wait`.
detail::unique_fd connect_to(int family, std::uint16_t port, bool wait) {
  detail::unique_fd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC | (wait ? 0 : SOCK_NONBLOCK), 0));
  REQUIRE(fd);
  int rc = 0;
  if (family == AF_INET6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    a.sin6_port = htons(port);
    rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  if (wait) REQUIRE(rc == 0);
  else REQUIRE((rc == 0 || errno == EINPROGRESS));
  return fd;
}

// Waits up to `ms` for `events` on fd; the revents, or 0 on timeout.
short wait_for(int fd, short events, int ms) {
  pollfd p{fd, events, 0};
  int rc = ::poll(&p, 1, ms);
  REQUIRE(rc >= 0);
  return rc == 0 ? 0 : p.revents;
}

// Accepts one connection from a non-blocking listener, waiting up to `ms`.
detail::unique_fd accept_one(int listener, int ms) {
  if (!(wait_for(listener, POLLIN, ms) & POLLIN)) return {};
  return detail::unique_fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
}

void send_all(int fd, const std::string& text) {
  REQUIRE(::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size()));
}

// Reads until `n` bytes came or 1 s passed.
std::string receive(int fd, std::size_t n) {
  std::string out;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (out.size() < n && std::chrono::steady_clock::now() < until) {
    if (!(wait_for(fd, POLLIN, 100) & POLLIN)) continue;
    char buf[256];
    ssize_t got = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (got <= 0) break;
    out.append(buf, static_cast<std::size_t>(got));
  }
  return out;
}

// Checks a bound listener and that a client gets through to it.
void check_listener(const listener& l, int family, const std::string& configured) {
  CHECK(l.configured == configured);
  CHECK(l.family == family);
  CHECK(cloexec(l.fd));
  CHECK(nonblocking(l.fd));
  CHECK(accepting(l.fd));
  std::uint16_t port = port_of(l.fd);
  CHECK(port != 0);
  std::string host = family == AF_INET6 ? "[::1]" : "127.0.0.1";
  CHECK(l.local == fmt::format("{}:{}", host, port));

  auto client = connect_to(family, port, true);
  auto server = accept_one(l.fd, 1000);
  REQUIRE(server);
  send_all(client.get(), "ping");
  CHECK(receive(server.get(), 4) == "ping");
}

}  // namespace

TEST_CASE("listener_set binds 127.0.0.1:0", "[listeners]") {
  listener_set set;
  set.bind_all({"127.0.0.1:0"}, 16);
  REQUIRE(set.all().size() == 1);
  check_listener(set.all()[0], AF_INET, "127.0.0.1:0");
  CHECK(set.fds() == std::vector<int>{set.all()[0].fd});
}

TEST_CASE("listener_set binds the IPv6 loopback - port 0", "[listeners]") {
  if (!ipv6_loopback_available()) SKIP("no IPv6 loopback here");
  listener_set set;
  set.bind_all({"[::1]:0"}, 16);
  REQUIRE(set.all().size() == 1);
  check_listener(set.all()[0], AF_INET6, "[::1]:0");
}

TEST_CASE("listener_set binds several - in order", "[listeners]") {
  listener_set set;
  set.bind_all({"127.0.0.1:0", "localhost:0", "127.0.0.1:0"}, 16);
  REQUIRE(set.all().size() == 3);
  auto fds = set.fds();
  REQUIRE(fds.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(fds[i] == set.all()[i].fd);
    CHECK(accepting(fds[i]));
  }
  CHECK(set.all()[1].configured == "localhost:0");
  CHECK(set.all()[1].family == AF_INET);  // IPv4 is preferred for names
  CHECK(set.all()[0].local != set.all()[2].local);

  SECTION("close_all closes the master's copies") {
    set.close_all();
    CHECK(set.all().empty());
    CHECK(set.fds().empty());
    for (int fd : fds) CHECK((::fcntl(fd, F_GETFD) == -1 && errno == EBADF));
  }
}

TEST_CASE("listener_set: a taken port is an error naming the address", "[listeners]") {
  listener_set first;
  first.bind_all({"127.0.0.1:0"}, 16);
  std::string taken = fmt::format("127.0.0.1:{}", port_of(first.all()[0].fd));

  listener_set second;
  try {
    second.bind_all({taken}, 16);
    FAIL("bound " << taken << " twice");
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    CHECK(what.find(fmt::format("cannot listen on {}", taken)) != std::string::npos);
    CHECK(what.find(std::strerror(EADDRINUSE)) != std::string::npos);
  }
  CHECK(second.all().empty());
}

TEST_CASE("listener_set: a bad address is an error naming it", "[listeners]") {
  listener_set set;
  try {
    set.bind_all({"127.0.0.1"}, 16);
    FAIL("accepted an address without a port");
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    CHECK(what.find("'127.0.0.1'") != std::string::npos);
    CHECK(what.find("HOST:PORT") != std::string::npos);
  }
  CHECK_THROWS_AS(set.bind_all({"127.0.0.1:99999"}, 16), std::runtime_error);
  CHECK(set.all().empty());
}

TEST_CASE("freeze: queued connections stay acceptable - new ones are not let in",
          "[listeners][freeze]") {
  listener_set set;
  set.bind_all({"127.0.0.1:0"}, 16);
  const int lfd = set.all()[0].fd;
  const std::uint16_t port = port_of(lfd);

  // A client the kernel has accepted into the queue, with a request on the way.
  auto queued = connect_to(AF_INET, port, true);
  send_all(queued.get(), "GET / HTTP/1.1\r\n");

  set.freeze();

  // The queued client may still send after the freeze.
  send_all(queued.get(), "Host: x\r\n\r\n");

  // A newcomer's handshake is ignored: its connect does not complete.
  auto late = connect_to(AF_INET, port, false);
  CHECK(wait_for(late.get(), POLLOUT, 300) == 0);

  // The queued one is accepted, with all its data.
  auto server = accept_one(lfd, 1000);
  REQUIRE(server);
  const std::string request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK(receive(server.get(), request.size()) == request);
  send_all(server.get(), "HTTP/1.1 200 OK\r\n");
  CHECK(receive(queued.get(), 17) == "HTTP/1.1 200 OK\r\n");

  // And nothing else is in the queue.
  CHECK_FALSE(accept_one(lfd, 0));
}

TEST_CASE("freeze(fd) reports failure on a descriptor that is no socket", "[listeners][freeze]") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  detail::unique_fd r(fds[0]), w(fds[1]);
  CHECK_FALSE(listener_set::freeze(r.get()));
}

TEST_CASE("format_address", "[listeners]") {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(8080);
  REQUIRE(::inet_pton(AF_INET, "10.1.2.3", &a.sin_addr) == 1);
  CHECK(format_address(reinterpret_cast<sockaddr*>(&a)) == "10.1.2.3:8080");
  sockaddr_in6 b{};
  b.sin6_family = AF_INET6;
  b.sin6_port = htons(443);
  b.sin6_addr = in6addr_loopback;
  CHECK(format_address(reinterpret_cast<sockaddr*>(&b)) == "[::1]:443");
}
