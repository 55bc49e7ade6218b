// examples/05-helper-process end to end: a helper process beside the
// workers is respawned when killed, stopped on QUIT only after every worker
// has exited, and holds a listening socket only when configured to.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

#include <csignal>
#include <regex>
#include <string>
#include <thread>

#include <unistd.h>

using namespace pmtest;

namespace {

// The janitor's pid, from the master's last "started janitor PID" line; 0 if none.
pid_t janitor_pid(const std::string& log) {
  static const std::regex re(R"(started janitor (\d+) \(helper 0\))");
  pid_t pid = 0;
  for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it)
    pid = static_cast<pid_t>(std::stol((*it)[1]));
  return pid;
}

bool holds_listener(pid_t pid, std::uint16_t port) {
  std::set<std::string> listening;
  for (const auto& inode : listening_inodes(port)) listening.insert("socket:[" + inode + "]");
  for (const auto& f : open_fds(pid))
    if (listening.count(f.target)) return true;
  return false;
}

server_config helper_config(std::vector<std::string> extra = {}) {
  server_config c;
  c.workers = 2;
  c.extra = std::move(extra);
  c.wait_workers = false;  // the master's children are workers and the janitor
  c.wait_ready = false;
  return c;
}

bool start_with_janitor(server& srv, const server_config& c) {
  if (!srv.start(c)) return false;
  return wait_for([&] {
    const std::string log = srv.log();
    return janitor_pid(log) != 0 && count_of(log, ") is ready") >= 2;
  }, 10s);
}

}  // namespace

PM_TEST_CASE("helpers: the janitor holds no listening socket, and is respawned when killed",
             "[helpers]") {
  server srv(helper_master, "procmodel-helper");
  PM_REQUIRE(srv, start_with_janitor(srv, helper_config({"--spool", "/nonexistent"})));
  const pid_t janitor = janitor_pid(srv.log());
  INFO("janitor " << janitor << ": " << describe_fds(janitor));
  PM_CHECK(srv, is_running(janitor));
  // Once the child has closed what it inherits from the fork.
  PM_CHECK(srv, wait_for([&] { return !holds_listener(janitor, srv.port()); }, 5s));
  std::this_thread::sleep_for(200ms);
  PM_CHECK(srv, !holds_listener(janitor, srv.port()));
  for (pid_t w : srv.workers())
    if (w != janitor) PM_CHECK(srv, holds_listener(w, srv.port()));
  // Listed by role.
  auto st = run(srv.dir(), helper_master, {"--pid-file", srv.pid_path(), "-s", "status"});
  INFO(st.out);
  CHECK(std::regex_search(st.out, std::regex(std::to_string(janitor) + R"( +janitor +0 +- +running )")));

  PM_REQUIRE(srv, ::kill(janitor, SIGKILL) == 0);
  expect_log_line("janitor " + std::to_string(janitor) + " (helper 0) killed by signal 9");
  PM_REQUIRE(srv, wait_for([&] {
    pid_t now = janitor_pid(srv.log());
    return now != 0 && now != janitor && is_running(now);
  }, 10s));
  PM_CHECK(srv, srv.log().find("janitor " + std::to_string(janitor) +
                               " (helper 0) killed by signal 9 (Killed) unexpectedly") != std::string::npos);
  const pid_t successor = janitor_pid(srv.log());
  PM_CHECK(srv, wait_for([&] { return !holds_listener(successor, srv.port()); }, 5s));
  // The workers were not touched.
  PM_CHECK(srv, count_of(srv.log(), "started worker") == 2);
}

PM_TEST_CASE("helpers: given the listeners when configured to", "[helpers]") {
  server srv(helper_master, "procmodel-helper");
  PM_REQUIRE(srv, start_with_janitor(srv, helper_config({"--spool", "/nonexistent", "--janitor-listens"})));
  const pid_t janitor = janitor_pid(srv.log());
  INFO(describe_fds(janitor));
  PM_CHECK(srv, holds_listener(janitor, srv.port()));
}

PM_TEST_CASE("helpers: QUIT stops the janitor only after every worker has exited", "[helpers]") {
  server srv(helper_master, "procmodel-helper");
  PM_REQUIRE(srv, start_with_janitor(srv, helper_config({"--spool", "/nonexistent"})));
  const pid_t janitor = janitor_pid(srv.log());
  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  auto status = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  const std::string log = srv.log();
  const auto janitor_end = log.find("janitor " + std::to_string(janitor) + " (helper 0) exited with code 0");
  const auto told = log.find("the workers have exited; stopping 1 helper process(es)");
  PM_REQUIRE(srv, janitor_end != std::string::npos);
  PM_REQUIRE(srv, told != std::string::npos);
  CHECK(told < janitor_end);
  // Every worker's end comes before the janitor is told.
  std::size_t last_worker = 0;
  for (auto pos = log.find(") exited with code 0"); pos != std::string::npos;
       pos = log.find(") exited with code 0", pos + 1))
    if (log.rfind("worker ", pos) > log.rfind('\n', pos)) last_worker = std::max(last_worker, pos);
  CHECK(count_of(log, "(slot ") >= 2);
  CHECK(last_worker < told);
  CHECK(!is_running(janitor));
}

PM_TEST_CASE("helpers: a janitor whose loop stops is aborted, killed and respawned, and no worker is touched",
             "[helpers][heartbeat]") {
  server srv(helper_master, "procmodel-helper");
  PM_REQUIRE(srv, start_with_janitor(srv, helper_config({"--spool", "/nonexistent",
                                                          "--heartbeat-timeout", "300",
                                                          "--heartbeat-grace", "300"})));
  const pid_t janitor = janitor_pid(srv.log());
  const auto workers_before = srv.workers();
  // A stopped process sends no heartbeat; SIGABRT waits, SIGKILL does not.
  PM_REQUIRE(srv, ::kill(janitor, SIGSTOP) == 0);
  const std::string missed = "janitor " + std::to_string(janitor) +
                             " (helper 0) missed its heartbeat for 300 ms: SIGABRT";
  PM_CHECK(srv, wait_for([&] { return srv.log().find(missed) != std::string::npos; }, 5s));
  PM_CHECK(srv, wait_for([&] { return janitor_pid(srv.log()) != janitor; }, 5s));
  const std::string log = srv.log();
  PM_CHECK(srv, log.find("janitor " + std::to_string(janitor) +
                         " (helper 0) still runs 300 ms after SIGABRT; sending SIGKILL") !=
                    std::string::npos);
  PM_CHECK(srv, log.find("janitor " + std::to_string(janitor) +
                         " (helper 0) killed by signal 9") != std::string::npos);
  PM_CHECK(srv, log.find("unexpectedly after missing its heartbeat for 300 ms") != std::string::npos);
  PM_CHECK(srv, !is_running(janitor));
  const pid_t next = janitor_pid(log);
  PM_CHECK(srv, is_running(next));
  // The new janitor keeps its heartbeats: still the same one a second later.
  std::this_thread::sleep_for(1s);
  PM_CHECK(srv, janitor_pid(srv.log()) == next);
  for (pid_t w : workers_before)
    if (w != janitor) PM_CHECK(srv, is_running(w));  // no worker was touched
  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  auto status = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  PM_CHECK(srv, !is_running(next));
}
