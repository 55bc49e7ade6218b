#pragma once

/// @file testing/lifecycle_driver.hpp
/// Drives a Lifecycle policy by hand, for tests: a manual clock, events in,
/// actions out, and the timers the lifecycle arms kept and fired as a
/// supervisor would. No system call, no fork.
///
/// @code
/// procmodel::testing::lifecycle_driver d({.workers = 2});
/// auto acts = d.start();                                 // spawns slots 0 and 1, pids 1000, 1001
/// acts = d.at(50ms).send(procmodel::events::exited{1000, 0});
/// REQUIRE(procmodel::testing::count_of<procmodel::actions::spawn>(acts) == 1);
/// @endcode

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <sys/types.h>

#include <fmt/format.h>

#include "../lifecycle.hpp"
#include "wait_status.hpp"

namespace procmodel::testing {

/// The restart policy the lifecycle's tests share: 3 immediate respawns of a
/// slot per 10 s, then a backoff of 100 ms doubling to 1600 ms.
inline restart_policy quick_restarts() {
  return {.max_restarts = 3,
          .period = milliseconds(10'000),
          .backoff_initial = milliseconds(100),
          .backoff_max = milliseconds(1'600)};
}

/// The configuration most of the lifecycle's tests start from: `workers`
/// slots, quick_restarts(), new workers ready within 3 s, drains of 10 s,
/// fast stops of 5 s.
inline lifecycle_config test_config(unsigned workers = 2) {
  lifecycle_config c;
  c.workers = workers;
  c.terminate_timeout = milliseconds(5'000);
  c.shutdown_timeout = milliseconds(10'000);
  c.ready_timeout = milliseconds(3'000);
  c.restart = quick_restarts();
  return c;
}

// The lifecycle's timers by name, for expectations such as
// `d.due_in(respawn_timer(0))`.
/// The fast stop's (and a drain's) SIGKILL deadline.
constexpr timer_id escalation_timer{timer_kind::kill_escalation, 0};
/// The helpers' own SIGKILL deadline after the workers'.
constexpr timer_id helpers_escalation_timer{timer_kind::kill_escalation, 1};
/// A slot waiting out its backoff.
constexpr timer_id respawn_timer(unsigned slot) { return {timer_kind::respawn, slot}; }
/// A generation's readiness deadline.
constexpr timer_id ready_timer(std::uint64_t generation) {
  return {timer_kind::ready_deadline, static_cast<unsigned>(generation)};
}
/// A retired worker's drain deadline.
constexpr timer_id retire_timer(pid_t pid) {
  return {timer_kind::retire_deadline, static_cast<unsigned>(pid)};
}
/// A worker's next heartbeat (then its grace).
constexpr timer_id heartbeat_timer(pid_t pid) {
  return {timer_kind::heartbeat, static_cast<unsigned>(pid)};
}
/// A worker's max_age.
constexpr timer_id age_timer(pid_t pid) {
  return {timer_kind::max_age, static_cast<unsigned>(pid)};
}
/// A helper waiting out its backoff.
constexpr timer_id helper_respawn_timer(unsigned id) { return {timer_kind::helper_respawn, id}; }

/// What Lifecycle::handle returns: actions, in order.
using action_list = std::vector<action>;

/// Every action of type `A` in `list`, in order.
template <class A>
std::vector<A> actions_of(const action_list& list) {
  std::vector<A> out;
  for (const auto& a : list)
    if (const auto* p = std::get_if<A>(&a)) out.push_back(*p);
  return out;
}

/// How many actions of type `A` are in `list`.
template <class A>
std::size_t count_of(const action_list& list) {
  std::size_t n = 0;
  for (const auto& a : list) n += std::holds_alternative<A>(a) ? 1 : 0;
  return n;
}

/// The first action of type `A` in `list`, if any.
template <class A>
std::optional<A> first_of(const action_list& list) {
  for (const auto& a : list)
    if (const auto* p = std::get_if<A>(&a)) return *p;
  return std::nullopt;
}

/// The position of the first action of type `A` in `list`, or `list.size()`.
template <class A>
std::size_t index_of(const action_list& list) {
  for (std::size_t i = 0; i < list.size(); ++i)
    if (std::holds_alternative<A>(list[i])) return i;
  return list.size();
}

/// The `send` actions of `list` that carry `what`, in order.
inline std::vector<actions::send> sends_of(const action_list& list, worker_command what) {
  std::vector<actions::send> out;
  for (const auto& s : actions_of<actions::send>(list))
    if (s.what == what) out.push_back(s);
  return out;
}

/// The pids `list` sends `what` to, in order.
inline std::vector<pid_t> pids_sent(const action_list& list, worker_command what) {
  std::vector<pid_t> out;
  for (const auto& s : sends_of(list, what)) out.push_back(s.pid);
  return out;
}

/// How many log actions of `list` are at `level` and contain `needle`.
inline std::size_t logs_with(const action_list& list, log_level level, std::string_view needle) {
  std::size_t n = 0;
  for (const auto& l : actions_of<actions::log>(list))
    n += (l.level == level && l.text.find(needle) != std::string::npos) ? 1 : 0;
  return n;
}

/// The name of a worker command: "quit", "terminate", "reopen".
constexpr std::string_view to_string(worker_command c) noexcept {
  switch (c) {
    case worker_command::quit: return "quit";
    case worker_command::terminate: return "terminate";
    case worker_command::reopen: return "reopen";
  }
  return "?";
}

/// The name of a timer: "respawn[3]", "kill_escalation[0]".
inline std::string to_string(const timer_id& id) {
  return fmt::format("{}[{}]", procmodel::to_string(id.kind), id.key);
}

/// One action, readably: "spawn(slot 0, gen 1)", "send(1000, quit, 10000)".
inline std::string to_string(const action& a) {
  return std::visit(
      [](const auto& x) -> std::string {
        using A = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<A, actions::spawn>)
          return fmt::format("spawn(slot {}, gen {})", x.slot, x.generation);
        else if constexpr (std::is_same_v<A, actions::spawn_helper>)
          return fmt::format("spawn_helper({})", x.helper);
        else if constexpr (std::is_same_v<A, actions::send>)
          return fmt::format("send({}, {}, {})", x.pid, to_string(x.what), x.argument);
        else if constexpr (std::is_same_v<A, actions::kill>)
          return fmt::format("kill({}, {})", x.pid, x.signo);
        else if constexpr (std::is_same_v<A, actions::arm_timer>)
          return fmt::format("arm_timer({}, {} ms)", to_string(x.id), x.after.count());
        else if constexpr (std::is_same_v<A, actions::cancel_timer>)
          return fmt::format("cancel_timer({})", to_string(x.id));
        else if constexpr (std::is_same_v<A, actions::stop_listening>)
          return x.freeze ? "stop_listening" : "stop_listening(no freeze)";
        else if constexpr (std::is_same_v<A, actions::reopen_logs>)
          return "reopen_logs";
        else if constexpr (std::is_same_v<A, actions::log>)
          return fmt::format("log({}, \"{}\")", procmodel::to_string(x.level), x.text);
        else if constexpr (std::is_same_v<A, actions::load_config>)
          return "load_config";
        else if constexpr (std::is_same_v<A, actions::serving>)
          return fmt::format("serving(gen {}, {} workers)", x.generation, x.workers);
        else if constexpr (std::is_same_v<A, actions::exec_upgrade>)
          return fmt::format("exec_upgrade(gen {})", x.next_generation);
        else if constexpr (std::is_same_v<A, actions::rename_pid_file>)
          return "rename_pid_file";
        else if constexpr (std::is_same_v<A, actions::restore_pid_file>)
          return x.take_back_control ? "restore_pid_file" : "restore_pid_file(pid file only)";
        else if constexpr (std::is_same_v<A, actions::signal_new_master>)
          return fmt::format("signal_new_master({}, {})", x.pid, x.signo);
        else if constexpr (std::is_same_v<A, actions::reply>)
          return fmt::format("reply({}, {}, \"{}\")", x.client, x.ok ? "ok" : "error", x.text);
        else if constexpr (std::is_same_v<A, actions::report_ready_to_parent>)
          return "report_ready_to_parent";
        else if constexpr (std::is_same_v<A, actions::hand_over>)
          return fmt::format("hand_over({})", x.pid);
        else if constexpr (std::is_same_v<A, actions::notify>)
          return x.what == actions::notice::ready       ? "notify(ready)"
                 : x.what == actions::notice::reloading ? "notify(reloading)"
                                                        : "notify(stopping)";
        else
          return fmt::format("exit({}{})", x.code, x.remove_socket_files ? ", remove socket files" : "");
      },
      a);
}

/// The service-manager notices in `list`, rendered ("notify(ready)"), in order.
inline std::vector<std::string> notices_of(const action_list& list) {
  std::vector<std::string> out;
  for (const auto& a : list)
    if (std::holds_alternative<actions::notify>(a)) out.push_back(to_string(a));
  return out;
}

/// A list of actions, one per line, for failure messages.
inline std::string to_string(const action_list& list) {
  std::string out;
  for (const auto& a : list) out += to_string(a) + "\n";
  return out;
}

/// A Lifecycle with a manual clock and a timer table. `send` feeds one event;
/// `dispatch` also answers each spawn with a `spawned` event carrying a fresh
/// pid (from `first_pid` up), in the order basic_supervisor does; `advance`
/// moves the clock and fires the timers that fall due, each at its deadline.
template <class Lifecycle = nginx_lifecycle>
class basic_lifecycle_driver {
 public:
  /// The clock's time points.
  using time_point = steady_clock::time_point;

  /// A driver whose clock reads `origin()` and whose first spawn gets `first_pid`.
  explicit basic_lifecycle_driver(const lifecycle_config& config = {}, pid_t first_pid = 1000)
      : lifecycle_(config), next_pid_(first_pid) {}

  /// A driver whose generation 1 was started at t = 0 and reported ready
  /// (pids 1000, 1001, ...): where most tests begin. Throws std::logic_error
  /// if the lifecycle did not start `config.workers` workers.
  static basic_lifecycle_driver serving(const lifecycle_config& config) {
    basic_lifecycle_driver d(config);
    d.start();
    d.ready_generation(1);
    if (d.processes().size() != config.workers)
      throw std::logic_error("lifecycle_driver: the first generation did not start every worker");
    return d;
  }

  /// Time zero of the manual clock (an arbitrary, fixed point).
  static time_point origin() noexcept { return time_point{} + std::chrono::hours(1); }

  /// Sets the clock to `t` after origin(); it never goes back. Fires no timer.
  basic_lifecycle_driver& at(milliseconds t) {
    if (origin() + t < now_) throw std::logic_error("lifecycle_driver: the clock cannot go back");
    now_ = origin() + t;
    return *this;
  }

  /// Moves the clock `d` forward. Fires no timer (advance() does).
  basic_lifecycle_driver& after(milliseconds d) { return at(elapsed() + d); }

  /// The manual clock.
  [[nodiscard]] time_point now() const noexcept { return now_; }
  /// Time since origin().
  [[nodiscard]] milliseconds elapsed() const noexcept {
    return std::chrono::duration_cast<milliseconds>(now_ - origin());
  }

  /// Feeds exactly one event at now(); returns its actions.
  action_list send(const event& e) {
    action_list out = lifecycle_.handle(e, now_);
    record(out);
    return out;
  }

  /// Feeds `e`, then answers every spawn action (its own and those that
  /// follow) with `spawned` (or `spawn_failed` while fail_spawns() is on),
  /// every rename_pid_file with `pid_file_renamed` (see fail_pid_file_rename()),
  /// and every load_config with the answer_load_config() answer if one is
  /// set, queued as basic_supervisor queues them. Returns every action, in order.
  action_list dispatch(const event& e) {
    std::deque<event> pending{e};
    action_list all;
    while (!pending.empty()) {
      event next = std::move(pending.front());
      pending.pop_front();
      for (auto& a : send(next)) {
        if (const auto* s = std::get_if<actions::spawn>(&a)) {
          if (spawn_error_ != 0)
            pending.push_back(events::spawn_failed{s->slot, s->generation, spawn_error_, spawn_reason_});
          else
            pending.push_back(events::spawned{s->slot, s->generation, next_pid_++});
        }
        if (const auto* h = std::get_if<actions::spawn_helper>(&a)) {
          if (spawn_error_ != 0)
            pending.push_back(events::helper_spawn_failed{h->helper, spawn_error_, spawn_reason_});
          else
            pending.push_back(events::helper_spawned{h->helper, next_pid_++});
        }
        if (std::holds_alternative<actions::load_config>(a) && config_answer_)
          pending.push_back(*config_answer_);
        if (std::holds_alternative<actions::rename_pid_file>(a))
          pending.push_back(events::pid_file_renamed{rename_error_.empty(), rename_error_});
        all.push_back(std::move(a));
      }
    }
    return all;
  }

  /// `started`, dispatched.
  action_list start() { return dispatch(events::started{}); }
  /// An operator's command, dispatched.
  action_list command(procmodel::command c) { return dispatch(events::commanded{c}); }
  /// A child exit, dispatched.
  action_list exit(pid_t pid, int status) { return dispatch(events::exited{pid, status}); }
  /// A readiness report, dispatched.
  action_list ready(pid_t pid) { return dispatch(events::ready{pid}); }

  /// Moves the clock `d` forward, firing each timer that falls due on the way,
  /// at its own deadline and in deadline order (dispatched). Returns their actions.
  action_list advance(milliseconds d) { return advance_to(elapsed() + d); }

  /// As advance(), to `t` after origin().
  action_list advance_to(milliseconds t) {
    const time_point target = origin() + t;
    if (target < now_) throw std::logic_error("lifecycle_driver: the clock cannot go back");
    action_list all;
    for (;;) {
      auto due = timers_.end();
      for (auto it = timers_.begin(); it != timers_.end(); ++it)
        if (it->second <= target && (due == timers_.end() || it->second < due->second)) due = it;
      if (due == timers_.end()) break;
      timer_id id = due->first;
      now_ = std::max(now_, due->second);
      timers_.erase(due);
      for (auto& a : dispatch(events::timer_fired{id})) all.push_back(std::move(a));
    }
    now_ = target;
    return all;
  }

  /// Answer spawns with `spawn_failed{error, reason}` (non-zero) or
  /// `spawned` (0); `reason` is what the supervisor would say (its exception's text).
  void fail_spawns(int error, std::string reason = {}) {
    spawn_error_ = error;
    spawn_reason_ = std::move(reason);
  }

  /// Answer rename_pid_file with this error (non-empty) or with success (empty).
  void fail_pid_file_rename(std::string error) { rename_error_ = std::move(error); }

  /// From now on dispatch() answers every `load_config` with `answer`
  /// (queued like a spawn's answer); `std::nullopt` (the default) leaves
  /// load_config unanswered, for the test to answer with loaded()/refused().
  void answer_load_config(std::optional<events::config_loaded> answer) {
    config_answer_ = std::move(answer);
  }
  /// As answer_load_config(), with a configuration that loads.
  void answer_load_config(const lifecycle_config& config) {
    config_answer_ = events::config_loaded{true, config, {}};
  }

  /// `config_loaded{ok = true, config}`, dispatched.
  action_list loaded(const lifecycle_config& config) {
    return dispatch(events::config_loaded{true, config, {}});
  }
  /// `config_loaded{ok = false, error}`, dispatched.
  action_list refused(std::string error) {
    return dispatch(events::config_loaded{false, {}, std::move(error)});
  }

  /// A readiness report from every starting worker of `generation`, in table
  /// order, dispatched. Returns every action, in order.
  action_list ready_generation(std::uint64_t generation) {
    std::vector<pid_t> starting;
    for (const auto& p : processes())
      if (p.generation == generation && p.state == process_state::starting)
        starting.push_back(p.pid);
    action_list all;
    for (pid_t pid : starting)
      for (auto& a : ready(pid)) all.push_back(std::move(a));
    return all;
  }

  /// Armed timers and when each falls due.
  [[nodiscard]] const std::map<timer_id, time_point>& timers() const noexcept { return timers_; }
  /// Whether timer `id` is armed.
  [[nodiscard]] bool armed(timer_id id) const { return timers_.count(id) != 0; }
  /// How long until timer `id` falls due, if armed.
  [[nodiscard]] std::optional<milliseconds> due_in(timer_id id) const {
    auto it = timers_.find(id);
    if (it == timers_.end()) return std::nullopt;
    return std::chrono::duration_cast<milliseconds>(it->second - now_);
  }

  /// The lifecycle under test.
  [[nodiscard]] const Lifecycle& lifecycle() const noexcept { return lifecycle_; }
  Lifecycle& lifecycle() noexcept { return lifecycle_; }
  /// Its process table.
  [[nodiscard]] const std::vector<process_info>& processes() const {
    return lifecycle_.processes();
  }
  /// Its phase.
  [[nodiscard]] phase current_phase() const { return lifecycle_.current_phase(); }

  /// The pids in the process table, in table order.
  [[nodiscard]] std::vector<pid_t> pids() const {
    std::vector<pid_t> out;
    for (const auto& p : processes()) out.push_back(p.pid);
    return out;
  }
  /// The table row of `pid`, or null.
  [[nodiscard]] const process_info* find(pid_t pid) const {
    for (const auto& p : processes())
      if (p.pid == pid) return &p;
    return nullptr;
  }
  /// The starting or ready process in `slot`, or null.
  [[nodiscard]] const process_info* in_slot(unsigned slot) const {
    for (const auto& p : processes())
      if (p.slot == slot &&
          (p.state == process_state::starting || p.state == process_state::ready))
        return &p;
    return nullptr;
  }
  /// The pids of `generation` in the process table, in table order.
  [[nodiscard]] std::vector<pid_t> pids_of(std::uint64_t generation) const {
    std::vector<pid_t> out;
    for (const auto& p : processes())
      if (p.generation == generation) out.push_back(p.pid);
    return out;
  }
  /// The pid the next answered spawn gets.
  [[nodiscard]] pid_t next_pid() const noexcept { return next_pid_; }

  /// Every action since the driver was made, in order.
  [[nodiscard]] const action_list& history() const noexcept { return history_; }
  /// The phase, the table, the armed timers and the last `last` actions,
  /// for failure messages.
  [[nodiscard]] std::string describe(std::size_t last = 80) const {
    std::string out = fmt::format("at +{} ms: phase {}, {} process(es)\n", elapsed().count(),
                                  procmodel::to_string(current_phase()), processes().size());
    for (const auto& p : processes())
      out += fmt::format("  pid {} slot {} generation {} {}\n", p.pid, p.slot, p.generation,
                         procmodel::to_string(p.state));
    for (const auto& [id, at] : timers_)
      out += fmt::format("  timer {} due in {} ms\n", to_string(id),
                         std::chrono::duration_cast<milliseconds>(at - now_).count());
    const std::size_t from = history_.size() > last ? history_.size() - last : 0;
    out += fmt::format("actions {} to {}:\n", from, history_.size());
    for (std::size_t i = from; i < history_.size(); ++i) out += "  " + to_string(history_[i]) + "\n";
    return out;
  }

  /// The code of the exit action, once one was emitted.
  [[nodiscard]] std::optional<int> exit_code() const noexcept { return exit_code_; }

 private:
  void record(const action_list& out) {
    for (const auto& a : out) {
      if (const auto* t = std::get_if<actions::arm_timer>(&a)) timers_[t->id] = now_ + t->after;
      if (const auto* c = std::get_if<actions::cancel_timer>(&a)) timers_.erase(c->id);
      if (const auto* x = std::get_if<actions::exit>(&a)) exit_code_ = x->code;
      history_.push_back(a);
    }
  }

  Lifecycle lifecycle_;
  time_point now_ = origin();
  pid_t next_pid_;
  int spawn_error_ = 0;
  std::string spawn_reason_;
  std::string rename_error_;
  std::optional<events::config_loaded> config_answer_;
  std::map<timer_id, time_point> timers_;
  action_list history_;
  std::optional<int> exit_code_;
};

/// The driver for the default lifecycle.
using lifecycle_driver = basic_lifecycle_driver<>;

}  // namespace procmodel::testing
