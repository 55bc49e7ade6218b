#include <procmodel/lifecycle.hpp>
#include <procmodel/testing/lifecycle_driver.hpp>
#include "support/catch.hpp"
#include "support/on_failure.hpp"

// The heartbeat watchdog (SIGABRT, then SIGKILL after the grace, then a
// respawn counted as a crash) and worker recycling (max_requests, max_age,
// max_rss with jitter: a readiness-gated replacement per slot, one at a
// time, retried with backoff), through every order of events that matters.

#include <algorithm>
#include <chrono>
#include <csignal>
#include <set>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using namespace procmodel;
using namespace procmodel::testing;

namespace {

using strings = std::vector<std::string>;

constexpr timer_id recycle_deadline{timer_kind::recycle, 0};
constexpr timer_id recycle_retry{timer_kind::recycle, 1};

// Heartbeats due every 1 s, 500 ms of grace; R = 3 quick restarts per 10 s,
// then 100 ms doubling; replacements must be ready within 3 s.
lifecycle_config config(unsigned workers = 2) {
  lifecycle_config c = test_config(workers);
  c.heartbeat_timeout = 1s;
  c.heartbeat_grace = 500ms;
  c.recycle_jitter = 0;
  return c;
}

lifecycle_config recycling(std::uint64_t max_requests, unsigned workers = 2) {
  lifecycle_config c = config(workers);
  c.heartbeat_timeout = 0ms;
  c.max_requests = max_requests;
  return c;
}

lifecycle_driver serving(const lifecycle_config& c) { return lifecycle_driver::serving(c); }

std::vector<actions::kill> kills_of(const action_list& list, pid_t pid) {
  std::vector<actions::kill> out;
  for (const auto& k : actions_of<actions::kill>(list))
    if (k.pid == pid)
      out.push_back(k);
  return out;
}

std::vector<unsigned> spawned_slots(const action_list& list) {
  std::vector<unsigned> out;
  for (const auto& s : actions_of<actions::spawn>(list))
    out.push_back(s.slot);
  return out;
}

std::string cause_of(const lifecycle_driver& d, unsigned slot) {
  for (const auto& r : d.lifecycle().replacements())
    if (r.slot == slot)
      return r.cause;
  return {};
}

}  // namespace

// ------------------------------------------------------------ heartbeat

TEST_CASE("the watchdog is off by default: no heartbeat timer, heartbeats ignored",
          "[lifecycle][watchdog]") {
  lifecycle_config c = config();
  c.heartbeat_timeout = 0ms;
  auto d = serving(c);
  PM_SHOW_ON_FAILURE(d.describe());
  CHECK_FALSE(d.armed(heartbeat_timer(1000)));
  CHECK(d.send(events::heartbeat{1000}).empty());
  CHECK(d.advance(1h).empty());
}

TEST_CASE(
    "a worker that misses its heartbeat gets SIGABRT, SIGKILL after the grace, and a "
    "successor counted as a crash",
    "[lifecycle][watchdog]") {
  auto d = serving(config());
  PM_SHOW_ON_FAILURE(d.describe());
  REQUIRE(d.due_in(heartbeat_timer(1000)) == 1000ms);
  REQUIRE(d.due_in(heartbeat_timer(1001)) == 1000ms);
  // Worker 1001 keeps beating; 1000 is stuck.
  d.after(600ms);
  d.send(events::heartbeat{1001});
  auto acts = d.advance(400ms);
  INFO(to_string(acts));
  REQUIRE(kills_of(acts, 1000).size() == 1);
  CHECK(kills_of(acts, 1000)[0].signo == SIGABRT);
  CHECK(kills_of(acts, 1001).empty());
  CHECK(logs_with(acts, log_level::warn, "worker 0 pid 1000") == 1);
  CHECK(logs_with(acts, log_level::warn, "missed its heartbeat for 1000 ms: SIGABRT") == 1);
  CHECK(d.due_in(heartbeat_timer(1000)) == 500ms);
  // Still a serving worker of the slot: nothing spawns before it is gone.
  CHECK(count_of<actions::spawn>(acts) == 0);
  // A late heartbeat from a worker being aborted changes nothing.
  CHECK(d.send(events::heartbeat{1000}).empty());

  acts = d.advance(500ms);
  INFO(to_string(acts));
  REQUIRE(kills_of(acts, 1000).size() == 1);
  CHECK(kills_of(acts, 1000)[0].signo == SIGKILL);

  acts = d.exit(1000, killed_by(SIGKILL));
  INFO(to_string(acts));
  CHECK(spawned_slots(acts) == std::vector<unsigned>{0});
  CHECK(logs_with(
            acts, log_level::warn,
            "killed by signal 9 (Killed) unexpectedly after missing its heartbeat for 1000 ms") ==
        1);
  CHECK(cause_of(d, 0).find("after missing its heartbeat for 1000 ms") != std::string::npos);
  CHECK(d.in_slot(0)->restarts == 1);  // a crash: it counts toward the backoff
  CHECK_FALSE(d.armed(heartbeat_timer(1000)));
}

TEST_CASE("missed heartbeats count as crashes: a slot that keeps hanging backs off",
          "[lifecycle][watchdog]") {
  auto d = serving(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  for (int i = 0; i < 3; ++i) {
    pid_t pid = d.in_slot(0)->pid;
    d.ready(pid);
    auto acts = d.advance(1s);
    REQUIRE(kills_of(acts, pid).size() == 1);
    acts = d.exit(pid, killed_by(SIGABRT, true));
    REQUIRE(count_of<actions::spawn>(acts) == 1);
  }
  pid_t pid = d.in_slot(0)->pid;
  d.ready(pid);
  d.advance(1s);
  auto acts = d.exit(pid, killed_by(SIGABRT, true));
  CHECK(count_of<actions::spawn>(acts) == 0);
  CHECK(d.armed({timer_kind::respawn, 0}));
  CHECK(cause_of(d, 0) ==
        "killed by signal 6 (Aborted), core dumped after missing its "
        "heartbeat for 1000 ms");
}

TEST_CASE("a heartbeat just before the deadline re-arms it", "[lifecycle][watchdog]") {
  auto d = serving(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  for (int i = 0; i < 5; ++i) {
    CHECK(d.advance(999ms).empty());
    auto acts = d.send(events::heartbeat{1000});
    CHECK(strings{to_string(acts.at(0))} == strings{"arm_timer(heartbeat[1000], 1000 ms)"});
  }
  auto acts = d.advance(1000ms);
  CHECK(kills_of(acts, 1000).size() == 1);
}

TEST_CASE("a worker that exits during the grace is not SIGKILLed", "[lifecycle][watchdog]") {
  auto d = serving(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  d.advance(1s);
  d.after(200ms);
  auto acts = d.exit(1000, killed_by(SIGABRT));
  CHECK(count_of<actions::spawn>(acts) == 1);
  CHECK(std::find_if(acts.begin(), acts.end(), [](const action& a) {
          return to_string(a) == "cancel_timer(heartbeat[1000])";
        }) != acts.end());
  acts = d.advance(10s);
  CHECK(kills_of(acts, 1000).empty());
}

TEST_CASE("heartbeats are due from readiness or the first heartbeat, whichever comes first",
          "[lifecycle][watchdog]") {
  lifecycle_driver d(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  // A slow start is not a hang: ready_timeout and one heartbeat more.
  CHECK(d.due_in(heartbeat_timer(1000)) == 4000ms);
  CHECK(d.advance(3s).empty());
  d.send(events::heartbeat{1000});
  CHECK(d.due_in(heartbeat_timer(1000)) == 1000ms);
  auto acts = d.advance(1s);  // its loop ran, then stopped, before ready
  CHECK(kills_of(acts, 1000).size() == 1);
  CHECK(logs_with(acts, log_level::warn, "missed its heartbeat for 1000 ms") == 1);
}

TEST_CASE("a worker that hangs before its first heartbeat and before ready is aborted too",
          "[lifecycle][watchdog]") {
  lifecycle_driver d(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  auto acts = d.advance(4s);
  INFO(to_string(acts));
  REQUIRE(kills_of(acts, 1000).size() == 1);
  CHECK(kills_of(acts, 1000)[0].signo == SIGABRT);
  CHECK(logs_with(acts, log_level::warn,
                  "worker 0 pid 1000 (generation 1) neither reported ready nor sent a heartbeat "
                  "within 4000 ms of its start: SIGABRT") == 1);
  acts = d.exit(1000, killed_by(SIGABRT));
  CHECK(spawned_slots(acts) == std::vector<unsigned>{0});
  CHECK(cause_of(d, 0) == "killed by signal 6 (Aborted) after hanging at start");
}

TEST_CASE("a draining worker is still watched: a stuck drain is aborted, and not replaced twice",
          "[lifecycle][watchdog]") {
  auto d = serving(config(1));
  PM_SHOW_ON_FAILURE(d.describe());
  d.command(command::quit);
  REQUIRE(d.find(1000)->state == process_state::draining);
  auto acts = d.advance(1s);
  REQUIRE(kills_of(acts, 1000).size() == 1);
  CHECK(kills_of(acts, 1000)[0].signo == SIGABRT);
  acts = d.exit(1000, killed_by(SIGABRT));
  CHECK(count_of<actions::spawn>(acts) == 0);
  CHECK(d.exit_code() == 0);
}

TEST_CASE("a reload's new workers are watched with the new configuration",
          "[lifecycle][watchdog]") {
  lifecycle_config c = config(1);
  c.heartbeat_timeout = 0ms;
  auto d = serving(c);
  PM_SHOW_ON_FAILURE(d.describe());
  d.command(command::reload);
  lifecycle_config next = c;
  next.heartbeat_timeout = 2s;
  d.loaded(next);
  pid_t fresh = d.pids_of(2).at(0);
  d.ready(fresh);
  CHECK(d.due_in(heartbeat_timer(fresh)) == 2000ms);
  CHECK_FALSE(d.armed(heartbeat_timer(1000)));
}

// ------------------------------------------------------------ recycling

TEST_CASE(
    "recycling after max_requests: a replacement starts, and once it is ready the old "
    "worker drains",
    "[lifecycle][recycle]") {
  auto d = serving(recycling(1000));
  PM_SHOW_ON_FAILURE(d.describe());
  CHECK(d.dispatch(events::served{1000, 999}).empty());
  CHECK(d.find(1000)->served == 999);
  auto acts = d.dispatch(events::served{1000, 1000});
  INFO(to_string(acts));
  CHECK(logs_with(acts, log_level::info,
                  "worker 1000 (slot 0) is due for recycling: 1000 requests") == 1);
  CHECK(logs_with(acts, log_level::notice, "recycling worker 1000 (slot 0)") == 1);
  CHECK(spawned_slots(acts) == std::vector<unsigned>{0});
  CHECK(d.due_in(recycle_deadline) == 3000ms);
  const pid_t fresh = 1002;
  REQUIRE(d.find(fresh) != nullptr);
  CHECK(d.find(fresh)->slot == 0);
  CHECK(d.find(fresh)->generation == 1);
  CHECK(d.find(fresh)->restarts == 0);  // not a crash
  // The old one serves until the new one does.
  CHECK(sends_of(acts, worker_command::quit).empty());
  CHECK(d.find(1000)->state == process_state::ready);

  acts = d.ready(fresh);
  INFO(to_string(acts));
  CHECK(pids_sent(acts, worker_command::quit) == std::vector<pid_t>{1000});
  CHECK(logs_with(acts, log_level::notice, "worker 1000 (slot 0) recycled: 1000 requests") == 1);
  CHECK_FALSE(d.armed(recycle_deadline));
  CHECK(cause_of(d, 0) == "recycled: 1000 requests (limit 1000)");
  // It drains as a reload's old worker does, then leaves quietly.
  acts = d.exit(1000, exited_with(0));
  CHECK(count_of<actions::spawn>(acts) == 0);
  CHECK(d.in_slot(0)->pid == fresh);
}

TEST_CASE("recycling is one slot at a time", "[lifecycle][recycle]") {
  auto d = serving(recycling(100, 3));
  PM_SHOW_ON_FAILURE(d.describe());
  auto acts = d.dispatch(events::served{1000, 100});
  acts = d.dispatch(events::served{1001, 150});
  acts = d.dispatch(events::served{1002, 100});
  CHECK(count_of<actions::spawn>(d.history()) == 4);  // 3 at start, 1 replacement
  // Each worker is due once however often it reports.
  acts = d.dispatch(events::served{1001, 160});
  CHECK(acts.empty());
  acts = d.ready(1003);
  CHECK(pids_sent(acts, worker_command::quit) == std::vector<pid_t>{1000});
  CHECK(spawned_slots(acts) == std::vector<unsigned>{1});
  acts = d.ready(1004);
  CHECK(pids_sent(acts, worker_command::quit) == std::vector<pid_t>{1001});
  CHECK(spawned_slots(acts) == std::vector<unsigned>{2});
  acts = d.ready(1005);
  CHECK(pids_sent(acts, worker_command::quit) == std::vector<pid_t>{1002});
  CHECK(count_of<actions::spawn>(acts) == 0);
}

TEST_CASE(
    "a replacement that is not ready in time goes, the old worker serves on, and the slot "
    "is retried with backoff",
    "[lifecycle][recycle]") {
  auto d = serving(recycling(10, 1));
  PM_SHOW_ON_FAILURE(d.describe());
  d.dispatch(events::served{1000, 10});
  REQUIRE(d.find(1001) != nullptr);
  auto acts = d.advance(3s);
  INFO(to_string(acts));
  CHECK(pids_sent(acts, worker_command::terminate) == std::vector<pid_t>{1001});
  CHECK(
      logs_with(acts, log_level::warn,
                "recycling worker 1000 (slot 0) failed: its replacement 1001 was not ready within "
                "3000 ms; it keeps serving, next attempt in 100 ms") == 1);
  CHECK(d.find(1000)->state == process_state::ready);
  CHECK(count_of<actions::spawn>(acts) == 0);
  // The failed replacement's exit is no crash of the slot.
  acts = d.exit(1001, exited_with(0));
  CHECK(count_of<actions::spawn>(acts) == 0);
  // Tried again after the backoff.
  acts = d.advance(100ms);
  CHECK(spawned_slots(acts) == std::vector<unsigned>{0});
  // This one crashes before ready: next attempt after twice the backoff.
  acts = d.exit(1002, exited_with(1));
  INFO(to_string(acts));
  CHECK(count_of<actions::spawn>(acts) == 0);
  CHECK(d.due_in(recycle_retry) == 200ms);
  CHECK(d.find(1000)->state == process_state::ready);
  // And one that cannot even be started.
  d.fail_spawns(EAGAIN);
  acts = d.advance(200ms);
  CHECK(d.due_in(recycle_retry) == 400ms);
  CHECK(d.find(1000)->state == process_state::ready);
  d.fail_spawns(0);
  acts = d.advance(400ms);
  REQUIRE(count_of<actions::spawn>(acts) == 1);
  pid_t fresh = d.pids().back();
  acts = d.ready(fresh);
  CHECK(pids_sent(acts, worker_command::quit) == std::vector<pid_t>{1000});
  // Success resets the backoff.
  d.dispatch(events::served{fresh, 10});
  CHECK(count_of<actions::spawn>(d.exit(d.pids().back(), exited_with(1))) == 0);
  CHECK(d.due_in(recycle_retry) == 100ms);
}

TEST_CASE("a recycle waits for the reload under way, and a reload supersedes the recycle",
          "[lifecycle][recycle]") {
  auto d = serving(recycling(10));
  PM_SHOW_ON_FAILURE(d.describe());
  d.command(command::reload);  // loading
  auto acts = d.dispatch(events::served{1000, 10});
  CHECK(count_of<actions::spawn>(acts) == 0);
  // Rolled back (refused): the recycle goes ahead.
  acts = d.refused("bad file");
  CHECK(spawned_slots(acts) == std::vector<unsigned>{0});
  const pid_t fresh = 1002;
  // A reload now: it replaces every slot anyway; the recycle is dropped.
  d.command(command::reload);
  d.loaded(recycling(10));
  acts = d.ready_generation(2);
  INFO(to_string(acts));
  CHECK(d.lifecycle().generation() == 2);
  CHECK(count_of<actions::spawn>(acts) == 0);
  CHECK_FALSE(d.armed(recycle_deadline));
  for (pid_t p : {1000, 1001, fresh})
    CHECK(d.find(p)->state == process_state::draining);
  // Its replacement turning ready late changes nothing.
  acts = d.ready(fresh);
  CHECK(acts.empty());
}

TEST_CASE("no recycling while quitting", "[lifecycle][recycle]") {
  SECTION("due after the quit") {
    auto d = serving(recycling(10));
    PM_SHOW_ON_FAILURE(d.describe());
    d.command(command::quit);
    auto acts = d.dispatch(events::served{1000, 10});
    CHECK(count_of<actions::spawn>(acts) == 0);
  }
  SECTION("quit while a replacement starts") {
    auto d = serving(recycling(10));
    PM_SHOW_ON_FAILURE(d.describe());
    d.dispatch(events::served{1000, 10});
    auto acts = d.command(command::quit);
    CHECK(pids_sent(acts, worker_command::quit) == (std::vector<pid_t>{1000, 1001, 1002}));
    CHECK(d.dispatch(events::served{1001, 10}).empty());
    acts = d.ready(1002);
    CHECK(count_of<actions::spawn>(acts) == 0);
    CHECK(acts.empty());
    for (pid_t p : {1000, 1001, 1002})
      d.exit(p, exited_with(0));
    CHECK(d.exit_code() == 0);
    CHECK(d.advance(1h).empty());
  }
  SECTION("WINCH drops the queue") {
    lifecycle_config c = recycling(10);
    c.winch_with_terminal = true;
    auto d = serving(c);
    d.dispatch(events::served{1000, 10});
    d.command(command::drain_workers);
    auto acts = d.dispatch(events::served{1001, 10});
    CHECK(count_of<actions::spawn>(acts) == 0);
    CHECK_FALSE(d.armed(recycle_deadline));
  }
}

TEST_CASE("the old worker crashing while its replacement starts: the replacement takes the slot",
          "[lifecycle][recycle]") {
  auto d = serving(recycling(10, 1));
  PM_SHOW_ON_FAILURE(d.describe());
  d.dispatch(events::served{1000, 10});
  auto acts = d.exit(1000, exited_with(1));
  CHECK(count_of<actions::spawn>(acts) == 0);  // 1001 is coming
  CHECK(cause_of(d, 0) == "exited with code 1");
  // Even late, it is the slot's worker: no deadline to kill it.
  acts = d.advance(5s);
  CHECK(acts.empty());
  d.ready(1001);
  CHECK(d.in_slot(0)->pid == 1001);
  CHECK(d.find(1001)->state == process_state::ready);
}

TEST_CASE("the replacement and the old worker both gone: the slot respawns as after a crash",
          "[lifecycle][recycle]") {
  auto d = serving(recycling(10, 1));
  PM_SHOW_ON_FAILURE(d.describe());
  d.dispatch(events::served{1000, 10});
  d.exit(1000, exited_with(1));
  auto acts = d.exit(1001, exited_with(1));
  CHECK(spawned_slots(acts) == std::vector<unsigned>{0});
  CHECK_FALSE(d.armed(recycle_retry));
}

TEST_CASE("max_age recycles from readiness on, max_rss recycles a worker above the limit",
          "[lifecycle][recycle]") {
  lifecycle_config c = recycling(0);
  c.max_age = 60s;
  c.max_rss = 200ull << 20;
  lifecycle_driver d(c);
  PM_SHOW_ON_FAILURE(d.describe());
  d.start();
  d.after(2s);
  d.ready_generation(1);
  CHECK(d.due_in(age_timer(1000)) == 58s);  // its age counts from its start
  auto acts = d.dispatch(events::worker_rss{1001, 200ull << 20});
  CHECK(count_of<actions::spawn>(acts) == 0);
  CHECK(d.find(1001)->rss == 200ull << 20);
  acts = d.dispatch(events::worker_rss{1001, 210ull << 20});
  CHECK(logs_with(acts, log_level::notice, "recycling worker 1001 (slot 1): rss 210 MB > 200 MB") ==
        1);
  d.ready(1002);
  CHECK(cause_of(d, 1) == "recycled: rss 210 MB > 200 MB");
  acts = d.advance(58s);
  CHECK(logs_with(acts, log_level::notice,
                  "recycling worker 1000 (slot 0): age 60 s (limit 60 s)") == 1);
  CHECK(spawned_slots(acts) == std::vector<unsigned>{0});
}

TEST_CASE(
    "jitter: each worker's limits are drawn from [limit, limit * (1 + jitter)], the same "
    "for the same seed",
    "[lifecycle][recycle]") {
  auto draws = [](std::uint64_t seed) {
    lifecycle_config c = recycling(1000, 8);
    c.max_age = 100s;
    c.recycle_jitter = 0.5;
    c.recycle_seed = seed;
    lifecycle_driver d(c);
    d.start();
    d.ready_generation(1);
    std::vector<milliseconds> ages;
    for (pid_t p : d.pids())
      ages.push_back(*d.due_in(age_timer(p)));
    return ages;
  };
  auto a = draws(1), b = draws(1), other = draws(2);
  CHECK(a == b);
  CHECK(a != other);
  for (auto age : a) {
    CHECK(age >= 100s);
    CHECK(age < 150s);
  }
  CHECK(std::set<milliseconds>(a.begin(), a.end()).size() == a.size());

  // The request limit too: a worker is due at its own count.
  lifecycle_config c = recycling(1000, 1);
  c.recycle_jitter = 0.5;
  c.recycle_seed = 7;
  auto d = serving(c);
  std::uint64_t n = 999;
  while (count_of<actions::spawn>(d.dispatch(events::served{1000, ++n})) == 0)
    REQUIRE(n < 1500);
  CHECK(n >= 1000);
  CHECK(n < 1500);
}
