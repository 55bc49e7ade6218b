#include <procmodel/lifecycle.hpp>

#include "support/catch.hpp"
#include "support/on_failure.hpp"

#include <chrono>
#include <csignal>
#include <functional>
#include <string>
#include <vector>

#include <procmodel/testing/lifecycle_driver.hpp>

using namespace std::chrono_literals;
using namespace procmodel;
using namespace procmodel::testing;

namespace {

// test_config(), but new workers get the default 10 s to be ready.
lifecycle_config config(unsigned workers = 2) {
  lifecycle_config c = test_config(workers);
  c.ready_timeout = lifecycle_config{}.ready_timeout;
  return c;
}

// The actions that do something, rendered; logs and service-manager notices
// left out (the notices have their own test).
std::vector<std::string> effects(const action_list& list) {
  std::vector<std::string> out;
  for (const auto& a : list)
    if (!std::holds_alternative<actions::log>(a) && !std::holds_alternative<actions::notify>(a))
      out.push_back(to_string(a));
  return out;
}

using strings = std::vector<std::string>;

// A driver with `workers` workers started at t = 0 (pids 1000, 1001, ...).
lifecycle_driver started(lifecycle_config c = config()) {
  lifecycle_driver d(c);
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  return d;
}

// Crashes the worker of `slot` quickly until its respawn waits on a timer.
void crash_into_backoff(lifecycle_driver& d, unsigned slot) {
  for (int i = 0; i < 100 && !d.armed(respawn_timer(slot)); ++i) {
    const process_info* p = d.in_slot(slot);
    REQUIRE(p != nullptr);
    d.exit(p->pid, exited_with(1));
  }
  REQUIRE(d.armed(respawn_timer(slot)));
}

}  // namespace

// ---------------------------------------------------------------- start

TEST_CASE("started spawns one worker per slot - generation 1", "[lifecycle]") {
  auto workers = GENERATE(1u, 2u, 4u);
  lifecycle_driver d(config(workers));
  PM_SHOW_ON_FAILURE(d.describe());
  REQUIRE(d.current_phase() == phase::idle);

  auto acts = d.send(events::started{});
  auto spawns = actions_of<actions::spawn>(acts);
  REQUIRE(spawns.size() == workers);
  for (unsigned k = 0; k < workers; ++k) {
    CHECK(spawns[k].slot == k);
    CHECK(spawns[k].generation == 1);
  }
  CHECK(d.current_phase() == phase::running);
  CHECK(d.processes().empty());  // nothing is in the table until it is spawned
  CHECK(d.timers().empty());

  SECTION("a second started does nothing") { CHECK(d.send(events::started{}).empty()); }
}

TEST_CASE("spawned adds a starting row - ready makes it ready", "[lifecycle]") {
  lifecycle_driver d(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  d.at(250ms);
  d.start();
  REQUIRE(d.pids() == std::vector<pid_t>{1000, 1001});
  for (unsigned k = 0; k < 2; ++k) {
    const auto& p = d.processes()[k];
    CHECK(p.slot == k);
    CHECK(p.generation == 1);
    CHECK(p.state == process_state::starting);
    CHECK(p.started == d.now());
    CHECK(p.restarts == 0);
  }

  auto acts = d.at(300ms).ready(1001);
  CHECK(effects(acts).empty());
  CHECK(d.find(1001)->state == process_state::ready);
  CHECK(d.find(1000)->state == process_state::starting);

  SECTION("ready twice changes nothing") {
    CHECK(effects(d.ready(1001)).empty());
    CHECK(d.find(1001)->state == process_state::ready);
  }
  SECTION("ready from an unknown pid is ignored") {
    CHECK(d.ready(4242).empty());
    CHECK(d.processes().size() == 2);
  }
  SECTION("ready from a draining worker leaves it draining") {
    d.command(command::quit);
    d.ready(1000);
    CHECK(d.find(1000)->state == process_state::draining);
  }
}

// ---------------------------------------------------------------- crashes

TEST_CASE("a crash while running respawns the slot at once", "[lifecycle]") {
  auto status = GENERATE(exited_with(1), exited_with(0), killed_by(SIGSEGV), killed_by(SIGABRT, true));
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  d.ready(1000);
  d.ready(1001);

  auto acts = d.at(2s).exit(1000, status);
  CHECK(effects(acts) == strings{"spawn(slot 0, gen 1)"});
  CHECK(logs_with(acts, log_level::warn, "unexpectedly") == 1);
  CHECK(logs_with(acts, log_level::warn, describe_wait_status(status)) == 1);
  CHECK(d.timers().empty());

  const process_info* p = d.in_slot(0);
  REQUIRE(p != nullptr);
  CHECK(p->pid == 1002);
  CHECK(p->state == process_state::starting);
  CHECK(p->restarts == 1);
  CHECK(d.find(1000) == nullptr);
  CHECK(d.find(1001)->state == process_state::ready);  // the other slot is untouched
}

TEST_CASE("restarts are counted per slot", "[lifecycle]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  d.at(1s).exit(1000, exited_with(1));
  d.at(2s).exit(1002, exited_with(1));
  d.at(3s).exit(1001, exited_with(1));
  CHECK(d.in_slot(0)->restarts == 2);
  CHECK(d.in_slot(1)->restarts == 1);
}

TEST_CASE("crash loop: past R quick restarts each respawn waits - doubling to the cap",
          "[lifecycle][backoff]") {
  auto d = started(config(1));  // R = 3, backoff 100 ms .. 1600 ms
  auto crash = [&] { return d.exit(d.in_slot(0)->pid, exited_with(1)); };

  // The first R crashes respawn at once.
  for (int i = 0; i < 3; ++i) {
    auto acts = crash();
    INFO("quick crash " << i + 1);
    CHECK(effects(acts) == strings{"spawn(slot 0, gen 1)"});
  }

  // The (R+1)th and later wait: 100, 200, 400, 800, 1600, 1600, 1600.
  for (long expected : {100, 200, 400, 800, 1600, 1600, 1600}) {
    INFO("backoff " << expected << " ms");
    auto acts = crash();
    REQUIRE(effects(acts) ==
            strings{fmt::format("arm_timer(respawn[0], {} ms)", expected)});
    CHECK(logs_with(acts, log_level::warn, fmt::format("next respawn in {} ms", expected)) == 1);
    CHECK(d.in_slot(0) == nullptr);

    // No spawn before the timer fires, whatever else happens meanwhile.
    CHECK(count_of<actions::spawn>(d.advance(milliseconds(expected - 1))) == 0);
    CHECK(effects(d.exit(4242, exited_with(1))).empty());
    CHECK(d.ready(4242).empty());

    auto fired = d.advance(1ms);
    CHECK(effects(fired) == strings{"spawn(slot 0, gen 1)"});
    REQUIRE(d.in_slot(0) != nullptr);
  }
}

TEST_CASE("crash at start for a simulated minute is no fork storm", "[lifecycle][backoff]") {
  // Defaults: 5 quick restarts per 10 s, then 100 ms doubling to 10 s.
  lifecycle_config c;
  c.workers = 1;
  lifecycle_driver d(c);
  PM_SHOW_ON_FAILURE(d.describe());
  std::vector<milliseconds> spawned_at;
  auto note = [&](const action_list& acts) {
    for (std::size_t i = 0; i < count_of<actions::spawn>(acts); ++i) spawned_at.push_back(d.elapsed());
  };
  note(d.start());
  // Every worker dies 1 ms after it is spawned.
  while (d.elapsed() < 60s) {
    if (const process_info* p = d.in_slot(0)) {
      d.advance(1ms);
      note(d.exit(p->pid, exited_with(1)));
    } else {
      REQUIRE(d.armed(respawn_timer(0)));
      note(d.advance(*d.due_in(respawn_timer(0))));
    }
  }
  REQUIRE(spawned_at.size() == count_of<actions::spawn>(d.history()));
  INFO("spawns in a minute: " << spawned_at.size());
  // Without backoff: 60,000. With it: the start, R quick restarts, the
  // doubling from 100 ms up to 10 s (7 waits, 12.7 s), then one every 10 s —
  // never another burst of quick restarts while the slot keeps crashing.
  const std::size_t r = c.restart.max_restarts;
  CHECK(spawned_at.size() <= 1 + r + 7 + 5);
  CHECK(spawned_at.size() >= r + 3);  // it does keep trying
  // Within any one period: the start, R quick restarts and a few that waited.
  std::size_t most = 0;
  for (std::size_t i = 0; i < spawned_at.size(); ++i) {
    std::size_t j = i;
    while (j < spawned_at.size() && spawned_at[j] - spawned_at[i] < c.restart.period) ++j;
    most = std::max(most, j - i);
  }
  INFO("most spawns within one period: " << most);
  CHECK(most <= 2 * (r + 1));
}

TEST_CASE("a worker that stayed up a whole period resets its slot's backoff",
          "[lifecycle][backoff]") {
  auto d = started(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  crash_into_backoff(d, 0);      // 100 ms
  d.advance(100ms);
  d.exit(d.in_slot(0)->pid, exited_with(1));
  REQUIRE(d.due_in(respawn_timer(0)) == 200ms);
  d.advance(200ms);
  REQUIRE(d.in_slot(0) != nullptr);

  SECTION("up for the period: forgiven, R quick restarts again, then 100 ms") {
    d.after(10s);
    for (int i = 0; i < 3; ++i)
      CHECK(effects(d.exit(d.in_slot(0)->pid, exited_with(1))) == strings{"spawn(slot 0, gen 1)"});
    CHECK(effects(d.exit(d.in_slot(0)->pid, exited_with(1))) ==
          strings{"arm_timer(respawn[0], 100 ms)"});
  }
  SECTION("up for less than the period: the backoff goes on from 400 ms") {
    d.after(9999ms);
    // The old quick restarts have aged out of the window, but a slot that is
    // backing off gets no quick restarts again until a worker stays up.
    CHECK(effects(d.exit(d.in_slot(0)->pid, exited_with(1))) ==
          strings{"arm_timer(respawn[0], 400 ms)"});
    d.advance(400ms);
    REQUIRE(d.in_slot(0) != nullptr);
    CHECK(effects(d.exit(d.in_slot(0)->pid, exited_with(1))) ==
          strings{"arm_timer(respawn[0], 800 ms)"});
  }
}

TEST_CASE("a spawn failure is logged once, as an error, with what failed", "[lifecycle][backoff]") {
  lifecycle_driver d(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  d.fail_spawns(EMFILE, "socketpair: Too many open files");
  auto acts = d.start();
  CHECK(logs_with(acts, log_level::error, "") == 1);
  CHECK(logs_with(acts, log_level::error,
                  "cannot start a worker for slot 0: socketpair: Too many open files") == 1);
  // The supervisor passes its exception's text along and logs nothing itself
  // (supervisor.hpp, failed(spawn)): the one line is the lifecycle's.
}

TEST_CASE("spawn_failed schedules a retry with backoff", "[lifecycle][backoff]") {
  lifecycle_driver d(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  d.fail_spawns(EAGAIN);
  auto acts = d.start();
  CHECK(effects(acts) == strings{"serving(gen 1, 2 workers)", "spawn(slot 0, gen 1)",
                                 "spawn(slot 1, gen 1)", "arm_timer(respawn[0], 100 ms)",
                                 "arm_timer(respawn[1], 100 ms)"});
  CHECK(logs_with(acts, log_level::error, "cannot start a worker for slot 0") == 1);
  CHECK(logs_with(acts, log_level::error, std::system_category().message(EAGAIN)) == 2);
  CHECK(d.processes().empty());

  // Failing again doubles the wait.
  acts = d.advance(100ms);  // each timer fires on its own
  CHECK(effects(acts) == strings{"spawn(slot 0, gen 1)", "arm_timer(respawn[0], 200 ms)",
                                 "spawn(slot 1, gen 1)", "arm_timer(respawn[1], 200 ms)"});

  // Once fork works again, the retry takes.
  d.fail_spawns(0);
  CHECK(count_of<actions::spawn>(d.advance(199ms)) == 0);
  acts = d.advance(1ms);
  CHECK(effects(acts) == strings{"spawn(slot 0, gen 1)", "spawn(slot 1, gen 1)"});
  CHECK(d.pids() == std::vector<pid_t>{1000, 1001});
  CHECK(d.timers().empty());
}

TEST_CASE("spawn_failed outside running - or for a removed slot - schedules nothing",
          "[lifecycle][backoff]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  SECTION("during a fast stop") {
    d.command(command::stop);
    CHECK(effects(d.send(events::spawn_failed{0, 1, EAGAIN})).empty());
  }
  SECTION("during a graceful stop") {
    d.command(command::quit);
    CHECK(effects(d.send(events::spawn_failed{0, 1, EAGAIN})).empty());
  }
  SECTION("for a slot beyond the worker count") {
    CHECK(effects(d.send(events::spawn_failed{7, 1, EAGAIN})).empty());
  }
  CHECK_FALSE(d.armed(respawn_timer(0)));
}

// ---------------------------------------------------------------- fast stop

TEST_CASE("stop: terminate every worker - escalate after terminate_timeout - exit last",
          "[lifecycle][stop]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  d.ready(1000);

  auto acts = d.at(1s).command(command::stop);
  CHECK(effects(acts) == strings{"send(1000, terminate, 0)", "send(1001, terminate, 0)",
                                 "arm_timer(kill_escalation[0], 5000 ms)"});
  CHECK(d.current_phase() == phase::stopping);
  for (const auto& p : d.processes()) CHECK(p.state == process_state::terminating);

  SECTION("everyone exits in time") {
    CHECK(effects(d.at(2s).exit(1000, exited_with(0))).empty());
    CHECK(d.current_phase() == phase::stopping);
    acts = d.at(3s).exit(1001, killed_by(SIGTERM));
    CHECK(effects(acts) == strings{"cancel_timer(kill_escalation[0])", "exit(0, remove socket files)"});
    CHECK(d.current_phase() == phase::exited);
    CHECK(d.exit_code() == 0);
    CHECK(d.timers().empty());
  }
  SECTION("a survivor is killed when the escalation fires") {
    d.at(2s).exit(1000, exited_with(0));
    CHECK(d.advance_to(5999ms).empty());
    acts = d.advance(1ms);
    CHECK(effects(acts) == strings{"kill(1001, 9)"});
    CHECK(logs_with(acts, log_level::warn, "did not exit in time") == 1);
    CHECK_FALSE(d.exit_code());
    CHECK(effects(d.exit(1001, killed_by(SIGKILL))) ==
          strings{"cancel_timer(kill_escalation[0])", "exit(0, remove socket files)"});
  }
}

TEST_CASE("stop while no worker is alive exits at once", "[lifecycle][stop]") {
  auto d = started(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  crash_into_backoff(d, 0);
  auto acts = d.command(command::stop);
  CHECK(index_of<actions::exit>(acts) < acts.size());
  CHECK(count_of<actions::spawn>(acts) == 0);
  CHECK(d.current_phase() == phase::exited);
  CHECK(d.timers().empty());  // the respawn and any escalation are cancelled
}

// ---------------------------------------------------------------- graceful stop

TEST_CASE("quit: stop listening first - drain every worker - escalate after shutdown_timeout",
          "[lifecycle][quit]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  d.ready(1000);
  d.ready(1001);

  auto acts = d.at(1s).command(command::quit);
  CHECK(effects(acts) == strings{"stop_listening", "send(1000, quit, 10000)",
                                 "send(1001, quit, 10000)",
                                 "arm_timer(kill_escalation[0], 10000 ms)"});
  CHECK(index_of<actions::stop_listening>(acts) < index_of<actions::send>(acts));
  CHECK(d.current_phase() == phase::quitting);
  for (const auto& p : d.processes()) CHECK(p.state == process_state::draining);

  SECTION("workers leaving, however they leave, are not respawned; the master exits last") {
    auto status = GENERATE(exited_with(0), exited_with(3), killed_by(SIGSEGV), killed_by(SIGKILL));
    CHECK(effects(d.at(2s).exit(1000, status)).empty());
    CHECK(d.current_phase() == phase::quitting);
    acts = d.at(3s).exit(1001, status);
    CHECK(effects(acts) == strings{"cancel_timer(kill_escalation[0])", "exit(0, remove socket files)"});
    CHECK(count_of<actions::spawn>(d.history()) == 2);  // the two of the start
    CHECK(d.current_phase() == phase::exited);
  }
  SECTION("drainers still there at the deadline are killed") {
    d.at(2s).exit(1001, exited_with(0));
    CHECK(d.advance_to(10999ms).empty());
    CHECK(effects(d.advance(1ms)) == strings{"kill(1000, 9)"});
    CHECK(d.find(1000)->state == process_state::terminating);
    CHECK(effects(d.exit(1000, killed_by(SIGKILL))) ==
          strings{"cancel_timer(kill_escalation[0])", "exit(0, remove socket files)"});
  }
}

TEST_CASE("quit cancels pending respawns", "[lifecycle][quit]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  crash_into_backoff(d, 0);
  auto acts = d.command(command::quit);
  CHECK(effects(acts) == strings{"stop_listening", "cancel_timer(respawn[0])",
                                 "send(1001, quit, 10000)",
                                 "arm_timer(kill_escalation[0], 10000 ms)"});
  CHECK_FALSE(d.armed(respawn_timer(0)));
}

TEST_CASE("commands before started: stop and quit exit at once", "[lifecycle]") {
  auto c = GENERATE(command::stop, command::quit);
  lifecycle_driver d(config());
  PM_SHOW_ON_FAILURE(d.describe());
  CHECK(effects(d.command(c)) == strings{"exit(0, remove socket files)"});
  CHECK(d.current_phase() == phase::exited);
  CHECK(d.send(events::started{}).empty());  // and nothing starts after that
  CHECK(effects(d.command(c)).empty());
}

// Signals arriving while a stop is under way.
TEST_CASE("signals during a shutdown", "[lifecycle][quit][stop]") {
  struct row {
    const char* name;
    command first;
    milliseconds terminate_timeout;
    milliseconds shutdown_timeout;
    command second;  // at t = 1 s
    strings expected;
    phase after;
    milliseconds escalation_due;  // from t = 1 s
  };
  auto r = GENERATE(values<row>({
      {"QUIT during QUIT is ignored", command::quit, 5s, 10s, command::quit, {},
       phase::quitting, 9s},
      {"TERM during QUIT terminates and arms a sooner escalation", command::quit, 5s, 10s,
       command::stop,
       {"send(1000, terminate, 0)", "send(1001, terminate, 0)",
        "arm_timer(kill_escalation[0], 5000 ms)"},
       phase::stopping, 5s},
      {"TERM during QUIT keeps a sooner escalation", command::quit, 5s, 2s, command::stop,
       {"send(1000, terminate, 0)", "send(1001, terminate, 0)"}, phase::stopping, 1s},
      {"QUIT during TERM is ignored", command::stop, 5s, 10s, command::quit, {},
       phase::stopping, 4s},
      {"TERM during TERM is ignored", command::stop, 5s, 10s, command::stop, {},
       phase::stopping, 4s},
      {"TTIN during QUIT is ignored", command::quit, 5s, 10s, command::add_worker, {},
       phase::quitting, 9s},
      {"TTOU during TERM is ignored", command::stop, 5s, 10s, command::remove_worker, {},
       phase::stopping, 4s},
  }));
  INFO(r.name);
  auto c = config();
  c.terminate_timeout = r.terminate_timeout;
  c.shutdown_timeout = r.shutdown_timeout;
  auto d = started(c);
  PM_SHOW_ON_FAILURE(d.describe());
  d.command(r.first);
  auto acts = d.at(1s).command(r.second);
  CHECK(effects(acts) == r.expected);
  CHECK(d.current_phase() == r.after);
  CHECK(d.due_in(escalation_timer) == r.escalation_due);
  CHECK(d.lifecycle().workers() == 2);
}

TEST_CASE("a worker spawned while a stop is under way leaves at once", "[lifecycle]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  SECTION("fast stop") {
    d.command(command::stop);
    CHECK(effects(d.send(events::spawned{0, 1, 2000})) == strings{"send(2000, terminate, 0)"});
    CHECK(d.find(2000)->state == process_state::terminating);
  }
  SECTION("graceful stop") {
    d.command(command::quit);
    CHECK(effects(d.send(events::spawned{0, 1, 2000})) == strings{"send(2000, quit, 10000)"});
    CHECK(d.find(2000)->state == process_state::draining);
  }
  // The master waits for it too.
  d.exit(1000, 0);
  d.exit(1001, 0);
  CHECK_FALSE(d.exit_code());
  CHECK(d.exit(2000, 0).size() > 0);
  CHECK(d.exit_code() == 0);
}

// ---------------------------------------------------------------- reopen

TEST_CASE("reopen: the master's logs - then every worker not terminating", "[lifecycle]") {
  auto d = started(config(3));
  PM_SHOW_ON_FAILURE(d.describe());
  SECTION("running") {
    CHECK(effects(d.command(command::reopen)) ==
          strings{"reopen_logs", "send(1000, reopen, 0)", "send(1001, reopen, 0)",
                  "send(1002, reopen, 0)"});
  }
  SECTION("a draining worker still writes logs") {
    d.command(command::remove_worker);  // slot 2 drains
    CHECK(effects(d.command(command::reopen)) ==
          strings{"reopen_logs", "send(1000, reopen, 0)", "send(1001, reopen, 0)",
                  "send(1002, reopen, 0)"});
  }
  SECTION("terminating workers are left alone") {
    d.command(command::stop);
    CHECK(effects(d.command(command::reopen)) == strings{"reopen_logs"});
  }
  CHECK(d.processes().size() == 3);
}

// ---------------------------------------------------------------- TTIN / TTOU

TEST_CASE("add_worker spawns one more slot", "[lifecycle][resize]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  auto acts = d.command(command::add_worker);
  CHECK(effects(acts) == strings{"serving(gen 1, 3 workers)", "spawn(slot 2, gen 1)"});
  CHECK(d.lifecycle().workers() == 3);
  REQUIRE(d.in_slot(2) != nullptr);
  CHECK(d.in_slot(2)->pid == 1002);

  // The new slot is looked after like the others.
  CHECK(effects(d.exit(1002, exited_with(1))) == strings{"spawn(slot 2, gen 1)"});
}

TEST_CASE("remove_worker drains the last slot and never respawns it", "[lifecycle][resize]") {
  auto d = started(config(3));
  PM_SHOW_ON_FAILURE(d.describe());
  auto acts = d.command(command::remove_worker);
  CHECK(effects(acts) == strings{"serving(gen 1, 2 workers)", "send(1002, quit, 10000)",
                                 "arm_timer(retire_deadline[1002], 10000 ms)"});
  CHECK(d.lifecycle().workers() == 2);
  CHECK(d.find(1002)->state == process_state::draining);
  CHECK(d.in_slot(2) == nullptr);

  auto status = GENERATE(exited_with(0), killed_by(SIGSEGV));
  CHECK(effects(d.exit(1002, status)) == strings{"cancel_timer(retire_deadline[1002])"});
  CHECK(d.current_phase() == phase::running);
  CHECK(d.pids() == std::vector<pid_t>{1000, 1001});

  SECTION("and add_worker brings the slot back with a fresh record") {
    acts = d.command(command::add_worker);
    CHECK(effects(acts) == strings{"serving(gen 1, 3 workers)", "spawn(slot 2, gen 1)"});
    CHECK(d.in_slot(2)->restarts == 0);
  }
}

TEST_CASE("remove_worker then add_worker before the drained worker leaves", "[lifecycle][resize]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  d.command(command::remove_worker);  // 1001 drains
  auto acts = d.command(command::add_worker);
  CHECK(effects(acts) == strings{"serving(gen 1, 2 workers)", "spawn(slot 1, gen 1)"});
  CHECK(d.in_slot(1)->pid == 1002);
  // The drained one leaving does not disturb its successor.
  CHECK(effects(d.exit(1001, exited_with(0))) == strings{"cancel_timer(retire_deadline[1001])"});
  CHECK(d.in_slot(1)->pid == 1002);
}

TEST_CASE("remove_worker refuses to go below one worker", "[lifecycle][resize]") {
  auto d = started(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  auto acts = d.command(command::remove_worker);
  CHECK(effects(acts).empty());
  CHECK(logs_with(acts, log_level::warn, "refused") == 1);
  CHECK(d.lifecycle().workers() == 1);
  CHECK(d.find(1000)->state == process_state::starting);
}

TEST_CASE("remove_worker cancels a pending respawn of the removed slot", "[lifecycle][resize]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  crash_into_backoff(d, 1);
  auto acts = d.command(command::remove_worker);
  CHECK(effects(acts) == strings{"serving(gen 1, 1 workers)", "cancel_timer(respawn[1])"});
  CHECK_FALSE(d.armed(respawn_timer(1)));
  // Even if the loop delivered the timer anyway, nothing is spawned.
  CHECK(effects(d.send(events::timer_fired{respawn_timer(1)})).empty());
  CHECK(d.in_slot(1) == nullptr);
}

TEST_CASE("add_worker and remove_worker before start do nothing", "[lifecycle][resize]") {
  auto c = GENERATE(command::add_worker, command::remove_worker);
  lifecycle_driver d(config());
  PM_SHOW_ON_FAILURE(d.describe());
  CHECK(effects(d.command(c)).empty());
  CHECK(d.lifecycle().workers() == 2);
  CHECK(d.current_phase() == phase::idle);
}

// ---------------------------------------------------------------- stray events

TEST_CASE("a respawn timer that fires after a stop does nothing", "[lifecycle]") {
  auto c = GENERATE(command::stop, command::quit);
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  crash_into_backoff(d, 0);
  auto acts = d.command(c);
  CHECK(count_of<actions::cancel_timer>(acts) >= 1);
  CHECK_FALSE(d.armed(respawn_timer(0)));
  CHECK(effects(d.send(events::timer_fired{respawn_timer(0)})).empty());
  CHECK(d.in_slot(0) == nullptr);
}

TEST_CASE("timers for unknown slots are ignored", "[lifecycle]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  CHECK(d.send(events::timer_fired{respawn_timer(99)}).empty());
  // A respawn timer for a live slot spawns nothing either.
  CHECK(effects(d.send(events::timer_fired{respawn_timer(0)})).empty());
  CHECK(d.processes().size() == 2);
}

TEST_CASE("the exit of an unknown pid is only logged, at debug level", "[lifecycle]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  auto before = d.processes().size();
  auto acts = d.exit(4242, exited_with(1));
  CHECK(effects(acts).empty());
  CHECK(acts.size() == 1);
  CHECK(logs_with(acts, log_level::debug, "reaped process 4242, not a worker of this master") == 1);
  CHECK(d.processes().size() == before);
  d.command(command::quit);
  CHECK(effects(d.exit(4242, exited_with(1))).empty());
  CHECK(d.current_phase() == phase::quitting);
}

TEST_CASE("upgrade: exec_upgrade once - a second is refused until the first finishes",
          "[lifecycle][upgrade]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  d.ready(1000);
  auto before = d.processes();
  auto acts = d.command(command::upgrade);
  CHECK(effects(acts) == strings{"rename_pid_file", "exec_upgrade(gen 2)"});
  // The workers are untouched: the old master serves on while the new one starts.
  REQUIRE(d.processes().size() == before.size());
  for (std::size_t i = 0; i < before.size(); ++i) CHECK(d.processes()[i].state == before[i].state);

  acts = d.command(command::upgrade);
  CHECK(effects(acts) == strings{"reply(0, error, \"another upgrade is under way\")"});
  CHECK(logs_with(acts, log_level::warn, "another upgrade is under way") == 1);

  d.dispatch(events::new_master_failed{"cannot execute /bin/x"});
  CHECK(effects(d.command(command::upgrade)) == strings{"rename_pid_file", "exec_upgrade(gen 2)"});
}

TEST_CASE("upgrade before start or during a stop is refused", "[lifecycle][upgrade]") {
  lifecycle_driver idle(config());
  CHECK(effects(idle.command(command::upgrade)) ==
        strings{"reply(0, error, \"the master is idle\")"});
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  d.command(command::quit);
  CHECK(effects(d.command(command::upgrade)) ==
        strings{"reply(0, error, \"the master is quitting\")"});
}

TEST_CASE("notices: ready once every first worker is ready - stopping - reloading then ready",
          "[lifecycle][notify]") {
  auto d = started();
  PM_SHOW_ON_FAILURE(d.describe());
  CHECK(notices_of(d.ready(1000)).empty());  // slot 1 is not ready yet
  CHECK(notices_of(d.ready(1001)) == strings{"notify(ready)"});
  // A respawned worker being ready is no news.
  d.exit(1000, exited_with(1));
  CHECK(notices_of(d.ready(d.in_slot(0)->pid)).empty());

  SECTION("reload refused: reloading, then ready again") {
    CHECK(notices_of(d.command(command::reload)) == strings{"notify(reloading)"});
    CHECK(notices_of(d.refused("bad config")) == strings{"notify(ready)"});
  }
  SECTION("quit and stop: stopping") {
    auto c = GENERATE(command::quit, command::stop);
    CHECK(notices_of(d.command(c)) == strings{"notify(stopping)"});
  }
}

// ---------------------------------------------------------------- helpers

TEST_CASE("describe_wait_status", "[lifecycle]") {
  CHECK(describe_wait_status(exited_with(0)) == "exited with code 0");
  CHECK(describe_wait_status(exited_with(3)) == "exited with code 3");
  CHECK(describe_wait_status(killed_by(SIGKILL)).starts_with("killed by signal 9 ("));
  CHECK(describe_wait_status(killed_by(SIGSEGV, true)).ends_with(", core dumped"));
}

TEST_CASE("phase and process_state names", "[lifecycle]") {
  CHECK(to_string(phase::idle) == "idle");
  CHECK(to_string(phase::running) == "running");
  CHECK(to_string(phase::quitting) == "quitting");
  CHECK(to_string(phase::stopping) == "stopping");
  CHECK(to_string(phase::exited) == "exited");
  CHECK(to_string(process_state::starting) == "starting");
  CHECK(to_string(process_state::ready) == "ready");
  CHECK(to_string(process_state::draining) == "draining");
  CHECK(to_string(process_state::terminating) == "terminating");
}

TEST_CASE("nginx_lifecycle satisfies the Lifecycle contract", "[lifecycle]") {
  STATIC_REQUIRE(detail::check_lifecycle_policy<nginx_lifecycle>());
}
