#include <procmodel/lifecycle.hpp>
#include <procmodel/testing/lifecycle_driver.hpp>
#include "support/catch.hpp"

// Random walks through the lifecycle: many seeded sequences of every event
// in every phase — operator commands, exits with any status (of any pid,
// known or not), readiness reports, spawns that fail, configurations that
// load or are refused, late, timers falling due and clock jumps — with the
// master's invariants checked after every single event. A failing walk is
// shrunk to the shortest sequence that still breaks an invariant, and that
// sequence is printed with the actions of every step.
//
// PROCMODEL_WALK_SEED=<n> replays one walk; PROCMODEL_WALKS=<n> runs more.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <fmt/format.h>

using namespace std::chrono_literals;
using namespace procmodel;
using namespace procmodel::testing;

namespace {

// ---------------------------------------------------------------- steps

// One step of a walk, in terms that stay meaningful when steps before it
// are removed (the shrinker removes steps): processes are picked by their
// position in the table, modulo its size.
struct step {
  enum class kind {
    command,     // an operator command (`what`)
    exit,        // the process at `index` exits with `status`
    exit_stray,  // a pid the lifecycle never spawned exits
    ready,       // the process at `index` reports ready
    ready_stray, // a pid the lifecycle never spawned reports ready
    config,      // the outstanding load_config is answered (`ok`, `config`)
    timer,       // the next armed timer falls due
    jump,        // the clock moves `ms` forward, timers falling due on the way
    upgrade_auto,      // `-s upgrade` with a waiting client and a timeout of `ms`
    new_master_ready,  // the new master of the upgrade under way reports ready
    new_master_exit,   // the new master of the upgrade under way exits with `status`
    parent_gone,       // the master this one was upgraded from exits
  };
  kind what = kind::timer;
  command cmd = command::reopen;
  std::size_t index = 0;
  int status = 0;
  bool ok = true;
  lifecycle_config config{};
  int ms = 0;
  bool spawns_fail = false;  // every spawn this step causes fails (EAGAIN), and so do
                             // the pid file rename and the exec of an upgrade
  bool with_client = false;  // a command from a control client that waits for the outcome
};

std::string describe(const lifecycle_config& c) {
  return fmt::format(
      "workers {}, batch {}, ready_timeout {} ms, shutdown {} ms, terminate {} ms, cap {}, "
      "restarts {} in {} ms, backoff {}..{} ms",
      c.workers, c.reload_batch, c.ready_timeout.count(), c.shutdown_timeout.count(),
      c.terminate_timeout.count(), c.max_draining_generations, c.restart.max_restarts,
      c.restart.period.count(), c.restart.backoff_initial.count(),
      c.restart.backoff_max.count());
}

std::string describe(const step& s) {
  std::string out;
  switch (s.what) {
    case step::kind::command:
      out = fmt::format("command {}{}", to_string(s.cmd), s.with_client ? " (a client waits)" : "");
      break;
    case step::kind::exit:
      out = fmt::format("exit of table[{}] with {}", s.index, describe_wait_status(s.status));
      break;
    case step::kind::exit_stray: out = "exit of a pid never spawned"; break;
    case step::kind::ready: out = fmt::format("ready of table[{}]", s.index); break;
    case step::kind::ready_stray: out = "ready of a pid never spawned"; break;
    case step::kind::config:
      out = s.ok ? "config loads: " + describe(s.config) : std::string("config refused");
      break;
    case step::kind::timer: out = "the next timer falls due"; break;
    case step::kind::jump: out = fmt::format("clock jumps {} ms", s.ms); break;
    case step::kind::upgrade_auto: out = fmt::format("-s upgrade, timeout {} ms", s.ms); break;
    case step::kind::new_master_ready: out = "the new master reports ready"; break;
    case step::kind::new_master_exit:
      out = fmt::format("the new master exits with {}", describe_wait_status(s.status));
      break;
    case step::kind::parent_gone: out = "the parent master exits"; break;
  }
  if (s.spawns_fail) out += " (spawns fail)";
  return out;
}

int random_status(std::mt19937_64& rng) {
  static const int statuses[] = {exited_with(0), exited_with(1), exited_with(3),
                                 killed_by(SIGKILL), killed_by(SIGSEGV), killed_by(SIGTERM)};
  return statuses[rng() % std::size(statuses)];
}

lifecycle_config random_config(std::mt19937_64& rng) {
  lifecycle_config c;
  c.workers = 1 + static_cast<unsigned>(rng() % 3);
  // Half the configurations reload in batches (rolling), 1 or 2 slots at a time.
  c.reload_batch = static_cast<unsigned>(rng() % 4) / 2 * (1 + static_cast<unsigned>(rng() % 2));
  if (rng() % 3 == 0) c.workers += 2;
  c.ready_timeout = milliseconds(500 + 500 * static_cast<int>(rng() % 6));
  c.shutdown_timeout = milliseconds(1000 + 1000 * static_cast<int>(rng() % 10));
  c.terminate_timeout = milliseconds(1000 + 1000 * static_cast<int>(rng() % 5));
  c.max_draining_generations = 1 + static_cast<unsigned>(rng() % 3);
  c.restart.max_restarts = 1 + static_cast<unsigned>(rng() % 3);
  c.restart.period = milliseconds(1000 + 1000 * static_cast<int>(rng() % 10));
  c.restart.backoff_initial = 100ms;
  c.restart.backoff_max = 1600ms;
  return c;
}

step random_step(std::mt19937_64& rng) {
  step s;
  const auto r = rng() % 100;
  if (r < 22) {
    s.what = step::kind::command;
    // Stops are rarer than the rest, or most walks would end early.
    static const command commands[] = {
        command::reload,        command::reload,     command::reload,        command::reopen,
        command::drain_workers, command::add_worker, command::remove_worker, command::upgrade,
        command::reload,        command::add_worker, command::remove_worker, command::quit,
        command::stop};
    s.cmd = commands[rng() % std::size(commands)];
    if (s.cmd == command::quit || s.cmd == command::stop)
      if (rng() % 3 != 0) s.cmd = command::reload;
    s.with_client = s.cmd == command::reload && rng() % 2 == 0;
  } else if (r < 40) {
    s.what = step::kind::exit;
  } else if (r < 42) {
    s.what = step::kind::exit_stray;
  } else if (r < 62) {
    s.what = step::kind::ready;
  } else if (r < 63) {
    s.what = step::kind::ready_stray;
  } else if (r < 75) {
    s.what = step::kind::config;
    s.ok = rng() % 4 != 0;
    s.config = random_config(rng);
  } else if (r < 88) {
    s.what = step::kind::timer;
  } else if (r < 95) {
    s.what = step::kind::jump;
    static const int jumps[] = {1, 10, 100, 499, 1000, 3000, 20000};
    s.ms = jumps[rng() % std::size(jumps)];
  } else if (r < 96) {
    s.what = step::kind::upgrade_auto;
    s.ms = 500 + 500 * static_cast<int>(rng() % 4);
  } else if (r < 98) {
    s.what = step::kind::new_master_ready;
  } else if (r < 99) {
    s.what = step::kind::new_master_exit;
  } else {
    s.what = step::kind::parent_gone;
  }
  s.index = static_cast<std::size_t>(rng() % 8);
  s.status = random_status(rng);
  s.spawns_fail = rng() % 8 == 0;
  return s;
}

// ---------------------------------------------------------------- the walker

// Runs steps against a fresh lifecycle as a supervisor would (every spawn
// answered at once, load_config answered when a step says so, timers kept
// and fired at their deadlines) and checks the invariants after each event.
class walker {
 public:
  // `parent`: this master was started by an upgrade whose parent master lives.
  // `self`: this master's pid; 1 for a container's init, which never upgrades.
  explicit walker(const lifecycle_config& c, pid_t parent = 0, pid_t self = 100)
      : d_(c), parent_(parent), self_(self) {}

  // The first violation, or "" when every step kept every invariant.
  std::string run(const std::vector<step>& steps, bool trace = false) {
    trace_ = trace;
    events::started start;
    start.pid = self_;
    start.parent_master = parent_;
    if (auto v = deliver(start, false); !v.empty()) return v;
    for (std::size_t i = 0; i < steps.size(); ++i) {
      if (trace_) log_ += fmt::format("step {}: {}\n", i, describe(steps[i]));
      if (auto v = apply(steps[i]); !v.empty()) return fmt::format("at step {}: {}", i, v);
    }
    return "";
  }

  [[nodiscard]] std::size_t events() const noexcept { return events_; }
  [[nodiscard]] const std::string& trace() const noexcept { return log_; }
  [[nodiscard]] std::string table() const {
    std::string out = fmt::format("phase {}, generation {}, workers {}, pending {}\n",
                                  to_string(d_.current_phase()), d_.lifecycle().generation(),
                                  d_.lifecycle().workers(),
                                  d_.lifecycle().pending_generation().value_or(0));
    for (const auto& p : d_.processes())
      out += fmt::format("  pid {} slot {} generation {} {}\n", p.pid, p.slot, p.generation,
                         to_string(p.state));
    for (const auto& [id, at] : timers_)
      out += fmt::format("  timer {} due at +{} ms\n", to_string(id), at - origin_ms());
    return out;
  }

 private:
  static long origin_ms() { return 0; }

  std::string apply(const step& s) {
    const auto& table = d_.processes();
    switch (s.what) {
      case step::kind::command: {
        std::uint64_t client = s.with_client ? issue_client(false) : 0;
        return deliver(events::commanded{s.cmd, client}, s.spawns_fail);
      }
      case step::kind::exit:
        if (table.empty()) return "";
        return deliver(events::exited{table[s.index % table.size()].pid, s.status}, s.spawns_fail);
      case step::kind::exit_stray: return deliver(events::exited{99999, s.status}, s.spawns_fail);
      case step::kind::ready:
        if (table.empty()) return "";
        return deliver(events::ready{table[s.index % table.size()].pid}, s.spawns_fail);
      case step::kind::ready_stray: return deliver(events::ready{99998}, s.spawns_fail);
      case step::kind::config:
        if (!config_asked_) return "";
        config_asked_ = false;
        return deliver(events::config_loaded{s.ok, s.config, s.ok ? "" : "does not parse"},
                       s.spawns_fail);
      case step::kind::timer: {
        if (timers_.empty()) return "";
        auto next = std::min_element(timers_.begin(), timers_.end(),
                                     [](const auto& a, const auto& b) { return a.second < b.second; });
        return fire_until(next->second, s.spawns_fail);
      }
      case step::kind::jump: return fire_until(now_ + s.ms, s.spawns_fail);
      case step::kind::upgrade_auto:
        return deliver(events::upgrade_requested{true, milliseconds(s.ms), issue_client(true)},
                       s.spawns_fail);
      case step::kind::new_master_ready:
        if (!new_master_alive_) return "";
        return deliver(events::new_master_ready{new_master_}, s.spawns_fail);
      case step::kind::new_master_exit:
        if (!new_master_alive_) return "";
        new_master_alive_ = false;
        return deliver(events::exited{new_master_, s.status}, s.spawns_fail);
      case step::kind::parent_gone:
        if (!parent_ || parent_gone_) return "";
        parent_gone_ = true;
        return deliver(events::parent_master_gone{}, s.spawns_fail);
    }
    return "";
  }

  // Fires every timer due up to `until`, in deadline order, then sets the clock there.
  std::string fire_until(long until, bool spawns_fail) {
    for (;;) {
      auto next = std::min_element(timers_.begin(), timers_.end(),
                                   [](const auto& a, const auto& b) { return a.second < b.second; });
      if (next == timers_.end() || next->second > until) break;
      const timer_id id = next->first;
      now_ = std::max(now_, next->second);
      timers_.erase(next);
      if (auto v = deliver(events::timer_fired{id}, spawns_fail); !v.empty()) return v;
    }
    now_ = std::max(now_, until);
    return "";
  }

  // One event, then the answers to the spawns it asked for, each checked.
  std::string deliver(const event& first, bool spawns_fail) {
    std::vector<event> queue{first};
    for (std::size_t i = 0; i < queue.size(); ++i) {
      const event e = queue[i];
      if (const auto* sp = std::get_if<events::spawned>(&e)) inflight_.erase(inflight_.find({sp->slot, sp->generation}));
      if (const auto* sf = std::get_if<events::spawn_failed>(&e)) inflight_.erase(inflight_.find({sf->slot, sf->generation}));
      const auto before = snapshot();
      d_.at(milliseconds(now_));
      auto acts = d_.send(e);
      ++events_;
      if (trace_) log_ += indent(to_string(acts));
      for (const auto& a : acts) {
        if (const auto* sp = std::get_if<actions::spawn>(&a)) {
          inflight_.insert({sp->slot, sp->generation});
          if (spawns_fail)
            queue.push_back(events::spawn_failed{sp->slot, sp->generation, EAGAIN});
          else
            queue.push_back(events::spawned{sp->slot, sp->generation, next_pid_++});
        }
        if (std::holds_alternative<actions::load_config>(a)) config_asked_ = true;
        // The supervisor's answers to the upgrade's own actions.
        if (std::holds_alternative<actions::rename_pid_file>(a))
          queue.push_back(events::pid_file_renamed{!spawns_fail, spawns_fail ? "EACCES" : ""});
        if (std::holds_alternative<actions::exec_upgrade>(a)) {
          if (spawns_fail) {
            queue.push_back(events::new_master_failed{"fork: EAGAIN"});
          } else {
            new_master_ = next_pid_++;
            new_master_alive_ = true;
            new_master_ready_ = false;
            handed_over_ = false;
            queue.push_back(events::new_master_started{new_master_});
          }
        }
        if (const auto* t = std::get_if<actions::arm_timer>(&a))
          timers_[t->id] = now_ + static_cast<long>(t->after.count());
        if (const auto* c = std::get_if<actions::cancel_timer>(&a)) timers_.erase(c->id);
      }
      if (auto v = check(e, before, acts); !v.empty())
        return v + "\nactions of the event:\n" + indent(to_string(acts)) + "table after it:\n" +
               table();
    }
    return "";
  }

  static std::string indent(const std::string& text) {
    std::string out;
    std::size_t start = 0;
    while (start < text.size()) {
      auto end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      out += "    " + text.substr(start, end - start) + "\n";
      start = end + 1;
    }
    return out;
  }

  struct state {
    phase ph;
    std::uint64_t generation;
    std::set<pid_t> pids;
  };
  state snapshot() const {
    state s{d_.current_phase(), d_.lifecycle().generation(), {}};
    for (const auto& p : d_.processes()) s.pids.insert(p.pid);
    return s;
  }

  // The invariants, after one event whose actions are `acts`.
  std::string check(const event& e, const state& before, const action_list& acts) {
    const auto& l = d_.lifecycle();
    if (const auto* r = std::get_if<events::new_master_ready>(&e); r && r->pid == new_master_)
      new_master_ready_ = true;
    const phase ph = l.current_phase();
    std::set<pid_t> after;
    for (const auto& p : l.processes()) after.insert(p.pid);
    const bool stopping_before = before.ph == phase::quitting || before.ph == phase::stopping ||
                                 before.ph == phase::exited;

    // WINCH leaves the slots empty until the next promotion.
    if (const auto* c = std::get_if<events::commanded>(&e);
        c && c->what == command::drain_workers && before.ph == phase::running)
      idle_ = true;
    if (l.generation() != before.generation) {
      idle_ = false;
      served_.insert(l.generation());
      stopped_serving_[before.generation] = ++promotions_;
    }
    for (const auto& a : acts) {
      if (const auto* sp = std::get_if<actions::spawn>(&a)) {
        if (stopping_before || exited_)
          return fmt::format("spawn(slot {}, gen {}) while the master is {}", sp->slot,
                             sp->generation, to_string(before.ph));
        if (sp->generation < before.generation)
          return fmt::format("spawn into generation {}, older than the serving {}",
                             sp->generation, before.generation);
        if (sp->generation > max_generation_ + 1)
          return fmt::format("spawn into generation {} skips numbers (highest so far {})",
                             sp->generation, max_generation_);
        if (sp->generation < max_generation_ && sp->generation != l.generation())
          return fmt::format("spawn into generation {}: neither serving ({}) nor the newest ({})",
                             sp->generation, l.generation(), max_generation_);
        max_generation_ = std::max(max_generation_, sp->generation);
      }
      if (const auto* s = std::get_if<actions::send>(&a))
        if (!before.pids.count(s->pid) && !after.count(s->pid))
          return fmt::format("send to pid {}, which is not in the table", s->pid);
      if (const auto* k = std::get_if<actions::kill>(&a))
        if (!before.pids.count(k->pid) && !after.count(k->pid))
          return fmt::format("kill of pid {}, which is not in the table", k->pid);
      // The master is gone once it exits: nothing may be left for it to do.
      if (exited_ && (std::holds_alternative<actions::spawn>(a) ||
                      std::holds_alternative<actions::send>(a) ||
                      std::holds_alternative<actions::kill>(a) ||
                      std::holds_alternative<actions::arm_timer>(a) ||
                      std::holds_alternative<actions::exit>(a)))
        return "an action after the exit: " + to_string(a);
      if (std::holds_alternative<actions::exit>(a)) {
        if (ph != phase::exited) return "exit while the phase is " + std::string(to_string(ph));
        exited_ = true;
      }
      // Every waiting control client gets exactly one answer, and an upgrade's
      // "ok" only once its new master said it serves.
      if (const auto* r = std::get_if<actions::reply>(&a); r && r->client != 0) {
        auto it = waiting_.find(r->client);
        if (it == waiting_.end())
          return fmt::format("a reply to client {}, which is not waiting", r->client);
        if (r->ok && it->second && !new_master_ready_)
          return fmt::format("upgrade client {} told ok before the new master was ready",
                             r->client);
        waiting_.erase(it);
      }
      if (std::holds_alternative<actions::exec_upgrade>(a) && self_ == 1)
        return "an upgrade started by a master that is PID 1";
      if (const auto* h = std::get_if<actions::hand_over>(&a)) {
        if (h->pid != new_master_ || !new_master_ready_ || !new_master_alive_)
          return fmt::format("hand over to {}, which is not a live, ready new master", h->pid);
        handed_over_ = true;
      }
      if (const auto* sg = std::get_if<actions::signal_new_master>(&a))
        if (sg->pid != new_master_ || !new_master_alive_)
          return fmt::format("signal {} to {}, which is not the live new master", sg->signo,
                             sg->pid);
      // The parent master hears "ready" once, and only when the first generation serves.
      if (std::holds_alternative<actions::report_ready_to_parent>(a)) {
        if (reported_to_parent_) return "ready reported to the parent master twice";
        if (!parent_ || parent_gone_) return "ready reported to a parent master that is gone";
        if (!all_ready(l.generation(), l.workers()))
          return "ready reported to the parent before the first generation serves";
        reported_to_parent_ = true;
      }
      if (const auto* n = std::get_if<actions::notify>(&a)) {
        if (n->what == actions::notice::reloading) reloading_ = true;
        if (n->what == actions::notice::stopping) reloading_ = false;
        if (n->what == actions::notice::ready) {
          reloading_ = false;
          if (!announced_ && !all_ready(l.generation(), l.workers()))
            return fmt::format(
                "READY before the first generation is ready: generation {} does not serve every "
                "one of its {} slot(s)",
                l.generation(), l.workers());
          announced_ = true;
        }
      }
    }

    // A reload takes its number when its configuration loads, before its
    // first spawn (a roll may wait for room, and be abandoned meanwhile).
    if (auto p = l.pending_generation()) max_generation_ = std::max(max_generation_, *p);

    if (l.generation() < before.generation)
      return fmt::format("the serving generation went back from {} to {}", before.generation,
                         l.generation());
    if (auto p = l.pending_generation(); p && *p <= l.generation())
      return fmt::format("pending generation {} is not newer than the serving {}", *p,
                         l.generation());

    // Exit iff the table is empty, in quitting and stopping; a new master
    // this one is stopping (not one it handed over to) is waited for too.
    if ((ph == phase::quitting || ph == phase::stopping) && after.empty() &&
        (!new_master_alive_ || handed_over_))
      return fmt::format("{} with an empty table and no exit", to_string(ph));
    if (ph == phase::exited && !after.empty())
      return fmt::format("exited with {} process(es) in the table", after.size());
    if (ph == phase::exited && !timers_.empty())
      return "exited with a timer armed: " + to_string(timers_.begin()->first);
    if (exited_ && !waiting_.empty())
      return fmt::format("exited with control client {} never answered", waiting_.begin()->first);

    // A rolling reload starts a batch only with room for it: the table
    // then holds at most the roll's cap.
    if (auto roll = l.roll()) {
      std::size_t spawns = 0;
      for (const auto& sp : actions_of<actions::spawn>(acts))
        spawns += sp.generation == roll->generation ? 1 : 0;
      if (spawns != 0 && after.size() + spawns > roll->cap)
        return fmt::format("a rolling reload spawned {} worker(s) with {} in the table, over its "
                           "cap of {}",
                           spawns, after.size(), roll->cap);
    }

    // One starting or ready worker per serving slot (or, for a slot a
    // rolling reload moved, of the generation it moves to).
    if (ph == phase::running) {
      for (unsigned k = 0; k < std::max(l.workers(), 8u); ++k) {
        unsigned live = 0;
        for (const auto& p : l.processes())
          if (p.slot == k && p.generation == l.generation() &&
              (p.state == process_state::starting || p.state == process_state::ready))
            ++live;
        if (live > 1) return fmt::format("slot {} has {} live workers of generation {}", k, live,
                                         l.generation());
        if (auto roll = l.roll(); roll && k < roll->moved)
          continue;
        if (k < l.workers() && live == 0 && !idle_ &&
            !timers_.count({timer_kind::respawn, k}) && !inflight_.count({k, l.generation()}))
          return fmt::format("slot {} of generation {} has no worker and no respawn pending", k,
                             l.generation());
      }
    }

    // RELOADING is answered by READY or STOPPING: once no reload is under
    // way (no configuration asked for, no generation starting) it must be.
    if (reloading_ && !config_asked_ && !l.pending_generation() && ph == phase::running)
      return "RELOADING=1 with no reload under way and no READY=1 or STOPPING=1 after it";

    // The draining cap terminates the generations that stopped serving
    // longest ago (a rolled-back one never served): never one that served
    // more recently than one it keeps draining.
    std::set<std::uint64_t> capped;
    for (const auto& lg : actions_of<actions::log>(acts)) {
      auto at = lg.text.find("draining: terminating generation ");
      if (at != std::string::npos)
        capped.insert(std::stoull(lg.text.substr(at + std::strlen("draining: terminating generation "))));
    }
    for (std::uint64_t g : capped)
      for (const auto& p : l.processes())
        if (p.state == process_state::draining && p.generation != l.generation() &&
            recency(p.generation) < recency(g))
          return fmt::format(
              "the draining cap terminated generation {} (stopped serving {}) but keeps "
              "generation {} (stopped serving {}) draining",
              g, describe_recency(g), p.generation, describe_recency(p.generation));
    return "";
  }

  // When a generation stopped serving: 0 for one that never served (rolled
  // back), else the promotion that replaced it; the serving one is newest.
  long recency(std::uint64_t g) const {
    if (!served_.count(g) && g != 1) return 0;
    auto it = stopped_serving_.find(g);
    return it == stopped_serving_.end() ? 1'000'000'000L : it->second;
  }
  std::string describe_recency(std::uint64_t g) const {
    long r = recency(g);
    return r == 0 ? "never: rolled back" : fmt::format("at promotion {}", r);
  }

  std::uint64_t issue_client(bool upgrade) {
    waiting_[++last_client_] = upgrade;
    return last_client_;
  }

  bool all_ready(std::uint64_t g, unsigned workers) const {
    for (unsigned k = 0; k < workers; ++k)
      if (std::none_of(d_.processes().begin(), d_.processes().end(), [&](const process_info& p) {
            return p.generation == g && p.slot == k && p.state == process_state::ready;
          }))
        return false;
    return true;
  }

  lifecycle_driver d_;
  pid_t parent_ = 0;
  pid_t self_ = 100;
  bool parent_gone_ = false;
  bool reported_to_parent_ = false;
  pid_t new_master_ = 0;  // the last new master started
  bool new_master_alive_ = false;
  bool new_master_ready_ = false;
  bool handed_over_ = false;  // the service went on in the new master
  std::map<std::uint64_t, bool> waiting_;  // control clients owed an answer: upgrade or not
  std::uint64_t last_client_ = 0;
  long now_ = 0;  // ms since the driver's origin
  pid_t next_pid_ = 1000;
  std::map<timer_id, long> timers_;
  std::multiset<std::pair<unsigned, std::uint64_t>> inflight_;  // spawns not answered yet
  bool config_asked_ = false;
  bool idle_ = false;
  bool exited_ = false;
  bool reloading_ = false;
  bool announced_ = false;
  std::uint64_t max_generation_ = 1;
  std::set<std::uint64_t> served_{1};
  std::map<std::uint64_t, long> stopped_serving_;
  long promotions_ = 0;
  std::size_t events_ = 0;
  bool trace_ = false;
  std::string log_;
};

struct walk {
  lifecycle_config config;
  pid_t parent = 0;  // started by an upgrade whose parent master lives
  pid_t self = 100;  // 1: the master is PID 1
  std::vector<step> steps;
};

walk make_walk(std::uint64_t seed, std::size_t length) {
  std::mt19937_64 rng(seed);
  walk w;
  w.config = random_config(rng);
  if (rng() % 4 == 0) w.parent = 2;
  if (rng() % 8 == 0) w.self = 1;
  for (std::size_t i = 0; i < length; ++i) w.steps.push_back(random_step(rng));
  return w;
}

std::string violation(const walk& w) {
  walker x(w.config, w.parent, w.self);
  return x.run(w.steps);
}

// The violation's kind: its text up to the first digit, so that shrinking
// keeps the same broken invariant.
std::string kind_of(const std::string& v) {
  auto colon = v.find(": ");
  std::string rest = colon == std::string::npos ? v : v.substr(colon + 2);
  return rest.substr(0, std::min(rest.find_first_of("0123456789\n"), std::size_t{40}));
}

// Delta debugging: drops chunks, then single steps, while the same
// invariant still breaks.
walk shrink(walk w) {
  const std::string want = kind_of(violation(w));
  for (std::size_t chunk = w.steps.size() / 2; chunk >= 1; chunk /= 2) {
    bool progress = true;
    while (progress) {
      progress = false;
      for (std::size_t at = 0; at + chunk <= w.steps.size();) {
        walk t = w;
        t.steps.erase(t.steps.begin() + static_cast<long>(at),
                      t.steps.begin() + static_cast<long>(at + chunk));
        auto v = violation(t);
        if (!v.empty() && kind_of(v) == want) {
          w = std::move(t);
          progress = true;
        } else {
          at += chunk;
        }
      }
    }
  }
  // Then the spawn failures a step does not need.
  for (auto& st : w.steps) {
    if (!st.spawns_fail) continue;
    st.spawns_fail = false;
    auto v = violation(w);
    if (v.empty() || kind_of(v) != want) st.spawns_fail = true;
  }
  return w;
}

std::string report(std::uint64_t seed, const walk& original) {
  walk small = shrink(original);
  walker x(small.config, small.parent, small.self);
  auto v = x.run(small.steps, true);
  return fmt::format(
      "seed {} (replay with PROCMODEL_WALK_SEED={}): {} steps, shrunk to {}\nconfig: {}{}{}\n"
      "violation {}\n--- the shrunk walk, with the actions of every event ---\n{}",
      seed, seed, original.steps.size(), small.steps.size(), describe(small.config),
      small.parent ? ", started by an upgrade (parent master lives)" : "",
      small.self == 1 ? ", the master is PID 1" : "", v,
      x.trace());
}

std::uint64_t env_number(const char* name, std::uint64_t otherwise) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : otherwise;
}

}  // namespace

TEST_CASE("random walks keep the lifecycle's invariants after every event",
          "[lifecycle][walk]") {
  const std::uint64_t only = env_number("PROCMODEL_WALK_SEED", 0);
  const std::uint64_t walks = only ? 1 : env_number("PROCMODEL_WALKS", 1000);
  constexpr std::size_t length = 300;
  std::size_t events = 0, failed = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < walks; ++i) {
    const std::uint64_t seed = only ? only : 1 + i;
    walk w = make_walk(seed, length);
    walker x(w.config, w.parent, w.self);
    auto v = x.run(w.steps);
    events += x.events();
    if (!v.empty() && failed++ < 1) FAIL_CHECK(report(seed, w));
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  WARN(walks << " walks, " << events << " events checked in " << static_cast<long>(ms)
             << " ms; " << failed << " walk(s) broke an invariant");
  CHECK(failed == 0);
  if (!only) CHECK(events >= 100'000);
}
