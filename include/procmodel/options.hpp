#pragma once

/// @file options.hpp
/// What a supervisor is told: worker count, listen addresses, files, timeouts;
/// and `command_line`, which fills options from argv and can be extended with
/// a program's own flags.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "detail/config.hpp"
#include "log.hpp"
#include "restart_policy.hpp"
#include "signals.hpp"

namespace procmodel {

/// A resource limit without a bound (RLIM_INFINITY on Linux).
inline constexpr std::uint64_t rlimit_unlimited = ~std::uint64_t{0};

/// Which CPU each worker runs on: the worker of slot k on the (k mod n)th of
/// `cpus`, or with `automatic` of the n CPUs the master may run on at start.
struct cpu_affinity {
  bool automatic = false;
  std::vector<unsigned> cpus;
  [[nodiscard]] bool enabled() const noexcept { return automatic || !cpus.empty(); }
  friend bool operator==(const cpu_affinity&, const cpu_affinity&) = default;
};

/// Everything a supervisor is configured with.
struct options {
  /// Number of worker processes (nginx's worker_processes).
  unsigned workers = std::max(1u, std::thread::hardware_concurrency());
  /// Addresses to listen on, as HOST:PORT or [V6]:PORT; bound once by the master.
  std::vector<std::string> listen;
  /// The workers serve no socket (queue consumers, schedulers): the master
  /// starts without a listen address. Without it, no address is an error.
  bool without_listeners = false;
  /// listen(2) backlog of each listener.
  int backlog = 511;
  /// Pid file, written atomically; empty for none. A program that sets one
  /// by default lets `prog -s COMMAND` find its master without --pid-file.
  std::string pid_file;
  /// Log file; empty for stderr.
  std::string log_file;
  log_level level = log_level::info;
  /// Fast stop: SIGKILL whatever has not exited after this long.
  milliseconds terminate_timeout{5'000};
  /// Graceful stop: SIGKILL whatever has not drained after this long.
  milliseconds shutdown_timeout{10'000};
  /// How long a worker whose master died may take to drain.
  milliseconds orphan_timeout{500};
  /// Reload: every new worker must call ready() within this, or the reload is rolled back.
  milliseconds ready_timeout{10'000};
  /// Reload: at most this many old generations drain at once; the oldest past it is terminated.
  unsigned max_draining_generations = 2;
  /// Reload: replace this many slots at a time (a rolling reload), each batch
  /// ready before its old workers drain and gone before the next starts;
  /// 0: every slot at once.
  unsigned reload_batch = 0;
  /// Reap every orphaned descendant, as PID 1 does (PR_SET_CHILD_SUBREAPER).
  /// A master that is PID 1 does it anyway.
  bool subreaper = false;
  /// What SIGTERM means: `automatic` keeps the Signals policy's meaning
  /// (nginx: fast stop) but drains when the master is PID 1 (a container).
  sigterm_mode sigterm = sigterm_mode::automatic;
  /// One SO_REUSEPORT socket per worker slot instead of one shared socket.
  bool reuseport = false;
  /// Under systemd, keep the listening sockets in the service's
  /// file-descriptor store (FDSTORE=1), so that a master restarted after a
  /// crash takes them back with the connections queued meanwhile. On by
  /// itself where systemd says the store exists ($FDSTORE, systemd 254+).
  bool fd_store = false;
  /// Run the workers as threads of the master, not processes (nginx's
  /// `master_process off`): for a debugger. Needs a spawner that can
  /// (the default, runtime_spawner); fixed at start, a reload keeps it.
  bool single_process = false;
  /// Crash-loop protection.
  restart_policy restart{};
  /// Detach from the terminal (fork, setsid, stdio to /dev/null). A new
  /// master started by an upgrade never does: its parent tracks it by pid.
  bool daemon = false;
  /// WINCH drains the workers even with a controlling terminal (whose
  /// resizes send WINCH); by default only a master without one honours it.
  bool winch_with_terminal = false;
  /// Set by `-s CMD`: send this command to the running master and exit.
  std::optional<command> signal;
  /// Set by `-s status`, `-s upgrade` or `-s reload`: ask the running master
  /// over its control socket, print the answer and exit (0 only on success).
  std::string query;
  /// `-s reload --no-wait`: only send SIGHUP, as nginx does; no verdict.
  bool no_wait = false;
  /// `-t`: run the reloader on copies of the configuration, say whether it
  /// loads, and exit; no master is started or told anything.
  bool check_config = false;
  /// `-s status --json`: the table as JSON.
  bool json = false;
  /// The control socket; empty: "<pid file>.sock".
  std::string control_socket;
  /// Heartbeat watchdog (0: off): a worker whose loop sent no heartbeat for
  /// this long gets SIGABRT, then SIGKILL after heartbeat_grace, and is
  /// replaced. Workers send one every third of it. Not with single_process.
  milliseconds heartbeat_timeout{0};
  milliseconds heartbeat_grace{3'000};
  /// Recycling (each 0: off): a worker is replaced by a fresh one of its
  /// slot, readiness-gated, once it reported this many requests
  /// (worker_context::served), once it is this old, or once its resident
  /// memory is above max_rss bytes (measured every rss_check_interval).
  std::uint64_t max_requests = 0;
  milliseconds max_age{0};
  std::uint64_t max_rss = 0;
  milliseconds rss_check_interval{1'000};
  /// Each worker's max_requests and max_age are raised by a random part of up
  /// to this fraction, so that workers started together do not recycle together.
  double recycle_jitter = 0.1;
  /// Automatic upgrade: the new master must be ready within this, or it is stopped.
  milliseconds upgrade_timeout{30'000};
  /// The program name used in messages; argv[0]'s last component by default.
  std::string program_name = "procmodel";

  // --- Privileges and per-worker settings (nginx's user, worker_rlimit_nofile,
  // worker_rlimit_core, worker_cpu_affinity, worker_priority, working_directory).
  // Each worker process applies them to itself before its Worker runs; the
  // master checks them at start and on reload. Not applied with single_process.

  /// Workers run as this user (a name or a number), the master keeps root;
  /// empty: as the master. Needs a master started as root.
  std::string user;
  /// The workers' group (a name or a number); empty: the user's primary group.
  std::string group;
  /// RLIMIT_NOFILE (soft and hard) of each worker; unset: the master's.
  std::optional<std::uint64_t> worker_rlimit_nofile;
  /// RLIMIT_CORE (soft and hard, bytes; rlimit_unlimited) of each worker; unset: the master's.
  std::optional<std::uint64_t> worker_rlimit_core;
  /// The CPU each worker runs on; off: the master's CPUs.
  cpu_affinity worker_cpu_affinity;
  /// Nice value of each worker, -20 (first) to 19 (last); unset: the master's.
  std::optional<int> worker_priority;
  /// Each worker's working directory, an absolute path; empty: the master's.
  std::string worker_directory;
};

/// Parses a whole decimal number in [lo, hi]; throws std::invalid_argument.
PROCMODEL_DECL long long parse_number(std::string_view what, std::string_view text, long long lo,
                                      long long hi);

/// Parses a resource limit: a whole number of at most `hi`, or "unlimited"
/// (rlimit_unlimited); throws std::invalid_argument.
PROCMODEL_DECL std::uint64_t parse_rlimit(std::string_view what, std::string_view text,
                                          std::uint64_t hi);

/// Parses "auto" or a CPU list such as "0,2,4-7" (in that order, repeats
/// allowed); throws std::invalid_argument.
PROCMODEL_DECL cpu_affinity parse_cpu_affinity(std::string_view what, std::string_view text);

/// The command a signal carries for `-s NAME` (stop, quit, reload, reopen,
/// upgrade, drain-workers, add-worker, remove-worker); none for another name.
PROCMODEL_DECL std::optional<command> parse_command(std::string_view name);

/// One command `-s` accepts.
struct control_command {
  std::string_view name;
  std::string_view help;
  /// Asked over the control socket, which answers (status, and the verdict
  /// of reload and upgrade); otherwise a signal through the pid file.
  bool asks = false;
};

/// Every command `-s` accepts: the table both the parser and --help read.
inline constexpr control_command control_commands[] = {
    {"stop", "fast stop: workers exit now, then the master", false},
    {"quit", "graceful stop: workers drain, then the master exits", false},
    {"reload", "start a new generation from the re-read configuration; waits for the verdict "
               "(--no-wait: only send SIGHUP)", true},
    {"reopen", "reopen the log files (after rotating them)", false},
    {"upgrade", "hot upgrade to the binary on disk; waits until the new master serves", true},
    {"status", "print the process table (--json: as JSON)", true},
    {"drain-workers", "workers drain and exit; the master and its sockets stay", false},
    {"add-worker", "one worker more", false},
    {"remove-worker", "one worker fewer", false},
};

/// Fills `options` from argv. Programs add flags of their own with add().
/// --help shows, as each flag's default, the value `options` holds when the
/// command_line is made: set the program's own defaults first.
///
/// @code
/// procmodel::options opt;
/// procmodel::command_line cli(opt);
/// cli.add("--config", "PATH", "configuration file", [&](std::string_view v) { path = v; });
/// if (auto code = cli.parse(argc, argv)) return *code;
/// @endcode
class command_line {
 public:
  /// A flag's handler; it throws std::invalid_argument to reject the value.
  using handler = std::function<void(std::string_view value)>;

  PROCMODEL_DECL explicit command_line(options& opt);

  // The standard flags' handlers point back at this object.
  command_line(const command_line&) = delete;
  command_line& operator=(const command_line&) = delete;

  /// Adds a flag that takes a value (`--name VALUE` or `--name=VALUE`).
  PROCMODEL_DECL command_line& add(std::string name, std::string metavar, std::string help,
                                     handler h);

  /// Adds a flag without a value.
  PROCMODEL_DECL command_line& add_flag(std::string name, std::string help,
                                          std::function<void()> h);

  /// Parses argv. Returns an exit code when the program should exit now
  /// (0 after --help, 2 after a usage error, reported on stderr).
  PROCMODEL_DECL std::optional<int> parse(int argc, const char* const* argv);

  /// The --help text.
  [[nodiscard]] PROCMODEL_DECL std::string usage() const;

 private:
  // The standard flags: plain functions and members, not a std::function
  // type each, so that a header-only program compiles forty fewer.
  using standard_handler = void (*)(options&, std::string_view value);
  PROCMODEL_DECL void add(std::string name, std::string metavar, std::string help,
                          standard_handler h);
  PROCMODEL_DECL void add_flag(std::string name, std::string help, bool options::*sets);

  struct flag {
    std::string name, metavar, help;
    handler on_value;
    std::function<void()> on_flag;
    standard_handler standard = nullptr;  // a standard flag with a value
    bool options::*sets = nullptr;        // or one without
    [[nodiscard]] bool takes_value() const { return !on_flag && !sets; }
  };

  options& opt_;
  std::vector<flag> flags_;
  bool listen_seen_ = false;
};

}  // namespace procmodel

#if defined(PROCMODEL_HEADER_ONLY)
#include "impl/options.ipp"
#endif
