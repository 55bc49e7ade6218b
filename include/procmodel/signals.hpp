#pragma once

/// @file signals.hpp
/// The Signals policy: which operating-system signal means which command.
///
/// @par Signals policy contract (copy and edit to write your own table)
/// @code
/// struct my_signals {
///   // Signals the master watches; all others keep their default disposition.
///   static constexpr std::array<int, N> watched = {SIGTERM, ...};
///   // The command a signal means to the master, or none.
///   static constexpr std::optional<procmodel::command> master(int signo) noexcept;
///   // What a worker does when an operator signals it directly.
///   static constexpr procmodel::worker_reaction worker(int signo) noexcept;
///   // The signal `prog -s <command>` sends to the master, or 0 if none does.
///   static constexpr int signal_for(procmodel::command c) noexcept;
/// };
/// @endcode

#include <array>
#include <concepts>
#include <csignal>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace procmodel {

/// What the master tells a worker over its channel.
enum class worker_command : std::uint8_t {
  quit = 1,       ///< drain: stop accepting, finish, exit; argument: drain time in ms
  terminate = 2,  ///< exit now
  reopen = 3,     ///< reopen log files
};

/// What the master is asked to do.
enum class command : std::uint8_t {
  stop,           ///< fast stop: terminate workers, kill after terminate_timeout, exit
  quit,           ///< graceful stop: workers drain, master exits last
  reload,         ///< new generation from re-read configuration
  reopen,         ///< reopen log files in master and workers
  upgrade,        ///< hot upgrade: exec the binary again, handing over sockets
  drain_workers,  ///< WINCH: workers drain, master and sockets stay
  add_worker,     ///< TTIN: one worker more
  remove_worker,  ///< TTOU: one worker fewer
};

/// The name of a command as `-s` spells it.
constexpr std::string_view to_string(command c) noexcept {
  switch (c) {
    case command::stop: return "stop";
    case command::quit: return "quit";
    case command::reload: return "reload";
    case command::reopen: return "reopen";
    case command::upgrade: return "upgrade";
    case command::drain_workers: return "drain-workers";
    case command::add_worker: return "add-worker";
    case command::remove_worker: return "remove-worker";
  }
  return "?";
}

/// What a worker does with a signal sent to it directly.
enum class worker_reaction : std::uint8_t { ignore, terminate, drain, reopen };

/// nginx's table: TERM/INT fast stop, QUIT graceful, HUP reload, USR1 reopen,
/// USR2 upgrade, WINCH drain workers, TTIN/TTOU resize.
struct nginx_signals {
  static constexpr std::array<int, 10> watched = {SIGTERM, SIGINT,  SIGQUIT, SIGHUP,  SIGUSR1,
                                                  SIGUSR2, SIGWINCH, SIGTTIN, SIGTTOU, SIGPIPE};

  static constexpr std::optional<command> master(int signo) noexcept {
    switch (signo) {
      case SIGTERM:
      case SIGINT: return command::stop;
      case SIGQUIT: return command::quit;
      case SIGHUP: return command::reload;
      case SIGUSR1: return command::reopen;
      case SIGUSR2: return command::upgrade;
      case SIGWINCH: return command::drain_workers;
      case SIGTTIN: return command::add_worker;
      case SIGTTOU: return command::remove_worker;
      default: return std::nullopt;
    }
  }

  static constexpr worker_reaction worker(int signo) noexcept {
    switch (signo) {
      case SIGTERM:
      case SIGINT: return worker_reaction::terminate;
      case SIGQUIT: return worker_reaction::drain;
      case SIGUSR1: return worker_reaction::reopen;
      default: return worker_reaction::ignore;
    }
  }

  static constexpr int signal_for(command c) noexcept {
    switch (c) {
      case command::stop: return SIGTERM;
      case command::quit: return SIGQUIT;
      case command::reload: return SIGHUP;
      case command::reopen: return SIGUSR1;
      case command::upgrade: return SIGUSR2;
      case command::drain_workers: return SIGWINCH;
      case command::add_worker: return SIGTTIN;
      case command::remove_worker: return SIGTTOU;
    }
    return 0;
  }
};

/// As nginx_signals, but SIGTERM drains (what systemd and container runtimes
/// send before SIGKILL); SIGINT stays the fast stop.
struct graceful_term_signals : nginx_signals {
  static constexpr std::optional<command> master(int signo) noexcept {
    if (signo == SIGTERM) return command::quit;
    return nginx_signals::master(signo);
  }
  static constexpr worker_reaction worker(int signo) noexcept {
    if (signo == SIGTERM) return worker_reaction::drain;
    return nginx_signals::worker(signo);
  }
  static constexpr int signal_for(command c) noexcept {
    if (c == command::stop) return SIGINT;
    return nginx_signals::signal_for(c);
  }
};

/// What SIGTERM, a container runtime's and systemd's stop signal, means to
/// the master, over what the Signals policy says (`options::sigterm`).
enum class sigterm_mode : std::uint8_t {
  automatic,  ///< the policy's meaning; a graceful stop when the master is PID 1
  stop,       ///< fast stop
  quit,       ///< graceful stop
};

constexpr std::string_view to_string(sigterm_mode m) noexcept {
  switch (m) {
    case sigterm_mode::automatic: return "auto";
    case sigterm_mode::stop: return "stop";
    case sigterm_mode::quit: return "quit";
  }
  return "?";
}

/// The command signal `signo` carries to a master run with `mode`, as PID 1
/// or not: the Signals policy's, but for SIGTERM as `mode` says. A container
/// runtime stops its PID 1 with SIGTERM and kills it after a grace period,
/// so there SIGTERM drains; SIGINT stays the fast stop.
template <class Signals>
constexpr std::optional<command> master_command(int signo, sigterm_mode mode,
                                                bool pid_one) noexcept {
  if (signo == SIGTERM) {
    if (mode == sigterm_mode::stop) return command::stop;
    if (mode == sigterm_mode::quit || pid_one) return command::quit;
  }
  return Signals::master(signo);
}

namespace detail {

/// Checks a Signals policy member by member; each message names what is missing.
template <class S>
constexpr bool check_signals_policy() {
  static_assert(requires { std::span<const int>(S::watched); },
                "Signals policy is missing: static constexpr std::array<int, N> watched");
  static_assert(requires(int s) { { S::master(s) } -> std::same_as<std::optional<command>>; },
                "Signals policy is missing: static std::optional<command> master(int signo)");
  static_assert(requires(int s) { { S::worker(s) } -> std::same_as<worker_reaction>; },
                "Signals policy is missing: static worker_reaction worker(int signo)");
  static_assert(requires(command c) { { S::signal_for(c) } -> std::convertible_to<int>; },
                "Signals policy is missing: static int signal_for(command c)");
  return true;
}

}  // namespace detail
}  // namespace procmodel
