// The master tortured, bounded in time and count, loopback only: kill -9
// storms of workers under load, thousands of mixed signals, descriptor
// exhaustion over and over, a worker stopped with SIGSTOP during QUIT, the
// master killed mid-drain, a crash-looping worker. Each ends with the worker
// count right, no zombie, the master's descriptors and RSS flat, and reports
// its figures with WARN. (Fork failure is driven with the spawner double in
// tests/unit/supervisor_fakes.cpp.)

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/http_checks.hpp"
#include "support/http_load.hpp"
#include "support/process.hpp"
#include "support/server.hpp"
#include "support/teardown.hpp"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>

using namespace pmtest;
using test_support::http_load;
using test_support::load_options;

namespace {

// Resident set of `pid` in kB (VmRSS), -1 if it cannot be read.
long rss_kb(pid_t pid) {
  for (const auto& line : lines_with(read_file("/proc/" + std::to_string(pid) + "/status"), "VmRSS:"))
    return std::stol(line.substr(6));
  return -1;
}

// What the master holds that must not grow: descriptors besides one channel
// per live worker, and resident memory.
struct health {
  int fds = 0;
  long rss = 0;
};

// ASAN_OPTIONS for a master whose RSS a test bounds: ASan keeps freed memory
// in quarantine (256 MB by default), so the RSS would grow by what the
// sanitizer holds, not by what the master keeps (LeakSanitizer checks that at
// its exit). An unsanitized build ignores the variable.
std::pair<std::string, std::string> asan_without_quarantine() {
  const char* given = std::getenv("ASAN_OPTIONS");
  std::string v = given && *given ? std::string(given) + ":" : "";
  return {"ASAN_OPTIONS", v + "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"};
}

health health_of(server& srv) {
  return {count_open_fds(srv.master_pid()) - static_cast<int>(srv.workers().size()),
          rss_kb(srv.master_pid())};
}

// The master's own table (-s status): its worker rows.
std::vector<std::string> status_workers(server& srv, const std::string& program) {
  auto r = run(srv.dir(), program, {"-s", "status", "--pid-file", srv.pid_path()}, 10s);
  if (r.code() != 0) return {"(status failed: " + r.err + ")"};
  return lines_with(r.out, " worker ");
}

// Waits until the master's table and the processes agree on `expected`
// workers (any number when 0), every one ready: nothing starting, nothing
// draining, no zombie. The number of workers then (0 if it never settles).
std::size_t settle(server& srv, const std::string& program, milliseconds within,
                   std::size_t expected = 0) {
  std::size_t n = 0;
  bool ok = wait_for(
      [&] {
        auto rows = status_workers(srv, program);
        for (const auto& r : rows)
          if (r.find(" ready ") == std::string::npos) return false;
        n = rows.size();
        return n > 0 && (expected == 0 || n == expected) && srv.workers().size() == n &&
               srv.zombie_children().empty();
      },
      within, 100ms);
  return ok ? n : 0;
}

// RSS growth allowed: 2 MB; under ASan, whose quarantine keeps freed memory
// resident by design, 32 MB.
long rss_slack_kb() { return 2048 + sanitizer_rss_allowance_kib(); }

// Checks the master's health against `before`: descriptors exactly, RSS within the slack.
void check_flat(server& srv, const health& before, const char* what) {
  const health after = health_of(srv);
  WARN(what << ": master descriptors (less one per worker) " << before.fds << " -> " << after.fds
            << ", RSS " << before.rss << " kB -> " << after.rss << " kB");
  PM_CHECK(srv, after.fds == before.fds);
  PM_CHECK(srv, after.rss <= before.rss + rss_slack_kb());
}

int quit(server& srv, milliseconds within = 20s) {
  srv.master().signal(SIGQUIT);
  auto st = srv.master().wait_exit(within);
  return st ? exit_code_of(*st) : -1000;
}

}  // namespace

PM_TEST_CASE("kill -9 storm: 10 s of worker kills under HTTP load", "[torture][kill]") {
  server srv(http_server, "procmodel-torture");
  PM_REQUIRE(srv, srv.start(http_config(4)));
  const pid_t master = srv.master_pid();
  load_options lo;
  lo.connections = 16;
  lo.stop_on_refused = false;
  lo.record_bodies = false;
  http_load load(srv.port(), lo);
  load.start();
  wait_for([&] { return load.snapshot().ok >= 200; }, 10s);
  const health before = health_of(srv);

  std::mt19937 rng(8);
  int kills = 0;
  const auto t0 = steady::now();
  // Whatever lives is killed, every 20 ms; restart intensity (5 in 10 s per
  // slot) soon holds slots in backoff, so the count is what it is.
  while (steady::now() - t0 < 10s) {
    auto live = srv.workers();
    const pid_t victim = live.empty() ? 0 : live[rng() % live.size()];
    if (victim > 0 && ::kill(victim, SIGKILL) == 0) {
      ++kills;
      expect_worker_end(victim, "killed by signal 9");
    }
    std::this_thread::sleep_for(20ms);
  }
  const double storm_ms = ms_since(t0);
  const auto during = load.stop();

  // Backoff may hold a slot for up to 10 s; then all four serve again.
  const std::size_t n = settle(srv, http_server, 30s, 4);
  WARN("kill -9 storm: " << kills << " kills in " << storm_ms << " ms; master alive: "
                         << is_running(master) << "; requests ok " << during.ok << ", failed "
                         << during.failed << "; workers after: " << n << "; workers started: "
                         << srv.started().size());
  PM_REQUIRE(srv, is_running(master));
  PM_CHECK(srv, kills >= 20);
  PM_CHECK(srv, n == 4);
  PM_CHECK(srv, srv.log().find("master failed") == std::string::npos);
  check_flat(srv, before, "kill -9 storm");
  PM_CHECK(srv, http_get(srv.port()).has_value());
  PM_CHECK(srv, quit(srv) == 0);
}

PM_TEST_CASE("3000 mixed signals to the master", "[torture][signals]") {
  server srv(echo_server, "procmodel-torture");
  server_config cfg;
  cfg.workers = 2;
  cfg.log_level = "debug";
  cfg.env = {asan_without_quarantine()};
  PM_REQUIRE(srv, srv.start(cfg));
  const pid_t master = srv.master_pid();
  const health before = health_of(srv);

  const int mix[] = {SIGHUP, SIGUSR1, SIGTTIN, SIGTTOU, SIGWINCH, SIGPIPE, SIGCHLD, SIGURG};
  std::mt19937 rng(2026);
  int sent = 0;
  const auto t0 = steady::now();
  for (int i = 0; i < 3000 && is_running(master); ++i) {
    if (::kill(master, mix[rng() % std::size(mix)]) == 0) ++sent;
    if (i % 10 == 0) {
      std::this_thread::sleep_for(2ms);
      srv.workers();  // records the short-lived workers for the guard
    }
  }
  const double storm_ms = ms_since(t0);
  PM_REQUIRE(srv, is_running(master));
  // After a WINCH the master keeps no workers until a reload; end on one.
  std::this_thread::sleep_for(200ms);
  PM_REQUIRE(srv, ::kill(master, SIGHUP) == 0);
  const std::size_t n = settle(srv, echo_server, 30s);
  const std::string log = srv.log();
  // Standard signals pending twice are delivered once: fewer arrive than are sent.
  WARN("mixed signals: " << sent << " sent in " << storm_ms << " ms, "
                         << count_of(log, "master: received SIG") << " commands logged by the master; HUP "
                         << count_of(log, "received SIGHUP") << ", workers started "
                         << srv.started().size() << ", workers after: " << n);
  PM_CHECK(srv, sent == 3000);
  PM_CHECK(srv, n == 2);  // the last reload starts the configured count, whatever TTIN/TTOU did
  PM_CHECK(srv, srv.log().find("master failed") == std::string::npos);
  PM_CHECK(srv, echo_once(srv.port()));
  check_flat(srv, before, "mixed signals");
  PM_CHECK(srv, quit(srv) == 0);
  PM_CHECK(srv, !file_exists(srv.pid_path()));
}

PM_TEST_CASE("descriptor exhaustion five times over, with a worker killed each time",
          "[torture][resources]") {
  if (!can_starve_descriptors()) return;
  // The respawn that fails for want of descriptors, on purpose.
  expect_log_pattern(R"(cannot start a worker for slot \d: (socketpair: )?Too many open files)");
  server srv(echo_server, "procmodel-torture");
  server_config cfg;
  cfg.workers = 2;
  PM_REQUIRE(srv, srv.start(cfg));
  const pid_t master = srv.master_pid();
  const health before = health_of(srv);
  rlimit old{};
  PM_REQUIRE(srv, ::prlimit(master, RLIMIT_NOFILE, nullptr, &old) == 0);
  int recovered = 0;
  for (int round = 0; round < 5; ++round) {
    rlimit starved = old;
    starved.rlim_cur = 3;
    PM_REQUIRE(srv, ::prlimit(master, RLIMIT_NOFILE, &starved, nullptr) == 0);
    const pid_t victim = srv.slot_pids().at(static_cast<unsigned>(round % 2));
    expect_worker_end(victim, "killed by signal 9");
    PM_REQUIRE(srv, ::kill(victim, SIGKILL) == 0);
    std::this_thread::sleep_for(400ms);
    PM_REQUIRE(srv, is_running(master));
    PM_REQUIRE(srv, ::prlimit(master, RLIMIT_NOFILE, &old, nullptr) == 0);
    if (settle(srv, echo_server, 15s, 2) == 2) ++recovered;
  }
  WARN("descriptor exhaustion: " << recovered << " of 5 rounds recovered to 2 workers");
  PM_CHECK(srv, recovered == 5);
  check_flat(srv, before, "descriptor exhaustion");
  PM_CHECK(srv, quit(srv) == 0);
}

PM_TEST_CASE("a worker stopped with SIGSTOP during QUIT is killed at the shutdown timeout",
          "[torture][stop]") {
  server srv(echo_server, "procmodel-torture");
  server_config cfg;
  cfg.workers = 2;
  cfg.extra = {"--shutdown-timeout", "1000"};
  PM_REQUIRE(srv, srv.start(cfg));
  const pid_t stopped = srv.slot_pids().at(0);
  expect_worker_end(stopped, "killed by signal 9");  // the master's SIGKILL at the deadline
  PM_REQUIRE(srv, ::kill(stopped, SIGSTOP) == 0);
  PM_REQUIRE(srv, wait_for([&] { return process_state(stopped) == 'T'; }, 5s));
  const auto t0 = steady::now();
  const int code = quit(srv, 10s);
  const double took = ms_since(t0);
  WARN("QUIT with a stopped worker: the master exited " << took << " ms later, code " << code);
  PM_CHECK(srv, code == 0);
  PM_CHECK(srv, took >= 900.0);
  PM_CHECK(srv, took < 5000.0);
  PM_CHECK(srv, !is_alive(stopped));  // killed and reaped by the master
  PM_CHECK(srv, srv.log().find("did not exit in time") != std::string::npos);
}

PM_TEST_CASE("the master killed with SIGKILL mid-drain: every worker leaves, none a zombie",
          "[torture][orphans]") {
  subreaper_scope reaper;  // the orphans come to us: we reap them and see how they ended
  server srv(echo_server, "procmodel-torture");
  server_config cfg;
  cfg.workers = 2;
  cfg.extra = {"--shutdown-timeout", "4000"};
  PM_REQUIRE(srv, srv.start(cfg));
  auto client = tcp_client::connect(srv.port());
  PM_REQUIRE(srv, client.has_value());
  PM_REQUIRE(srv, client->echo("hold\n"));
  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  PM_REQUIRE(srv, wait_for([&] { return count_of(srv.log(), "draining") >= 2; }, 5s));
  // The worker without a client is done at once; the other drains.
  std::this_thread::sleep_for(100ms);
  const auto workers = srv.workers();
  PM_REQUIRE(srv, !workers.empty());
  srv.master().expect_signal(SIGKILL);  // on purpose: its workers are orphans now
  const auto t0 = steady::now();
  PM_REQUIRE(srv, srv.master().signal(SIGKILL));
  auto st = srv.master().wait_exit(5s);
  PM_REQUIRE(srv, st.has_value());
  PM_CHECK(srv, exit_code_of(*st) == -SIGKILL);
  std::map<pid_t, int> ended;
  wait_for(
      [&] {
        for (pid_t w : workers) {
          int ws = 0;
          if (!ended.count(w) && ::waitpid(w, &ws, WNOHANG) == w) ended[w] = ws;
        }
        return ended.size() == workers.size();
      },
      10s, 5ms);
  const double took = ms_since(t0);
  std::string how;
  for (auto [w, ws] : ended) how += " " + std::to_string(w) + ": " + describe_status(ws) + ";";
  WARN("master SIGKILLed mid-drain: workers gone " << took << " ms later (shutdown timeout 4000 ms);"
                                                   << how);
  PM_CHECK(srv, ended.size() == workers.size());
  PM_CHECK(srv, took < 2000.0);  // orphan_timeout (500 ms), not the 4 s drain deadline
  for (auto [w, ws] : ended) PM_CHECK(srv, (WIFEXITED(ws) && WEXITSTATUS(ws) == 0));
}

PM_TEST_CASE("a crash-looping worker for 5 s: backoff, and nothing grows in the master",
          "[torture][crash]") {
  expect_log_line("exited with code 3 unexpectedly");  // the crash loop under test
  server srv(echo_server, "procmodel-torture");
  PM_REQUIRE(srv, srv.start(crashing_echo_config()));
  const pid_t master = srv.master_pid();
  // A worker's channel end lives until its exit is reaped: the fewest
  // descriptors seen over a second is the master's own.
  auto quiet_fds = [&] {
    int fewest = 1 << 20;
    for (auto t0 = steady::now(); steady::now() - t0 < 1s; std::this_thread::sleep_for(2ms))
      if (int n = count_open_fds(master); n > 0) fewest = std::min(fewest, n);
    return fewest;
  };
  const int fds_before = quiet_fds();
  const long rss_before = rss_kb(master);
  for (int i = 0; i < 30; ++i) {
    std::this_thread::sleep_for(100ms);
    srv.workers();  // records the short-lived workers for the guard
  }
  const int fds_after = quiet_fds();
  const long rss_after = rss_kb(master);
  const auto spawns = srv.started().size();
  WARN("crash loop for 5 s: " << spawns << " workers started; master descriptors " << fds_before
                              << " -> " << fds_after << ", RSS " << rss_before << " -> "
                              << rss_after << " kB");
  PM_CHECK(srv, spawns >= 3);
  PM_CHECK(srv, spawns <= 15);  // 5 quick restarts, then 100 ms doubling
  PM_CHECK(srv, fds_after == fds_before);
  PM_CHECK(srv, rss_after <= rss_before + rss_slack_kb());
  PM_CHECK(srv, srv.zombie_children().empty());
  PM_CHECK(srv, quit(srv) == 0);
}
