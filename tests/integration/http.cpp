// The http example end to end: real masters, real signals, real keep-alive
// clients on loopback. The claim under test is the design's: a graceful stop
// under load drops nothing — no client that got a connection sees a reset or a
// request without an answer; a refused connect after the listeners are gone
// is allowed.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/http_load.hpp"
#include "support/process.hpp"
#include "support/server.hpp"
#include "support/http_checks.hpp"

#include <csignal>
#include <string_view>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <regex>
#include <string>

using namespace pmtest;
using test_support::http_load;
using test_support::load_options;
using test_support::load_result;

namespace {

// Runs `load` against a fresh server, sends `signo` to the master once some
// requests were answered (at `signalled`), and returns the load's verdict
// after the master exited.
load_result load_then_signal(server& srv, const load_options& lo, int signo,
                             steady::time_point& signalled) {
  http_load load(srv.port(), lo);
  load.start();
  {
    INFO(srv.describe());
    REQUIRE(wait_for([&] { return load.snapshot().ok >= 500; }, 10s));
  }
  signalled = steady::now();
  srv.master().signal(signo);
  auto status = srv.master().wait_exit(15s);
  INFO(srv.describe());
  REQUIRE(status.has_value());
  CHECK(exit_code_of(*status) == 0);
  CHECK(wait_for([&] { return load.all_stopped(); }, 10s));
  return load.stop();
}

}  // namespace

PM_TEST_CASE("http_server answers with its greeting, slot, generation and pid", "[http]") {
  server srv(http_server, "procmodel-http");
  PM_REQUIRE(srv, srv.start(http_config()));
  auto workers = srv.workers();
  PM_REQUIRE(srv, workers.size() == 2);

  auto c = tcp_client::connect(srv.port());
  REQUIRE(c);
  std::string first = keepalive_request(*c), second = keepalive_request(*c);
  static const std::regex body(
      R"(HTTP/1\.1 200 OK\r\n(.|\r\n)*\r\n\r\nhello from worker ([01]) generation 1 pid (\d+)\n)");
  std::smatch m1, m2;
  INFO(first << "\n---\n" << second);
  REQUIRE(std::regex_match(first, m1, body));
  REQUIRE(std::regex_match(second, m2, body));
  // Kept alive: the same worker answers both.
  CHECK(m1[3] == m2[3]);
  CHECK(first.find("Connection: close") == std::string::npos);
  pid_t pid = std::stoi(m1[3]);
  CHECK(std::find(workers.begin(), workers.end(), pid) != workers.end());
}

PM_TEST_CASE("http_server takes its greeting and worker count from --config", "[http]") {
  server srv(http_server, "procmodel-http");
  std::string conf = srv.dir().file("http.conf");
  write_file(conf, "# demo\ngreeting = howdy   \nworkers = 3\n");
  auto c = http_config(3);
  c.extra = {"--config", conf};
  PM_REQUIRE(srv, srv.start(c));
  PM_CHECK(srv, srv.workers().size() == 3);
  auto body = http_get(srv.port());
  REQUIRE(body);
  CHECK(body->rfind("howdy from worker ", 0) == 0);
}

PM_TEST_CASE("http_server refuses a config file that does not parse", "[http]") {
  temp_dir dir("procmodel-http");
  std::string conf = dir.file("bad.conf");
  write_file(conf, "greeting = hi\nworkers = many\n");
  auto r = run(dir, http_server, {"--listen", "127.0.0.1:0", "--config", conf});
  INFO(r.err);
  CHECK(r.code() == 1);
  CHECK(r.err.find("bad.conf:2") != std::string::npos);
  CHECK(r.err.find("workers") != std::string::npos);

  auto missing = run(dir, http_server, {"--listen", "127.0.0.1:0", "--config", dir.file("nope")});
  CHECK(missing.code() == 1);
  CHECK(missing.err.find("cannot read config file") != std::string::npos);
}

PM_TEST_CASE("QUIT under keep-alive load: no request fails, the master exits last", "[http][drain]") {
  server srv(http_server, "procmodel-http");
  auto c = http_config();
  c.extra = {"--shutdown-timeout", "5000"};
  PM_REQUIRE(srv, srv.start(c));
  auto workers = srv.workers();
  load_options lo;
  lo.connections = 50;
  steady::time_point quit_at;
  auto r = load_then_signal(srv, lo, SIGQUIT, quit_at);
  INFO(describe(r) << "\n" << srv.describe());
  CHECK(r.ok >= 500);
  // A connect refused once the listeners closed is allowed; nothing else.
  CHECK(losses(r, quit_at) == "");
  // Each kept-alive connection was told to close before the worker left.
  CHECK(r.closes >= 1);
  CHECK(!file_exists(srv.pid_path()));
  for (pid_t w : workers) CHECK(!is_running(w));
}

PM_TEST_CASE("QUIT under Connection: close load: no request fails", "[http][drain]") {
  server srv(http_server, "procmodel-http");
  PM_REQUIRE(srv, srv.start(http_config()));
  load_options lo;
  lo.connections = 50;
  lo.connection_close = true;
  steady::time_point quit_at;
  auto r = load_then_signal(srv, lo, SIGQUIT, quit_at);
  INFO(describe(r) << "\n" << srv.describe());
  CHECK(r.ok >= 500);
  CHECK(losses(r, quit_at) == "");
}

PM_TEST_CASE("QUIT: an idle kept-alive connection is answered with Connection: close",
          "[http][drain]") {
  server srv(http_server, "procmodel-http");
  auto c = http_config(1);
  c.extra = {"--shutdown-timeout", "4000"};
  PM_REQUIRE(srv, srv.start(c));
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  std::string before = keepalive_request(*client);
  REQUIRE(before.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(before.find("Connection: close") == std::string::npos);

  srv.master().signal(SIGQUIT);
  // The worker drains but keeps the idle connection open until its deadline,
  // so the next request is answered — and told to close.
  // The worker's own line (the master's "graceful stop: draining ..." comes first).
  PM_REQUIRE(srv, wait_for([&] { return count_of(srv.log(), "worker 0: draining (asked by master)") >= 1; }, 5s));
  std::string after = keepalive_request(*client);
  INFO(after << "\n" << srv.describe());
  CHECK(after.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(after.find("Connection: close") != std::string::npos);
  std::string rest;
  CHECK(client->recv_some(rest, 5s) == tcp_client::status::eof);
  auto status = srv.master().wait_exit(10s);
  REQUIRE(status);
  CHECK(exit_code_of(*status) == 0);
}

PM_TEST_CASE("QUIT: a connection idle until the deadline is closed then, and the master exits",
          "[http][drain]") {
  server srv(http_server, "procmodel-http");
  auto c = http_config(1);
  c.extra = {"--shutdown-timeout", "1500"};
  PM_REQUIRE(srv, srv.start(c));
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  REQUIRE(keepalive_request(*client).rfind("HTTP/1.1 200", 0) == 0);
  auto t0 = steady::now();
  srv.master().signal(SIGQUIT);
  std::string rest;
  // Closed cleanly (FIN, not RST) at the drain deadline: the handlers'
  // deadline is 1500 - 1500/5 = 1200 ms after the quit. Not before (an idle
  // connection may still send a request), not much after.
  CHECK(client->recv_some(rest, 10s) == tcp_client::status::eof);
  const double closed_at = ms_since(t0);
  auto status = srv.master().wait_exit(10s);
  REQUIRE(status);
  CHECK(exit_code_of(*status) == 0);
  double ms = ms_since(t0);
  WARN("QUIT with one idle keep-alive connection, --shutdown-timeout 1500: closed after "
       << closed_at << " ms, master exited after " << ms << " ms");
  CHECK(closed_at >= 1150);
  CHECK(closed_at < 1500 + 1500);
  CHECK(ms < 1500 + 2000);
  // The worker met its own deadline; the master did not need SIGKILL.
  CHECK(!srv.needed_sigkill());
}

PM_TEST_CASE("TERM stops http_server within terminate_timeout even with open connections", "[http]") {
  server srv(http_server, "procmodel-http");
  auto c = http_config();
  c.extra = {"--terminate-timeout", "2000"};
  PM_REQUIRE(srv, srv.start(c));
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  REQUIRE(keepalive_request(*client).rfind("HTTP/1.1 200", 0) == 0);
  auto workers = srv.workers();
  auto t0 = steady::now();
  srv.master().signal(SIGTERM);
  auto status = srv.master().wait_exit(10s);
  REQUIRE(status);
  CHECK(exit_code_of(*status) == 0);
  const double took = ms_since(t0);
  WARN("TERM with an open connection: master exited after " << took << " ms");
  // TERM is "exit now": well before the SIGKILL escalation at terminate_timeout.
  CHECK(took < 2000);
  CHECK(!srv.needed_sigkill());
  for (pid_t w : workers) CHECK(wait_for([&] { return !is_running(w); }, 3s));
  CHECK(!file_exists(srv.pid_path()));
}

PM_TEST_CASE("the control commands quit, stop and reopen reach the master through the pid file", "[http][cli]") {
  for (const char* cmd : {"quit", "stop"}) {
    server srv(http_server, "procmodel-http");
    PM_REQUIRE(srv, srv.start(http_config(1)));
    auto r = run(srv.dir(), http_server, {"-s", "reopen", "--pid-file", srv.pid_path()});
    CHECK(r.code() == 0);
    CHECK(wait_for([&] { return count_of(srv.log(), "reopening log files") == 1; }, 5s));
    auto s = run(srv.dir(), http_server, {"-s", cmd, "--pid-file", srv.pid_path()});
    INFO(cmd << ": " << s.err);
    CHECK(s.code() == 0);
    auto status = srv.master().wait_exit(10s);
    REQUIRE(status);
    CHECK(exit_code_of(*status) == 0);
    CHECK(!file_exists(srv.pid_path()));
    // quit is the graceful stop (SIGQUIT), stop the fast one (SIGTERM).
    const bool quit = std::string_view(cmd) == "quit";
    INFO(srv.describe());
    CHECK(srv.log().find(quit ? "received SIGQUIT: quit" : "received SIGTERM: stop") !=
          std::string::npos);
    CHECK(srv.log().find(quit ? "graceful stop" : "fast stop") != std::string::npos);
    CHECK(srv.log().find(quit ? "fast stop" : "graceful stop") == std::string::npos);
  }
}

PM_TEST_CASE("daemon mode detaches, serves, and stops with -s quit", "[http][daemon]") {
  temp_dir dir("procmodel-http");
  std::string pid_path = dir.file("d.pid"), log_path = dir.file("d.log");
  auto r = run(dir, http_server,
               {"--daemon", "--listen", "127.0.0.1:0", "--workers", "1", "--pid-file", pid_path,
                "--log-file", log_path},
               10s);
  audit_log_file(log_path);  // the daemon's workers end in the teardown audit too
  INFO(r.err << read_file(log_path));
  REQUIRE(r.code() == 0);  // the parent returns once the daemon is up
  REQUIRE(file_exists(pid_path));
  pid_t daemon_pid = std::stoi(read_file(pid_path));
  // Clean up by pid whatever happens below.
  daemon_reaper guard{daemon_pid};
  CHECK(is_running(daemon_pid));
  // Detached: its own session, not our child.
  CHECK(::getsid(daemon_pid) == daemon_pid);
  auto port = parse_port(read_file(log_path));
  REQUIRE(port != 0);
  CHECK(wait_for([&] { return http_get(port).has_value(); }, 5s));

  auto q = run(dir, http_server, {"-s", "quit", "--pid-file", pid_path});
  CHECK(q.code() == 0);
  CHECK(wait_for([&] { return !is_running(daemon_pid); }, 10s));
  CHECK(wait_for([&] { return !file_exists(pid_path); }, 5s));
}

PM_TEST_CASE("daemon mode reports a start-up failure with a non-zero exit", "[http][daemon]") {
  temp_dir dir("procmodel-http");
  // Take a port, then ask the daemon to listen on it too.
  auto first = run(dir, http_server, {"--daemon", "--listen", "127.0.0.1:0", "--workers", "1",
                                      "--pid-file", dir.file("a.pid"), "--log-file",
                                      dir.file("a.log")});
  audit_log_file(dir.file("a.log"));
  REQUIRE(first.code() == 0);
  pid_t a = std::stoi(read_file(dir.file("a.pid")));
  daemon_reaper guard{a};
  auto port = parse_port(read_file(dir.file("a.log")));
  REQUIRE(port != 0);
  expect_log_line("cannot listen on 127.0.0.1:" + std::to_string(port));
  auto second = run(dir, http_server,
                    {"--daemon", "--listen", "127.0.0.1:" + std::to_string(port), "--pid-file",
                     dir.file("b.pid")});
  INFO(second.err);
  CHECK(second.code() == 1);
  CHECK(second.err.find("cannot listen on") != std::string::npos);
  CHECK(!file_exists(dir.file("b.pid")));
  // The first daemon ends gracefully: its workers' ends are audited.
  CHECK(run(dir, http_server, {"-s", "quit", "--pid-file", dir.file("a.pid")}).code() == 0);
  CHECK(wait_for([&] { return !is_running(a); }, 10s));
}

PM_TEST_CASE("-s reload re-reads the config file, as a systemd ExecReload= does", "[http][cli][reload]") {
  server srv(http_server, "procmodel-http");
  const std::string conf = srv.dir().file("http.conf");
  write_file(conf, "greeting = before\n");
  auto c = http_config(2);
  c.extra = {"--config", conf};
  PM_REQUIRE(srv, srv.start(c));
  auto body = http_get(srv.port());
  PM_REQUIRE(srv, body.has_value());
  PM_CHECK(srv, body->rfind("before from worker ", 0) == 0);

  write_file(conf, "greeting = after\n");
  auto r = run(srv.dir(), http_server, {"-s", "reload", "--pid-file", srv.pid_path()});
  INFO(r.err);
  PM_CHECK(srv, r.code() == 0);
  PM_CHECK(srv, wait_for([&] { return srv.log().find("reload: generation 2 serves") != std::string::npos; }, 10s));
  PM_CHECK(srv, srv.log().find("received SIGHUP: reload") != std::string::npos);
  body = http_get(srv.port());
  PM_REQUIRE(srv, body.has_value());
  PM_CHECK(srv, body->rfind("after from worker ", 0) == 0);
  PM_CHECK(srv, body->find(" generation 2 ") != std::string::npos);
}

namespace {

// One GET over IPv6 to [::1]:`port`; the raw answer, or "".
std::string http_get_v6(std::uint16_t port) {
  int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  sa.sin6_port = htons(port);
  sa.sin6_addr = in6addr_loopback;
  std::string in;
  const std::string req = "GET / HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
      ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return in;
}

}  // namespace

PM_TEST_CASE("IPv6 end to end: http_server listens on [::1] and serves there", "[http][ipv6]") {
  // Without IPv6 on loopback there is nothing to test.
  int probe = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 any{};
  any.sin6_family = AF_INET6;
  any.sin6_addr = in6addr_loopback;
  const bool have_v6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&any), sizeof any) == 0;
  if (probe >= 0) ::close(probe);
  if (!have_v6) {
    WARN("no IPv6 on loopback here: skipped");
    return;
  }
  server srv(http_server, "procmodel-http");
  server_config c = http_config(2);
  c.wait_ready = false;  // the fixture's probe speaks IPv4
  c.extra = {"--listen", "[::1]:0"};
  // --listen given twice: the fixture's 127.0.0.1:0 and [::1]:0, both served.
  PM_REQUIRE(srv, srv.start(c));
  auto ports = parse_ports(srv.log());
  PM_REQUIRE(srv, ports.size() == 2);
  PM_CHECK(srv, srv.log().find("listening on [::1]:" + std::to_string(ports[1])) != std::string::npos);
  std::string answer;
  PM_CHECK(srv, wait_for([&] { return (answer = http_get_v6(ports[1])).rfind("HTTP/1.1 200", 0) == 0; }, 10s));
  INFO(answer);
  PM_CHECK(srv, answer.find("hello from worker ") != std::string::npos);
  PM_CHECK(srv, http_get(ports[0]).has_value());
}

PM_TEST_CASE("the README's quick start compiles, serves, and stops gracefully", "[http][readme]") {
  server srv(PROCMODEL_README_QUICKSTART, "procmodel-readme");
  server_config c;
  c.workers = 2;
  c.wait_ready = false;  // it answers one line, not an echo
  PM_REQUIRE(srv, srv.start(c));
  std::string line;
  PM_CHECK(srv, wait_for(
                    [&] {
                      auto client = tcp_client::connect(srv.port(), 1s);
                      line.clear();
                      return client && client->recv_some(line, 1s) == tcp_client::status::data &&
                             line.rfind("hello from worker ", 0) == 0;
                    },
                    10s, 50ms));
  INFO(line);
  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  auto st = srv.master().wait_exit(10s);
  PM_REQUIRE(srv, st.has_value());
  PM_CHECK(srv, exit_code_of(*st) == 0);
}
