// Bad input for every parser and variable the master trusts: the listener
// handover (PROCMODEL_LISTENERS), systemd's LISTEN_FDS/LISTEN_PID/
// LISTEN_FDNAMES, pid files, channel datagrams, listen addresses and the
// http example's configuration. Each must be refused with an error that
// names what is wrong, or ignored where that is the documented rule; none
// may crash, hang or be taken as something it is not. Control requests and
// PROCMODEL_UPGRADE_FD are tried against the real binary in
// tests/integration/hostile_start.cpp. Every test counts the inputs it
// tried into `tried`, reported at the end.

#include <procmodel/channel.hpp>
#include <procmodel/listeners.hpp>
#include <procmodel/pid_file.hpp>

#include "support/catch.hpp"
#include "support/process.hpp"

#include "../../examples/http/config.hpp"

#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

using namespace procmodel;

namespace {

int tried = 0;  // inputs tried by this file's tests

// The message of what `f` throws as E; "" if it throws nothing.
template <class E = std::exception, class F>
std::string refusal(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return {};
}

// Sets (or, for nullptr, unsets) variables for one scope.
class env_scope {
 public:
  env_scope(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (auto [k, v] : vars) {
      const char* old = std::getenv(k);
      saved_.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
      if (v) ::setenv(k, v, 1);
      else ::unsetenv(k);
    }
  }
  ~env_scope() {
    for (auto& [k, v] : saved_) {
      if (v) ::setenv(k.c_str(), v->c_str(), 1);
      else ::unsetenv(k.c_str());
    }
  }
  env_scope(const env_scope&) = delete;
  env_scope& operator=(const env_scope&) = delete;

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

}  // namespace

TEST_CASE("PROCMODEL_LISTENERS: every malformed value is refused naming the variable",
          "[bad_input][handover]") {
  std::vector<std::string> junk = {
      "", ",", ",,", "0:3,", ",0:3", "0:", ":3", ":", "0", "3", "0:2", "0:0", "0:-1", "-1:3",
      "1024:3", "0:3,0:3", "0:3,1:3", "0:3;1:4", "0 :3", "0: 3", " 0:3", "0:3 ", "a:b", "0:x",
      "0:1048577", "0:99999999999999999999", "0:0x10", "0:3:4", "0:3,,1:4", "0::3", "+0:3",
      "0:+3", std::string("0:3\0", 4), "\xff:\xfe", std::string(10000, ','),
  };
  std::string many;
  for (int i = 0; i < 2000; ++i) many += "0:3,";
  junk.push_back(many);  // 2000 entries, the same descriptor named again and again
  for (const auto& text : junk) {
    ++tried;
    INFO("PROCMODEL_LISTENERS='" << text.substr(0, 60) << "' (" << text.size() << " bytes)");
    auto msg = refusal<std::runtime_error>([&] { parse_handover(text); });
    CHECK(msg.find("PROCMODEL_LISTENERS") != std::string::npos);
    CHECK(msg.size() < 400);  // clear, not the whole input again
  }
  // (What is accepted: tests/unit/handover.cpp.)
}

TEST_CASE("LISTEN_FDS and LISTEN_PID: garbage is refused, another pid's or none is ignored",
          "[bad_input][systemd]") {
  const std::string self = std::to_string(::getpid());
  SECTION("LISTEN_FDS that is not a count, for us") {
    for (const char* fds : {"", "0", "-1", "abc", "4097", " 1", "1 ", "1x", "0x1", "99999999999",
                            "+1", "1\n"}) {
      ++tried;
      env_scope e{{"LISTEN_FDS", fds}, {"LISTEN_PID", self.c_str()}};
      INFO("LISTEN_FDS='" << fds << "'");
      auto msg = refusal<std::runtime_error>([&] { systemd_listen_fds(::getpid()); });
      CHECK(msg.find("LISTEN_FDS") != std::string::npos);
    }
  }
  SECTION("LISTEN_PID that is not a pid") {
    for (const char* pid : {"", "abc", "-1", "0", "1.5", "99999999999", " 1", "0x10"}) {
      ++tried;
      env_scope e{{"LISTEN_FDS", "1"}, {"LISTEN_PID", pid}};
      INFO("LISTEN_PID='" << pid << "'");
      auto msg = refusal<std::runtime_error>([&] { systemd_listen_fds(::getpid()); });
      CHECK(msg.find("LISTEN_PID") != std::string::npos);
    }
  }
  SECTION("meant for another process, or for no one: ignored, junk or not") {
    for (auto [fds, pid] : std::vector<std::pair<const char*, const char*>>{
             {"1", "1"}, {"abc", "1"}, {"1", nullptr}, {"abc", nullptr}}) {
      ++tried;
      env_scope e{{"LISTEN_FDS", fds}, {"LISTEN_PID", pid}};
      INFO("LISTEN_FDS='" << fds << "' LISTEN_PID=" << (pid ? pid : "(unset)"));
      std::optional<std::vector<int>> got;
      CHECK(refusal([&] { got = systemd_listen_fds(::getpid()); }).empty());
      CHECK_FALSE(got.has_value());
    }
  }
  SECTION("LISTEN_FDNAMES is never taken for anything") {
    for (const char* names : {"", ":::", "\x01\x02", "a:b:c:d:e:f:g", "http"}) {
      ++tried;
      env_scope e{{"LISTEN_FDS", "2"}, {"LISTEN_PID", self.c_str()}, {"LISTEN_FDNAMES", names}};
      auto got = systemd_listen_fds(::getpid());
      REQUIRE(got.has_value());
      CHECK(*got == std::vector<int>{3, 4});
    }
  }
}

TEST_CASE("pid files: huge, binary, FIFO and socket files are refused without blocking",
          "[bad_input][pid_file]") {
  pmtest::temp_dir dir("procmodel-bad");
  const std::string path = dir.file("m.pid");
  SECTION("contents") {
    std::vector<std::string> junk = {
        std::string(1 << 20, '7'),                       // a megabyte of digits
        "4242\n" + std::string(1 << 20, 'x'),            // a pid, then a megabyte of junk
        "4242\n" + std::string(100, '\n'),               // a pid, then blank lines
        std::string("4242\0", 5),                        // a NUL after the pid
        std::string(32, '\0'),                           // NULs
        "\xef\xbb\xbf" "4242\n",                         // a byte-order mark
        "\xd9\xa4\xd9\xa2\n",                            // Arabic-Indic digits
        "4242\n4243\n",                                  // two pids
        "-4242\n", "4242.0\n", "4 242\n", "\t4242\n",
    };
    for (const auto& text : junk) {
      ++tried;
      pmtest::write_file(path, text);
      INFO("content: '" << text.substr(0, 40) << "' (" << text.size() << " bytes)");
      auto msg = refusal<std::runtime_error>([&] { pid_file::read(path); });
      CHECK(msg == fmt::format("pid file {} does not hold a pid", path));
      CHECK_FALSE(pid_file::names_live_master(path, ::getpid()));
      CHECK_FALSE(pid_file::remove_if_ours(path, ::getpid()));
      CHECK(pmtest::file_exists(path));
    }
  }
  SECTION("a FIFO: neither read nor written through, and nothing blocks") {
    ++tried;
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    CHECK(refusal<std::runtime_error>([&] { pid_file::read(path); }).find("not a regular file") !=
          std::string::npos);
    CHECK(refusal<std::runtime_error>([&] { pid_file::write(path, ::getpid()); })
              .find("not a regular file") != std::string::npos);
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    CHECK(S_ISFIFO(st.st_mode));
  }
  SECTION("a unix socket") {
    ++tried;
    detail::unique_fd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
    REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    CHECK(refusal<std::runtime_error>([&] { pid_file::read(path); }).find("cannot open") !=
          std::string::npos);
    CHECK_FALSE(refusal<std::runtime_error>([&] { pid_file::write(path, ::getpid()); }).empty());
  }
}

TEST_CASE("channel: a thousand random datagrams never pass for a message, nor desync the next",
          "[bad_input][channel]") {
  std::mt19937 rng(20261129);
  auto [master, worker] = channel::make_pair();
  int received = 0, failed = 0;
  for (int i = 0; i < 1000; ++i) {
    ++tried;
    std::vector<unsigned char> bytes(rng() % 40);
    for (auto& b : bytes) b = static_cast<unsigned char>(rng());
    // Half of them carry the right magic, so that length and type are what is wrong.
    if (i % 2 && bytes.size() >= 4) std::memcpy(bytes.data(), &detail::channel_magic, 4);
    REQUIRE(::send(master.fd(), bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(bytes.size()));
    REQUIRE(master.send({message_type::ready, i}));
    message m;
    auto st = worker.receive(m);
    const bool well_formed = bytes.size() == detail::wire_size && i % 2;
    INFO("datagram " << i << " of " << bytes.size() << " bytes");
    CHECK(st == (well_formed ? receive_status::received : receive_status::failed));
    (st == receive_status::received ? received : failed)++;
    REQUIRE(worker.receive(m) == receive_status::received);
    CHECK(m.type == message_type::ready);
    CHECK(m.argument == i);
  }
  WARN("random datagrams: " << failed << " refused, " << received
                            << " well formed (right magic and size) taken as they are");
  CHECK(failed > 900);
}

TEST_CASE("parse_endpoint refuses what is not HOST:PORT", "[bad_input][endpoint]") {
  for (const char* text : {":", "*", "*:", "[", "]", "[]", "[]:80", "]:80", "[::1]:80]",
                           "[::1]:80x", "[::1]::80", "127.0.0.1:80:90", "127.0.0.1:8 0",
                           "127.0.0.1: 80", "127.0.0.1:65536", "127.0.0.1:99999999999999999999",
                           "127.0.0.1:0x50", "[[::1]]:80", "[::1]x:80",
                           "[*]:80"}) {  // found by tests/fuzz/endpoint: no address in brackets
    ++tried;
    INFO("'" << text << "'");
    auto msg = refusal<std::invalid_argument>([&] { parse_endpoint(text); });
    CHECK(msg.find(fmt::format("'{}'", text)) != std::string::npos);
  }
}

TEST_CASE("http example: a bad configuration is refused naming its line", "[bad_input][http_config]") {
  struct row {
    std::string text;
    int line;
  };
  for (const auto& r : std::vector<row>{
           {"greeting", 1},
           {"= hello", 1},
           {"workers = 0", 1},
           {"workers = 1025", 1},
           {"workers = -1", 1},
           {"workers = 1e3", 1},
           {"workers =", 1},
           {"workers = two", 1},
           {"greeting = \"\"", 1},
           {"greeting =", 1},
           {"greeting = a\x01z", 1},
           {std::string("greeting = a\0z", 14), 1},
           {"GREETING = hi", 1},
           {"unknown = 1", 1},
           {"# ok\n\nworkers = 2\nworkers = x", 4},
           {"greeting = hi\nbogus", 2},
           {"exit_from_slot = 1024", 1},
           {"exit_from_slot = x", 1},
           {"listen =", 1},
           {"listen = 127.0.0.1:80 bogus", 1},
           {"listen = 127.0.0.1:80 backlog=0", 1},
           {"listen = unix:/tmp/http.sock", 1},
           {"workers = 2\nlisten = udp://127.0.0.1:53", 2},
           {std::string(100000, 'x'), 1},
       }) {
    ++tried;
    INFO("config: '" << r.text.substr(0, 40) << "'");
    auto msg = refusal<std::runtime_error>([&] { http_example::parse_config(r.text, "t.conf"); });
    CHECK(msg.rfind("t.conf:" + std::to_string(r.line) + ": ", 0) == 0);
  }
}

TEST_CASE("http example config: listen lines with nginx's parameters", "[bad_input][config]") {
  auto c = http_example::parse_config(
      "listen = 127.0.0.1:8080 backlog=1024 deferred\nlisten = [::1]:8080 ipv6only=on\n", "t.conf");
  CHECK(c.listen ==
        std::vector<std::string>{"127.0.0.1:8080 backlog=1024 deferred", "[::1]:8080 ipv6only=on"});
  CHECK(http_example::parse_config("workers = 2", "t.conf").listen.empty());
}

TEST_CASE("bad inputs tried by the unit suite", "[bad_input][zz_count]") {
  WARN("bad inputs tried in tests/unit/bad_input.cpp: " << tried);
  SUCCEED();
}
