#include <procmodel/lifecycle.hpp>
#include <procmodel/testing/lifecycle_driver.hpp>
#include "support/catch.hpp"
#include "support/on_failure.hpp"

// Reload (HUP) into a new generation: readiness gating, promotion, rollback,
// coalesced HUPs, the draining-generation cap, retire deadlines, WINCH, and
// how reloads meet stops, crashes and TTIN/TTOU.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using namespace procmodel;
using namespace procmodel::testing;

namespace {

using strings = std::vector<std::string>;
using pids = std::vector<pid_t>;


// R = 3 quick restarts per 10 s, then 100 ms doubling to 1600 ms; new
// workers must be ready within 3 s; drains get 10 s, terminates 5 s.
lifecycle_config config(unsigned workers = 2) { return test_config(workers); }

// The actions that do something to processes, timers and listeners,
// rendered; logs and service-manager notices (tested elsewhere) left out.
strings effects(const action_list& list) {
  strings out;
  for (const auto& a : list)
    if (!std::holds_alternative<actions::log>(a) && !std::holds_alternative<actions::notify>(a))
      out.push_back(to_string(a));
  return out;
}

// Actions in `list` aimed at `pid`: sends, kills, its retire timer.
std::size_t touching(const action_list& list, pid_t pid) {
  std::size_t n = 0;
  for (const auto& s : actions_of<actions::send>(list)) n += s.pid == pid ? 1 : 0;
  for (const auto& k : actions_of<actions::kill>(list)) n += k.pid == pid ? 1 : 0;
  for (const auto& t : actions_of<actions::arm_timer>(list)) n += t.id == retire_timer(pid) ? 1 : 0;
  return n;
}

// The generations `list` spawns into, in order.
std::vector<std::uint64_t> spawned_generations(const action_list& list) {
  std::vector<std::uint64_t> out;
  for (const auto& s : actions_of<actions::spawn>(list)) out.push_back(s.generation);
  return out;
}

// A driver with `c.workers` workers of generation 1 started at t = 0 and
// ready (pids 1000, 1001, ...).
lifecycle_driver serving(lifecycle_config c = config()) {
  lifecycle_driver d(c);
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  d.ready_generation(1);
  REQUIRE(d.processes().size() == c.workers);
  return d;
}

// HUP, then the configuration `c` loads: returns the actions of the load.
action_list reload_to(lifecycle_driver& d, const lifecycle_config& c) {
  auto acts = d.command(command::reload);
  REQUIRE(effects(acts) == strings{"load_config"});
  return d.loaded(c);
}

// A whole reload: HUP, `c` loads, every new worker reports ready. Returns the
// actions of the promotion (the last ready).
action_list reload_and_promote(lifecycle_driver& d, const lifecycle_config& c) {
  reload_to(d, c);
  auto g = d.lifecycle().pending_generation();
  REQUIRE(g.has_value());
  auto acts = d.ready_generation(*g);
  REQUIRE(d.lifecycle().generation() == *g);
  return acts;
}

// The starting or ready worker of `slot` in generation `g`, or null.
const process_info* in_slot_of(const lifecycle_driver& d, unsigned slot, std::uint64_t g) {
  for (const auto& p : d.processes())
    if (p.slot == slot && p.generation == g &&
        (p.state == process_state::starting || p.state == process_state::ready))
      return &p;
  return nullptr;
}

// Crashes the generation-`g` worker of `slot` quickly until its respawn waits
// on a timer.
void crash_into_backoff(lifecycle_driver& d, unsigned slot, std::uint64_t g = 1) {
  for (int i = 0; i < 100 && !d.armed(respawn_timer(slot)); ++i) {
    const process_info* p = in_slot_of(d, slot, g);
    REQUIRE(p != nullptr);
    d.exit(p->pid, exited_with(1));
  }
  REQUIRE(d.armed(respawn_timer(slot)));
}

// Every process of generation `g` is in state `s`.
bool all_in(const lifecycle_driver& d, std::uint64_t g, process_state s) {
  return std::all_of(d.processes().begin(), d.processes().end(), [&](const process_info& p) {
    return p.generation != g || p.state == s;
  });
}

}  // namespace

// ---------------------------------------------------------------- loading

TEST_CASE("reload reads the configuration first - a refused one changes nothing",
          "[lifecycle][reload]") {
  auto d = serving();
  PM_SHOW_ON_FAILURE(d.describe());
  auto acts = d.at(1s).command(command::reload);
  CHECK(effects(acts) == strings{"load_config"});
  CHECK(logs_with(acts, log_level::notice, "reading the configuration") == 1);
  CHECK(d.lifecycle().generation() == 1);
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK(d.timers().empty());

  SECTION("a load error is logged - nothing is spawned - generation 1 keeps serving") {
    acts = d.at(2s).refused("unknown directive \"wokers\" at line 3");
    CHECK(effects(acts).empty());
    CHECK(logs_with(acts, log_level::error, "unknown directive \"wokers\" at line 3") == 1);
    CHECK(logs_with(acts, log_level::error, "refused") == 1);
  }
  SECTION("a configuration with 0 workers is refused too") {
    acts = d.at(2s).loaded(config(0));
    CHECK(effects(acts).empty());
    CHECK(logs_with(acts, log_level::error, "0 workers") == 1);
  }
  CHECK(count_of<actions::spawn>(d.history()) == 2);  // the two of the start
  CHECK(d.lifecycle().generation() == 1);
  CHECK(d.lifecycle().workers() == 2);
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK(d.pids() == pids{1000, 1001});
  CHECK(all_in(d, 1, process_state::ready));
  CHECK(d.timers().empty());
  CHECK(touching(d.history(), 1000) + touching(d.history(), 1001) == 0);

  // The refusal does not block the next HUP.
  CHECK(effects(d.command(command::reload)) == strings{"load_config"});
  CHECK(effects(d.loaded(config(2))) == strings{"arm_timer(ready_deadline[2], 3000 ms)",
                                                "spawn(slot 0, gen 2)", "spawn(slot 1, gen 2)"});
}

TEST_CASE("a config_loaded nobody asked for is ignored", "[lifecycle][reload]") {
  auto d = serving();
  PM_SHOW_ON_FAILURE(d.describe());
  CHECK(d.loaded(config(3)).empty());
  CHECK(d.refused("nope").empty());
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK(d.lifecycle().workers() == 2);
  // Answering the same load twice starts one generation only.
  d.command(command::reload);
  CHECK(count_of<actions::spawn>(d.loaded(config(2))) == 2);
  CHECK(d.loaded(config(2)).empty());
  CHECK(d.lifecycle().pending_generation() == 2u);
}

// ---------------------------------------------------------------- readiness gating

TEST_CASE("a loaded configuration spawns the next generation under a ready deadline",
          "[lifecycle][reload]") {
  auto workers = GENERATE(1u, 2u, 3u);
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  auto next = config(workers);
  next.ready_timeout = 4s;  // the new configuration's deadline applies
  d.at(1s).command(command::reload);
  auto acts = d.at(1500ms).loaded(next);

  strings expected{"arm_timer(ready_deadline[2], 4000 ms)"};
  for (unsigned k = 0; k < workers; ++k) expected.push_back(fmt::format("spawn(slot {}, gen 2)", k));
  CHECK(effects(acts) == expected);
  CHECK(logs_with(acts, log_level::notice, "starting generation 2") == 1);
  CHECK(d.due_in(ready_timer(2)) == 4s);
  CHECK(d.lifecycle().pending_generation() == 2u);
  CHECK(d.lifecycle().generation() == 1);
  CHECK(d.lifecycle().workers() == 2);

  REQUIRE(d.pids_of(2).size() == workers);
  for (pid_t pid : d.pids_of(2)) {
    CHECK(d.find(pid)->state == process_state::starting);
    CHECK(d.find(pid)->restarts == 0);
  }
  // The old generation is untouched: still ready, nothing sent.
  CHECK(d.pids_of(1) == pids{1000, 1001});
  CHECK(all_in(d, 1, process_state::ready));
  CHECK(touching(d.history(), 1000) + touching(d.history(), 1001) == 0);
  CHECK(count_of<actions::serving>(d.history()) == 1);  // the start's
}

TEST_CASE("old workers are retired only once every new slot is ready", "[lifecycle][reload]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  d.at(1s);
  reload_to(d, config(3));
  REQUIRE(d.pids_of(2) == pids{1002, 1003, 1004});

  // One new worker ready - even twice - retires nothing.
  CHECK(effects(d.at(1100ms).ready(1003)).empty());
  CHECK(effects(d.ready(1003)).empty());
  CHECK(effects(d.at(1200ms).ready(1002)).empty());
  CHECK(d.lifecycle().generation() == 1);
  CHECK(d.lifecycle().pending_generation() == 2u);
  CHECK(all_in(d, 1, process_state::ready));
  // A ready from an old worker does not stand in for the missing slot.
  CHECK(effects(d.ready(1000)).empty());
  CHECK(d.lifecycle().generation() == 1);

  // The last slot ready: promotion.
  auto acts = d.at(1300ms).ready(1004);
  CHECK(effects(acts) == strings{"cancel_timer(ready_deadline[2])", "serving(gen 2, 3 workers)",
                                 "send(1000, quit, 10000)",
                                 "arm_timer(retire_deadline[1000], 10000 ms)",
                                 "send(1001, quit, 10000)",
                                 "arm_timer(retire_deadline[1001], 10000 ms)"});
  CHECK(logs_with(acts, log_level::notice, "generation 2 serves with 3 worker(s) after 300 ms") ==
        1);
  CHECK(d.lifecycle().generation() == 2);
  CHECK(d.lifecycle().workers() == 3);
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK(all_in(d, 1, process_state::draining));
  CHECK(all_in(d, 2, process_state::ready));
  CHECK_FALSE(d.armed(ready_timer(2)));
  CHECK(d.armed(retire_timer(1000)));
  CHECK(d.armed(retire_timer(1001)));
  CHECK(d.timers().size() == 2);

  // The old ones leaving respawns nothing; the master goes on.
  CHECK(effects(d.exit(1000, exited_with(0))) == strings{"cancel_timer(retire_deadline[1000])"});
  CHECK(effects(d.exit(1001, killed_by(SIGSEGV))) ==
        strings{"cancel_timer(retire_deadline[1001])"});
  CHECK(d.pids() == pids{1002, 1003, 1004});
  CHECK(d.current_phase() == phase::running);
  // A stale ready deadline of the promoted generation does nothing.
  CHECK(effects(d.send(events::timer_fired{ready_timer(2)})).empty());
  CHECK(d.lifecycle().generation() == 2);
}

TEST_CASE("a reload changes the worker count", "[lifecycle][reload]") {
  struct row {
    unsigned before;
    unsigned after;
  };
  auto r = GENERATE(values<row>({{2, 3}, {3, 1}, {1, 4}}));
  INFO(r.before << " -> " << r.after);
  auto d = serving(config(r.before));
  PM_SHOW_ON_FAILURE(d.describe());
  auto acts = d.command(command::reload);
  acts = d.loaded(config(r.after));
  auto spawns = actions_of<actions::spawn>(acts);
  REQUIRE(spawns.size() == r.after);
  for (unsigned k = 0; k < r.after; ++k) {
    CHECK(spawns[k].slot == k);
    CHECK(spawns[k].generation == 2);
  }

  acts = d.ready_generation(2);
  CHECK(actions_of<actions::serving>(acts).size() == 1);
  CHECK(first_of<actions::serving>(acts)->generation == 2);
  CHECK(first_of<actions::serving>(acts)->workers == r.after);
  CHECK(sends_of(acts, worker_command::quit).size() == r.before);
  for (pid_t pid : d.pids_of(1)) {
    CHECK(touching(acts, pid) == 2);  // quit and its retire deadline
    CHECK(d.find(pid)->state == process_state::draining);
  }
  CHECK(d.lifecycle().workers() == r.after);
  CHECK(d.lifecycle().config().workers == r.after);

  // The old ones leave; the new slots are what is looked after.
  for (pid_t pid : d.pids_of(1))
    CHECK(count_of<actions::spawn>(d.exit(pid, exited_with(0))) == 0);
  CHECK(d.processes().size() == r.after);
  const unsigned last = r.after - 1;
  CHECK(effects(d.exit(d.in_slot(last)->pid, exited_with(1))) ==
        strings{fmt::format("spawn(slot {}, gen 2)", last)});
  // A slot beyond the new count is gone for good.
  CHECK(effects(d.send(events::timer_fired{respawn_timer(r.after)})).empty());
  CHECK(d.processes().size() == r.after);
}

TEST_CASE("a reload with a new shutdown_timeout tells the old workers the new value",
          "[lifecycle][reload]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  auto next = config(2);
  next.shutdown_timeout = 3s;
  auto acts = reload_and_promote(d, next);
  CHECK(effects(acts) == strings{"cancel_timer(ready_deadline[2])", "serving(gen 2, 2 workers)",
                                 "send(1000, quit, 3000)",
                                 "arm_timer(retire_deadline[1000], 3000 ms)",
                                 "send(1001, quit, 3000)",
                                 "arm_timer(retire_deadline[1001], 3000 ms)"});
  CHECK(d.due_in(retire_timer(1000)) == 3s);
  // And the new value holds from now on: a graceful stop drains with it.
  acts = d.command(command::quit);
  CHECK(sends_of(acts, worker_command::quit).size() == 2);
  for (const auto& s : sends_of(acts, worker_command::quit)) CHECK(s.argument == 3000);
  CHECK(d.due_in(escalation_timer) == 3s);
}

// ---------------------------------------------------------------- rollback

TEST_CASE("a new worker exiting before promotion rolls the reload back", "[lifecycle][reload]") {
  auto status = GENERATE(exited_with(0), exited_with(1), killed_by(SIGSEGV), killed_by(SIGKILL));
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  d.at(1s);
  reload_to(d, config(3));
  REQUIRE(d.pids_of(2) == pids{1002, 1003, 1004});
  d.ready(1002);

  auto acts = d.at(1500ms).exit(1003, status);
  CHECK(effects(acts) == strings{"cancel_timer(ready_deadline[2])", "send(1002, quit, 10000)",
                                 "arm_timer(retire_deadline[1002], 10000 ms)",
                                 "send(1004, quit, 10000)",
                                 "arm_timer(retire_deadline[1004], 10000 ms)"});
  CHECK(logs_with(acts, log_level::error, "reload to generation 2 rolled back") == 1);
  CHECK(logs_with(acts, log_level::error, describe_wait_status(status)) == 1);
  CHECK(logs_with(acts, log_level::error, "generation 1 keeps serving") == 1);
  CHECK(d.lifecycle().generation() == 1);
  CHECK(d.lifecycle().workers() == 2);
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK(all_in(d, 1, process_state::ready));
  CHECK(all_in(d, 2, process_state::draining));
  CHECK(touching(d.history(), 1000) + touching(d.history(), 1001) == 0);
  CHECK(count_of<actions::serving>(d.history()) == 1);
  CHECK_FALSE(d.armed(ready_timer(2)));

  // A late ready of the rolled-back generation promotes nothing.
  CHECK(effects(d.ready(1004)).empty());
  CHECK(d.lifecycle().generation() == 1);
  // Its workers leaving respawn nothing.
  CHECK(effects(d.exit(1002, exited_with(0))) == strings{"cancel_timer(retire_deadline[1002])"});
  CHECK(effects(d.exit(1004, killed_by(SIGSEGV))) ==
        strings{"cancel_timer(retire_deadline[1004])"});
  CHECK(d.pids() == pids{1000, 1001});
  // The old generation is still looked after.
  CHECK(effects(d.exit(1000, exited_with(1))) == strings{"spawn(slot 0, gen 1)"});

  // The next reload gets a new, higher generation.
  d.command(command::reload);
  CHECK(effects(d.loaded(config(2))) == strings{"arm_timer(ready_deadline[3], 3000 ms)",
                                                "spawn(slot 0, gen 3)", "spawn(slot 1, gen 3)"});
  CHECK(d.lifecycle().pending_generation() == 3u);
  d.ready_generation(3);
  CHECK(d.lifecycle().generation() == 3);
}

TEST_CASE("the ready deadline rolls back a reload whose workers are not all ready",
          "[lifecycle][reload]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  auto next = config(2);
  next.ready_timeout = 4s;
  d.at(1s);
  reload_to(d, next);
  d.at(2s).ready(1002);

  CHECK(d.advance_to(4999ms).empty());
  CHECK(d.lifecycle().pending_generation() == 2u);
  auto acts = d.advance(1ms);
  CHECK(effects(acts) == strings{"cancel_timer(ready_deadline[2])", "send(1002, quit, 10000)",
                                 "arm_timer(retire_deadline[1002], 10000 ms)",
                                 "send(1003, quit, 10000)",
                                 "arm_timer(retire_deadline[1003], 10000 ms)"});
  CHECK(logs_with(acts, log_level::error, "rolled back") == 1);
  CHECK(logs_with(acts, log_level::error, "not every worker was ready within 4000 ms") == 1);
  CHECK(d.lifecycle().generation() == 1);
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK(all_in(d, 1, process_state::ready));
  CHECK(all_in(d, 2, process_state::draining));
  CHECK(touching(d.history(), 1000) + touching(d.history(), 1001) == 0);

  // The laggard turns up ready after all: too late.
  CHECK(effects(d.ready(1003)).empty());
  CHECK(d.lifecycle().generation() == 1);
  // One that never drains is killed at its deadline.
  acts = d.advance(10s);
  CHECK(effects(acts) == strings{"kill(1002, 9)", "kill(1003, 9)"});
  CHECK(all_in(d, 1, process_state::ready));
}

TEST_CASE("spawn_failed for the new generation rolls the reload back", "[lifecycle][reload]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  d.command(command::reload);

  SECTION("every spawn fails") {
    d.fail_spawns(EAGAIN);
    auto acts = d.loaded(config(2));
    CHECK(effects(acts) == strings{"arm_timer(ready_deadline[2], 3000 ms)",
                                   "spawn(slot 0, gen 2)", "spawn(slot 1, gen 2)",
                                   "cancel_timer(ready_deadline[2])"});
    CHECK(logs_with(acts, log_level::error, "rolled back") == 1);
    CHECK(logs_with(acts, log_level::error, "slot 0 could not start") == 1);
    CHECK(d.pids_of(2).empty());
    d.fail_spawns(0);
  }
  SECTION("the last slot fails - the started one is retired") {
    d.send(events::config_loaded{true, config(2), {}});
    CHECK(effects(d.send(events::spawned{0, 2, 2000})).empty());
    auto acts = d.send(events::spawn_failed{1, 2, EAGAIN});
    CHECK(effects(acts) == strings{"cancel_timer(ready_deadline[2])", "send(2000, quit, 10000)",
                                   "arm_timer(retire_deadline[2000], 10000 ms)"});
    CHECK(logs_with(acts, log_level::error, "rolled back") == 1);
  }
  SECTION("the first slot fails - one started after the rollback is retired too") {
    // basic_supervisor queues each spawn's answer: slot 0's failure rolls
    // the reload back before slot 1's spawned arrives.
    d.send(events::config_loaded{true, config(2), {}});
    auto acts = d.send(events::spawn_failed{0, 2, EAGAIN});
    CHECK(logs_with(acts, log_level::error, "rolled back") == 1);
    acts = d.send(events::spawned{1, 2, 2001});
    CHECK(effects(acts) ==
          strings{"send(2001, quit, 10000)", "arm_timer(retire_deadline[2001], 10000 ms)"});
    CHECK(d.find(2001)->state == process_state::draining);
    CHECK(d.in_slot(1)->pid == 1001);
  }
  CHECK(d.lifecycle().generation() == 1);
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK_FALSE(d.armed(ready_timer(2)));
  CHECK_FALSE(d.armed(respawn_timer(0)));
  CHECK_FALSE(d.armed(respawn_timer(1)));
  CHECK(all_in(d, 1, process_state::ready));
  CHECK(touching(d.history(), 1000) + touching(d.history(), 1001) == 0);
  // A later spawn_failed of the dead generation schedules nothing.
  CHECK(effects(d.send(events::spawn_failed{1, 2, EAGAIN})).empty());

  // The next reload gets generation 3.
  d.command(command::reload);
  CHECK(spawned_generations(d.loaded(config(2))) == std::vector<std::uint64_t>{3, 3});
}

TEST_CASE("generation numbers strictly increase across reloads and rollbacks",
          "[lifecycle][reload]") {
  auto d = serving(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  std::vector<std::uint64_t> started{1};
  auto note_new = [&] {
    auto g = d.lifecycle().pending_generation();
    REQUIRE(g.has_value());
    CHECK(*g > started.back());
    started.push_back(*g);
  };

  reload_to(d, config(1));  // 2: promoted
  note_new();
  d.ready_generation(2);
  CHECK(d.lifecycle().generation() == 2);

  reload_to(d, config(1));  // 3: its worker crashes
  note_new();
  d.exit(d.pids_of(3).at(0), killed_by(SIGSEGV));
  CHECK(d.lifecycle().generation() == 2);

  d.command(command::reload);  // refused: uses no number
  d.refused("syntax error");
  CHECK(d.lifecycle().generation() == 2);

  reload_to(d, config(2));  // 4: times out
  note_new();
  d.advance(3s);
  CHECK(d.lifecycle().generation() == 2);

  d.fail_spawns(ENOMEM);  // 5: cannot spawn
  reload_to(d, config(1));
  d.fail_spawns(0);
  CHECK(spawned_generations(d.history()).back() == 5);
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK(d.lifecycle().generation() == 2);

  reload_to(d, config(1));  // 6: promoted
  note_new();
  d.ready_generation(d.lifecycle().pending_generation().value());
  CHECK(d.lifecycle().generation() == 6);

  CHECK(started == std::vector<std::uint64_t>{1, 2, 3, 4, 6});
  // Every generation ever spawned into, in spawn order, never goes back.
  auto gens = spawned_generations(d.history());
  CHECK(std::is_sorted(gens.begin(), gens.end()));
  CHECK(std::count(gens.begin(), gens.end(), 5u) == 1);
  // Only the promoted ones ever served.
  std::vector<std::uint64_t> served;
  for (const auto& s : actions_of<actions::serving>(d.history())) served.push_back(s.generation);
  CHECK(served == std::vector<std::uint64_t>{1, 2, 6});
}

// ---------------------------------------------------------------- crashes during a reload

TEST_CASE("an old worker crashing during a pending reload is respawned into the old generation",
          "[lifecycle][reload]") {
  auto status = GENERATE(exited_with(1), killed_by(SIGSEGV));
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  reload_to(d, config(2));
  REQUIRE(d.pids_of(2) == pids{1002, 1003});
  d.ready(1002);

  auto acts = d.exit(1000, status);
  CHECK(effects(acts) == strings{"spawn(slot 0, gen 1)"});
  CHECK(logs_with(acts, log_level::error, "rolled back") == 0);
  CHECK(d.lifecycle().pending_generation() == 2u);
  CHECK(d.lifecycle().generation() == 1);
  const process_info* p = d.find(1004);
  REQUIRE(p != nullptr);
  CHECK(p->generation == 1);
  CHECK(p->slot == 0);
  CHECK(p->restarts == 1);
  CHECK(d.armed(ready_timer(2)));

  // Promotion retires every old worker, the respawned one included.
  acts = d.ready(1003);
  CHECK(effects(acts) == strings{"cancel_timer(ready_deadline[2])", "serving(gen 2, 2 workers)",
                                 "send(1001, quit, 10000)",
                                 "arm_timer(retire_deadline[1001], 10000 ms)",
                                 "send(1004, quit, 10000)",
                                 "arm_timer(retire_deadline[1004], 10000 ms)"});
  CHECK(all_in(d, 1, process_state::draining));
}

TEST_CASE("an old slot backing off during a reload is cancelled at promotion",
          "[lifecycle][reload][backoff]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  reload_to(d, config(2));
  crash_into_backoff(d, 0, 1);  // old slot 0 waits on a respawn timer
  CHECK(d.lifecycle().pending_generation() == 2u);  // old crashes do not roll back
  CHECK(d.pids_of(2) == pids{1002, 1003});
  CHECK(in_slot_of(d, 0, 1) == nullptr);
  auto acts = d.ready_generation(2);
  CHECK(effects(acts) == strings{"cancel_timer(ready_deadline[2])", "cancel_timer(respawn[0])",
                                 "serving(gen 2, 2 workers)", "send(1001, quit, 10000)",
                                 "arm_timer(retire_deadline[1001], 10000 ms)"});
  CHECK_FALSE(d.armed(respawn_timer(0)));
  // A respawn timer delivered anyway spawns nothing: slot 0 is served.
  CHECK(effects(d.send(events::timer_fired{respawn_timer(0)})).empty());
}

TEST_CASE("after promotion a new worker's crash respawns into the new generation - fresh record",
          "[lifecycle][reload][backoff]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  crash_into_backoff(d, 0);  // R = 3 quick restarts used up, then 100 ms
  d.advance(100ms);
  REQUIRE(d.in_slot(0) != nullptr);
  REQUIRE(d.in_slot(0)->restarts == 4);
  reload_and_promote(d, config(2));
  const pid_t first = d.in_slot(0)->pid;
  REQUIRE(d.find(first)->generation == 2);

  // The new slot 0 has R quick restarts of its own, counted from 1 ...
  for (unsigned i = 1; i <= 3; ++i) {
    INFO("crash " << i);
    auto acts = d.exit(d.in_slot(0)->pid, killed_by(SIGSEGV));
    CHECK(effects(acts) == strings{"spawn(slot 0, gen 2)"});
    REQUIRE(d.in_slot(0) != nullptr);
    CHECK(d.in_slot(0)->generation == 2);
    CHECK(d.in_slot(0)->restarts == i);
  }
  // ... then backs off from the first step, not from where the old slot was.
  CHECK(effects(d.exit(d.in_slot(0)->pid, exited_with(1))) ==
        strings{"arm_timer(respawn[0], 100 ms)"});
  CHECK(effects(d.advance(100ms)) == strings{"spawn(slot 0, gen 2)"});
  CHECK(d.in_slot(0)->generation == 2);
}

// ---------------------------------------------------------------- HUP during a reload

TEST_CASE("HUPs while a reload is under way coalesce into one more reload",
          "[lifecycle][reload]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  CHECK(effects(d.command(command::reload)) == strings{"load_config"});

  SECTION("while loading - the follow-up comes after a refusal") {
    for (int i = 0; i < 3; ++i) {
      auto acts = d.command(command::reload);
      CHECK(effects(acts).empty());
      CHECK(logs_with(acts, log_level::notice, "another follows") == 1);
    }
    auto acts = d.refused("bad");
    CHECK(effects(acts) == strings{"load_config"});
    CHECK(index_of<actions::load_config>(acts) > 0);  // after the refusal's log
    // The follow-up is a reload like any other, and the last one.
    CHECK(spawned_generations(d.loaded(config(2))) == std::vector<std::uint64_t>{2, 2});
    acts = d.ready_generation(2);
    CHECK(count_of<actions::load_config>(acts) == 0);
    CHECK(d.lifecycle().generation() == 2);
    CHECK(count_of<actions::load_config>(d.history()) == 2);  // one follow-up only
  }
  SECTION("while pending - the follow-up comes after the promotion") {
    d.loaded(config(2));
    d.ready(1002);
    for (int i = 0; i < 3; ++i) CHECK(effects(d.command(command::reload)).empty());
    auto acts = d.ready(1003);
    CHECK(d.lifecycle().generation() == 2);
    CHECK(count_of<actions::load_config>(acts) == 1);
    CHECK(index_of<actions::load_config>(acts) > index_of<actions::serving>(acts));
    CHECK(d.lifecycle().pending_generation() == std::nullopt);
    // Loading again: a HUP now is coalesced again, not lost.
    CHECK(effects(d.command(command::reload)).empty());
    CHECK(spawned_generations(d.loaded(config(1))) == std::vector<std::uint64_t>{3});
    acts = d.ready_generation(3);
    CHECK(d.lifecycle().generation() == 3);
    CHECK(effects(acts).back() == "load_config");
    CHECK(effects(d.refused("enough")).empty());
    CHECK(count_of<actions::load_config>(d.history()) == 3);
  }
  SECTION("while pending - the follow-up comes after a rollback") {
    d.loaded(config(2));
    d.command(command::reload);
    d.command(command::reload);
    auto acts = d.exit(1003, exited_with(1));
    CHECK(logs_with(acts, log_level::error, "rolled back") == 1);
    CHECK(count_of<actions::load_config>(acts) == 1);
    CHECK(effects(acts).back() == "load_config");
    CHECK(spawned_generations(d.loaded(config(2))) == std::vector<std::uint64_t>{3, 3});
    CHECK(count_of<actions::load_config>(d.advance(3s)) == 0);  // times out: no more
    CHECK(count_of<actions::load_config>(d.history()) == 2);
  }
}

// ---------------------------------------------------------------- the draining cap

TEST_CASE("the default cap on draining generations is 2", "[lifecycle][reload]") {
  CHECK(lifecycle_config{}.max_draining_generations == 2);
}

TEST_CASE("past max_draining_generations the oldest draining generation is terminated",
          "[lifecycle][reload]") {
  const unsigned cap = GENERATE(1u, 2u);
  INFO("cap " << cap);
  auto c = config(2);
  c.max_draining_generations = cap;
  auto d = serving(c);
  PM_SHOW_ON_FAILURE(d.describe());

  // Back-to-back reloads; no old worker ever leaves by itself.
  for (std::uint64_t g = 2; g <= 5; ++g) {
    INFO("promoting generation " << g);
    d.at(d.elapsed() + 100ms);
    auto acts = reload_and_promote(d, c);
    // Every generation older than g: draining (within the cap) or terminated.
    const std::uint64_t old_draining = g - 1;  // generations 1 .. g-1
    const std::uint64_t terminated = old_draining > cap ? old_draining - cap : 0;
    for (std::uint64_t o = 1; o < g; ++o) {
      INFO("generation " << o);
      const auto want = o <= terminated ? process_state::terminating : process_state::draining;
      REQUIRE(d.pids_of(o).size() == 2);
      CHECK(all_in(d, o, want));
    }
    // Only the generation that went past the cap just now is terminated.
    if (old_draining > cap) {
      const std::uint64_t victim = old_draining - cap;
      CHECK(pids_sent(acts, worker_command::terminate) == d.pids_of(victim));
      for (pid_t pid : d.pids_of(victim)) {
        CHECK(touching(acts, pid) == 2);
        CHECK(d.due_in(retire_timer(pid)) == 5s);  // terminate_timeout, replacing the drain's
      }
      CHECK(logs_with(acts, log_level::warn,
                      fmt::format("terminating generation {}", victim)) == 1);
    } else {
      CHECK(sends_of(acts, worker_command::terminate).empty());
    }
  }
  // Exactly `cap` generations drain.
  std::vector<std::uint64_t> draining;
  for (const auto& p : d.processes())
    if (p.state == process_state::draining &&
        std::find(draining.begin(), draining.end(), p.generation) == draining.end())
      draining.push_back(p.generation);
  CHECK(draining.size() == cap);
  CHECK(*std::min_element(draining.begin(), draining.end()) == 5 - cap);

  // A terminated worker still there at its deadline is killed.
  const pid_t victim = d.pids_of(1).front();
  d.advance(*d.due_in(retire_timer(victim)) - 1ms);
  auto acts = d.advance(1ms);
  CHECK(actions_of<actions::kill>(acts).size() >= 1);
  CHECK(actions_of<actions::kill>(acts).front().pid == victim);
  CHECK(actions_of<actions::kill>(acts).front().signo == SIGKILL);
}

TEST_CASE("draining generations that leave in time are not counted against the cap",
          "[lifecycle][reload]") {
  auto c = config(1);
  c.max_draining_generations = 1;
  auto d = serving(c);
  PM_SHOW_ON_FAILURE(d.describe());
  reload_and_promote(d, c);  // 1000 drains
  CHECK(effects(d.exit(1000, exited_with(0))) == strings{"cancel_timer(retire_deadline[1000])"});
  auto acts = reload_and_promote(d, c);  // 1001 drains: one generation
  CHECK(sends_of(acts, worker_command::terminate).empty());
  CHECK(d.find(1001)->state == process_state::draining);
}

// ---------------------------------------------------------------- retire deadlines

TEST_CASE("a retire deadline kills a worker still draining - not one that left",
          "[lifecycle][reload]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  d.at(1s);
  reload_and_promote(d, config(2));
  REQUIRE(d.due_in(retire_timer(1000)) == 10s);

  CHECK(effects(d.at(2s).exit(1001, exited_with(0))) ==
        strings{"cancel_timer(retire_deadline[1001])"});
  CHECK_FALSE(d.armed(retire_timer(1001)));

  CHECK(d.advance_to(10999ms).empty());
  auto acts = d.advance(1ms);
  CHECK(effects(acts) == strings{"kill(1000, 9)"});
  CHECK(logs_with(acts, log_level::warn, "worker 1000") == 1);
  CHECK(logs_with(acts, log_level::warn, "did not finish draining in time") == 1);
  CHECK(d.find(1000)->state == process_state::terminating);
  // A deadline for the pid that left, delivered anyway, does nothing.
  CHECK(d.send(events::timer_fired{retire_timer(1001)}).empty());
  // The killed one leaving respawns nothing.
  CHECK(effects(d.exit(1000, killed_by(SIGKILL))).empty());
  CHECK(d.pids() == pids{1002, 1003});
  CHECK(d.timers().empty());
  CHECK(d.current_phase() == phase::running);
}

// ---------------------------------------------------------------- stops during a reload

TEST_CASE("stop during a pending reload terminates both generations", "[lifecycle][reload]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  reload_to(d, config(2));
  d.ready(1002);
  auto acts = d.at(1s).command(command::stop);
  CHECK(effects(acts) == strings{"cancel_timer(ready_deadline[2])", "send(1000, terminate, 0)",
                                 "send(1001, terminate, 0)", "send(1002, terminate, 0)",
                                 "send(1003, terminate, 0)",
                                 "arm_timer(kill_escalation[0], 5000 ms)"});
  CHECK(d.current_phase() == phase::stopping);
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK_FALSE(d.armed(ready_timer(2)));
  // A late ready promotes nothing; a new worker leaving rolls nothing back.
  CHECK(effects(d.ready(1003)).empty());
  CHECK(d.lifecycle().generation() == 1);
  acts = d.exit(1003, killed_by(SIGTERM));
  CHECK(effects(acts).empty());
  CHECK(logs_with(acts, log_level::error, "rolled back") == 0);
  d.exit(1000, killed_by(SIGTERM));
  d.exit(1002, killed_by(SIGTERM));
  CHECK_FALSE(d.exit_code());
  CHECK(effects(d.exit(1001, killed_by(SIGTERM))) ==
        strings{"cancel_timer(kill_escalation[0])", "exit(0, remove socket files)"});
  CHECK(d.current_phase() == phase::exited);
  CHECK(count_of<actions::spawn>(d.history()) == 4);
}

TEST_CASE("quit during a pending reload drains both generations", "[lifecycle][reload]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  reload_to(d, config(2));
  d.command(command::reload);  // a follow-up is asked for: the quit drops it
  auto acts = d.at(1s).command(command::quit);
  CHECK(effects(acts) == strings{"stop_listening", "cancel_timer(ready_deadline[2])",
                                 "send(1000, quit, 10000)", "send(1001, quit, 10000)",
                                 "send(1002, quit, 10000)", "send(1003, quit, 10000)",
                                 "arm_timer(kill_escalation[0], 10000 ms)"});
  CHECK(index_of<actions::stop_listening>(acts) < index_of<actions::send>(acts));
  CHECK(d.current_phase() == phase::quitting);
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK(effects(d.ready_generation(2)).empty());
  CHECK(d.lifecycle().generation() == 1);
  for (pid_t pid : {1003, 1000, 1002}) CHECK(effects(d.exit(pid, exited_with(0))).empty());
  CHECK(effects(d.exit(1001, exited_with(0))) ==
        strings{"cancel_timer(kill_escalation[0])", "exit(0, remove socket files)"});
  CHECK(count_of<actions::load_config>(d.history()) == 1);
  CHECK(count_of<actions::spawn>(d.history()) == 4);
}

TEST_CASE("a configuration that loads after a quit or stop is ignored", "[lifecycle][reload]") {
  auto c = GENERATE(command::quit, command::stop);
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  d.command(command::reload);
  d.command(c);
  CHECK(d.loaded(config(3)).empty());
  CHECK(d.refused("late").empty());
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK(count_of<actions::spawn>(d.history()) == 2);
  CHECK_FALSE(d.armed(ready_timer(2)));
  d.exit(1000, exited_with(0));
  d.exit(1001, exited_with(0));
  CHECK(d.exit_code() == 0);
}

TEST_CASE("reload before start or during a shutdown is ignored with a warning",
          "[lifecycle][reload]") {
  struct row {
    const char* name;
    std::optional<command> before;  // after start; none: not started
    phase expected;
  };
  auto r = GENERATE(values<row>({{"not started", std::nullopt, phase::idle},
                                  {"quitting", command::quit, phase::quitting},
                                  {"stopping", command::stop, phase::stopping}}));
  INFO(r.name);
  lifecycle_driver d(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  if (r.before) {
    d.start();
    d.command(*r.before);
  }
  auto acts = d.command(command::reload);
  CHECK(effects(acts).empty());
  CHECK(logs_with(acts, log_level::warn, "reload ignored") == 1);
  CHECK(logs_with(acts, log_level::warn, std::string(to_string(r.expected))) == 1);
  CHECK(d.current_phase() == r.expected);
  CHECK(count_of<actions::load_config>(d.history()) == 0);
  CHECK(d.loaded(config(2)).empty());
}

// ---------------------------------------------------------------- WINCH

TEST_CASE("WINCH drains every worker - the master stays - HUP brings workers back",
          "[lifecycle][reload][winch]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  auto acts = d.at(1s).command(command::drain_workers);
  CHECK(effects(acts) == strings{"send(1000, quit, 10000)",
                                 "arm_timer(retire_deadline[1000], 10000 ms)",
                                 "send(1001, quit, 10000)",
                                 "arm_timer(retire_deadline[1001], 10000 ms)"});
  CHECK(d.current_phase() == phase::running);
  CHECK(all_in(d, 1, process_state::draining));
  // A second WINCH has nothing left to drain.
  CHECK(effects(d.command(command::drain_workers)).empty());

  SECTION("they all leave - however they leave - and nothing is respawned") {
    auto status = GENERATE(exited_with(0), exited_with(1), killed_by(SIGSEGV));
    CHECK(effects(d.exit(1000, status)) == strings{"cancel_timer(retire_deadline[1000])"});
    CHECK(effects(d.exit(1001, status)) == strings{"cancel_timer(retire_deadline[1001])"});
    CHECK(d.processes().empty());
    CHECK(d.current_phase() == phase::running);
    CHECK_FALSE(d.exit_code());
    CHECK(d.timers().empty());
    // TTIN and TTOU have no workers to change.
    CHECK(effects(d.command(command::add_worker)).empty());
    CHECK(effects(d.command(command::remove_worker)).empty());
    CHECK(d.lifecycle().workers() == 2);
    CHECK(count_of<actions::spawn>(d.history()) == 2);

    // HUP: a new generation, and serving again once it is ready.
    CHECK(effects(d.command(command::reload)) == strings{"load_config"});
    CHECK(spawned_generations(d.loaded(config(2))) == std::vector<std::uint64_t>{2, 2});
    acts = d.ready_generation(2);
    CHECK(effects(acts) == strings{"cancel_timer(ready_deadline[2])", "serving(gen 2, 2 workers)"});
    CHECK(d.lifecycle().generation() == 2);
    // Crashes respawn again, TTIN works again.
    CHECK(effects(d.exit(1002, killed_by(SIGSEGV))) == strings{"spawn(slot 0, gen 2)"});
    CHECK(effects(d.command(command::add_worker)) ==
          strings{"serving(gen 2, 3 workers)", "spawn(slot 2, gen 2)"});
  }
  SECTION("HUP while they still drain: promotion does not tell them twice") {
    d.command(command::reload);
    d.loaded(config(1));
    acts = d.ready_generation(2);
    CHECK(effects(acts) == strings{"cancel_timer(ready_deadline[2])", "serving(gen 2, 1 workers)"});
    CHECK(all_in(d, 1, process_state::draining));
    CHECK(effects(d.exit(1002, exited_with(1))) == strings{"spawn(slot 0, gen 2)"});
  }
  SECTION("HUP whose new generation fails: still no workers - no respawn") {
    d.command(command::reload);
    d.loaded(config(2));
    acts = d.exit(1002, killed_by(SIGSEGV));
    CHECK(logs_with(acts, log_level::error, "rolled back") == 1);
    CHECK(count_of<actions::spawn>(acts) == 0);
    CHECK(d.lifecycle().generation() == 1);
    d.exit(1000, exited_with(0));
    CHECK(count_of<actions::spawn>(d.exit(1001, exited_with(1))) == 0);
  }
}

TEST_CASE("WINCH during a pending reload drains the new generation too",
          "[lifecycle][reload][winch]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  reload_to(d, config(2));
  auto acts = d.command(command::drain_workers);
  CHECK(effects(acts).front() == "cancel_timer(ready_deadline[2])");
  CHECK(pids_sent(acts, worker_command::quit) == pids{1000, 1001, 1002, 1003});
  CHECK_FALSE(d.lifecycle().pending_generation());
  CHECK(effects(d.ready_generation(2)).empty());
  CHECK(d.lifecycle().generation() == 1);
}

// ---------------------------------------------------------------- TTIN / TTOU

TEST_CASE("TTIN and TTOU during a reload are refused", "[lifecycle][reload][resize]") {
  auto c = GENERATE(command::add_worker, command::remove_worker);
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  d.command(command::reload);
  SECTION("while loading") {}
  SECTION("while pending") { d.loaded(config(3)); }
  const auto before = d.pids();
  auto acts = d.command(c);
  CHECK(effects(acts).empty());
  CHECK(logs_with(acts, log_level::warn, "refused while a reload is under way") == 1);
  CHECK(d.lifecycle().workers() == 2);
  CHECK(d.pids() == before);
  CHECK(all_in(d, 1, process_state::ready));
}

// ---------------------------------------------------------------- the driver's helpers

TEST_CASE("lifecycle_driver can answer load_config by itself", "[testing][driver][reload]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  SECTION("with a configuration") {
    d.answer_load_config(config(3));
    auto acts = d.command(command::reload);
    CHECK(effects(acts) == strings{"load_config", "arm_timer(ready_deadline[2], 3000 ms)",
                                   "spawn(slot 0, gen 2)", "spawn(slot 1, gen 2)",
                                   "spawn(slot 2, gen 2)"});
    CHECK(d.pids_of(2) == pids{1002, 1003, 1004});
    // A coalesced HUP is answered too when it follows.
    d.command(command::reload);
    acts = d.ready_generation(2);
    CHECK(d.lifecycle().generation() == 2);
    CHECK(spawned_generations(acts) == std::vector<std::uint64_t>{3, 3, 3});
  }
  SECTION("with a refusal") {
    d.answer_load_config(events::config_loaded{false, {}, "no such file"});
    auto acts = d.command(command::reload);
    CHECK(effects(acts) == strings{"load_config"});
    CHECK(logs_with(acts, log_level::error, "no such file") == 1);
  }
  SECTION("and stop answering") {
    d.answer_load_config(config(3));
    d.answer_load_config(std::nullopt);
    CHECK(effects(d.command(command::reload)) == strings{"load_config"});
    CHECK_FALSE(d.lifecycle().pending_generation());
  }
}

// ---------------------------------------------------------------- before the first READY

// The service manager reads READY=1 before any READY=1 as "started": it must
// wait until the first generation serves, even when a reload asked for
// before that is refused or rolled back (found by lifecycle_walk.cpp).
TEST_CASE("a reload refused or rolled back before the first generation is ready sends no READY",
          "[lifecycle][reload][notify]") {
  lifecycle_driver d(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();  // 1000 and 1001 start; neither is ready
  // Still starting: RELOADING=1 would be as wrong as READY=1.
  CHECK(notices_of(d.command(command::reload)).empty());

  SECTION("refused") {
    auto acts = d.refused("does not parse");
    INFO(to_string(acts));
    CHECK(notices_of(acts).empty());
  }
  SECTION("rolled back: a new worker crashes") {
    d.loaded(config(2));  // 1002, 1003 of generation 2
    auto acts = d.exit(1002, exited_with(3));
    INFO(to_string(acts));
    REQUIRE(logs_with(acts, log_level::error, "rolled back") == 1);
    CHECK(notices_of(acts).empty());
  }
  SECTION("rolled back: the ready deadline") {
    d.loaded(config(2));
    auto acts = d.advance(3s);
    INFO(to_string(acts));
    REQUIRE(logs_with(acts, log_level::error, "rolled back") == 1);
    CHECK(notices_of(acts).empty());
  }
  // READY=1 once generation 1 serves, and only then.
  CHECK(notices_of(d.ready(1000)).empty());
  auto acts = d.ready(1001);
  INFO(to_string(acts));
  CHECK(notices_of(acts) == strings{"notify(ready)"});
}

// A generation rolled back never served; the cap must not make the one
// that served a moment ago pay for it (found by lifecycle_walk.cpp).
TEST_CASE("the draining cap terminates rolled-back generations before one that served",
          "[lifecycle][reload]") {
  auto c = config(1);
  c.max_draining_generations = 2;
  c.shutdown_timeout = 60s;  // nothing leaves by its own deadline here
  auto d = serving(c);       // 1000 serves generation 1
  // Two reloads whose workers hang in start-up, rolled back at the ready deadline.
  for (std::uint64_t g = 2; g <= 3; ++g) {
    reload_to(d, c);
    REQUIRE(d.lifecycle().pending_generation() == g);
    auto acts = d.advance(3s);
    REQUIRE(logs_with(acts, log_level::error, "rolled back") == 1);
  }
  REQUIRE(all_in(d, 2, process_state::draining));
  REQUIRE(all_in(d, 3, process_state::draining));
  // The third reload serves: generation 1 drains, three generations drain.
  auto acts = reload_and_promote(d, c);
  INFO(to_string(acts));
  CHECK(d.lifecycle().generation() == 4);
  // The oldest rolled-back generation goes, not the one that served until now.
  CHECK(d.find(1000)->state == process_state::draining);
  CHECK(pids_sent(acts, worker_command::terminate) == d.pids_of(2));
  CHECK(all_in(d, 3, process_state::draining));
  CHECK(logs_with(acts, log_level::warn, "terminating generation 2") == 1);
}

// systemd waits for READY=1 after RELOADING=1 (until its timeout fails the
// reload job): a reload WINCH abandons must still end with READY=1 (found
// by lifecycle_walk.cpp).
TEST_CASE("WINCH abandoning a reload ends the RELOADING it announced", "[lifecycle][reload][notify]") {
  auto d = serving(config(2));
  PM_SHOW_ON_FAILURE(d.describe());
  REQUIRE(notices_of(d.command(command::reload)) == strings{"notify(reloading)"});
  SECTION("while the configuration loads") {}
  SECTION("while the new generation starts") { d.loaded(config(2)); }
  auto acts = d.command(command::drain_workers);
  INFO(to_string(acts));
  CHECK(notices_of(acts) == strings{"notify(ready)"});
  // A configuration answered late is ignored, and says nothing more.
  CHECK(notices_of(d.refused("late")).empty());
}
