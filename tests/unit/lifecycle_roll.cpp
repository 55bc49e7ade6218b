#include <procmodel/lifecycle.hpp>
#include <procmodel/testing/lifecycle_driver.hpp>
#include "support/catch.hpp"
#include "support/on_failure.hpp"

// Rolling reloads (reload_batch): slots move to the new generation a batch
// at a time, each batch ready before its old workers drain, the next batch
// only once they have exited; a failure rolls the moved slots back; and how a
// roll meets a second HUP, stops, upgrades, WINCH, TTIN/TTOU and crashes.
// Also the master as PID 1: orphans it reaps, upgrades it refuses.

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using namespace procmodel;
using namespace procmodel::testing;

namespace {

using pids = std::vector<pid_t>;


lifecycle_config config(unsigned workers, unsigned batch) {
  lifecycle_config c = test_config(workers);
  c.reload_batch = batch;
  return c;
}

// A driver serving generation 1 with `c.workers` ready workers (pids 1000...),
// that counts the most processes its table ever held.
struct rig {
  explicit rig(const lifecycle_config& c) : d(c) {
    d.start();
    d.ready_generation(1);
    REQUIRE(d.processes().size() == c.workers);
  }
  action_list note(action_list acts) {
    peak = std::max(peak, d.processes().size());
    return acts;
  }
  action_list hup_to(const lifecycle_config& c) {
    note(d.command(command::reload));
    return note(d.loaded(c));
  }
  action_list ready(std::uint64_t g) { return note(d.ready_generation(g)); }
  action_list exit(pid_t pid, int status) { return note(d.exit(pid, status)); }
  // Every draining worker exits with 0.
  action_list drained() {
    action_list all;
    pids draining;
    for (const auto& p : d.processes())
      if (p.state == process_state::draining) draining.push_back(p.pid);
    for (pid_t pid : draining)
      for (auto& a : exit(pid, exited_with(0))) all.push_back(std::move(a));
    return all;
  }
  // The pid of generation `g`'s newest worker in `slot`; 0 if none.
  [[nodiscard]] pid_t pid_of(std::uint64_t g, unsigned slot) const {
    pid_t out = 0;
    for (const auto& p : d.processes())
      if (p.generation == g && p.slot == slot) out = p.pid;
    return out;
  }
  [[nodiscard]] std::vector<unsigned> slots_of(std::uint64_t g, process_state s) const {
    std::vector<unsigned> out;
    for (const auto& p : d.processes())
      if (p.generation == g && p.state == s) out.push_back(p.slot);
    std::sort(out.begin(), out.end());
    return out;
  }
  lifecycle_driver d;
  std::size_t peak = 0;
};

std::vector<unsigned> spawned_slots(const action_list& list, std::uint64_t g) {
  std::vector<unsigned> out;
  for (const auto& s : actions_of<actions::spawn>(list))
    if (s.generation == g) out.push_back(s.slot);
  return out;
}

using slots = std::vector<unsigned>;

}  // namespace

TEST_CASE("a rolling reload moves 2 slots at a time and never runs more than 10 of 8 workers",
          "[lifecycle][roll]") {
  rig r(config(8, 2));
  PM_SHOW_ON_FAILURE(r.d.describe());
  auto acts = r.hup_to(config(8, 2));
  CHECK(logs_with(acts, log_level::notice,
                  "reload: starting generation 2 with 8 worker(s), 2 at a time (rolling: at most "
                  "10 worker(s) at once)") == 1);
  CHECK(spawned_slots(acts, 2) == slots{0, 1});
  CHECK(r.d.armed(ready_timer(2)));
  REQUIRE(r.d.lifecycle().roll().has_value());
  CHECK(r.d.lifecycle().roll()->cap == 10);
  CHECK(r.d.lifecycle().roll()->moved == 0);

  for (unsigned batch = 0; batch < 4; ++batch) {
    INFO("batch " << batch);
    // Before the batch is ready, nothing of generation 1 drains.
    CHECK(r.slots_of(1, process_state::draining).empty());
    const bool last = batch == 3;
    acts = r.ready(2);
    if (last) {
      CHECK(r.d.lifecycle().generation() == 2);
      CHECK_FALSE(r.d.lifecycle().roll());
      CHECK(first_of<actions::serving>(acts)->generation == 2);
      CHECK(r.slots_of(1, process_state::draining) == slots{6, 7});
      CHECK_FALSE(r.d.armed(ready_timer(2)));
      break;
    }
    // The batch's old workers drain; the next batch waits until they exit.
    CHECK(r.slots_of(1, process_state::draining) == slots{2 * batch, 2 * batch + 1});
    CHECK(spawned_slots(acts, 2).empty());
    CHECK_FALSE(r.d.armed(ready_timer(2)));
    CHECK(count_of<actions::serving>(acts) == 0);
    CHECK(r.d.lifecycle().generation() == 1);
    CHECK(r.d.lifecycle().roll()->moved == 2 * batch + 2);
    auto ds = r.d.processes();
    pid_t first_draining = 0;
    for (const auto& p : ds)
      if (p.state == process_state::draining) first_draining = p.pid;
    acts = r.exit(first_draining, exited_with(0));
    CHECK(spawned_slots(acts, 2).empty());  // one still drains: 9 + 2 > 10
    acts = r.drained();
    CHECK(spawned_slots(acts, 2) == slots{2 * batch + 2, 2 * batch + 3});
    CHECK(r.d.armed(ready_timer(2)));
  }
  r.drained();
  CHECK(r.peak == 10);
  CHECK(r.d.processes().size() == 8);
  CHECK(r.slots_of(2, process_state::ready) == slots{0, 1, 2, 3, 4, 5, 6, 7});
  CHECK(count_of<actions::serving>(r.d.history()) == 2);  // the start and the promotion
  CHECK(logs_with(r.d.history(), log_level::notice, "reload: generation 2 serves with 8 worker(s)") == 1);
}

TEST_CASE("a rolling reload that fails puts the moved slots back in the serving generation",
          "[lifecycle][roll][rollback]") {
  rig r(config(6, 2));
  PM_SHOW_ON_FAILURE(r.d.describe());
  r.hup_to(config(6, 2));
  r.ready(2);
  r.drained();  // slots 0-1 moved; 2-3 starting
  REQUIRE(r.d.lifecycle().roll()->moved == 2);
  REQUIRE(r.slots_of(2, process_state::starting) == slots{2, 3});

  action_list acts;
  SECTION("a new worker of the batch crashes") {
    acts = r.exit(r.pid_of(2, 3), exited_with(3));
    CHECK(logs_with(acts, log_level::error, "reload to generation 2 rolled back: worker") == 1);
  }
  SECTION("the batch is not ready in time") {
    acts = r.note(r.d.advance(3s));
    CHECK(logs_with(acts, log_level::error,
                    "rolled back: not every worker was ready within 3000 ms") == 1);
  }
  SECTION("a new worker of a moved slot crashes") {
    acts = r.exit(r.pid_of(2, 0), killed_by(SIGSEGV));
    CHECK(logs_with(acts, log_level::error, "reload to generation 2 rolled back") == 1);
  }
  CHECK(logs_with(acts, log_level::notice,
                  "slot(s) 0-1 go back from generation 2 to generation 1") == 1);
  CHECK(spawned_slots(acts, 1) == slots{0, 1});
  CHECK(spawned_slots(acts, 2).empty());
  CHECK(r.d.lifecycle().generation() == 1);
  CHECK_FALSE(r.d.lifecycle().pending_generation());
  CHECK_FALSE(r.d.lifecycle().roll());
  CHECK(r.slots_of(2, process_state::ready).empty());
  CHECK(r.slots_of(2, process_state::starting).empty());
  CHECK_FALSE(r.d.armed(ready_timer(2)));
  r.ready(1);
  CHECK(r.slots_of(1, process_state::ready) == slots{0, 1, 2, 3, 4, 5});
  // The retired generation-2 workers leave; nothing respawns them.
  acts = r.drained();
  CHECK(count_of<actions::spawn>(acts) == 0);
  CHECK(r.d.processes().size() == 6);
}

TEST_CASE("a rolling reload between different worker counts", "[lifecycle][roll]") {
  SECTION("4 to 6: the cap is 6 + 2; slots 4 and 5 have no old worker to drain") {
    rig r(config(4, 2));
    PM_SHOW_ON_FAILURE(r.d.describe());
    r.hup_to(config(6, 2));
    CHECK(r.d.lifecycle().roll()->cap == 8);
    // With room for 8, the next batch need not wait for the old workers to exit.
    auto acts = r.ready(2);
    CHECK(r.slots_of(1, process_state::draining) == slots{0, 1});
    CHECK(spawned_slots(acts, 2) == slots{2, 3});
    acts = r.ready(2);
    CHECK(spawned_slots(acts, 2).empty());  // 4 + 2 draining + 2 > 8
    acts = r.drained();
    CHECK(spawned_slots(acts, 2) == slots{4, 5});
    acts = r.ready(2);
    CHECK(r.d.lifecycle().generation() == 2);
    CHECK(first_of<actions::serving>(acts)->workers == 6);
    CHECK(r.peak == 8);
  }
  SECTION("6 to 3 in batches of 2: slots 3-5 of the old generation drain at the promotion") {
    rig r(config(6, 2));
    PM_SHOW_ON_FAILURE(r.d.describe());
    r.hup_to(config(3, 2));
    CHECK(r.d.lifecycle().roll()->cap == 8);
    r.ready(2);
    auto acts = r.drained();
    CHECK(spawned_slots(acts, 2) == slots{2});
    acts = r.ready(2);
    CHECK(r.d.lifecycle().generation() == 2);
    CHECK(r.slots_of(1, process_state::draining) == slots{2, 3, 4, 5});
    CHECK(r.peak <= 8);
  }
  SECTION("a batch of every slot or more, or 0, is a whole reload") {
    for (unsigned batch : {0u, 4u, 9u}) {
      rig r(config(4, batch));
      auto acts = r.hup_to(config(4, batch));
      CHECK(spawned_slots(acts, 2) == slots{0, 1, 2, 3});
      CHECK_FALSE(r.d.lifecycle().roll());
    }
  }
}

TEST_CASE("a rolling reload waits for generations still draining from earlier reloads",
          "[lifecycle][roll]") {
  rig r(config(4, 0));
  PM_SHOW_ON_FAILURE(r.d.describe());
  r.hup_to(config(4, 0));
  r.ready(2);  // generation 1's four workers drain
  REQUIRE(r.slots_of(1, process_state::draining).size() == 4);
  auto acts = r.hup_to(config(4, 2));
  CHECK(spawned_slots(acts, 3).empty());  // 8 + 2 > 4 + 2
  CHECK(r.d.lifecycle().roll().has_value());
  pids gen1 = r.d.pids_of(1);
  for (std::size_t i = 0; i + 1 < gen1.size(); ++i)
    CHECK(spawned_slots(r.exit(gen1[i], exited_with(0)), 3).empty());
  acts = r.exit(gen1.back(), exited_with(0));
  CHECK(spawned_slots(acts, 3) == slots{0, 1});
}

TEST_CASE("a HUP during a rolling reload waits for it, then reads the newest configuration",
          "[lifecycle][roll]") {
  rig r(config(4, 2));
  PM_SHOW_ON_FAILURE(r.d.describe());
  r.hup_to(config(4, 2));
  r.ready(2);
  auto acts = r.note(r.d.command(command::reload));
  CHECK(logs_with(acts, log_level::notice, "another follows when it is done") == 1);
  CHECK(count_of<actions::load_config>(acts) == 0);
  r.drained();
  acts = r.ready(2);  // the roll ends...
  CHECK(r.d.lifecycle().generation() == 2);
  CHECK(count_of<actions::load_config>(acts) == 1);  // ...and the next reload reads the file
  acts = r.note(r.d.loaded(config(4, 2)));
  CHECK(r.d.lifecycle().roll().has_value());
  CHECK(r.d.lifecycle().roll()->generation == 3);
  // Generation 1's last two still drain: 6 + 2 > 6, generation 3 waits.
  CHECK(spawned_slots(acts, 3).empty());
  acts = r.drained();
  CHECK(spawned_slots(acts, 3) == slots{0, 1});
  CHECK(r.peak <= 6);
}

TEST_CASE("stops, upgrades, WINCH and resizes during a rolling reload", "[lifecycle][roll]") {
  rig r(config(4, 2));
  PM_SHOW_ON_FAILURE(r.d.describe());
  r.hup_to(config(4, 2));
  r.ready(2);  // slots 0-1 moved, their old workers drain; slots 2-3 wait

  SECTION("QUIT drains everything and starts nothing more") {
    auto acts = r.note(r.d.command(command::quit));
    CHECK(count_of<actions::spawn>(acts) == 0);
    CHECK_FALSE(r.d.lifecycle().roll());
    CHECK_FALSE(r.d.armed(ready_timer(2)));
    for (const auto& p : r.d.processes()) CHECK(p.state == process_state::draining);
    acts = r.drained();
    CHECK(count_of<actions::spawn>(acts) == 0);
    CHECK(r.d.exit_code() == 0);
  }
  SECTION("TERM terminates everything") {
    auto acts = r.note(r.d.command(command::stop));
    CHECK(count_of<actions::spawn>(acts) == 0);
    for (const auto& p : r.d.processes()) CHECK(p.state == process_state::terminating);
  }
  SECTION("an upgrade is refused until the roll is over") {
    auto acts = r.d.dispatch(events::upgrade_requested{true, 5s, 7});
    CHECK(count_of<actions::rename_pid_file>(acts) == 0);
    auto rep = first_of<actions::reply>(acts);
    REQUIRE(rep);
    CHECK_FALSE(rep->ok);
    CHECK(rep->text.find("a rolling reload to generation 2 is under way (2 of 4 slot(s) moved)") !=
          std::string::npos);
    r.drained();
    r.ready(2);
    acts = r.d.dispatch(events::upgrade_requested{true, 5s, 8});
    CHECK(count_of<actions::rename_pid_file>(acts) == 1);
  }
  SECTION("WINCH abandons the roll and drains every worker") {
    auto acts = r.note(r.d.command(command::drain_workers));
    CHECK_FALSE(r.d.lifecycle().roll());
    CHECK(count_of<actions::spawn>(acts) == 0);
    acts = r.drained();
    CHECK(count_of<actions::spawn>(acts) == 0);
    CHECK(r.d.processes().empty());
  }
  SECTION("TTIN and TTOU are refused") {
    auto acts = r.d.command(command::add_worker);
    CHECK(logs_with(acts, log_level::warn, "refused while a reload is under way") == 1);
    acts = r.d.command(command::remove_worker);
    CHECK(logs_with(acts, log_level::warn, "refused while a reload is under way") == 1);
  }
}

TEST_CASE("old workers crash during a rolling reload", "[lifecycle][roll]") {
  rig r(config(4, 2));
  PM_SHOW_ON_FAILURE(r.d.describe());
  r.hup_to(config(4, 2));
  const pid_t old3 = r.pid_of(1, 3);
  REQUIRE(old3 != 0);
  // An unmoved slot's old worker is respawned in the serving generation.
  auto acts = r.exit(old3, killed_by(SIGKILL));
  CHECK(spawned_slots(acts, 1) == slots{3});
  r.ready(1);
  // A moved slot's old worker was told to drain: its exit is the expected one.
  r.ready(2);
  REQUIRE(r.slots_of(1, process_state::draining) == slots{0, 1});
  acts = r.exit(r.pid_of(1, 0), killed_by(SIGSEGV));
  CHECK(spawned_slots(acts, 1).empty());
  acts = r.drained();
  CHECK(spawned_slots(acts, 2) == slots{2, 3});
  r.ready(2);
  CHECK(r.d.lifecycle().generation() == 2);
  CHECK(r.peak <= 6);
}

TEST_CASE("the master reaps processes that are not its workers and says so at debug level",
          "[lifecycle][pid1]") {
  lifecycle_driver d(config(2, 0));
  d.start();
  d.ready_generation(1);
  auto acts = d.exit(4242, exited_with(0));
  CHECK(logs_with(acts, log_level::debug, "reaped process 4242, not a worker of this master: "
                                          "exited with code 0") == 1);
  CHECK(acts.size() == 1);
  CHECK(d.processes().size() == 2);
}

TEST_CASE("a master that is PID 1 refuses to upgrade", "[lifecycle][pid1]") {
  lifecycle_driver d(config(2, 0));
  d.dispatch(events::started{1});
  d.ready_generation(1);
  auto acts = d.dispatch(events::upgrade_requested{true, 5s, 3});
  CHECK(count_of<actions::rename_pid_file>(acts) == 0);
  auto rep = first_of<actions::reply>(acts);
  REQUIRE(rep);
  CHECK_FALSE(rep->ok);
  CHECK(rep->text.find("the master is PID 1") != std::string::npos);
  acts = d.command(command::upgrade);
  CHECK(logs_with(acts, log_level::warn, "upgrade refused: the master is PID 1") == 1);
}
