#pragma once

/// @file server.hpp
/// A running example server (echo_server, http_server) for integration
/// tests: its own temporary directory, pid file and logs, started on
/// 127.0.0.1:0 with the port read back from the master's log, and torn down
/// (SIGKILL of the master and of every descendant seen) when it goes out of
/// scope.

#include <csignal>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "support/http_load.hpp"
#include "support/process.hpp"
#include "support/teardown.hpp"

namespace pmtest {

using test_support::http_get;

/// How to start a server.
struct server_config {
  unsigned workers = 2;
  bool pid_file = true;             ///< --pid-file <dir>/master.pid
  bool log_file = false;            ///< --log-file <dir>/master.log; else the master logs to stderr
  std::string log_level = "debug";  ///< debug logs "worker PID (slot K) is ready"
  std::vector<std::string> extra;   ///< more flags
  std::vector<std::pair<std::string, std::string>> env;
  bool wait_workers = true;  ///< wait until `workers` workers run
  bool wait_ready = true;    ///< then until every one reported ready and the probe works
  bool http = false;         ///< probe with an HTTP GET instead of an echo
  milliseconds timeout = 10s;
  std::string cwd;  ///< the directory the master starts in ("" keeps the test's)
  std::vector<int> ignored_signals;  ///< signals the master starts with ignored
  std::vector<int> blocked_signals;  ///< signals the master starts with blocked
  std::string pid_path;              ///< --pid-file here instead of <dir>/master.pid
  std::vector<int> closed_stdio;     ///< descriptors among 0-2 the master starts without
};

/// echo_server with one worker that crashes as it starts (exit code 3), over
/// and over: nothing to wait for but the master.
inline server_config crashing_echo_config() {
  server_config c;
  c.workers = 1;
  c.wait_workers = false;
  c.wait_ready = false;
  c.env = {{"ECHO_CRASH_AT_START", "1"}};
  return c;
}

/// A master started from `program` with its own temporary directory.
class server {
 public:
  explicit server(std::string program, std::string_view name = "procmodel-it")
      : dir_(name), program_(std::move(program)) {}

  /// Starts the master; false (see why()) if it is not up within the timeout.
  bool start(const server_config& c = {}) {
    config_ = c;
    std::vector<std::string> args = {"--listen",    "127.0.0.1:0",
                                     "--workers",   std::to_string(c.workers),
                                     "--log-level", c.log_level};
    if (c.pid_file)
      args.insert(args.end(), {"--pid-file", pid_path()});
    if (c.log_file)
      args.insert(args.end(), {"--log-file", dir_.file("master.log")});
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    spawn_options opt;
    opt.stdout_path = stdio_path();
    opt.env = c.env;
    opt.cwd = c.cwd;
    opt.ignored_signals = c.ignored_signals;
    opt.blocked_signals = c.blocked_signals;
    opt.closed_stdio = c.closed_stdio;
    master_ = process::spawn(program_, args, opt);
    // A master the test leaves running ends with a graceful stop, which the
    // teardown audit then checks (exit 0, every worker exited with 0).
    master_.stop_at_teardown(SIGQUIT, 20s);
    if (c.log_file) audit_log_file(dir_.file("master.log"));

    if (!wait_for([&] { return parse_port(log()) != 0 || master_.exited(); }, c.timeout)) {
      why_ = "no 'listening on' line in the log";
      return false;
    }
    if (master_.exited()) {
      why_ = "the master exited: " + describe_status(*master_.try_wait());
      return false;
    }
    port_ = parse_port(log());
    if (c.pid_file &&
        !wait_for([&] { return read_file(pid_path()) == std::to_string(master_.pid()) + "\n"; },
                  c.timeout)) {
      why_ = "the pid file does not name the master";
      return false;
    }
    if (!c.wait_workers)
      return true;
    if (!wait_for([&] { return workers().size() >= c.workers; }, c.timeout)) {
      why_ = "fewer than " + std::to_string(c.workers) + " workers appeared";
      return false;
    }
    if (!c.wait_ready)
      return true;
    if (!wait_for(
            [&] {
              for (pid_t w : workers())
                if (!is_ready(w))
                  return false;
              return true;
            },
            c.timeout)) {
      why_ = "not every worker reported ready";
      return false;
    }
    auto probe = [&] { return c.http ? http_get(port_).has_value() : echo_once(port_); };
    if (!wait_for(probe, c.timeout, 50ms)) {
      why_ = std::string(c.http ? "no HTTP answer" : "no echo") + " through port " +
             std::to_string(port_);
      return false;
    }
    return true;
  }

  [[nodiscard]] const std::string& why() const noexcept { return why_; }
  [[nodiscard]] const temp_dir& dir() const noexcept { return dir_; }
  [[nodiscard]] std::string pid_path() const {
    return config_.pid_path.empty() ? dir_.file("master.pid") : config_.pid_path;
  }
  /// Where the program's stdout and stderr go.
  [[nodiscard]] std::string stdio_path() const { return dir_.file("stdio.log"); }
  /// Where the master logs: --log-file if given, else its stderr.
  [[nodiscard]] std::string log_path() const {
    return config_.log_file ? dir_.file("master.log") : stdio_path();
  }
  [[nodiscard]] std::string log() const { return read_file(log_path()); }
  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  process& master() noexcept { return master_; }
  [[nodiscard]] pid_t master_pid() const noexcept { return master_.pid(); }

  /// The master's live (non-zombie) children; records every descendant.
  std::vector<pid_t> workers() {
    master_.record_descendants();
    std::vector<pid_t> out;
    for (pid_t c : children_of(master_.pid()))
      if (is_running(c))
        out.push_back(c);
    return out;
  }

  /// The master's children that are zombies.
  [[nodiscard]] std::vector<pid_t> zombie_children() const {
    std::vector<pid_t> out;
    for (pid_t c : children_of(master_.pid()))
      if (process_state(c) == 'Z')
        out.push_back(c);
    return out;
  }

  /// Every "started worker" line so far.
  [[nodiscard]] std::vector<started_worker> started() const { return parse_started_workers(log()); }

  /// The newest worker started in each slot.
  [[nodiscard]] std::map<unsigned, pid_t> slot_pids() const {
    std::map<unsigned, pid_t> out;
    for (const auto& s : started())
      out[s.slot] = s.pid;
    return out;
  }

  /// Whether the master logged that `worker` is ready (needs --log-level debug).
  [[nodiscard]] bool is_ready(pid_t worker) const {
    for (const auto& l : lines_with(log(), "worker " + std::to_string(worker) + " (slot "))
      if (l.find("is ready") != std::string::npos)
        return true;
    return false;
  }

  /// Whether the master had to SIGKILL a process (a worker that missed its
  /// own deadline, or a new master that ignored QUIT).
  [[nodiscard]] bool needed_sigkill() const {
    return log().find("sending SIGKILL") != std::string::npos;
  }

  /// Everything useful when a check fails: the logs and the process tree.
  [[nodiscard]] std::string describe() const {
    std::string out =
        "master " + std::to_string(master_.pid()) + ", port " + std::to_string(port_) + "\n";
    if (!why_.empty())
      out += "start failed: " + why_ + "\n";
    out += "--- process tree ---\n";
    if (master_.pid() > 0)
      out += describe_tree(master_.pid());
    out += "--- " + log_path() + " ---\n" + log();
    if (log_path() != stdio_path())
      out += "--- " + stdio_path() + " ---\n" + read_file(stdio_path());
    return out;
  }

 private:
  temp_dir dir_;  // first: removed after the processes are gone
  std::string program_;
  server_config config_;
  process master_;
  std::uint16_t port_ = 0;
  std::string why_;
};

}  // namespace pmtest

/// REQUIRE/CHECK that print the server's logs and process tree on failure
/// (Catch2 must be included where they are used).
#define PM_REQUIRE(srv, ...) \
  do {                       \
    INFO((srv).describe());  \
    REQUIRE(__VA_ARGS__);    \
  } while (false)
#define PM_CHECK(srv, ...)  \
  do {                      \
    INFO((srv).describe()); \
    CHECK(__VA_ARGS__);     \
  } while (false)
