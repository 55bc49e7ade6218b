// Listen addresses as written, with nginx's listen parameters; and the
// sockets listener_set makes of them (unix sockets, options seen by getsockopt).
#include <procmodel/listeners.hpp>

#include "support/catch.hpp"
#include "support/fd_flags.hpp"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

using namespace procmodel;

namespace {

using test_support::int_option;

std::string refusal(const std::string& text) {
  try {
    (void)parse_listen(text);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(accepted)";
}

// A fresh directory for socket files, removed at the end.
struct scratch_dir {
  std::filesystem::path path;
  scratch_dir() {
    char tmpl[] = "/tmp/pm-listen-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    path = tmpl;
  }
  ~scratch_dir() { std::filesystem::remove_all(path); }
  [[nodiscard]] std::string file(const char* name) const { return (path / name).string(); }
};

// Connects to a unix socket; whether it worked.
bool connects(const std::string& path) {
  detail::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  path.copy(un.sun_path, sizeof un.sun_path - 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&un), sizeof un) == 0;
}

// A unix socket file nobody listens on any more, as a killed master leaves.
void leave_stale_socket(const std::string& path) {
  detail::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  path.copy(un.sun_path, sizeof un.sun_path - 1);
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&un), sizeof un) == 0);
  REQUIRE(::listen(fd.get(), 1) == 0);
}  // closed: the file stays, refusing

}  // namespace

TEST_CASE("parse_listen reads the address and nginx's parameters", "[listen]") {
  auto t = parse_listen("127.0.0.1:8080");
  CHECK(t.type == listen_spec::kind::tcp);
  CHECK(t.address == "127.0.0.1:8080");
  CHECK(t.endpoint.port == 8080);
  CHECK_FALSE(t.backlog);
  CHECK_FALSE(t.deferred);

  auto p = parse_listen("  [::1]:443   backlog=1024 deferred fastopen=256 ipv6only=off "
                        "so_keepalive=30s:10:3 rcvbuf=64k sndbuf=1m ");
  CHECK(p.address == "[::1]:443");
  CHECK(p.endpoint.host == "::1");
  CHECK(p.backlog == 1024);
  CHECK(p.deferred);
  CHECK(p.fastopen == 256);
  CHECK(p.ipv6only == false);
  REQUIRE(p.keepalive);
  CHECK(p.keepalive->on);
  CHECK(p.keepalive->idle == 30);
  CHECK(p.keepalive->interval == 10);
  CHECK(p.keepalive->count == 3);
  CHECK(p.rcvbuf == 64 * 1024);
  CHECK(p.sndbuf == 1024 * 1024);

  auto k = parse_listen("*:80 so_keepalive=2m::");
  CHECK(k.keepalive->idle == 120);
  CHECK_FALSE(k.keepalive->interval);
  CHECK_FALSE(k.keepalive->count);
  CHECK(parse_listen("*:80 so_keepalive=off").keepalive->on == false);

  auto d = parse_listen("udp://[::1]:5353 rcvbuf=1m ipv6only=on");
  CHECK(d.type == listen_spec::kind::udp);
  CHECK(d.address == "udp://[::1]:5353");
  CHECK(d.endpoint.host == "::1");
  CHECK(d.endpoint.port == 5353);
  CHECK(d.rcvbuf == 1024 * 1024);

  auto u = parse_listen("unix:/run/app.sock mode=0660 user=www-data group=33 backlog=64");
  CHECK(u.type == listen_spec::kind::unix_stream);
  CHECK(u.path == "/run/app.sock");
  CHECK(u.mode == 0660);
  CHECK(u.user == "www-data");
  CHECK(u.group == "33");
  CHECK(u.backlog == 64);
}

TEST_CASE("parse_listen refuses, naming the address and the problem", "[listen][bad_input]") {
  struct row {
    const char* text;
    const char* says;
  };
  auto r = GENERATE(values<row>({
      {"", "no address"},
      {"8080", "expected HOST:PORT or unix:/PATH"},
      {"unix:", "absolute path"},
      {"unix:relative.sock", "absolute path"},
      {"127.0.0.1:80 backlog", "'backlog' needs a value"},
      {"127.0.0.1:80 backlog=", "'backlog' needs a value"},
      {"127.0.0.1:80 backlog=0", "backlog"},
      {"127.0.0.1:80 backlog=lots", "backlog"},
      {"127.0.0.1:80 deferred=1", "'deferred' takes no value"},
      {"127.0.0.1:80 so_keepalive=maybe", "so_keepalive"},
      {"127.0.0.1:80 so_keepalive=1:2", "so_keepalive"},
      {"127.0.0.1:80 so_keepalive=x::", "so_keepalive idle"},
      {"127.0.0.1:80 rcvbuf=2g", "rcvbuf"},
      {"127.0.0.1:80 ipv6only=on", "ipv6only is for IPv6 addresses"},
      {"127.0.0.1:80 mode=0660", "'mode' is for unix sockets"},
      {"127.0.0.1:80 reuseport", "unknown parameter 'reuseport'"},
      {"unix:/tmp/a.sock deferred", "'deferred' is for TCP addresses"},
      {"unix:/tmp/a.sock so_keepalive=on", "is for TCP addresses"},
      {"unix:/tmp/a.sock mode=0999", "not an octal file mode"},
      {"unix:/tmp/a.sock mode=rw", "not an octal file mode"},
      {"udp://127.0.0.1:53 backlog=5", "'backlog' is not for UDP"},
      {"udp://127.0.0.1:53 deferred", "'deferred' is for TCP addresses, not UDP"},
      {"udp://127.0.0.1:53 mode=0600", "'mode' is for unix sockets"},
      {"unix:/tmp/a.sock ipv6only=on", "'ipv6only' is not for unix sockets"},
  }));
  CAPTURE(r.text);
  auto what = refusal(r.text);
  CHECK(what.find(fmt::format("invalid listen address '{}'", r.text)) == 0);
  CHECK(what.find(r.says) != std::string::npos);
  CHECK(refusal("unix:/" + std::string(200, 'a')).find("longer than") != std::string::npos);
}

TEST_CASE("the listen parameters are set on the socket", "[listen][listeners]") {
  listener_set set;
  set.bind_all({"127.0.0.1:0 backlog=7 deferred fastopen=16 so_keepalive=40:9:4 rcvbuf=128k "
                "sndbuf=96k"},
               511);
  int fd = set.fds().at(0);
  CHECK(int_option(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT) > 0);
  CHECK(int_option(fd, IPPROTO_TCP, TCP_FASTOPEN) == 16);
  CHECK(int_option(fd, SOL_SOCKET, SO_KEEPALIVE) == 1);
  CHECK(int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE) == 40);
  CHECK(int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL) == 9);
  CHECK(int_option(fd, IPPROTO_TCP, TCP_KEEPCNT) == 4);
  // The kernel doubles what it is given (socket(7)).
  CHECK(int_option(fd, SOL_SOCKET, SO_RCVBUF) == 2 * 128 * 1024);
  CHECK(int_option(fd, SOL_SOCKET, SO_SNDBUF) == 2 * 96 * 1024);

  listener_set plain;
  plain.bind_all({"127.0.0.1:0"}, 511);
  int other = plain.fds().at(0);
  CHECK(int_option(other, IPPROTO_TCP, TCP_DEFER_ACCEPT) == 0);
  CHECK(int_option(other, SOL_SOCKET, SO_KEEPALIVE) == 0);
}

TEST_CASE("a unix socket: bound with its mode, kept per path, removed only while it is ours",
          "[listen][listeners][unix]") {
  scratch_dir dir;
  const auto path = dir.file("app.sock");
  listener_set set;
  set.bind_all({"unix:" + path + " mode=0600"}, 511, 4);  // reuseport: still one socket
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(set.all().size() == 1);
  CHECK(set.for_slot(3).at(0).fd == set.for_slot(0).at(0).fd);
  CHECK(set.for_slot(0).at(0).local == "unix:" + path);
  CHECK(set.for_slot(0).at(0).family == AF_UNIX);
  CHECK(test_support::cloexec(set.fds().at(0)));
  CHECK(connects(path));

  SECTION("removed by the last master") {
    CHECK(set.remove_socket_files() == std::vector<std::string>{path});
    CHECK(::access(path.c_str(), F_OK) != 0);
    CHECK(set.remove_socket_files().empty());  // once
  }
  SECTION("a file put in its place is not ours: left alone") {
    REQUIRE(::unlink(path.c_str()) == 0);
    leave_stale_socket(path);
    CHECK(set.remove_socket_files().empty());
    CHECK(::access(path.c_str(), F_OK) == 0);
  }
}

TEST_CASE("a unix socket path: stale sockets replaced, anything else refused",
          "[listen][listeners][unix][bad_input]") {
  scratch_dir dir;
  const auto path = dir.file("app.sock");
  auto bind_error = [&](const std::string& address) -> std::string {
    listener_set set;
    try {
      set.bind_all({address}, 511);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "(bound)";
  };

  SECTION("a stale socket file (its master was killed) is replaced") {
    leave_stale_socket(path);
    CHECK_FALSE(connects(path));
    listener_set set;
    set.bind_all({"unix:" + path}, 511);
    CHECK(connects(path));
  }
  SECTION("a socket something accepts on is never taken") {
    listener_set first;
    first.bind_all({"unix:" + path}, 511);
    CHECK(bind_error("unix:" + path).find("another process accepts on it") != std::string::npos);
    CHECK(connects(path));  // the first one's still
  }
  SECTION("a symbolic link is refused, its target untouched") {
    const auto target = dir.file("target");
    { std::FILE* f = std::fopen(target.c_str(), "w"); REQUIRE(f); std::fclose(f); }
    REQUIRE(::symlink(target.c_str(), path.c_str()) == 0);
    CHECK(bind_error("unix:" + path).find("it is a symbolic link") != std::string::npos);
    struct stat st {};
    CHECK(::lstat(path.c_str(), &st) == 0);
    CHECK(S_ISLNK(st.st_mode));
    CHECK(::access(target.c_str(), F_OK) == 0);
  }
  SECTION("a dangling symbolic link too") {
    REQUIRE(::symlink(dir.file("nowhere").c_str(), path.c_str()) == 0);
    CHECK(bind_error("unix:" + path).find("it is a symbolic link") != std::string::npos);
    CHECK(::access(dir.file("nowhere").c_str(), F_OK) != 0);
  }
  SECTION("a regular file is refused and kept") {
    { std::FILE* f = std::fopen(path.c_str(), "w"); REQUIRE(f); std::fputs("data", f); std::fclose(f); }
    CHECK(bind_error("unix:" + path).find("the file exists and is not a socket") != std::string::npos);
    CHECK(std::filesystem::file_size(path) == 4);
  }
  SECTION("an owner that does not exist") {
    CHECK(bind_error("unix:" + path + " user=no-such-user-pm").find("no user named") !=
          std::string::npos);
  }
}

TEST_CASE("a unix socket handed over is checked against its path", "[listen][listeners][unix]") {
  scratch_dir dir;
  const auto path = dir.file("a.sock");
  listener_set old;
  old.bind_all({"unix:" + path}, 511);
  int fd = ::fcntl(old.fds().at(0), F_DUPFD_CLOEXEC, 3);
  REQUIRE(fd >= 0);
  SECTION("the same path: taken over, its file removed by the new holder when it stops") {
    listener_set next;
    next.adopt_all({"unix:" + path}, 511, 0, {{0, fd}});
    CHECK(next.fds() == std::vector<int>{fd});
    CHECK(next.remove_socket_files() == std::vector<std::string>{path});
  }
  SECTION("another path: refused") {
    listener_set next;
    try {
      next.adopt_all({"unix:" + dir.file("b.sock")}, 511, 0, {{0, fd}});
      FAIL("adopted");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()).find("is bound to unix:" + path) != std::string::npos);
    }
    ::close(fd);
  }
}

TEST_CASE("UDP listeners: bound datagram sockets, one per slot with reuseport, taken over by type",
          "[listen][listeners][udp]") {
  listener_set shared;
  shared.bind_all({"udp://127.0.0.1:0 rcvbuf=256k"}, 511);
  REQUIRE(shared.all().size() == 1);
  const listener l = shared.all().front();
  CHECK(l.datagram());
  CHECK(l.local.starts_with("udp://127.0.0.1:"));
  CHECK(int_option(l.fd, SOL_SOCKET, SO_TYPE) == SOCK_DGRAM);
  CHECK(int_option(l.fd, SOL_SOCKET, SO_RCVBUF) == 2 * 256 * 1024);
  CHECK(test_support::cloexec(l.fd));

  listener_set per_slot;
  per_slot.bind_all({"127.0.0.1:0", "udp://127.0.0.1:0"}, 511, 3);
  CHECK(per_slot.all().size() == 6);
  auto s2 = per_slot.for_slot(2);
  REQUIRE(s2.size() == 2);
  CHECK_FALSE(s2[0].datagram());
  CHECK(s2[1].datagram());
  CHECK(s2[1].local == per_slot.for_slot(0)[1].local);  // one port, a socket per slot
  CHECK(int_option(s2[1].fd, SOL_SOCKET, SO_REUSEPORT) == 1);

  SECTION("handed over: the datagram socket where the address wants one") {
    std::vector<inherited_fd> handed;
    for (unsigned k = 0; k < 3; ++k) {
      handed.push_back({0, ::fcntl(per_slot.for_slot(k)[0].fd, F_DUPFD_CLOEXEC, 3)});
    }
    for (unsigned k = 0; k < 3; ++k)
      handed.push_back({1, ::fcntl(per_slot.for_slot(k)[1].fd, F_DUPFD_CLOEXEC, 3)});
    listener_set next;
    next.adopt_all({"127.0.0.1:0", "udp://127.0.0.1:0"}, 511, 3, handed);
    CHECK(next.for_slot(1)[1].datagram());
    CHECK(next.for_slot(1)[1].local == per_slot.for_slot(1)[1].local);
  }
  SECTION("handed over: a stream socket for a UDP address is refused") {
    int tcp = ::fcntl(per_slot.for_slot(0)[0].fd, F_DUPFD_CLOEXEC, 3);
    listener_set next;
    try {
      next.adopt_all({"udp://127.0.0.1:0"}, 511, 0, {{0, tcp}});
      FAIL("adopted");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()).find("is a stream socket, not one for udp://127.0.0.1:0") !=
            std::string::npos);
    }
    ::close(tcp);
  }
}
