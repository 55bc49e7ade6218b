// The heartbeat watchdog and worker recycling, end to end: the http example
// with real signals and real clients. A worker whose loop is blocked dies of
// SIGABRT after heartbeat_timeout and is replaced; workers recycled after N
// requests under keep-alive load lose no request; a worker that grows past
// --max-rss is replaced; every process ends as it should.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/http_checks.hpp"
#include "support/http_load.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

#include <algorithm>
#include <csignal>
#include <regex>
#include <set>
#include <string>

#include <sys/resource.h>

using namespace pmtest;
using test_support::http_load;
using test_support::load_options;
using test_support::load_result;

namespace {

// SIGABRT dumps no core from the workers these tests abort.
void no_core_files() {
  rlimit rl{};
  ::getrlimit(RLIMIT_CORE, &rl);
  rl.rlim_cur = 0;
  ::setrlimit(RLIMIT_CORE, &rl);
}

// GET `path` on a fresh connection; the whole answer, or what went wrong.
std::string get(std::uint16_t port, const std::string& path) {
  auto c = tcp_client::connect(port);
  if (!c)
    return "connect failed";
  if (!c->send_all("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
    return "send failed";
  // The body is one line: the answer is whole at its end of line (a
  // blocked worker never closes).
  std::string in;
  for (;;) {
    auto head = in.find("\r\n\r\n");
    if (head != std::string::npos && in.find('\n', head + 4) != std::string::npos)
      return in;
    if (c->recv_some(in, 5s) != tcp_client::status::data)
      return in;
  }
}

pid_t pid_in(const std::string& answer) {
  static const std::regex re(R"(pid (\d+))");
  std::smatch m;
  return std::regex_search(answer, m, re) ? std::stoi(m[1]) : 0;
}

// GET `path`; the pid of the worker that answered it.
pid_t answered_by(server& srv, const std::string& path) {
  std::string answer = get(srv.port(), path);
  pid_t pid = pid_in(answer);
  INFO(answer);
  PM_REQUIRE(srv, pid > 0);
  return pid;
}

// Whether the master logged that worker `pid` ended with `how` in the line.
bool logged_end(server& srv, pid_t pid, std::string_view how) {
  for (const auto& l : lines_with(srv.log(), "worker " + std::to_string(pid) + " (slot "))
    if (l.find(how) != std::string::npos)
      return true;
  return false;
}

std::string status_of(server& srv) {
  auto r = run(srv.dir(), http_server, {"-s", "status", "--pid-file", srv.pid_path()});
  return r.out + r.err;
}

}  // namespace

PM_TEST_CASE(
    "a worker whose loop is blocked dies of SIGABRT after the heartbeat timeout and is "
    "replaced",
    "[watchdog][http]") {
  no_core_files();
  server srv(http_server, "procmodel-watchdog");
  PM_REQUIRE(srv, srv.start(http_config(2, {"--heartbeat-timeout", "600", "--heartbeat-grace",
                                            "1000", "--debug-paths"})));
  const pid_t stuck = answered_by(srv, "/debug/block");
  const auto blocked_at = steady::now();
  expect_worker_end(stuck, "killed by signal 6");
  const std::string aborted = " pid " + std::to_string(stuck) +
                              " (generation 1, ready) missed its "
                              "heartbeat for 600 ms: SIGABRT";
  PM_REQUIRE(srv, wait_for([&] { return srv.log().find(aborted) != std::string::npos; }, 5s));
  // The last heartbeat came at most a third of the timeout before the block.
  const auto took = steady::now() - blocked_at;
  PM_CHECK(srv, took >= 350ms);
  PM_REQUIRE(srv, wait_for(
                      [&] {
                        return logged_end(srv, stuck,
                                          "killed by signal 6 (Aborted) unexpectedly after "
                                          "missing its heartbeat for 600 ms");
                      },
                      5s));
  // SIGABRT did it, well within the grace: no SIGKILL was needed.
  PM_CHECK(srv, !srv.needed_sigkill());
  PM_CHECK(srv, !is_running(stuck));
  // The replacement serves: two ready workers, neither the stuck one.
  PM_REQUIRE(srv, wait_for(
                      [&] {
                        auto w = srv.workers();
                        return w.size() == 2 && std::find(w.begin(), w.end(), stuck) == w.end() &&
                               srv.is_ready(w[0]) && srv.is_ready(w[1]);
                      },
                      5s));
  std::set<pid_t> seen;
  for (int i = 0; i < 40 && seen.size() < 2; ++i) {
    std::string a = get(srv.port(), "/");
    PM_REQUIRE(srv, a.find("200 OK") != std::string::npos);
    seen.insert(pid_in(a));
  }
  PM_CHECK(srv, seen.count(stuck) == 0);
  std::string status = status_of(srv);
  INFO(status);
  CHECK(status.find("last replaced") != std::string::npos);
  CHECK(status.find("pid " + std::to_string(stuck) + ": killed by signal 6 (Aborted)") !=
        std::string::npos);
  CHECK(status.find("after missing its heartbeat for 600 ms") != std::string::npos);
  auto json = run(srv.dir(), http_server, {"-s", "status", "--json", "--pid-file", srv.pid_path()});
  INFO(json.out);
  CHECK(json.out.find("\"last_replacement\":\"") != std::string::npos);
  CHECK(json.out.find("pid " + std::to_string(stuck) + ": killed by signal 6") !=
        std::string::npos);
}

PM_TEST_CASE("a worker that ignores SIGABRT is SIGKILLed after the grace", "[watchdog][http]") {
  no_core_files();
  server srv(http_server, "procmodel-watchdog");
  PM_REQUIRE(srv, srv.start(http_config(1, {"--heartbeat-timeout", "300", "--heartbeat-grace",
                                            "500", "--debug-paths"})));
  const pid_t stuck = answered_by(srv, "/debug/block?ignore-abort");
  expect_worker_end(stuck, "killed by signal 9");
  const std::string killed = " pid " + std::to_string(stuck) + " still runs 500 ms after SIGABRT";
  PM_REQUIRE(srv, wait_for([&] { return srv.log().find(killed) != std::string::npos; }, 5s));
  PM_REQUIRE(srv, wait_for([&] { return !is_running(stuck); }, 5s));
  PM_REQUIRE(
      srv, wait_for([&] { return get(srv.port(), "/").find("200 OK") != std::string::npos; }, 5s));
}

PM_TEST_CASE(
    "recycling after 1000 requests under keep-alive load: replaced again and again, "
    "no request fails",
    "[recycle][http]") {
  server srv(http_server, "procmodel-recycle");
  PM_REQUIRE(srv,
             srv.start(http_config(2, {"--max-requests", "1000", "--shutdown-timeout", "5000"})));
  http_load load(srv.port(), {.connections = 20});
  load.start();
  auto recycled = [&] { return count_of(srv.log(), ") recycled: "); };
  PM_CHECK(srv, wait_for([&] { return recycled() >= 8; }, 60s, 100ms));
  load_result r = load.finish();
  INFO(describe(r));
  PM_CHECK(srv, recycled() >= 8);
  CHECK(losses(r) == "");
  CHECK(r.failed == 0);
  CHECK(r.ok >= 8000);
  // Kept-alive connections of a recycled worker were told to close.
  CHECK(r.closes >= 1);
  // Every recycled worker drained and exited with 0: the teardown audit
  // reads each "worker P (slot k, generation g) exited with code 0" line.
  PM_CHECK(srv, wait_for([&] { return count_of(srv.log(), "exited with code 0") >= 8; }, 10s));
  PM_CHECK(srv, count_of(srv.log(), "unexpectedly") == 0);
  PM_CHECK(srv, !srv.needed_sigkill());
  // One slot at a time: each recycling is over before the next starts.
  int under_way = 0, most = 0;
  for (const auto& line : lines_with(srv.log(), "recycl")) {
    if (line.find("; starting its replacement") != std::string::npos)
      most = std::max(most, ++under_way);
    if (line.find(") recycled: ") != std::string::npos)
      --under_way;
  }
  PM_CHECK(srv, most == 1);
  // Status names the cause of each slot's last replacement.
  std::string status = status_of(srv);
  INFO(status);
  CHECK(status.find("recycled: ") != std::string::npos);
  CHECK(status.find(" requests (limit ") != std::string::npos);
}

PM_TEST_CASE("the RSS limit (--max-rss) replaces a worker that grows past it", "[recycle][http]") {
  server srv(http_server, "procmodel-recycle");
  PM_REQUIRE(srv, srv.start(http_config(
                      2, {"--max-rss", "150", "--rss-check-interval", "100", "--debug-paths"})));
  const pid_t fat = answered_by(srv, "/debug/grow?mb=200");
  const std::string due = "recycling worker " + std::to_string(fat) + " (slot ";
  PM_REQUIRE(srv, wait_for([&] { return srv.log().find(due) != std::string::npos; }, 5s));
  PM_CHECK(srv, lines_with(srv.log(), due).at(0).find("MB > 150 MB") != std::string::npos);
  // Replaced, readiness-gated; it drains and exits with 0.
  PM_REQUIRE(srv, wait_for([&] { return !is_running(fat); }, 10s));
  PM_CHECK(srv, wait_for([&] { return logged_end(srv, fat, "exited with code 0"); }, 5s));
  PM_REQUIRE(srv, wait_for([&] { return srv.workers().size() == 2; }, 5s));
  for (int i = 0; i < 10; ++i)
    PM_CHECK(srv, pid_in(get(srv.port(), "/")) != fat);
  std::string status = status_of(srv);
  INFO(status);
  CHECK(status.find("recycled: rss ") != std::string::npos);
}

PM_TEST_CASE("bad watchdog and recycling values are refused with a clear error",
             "[watchdog][cli]") {
  temp_dir dir("procmodel-watchdog");
  auto r = run(dir, http_server, {"--listen", "127.0.0.1:0", "--heartbeat-timeout", "5"});
  CHECK(r.code() == 2);
  CHECK(r.err.find("--heartbeat-timeout: 5 ms is too short") != std::string::npos);
  r = run(dir, http_server, {"--listen", "127.0.0.1:0", "--max-requests", "-1"});
  CHECK(r.code() == 2);
  CHECK(r.err.find("--max-requests") != std::string::npos);
  r = run(dir, http_server, {"--listen", "127.0.0.1:0", "--recycle-jitter", "101"});
  CHECK(r.code() == 2);
  CHECK(r.err.find("--recycle-jitter: expected a whole number from 0 to 100") != std::string::npos);
}

PM_TEST_CASE("single-process mode: no watchdog (with a warning), recycling by requests works",
             "[watchdog][recycle][single]") {
  server srv(http_server, "procmodel-watchdog");
  auto c = http_config(2, {"--single-process", "--heartbeat-timeout", "300", "--max-requests", "50",
                           "--recycle-jitter", "0"});
  c.wait_workers = false;  // they are threads of the master
  PM_REQUIRE(srv, srv.start(c));
  PM_REQUIRE(srv, wait_for([&] { return http_get(srv.port()).has_value(); }, 10s, 50ms));
  PM_CHECK(srv, srv.log().find("--single-process: no heartbeat watchdog") != std::string::npos);
  for (int i = 0; i < 300; ++i)
    PM_REQUIRE(srv, http_get(srv.port()).has_value());
  PM_CHECK(srv, wait_for([&] { return count_of(srv.log(), ") recycled: ") >= 4; }, 10s, 50ms));
  PM_CHECK(srv, count_of(srv.log(), "missed its heartbeat") == 0);
}
