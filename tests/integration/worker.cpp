// A worker process under hostile conditions, end to end with the real example
// servers: how each worker ends on QUIT and TERM (read from the master's log,
// so that a worker that crashes on its way out is seen), a master killed while
// its workers drain, programs a worker starts, signals during start-up, and
// running out of descriptors.

#include "support/catch.hpp"
#include "support/http_checks.hpp"
#include "support/http_load.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

#include <csignal>
#include <sys/wait.h>
#include <map>
#include <optional>
#include <regex>
#include <string>

#ifndef PROCMODEL_HTTP_SERVER
#error "PROCMODEL_HTTP_SERVER must name the http_server binary"
#endif

using namespace pmtest;

namespace {

const std::string http_server = PROCMODEL_HTTP_SERVER;

// How each worker ended, from the master's "worker PID (slot K, generation G)
// exited with code N" / "killed by signal N (...)" lines.
std::map<pid_t, std::string> worker_ends(const std::string& log) {
  static const std::regex line(
      R"(worker (\d+) \(slot \d+, generation \d+\) (exited with code \d+|killed by signal \d+))");
  std::map<pid_t, std::string> out;
  for (std::sregex_iterator it(log.begin(), log.end(), line), end; it != end; ++it)
    out[static_cast<pid_t>(std::stol((*it)[1]))] = (*it)[2];
  return out;
}

// Every worker the master started ended with code 0, as its log says.
void check_workers_exited_cleanly(const server& srv) {
  auto ends = worker_ends(srv.log());
  INFO(srv.describe());
  REQUIRE(!srv.started().empty());
  for (const auto& w : srv.started()) {
    INFO("worker " << w.pid);
    CHECK(ends[w.pid] == "exited with code 0");
  }
  CHECK(srv.log().find("AddressSanitizer") == std::string::npos);
}

// An http_server with a kept-alive connection open in each listener's queue,
// so that both the Worker's own objects and handler-owned sessions exist at exit.
void stop_and_check(int signo) {
  server srv(http_server, "procmodel-worker");
  auto c = http_config();
  c.extra = {"--shutdown-timeout", "1000", "--terminate-timeout", "2000"};
  PM_REQUIRE(srv, srv.start(c));
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  REQUIRE(keepalive_request(*client).rfind("HTTP/1.1 200", 0) == 0);
  srv.master().signal(signo);
  auto status = srv.master().wait_exit(10s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  check_workers_exited_cleanly(srv);
}

}  // namespace

TEST_CASE("http_server workers exit with code 0 on QUIT", "[worker][teardown]") {
  stop_and_check(SIGQUIT);
}

TEST_CASE("http_server workers exit with code 0 on TERM", "[worker][teardown]") {
  stop_and_check(SIGTERM);
}

namespace {

// The wait status of `pid`, a child of ours (an orphan we adopted as
// subreaper), once it exits within `timeout`.
std::optional<int> wait_child(pid_t pid, milliseconds timeout) {
  std::optional<int> out;
  wait_for(
      [&] {
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) out = status;
        return out.has_value();
      },
      timeout, 5ms);
  return out;
}

// Whether `pid` logged "worker K: draining".
bool logged_draining(const server& srv, pid_t pid) {
  return srv.log().find(std::to_string(pid) + " worker 0: draining") != std::string::npos;
}

}  // namespace

TEST_CASE("a worker already draining exits within orphan_timeout when its master is killed",
          "[worker][orphan]") {
  subreaper_scope reaper;  // the orphaned workers come to us: we see how they end
  server srv(http_server, "procmodel-worker");
  PM_REQUIRE(srv, srv.start(http_config(1)));  // shutdown_timeout: 10 s, orphan_timeout: 500 ms
  // An idle kept-alive connection keeps the old worker draining until its deadline.
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  REQUIRE(keepalive_request(*client).rfind("HTTP/1.1 200", 0) == 0);
  pid_t old_worker = srv.slot_pids().at(0);
  PM_REQUIRE(srv, srv.master().signal(SIGHUP));
  PM_REQUIRE(srv, wait_for([&] { return logged_draining(srv, old_worker); }, 10s));
  pid_t new_worker = srv.slot_pids().at(0);
  PM_REQUIRE(srv, new_worker != old_worker);
  srv.workers();  // recorded for the cleanup, should a check fail

  auto t0 = steady::now();
  PM_REQUIRE(srv, srv.master().signal(SIGKILL));
  auto master_status = srv.master().wait_exit(5s);
  PM_REQUIRE(srv, master_status.has_value());
  PM_CHECK(srv, exit_code_of(*master_status) == -SIGKILL);

  auto old_status = wait_child(old_worker, 15s);
  double old_ms = ms_since(t0);
  auto new_status = wait_child(new_worker, 5s);
  WARN("master killed: the draining worker exited after " << old_ms << " ms");
  PM_REQUIRE(srv, old_status.has_value());
  PM_CHECK(srv, exit_code_of(*old_status) == 0);
  PM_CHECK(srv, old_ms < 3000);  // orphan_timeout (500 ms), not shutdown_timeout (10 s)
  PM_REQUIRE(srv, new_status.has_value());
  PM_CHECK(srv, exit_code_of(*new_status) == 0);
}
