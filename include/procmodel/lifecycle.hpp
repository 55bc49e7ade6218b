#pragma once

/// @file lifecycle.hpp
/// The Lifecycle policy: a pure state machine. Events go in (a command from a
/// signal, a child exited, a worker is ready, a timer fired), actions come out
/// (spawn, send a command to a worker, kill, arm a timer, exit). It makes no
/// system call, so every sequence can be tested without a fork.
///
/// @par Lifecycle policy contract (copy and edit to write your own)
/// @code
/// class my_lifecycle {
///  public:
///   explicit my_lifecycle(const procmodel::lifecycle_config& config);
///   // Feed one event observed at `now`; returns what to do, in order.
///   std::vector<procmodel::action> handle(const procmodel::event& e,
///                                         procmodel::steady_clock::time_point now);
///   // The process table, for status and for tests.
///   const std::vector<procmodel::process_info>& processes() const;
///   procmodel::phase current_phase() const;
///   // For `-s status`: the generation that serves, the upgrade this master
///   // started (if any), the slots waiting out a respawn backoff, and the
///   // master this one was upgraded from while it lives (0 if none).
///   std::uint64_t generation() const;
///   std::optional<procmodel::upgrade_status> upgrade() const;
///   std::vector<procmodel::backoff_status> backoffs() const;
///   pid_t parent_master() const;
///   // Optional: why each slot's worker was last replaced (a crash, a missed
///   // heartbeat, a recycling), for `-s status`.
///   std::vector<procmodel::replacement_status> replacements() const;
/// };
/// @endcode

#include <algorithm>
#include <chrono>
#include <compare>
#include <csignal>
#include <cstring>
#include <system_error>
#include <concepts>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <sys/types.h>
#include <sys/wait.h>

#include <fmt/core.h>

#include "log.hpp"
#include "restart_policy.hpp"
#include "signals.hpp"

namespace procmodel {

/// Helper processes of one role beside the worker pool (nginx's cache
/// manager): supervised and respawned as workers are, told about quit and
/// reopen, never counted as serving, stopped after the workers on a
/// graceful stop.
struct helper_config {
  std::string role;
  unsigned count = 1;
};

/// What the lifecycle needs to know of the options.
struct lifecycle_config {
  unsigned workers = 1;
  milliseconds terminate_timeout{5'000};
  milliseconds shutdown_timeout{10'000};
  /// A reload's new workers must all be ready within this, or it is rolled back.
  milliseconds ready_timeout{10'000};
  /// Generations still draining after reloads, at most; past it the oldest is terminated.
  unsigned max_draining_generations = 2;
  restart_policy restart{};
  /// WINCH drains the workers even when the master has a controlling
  /// terminal (whose window resizes send WINCH too).
  bool winch_with_terminal = false;

  // --- heartbeat watchdog and worker recycling: each is off at zero ---
  /// A worker whose loop sent no heartbeat for this long gets SIGABRT...
  milliseconds heartbeat_timeout{0};
  /// ...and SIGKILL this long after, if it is still there.
  milliseconds heartbeat_grace{3'000};
  /// Recycle a worker once it reported this many units of work (requests).
  std::uint64_t max_requests = 0;
  /// Recycle a worker once it is this old.
  milliseconds max_age{0};
  /// Recycle a worker whose resident memory (bytes) is above this.
  std::uint64_t max_rss = 0;
  /// Each worker's max_requests and max_age are raised by a random part of
  /// up to this fraction of them, so that workers do not recycle together.
  double recycle_jitter = 0.1;
  /// Seeds that randomness; the same seed draws the same limits (tests).
  std::uint64_t recycle_seed = 0;
  /// A reload replaces this many slots at a time, each batch ready before
  /// the next starts and its old workers gone; 0: every slot at once.
  unsigned reload_batch = 0;
  /// Helper processes, by role; taken at construction (a reload keeps them).
  std::vector<helper_config> helpers{};
};

/// Where the master is in its life.
enum class phase : std::uint8_t {
  idle,      ///< not started
  running,   ///< keeping `workers` workers up
  quitting,  ///< graceful stop under way
  stopping,  ///< fast stop under way
  exited,    ///< every child is gone; the master exits
};

constexpr std::string_view to_string(phase p) noexcept {
  switch (p) {
    case phase::idle: return "idle";
    case phase::running: return "running";
    case phase::quitting: return "quitting";
    case phase::stopping: return "stopping";
    case phase::exited: return "exited";
  }
  return "?";
}

/// Where a worker is in its life.
enum class process_state : std::uint8_t {
  starting,     ///< forked, has not called ready() yet
  ready,        ///< serving
  draining,     ///< told to quit; finishing in-flight work
  terminating,  ///< told to exit now
};

constexpr std::string_view to_string(process_state s) noexcept {
  switch (s) {
    case process_state::starting: return "starting";
    case process_state::ready: return "ready";
    case process_state::draining: return "draining";
    case process_state::terminating: return "terminating";
  }
  return "?";
}

/// One row of the process table.
struct process_info {
  pid_t pid = 0;
  unsigned slot = 0;
  std::uint64_t generation = 0;
  process_state state = process_state::starting;
  steady_clock::time_point started{};
  unsigned restarts = 0;  ///< respawns of this slot before this process
  std::uint64_t served = 0;  ///< units of work it reported (recycling)
  std::uint64_t rss = 0;     ///< resident bytes the master last measured (recycling)
};

/// One helper process (see helper_config), for status. `id` numbers every
/// helper of every role in order; `index` is its place within its role.
struct helper_info {
  std::string role;
  unsigned id = 0;
  unsigned index = 0;
  pid_t pid = 0;  ///< 0: not running (waiting out a backoff, or stopped)
  process_state state = process_state::starting;  ///< `ready` while it runs
  steady_clock::time_point started{};
  unsigned restarts = 0;
  std::optional<steady_clock::time_point> respawn_at{};  ///< when it waits out a backoff
};

/// Why a slot's worker was last replaced, for status.
struct replacement_status {
  unsigned slot = 0;
  pid_t pid = 0;  ///< the worker that was replaced
  std::string cause;
  steady_clock::time_point at{};
};


/// Names a timer the lifecycle arms; arming it again replaces it.
enum class timer_kind : std::uint8_t {
  respawn,          ///< key: slot waiting out its backoff
  kill_escalation,  ///< key: 0; SIGKILL whatever is left of a stop
  ready_deadline,   ///< key: generation a reload is waiting for
  retire_deadline,  ///< key: pid of a retired worker; SIGKILL if still there
  upgrade_deadline, ///< key 0: a new master must be ready by then; key 1: SIGKILL a failed one
  watchdog,         ///< the supervisor's: time for systemd's WATCHDOG=1
  control_backoff,  ///< the supervisor's; key 0: accept on the control socket again, 1: take it back after a failed upgrade
  control_deadline, ///< the supervisor's; key: a control client that must have spoken by then
  heartbeat,        ///< key: pid of a worker whose next heartbeat is due (then: whose grace ends)
  max_age,          ///< key: pid of a worker to recycle for its age
  recycle,          ///< key 0: the replacement must be ready by then; key 1: try again
  rss_sample,       ///< the supervisor's: measure the workers' resident memory
  helper_respawn,   ///< key: helper waiting out its backoff
};

constexpr std::string_view to_string(timer_kind k) noexcept {
  switch (k) {
    case timer_kind::respawn: return "respawn";
    case timer_kind::kill_escalation: return "kill_escalation";
    case timer_kind::ready_deadline: return "ready_deadline";
    case timer_kind::retire_deadline: return "retire_deadline";
    case timer_kind::upgrade_deadline: return "upgrade_deadline";
    case timer_kind::watchdog: return "watchdog";
    case timer_kind::control_backoff: return "control_backoff";
    case timer_kind::control_deadline: return "control_deadline";
    case timer_kind::heartbeat: return "heartbeat";
    case timer_kind::max_age: return "max_age";
    case timer_kind::recycle: return "recycle";
    case timer_kind::rss_sample: return "rss_sample";
    case timer_kind::helper_respawn: return "helper_respawn";
  }
  return "?";
}

struct timer_id {
  timer_kind kind{};
  unsigned key = 0;
  friend auto operator<=>(const timer_id&, const timer_id&) = default;
};

/// Events: what the lifecycle learns.
namespace events {
/// Listeners are bound; begin. What the master found out about itself at start.
struct started {
  pid_t pid = 0;                 ///< this master's pid, for messages
  std::uint64_t generation = 1;  ///< the first generation's number (an upgrade continues the count)
  pid_t parent_master = 0;       ///< the master this one was upgraded from; 0 for none
  bool controlling_terminal = false;  ///< window resizes of that terminal send WINCH
  bool daemonized = false;
};
/// An operator asked (signal or control). `client` names a control client
/// waiting for the outcome (0: none, a signal).
struct commanded {
  command what;
  std::uint64_t client = 0;
};
struct spawned { unsigned slot; std::uint64_t generation; pid_t pid; };
/// A worker could not be started: `error` is an errno value; `reason`, when
/// not empty, says what failed in words (e.g. "socketpair: Too many open
/// files"), and the log line shows it instead of the errno's text.
struct spawn_failed {
  unsigned slot;
  std::uint64_t generation;
  int error;
  std::string reason = {};
};
struct exited { pid_t pid; int status; };  ///< a reaped child and its wait status
struct ready { pid_t pid; };          ///< a worker reports it serves
struct timer_fired { timer_id id; };
/// Start a new master: automatic (`-s upgrade`: this master quits once the
/// new one is ready) or manual (USR2: the operator finishes it). A new master
/// not ready within `timeout` is stopped and the attempt abandoned.
struct upgrade_requested {
  bool automatic = false;
  milliseconds timeout{10'000};
  std::uint64_t client = 0;  ///< the control client waiting for the verdict; 0: none
};
/// The answer to actions::rename_pid_file.
struct pid_file_renamed {
  bool ok = true;
  std::string error{};
};
/// The answer to actions::exec_upgrade: the new master runs as `pid`...
struct new_master_started { pid_t pid; };
/// ...or could not be started.
struct new_master_failed { std::string error; };
/// The new master reported that its first generation serves.
struct new_master_ready { pid_t pid; };
/// The master this one was upgraded from has exited: this one is on its own.
struct parent_master_gone {};
/// The answer to actions::load_config: the configuration for the next
/// generation, or why there is none.
struct config_loaded {
  bool ok = false;
  lifecycle_config config{};
  std::string error{};
};
/// A worker's loop is alive (sent from its loop every heartbeat_timeout / 3).
struct heartbeat { pid_t pid; };
/// A worker reports how many units of work (requests) it has done in all.
struct served { pid_t pid; std::uint64_t total; };
/// The master measured a worker's resident memory.
struct worker_rss { pid_t pid; std::uint64_t bytes; };
/// A worker says it is leaving of its own accord (sd_notify's STOPPING=1).
struct stopping { pid_t pid; };
/// A helper process was started (the answer to actions::spawn_helper).
struct helper_spawned { unsigned helper; pid_t pid; };
/// A helper process could not be started.
struct helper_spawn_failed { unsigned helper; int error; std::string reason = {}; };
}  // namespace events

using event = std::variant<events::started, events::commanded, events::spawned,
                           events::spawn_failed, events::exited, events::ready,
                           events::timer_fired, events::config_loaded,
                           events::upgrade_requested, events::pid_file_renamed,
                           events::new_master_started, events::new_master_failed,
                           events::new_master_ready, events::parent_master_gone,
                           events::heartbeat, events::served, events::worker_rss,
                           events::stopping, events::helper_spawned,
                           events::helper_spawn_failed>;

/// Actions: what the lifecycle asks the supervisor to do, in order.
namespace actions {
struct spawn { unsigned slot; std::uint64_t generation; };
/// Start helper process `helper` (helper_info::id); answered by
/// events::helper_spawned or events::helper_spawn_failed.
struct spawn_helper { unsigned helper; };
struct send { pid_t pid; worker_command what; std::int64_t argument = 0; };
struct kill { pid_t pid; int signo; };
struct arm_timer { timer_id id; milliseconds after; };
struct cancel_timer { timer_id id; };
/// Close the master's copies of the listeners; `freeze` first stops their
/// queues filling and removes the unix socket files, which only the last
/// master holding them may do.
struct stop_listening { bool freeze = true; };
struct reopen_logs {};     ///< the master's own log file
struct log { log_level level; std::string text; };
/// The master exits; the last master holding the listeners (no new master
/// took them over, no parent master serves with them) removes its unix
/// socket files, as nginx does.
struct exit {
  int code;
  bool remove_socket_files = false;
};
/// Re-read the configuration; answer with events::config_loaded.
struct load_config {};
/// The set of serving workers changed: `generation` now serves with `workers`
/// slots (first start, reload, TTIN/TTOU). Per-slot listeners follow it.
struct serving { std::uint64_t generation; unsigned workers; };
/// Start a new master from the binary on disk, handing it the listeners and
/// the number its first generation takes; answer with
/// events::new_master_started or events::new_master_failed.
struct exec_upgrade { std::uint64_t next_generation; };
/// Rename the pid file to `<pid file>.oldbin`; answer with events::pid_file_renamed.
struct rename_pid_file {};
/// Put `<pid file>.oldbin` back as the pid file if it still names this master,
/// and take back the control socket: this master is the one operators reach.
struct restore_pid_file {
  /// A new master ran and took the control socket over: take it back too.
  bool take_back_control = true;
};
/// Signal the new master of an upgrade.
struct signal_new_master { pid_t pid; int signo; };
/// Answer control client `client` (no-op for 0) and hang up.
struct reply {
  std::uint64_t client;
  bool ok;
  std::string text;
};
/// Tell the parent master (the one this master was upgraded from) that the
/// first generation serves: the handover's signal.
struct report_ready_to_parent {};
/// The service continues in master `pid` (systemd's MAINPID=).
struct hand_over { pid_t pid; };
/// What the service manager is told (systemd's READY=1, RELOADING=1, STOPPING=1).
enum class notice : std::uint8_t { ready, reloading, stopping };
struct notify { notice what; };
}  // namespace actions

using action = std::variant<actions::spawn, actions::send, actions::kill, actions::arm_timer,
                            actions::cancel_timer, actions::stop_listening,
                            actions::reopen_logs, actions::log, actions::exit,
                            actions::load_config, actions::serving, actions::exec_upgrade,
                            actions::notify, actions::rename_pid_file,
                            actions::restore_pid_file, actions::signal_new_master,
                            actions::reply, actions::report_ready_to_parent,
                            actions::hand_over, actions::spawn_helper>;

/// "exited with code 1", "killed by signal 9 (Killed)", from a wait status.
inline std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::strsignal(WTERMSIG(status));
    return fmt::format("killed by signal {} ({}){}", WTERMSIG(status), name ? name : "?",
                       WCOREDUMP(status) ? ", core dumped" : "");
  }
  return fmt::format("changed state (status {:#x})", status);
}

/// nginx's rule: a master that was handed its sockets by a previous master
/// never daemonizes again; that master tracks it by pid and waits for it.
constexpr bool should_daemonize(bool asked, bool handed_over_by_master) noexcept {
  return asked && !handed_over_by_master;
}

/// Why descriptor `fd` cannot be the line to the previous master, or an empty
/// string: it must be none of the inherited listeners, or readiness would
/// close a listener and its port would go dark.
inline std::string upgrade_fd_problem(int fd, const std::vector<int>& listener_fds) {
  if (std::find(listener_fds.begin(), listener_fds.end(), fd) != listener_fds.end())
    return fmt::format("descriptor {} is one of the inherited listeners, not a line to the "
                       "previous master",
                       fd);
  return {};
}

/// A slot without a worker, waiting out its respawn backoff.
struct backoff_status {
  unsigned slot = 0;
  std::uint64_t generation = 0;
  steady_clock::time_point next_attempt{};
  unsigned restarts = 0;
};

/// An upgrade this master started, as status shows it.
struct upgrade_status {
  pid_t pid = 0;           ///< the new master; 0 until it runs
  bool automatic = false;  ///< this master quits once the new one is ready
  bool ready = false;      ///< the new master serves
  bool abandoned = false;  ///< failed; the new master is being stopped
  steady_clock::time_point since{};
};

/// A rolling reload under way, as status shows it.
struct roll_status {
  std::uint64_t generation = 0;  ///< the generation the slots move to
  unsigned workers = 0;          ///< its slots
  unsigned batch = 0;            ///< slots moved at a time
  unsigned moved = 0;            ///< slots 0..moved-1 are served by it
  unsigned cap = 0;              ///< workers the master runs at most meanwhile
};

/// The nginx master's behaviour, as a pure state machine, with what nginx
/// lacks: readiness-gated reloads with rollback, a cap on draining
/// generations, crash-loop backoff, SIGKILL escalation, a heartbeat
/// watchdog and worker recycling.
class nginx_lifecycle {
 public:
  explicit nginx_lifecycle(const lifecycle_config& config)
      : config_(config), rng_(config.recycle_seed) {
    slots_.resize(config_.workers);
    for (const auto& h : config.helpers)
      for (unsigned i = 0; i < h.count; ++i) {
        helper_info info;
        info.role = h.role;
        info.id = static_cast<unsigned>(helpers_.size());
        info.index = i;
        helpers_.push_back(info);
      }
    helper_slots_.resize(helpers_.size());
  }

  std::vector<action> handle(const event& e, steady_clock::time_point now) {
    out_.clear();
    now_ = now;
    std::visit([this](const auto& ev) { on(ev); }, e);
    recycle_next();  // after whatever the event changed: a reload, a stop, a ready replacement
    return std::exchange(out_, {});
  }

  [[nodiscard]] const std::vector<process_info>& processes() const noexcept { return procs_; }
  [[nodiscard]] phase current_phase() const noexcept { return phase_; }
  [[nodiscard]] unsigned workers() const noexcept { return config_.workers; }
  /// The generation that serves.
  [[nodiscard]] std::uint64_t generation() const noexcept { return generation_; }
  /// The generation a reload is starting, if one is.
  [[nodiscard]] std::optional<std::uint64_t> pending_generation() const noexcept {
    return pending_ ? std::optional<std::uint64_t>(pending_->generation) : std::nullopt;
  }
  [[nodiscard]] const lifecycle_config& config() const noexcept { return config_; }
  /// The upgrade this master started, while its new master is around.
  [[nodiscard]] std::optional<upgrade_status> upgrade() const {
    if (!upgrade_) return std::nullopt;
    return upgrade_status{upgrade_->pid, upgrade_->automatic, upgrade_->ready,
                          upgrade_->abandoned, upgrade_->since};
  }
  /// The slots waiting out a respawn backoff, and when each tries again.
  [[nodiscard]] std::vector<backoff_status> backoffs() const {
    std::vector<backoff_status> out;
    for (unsigned k = 0; k < slots_.size() && k < config_.workers; ++k)
      if (slots_[k].respawn_pending)
        out.push_back({k, generation_, slots_[k].respawn_at, slots_[k].restarts});
    return out;
  }
  /// The rolling reload under way, if one is.
  [[nodiscard]] std::optional<roll_status> roll() const {
    if (!pending_ || !pending_->roll) return std::nullopt;
    const auto& r = *pending_->roll;
    return roll_status{pending_->generation, pending_->config.workers, r.batch, r.moved,
                       roll_cap()};
  }
  /// The helper processes, running or not.
  [[nodiscard]] const std::vector<helper_info>& helpers() const noexcept { return helpers_; }
  /// The master this one was upgraded from, while it lives; 0 otherwise.
  [[nodiscard]] pid_t parent_master() const noexcept { return parent_alive_ ? parent_ : 0; }
  /// Why each slot's worker was last replaced (crash, missed heartbeat, recycling).
  [[nodiscard]] std::vector<replacement_status> replacements() const {
    std::vector<replacement_status> out;
    for (const auto& [slot, r] : replaced_)
      if (slot < config_.workers) out.push_back(r);
    return out;
  }
  /// Whether WINCH drains the workers: not when it may be a terminal's resize.
  [[nodiscard]] bool honours_winch() const noexcept {
    return !terminal_ || daemonized_ || config_.winch_with_terminal;
  }

 private:
  struct slot_state {
    std::deque<steady_clock::time_point> recent;  // respawns within the period
    unsigned backoff_level = 0;
    unsigned restarts = 0;
    bool respawn_pending = false;
    steady_clock::time_point respawn_at{};
  };
  // A rolling reload moves slots [begin, end) at a time; slots below
  // `moved` are served by the new generation, their old workers retired.
  struct roll_state {
    unsigned batch = 0;
    unsigned moved = 0;
    unsigned begin = 0, end = 0;  // the batch starting; empty while none is
  };
  struct reload_state {
    std::uint64_t generation = 0;
    lifecycle_config config{};
    steady_clock::time_point since{};
    std::optional<roll_state> roll{};
  };
  struct upgrade_state {
    bool automatic = false;
    milliseconds timeout{};
    std::uint64_t client = 0;  // waiting for the verdict; 0 once answered
    bool renamed = false;      // the pid file is <pid file>.oldbin
    pid_t pid = 0;             // the new master, once started
    bool ready = false;
    bool abandoned = false;    // failure reported: the new master is stopped, its ready ignored
    int stop_signal = SIGQUIT;
    steady_clock::time_point since{};
  };

  // --- events ---

  void on(const events::started& s) {
    if (phase_ != phase::idle) return;
    phase_ = phase::running;
    self_ = s.pid;
    generation_ = last_generation_ = first_generation_ = std::max<std::uint64_t>(1, s.generation);
    parent_ = s.parent_master;
    parent_alive_ = parent_ != 0;
    terminal_ = s.controlling_terminal;
    daemonized_ = s.daemonized;
    emit(actions::serving{generation_, config_.workers});
    for (unsigned k = 0; k < config_.workers; ++k) emit(actions::spawn{k, generation_});
    for (const auto& h : helpers_) emit(actions::spawn_helper{h.id});
  }

  void on(const events::commanded& c) {
    switch (c.what) {
      case command::stop: return stop();
      case command::quit: return quit();
      case command::reopen: return reopen();
      case command::reload: return reload(c.client);
      case command::drain_workers: return drain_workers();
      case command::add_worker: return add_worker();
      case command::remove_worker: return remove_worker();
      case command::upgrade: return on(events::upgrade_requested{false, config_.ready_timeout, c.client});
    }
  }

  void on(const events::spawned& s) {
    process_info p;
    p.pid = s.pid;
    p.slot = s.slot;
    p.generation = s.generation;
    p.state = process_state::starting;
    p.started = now_;
    p.restarts = s.generation == generation_ && s.slot < slots_.size() ? slots_[s.slot].restarts : 0;
    procs_.push_back(p);
    log(log_level::info, "started worker {} in slot {} (generation {})", s.pid, s.slot,
        s.generation);
    watch_spawned(procs_.back());
    // A stop that raced the spawn: the new worker leaves at once.
    if (phase_ == phase::stopping) terminate(procs_.back());
    if (phase_ == phase::quitting) drain(procs_.back());
    // A reload rolled back while its spawns were still being answered (slot
    // 0 failed, slot 1 then started): the late worker of the dead generation
    // leaves too, or it would sit in the table serving nobody, never retired.
    if (phase_ == phase::running && s.generation != generation_ &&
        !(pending_ && s.generation == pending_->generation)) {
      log(log_level::notice, "worker {} belongs to generation {}, which is not starting; retired",
          s.pid, s.generation);
      retire(procs_.back());
    }
  }

  void on(const events::spawn_failed& f) {
    log(log_level::error, "cannot start a worker for slot {}: {}", f.slot,
        f.reason.empty() ? std::system_category().message(f.error) : f.reason);
    if (replacement_failed_to_spawn(f)) return;
    if (pending_ && f.generation == pending_->generation) {
      rollback(fmt::format("worker for slot {} could not start", f.slot));
    } else if (phase_ == phase::running && !idle_ && f.generation == generation_ &&
               f.slot < config_.workers) {
      schedule_respawn(f.slot, true);
    }
    maybe_exit();  // a stop under way may have been waiting for nothing else
  }

  void on(const events::exited& x) {
    if (upgrade_ && upgrade_->pid != 0 && upgrade_->pid == x.pid) return new_master_exited(x.status);
    if (helper_exited(x)) return;
    auto it = std::find_if(procs_.begin(), procs_.end(),
                           [&](const process_info& p) { return p.pid == x.pid; });
    // Not a worker of ours: an orphan reparented to this master (PID 1, a
    // subreaper) or a helper; reaped, and nothing else.
    if (it == procs_.end())
      return log(log_level::debug, "reaped process {}, not a worker of this master: {}", x.pid,
                 describe_wait_status(x.status));
    process_info p = *it;
    procs_.erase(it);
    if (retire_timers_.erase(p.pid))
      emit(actions::cancel_timer{{timer_kind::retire_deadline, static_cast<unsigned>(p.pid)}});
    const std::string hung = watch_exited(p, x.status);

    const bool expected = p.state == process_state::draining ||
                          p.state == process_state::terminating || phase_ != phase::running;
    if (expected) {
      log(log_level::info, "worker {} (slot {}, generation {}) {}{}", p.pid, p.slot, p.generation,
          describe_wait_status(x.status), hung);
    } else {
      note_replacement(p, describe_wait_status(x.status) + hung);
      log(log_level::warn, "worker {} (slot {}, generation {}) {} unexpectedly{}", p.pid, p.slot,
          p.generation, describe_wait_status(x.status), hung);
      if (pending_ && p.generation == pending_->generation) {
        rollback(fmt::format("worker {} (slot {}) {} before the generation was ready", p.pid,
                             p.slot, describe_wait_status(x.status)));
      } else if (p.generation == generation_ && p.slot < config_.workers && !idle_ &&
                 !slot_taken(p.slot) && !slot_moved(p.slot)) {
        if (now_ - p.started >= config_.restart.period) forgive(p.slot);
        schedule_respawn(p.slot, false);
      }
    }
    // A rolling reload's next batch waits for room: this exit may make it.
    if (phase_ == phase::running && pending_ && pending_->roll) roll_next_batch();
    maybe_exit();
  }

  void on(const events::ready& r) {
    process_info* p = find(r.pid);
    if (!p || p->state != process_state::starting) return;
    p->state = process_state::ready;
    log(log_level::debug, "worker {} (slot {}) is ready", p->pid, p->slot);
    watch_ready(*p);
    if (pending_ && p->generation == pending_->generation) {
      if (pending_->roll)
        roll_batch_ready();
      else if (generation_ready(*pending_))
        promote();
    }
    // Only the first generation's readiness is the news: a later reload's
    // is not a handover.
    if (!announced_ && phase_ == phase::running && p->generation == generation_ &&
        generation_ == first_generation_ && all_ready(generation_, config_.workers))
      announce();
  }

  // A worker that says it is leaving (STOPPING=1) before it was asked: its
  // exit is no crash, and its slot does not wait for it: a replacement
  // starts now, rate-limited as a crash's respawn (a program that stops
  // over and over backs off). One of a reload's new generation rolls the
  // reload back. Asked to leave, it is only news.
  void on(const events::stopping& s) {
    process_info* p = find(s.pid);
    if (!p || p->state == process_state::draining || p->state == process_state::terminating)
      return;
    const process_info was = *p;
    log(log_level::notice, "worker {} (slot {}, generation {}) says it is stopping", was.pid,
        was.slot, was.generation);
    retire(*p);
    if (pending_ && was.generation == pending_->generation)
      return rollback(fmt::format("worker {} (slot {}) stopped before the generation was ready",
                                  was.pid, was.slot));
    if (phase_ == phase::running && !idle_ && was.generation == generation_ &&
        was.slot < config_.workers && !slot_taken(was.slot) && !slot_moved(was.slot)) {
      note_replacement(was, "it said it was stopping");
      schedule_respawn(was.slot, false);
    }
  }

  void on(const events::timer_fired& t) {
    switch (t.id.kind) {
      case timer_kind::respawn: {
        unsigned slot = t.id.key;
        if (slot >= slots_.size()) return;
        slots_[slot].respawn_pending = false;
        if (phase_ == phase::running && !idle_ && slot < config_.workers && !slot_taken(slot) &&
            !slot_moved(slot))
          respawn(slot);
        return;
      }
      case timer_kind::kill_escalation:
        // Key 1 is the helpers' own drain deadline, after the workers'.
        if (t.id.key == 1) {
          helpers_deadline_ = false;
          for (auto& h : helpers_) kill_helper(h);
          return;
        }
        for (auto& p : procs_) kill(p, "did not exit in time");
        if (phase_ == phase::stopping)
          for (auto& h : helpers_) kill_helper(h);
        if (upgrade_ && upgrade_->abandoned && upgrade_->pid != 0) {
          log(log_level::warn, "new master {} did not exit in time; sending SIGKILL", upgrade_->pid);
          emit(actions::signal_new_master{upgrade_->pid, SIGKILL});
        }
        return;
      case timer_kind::ready_deadline:
        if (pending_ && t.id.key == static_cast<unsigned>(pending_->generation))
          rollback(fmt::format("not every worker was ready within {} ms",
                               pending_->config.ready_timeout.count()));
        return;
      case timer_kind::retire_deadline: {
        retire_timers_.erase(static_cast<pid_t>(t.id.key));
        if (process_info* p = find(static_cast<pid_t>(t.id.key)))
          kill(*p, "did not finish draining in time");
        return;
      }
      case timer_kind::upgrade_deadline:
        if (!upgrade_ || upgrade_->pid == 0) return;
        if (t.id.key == 0 && !upgrade_->ready && !upgrade_->abandoned) {
          fail_upgrade(fmt::format("the new master {} was not ready within {} ms", upgrade_->pid,
                                   upgrade_->timeout.count()));
          stop_new_master(SIGQUIT);
        } else if (t.id.key == 1 && upgrade_->abandoned) {
          log(log_level::warn, "new master {} did not stop in time; sending SIGKILL",
              upgrade_->pid);
          emit(actions::signal_new_master{upgrade_->pid, SIGKILL});
        }
        return;
      case timer_kind::heartbeat: return heartbeat_missed(static_cast<pid_t>(t.id.key));
      case timer_kind::max_age: return age_reached(static_cast<pid_t>(t.id.key));
      case timer_kind::recycle: return recycle_timer_fired(t.id.key);
      case timer_kind::helper_respawn: {
        if (t.id.key >= helpers_.size()) return;
        helper_slots_[t.id.key].respawn_pending = false;
        helpers_[t.id.key].respawn_at.reset();
        if (phase_ == phase::running && helpers_[t.id.key].pid == 0) respawn_helper(t.id.key);
        return;
      }
      case timer_kind::watchdog:
      case timer_kind::control_backoff:
      case timer_kind::control_deadline:
      case timer_kind::rss_sample: return;  // the supervisor's own
    }
  }

  // --- hot upgrade: this master starts a new one ---

  void on(const events::upgrade_requested& r) {
    auto refuse = [&](const std::string& why) {
      log(log_level::warn, "upgrade refused: {}", why);
      emit(actions::reply{r.client, false, why});
    };
    if (phase_ != phase::running)
      return refuse(fmt::format("the master is {}", to_string(phase_)));
    // One upgrade at a time across both masters: the pid file names a new
    // master while its parent lives, and a third would take .oldbin.
    if (parent_alive_)
      return refuse(fmt::format(
          "this master was started by an upgrade and its parent master {} still runs; finish "
          "that upgrade (WINCH and QUIT {}) or roll it back (QUIT this master) first",
          parent_, parent_));
    if (upgrade_ && upgrade_->abandoned)
      return refuse(fmt::format("the new master {} of a failed upgrade is still stopping",
                                upgrade_->pid));
    if (upgrade_)
      return refuse(upgrade_->pid ? fmt::format("another upgrade is under way (new master {})",
                                                upgrade_->pid)
                                  : std::string("another upgrade is under way"));
    if (auto why = upgrade_blocked(); !why.empty()) return refuse(why);
    upgrade_state u;
    u.automatic = r.automatic;
    u.timeout = r.timeout;
    u.client = r.client;
    u.since = now_;
    upgrade_ = u;
    log(log_level::notice, "upgrade: starting a new master from the binary on disk ({})",
        r.automatic ? fmt::format("automatic: it must be ready within {} ms", r.timeout.count())
                    : std::string("manual"));
    emit(actions::rename_pid_file{});
  }

  void on(const events::pid_file_renamed& f) {
    if (!upgrade_ || upgrade_->renamed || upgrade_->pid != 0) return;
    if (!f.ok) {
      if (!upgrade_->abandoned) fail_upgrade(f.error);
      upgrade_.reset();
      return maybe_exit();
    }
    upgrade_->renamed = true;
    if (upgrade_->abandoned) {  // this master began stopping meanwhile
      emit(actions::restore_pid_file{false});
      upgrade_.reset();
      return maybe_exit();
    }
    emit(actions::exec_upgrade{last_generation_ + 1});
  }

  void on(const events::new_master_failed& f) {
    if (!upgrade_ || upgrade_->pid != 0) return;
    if (!upgrade_->abandoned) fail_upgrade(f.error);
    upgrade_.reset();
    maybe_exit();
  }

  void on(const events::new_master_started& s) {
    if (!upgrade_ || upgrade_->pid != 0) return;
    upgrade_->pid = s.pid;
    if (upgrade_->abandoned) return stop_new_master(upgrade_->stop_signal);
    log(log_level::notice, "upgrade: new master {} must be ready within {} ms{}", s.pid,
        upgrade_->timeout.count(),
        upgrade_->automatic ? "" : " (manual: WINCH and QUIT this master once it is ready)");
    emit(actions::arm_timer{upgrade_timer(0), upgrade_->timeout});
  }

  void on(const events::new_master_ready& r) {
    if (!upgrade_ || upgrade_->pid == 0 || r.pid != upgrade_->pid || upgrade_->ready) return;
    if (upgrade_->abandoned) {
      log(log_level::warn, "new master {} reported ready after its upgrade was abandoned; ignored",
          r.pid);
      return;
    }
    upgrade_->ready = true;
    emit(actions::cancel_timer{upgrade_timer(0)});
    if (!upgrade_->automatic) {
      log(log_level::notice,
          "upgrade: new master {} is ready; send WINCH then QUIT to this master ({}) to finish, "
          "or QUIT to the new one to roll back",
          r.pid, self_);
      return;
    }
    log(log_level::notice, "upgrade: new master {} is ready; this master quits", r.pid);
    emit(actions::reply{std::exchange(upgrade_->client, 0), true,
                        fmt::format("new master {} serves; old master {} quits", r.pid, self_)});
    quit();
  }

  // --- hot upgrade: this master was started by one ---

  void on(const events::parent_master_gone&) {
    if (!parent_alive_) return;
    parent_alive_ = false;
    log(log_level::notice, "parent master {} is gone; this master is on its own", parent_);
  }

  void on(const events::config_loaded& c) {
    if (!loading_) return;
    loading_ = false;
    if (phase_ != phase::running) return;
    if (!c.ok || c.config.workers == 0) {
      std::string why = c.ok ? std::string("0 workers") : c.error;
      log(log_level::error, "reload refused: {}; generation {} keeps serving", why, generation_);
      answer_reload(false, fmt::format("configuration refused: {}; generation {} keeps serving",
                                       why, generation_));
      notify_ready_again();
      return reload_again_if_asked();
    }
    pending_ = reload_state{++last_generation_, c.config, now_};
    if (rolls(c.config)) return start_roll();
    log(log_level::notice, "reload: starting generation {} with {} worker(s)", pending_->generation,
        c.config.workers);
    emit(actions::arm_timer{ready_timer(pending_->generation), c.config.ready_timeout});
    for (unsigned k = 0; k < c.config.workers; ++k)
      emit(actions::spawn{k, pending_->generation});
  }

  // --- commands ---

  void stop() {
    if (phase_ == phase::stopping || phase_ == phase::exited) return;
    if (phase_ == phase::idle) {
      phase_ = phase::exited;
      emit(actions::exit{0, last_holder()});
      return;
    }
    log(log_level::notice, "fast stop: terminating {} worker(s)", procs_.size());
    phase_ = phase::stopping;
    const bool handing_over = announce_stop();
    abandon_reload("the master is stopping (fast stop)");
    cancel_respawns();
    for (auto& p : procs_) terminate(p);
    for (auto& h : helpers_)
      if (h.pid != 0 && h.state != process_state::terminating) {
        h.state = process_state::terminating;
        emit(actions::send{h.pid, worker_command::terminate});
      }
    if (!handing_over) abandon_upgrade(SIGTERM, "fast stop");
    arm_escalation(config_.terminate_timeout);
    maybe_exit();
  }

  void quit() {
    if (phase_ == phase::quitting || phase_ == phase::stopping || phase_ == phase::exited) return;
    if (phase_ == phase::idle) {
      phase_ = phase::exited;
      emit(actions::exit{0, last_holder()});
      return;
    }
    log(log_level::notice, "graceful stop: draining {} worker(s)", procs_.size());
    phase_ = phase::quitting;
    const bool handing_over = announce_stop();
    // The last master holding the sockets stops their queues filling; one
    // that hands over to (or came from) a live master must not.
    emit(actions::stop_listening{last_holder()});
    abandon_reload("the master is stopping (graceful stop)");
    cancel_respawns();
    for (auto& p : procs_) drain(p);
    if (!handing_over) abandon_upgrade(SIGQUIT, "graceful stop");
    arm_escalation(config_.shutdown_timeout);
    maybe_exit();
  }

  void reopen() {
    log(log_level::notice, "reopening log files");
    emit(actions::reopen_logs{});
    for (const auto& p : procs_)
      if (p.state != process_state::terminating)
        emit(actions::send{p.pid, worker_command::reopen});
    for (const auto& h : helpers_)
      if (h.pid != 0 && h.state != process_state::terminating)
        emit(actions::send{h.pid, worker_command::reopen});
  }

  // `client` (0: a signal) waits for the outcome of the reload that reads
  // the configuration after its request: a new one, or the next after the
  // one under way.
  void reload(std::uint64_t client = 0) {
    if (phase_ != phase::running) {
      log(log_level::warn, "reload ignored: the master is {}", to_string(phase_));
      if (client != 0)
        emit(actions::reply{client, false, fmt::format("the master is {}", to_string(phase_))});
      return;
    }
    if (client != 0) next_reload_clients_.push_back(client);
    if (loading_ || pending_) {
      reload_again_ = true;
      log(log_level::notice, "reload already under way; another follows when it is done");
      return;
    }
    reload_clients_.insert(reload_clients_.end(), next_reload_clients_.begin(),
                           next_reload_clients_.end());
    next_reload_clients_.clear();
    log(log_level::notice, "reload: reading the configuration");
    loading_ = true;
    // Before the first READY=1 the service is still starting: nothing to announce.
    if (announced_) emit(actions::notify{actions::notice::reloading});
    emit(actions::load_config{});
  }

  // WINCH: every worker drains; the master and its sockets stay; HUP brings
  // workers back (nginx's step after starting a new binary).
  void drain_workers() {
    if (phase_ != phase::running || idle_) return;
    if (!honours_winch()) {
      log(log_level::warn,
          "WINCH ignored: the master has a controlling terminal, whose resizes send WINCH "
          "(daemonize, or allow it with --winch-with-terminal)");
      return;
    }
    log(log_level::notice, "draining every worker; the master stays (HUP starts workers again)");
    if (loading_ || pending_) {
      log(log_level::warn, "the reload under way is abandoned");
      // It is over: the service manager waits for READY=1 after RELOADING=1.
      notify_ready_again();
    }
    abandon_reload("every worker was drained (WINCH)");
    idle_ = true;
    cancel_respawns();
    for (auto& p : procs_) retire(p);
  }

  void add_worker() {
    if (phase_ != phase::running) return;
    if (idle_) {
      log(log_level::warn, "one worker more: refused, workers are drained (WINCH); HUP first");
      return;
    }
    if (pending_ || loading_) {
      log(log_level::warn, "one worker more: refused while a reload is under way");
      return;
    }
    unsigned slot = config_.workers++;
    if (slots_.size() < config_.workers) slots_.resize(config_.workers);
    slots_[slot] = slot_state{};
    log(log_level::notice, "one worker more: now {}", config_.workers);
    emit(actions::serving{generation_, config_.workers});
    if (!slot_taken(slot)) emit(actions::spawn{slot, generation_});
  }

  void remove_worker() {
    if (phase_ != phase::running) return;
    if (idle_) {
      log(log_level::warn, "one worker fewer: refused, workers are drained (WINCH); HUP first");
      return;
    }
    if (pending_ || loading_) {
      log(log_level::warn, "one worker fewer: refused while a reload is under way");
      return;
    }
    if (config_.workers <= 1) {
      log(log_level::warn, "one worker fewer: refused, 1 worker is the least");
      return;
    }
    unsigned slot = --config_.workers;
    log(log_level::notice, "one worker fewer: now {}", config_.workers);
    emit(actions::serving{generation_, config_.workers});
    if (slots_[slot].respawn_pending) {
      slots_[slot].respawn_pending = false;
      emit(actions::cancel_timer{{timer_kind::respawn, slot}});
    }
    for (auto& p : procs_)
      if (p.slot == slot && p.generation == generation_) retire(p);
  }

  // --- reload ---

  [[nodiscard]] bool generation_ready(const reload_state& r) const {
    return all_ready(r.generation, r.config.workers);
  }

  // Every slot below `workers` has a ready worker of `generation`.
  [[nodiscard]] bool all_ready(std::uint64_t generation, unsigned workers) const {
    for (unsigned k = 0; k < workers; ++k)
      if (!slot_ready(k, generation)) return false;
    return true;
  }

  // Every worker of the new generation serves: the old ones may go.
  void promote() {
    reload_state r = std::move(*pending_);
    pending_.reset();
    emit(actions::cancel_timer{ready_timer(r.generation)});
    const std::uint64_t old = generation_;
    generation_ = r.generation;
    config_ = r.config;
    idle_ = false;
    cancel_respawns();
    slots_.assign(config_.workers, slot_state{});
    emit(actions::serving{generation_, config_.workers});
    unsigned retired = 0;
    for (auto& p : procs_)
      if (p.generation != generation_ && retire(p)) ++retired;
    auto took = std::chrono::duration_cast<milliseconds>(now_ - r.since);
    log(log_level::notice,
        "reload: generation {} serves with {} worker(s) after {} ms; {} worker(s) of generation "
        "{} drain",
        generation_, config_.workers, took.count(), retired, old);
    cap_draining_generations();
    answer_reload(true, fmt::format("generation {} serves with {} worker(s)", generation_,
                                    config_.workers));
    // Before the first generation was announced, a reload's generation
    // serving is news to the service manager but never a handover.
    if (announced_)
      emit(actions::notify{actions::notice::ready});
    else if (!parent_alive_)
      announce();
    reload_again_if_asked();
  }

  // The new generation failed: it drains (it may hold connections already),
  // the old one keeps serving.
  void rollback(const std::string& why) {
    reload_state r = std::move(*pending_);
    pending_.reset();
    emit(actions::cancel_timer{ready_timer(r.generation)});
    log(log_level::error, "reload to generation {} rolled back: {}; generation {} keeps serving",
        r.generation, why, generation_);
    rolled_back_.insert(r.generation);
    for (auto& p : procs_)
      if (p.generation == r.generation) retire(p);
    if (r.roll) restore_moved_slots(*r.roll, r.generation);
    answer_reload(false, fmt::format("generation {} rolled back: {}; generation {} keeps serving",
                                     r.generation, why, generation_));
    notify_ready_again();
    reload_again_if_asked();
  }

  // --- rolling reload (reload_batch): slots move a batch at a time ---
  //
  // A batch's new workers start, and once all are ready the old workers of
  // their slots drain; the next batch starts only once those have exited and
  // the master runs no more than roll_cap() workers with it. The last
  // batch's readiness promotes the generation as a whole reload does. A new
  // worker that crashes or misses the ready timeout of its batch rolls back
  // the whole reload: the moved slots get workers of the serving generation
  // again. A HUP meanwhile waits for the roll to end, then reads the newest
  // configuration; TTIN/TTOU and upgrades are refused until then.

  // Whether a reload to `next` moves its slots in batches: not when one
  // batch holds every slot, nor when no worker serves (WINCH).
  [[nodiscard]] bool rolls(const lifecycle_config& next) const {
    return next.reload_batch != 0 && next.reload_batch < next.workers && !idle_;
  }

  // The most workers a roll runs at once: every slot of the larger
  // generation, plus one batch.
  [[nodiscard]] unsigned roll_cap() const {
    if (!pending_ || !pending_->roll) return 0;
    return std::max(config_.workers, pending_->config.workers) + pending_->roll->batch;
  }

  // A slot whose serving-generation worker was retired by the roll under
  // way: the new generation serves it, nothing of the old one respawns there.
  [[nodiscard]] bool slot_moved(unsigned slot) const {
    return pending_ && pending_->roll && slot < pending_->roll->moved;
  }

  void start_roll() {
    auto& r = *pending_;
    r.roll = roll_state{r.config.reload_batch, 0, 0, 0};
    log(log_level::notice,
        "reload: starting generation {} with {} worker(s), {} at a time (rolling: at most {} "
        "worker(s) at once)",
        r.generation, r.config.workers, r.roll->batch, roll_cap());
    roll_next_batch();
  }

  // Starts the next batch if none is starting and there is room for it.
  void roll_next_batch() {
    auto& r = *pending_;
    auto& roll = *r.roll;
    if (roll.begin != roll.end || roll.moved >= r.config.workers) return;
    const unsigned end = std::min(roll.moved + roll.batch, r.config.workers);
    if (procs_.size() + (end - roll.moved) > roll_cap()) return;  // old workers still drain
    roll.begin = roll.moved;
    roll.end = end;
    log(log_level::info, "reload: starting slot(s) {}-{} of generation {}", roll.begin,
        roll.end - 1, r.generation);
    emit(actions::arm_timer{ready_timer(r.generation), r.config.ready_timeout});
    for (unsigned k = roll.begin; k < roll.end; ++k) emit(actions::spawn{k, r.generation});
  }

  // A worker of the new generation is ready: if its whole batch is, the
  // old workers of those slots drain (or, after the last batch, the
  // generation is promoted).
  void roll_batch_ready() {
    auto& r = *pending_;
    auto& roll = *r.roll;
    if (roll.begin == roll.end) return;
    for (unsigned k = roll.begin; k < roll.end; ++k)
      if (!slot_ready(k, r.generation)) return;
    if (roll.end >= r.config.workers) return promote();
    emit(actions::cancel_timer{ready_timer(r.generation)});
    unsigned retired = 0;
    for (auto& p : procs_)
      if (p.generation != r.generation && p.slot >= roll.begin && p.slot < roll.end &&
          retire(p))
        ++retired;
    for (unsigned k = roll.begin; k < roll.end && k < slots_.size(); ++k)
      if (std::exchange(slots_[k].respawn_pending, false))
        emit(actions::cancel_timer{{timer_kind::respawn, k}});
    log(log_level::notice,
        "reload: slot(s) {}-{} serve in generation {}; {} old worker(s) drain; {} of {} slot(s) "
        "moved",
        roll.begin, roll.end - 1, r.generation, retired, roll.end, r.config.workers);
    roll.moved = roll.end;
    roll.begin = roll.end;
    roll_next_batch();
  }

  // After a roll failed: the slots it moved get workers of the serving
  // generation again (the new ones drain, rollback() retired them).
  void restore_moved_slots(const roll_state& roll, std::uint64_t failed) {
    const unsigned slots = std::min(roll.moved, config_.workers);
    if (slots == 0 || idle_ || phase_ != phase::running) return;
    log(log_level::notice, "reload: slot(s) 0-{} go back from generation {} to generation {}",
        slots - 1, failed, generation_);
    for (unsigned k = 0; k < slots; ++k)
      if (!slot_taken(k) && !slots_[k].respawn_pending) emit(actions::spawn{k, generation_});
  }

  // Why an upgrade cannot start now, or "".
  [[nodiscard]] std::string upgrade_blocked() const {
    if (self_ == 1)
      return "the master is PID 1: when it exits the kernel kills every process of its PID "
             "namespace, the new master too; replace the container instead";
    if (pending_ && pending_->roll)
      return fmt::format(
          "a rolling reload to generation {} is under way ({} of {} slot(s) moved); upgrade "
          "once it is over",
          pending_->generation, pending_->roll->moved, pending_->config.workers);
    return {};
  }

  [[nodiscard]] bool slot_ready(unsigned slot, std::uint64_t generation) const {
    return std::any_of(procs_.begin(), procs_.end(), [&](const process_info& p) {
      return p.generation == generation && p.slot == slot && p.state == process_state::ready;
    });
  }

  // Tells the clients waiting for the reload under way how it ended.
  void answer_reload(bool ok, const std::string& text) {
    for (std::uint64_t c : std::exchange(reload_clients_, {})) emit(actions::reply{c, ok, text});
  }

  void abandon_reload(std::string_view why) {
    if (loading_ || pending_ || reload_again_)
      for (std::uint64_t c : std::exchange(next_reload_clients_, {}))
        reload_clients_.push_back(c);
    answer_reload(false, fmt::format("reload abandoned: {}", why));
    loading_ = false;
    reload_again_ = false;
    if (!pending_) return;
    emit(actions::cancel_timer{ready_timer(pending_->generation)});
    pending_.reset();
  }

  void reload_again_if_asked() {
    if (!std::exchange(reload_again_, false)) return;
    reload();
  }

  // Past max_draining_generations, the draining generations that stopped
  // serving longest ago are terminated. A rolled-back generation never
  // served: it goes first, or the generation that served until this
  // promotion would be terminated while rolled-back ones drain on.
  void cap_draining_generations() {
    std::erase_if(rolled_back_, [&](std::uint64_t g) {
      return std::none_of(procs_.begin(), procs_.end(),
                          [&](const process_info& p) { return p.generation == g; });
    });
    std::vector<std::uint64_t> draining;
    for (const auto& p : procs_)
      if (p.state == process_state::draining && p.generation != generation_ &&
          std::find(draining.begin(), draining.end(), p.generation) == draining.end())
        draining.push_back(p.generation);
    if (draining.size() <= config_.max_draining_generations) return;
    // Served generations stopped serving in the order of their numbers.
    std::sort(draining.begin(), draining.end(), [&](std::uint64_t a, std::uint64_t b) {
      return std::pair(!rolled_back_.count(a), a) < std::pair(!rolled_back_.count(b), b);
    });
    draining.resize(draining.size() - config_.max_draining_generations);
    for (std::uint64_t g : draining) {
      log(log_level::warn, "more than {} generation(s) draining: terminating generation {}",
          config_.max_draining_generations, g);
      for (auto& p : procs_)
        if (p.generation == g && p.state == process_state::draining) {
          terminate(p);
          arm_retire_deadline(p.pid, config_.terminate_timeout);
        }
    }
  }

  // A reload that ends leaves RELOADING=1; only after the first announcement.
  void notify_ready_again() {
    if (announced_) emit(actions::notify{actions::notice::ready});
  }

  void announce() {
    announced_ = true;
    emit(actions::notify{actions::notice::ready});
    if (parent_alive_) emit(actions::report_ready_to_parent{});
  }

  // STOPPING=1, or naming the ready new master the service continues in.
  // Returns whether this stop hands over to it.
  bool announce_stop() {
    if (upgrade_ && upgrade_->ready && !upgrade_->abandoned) {
      emit(actions::hand_over{upgrade_->pid});
      return true;
    }
    // A new master whose parent serves on: the service does not stop.
    if (!parent_alive_) emit(actions::notify{actions::notice::stopping});
    return false;
  }

  // Whether this master is the last one holding the listeners: no ready new
  // master takes them over, no parent master serves on with them.
  [[nodiscard]] bool last_holder() const {
    return !(upgrade_ && upgrade_->ready && !upgrade_->abandoned) && !parent_alive_;
  }

  // --- hot upgrade helpers ---

  static timer_id upgrade_timer(unsigned key) { return {timer_kind::upgrade_deadline, key}; }

  // Reports a failed upgrade: the pid file names this master again at once,
  // the waiting client hears why, workers drained by WINCH come back. The
  // attempt is over for good; a late ready is ignored.
  void fail_upgrade(const std::string& why, std::string_view verdict = "failed") {
    auto& u = *upgrade_;
    if (phase_ == phase::running)
      log(log_level::error, "upgrade {}: {}; this master keeps serving", verdict, why);
    else
      log(log_level::warn, "upgrade abandoned: {}", why);
    u.abandoned = true;
    if (u.pid != 0 && !u.ready) emit(actions::cancel_timer{upgrade_timer(0)});
    if (u.renamed) {
      emit(actions::restore_pid_file{u.pid != 0});
      u.renamed = false;
    }
    emit(actions::reply{std::exchange(u.client, 0), false, why});
    bring_workers_back();
  }

  // This master stops before its new master was ready: that one stops too.
  void abandon_upgrade(int signo, std::string_view how) {
    if (!upgrade_) return;
    if (!upgrade_->abandoned)
      fail_upgrade(fmt::format("the old master is stopping ({}) before the new master was ready",
                               how));
    upgrade_->stop_signal = signo;
    if (upgrade_->pid != 0) stop_new_master(signo);
  }

  void stop_new_master(int signo) {
    upgrade_->stop_signal = signo;
    emit(actions::signal_new_master{upgrade_->pid, signo});
    // One that ignores the signal would block every later upgrade.
    emit(actions::arm_timer{upgrade_timer(1), signo == SIGTERM ? config_.terminate_timeout
                                                               : config_.shutdown_timeout});
  }

  void new_master_exited(int status) {
    upgrade_state u = *upgrade_;
    emit(actions::cancel_timer{upgrade_timer(0)});
    emit(actions::cancel_timer{upgrade_timer(1)});
    if (u.abandoned || phase_ != phase::running) {
      log(u.abandoned || !u.ready ? log_level::info : log_level::warn, "new master {} {}", u.pid,
          describe_wait_status(status));
    } else {
      fail_upgrade(fmt::format("the new master {} {}{}", u.pid, describe_wait_status(status),
                               u.ready ? " after it was ready" : ""),
                   u.ready ? "rolled back" : "failed");
    }
    upgrade_.reset();
    maybe_exit();
  }

  // nginx's rule: workers drained by WINCH for an upgrade that failed start again.
  void bring_workers_back() {
    if (!idle_ || phase_ != phase::running) return;
    idle_ = false;
    log(log_level::notice, "workers were drained (WINCH): generation {} starts {} worker(s) again",
        generation_, config_.workers);
    emit(actions::serving{generation_, config_.workers});
    for (unsigned k = 0; k < config_.workers; ++k)
      if (!slot_taken(k)) emit(actions::spawn{k, generation_});
  }

  // --- heartbeat watchdog and worker recycling ---
  // Apart from the rest: the events above call the watch_* hooks, and
  // handle() runs recycle_next() after every event.

  struct watch_state {
    milliseconds heartbeat{0};  // this worker's configuration, from its generation's
    milliseconds grace{0};
    milliseconds max_age{0};    // jitter drawn
    std::uint64_t max_served = 0;  // jitter drawn
    std::uint64_t max_rss = 0;
    bool heartbeat_armed = false;
    bool age_armed = false;
    bool alive = false;        // it reported ready or sent a heartbeat
    bool aborted = false;      // SIGABRT sent for a missed heartbeat
    std::string recycle_why;   // due for recycling, and why; empty: not
  };
  struct recycle_state {
    unsigned slot = 0;
    std::uint64_t generation = 0;
    pid_t old = 0;          // 0 once it exited on its own
    pid_t replacement = 0;  // 0 until spawned
    std::string why;
  };

  static timer_id heartbeat_timer(pid_t pid) {
    return {timer_kind::heartbeat, static_cast<unsigned>(pid)};
  }
  static timer_id age_timer(pid_t pid) { return {timer_kind::max_age, static_cast<unsigned>(pid)}; }
  static constexpr timer_id recycle_deadline{timer_kind::recycle, 0};
  static constexpr timer_id recycle_retry{timer_kind::recycle, 1};

  // A fraction in [0, 1), the next of recycle_seed's sequence (splitmix64).
  double draw() noexcept {
    std::uint64_t z = (rng_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
  }

  template <class Int>
  Int jittered(Int limit, double jitter) {
    if (!(limit > 0) || !(jitter > 0)) return limit;
    return limit + static_cast<Int>(static_cast<double>(limit) * jitter * draw());
  }

  void watch_spawned(const process_info& p) {
    const lifecycle_config& c =
        pending_ && p.generation == pending_->generation ? pending_->config : config_;
    watch_state w;
    w.heartbeat = c.heartbeat_timeout;
    w.grace = c.heartbeat_grace;
    w.max_served = jittered(c.max_requests, c.recycle_jitter);
    w.max_age = milliseconds(jittered(c.max_age.count(), c.recycle_jitter));
    w.max_rss = c.max_rss;
    // One that never comes to life is aborted too, after the time a reload
    // (or a recycling) would have given up on it and one heartbeat more.
    if (w.heartbeat.count() > 0) {
      w.heartbeat_armed = true;
      emit(actions::arm_timer{heartbeat_timer(p.pid), c.ready_timeout + w.heartbeat});
    }
    watch_[p.pid] = w;
    if (recycle_ && recycle_->replacement == 0 && recycle_->slot == p.slot &&
        recycle_->generation == p.generation)
      recycle_->replacement = p.pid;
  }

  // The heartbeats are due from readiness on (or from the first one).
  void watch_ready(const process_info& p) {
    auto it = watch_.find(p.pid);
    if (it == watch_.end()) return;
    auto& w = it->second;
    w.alive = true;
    if (w.heartbeat.count() > 0 && !w.aborted) {
      w.heartbeat_armed = true;
      emit(actions::arm_timer{heartbeat_timer(p.pid), w.heartbeat});
    }
    if (w.max_age.count() > 0) {
      w.age_armed = true;
      auto left = w.max_age - std::chrono::duration_cast<milliseconds>(now_ - p.started);
      emit(actions::arm_timer{age_timer(p.pid), std::max(left, milliseconds(0))});
    }
    if (recycle_ && p.pid == recycle_->replacement) replacement_ready();
  }

  // Returns what the exit log adds: why the master aborted it, if it did.
  std::string watch_exited(const process_info& p, int status) {
    std::string why = unwatch(p.pid);
    if (recycle_ && p.pid == recycle_->old) recycle_->old = 0;  // the replacement takes the slot
    if (recycle_ && p.pid == recycle_->replacement) {
      if (recycle_->old != 0)
        recycle_failed(fmt::format("its replacement {} {} before it was ready", p.pid,
                                   describe_wait_status(status)));
      else
        drop_recycle();  // neither is left: the slot respawns as after any crash
    }
    return why;
  }

  // Forgets an exited worker's or helper's watch; returns what its exit log
  // adds: why the master aborted it, if it did.
  std::string unwatch(pid_t pid) {
    auto it = watch_.find(pid);
    if (it == watch_.end()) return {};
    const auto& w = it->second;
    std::string why;
    if (w.aborted)
      why = w.alive ? fmt::format(" after missing its heartbeat for {} ms", w.heartbeat.count())
                    : std::string(" after hanging at start");
    if (w.heartbeat_armed) emit(actions::cancel_timer{heartbeat_timer(pid)});
    if (w.age_armed) emit(actions::cancel_timer{age_timer(pid)});
    watch_.erase(it);
    return why;
  }

  // A helper's heartbeats are watched as a worker's, from its start (a
  // helper reports no readiness): the first is due within ready_timeout.
  void watch_helper(const helper_info& h) {
    if (config_.heartbeat_timeout.count() == 0) return;
    watch_state w;
    w.heartbeat = config_.heartbeat_timeout;
    w.grace = config_.heartbeat_grace;
    w.heartbeat_armed = true;
    emit(actions::arm_timer{heartbeat_timer(h.pid), config_.ready_timeout + w.heartbeat});
    watch_[h.pid] = w;
  }

  // The slot's worker ended unexpectedly: status says why.
  void note_replacement(const process_info& p, std::string cause) {
    if (p.generation != generation_ || p.slot >= config_.workers) return;
    if (p.state != process_state::ready && p.state != process_state::starting) return;
    if (p.state == process_state::starting && slot_taken(p.slot)) return;  // a replacement
    replaced_[p.slot] = replacement_status{p.slot, p.pid, std::move(cause), now_};
  }

  void on(const events::heartbeat& h) {
    process_info* p = find(h.pid);
    helper_info* helper = p ? nullptr : find_helper(h.pid);
    auto it = watch_.find(h.pid);
    if ((!p && !helper) || it == watch_.end()) return;
    if ((p ? p->state : helper->state) == process_state::terminating) return;
    auto& w = it->second;
    if (w.heartbeat.count() == 0 || w.aborted) return;
    w.alive = true;
    w.heartbeat_armed = true;
    emit(actions::arm_timer{heartbeat_timer(h.pid), w.heartbeat});
  }

  // SIGABRT (a core or a stack to read), then SIGKILL after the grace. The
  // state stays: a serving worker's end is a crash (respawn, backoff); a
  // draining one's was expected (it was replaced already). A helper's is a
  // crash too: it is respawned with its backoff.
  void heartbeat_missed(pid_t pid) {
    process_info* p = find(pid);
    helper_info* h = p ? nullptr : find_helper(pid);
    auto it = watch_.find(pid);
    if ((!p && !h) || it == watch_.end()) return;
    if ((p ? p->state : h->state) == process_state::terminating) return;
    auto& w = it->second;
    const std::string who = p ? fmt::format("worker {} pid {}", p->slot, pid)
                              : fmt::format("{} {} (helper {})", h->role, pid, h->index);
    if (!w.aborted) {
      w.aborted = true;
      if (w.alive)
        log(log_level::warn, "{}{} missed its heartbeat for {} ms: SIGABRT, SIGKILL in {} ms if it lives",
            who, p ? fmt::format(" (generation {}, {})", p->generation, to_string(p->state)) : "",
            w.heartbeat.count(), w.grace.count());
      else
        log(log_level::warn,
            "{}{} {} within {} ms of its start: SIGABRT, SIGKILL in {} ms if it lives", who,
            p ? fmt::format(" (generation {})", p->generation) : "",
            p ? "neither reported ready nor sent a heartbeat" : "sent no heartbeat",
            std::chrono::duration_cast<milliseconds>(now_ - (p ? p->started : h->started)).count(),
            w.grace.count());
      emit(actions::kill{pid, SIGABRT});
      emit(actions::arm_timer{heartbeat_timer(pid), w.grace});
      return;
    }
    w.heartbeat_armed = false;
    log(log_level::warn, "{} still runs {} ms after SIGABRT; sending SIGKILL", who, w.grace.count());
    emit(actions::kill{pid, SIGKILL});
  }

  void on(const events::served& s) {
    process_info* p = find(s.pid);
    if (!p) return;
    p->served = s.total;
    auto it = watch_.find(s.pid);
    if (it != watch_.end() && it->second.max_served != 0 && s.total >= it->second.max_served)
      due(*p, fmt::format("{} requests (limit {})", s.total, it->second.max_served));
  }

  void on(const events::worker_rss& r) {
    process_info* p = find(r.pid);
    if (!p) return;
    p->rss = r.bytes;
    auto it = watch_.find(r.pid);
    if (it != watch_.end() && it->second.max_rss != 0 && r.bytes > it->second.max_rss)
      due(*p, fmt::format("rss {} MB > {} MB", r.bytes >> 20, it->second.max_rss >> 20));
  }

  void age_reached(pid_t pid) {
    auto it = watch_.find(pid);
    if (it == watch_.end()) return;
    it->second.age_armed = false;
    if (process_info* p = find(pid))
      due(*p, fmt::format("age {} s (limit {} s)",
                          std::chrono::duration_cast<std::chrono::seconds>(now_ - p->started).count(),
                          std::chrono::duration_cast<std::chrono::seconds>(it->second.max_age).count()));
  }

  // Queues a serving worker for recycling, once.
  void due(const process_info& p, std::string why) {
    auto it = watch_.find(p.pid);
    if (it == watch_.end() || !it->second.recycle_why.empty() || it->second.aborted) return;
    if (p.state != process_state::ready || p.generation != generation_) return;
    log(log_level::info, "worker {} (slot {}) is due for recycling: {}", p.pid, p.slot, why);
    it->second.recycle_why = std::move(why);
    recycle_queue_.push_back(p.pid);
  }

  // One slot at a time, never during a reload nor a stop: a replacement for
  // the slot starts; once ready, the old worker drains (as a reload does).
  void recycle_next() {
    const bool running = phase_ == phase::running && !idle_;
    if (recycle_ && (!running || recycle_->generation != generation_ ||
                     recycle_->slot >= config_.workers))
      drop_recycle();
    if (!running) {
      recycle_queue_.clear();
      if (std::exchange(recycle_retry_pending_, false)) emit(actions::cancel_timer{recycle_retry});
      return;
    }
    if (recycle_ || recycle_retry_pending_ || pending_ || loading_) return;
    while (!recycle_queue_.empty()) {
      pid_t pid = recycle_queue_.front();
      recycle_queue_.pop_front();
      process_info* p = find(pid);
      auto it = watch_.find(pid);
      if (!p || it == watch_.end() || it->second.aborted || p->state != process_state::ready ||
          p->generation != generation_ || p->slot >= config_.workers)
        continue;
      recycle_ = recycle_state{p->slot, p->generation, pid, 0, it->second.recycle_why};
      log(log_level::notice, "recycling worker {} (slot {}): {}; starting its replacement", pid,
          p->slot, it->second.recycle_why);
      emit(actions::arm_timer{recycle_deadline, config_.ready_timeout});
      emit(actions::spawn{p->slot, generation_});
      return;
    }
  }

  void replacement_ready() {
    recycle_state r = std::move(*recycle_);
    recycle_.reset();
    recycle_failures_ = 0;
    emit(actions::cancel_timer{recycle_deadline});
    process_info* old = r.old ? find(r.old) : nullptr;
    if (!old) return;
    log(log_level::notice, "worker {} (slot {}) recycled: {}; worker {} serves in its place",
        r.old, r.slot, r.why, r.replacement);
    replaced_[r.slot] = replacement_status{r.slot, r.old, "recycled: " + r.why, now_};
    retire(*old);
  }

  // The replacement did not come up: it goes, the old worker serves on, and
  // the slot is tried again after a backoff.
  void recycle_failed(const std::string& why) {
    recycle_state r = std::move(*recycle_);
    recycle_.reset();
    emit(actions::cancel_timer{recycle_deadline});
    if (process_info* q = r.replacement ? find(r.replacement) : nullptr;
        q && q->state != process_state::terminating) {
      terminate(*q);
      arm_retire_deadline(q->pid, config_.terminate_timeout);
    }
    milliseconds delay = config_.restart.backoff_initial;
    for (unsigned i = 0; i < recycle_failures_ && delay < config_.restart.backoff_max; ++i)
      delay *= 2;
    delay = std::min(delay, config_.restart.backoff_max);
    ++recycle_failures_;
    log(log_level::warn,
        "recycling worker {} (slot {}) failed: {}; it keeps serving, next attempt in {} ms",
        r.old, r.slot, why, delay.count());
    recycle_retry_pending_ = true;
    emit(actions::arm_timer{recycle_retry, delay});
    recycle_queue_.push_front(r.old);
  }

  void drop_recycle() {
    recycle_.reset();
    emit(actions::cancel_timer{recycle_deadline});
  }

  bool replacement_failed_to_spawn(const events::spawn_failed& f) {
    if (!recycle_ || recycle_->replacement != 0 || f.slot != recycle_->slot ||
        f.generation != recycle_->generation)
      return false;
    if (recycle_->old == 0) {  // nothing serves the slot: the usual respawn
      drop_recycle();
      return false;
    }
    recycle_failed(fmt::format("its replacement could not start ({})",
                               std::system_category().message(f.error)));
    return true;
  }

  void recycle_timer_fired(unsigned key) {
    if (key == 1) {
      recycle_retry_pending_ = false;  // recycle_next() follows
      return;
    }
    if (!recycle_ || recycle_->replacement == 0) return;
    if (recycle_->old == 0) return recycle_.reset();  // the replacement is the slot's worker now
    recycle_failed(fmt::format("its replacement {} was not ready within {} ms",
                               recycle_->replacement, config_.ready_timeout.count()));
  }

  // --- helpers ---

  static timer_id ready_timer(std::uint64_t generation) {
    return {timer_kind::ready_deadline, static_cast<unsigned>(generation)};
  }

  void terminate(process_info& p) {
    p.state = process_state::terminating;
    emit(actions::send{p.pid, worker_command::terminate});
  }

  void drain(process_info& p) {
    if (p.state == process_state::terminating || p.state == process_state::draining) return;
    p.state = process_state::draining;
    emit(actions::send{p.pid, worker_command::quit, config_.shutdown_timeout.count()});
  }

  // Drains one worker while the master goes on: it gets its own deadline.
  bool retire(process_info& p) {
    if (p.state == process_state::terminating || p.state == process_state::draining) return false;
    drain(p);
    arm_retire_deadline(p.pid, config_.shutdown_timeout);
    return true;
  }

  void arm_retire_deadline(pid_t pid, milliseconds after) {
    retire_timers_.insert(pid);
    emit(actions::arm_timer{{timer_kind::retire_deadline, static_cast<unsigned>(pid)}, after});
  }

  void kill(process_info& p, std::string_view why) {
    log(log_level::warn, "worker {} (slot {}, generation {}) {}; sending SIGKILL", p.pid, p.slot,
        p.generation, why);
    emit(actions::kill{p.pid, SIGKILL});
    p.state = process_state::terminating;
  }

  void arm_escalation(milliseconds after) {
    auto at = now_ + after;
    if (escalation_armed_ && escalate_at_ <= at) return;  // a sooner one stands
    escalation_armed_ = true;
    escalate_at_ = at;
    emit(actions::arm_timer{{timer_kind::kill_escalation, 0}, after});
  }

  void maybe_exit() {
    if ((phase_ != phase::quitting && phase_ != phase::stopping) || !procs_.empty()) return;
    if (!helpers_gone()) return;
    // An unready new master stops with this one; it would be left unsupervised.
    if (upgrade_ && (upgrade_->abandoned || !upgrade_->ready)) return;
    if (escalation_armed_) emit(actions::cancel_timer{{timer_kind::kill_escalation, 0}});
    escalation_armed_ = false;
    if (std::exchange(helpers_deadline_, false))
      emit(actions::cancel_timer{{timer_kind::kill_escalation, 1}});
    phase_ = phase::exited;
    log(log_level::notice, "every worker has exited; master exits");
    emit(actions::exit{0, last_holder()});
  }

  void cancel_respawns() {
    for (unsigned k = 0; k < slots_.size(); ++k) {
      if (!slots_[k].respawn_pending) continue;
      slots_[k].respawn_pending = false;
      emit(actions::cancel_timer{{timer_kind::respawn, k}});
    }
    for (unsigned k = 0; k < helper_slots_.size(); ++k) {
      if (!helper_slots_[k].respawn_pending) continue;
      helper_slots_[k].respawn_pending = false;
      helpers_[k].respawn_at.reset();
      emit(actions::cancel_timer{{timer_kind::helper_respawn, k}});
    }
  }

  // A worker that stayed up a whole period clears its slot's crash record.
  void forgive(unsigned slot) {
    slots_[slot].recent.clear();
    slots_[slot].backoff_level = 0;
  }

  // Respawn now while under the restart intensity; past it, wait with backoff.
  void schedule_respawn(unsigned slot, bool failed_to_start) {
    auto& s = slots_[slot];
    if (s.respawn_pending) return;
    auto delay = backoff_for(s, failed_to_start);
    if (!delay) return respawn(slot);
    log(log_level::warn, "slot {} restarted {} times in {} ms; next respawn in {} ms", slot,
        s.recent.size(), config_.restart.period.count(), delay->count());
    emit(actions::arm_timer{{timer_kind::respawn, slot}, *delay});
  }

  // Nothing when `s` may start again now; else how long it waits (the
  // backoff is then counted and pending).
  std::optional<milliseconds> backoff_for(slot_state& s, bool failed_to_start) {
    while (!s.recent.empty() && now_ - s.recent.front() >= config_.restart.period)
      s.recent.pop_front();
    // Once a slot is backing off it keeps backing off until a process of it
    // stays up for a whole period: at most R quick restarts, never R again.
    if (!failed_to_start && s.backoff_level == 0 &&
        s.recent.size() < config_.restart.max_restarts)
      return std::nullopt;
    milliseconds delay = config_.restart.backoff_initial;
    for (unsigned i = 0; i < s.backoff_level && delay < config_.restart.backoff_max; ++i)
      delay *= 2;
    delay = std::min(delay, config_.restart.backoff_max);
    ++s.backoff_level;
    s.respawn_pending = true;
    s.respawn_at = now_ + delay;
    return delay;
  }

  // --- helper processes: beside the workers, never serving ---

  void on(const events::helper_spawned& s) {
    if (s.helper >= helpers_.size()) return;
    auto& h = helpers_[s.helper];
    h.pid = s.pid;
    h.state = process_state::ready;
    h.started = now_;
    log(log_level::info, "started {} {} (helper {})", h.role, s.pid, h.index);
    watch_helper(h);
    // A stop that raced the spawn: it leaves at once.
    if (phase_ == phase::stopping) {
      h.state = process_state::terminating;
      emit(actions::send{h.pid, worker_command::terminate});
    }
    if (phase_ == phase::quitting && procs_.empty()) stop_helpers();
  }

  void on(const events::helper_spawn_failed& f) {
    if (f.helper >= helpers_.size()) return;
    const auto& h = helpers_[f.helper];
    log(log_level::error, "cannot start {} (helper {}): {}", h.role, h.index,
        f.reason.empty() ? std::system_category().message(f.error) : f.reason);
    if (phase_ == phase::running) schedule_helper(f.helper, true);
    maybe_exit();
  }

  // True when `x` was a helper's exit (handled).
  bool helper_exited(const events::exited& x) {
    helper_info* found = find_helper(x.pid);
    if (!found) return false;
    helper_info& h = *found;
    const bool expected = h.state == process_state::draining ||
                          h.state == process_state::terminating || phase_ != phase::running;
    h.pid = 0;
    const std::string aborted = unwatch(x.pid);
    if (expected) {
      log(log_level::info, "{} {} (helper {}) {}{}", h.role, x.pid, h.index,
          describe_wait_status(x.status), aborted);
    } else {
      log(log_level::warn, "{} {} (helper {}) {} unexpectedly{}", h.role, x.pid, h.index,
          describe_wait_status(x.status), aborted);
      auto& s = helper_slots_[h.id];
      if (now_ - h.started >= config_.restart.period) {
        s.recent.clear();
        s.backoff_level = 0;
      }
      schedule_helper(h.id, false);
    }
    maybe_exit();
    return true;
  }

  helper_info* find_helper(pid_t pid) {
    auto it = std::find_if(helpers_.begin(), helpers_.end(),
                           [&](const helper_info& h) { return h.pid != 0 && h.pid == pid; });
    return it == helpers_.end() ? nullptr : &*it;
  }

  void schedule_helper(unsigned id, bool failed_to_start) {
    auto& s = helper_slots_[id];
    if (s.respawn_pending) return;
    auto delay = backoff_for(s, failed_to_start);
    if (!delay) return respawn_helper(id);
    helpers_[id].respawn_at = s.respawn_at;
    log(log_level::warn, "{} (helper {}) restarted {} times in {} ms; next respawn in {} ms",
        helpers_[id].role, helpers_[id].index, s.recent.size(), config_.restart.period.count(),
        delay->count());
    emit(actions::arm_timer{{timer_kind::helper_respawn, id}, *delay});
  }

  void respawn_helper(unsigned id) {
    auto& s = helper_slots_[id];
    s.recent.push_back(now_);
    helpers_[id].restarts = ++s.restarts;
    emit(actions::spawn_helper{id});
  }

  // Whether the master may exit as far as helpers go. On a graceful stop
  // they are told to quit once the last worker is gone, with a deadline of
  // their own (shutdown_timeout, then SIGKILL).
  bool helpers_gone() {
    const bool running = std::any_of(helpers_.begin(), helpers_.end(),
                                     [](const helper_info& h) { return h.pid != 0; });
    if (running && phase_ == phase::quitting) stop_helpers();
    return !running;
  }

  void stop_helpers() {
    unsigned told = 0;
    for (auto& h : helpers_)
      if (h.pid != 0 && h.state != process_state::draining &&
          h.state != process_state::terminating) {
        h.state = process_state::draining;
        emit(actions::send{h.pid, worker_command::quit, config_.shutdown_timeout.count()});
        ++told;
      }
    if (told == 0) return;
    log(log_level::notice, "the workers have exited; stopping {} helper process(es)", told);
    helpers_deadline_ = true;
    emit(actions::arm_timer{{timer_kind::kill_escalation, 1}, config_.shutdown_timeout});
  }

  void kill_helper(helper_info& h) {
    if (h.pid == 0 || (h.state != process_state::draining && h.state != process_state::terminating))
      return;
    log(log_level::warn, "{} {} (helper {}) did not exit in time; sending SIGKILL", h.role, h.pid,
        h.index);
    emit(actions::kill{h.pid, SIGKILL});
    h.state = process_state::terminating;
  }

  void respawn(unsigned slot) {
    auto& s = slots_[slot];
    s.recent.push_back(now_);
    ++s.restarts;
    emit(actions::spawn{slot, generation_});
  }

  [[nodiscard]] bool slot_taken(unsigned slot) const {
    return std::any_of(procs_.begin(), procs_.end(), [&](const process_info& p) {
      return p.slot == slot && p.generation == generation_ &&
             (p.state == process_state::starting || p.state == process_state::ready);
    });
  }

  process_info* find(pid_t pid) {
    for (auto& p : procs_)
      if (p.pid == pid) return &p;
    return nullptr;
  }

  template <class A>
  void emit(A&& a) {
    out_.emplace_back(std::forward<A>(a));
  }

  template <class... Args>
  void log(log_level level, detail::format_string<Args...> format, Args&&... args) {
    emit(actions::log{level, fmt::vformat(format, fmt::make_format_args(args...))});
  }

  lifecycle_config config_;
  phase phase_ = phase::idle;
  std::uint64_t generation_ = 1;
  std::uint64_t last_generation_ = 1;
  std::optional<reload_state> pending_;
  bool loading_ = false;
  bool reload_again_ = false;
  std::vector<std::uint64_t> reload_clients_;       // waiting for the reload under way
  std::vector<std::uint64_t> next_reload_clients_;  // for the one that follows it
  bool idle_ = false;  // WINCH: no workers until the next reload
  bool announced_ = false;  // the first generation was announced ready
  std::uint64_t first_generation_ = 1;
  std::optional<upgrade_state> upgrade_;
  pid_t self_ = 0;
  pid_t parent_ = 0;  // the master this one was upgraded from
  bool parent_alive_ = false;
  bool terminal_ = false;  // a controlling terminal: WINCH may be a resize
  bool daemonized_ = false;
  std::vector<process_info> procs_;
  std::vector<slot_state> slots_;
  std::vector<helper_info> helpers_;      // by helper id
  std::vector<slot_state> helper_slots_;  // their backoff, by helper id
  bool helpers_deadline_ = false;         // kill_escalation[1]: the helpers' drain deadline
  std::set<pid_t> retire_timers_;
  std::set<std::uint64_t> rolled_back_;  // generations whose reload was rolled back, still in the table
  bool escalation_armed_ = false;
  steady_clock::time_point escalate_at_{};
  // heartbeat watchdog and recycling
  std::map<pid_t, watch_state> watch_;
  std::deque<pid_t> recycle_queue_;  // due for recycling, in order
  std::optional<recycle_state> recycle_;
  bool recycle_retry_pending_ = false;
  unsigned recycle_failures_ = 0;  // in a row: the retry's backoff
  std::map<unsigned, replacement_status> replaced_;  // slot -> its last replacement
  std::uint64_t rng_ = 0;
  steady_clock::time_point now_{};
  std::vector<action> out_;
};

namespace detail {

/// Checks a Lifecycle policy member by member; each message names what is missing.
template <class L>
constexpr bool check_lifecycle_policy() {
  static_assert(std::constructible_from<L, const lifecycle_config&>,
                "Lifecycle policy is missing: explicit L(const lifecycle_config&)");
  static_assert(
      requires(L& l, const event& e, steady_clock::time_point t) {
        { l.handle(e, t) } -> std::same_as<std::vector<action>>;
      },
      "Lifecycle policy is missing: std::vector<action> handle(const event&, "
      "steady_clock::time_point)");
  static_assert(
      requires(const L& l) {
        { l.processes() } -> std::convertible_to<const std::vector<process_info>&>;
      },
      "Lifecycle policy is missing: const std::vector<process_info>& processes() const");
  static_assert(requires(const L& l) { { l.current_phase() } -> std::same_as<phase>; },
                "Lifecycle policy is missing: phase current_phase() const");
  static_assert(requires(const L& l) { { l.generation() } -> std::convertible_to<std::uint64_t>; },
                "Lifecycle policy is missing: std::uint64_t generation() const");
  static_assert(
      requires(const L& l) {
        { l.upgrade() } -> std::convertible_to<std::optional<upgrade_status>>;
      },
      "Lifecycle policy is missing: std::optional<upgrade_status> upgrade() const");
  static_assert(
      requires(const L& l) {
        { l.backoffs() } -> std::convertible_to<std::vector<backoff_status>>;
      },
      "Lifecycle policy is missing: std::vector<backoff_status> backoffs() const");
  static_assert(requires(const L& l) { { l.parent_master() } -> std::convertible_to<pid_t>; },
                "Lifecycle policy is missing: pid_t parent_master() const");
  return true;
}

}  // namespace detail
}  // namespace procmodel
