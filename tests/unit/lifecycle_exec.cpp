#include <procmodel/lifecycle.hpp>
#include <procmodel/testing/lifecycle_driver.hpp>
#include "support/catch.hpp"
#include "support/on_failure.hpp"

// The lifecycle's rules for workers that are programs (exec_spawner): a
// worker that says STOPPING=1 on its own is replaced at once and its exit is
// no crash; one that keeps stopping backs off; asked to leave, STOPPING=1 is
// only news; a program that cannot be executed (spawn_failed) backs off;
// WATCHDOG=1 arrives as a heartbeat.

#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using namespace procmodel;
using namespace procmodel::testing;

namespace {

lifecycle_config config(unsigned workers = 2) { return test_config(workers); }

lifecycle_driver serving(const lifecycle_config& c) { return lifecycle_driver::serving(c); }


}  // namespace

TEST_CASE("a worker that says STOPPING=1 unasked is replaced at once; its exit is no crash",
          "[lifecycle][exec]") {
  auto d = serving(config());
  PM_SHOW_ON_FAILURE(d.describe());
  auto acts = d.dispatch(events::stopping{1000});
  INFO(to_string(acts));
  // Told to quit (its drain has a deadline), and slot 0 gets a new worker now.
  CHECK(pids_sent(acts, worker_command::quit) == std::vector<pid_t>{1000});
  CHECK(d.armed(retire_timer(1000)));
  REQUIRE(count_of<actions::spawn>(acts) == 1);
  CHECK(first_of<actions::spawn>(acts)->slot == 0);
  CHECK(logs_with(acts, log_level::notice, "worker 1000 (slot 0, generation 1) says it is stopping") == 1);
  CHECK(d.find(1000)->state == process_state::draining);
  const pid_t successor = d.in_slot(0)->pid;
  CHECK(successor != 1000);

  acts = d.exit(1000, exited_with(0));
  INFO(to_string(acts));
  CHECK(count_of<actions::spawn>(acts) == 0);  // its slot is served already
  CHECK(logs_with(acts, log_level::warn, "unexpectedly") == 0);
  CHECK_FALSE(d.armed(retire_timer(1000)));
  // A second STOPPING=1 from a worker already leaving is only news.
  d.ready(successor);
  CHECK(d.dispatch(events::stopping{1000}).empty());
}

TEST_CASE("a worker that hangs after STOPPING=1 is killed at the drain deadline",
          "[lifecycle][exec]") {
  auto d = serving(config());
  PM_SHOW_ON_FAILURE(d.describe());
  d.dispatch(events::stopping{1001});
  auto acts = d.advance(10s);
  INFO(to_string(acts));
  REQUIRE(count_of<actions::kill>(acts) == 1);
  CHECK(first_of<actions::kill>(acts)->pid == 1001);
  CHECK(first_of<actions::kill>(acts)->signo == SIGKILL);
}

TEST_CASE("a program that keeps saying STOPPING=1 backs off as a crashing one does",
          "[lifecycle][exec]") {
  auto c = config(1);
  auto d = serving(c);
  PM_SHOW_ON_FAILURE(d.describe());
  // R quick replacements, then the slot waits in a respawn timer.
  for (unsigned i = 0; i < c.restart.max_restarts; ++i) {
    const pid_t p = d.in_slot(0)->pid;
    d.ready(p);
    auto acts = d.dispatch(events::stopping{p});
    INFO(to_string(acts));
    REQUIRE(count_of<actions::spawn>(acts) == 1);
    d.exit(p, exited_with(0));
  }
  const pid_t p = d.in_slot(0)->pid;
  d.ready(p);
  auto acts = d.dispatch(events::stopping{p});
  INFO(to_string(acts));
  CHECK(count_of<actions::spawn>(acts) == 0);
  CHECK(d.armed(respawn_timer(0)));
  CHECK(logs_with(acts, log_level::warn, "next respawn in") == 1);
  acts = d.advance(*d.due_in(respawn_timer(0)));
  CHECK(count_of<actions::spawn>(acts) == 1);
}

TEST_CASE("STOPPING=1 from a worker told to quit changes nothing", "[lifecycle][exec]") {
  auto d = serving(config());
  PM_SHOW_ON_FAILURE(d.describe());
  d.command(command::quit);
  REQUIRE(d.find(1000)->state == process_state::draining);
  auto acts = d.dispatch(events::stopping{1000});
  INFO(to_string(acts));
  CHECK(acts.empty());
  // And during a stop nothing is replaced either.
  d.exit(1000, exited_with(0));
  CHECK(d.in_slot(0) == nullptr);
}

TEST_CASE("STOPPING=1 from a worker of a reload's new generation rolls the reload back",
          "[lifecycle][exec]") {
  auto d = serving(config());
  PM_SHOW_ON_FAILURE(d.describe());
  d.answer_load_config(config());
  d.command(command::reload);
  const auto fresh = d.pids_of(2);
  REQUIRE(fresh.size() == 2);
  d.ready(fresh[0]);
  auto acts = d.dispatch(events::stopping{fresh[1]});
  INFO(to_string(acts));
  CHECK(logs_with(acts, log_level::error, "rolled back") == 1);
  CHECK(d.lifecycle().generation() == 1);
  CHECK(d.find(fresh[0])->state == process_state::draining);
  CHECK(d.find(fresh[1])->state == process_state::draining);
  CHECK(d.find(1000)->state == process_state::ready);
}

TEST_CASE("a program that cannot be executed backs off from the first failure",
          "[lifecycle][exec]") {
  // exec_spawner reports a failed exec (ENOENT, EACCES) as spawn_failed.
  auto d = serving(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  d.fail_spawns(ENOENT);
  auto acts = d.exit(1000, exited_with(1));
  INFO(to_string(acts));
  // The crash respawns at once; that spawn fails, and the slot waits.
  CHECK(logs_with(acts, log_level::error, "cannot start a worker for slot 0: No such file or directory") == 1);
  REQUIRE(d.armed(respawn_timer(0)));
  const auto first = *d.due_in(respawn_timer(0));
  acts = d.advance(first);
  INFO(to_string(acts));
  REQUIRE(d.armed(respawn_timer(0)));
  CHECK(*d.due_in(respawn_timer(0)) == 2 * first);  // doubling
  d.fail_spawns(0);
  acts = d.advance(*d.due_in(respawn_timer(0)));
  CHECK(count_of<actions::spawn>(acts) == 1);
  CHECK(d.in_slot(0) != nullptr);
}

TEST_CASE("WATCHDOG=1 arrives as a heartbeat and keeps a program's watchdog fed",
          "[lifecycle][exec]") {
  auto c = config(1);
  c.heartbeat_timeout = 1s;
  c.heartbeat_grace = 500ms;
  auto d = serving(c);
  PM_SHOW_ON_FAILURE(d.describe());
  const timer_id beat{timer_kind::heartbeat, 1000};
  for (int i = 0; i < 5; ++i) {
    d.advance(900ms);
    d.send(events::heartbeat{1000});
    CHECK(d.due_in(beat) == 1000ms);
  }
  auto acts = d.advance(1s);
  REQUIRE(count_of<actions::kill>(acts) == 1);
  CHECK(first_of<actions::kill>(acts)->signo == SIGABRT);
}
