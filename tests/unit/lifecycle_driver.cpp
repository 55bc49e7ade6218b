#include <procmodel/testing/lifecycle_driver.hpp>

#include "support/catch.hpp"

#include <chrono>
#include <csignal>
#include <stdexcept>
#include <vector>

using namespace std::chrono_literals;
using namespace procmodel;
using namespace procmodel::testing;

TEST_CASE("lifecycle_driver: the clock moves forward only", "[testing][driver]") {
  lifecycle_driver d;
  CHECK(d.now() == lifecycle_driver::origin());
  CHECK(d.elapsed() == 0ms);
  d.at(5s);
  CHECK(d.elapsed() == 5s);
  d.after(250ms);
  CHECK(d.elapsed() == 5250ms);
  CHECK_THROWS_AS(d.at(1s), std::logic_error);
  CHECK_THROWS_AS(d.advance_to(1s), std::logic_error);
  CHECK(d.elapsed() == 5250ms);
}

TEST_CASE("lifecycle_driver: send feeds one event - dispatch answers spawns", "[testing][driver]") {
  lifecycle_config c;
  c.workers = 2;

  SECTION("send") {
    lifecycle_driver d(c);
    auto acts = d.send(events::started{});
    CHECK(count_of<actions::spawn>(acts) == 2);
    CHECK(d.processes().empty());
    CHECK(d.next_pid() == 1000);
  }
  SECTION("dispatch, with pids from first_pid up") {
    lifecycle_driver d(c, 500);
    auto acts = d.start();
    CHECK(count_of<actions::spawn>(acts) == 2);
    CHECK(d.pids() == std::vector<pid_t>{500, 501});
    CHECK(d.next_pid() == 502);
    CHECK(d.in_slot(1)->pid == 501);
    CHECK(d.find(500)->slot == 0);
    CHECK(d.find(4242) == nullptr);
    CHECK(d.history().size() == acts.size());
  }
  SECTION("dispatch with failing spawns") {
    lifecycle_driver d(c);
    d.fail_spawns(EAGAIN);
    d.start();
    CHECK(d.processes().empty());
    CHECK(d.armed({timer_kind::respawn, 0}));
    CHECK(d.armed({timer_kind::respawn, 1}));
  }
}

TEST_CASE("lifecycle_driver: timers are tracked and fire in deadline order", "[testing][driver]") {
  lifecycle_config c;
  c.workers = 2;
  c.restart.max_restarts = 0;  // every crash waits
  c.restart.backoff_initial = 100ms;
  lifecycle_driver d(c);
  d.start();
  d.exit(1001, exited_with(1));  // respawn[1] in 100 ms
  d.at(40ms).exit(1000, exited_with(1));  // respawn[0] in 100 ms, at 140 ms
  CHECK(d.due_in({timer_kind::respawn, 1}) == 60ms);
  CHECK(d.due_in({timer_kind::respawn, 0}) == 100ms);
  CHECK(d.timers().size() == 2);

  auto acts = d.advance(200ms);
  auto spawns = actions_of<actions::spawn>(acts);
  REQUIRE(spawns.size() == 2);
  CHECK(spawns[0].slot == 1);  // due first
  CHECK(spawns[1].slot == 0);
  CHECK(d.find(1002)->started == lifecycle_driver::origin() + 100ms);  // fired at its deadline
  CHECK(d.find(1003)->started == lifecycle_driver::origin() + 140ms);
  CHECK(d.elapsed() == 240ms);
  CHECK(d.timers().empty());

  d.command(command::stop);
  CHECK(d.armed({timer_kind::kill_escalation, 0}));
  d.exit(1002, 0);
  d.exit(1003, 0);
  CHECK_FALSE(d.armed({timer_kind::kill_escalation, 0}));  // cancel_timer is tracked
  CHECK(d.exit_code() == 0);
}

TEST_CASE("action helpers", "[testing][driver]") {
  action_list list{actions::stop_listening{},
                   actions::send{1, worker_command::quit, 10},
                   actions::log{log_level::info, "hi"},
                   actions::send{2, worker_command::terminate, 0},
                   actions::send{3, worker_command::quit, 10},
                   actions::kill{3, SIGKILL},
                   actions::arm_timer{{timer_kind::kill_escalation, 0}, 5000ms},
                   actions::cancel_timer{{timer_kind::respawn, 2}},
                   actions::reopen_logs{},
                   actions::spawn{4, 1},
                   actions::exit{0}};
  CHECK(count_of<actions::send>(list) == 3);
  CHECK(actions_of<actions::send>(list)[1].pid == 2);
  CHECK(first_of<actions::kill>(list)->pid == 3);
  CHECK_FALSE(first_of<actions::kill>(action_list{}));
  CHECK(index_of<actions::stop_listening>(list) == 0);
  CHECK(index_of<actions::exit>(list) == list.size() - 1);
  CHECK(index_of<actions::exit>(action_list{}) == 0);
  CHECK(pids_sent(list, worker_command::quit) == std::vector<pid_t>{1, 3});
  CHECK(sends_of(list, worker_command::terminate).size() == 1);
  CHECK(to_string(list) ==
        "stop_listening\n"
        "send(1, quit, 10)\n"
        "log(info, \"hi\")\n"
        "send(2, terminate, 0)\n"
        "send(3, quit, 10)\n"
        "kill(3, 9)\n"
        "arm_timer(kill_escalation[0], 5000 ms)\n"
        "cancel_timer(respawn[2])\n"
        "reopen_logs\n"
        "spawn(slot 4, gen 1)\n"
        "exit(0)\n");
}

TEST_CASE("wait statuses", "[testing]") {
  STATIC_REQUIRE(WIFEXITED(exited_with(3)));
  STATIC_REQUIRE(WEXITSTATUS(exited_with(3)) == 3);
  STATIC_REQUIRE(WIFSIGNALED(killed_by(SIGKILL)));
  STATIC_REQUIRE(WTERMSIG(killed_by(SIGKILL)) == SIGKILL);
  STATIC_REQUIRE(WCOREDUMP(killed_by(SIGSEGV, true)));
  STATIC_REQUIRE_FALSE(WCOREDUMP(killed_by(SIGSEGV)));
}
