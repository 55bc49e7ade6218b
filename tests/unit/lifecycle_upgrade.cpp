#include <procmodel/lifecycle.hpp>
#include <procmodel/testing/lifecycle_driver.hpp>
#include "support/catch.hpp"

// Hot upgrade as lifecycle states, without a fork: the old master's side
// (request, pid file rename, exec, ready or deadline or exit, handover or
// failure) and the new master's (refusing a third master, reporting only its
// first generation, knowing when its parent is gone), with nginx's rules and
// a test for each of issue 7's numbered failures.

#include <chrono>
#include <csignal>
#include <cstdint>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using namespace procmodel;
using namespace procmodel::testing;

namespace {

using strings = std::vector<std::string>;

constexpr pid_t self = 100;        // the master under test
constexpr pid_t new_master = 500;  // the one it starts
constexpr pid_t parent = 50;       // the one it came from
constexpr timer_id upgrade_deadline{timer_kind::upgrade_deadline, 0};
constexpr timer_id upgrade_kill{timer_kind::upgrade_deadline, 1};

lifecycle_config config(unsigned workers = 2) { return test_config(workers); }

// Everything but logs, rendered.
strings effects(const action_list& list) {
  strings out;
  for (const auto& a : list)
    if (!std::holds_alternative<actions::log>(a)) out.push_back(to_string(a));
  return out;
}

bool has(const action_list& list, const std::string& rendered) {
  for (const auto& e : effects(list))
    if (e == rendered) return true;
  return false;
}

std::vector<actions::reply> replies(const action_list& list) {
  return actions_of<actions::reply>(list);
}

// A master started with `facts`, its first generation ready.
lifecycle_driver serving(events::started facts = {self}, lifecycle_config c = config()) {
  lifecycle_driver d(c);
  d.dispatch(facts);
  d.ready_generation(d.lifecycle().generation());
  return d;
}

// `-s upgrade` from control client 7 with a 2 s deadline, answered up to the exec.
action_list request_automatic(lifecycle_driver& d, std::uint64_t client = 7) {
  return d.dispatch(events::upgrade_requested{true, 2s, client});
}

// A master upgrading to `new_master`, which has started and is not ready.
lifecycle_driver upgrading(bool automatic) {
  auto d = serving();
  if (automatic)
    request_automatic(d);
  else
    d.command(command::upgrade);
  d.dispatch(events::new_master_started{new_master});
  return d;
}

}  // namespace

// ------------------------------------------------------------ the happy paths

TEST_CASE("automatic upgrade: rename, exec, ready - the client hears ok and the old master hands over",
          "[lifecycle][upgrade]") {
  auto d = serving();
  auto acts = request_automatic(d);
  CHECK(effects(acts) == strings{"rename_pid_file", "exec_upgrade(gen 2)"});
  acts = d.dispatch(events::new_master_started{new_master});
  CHECK(effects(acts) == strings{"arm_timer(upgrade_deadline[0], 2000 ms)"});
  REQUIRE(d.lifecycle().upgrade());
  CHECK(d.lifecycle().upgrade()->pid == new_master);
  CHECK_FALSE(d.lifecycle().upgrade()->ready);

  acts = d.dispatch(events::new_master_ready{new_master});
  REQUIRE(replies(acts).size() == 1);
  CHECK(replies(acts)[0].client == 7);
  CHECK(replies(acts)[0].ok);
  CHECK(replies(acts)[0].text == "new master 500 serves; old master 100 quits");
  CHECK(has(acts, "cancel_timer(upgrade_deadline[0])"));
  // Handing over: MAINPID names the new master, no STOPPING=1, and the
  // shared accept queues are not frozen (the new master accepts from them).
  CHECK(has(acts, "hand_over(500)"));
  CHECK_FALSE(has(acts, "notify(stopping)"));
  CHECK(has(acts, "stop_listening(no freeze)"));
  CHECK(d.current_phase() == phase::quitting);
  CHECK_FALSE(has(acts, "restore_pid_file"));
  // The old master exits when its workers have, without waiting for the new one.
  d.exit(1000, exited_with(0));
  acts = d.exit(1001, exited_with(0));
  CHECK(d.exit_code() == 0);
}

TEST_CASE("manual upgrade: USR2 waits for the operator; QUIT after ready hands over",
          "[lifecycle][upgrade]") {
  auto d = upgrading(false);
  CHECK(d.due_in(upgrade_deadline) == 3s);  // USR2 gets ready_timeout
  auto acts = d.dispatch(events::new_master_ready{new_master});
  CHECK(logs_with(acts, log_level::notice, "send WINCH then QUIT to this master (100)") == 1);
  CHECK(d.current_phase() == phase::running);
  CHECK_FALSE(d.armed(upgrade_deadline));

  d.command(command::drain_workers);  // WINCH: no terminal here
  acts = d.command(command::quit);
  CHECK(has(acts, "hand_over(500)"));
  CHECK(has(acts, "stop_listening(no freeze)"));
  CHECK_FALSE(has(acts, "notify(stopping)"));
  CHECK(replies(acts).empty());
}

TEST_CASE("generations continue across an upgrade", "[lifecycle][upgrade]") {
  auto d = serving();
  d.answer_load_config(config());
  d.command(command::reload);
  d.ready_generation(2);
  CHECK(d.lifecycle().generation() == 2);
  auto acts = d.command(command::upgrade);
  CHECK(has(acts, "exec_upgrade(gen 3)"));

  // The new master starts its count where it was told.
  lifecycle_driver next(config());
  acts = next.dispatch(events::started{new_master, 3, self});
  CHECK(has(acts, "spawn(slot 0, gen 3)"));
  CHECK(next.lifecycle().generation() == 3);
  next.answer_load_config(config());
  next.ready_generation(3);
  next.dispatch(events::parent_master_gone{});
  next.command(command::reload);
  CHECK(next.lifecycle().pending_generation() == 4);
}

TEST_CASE("a pid file that cannot be renamed refuses the upgrade before any exec",
          "[lifecycle][upgrade]") {
  auto d = serving();
  d.fail_pid_file_rename("cannot rename m.pid to m.pid.oldbin: Permission denied");
  auto acts = request_automatic(d);
  CHECK(effects(acts) ==
        strings{"rename_pid_file",
                "reply(7, error, \"cannot rename m.pid to m.pid.oldbin: Permission denied\")"});
  CHECK_FALSE(d.lifecycle().upgrade());
  d.fail_pid_file_rename("");
  CHECK(has(request_automatic(d, 8), "exec_upgrade(gen 2)"));
}

TEST_CASE("a new master that cannot be started: the pid file is restored and the client told",
          "[lifecycle][upgrade]") {
  auto d = serving();
  request_automatic(d);
  auto acts = d.dispatch(events::new_master_failed{"cannot execute /srv/bin/app"});
  CHECK(effects(acts) ==
        strings{"restore_pid_file(pid file only)", "reply(7, error, \"cannot execute /srv/bin/app\")"});
  CHECK_FALSE(d.lifecycle().upgrade());
  CHECK(d.current_phase() == phase::running);
}

// ------------------------------------------------------------ nginx's rules, one per failure

TEST_CASE("failure 1: a master handed its sockets by a previous master never daemonizes again",
          "[lifecycle][upgrade][failure1]") {
  CHECK(should_daemonize(true, false));
  CHECK_FALSE(should_daemonize(true, true));
  CHECK_FALSE(should_daemonize(false, false));
  CHECK_FALSE(should_daemonize(false, true));
}

TEST_CASE("failure 2: WINCH with a controlling terminal drains nothing unless daemonized or forced",
          "[lifecycle][upgrade][failure2]") {
  SECTION("a terminal's resize is ignored") {
    auto d = serving({self, 1, 0, true, false});
    CHECK_FALSE(d.lifecycle().honours_winch());
    auto acts = d.command(command::drain_workers);
    CHECK(pids_sent(acts, worker_command::quit).empty());
    CHECK(logs_with(acts, log_level::warn, "controlling terminal") == 1);
    CHECK(d.in_slot(0) != nullptr);
    CHECK(d.in_slot(1) != nullptr);
  }
  SECTION("without a terminal, daemonized, or forced, every worker drains") {
    auto facts = GENERATE(events::started{self, 1, 0, false, false},
                          events::started{self, 1, 0, true, true});
    auto d = serving(facts);
    CHECK(d.lifecycle().honours_winch());
    CHECK(pids_sent(d.command(command::drain_workers), worker_command::quit) ==
          std::vector<pid_t>{1000, 1001});
  }
  SECTION("forced with winch_with_terminal") {
    auto c = config();
    c.winch_with_terminal = true;
    auto d = serving({self, 1, 0, true, false}, c);
    CHECK(pids_sent(d.command(command::drain_workers), worker_command::quit) ==
          std::vector<pid_t>{1000, 1001});
  }
}

TEST_CASE("failure 3: a master whose parent master lives refuses USR2 and -s upgrade",
          "[lifecycle][upgrade][failure3]") {
  auto d = serving({new_master, 2, parent});
  CHECK(d.lifecycle().parent_master() == parent);
  auto acts = d.command(command::upgrade);
  CHECK_FALSE(has(acts, "rename_pid_file"));
  REQUIRE(replies(acts).size() == 1);
  CHECK(replies(acts)[0].text.find("parent master 50 still runs") != std::string::npos);
  acts = request_automatic(d, 9);
  REQUIRE(replies(acts).size() == 1);
  CHECK(replies(acts)[0].client == 9);
  CHECK_FALSE(replies(acts)[0].ok);
  CHECK_FALSE(has(acts, "exec_upgrade(gen 3)"));

  // Once the parent has gone this master is the only one and may upgrade.
  d.dispatch(events::parent_master_gone{});
  CHECK(d.lifecycle().parent_master() == 0);
  CHECK(has(d.command(command::upgrade), "exec_upgrade(gen 3)"));
}

TEST_CASE("failure 3: two failed upgrades in a row each give the pid file back",
          "[lifecycle][upgrade][failure3]") {
  auto d = serving();
  for (pid_t nm : {pid_t{500}, pid_t{600}}) {
    auto acts = request_automatic(d);
    REQUIRE(has(acts, "exec_upgrade(gen 2)"));
    d.dispatch(events::new_master_started{nm});
    acts = d.advance(2s);  // never ready
    CHECK(has(acts, "restore_pid_file"));
    CHECK(has(acts, "signal_new_master(" + std::to_string(nm) + ", " + std::to_string(SIGQUIT) + ")"));
    // While it stops, another upgrade is refused: one new master at a time.
    acts = request_automatic(d, 8);
    REQUIRE(replies(acts).size() == 1);
    CHECK(replies(acts)[0].text.find("still stopping") != std::string::npos);
    CHECK_FALSE(has(acts, "rename_pid_file"));
    acts = d.exit(nm, killed_by(SIGQUIT));
    CHECK_FALSE(has(acts, "restore_pid_file"));  // given back already, once
    CHECK_FALSE(d.lifecycle().upgrade());
  }
  std::size_t renames = count_of<actions::rename_pid_file>(d.history());
  std::size_t restores = count_of<actions::restore_pid_file>(d.history());
  CHECK(renames == 2);
  CHECK(restores == 2);
}

TEST_CASE("failure 4: only the first generation's readiness is reported to the parent master",
          "[lifecycle][upgrade][failure4]") {
  lifecycle_driver d(config());
  d.dispatch(events::started{new_master, 2, parent});
  d.answer_load_config(config());
  SECTION("a reload rolled back is no handover and no READY=1") {
    // Generation 2's workers crash; a HUP starts generation 3, which fails too.
    d.exit(1000, exited_with(1));
    auto acts = d.command(command::reload);
    CHECK_FALSE(has(acts, "notify(reloading)"));
    auto gen3 = d.pids_of(3);
    REQUIRE(gen3.size() == 2);
    acts = d.exit(gen3[0], exited_with(1));
    CHECK(logs_with(acts, log_level::error, "rolled back") == 1);
    CHECK_FALSE(has(acts, "report_ready_to_parent"));
    CHECK_FALSE(has(acts, "notify(ready)"));
    CHECK(count_of<actions::report_ready_to_parent>(d.history()) == 0);
    // The first generation being ready is the handover.
    acts = d.ready_generation(2);
    CHECK(has(acts, "notify(ready)"));
    CHECK(has(acts, "report_ready_to_parent"));
  }
  SECTION("a reload that finishes before the first generation is ready is no handover") {
    d.command(command::reload);
    auto acts = d.ready_generation(3);
    CHECK(d.lifecycle().generation() == 3);
    CHECK_FALSE(has(acts, "report_ready_to_parent"));
    CHECK_FALSE(has(acts, "notify(ready)"));
  }
  SECTION("a refused config before the first generation is ready says nothing") {
    d.answer_load_config(events::config_loaded{false, {}, "bad"});
    auto acts = d.command(command::reload);
    CHECK_FALSE(has(acts, "notify(ready)"));
    CHECK_FALSE(has(acts, "report_ready_to_parent"));
  }
  SECTION("reported once: a respawned worker's ready is no news") {
    CHECK(count_of<actions::report_ready_to_parent>(d.ready_generation(2)) == 1);
    d.exit(1000, exited_with(1));
    CHECK(count_of<actions::report_ready_to_parent>(d.ready_generation(2)) == 0);
  }
}

TEST_CASE("failure 4: a master without parent announces a reload that finished first",
          "[lifecycle][upgrade][failure4]") {
  lifecycle_driver d(config());
  d.dispatch(events::started{self});
  d.answer_load_config(config());
  d.command(command::reload);
  auto acts = d.ready_generation(2);
  CHECK(has(acts, "notify(ready)"));
  CHECK_FALSE(has(acts, "report_ready_to_parent"));
}

TEST_CASE("failure 5: WINCH then the new master dies - the workers come back",
          "[lifecycle][upgrade][failure5]") {
  bool ready_first = GENERATE(false, true);
  auto d = upgrading(false);
  if (ready_first) d.dispatch(events::new_master_ready{new_master});
  auto acts = d.command(command::drain_workers);
  CHECK(pids_sent(acts, worker_command::quit) == std::vector<pid_t>{1000, 1001});
  acts = d.exit(new_master, exited_with(1));
  CHECK(has(acts, "restore_pid_file"));
  CHECK(has(acts, "spawn(slot 0, gen 1)"));
  CHECK(has(acts, "spawn(slot 1, gen 1)"));
  CHECK(logs_with(acts, log_level::error, ready_first ? "upgrade rolled back" : "upgrade failed") == 1);
  REQUIRE(d.in_slot(0) != nullptr);
  CHECK(d.in_slot(0)->generation == 1);
  // The old workers drain on; the new ones are not retired by them.
  d.exit(1000, exited_with(0));
  CHECK(d.in_slot(0) != nullptr);
}

TEST_CASE("failure 5: WINCH, then the upgrade deadline - the workers come back",
          "[lifecycle][upgrade][failure5]") {
  auto d = upgrading(true);
  d.command(command::drain_workers);
  auto acts = d.advance(2s);
  CHECK(has(acts, "spawn(slot 0, gen 1)"));
  CHECK(has(acts, "spawn(slot 1, gen 1)"));
}

TEST_CASE("failure 6: the old master stopping mid-upgrade tells the client, stops the new master and waits for it",
          "[lifecycle][upgrade][failure6]") {
  auto [cmd, signo] = GENERATE(std::pair{command::quit, SIGQUIT}, std::pair{command::stop, SIGTERM});
  auto d = upgrading(true);
  auto acts = d.command(cmd);
  REQUIRE(replies(acts).size() == 1);
  CHECK(replies(acts)[0].client == 7);
  CHECK_FALSE(replies(acts)[0].ok);
  CHECK(replies(acts)[0].text.find("old master is stopping") != std::string::npos);
  CHECK(has(acts, "restore_pid_file"));
  CHECK(has(acts, "signal_new_master(500, " + std::to_string(signo) + ")"));
  CHECK(has(acts, "notify(stopping)"));
  CHECK_FALSE(has(acts, "hand_over(500)"));
  // Its workers gone, it still waits for the new master.
  d.exit(1000, exited_with(0));
  acts = d.exit(1001, exited_with(0));
  CHECK_FALSE(d.exit_code());
  // A new master that will not stop is killed with the rest.
  acts = d.advance(10s);
  CHECK(has(acts, "signal_new_master(500, 9)"));
  acts = d.exit(new_master, killed_by(SIGKILL));
  CHECK(d.exit_code() == 0);
  CHECK(count_of<actions::reply>(d.history()) == 1);
}

TEST_CASE("failure 6: stopping before the exec answered still stops what it starts",
          "[lifecycle][upgrade][failure6]") {
  auto d = serving();
  d.send(events::upgrade_requested{true, 2s, 7});  // rename not answered yet
  auto acts = d.command(command::quit);
  CHECK(replies(acts).size() == 1);
  acts = d.dispatch(events::pid_file_renamed{});
  CHECK(has(acts, "restore_pid_file(pid file only)"));
  CHECK_FALSE(has(acts, "exec_upgrade(gen 2)"));
  d.exit(1000, exited_with(0));
  d.exit(1001, exited_with(0));
  CHECK(d.exit_code() == 0);
}

TEST_CASE("failure 7: a ready that arrives after the deadline is ignored - only one master quits",
          "[lifecycle][upgrade][failure7]") {
  auto d = upgrading(true);
  auto acts = d.advance(2s);
  REQUIRE(replies(acts).size() == 1);
  CHECK_FALSE(replies(acts)[0].ok);
  CHECK(replies(acts)[0].text == "the new master 500 was not ready within 2000 ms");
  CHECK(has(acts, "signal_new_master(500, 3)"));
  acts = d.dispatch(events::new_master_ready{new_master});
  CHECK(replies(acts).empty());
  CHECK_FALSE(has(acts, "hand_over(500)"));
  CHECK(d.current_phase() == phase::running);
  CHECK(logs_with(acts, log_level::warn, "after its upgrade was abandoned") == 1);
  CHECK(d.lifecycle().upgrade()->abandoned);
}

TEST_CASE("failure 7: a ready in time cancels the deadline - it never fires",
          "[lifecycle][upgrade][failure7]") {
  auto d = upgrading(true);
  d.advance(1999ms);
  d.dispatch(events::new_master_ready{new_master});
  auto acts = d.advance(10ms);
  CHECK(replies(acts).empty());
  CHECK_FALSE(has(acts, "signal_new_master(500, 3)"));
}

TEST_CASE("failure 8: the pid file is given back as the failure is reported, before the new master is gone",
          "[lifecycle][upgrade][failure8]") {
  auto d = upgrading(true);
  auto acts = d.advance(2s);
  CHECK(index_of<actions::restore_pid_file>(acts) < index_of<actions::reply>(acts));
  CHECK(index_of<actions::reply>(acts) < acts.size());
  CHECK(d.due_in(upgrade_kill) == 10s);
  // It ignores QUIT: SIGKILL at shutdown_timeout; the pid file is not touched again.
  acts = d.advance(10s);
  CHECK(effects(acts) == strings{"signal_new_master(500, 9)"});
  acts = d.exit(new_master, killed_by(SIGKILL));
  CHECK_FALSE(has(acts, "restore_pid_file"));
  CHECK_FALSE(d.armed(upgrade_kill));
  CHECK_FALSE(d.lifecycle().upgrade());
  // A reload works at once meanwhile (the pid file names this master).
  d.answer_load_config(config());
  CHECK(d.command(command::reload).size() > 0);
  CHECK(d.lifecycle().pending_generation() == 2);
}

TEST_CASE("failure 9: an upgrade descriptor that is one of the listeners is refused",
          "[lifecycle][upgrade][failure9]") {
  CHECK(upgrade_fd_problem(3, {3, 4}).find("one of the inherited listeners") != std::string::npos);
  CHECK(upgrade_fd_problem(4, {3, 4}) != "");
  CHECK(upgrade_fd_problem(5, {3, 4}).empty());
  CHECK(upgrade_fd_problem(5, {}).empty());
}

// ------------------------------------------------------------ the new master's side

TEST_CASE("a new master does not freeze the sockets or say STOPPING while its parent serves",
          "[lifecycle][upgrade]") {
  auto d = serving({new_master, 2, parent});
  SECTION("rolled back: QUIT to the new master") {
    auto acts = d.command(command::quit);
    CHECK(has(acts, "stop_listening(no freeze)"));
    CHECK_FALSE(has(acts, "notify(stopping)"));
  }
  SECTION("on its own after the parent left") {
    d.dispatch(events::parent_master_gone{});
    auto acts = d.command(command::quit);
    CHECK(has(acts, "stop_listening"));
    CHECK(has(acts, "notify(stopping)"));
  }
}

TEST_CASE("a rolled-back manual upgrade: the new master exits after ready - pid file back, no reply",
          "[lifecycle][upgrade]") {
  auto d = upgrading(false);
  d.dispatch(events::new_master_ready{new_master});
  auto acts = d.exit(new_master, exited_with(0));
  CHECK(has(acts, "restore_pid_file"));
  CHECK(has(acts, "reply(0, error, \"the new master 500 exited with code 0 after it was ready\")"));
  CHECK(d.current_phase() == phase::running);
  CHECK(has(d.command(command::upgrade), "rename_pid_file"));
}

TEST_CASE("the new master exiting after the old one handed over changes nothing",
          "[lifecycle][upgrade]") {
  auto d = upgrading(true);
  d.dispatch(events::new_master_ready{new_master});
  auto acts = d.exit(new_master, exited_with(0));
  CHECK_FALSE(has(acts, "restore_pid_file"));
  CHECK(replies(acts).empty());
  CHECK(d.current_phase() == phase::quitting);
  d.exit(1000, exited_with(0));
  d.exit(1001, exited_with(0));
  CHECK(d.exit_code() == 0);
}

TEST_CASE("escalation: a fast stop with a new master being stopped kills it at terminate_timeout",
          "[lifecycle][upgrade]") {
  auto d = upgrading(true);
  d.advance(2s);  // failed: QUIT sent
  auto acts = d.command(command::stop);
  CHECK(has(acts, "signal_new_master(500, 15)"));
  CHECK(d.due_in(escalation_timer) == 5s);
}

// ------------------------------------------------------------ control clients waiting for a reload

TEST_CASE("-s reload clients hear how their reload ended", "[lifecycle][reload][control]") {
  auto d = serving();
  SECTION("the new generation serves") {
    d.answer_load_config(config());
    d.dispatch(events::commanded{command::reload, 5});
    auto acts = d.ready_generation(2);
    REQUIRE(replies(acts).size() == 1);
    CHECK(replies(acts)[0].client == 5);
    CHECK(replies(acts)[0].ok);
    CHECK(replies(acts)[0].text == "generation 2 serves with 2 worker(s)");
  }
  SECTION("the configuration is refused") {
    d.answer_load_config(events::config_loaded{false, {}, "line 3: bad"});
    auto acts = d.dispatch(events::commanded{command::reload, 5});
    CHECK(has(acts, "reply(5, error, \"configuration refused: line 3: bad; generation 1 keeps serving\")"));
  }
  SECTION("the generation is rolled back") {
    d.answer_load_config(config());
    d.dispatch(events::commanded{command::reload, 5});
    auto acts = d.exit(d.pids_of(2).front(), exited_with(3));
    REQUIRE(replies(acts).size() == 1);
    CHECK_FALSE(replies(acts)[0].ok);
    CHECK(replies(acts)[0].text.starts_with("generation 2 rolled back: worker "));
    CHECK(replies(acts)[0].text.ends_with("; generation 1 keeps serving"));
  }
  SECTION("a stop abandons it") {
    d.answer_load_config(config());
    d.dispatch(events::commanded{command::reload, 5});
    auto acts = d.command(command::quit);
    CHECK(has(acts, "reply(5, error, \"reload abandoned: the master is stopping (graceful stop)\")"));
    CHECK(has(d.dispatch(events::commanded{command::reload, 6}),
              "reply(6, error, \"the master is quitting\")"));
  }
  SECTION("WINCH abandons it") {
    d.dispatch(events::commanded{command::reload, 5});  // load_config not answered yet
    CHECK(has(d.command(command::drain_workers),
              "reply(5, error, \"reload abandoned: every worker was drained (WINCH)\")"));
  }
}

TEST_CASE("a reload request during a reload waits for the next one", "[lifecycle][reload][control]") {
  auto d = serving();
  d.dispatch(events::commanded{command::reload, 5});
  d.dispatch(events::commanded{command::reload, 6});  // the file may have changed since 5's read
  auto acts = d.loaded(config());
  acts = d.ready_generation(2);
  REQUIRE(replies(acts).size() == 1);
  CHECK(replies(acts)[0].client == 5);
  CHECK(has(acts, "load_config"));  // the follow-up reload
  acts = d.loaded(config());
  acts = d.ready_generation(3);
  REQUIRE(replies(acts).size() == 1);
  CHECK(replies(acts)[0].client == 6);
  CHECK(replies(acts)[0].text == "generation 3 serves with 2 worker(s)");
}

TEST_CASE("backoffs(): a slot waiting out its backoff and when it tries again", "[lifecycle][control]") {
  auto c = config();
  c.restart.max_restarts = 1;
  c.restart.backoff_initial = 400ms;
  auto d = serving({self}, c);
  d.exit(d.in_slot(0)->pid, exited_with(1));  // the one quick restart
  CHECK(d.lifecycle().backoffs().empty());
  d.after(10ms).exit(d.in_slot(0)->pid, exited_with(1));
  auto b = d.lifecycle().backoffs();
  REQUIRE(b.size() == 1);
  CHECK(b[0].slot == 0);
  CHECK(b[0].generation == 1);
  CHECK(b[0].next_attempt == d.now() + 400ms);
  d.advance(400ms);
  CHECK(d.lifecycle().backoffs().empty());
}

// ------------------------------------------ unix socket files (nginx's rule)

namespace {

// Lets every worker of `d` exit; returns the actions of the last exit.
action_list all_workers_exit(lifecycle_driver& d) {
  action_list last;
  for (pid_t pid : d.pids()) last = d.exit(pid, exited_with(0));
  return last;
}

}  // namespace

TEST_CASE("only the last master holding the listeners removes its unix socket files",
          "[lifecycle][upgrade][unix]") {
  SECTION("a master alone: at a graceful stop, and again as it exits") {
    auto d = serving();
    CHECK(has(d.command(command::quit), "stop_listening"));
    CHECK(has(all_workers_exit(d), "exit(0, remove socket files)"));
  }
  SECTION("a master alone: at a fast stop, as it exits") {
    auto d = serving();
    d.command(command::stop);
    CHECK(has(all_workers_exit(d), "exit(0, remove socket files)"));
  }
  SECTION("the old master of an upgrade hands them over: the new master's files stay") {
    auto d = upgrading(true);
    auto acts = d.dispatch(events::new_master_ready{new_master});
    CHECK(has(acts, "stop_listening(no freeze)"));
    CHECK(has(all_workers_exit(d), "exit(0)"));
  }
  SECTION("a new master rolled back while its parent serves leaves the parent's files") {
    auto d = serving({new_master, 2, parent});
    SECTION("QUIT") { d.command(command::quit); }
    SECTION("TERM") { d.command(command::stop); }
    CHECK(has(all_workers_exit(d), "exit(0)"));
  }
  SECTION("a new master whose parent has left is the last holder") {
    auto d = serving({new_master, 2, parent});
    d.dispatch(events::parent_master_gone{});
    d.command(command::quit);
    CHECK(has(all_workers_exit(d), "exit(0, remove socket files)"));
  }
}
