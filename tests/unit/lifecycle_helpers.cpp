#include <procmodel/lifecycle.hpp>
#include <procmodel/testing/lifecycle_driver.hpp>
#include "support/catch.hpp"
#include "support/on_failure.hpp"

// Helper processes (nginx's cache manager): started with the first
// generation, never counted as serving, respawned with backoff, told about
// reopen, stopped after the workers on a graceful stop (with a deadline of
// their own), terminated with them on a fast stop, untouched by reloads.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using namespace procmodel;
using namespace procmodel::testing;

namespace {

// 2 workers (pids 1000, 1001), then one "cache" helper (1002) and two "shipper" helpers (1003, 1004).
lifecycle_config config() {
  lifecycle_config c = test_config(2);
  c.terminate_timeout = 2s;
  c.helpers = {{"cache", 1}, {"shipper", 2}};
  return c;
}

pid_t helper_pid(const lifecycle_driver& d, unsigned id) { return d.lifecycle().helpers().at(id).pid; }


}  // namespace

TEST_CASE("helpers start with the first generation and are not counted as serving",
          "[lifecycle][helpers]") {
  lifecycle_driver d(config());
  PM_SHOW_ON_FAILURE(d.describe());
  auto acts = d.start();
  INFO(to_string(acts));
  CHECK(count_of<actions::spawn>(acts) == 2);
  CHECK(count_of<actions::spawn_helper>(acts) == 3);
  const auto& h = d.lifecycle().helpers();
  REQUIRE(h.size() == 3);
  CHECK((h[0].role == "cache" && h[0].index == 0 && h[0].pid == 1002));
  CHECK((h[1].role == "shipper" && h[1].index == 0 && h[1].pid == 1003));
  CHECK((h[2].role == "shipper" && h[2].index == 1 && h[2].pid == 1004));
  CHECK(d.processes().size() == 2);  // the process table is the workers'
  // The workers' readiness alone is the service's.
  acts = d.ready_generation(1);
  CHECK(notices_of(acts) == std::vector<std::string>{"notify(ready)"});
  // A helper's ready (or STOPPING=1) is nothing to the workers' rules.
  CHECK(d.dispatch(events::ready{1002}).empty());
  CHECK(d.dispatch(events::stopping{1002}).empty());
}

TEST_CASE("a helper that exits is respawned, then backs off", "[lifecycle][helpers]") {
  auto c = config();
  lifecycle_driver d(c);
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  d.ready_generation(1);
  for (unsigned i = 0; i < c.restart.max_restarts; ++i) {
    const pid_t p = helper_pid(d, 0);
    auto acts = d.exit(p, exited_with(2));
    INFO(to_string(acts));
    CHECK(logs_with(acts, log_level::warn, "cache " + std::to_string(p) + " (helper 0) exited with code 2 unexpectedly") == 1);
    REQUIRE(count_of<actions::spawn_helper>(acts) == 1);
    CHECK(first_of<actions::spawn_helper>(acts)->helper == 0u);
    CHECK(count_of<actions::spawn>(acts) == 0);  // no worker is touched
    CHECK(d.lifecycle().helpers()[0].restarts == i + 1);
  }
  auto acts = d.exit(helper_pid(d, 0), killed_by(SIGKILL));
  INFO(to_string(acts));
  CHECK(count_of<actions::spawn_helper>(acts) == 0);
  REQUIRE(d.armed(helper_respawn_timer(0)));
  CHECK(d.lifecycle().helpers()[0].pid == 0);
  CHECK(d.lifecycle().helpers()[0].respawn_at.has_value());
  CHECK(logs_with(acts, log_level::warn, "cache (helper 0) restarted") == 1);
  acts = d.advance(*d.due_in(helper_respawn_timer(0)));
  CHECK(count_of<actions::spawn_helper>(acts) == 1);
  CHECK(d.lifecycle().helpers()[0].pid != 0);
}

TEST_CASE("a helper that cannot start backs off from the first failure", "[lifecycle][helpers]") {
  lifecycle_driver d(config());
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  d.fail_spawns(ENOENT);
  auto acts = d.exit(helper_pid(d, 1), exited_with(1));
  INFO(to_string(acts));
  CHECK(logs_with(acts, log_level::error, "cannot start shipper (helper 0): No such file or directory") == 1);
  CHECK(d.armed(helper_respawn_timer(1)));
  d.fail_spawns(0);
  acts = d.advance(*d.due_in(helper_respawn_timer(1)));
  CHECK(count_of<actions::spawn_helper>(acts) == 1);
}

TEST_CASE("reopen reaches the helpers, a reload leaves them alone", "[lifecycle][helpers]") {
  lifecycle_driver d(config());
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  d.ready_generation(1);
  auto acts = d.command(command::reopen);
  CHECK(pids_sent(acts, worker_command::reopen) == std::vector<pid_t>{1000, 1001, 1002, 1003, 1004});
  d.answer_load_config(config());
  acts = d.command(command::reload);
  acts = d.ready_generation(2);
  INFO(to_string(d.history()));
  CHECK(d.lifecycle().generation() == 2);
  const auto quits = pids_sent(d.history(), worker_command::quit);
  CHECK(quits == std::vector<pid_t>{1000, 1001});  // generation 1's workers, no helper
  CHECK(count_of<actions::spawn_helper>(d.history()) == 3);
}

TEST_CASE("QUIT: the helpers are told to quit only once the workers have exited",
          "[lifecycle][helpers]") {
  lifecycle_driver d(config());
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  d.ready_generation(1);
  auto acts = d.command(command::quit);
  INFO(to_string(acts));
  CHECK(pids_sent(acts, worker_command::quit) == std::vector<pid_t>{1000, 1001});
  acts = d.exit(1000, exited_with(0));
  CHECK(pids_sent(acts, worker_command::quit).empty());
  // A helper's crash meanwhile is not respawned: the master is stopping.
  acts = d.exit(1004, exited_with(3));
  CHECK(count_of<actions::spawn_helper>(acts) == 0);
  acts = d.exit(1001, exited_with(0));
  INFO(to_string(acts));
  CHECK(pids_sent(acts, worker_command::quit) == std::vector<pid_t>{1002, 1003});
  CHECK(logs_with(acts, log_level::notice, "the workers have exited; stopping 2 helper process(es)") == 1);
  CHECK(d.due_in(helpers_escalation_timer) == 10s);
  CHECK_FALSE(d.exit_code());
  d.exit(1002, exited_with(0));
  CHECK_FALSE(d.exit_code());
  acts = d.exit(1003, exited_with(0));
  CHECK(d.exit_code() == 0);
  CHECK_FALSE(d.armed(helpers_escalation_timer));
}

TEST_CASE("QUIT: a helper that does not exit gets SIGKILL at its own deadline",
          "[lifecycle][helpers]") {
  lifecycle_driver d(config());
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  d.ready_generation(1);
  d.command(command::quit);
  d.advance(4s);
  d.exit(1000, exited_with(0));
  d.exit(1001, exited_with(0));
  d.exit(1003, exited_with(0));
  d.exit(1004, exited_with(0));
  // The workers' deadline (10 s from the QUIT) passes: nothing for the helper yet.
  auto acts = d.advance(6s);
  CHECK(count_of<actions::kill>(acts) == 0);
  acts = d.advance(4s);
  INFO(to_string(acts));
  REQUIRE(count_of<actions::kill>(acts) == 1);
  CHECK(first_of<actions::kill>(acts)->pid == 1002);
  CHECK(first_of<actions::kill>(acts)->signo == SIGKILL);
  acts = d.exit(1002, killed_by(SIGKILL));
  CHECK(d.exit_code() == 0);
}

TEST_CASE("a fast stop terminates workers and helpers together", "[lifecycle][helpers]") {
  lifecycle_driver d(config());
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  d.ready_generation(1);
  d.exit(1002, exited_with(1));  // respawned as 1005
  auto acts = d.command(command::stop);
  INFO(to_string(acts));
  CHECK(pids_sent(acts, worker_command::terminate) == std::vector<pid_t>{1000, 1001, 1005, 1003, 1004});
  for (pid_t p : {1000, 1001, 1003, 1004}) d.exit(p, exited_with(0));
  CHECK_FALSE(d.exit_code());
  acts = d.advance(2s);  // the stop's escalation reaches the helper too
  REQUIRE(count_of<actions::kill>(acts) == 1);
  CHECK(first_of<actions::kill>(acts)->pid == 1005);
  d.exit(1005, killed_by(SIGKILL));
  CHECK(d.exit_code() == 0);
}

TEST_CASE("QUIT with no helper running exits once the workers are gone", "[lifecycle][helpers]") {
  auto c = config();
  lifecycle_driver d(c);
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  d.ready_generation(1);
  d.fail_spawns(EAGAIN);
  d.exit(1002, exited_with(1));  // cache: respawn fails, backing off
  d.fail_spawns(0);
  REQUIRE(d.armed(helper_respawn_timer(0)));
  auto acts = d.command(command::quit);
  CHECK_FALSE(d.armed(helper_respawn_timer(0)));  // no helper starts during a stop
  d.exit(1000, exited_with(0));
  acts = d.exit(1001, exited_with(0));
  CHECK(pids_sent(acts, worker_command::quit) == std::vector<pid_t>{1003, 1004});
  d.exit(1003, exited_with(0));
  d.exit(1004, exited_with(0));
  CHECK(d.exit_code() == 0);
}

namespace {

// The signals the lifecycle sent to `pid`, in order.
std::vector<int> signals_to(const action_list& acts, pid_t pid) {
  std::vector<int> out;
  for (const auto& k : actions_of<actions::kill>(acts))
    if (k.pid == pid) out.push_back(k.signo);
  return out;
}

// Advances the clock by `by` while the workers keep sending heartbeats, so
// that only the helpers can miss theirs.
action_list advance_keeping_workers_alive(lifecycle_driver& d, milliseconds by) {
  action_list all;
  for (milliseconds step = 250ms; by.count() > 0; by -= std::min(by, step)) {
    for (const auto& p : d.processes()) d.dispatch(events::heartbeat{p.pid});
    auto acts = d.advance(std::min(by, step));
    all.insert(all.end(), acts.begin(), acts.end());
  }
  return all;
}

lifecycle_config watched() {
  auto c = config();
  c.heartbeat_timeout = 1s;
  c.heartbeat_grace = 500ms;
  return c;
}

}  // namespace

TEST_CASE("a helper's loop is watched: a missed heartbeat is SIGABRT, then SIGKILL, then a respawn",
          "[lifecycle][helpers][heartbeat]") {
  auto d = lifecycle_driver::serving(watched());
  PM_SHOW_ON_FAILURE(d.describe());
  const pid_t cache = helper_pid(d, 0);
  // Its first heartbeat is due as a worker's readiness would be, then every second.
  CHECK(d.due_in(heartbeat_timer(cache)) == 4s);
  d.dispatch(events::heartbeat{cache});
  CHECK(d.due_in(heartbeat_timer(cache)) == 1s);
  d.dispatch(events::heartbeat{cache});
  auto acts = advance_keeping_workers_alive(d, 1s);
  INFO(to_string(acts));
  CHECK(signals_to(acts, cache) == std::vector<int>{SIGABRT});
  CHECK(logs_with(acts, log_level::warn, "cache " + std::to_string(cache) +
                                             " (helper 0) missed its heartbeat for 1000 ms: SIGABRT") == 1);
  for (const auto& p : d.processes()) CHECK(signals_to(acts, p.pid).empty());  // the workers are fine
  // Late heartbeats do not save it.
  d.dispatch(events::heartbeat{cache});
  acts = advance_keeping_workers_alive(d, 500ms);
  CHECK(signals_to(acts, cache) == std::vector<int>{SIGKILL});
  acts = d.exit(cache, killed_by(SIGKILL));
  CHECK(logs_with(acts, log_level::warn, "unexpectedly after missing its heartbeat for 1000 ms") == 1);
  CHECK_FALSE(d.armed(heartbeat_timer(cache)));
  REQUIRE(count_of<actions::spawn_helper>(acts) == 1);
  const pid_t next = helper_pid(d, 0);
  CHECK(next != cache);
  CHECK(d.due_in(heartbeat_timer(next)) == 4s);  // the new one is watched afresh
}

TEST_CASE("a helper that never sends a heartbeat is aborted as a hung worker is",
          "[lifecycle][helpers][heartbeat]") {
  auto d = lifecycle_driver::serving(watched());
  PM_SHOW_ON_FAILURE(d.describe());
  const pid_t shipper = helper_pid(d, 1);
  auto acts = advance_keeping_workers_alive(d, 3'999ms);
  CHECK(signals_to(acts, shipper).empty());
  acts = advance_keeping_workers_alive(d, 1ms);
  INFO(to_string(acts));
  CHECK(signals_to(acts, shipper) == std::vector<int>{SIGABRT});
  CHECK(logs_with(acts, log_level::warn, "shipper " + std::to_string(shipper) +
                                             " (helper 0) sent no heartbeat within 4000 ms of its start") == 1);
  // It exits of the SIGABRT within the grace: respawned, no SIGKILL left armed.
  acts = d.exit(shipper, killed_by(SIGABRT));
  CHECK(logs_with(acts, log_level::warn, "unexpectedly after hanging at start") == 1);
  CHECK_FALSE(d.armed(heartbeat_timer(shipper)));
  CHECK(count_of<actions::spawn_helper>(acts) == 1);
}

TEST_CASE("helpers are not watched without --heartbeat-timeout, nor while they stop",
          "[lifecycle][helpers][heartbeat]") {
  {
    auto d = lifecycle_driver::serving(config());
    for (const auto& h : d.lifecycle().helpers()) CHECK_FALSE(d.armed(heartbeat_timer(h.pid)));
  }
  auto d = lifecycle_driver::serving(watched());
  PM_SHOW_ON_FAILURE(d.describe());
  const pid_t cache = helper_pid(d, 0);
  auto acts = d.command(command::stop);  // fast stop: every helper is terminating
  INFO(to_string(acts));
  acts = d.advance(4s);  // past the escalation (SIGKILL) and the first heartbeat's due time
  INFO(to_string(acts));
  CHECK(std::ranges::count(signals_to(acts, cache), SIGABRT) == 0);
}
