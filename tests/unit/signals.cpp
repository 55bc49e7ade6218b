#include <procmodel/signals.hpp>

#include "support/catch.hpp"

#include <algorithm>
#include <csignal>
#include <optional>
#include <string>

using namespace procmodel;

namespace {

constexpr command all_commands[] = {command::stop,    command::quit,          command::reload,
                                    command::reopen,  command::upgrade,       command::drain_workers,
                                    command::add_worker, command::remove_worker};

struct row {
  int signo;
  const char* name;
  std::optional<command> master;
  worker_reaction worker;
};

template <class Signals>
bool watches(int signo) {
  return std::find(Signals::watched.begin(), Signals::watched.end(), signo) != Signals::watched.end();
}

}  // namespace

// DESIGN.md's table, row by row.
TEST_CASE("nginx_signals: each signal's master command and worker reaction", "[signals]") {
  auto r = GENERATE(values<row>({
      {SIGTERM, "TERM", command::stop, worker_reaction::terminate},
      {SIGINT, "INT", command::stop, worker_reaction::terminate},
      {SIGQUIT, "QUIT", command::quit, worker_reaction::drain},
      {SIGHUP, "HUP", command::reload, worker_reaction::ignore},
      {SIGUSR1, "USR1", command::reopen, worker_reaction::reopen},
      {SIGUSR2, "USR2", command::upgrade, worker_reaction::ignore},
      {SIGWINCH, "WINCH", command::drain_workers, worker_reaction::ignore},
      {SIGTTIN, "TTIN", command::add_worker, worker_reaction::ignore},
      {SIGTTOU, "TTOU", command::remove_worker, worker_reaction::ignore},
      {SIGPIPE, "PIPE", std::nullopt, worker_reaction::ignore},
      {SIGCHLD, "CHLD", std::nullopt, worker_reaction::ignore},
      {SIGALRM, "ALRM", std::nullopt, worker_reaction::ignore},
      {SIGUSR1 + 1000, "(none)", std::nullopt, worker_reaction::ignore},
  }));
  INFO("SIG" << r.name);
  CHECK(nginx_signals::master(r.signo) == r.master);
  CHECK(nginx_signals::worker(r.signo) == r.worker);
  // Every signal that means something to the master is watched.
  if (r.master) CHECK(watches<nginx_signals>(r.signo));
}

TEST_CASE("graceful_term_signals: TERM drains - INT stays the fast stop", "[signals]") {
  auto r = GENERATE(values<row>({
      {SIGTERM, "TERM", command::quit, worker_reaction::drain},
      {SIGINT, "INT", command::stop, worker_reaction::terminate},
      {SIGQUIT, "QUIT", command::quit, worker_reaction::drain},
      {SIGHUP, "HUP", command::reload, worker_reaction::ignore},
      {SIGUSR1, "USR1", command::reopen, worker_reaction::reopen},
      {SIGUSR2, "USR2", command::upgrade, worker_reaction::ignore},
      {SIGWINCH, "WINCH", command::drain_workers, worker_reaction::ignore},
      {SIGTTIN, "TTIN", command::add_worker, worker_reaction::ignore},
      {SIGTTOU, "TTOU", command::remove_worker, worker_reaction::ignore},
      {SIGPIPE, "PIPE", std::nullopt, worker_reaction::ignore},
  }));
  INFO("SIG" << r.name);
  CHECK(graceful_term_signals::master(r.signo) == r.master);
  CHECK(graceful_term_signals::worker(r.signo) == r.worker);
  if (r.master) CHECK(watches<graceful_term_signals>(r.signo));
}

TEST_CASE("signal_for: the signal `-s` sends means that command again", "[signals]") {
  for (command c : all_commands) {
    INFO(to_string(c));
    int n = nginx_signals::signal_for(c);
    CHECK(n != 0);
    CHECK(nginx_signals::master(n) == c);
    int g = graceful_term_signals::signal_for(c);
    CHECK(g != 0);
    CHECK(graceful_term_signals::master(g) == c);
  }
  CHECK(nginx_signals::signal_for(command::stop) == SIGTERM);
  CHECK(nginx_signals::signal_for(command::quit) == SIGQUIT);
  CHECK(nginx_signals::signal_for(command::reload) == SIGHUP);
  CHECK(nginx_signals::signal_for(command::reopen) == SIGUSR1);
  CHECK(nginx_signals::signal_for(command::upgrade) == SIGUSR2);
  CHECK(graceful_term_signals::signal_for(command::stop) == SIGINT);
  CHECK(graceful_term_signals::signal_for(command::quit) == SIGQUIT);
}

TEST_CASE("the watched list has no duplicates and leaves SIGCHLD to the supervisor", "[signals]") {
  auto w = nginx_signals::watched;
  std::sort(w.begin(), w.end());
  CHECK(std::adjacent_find(w.begin(), w.end()) == w.end());
  CHECK_FALSE(watches<nginx_signals>(SIGCHLD));
  CHECK_FALSE(watches<nginx_signals>(SIGKILL));
  CHECK_FALSE(watches<nginx_signals>(SIGSTOP));
}

TEST_CASE("command names", "[signals]") {
  CHECK(to_string(command::stop) == "stop");
  CHECK(to_string(command::quit) == "quit");
  CHECK(to_string(command::reload) == "reload");
  CHECK(to_string(command::reopen) == "reopen");
  CHECK(to_string(command::upgrade) == "upgrade");
  CHECK(to_string(command::drain_workers) == "drain-workers");
  CHECK(to_string(command::add_worker) == "add-worker");
  CHECK(to_string(command::remove_worker) == "remove-worker");
}

namespace {
// A user's own table, written from the contract skeleton in signals.hpp.
struct hup_reopens {
  static constexpr std::array<int, 2> watched = {SIGTERM, SIGHUP};
  static constexpr std::optional<command> master(int signo) noexcept {
    if (signo == SIGHUP) return command::reopen;
    if (signo == SIGTERM) return command::quit;
    return std::nullopt;
  }
  static constexpr worker_reaction worker(int) noexcept { return worker_reaction::ignore; }
  static constexpr int signal_for(command c) noexcept {
    return c == command::reopen ? SIGHUP : c == command::quit ? SIGTERM : 0;
  }
};
}  // namespace

TEST_CASE("the tables satisfy the Signals contract - at compile time", "[signals]") {
  STATIC_REQUIRE(detail::check_signals_policy<nginx_signals>());
  STATIC_REQUIRE(detail::check_signals_policy<graceful_term_signals>());
  STATIC_REQUIRE(detail::check_signals_policy<hup_reopens>());
  // Usable in constant expressions.
  STATIC_REQUIRE(nginx_signals::master(SIGQUIT) == command::quit);
  STATIC_REQUIRE(graceful_term_signals::master(SIGTERM) == command::quit);
  STATIC_REQUIRE(nginx_signals::signal_for(command::reopen) == SIGUSR1);
}

TEST_CASE("SIGTERM as --sigterm says: drains as PID 1 unless told otherwise", "[signals][pid1]") {
  using M = sigterm_mode;
  // automatic: the table's meaning, a graceful stop as PID 1.
  CHECK(master_command<nginx_signals>(SIGTERM, M::automatic, false) == command::stop);
  CHECK(master_command<nginx_signals>(SIGTERM, M::automatic, true) == command::quit);
  CHECK(master_command<graceful_term_signals>(SIGTERM, M::automatic, false) == command::quit);
  // Told: whatever the table and the pid.
  for (bool pid_one : {false, true}) {
    CHECK(master_command<nginx_signals>(SIGTERM, M::stop, pid_one) == command::stop);
    CHECK(master_command<graceful_term_signals>(SIGTERM, M::stop, pid_one) == command::stop);
    CHECK(master_command<nginx_signals>(SIGTERM, M::quit, pid_one) == command::quit);
    // Every other signal keeps the table's meaning; SIGINT stays the fast stop.
    for (auto m : {M::automatic, M::stop, M::quit}) {
      CHECK(master_command<nginx_signals>(SIGINT, m, pid_one) == command::stop);
      CHECK(master_command<nginx_signals>(SIGQUIT, m, pid_one) == command::quit);
      CHECK(master_command<nginx_signals>(SIGHUP, m, pid_one) == command::reload);
      CHECK_FALSE(master_command<nginx_signals>(SIGCHLD, m, pid_one));
    }
  }
  STATIC_REQUIRE(master_command<nginx_signals>(SIGTERM, M::automatic, true) == command::quit);
}
