#pragma once

/// @file upgrade.hpp
/// What the hot-upgrade tests share: the pid a pid file names, what
/// `-s upgrade` and the masters say about a new master, and `family`, which
/// tracks every master and worker across upgrades (new masters are no
/// process objects of the test: with a subreaper_scope they are reparented
/// to it once their parent is gone).

#include <algorithm>
#include <csignal>
#include <exception>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <sys/wait.h>

#include "support/catch.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

namespace pmtest {

// The pid a pid file names; 0 when there is none or it does not parse.
inline pid_t pid_in(const std::string& path) {
  std::string text = read_file(path);
  if (text.empty() || text.back() != '\n') return 0;
  try {
    return static_cast<pid_t>(std::stol(text));
  } catch (const std::exception&) {
    return 0;
  }
}

// "ok: new master N serves; old master M quits": {N, M}.
inline std::optional<std::pair<pid_t, pid_t>> parse_upgrade_ok(const std::string& out) {
  static const std::regex re(R"(ok: new master (\d+) serves; old master (\d+) quits)");
  std::smatch m;
  if (!std::regex_search(out, m, re)) return std::nullopt;
  return std::make_pair(static_cast<pid_t>(std::stol(m[1])), static_cast<pid_t>(std::stol(m[2])));
}

// The pid in the last match of `re` (first group) in `log`; 0 if none.
inline pid_t last_pid(const std::string& log, const std::regex& re) {
  pid_t out = 0;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
       ++it)
    out = static_cast<pid_t>(std::stol((*it)[1].str()));
  return out;
}

// "upgrade: new master N started from ...": the newest N.
inline pid_t started_new_master(const std::string& log) {
  static const std::regex re(R"(upgrade: new master (\d+) started from)");
  return last_pid(log, re);
}

// --- every master and worker a test sees ------------------------------------------

// Records masters and workers (with their start time, so a reused pid is
// never mistaken for one), in the server's guard too; reaps those that were
// reparented to this process (child subreaper) once they exit; SIGKILLs and
// reaps whatever is left when it goes out of scope.
class family {
 public:
  explicit family(process& guard) : guard_(guard) {}
  family(const family&) = delete;
  family& operator=(const family&) = delete;
  ~family() { kill_all(); }

  void note(pid_t p) {
    auto st = read_stat(p);
    if (!st) return;
    start_.emplace(p, st->starttime);
    guard_.record(p);
  }
  /// `root` and everything under it now.
  void note_tree(pid_t root) {
    note(root);
    for (pid_t d : descendants_of(root)) note(d);
  }

  /// Whether `p` is the process recorded under that pid, alive and not a zombie.
  bool running(pid_t p) const {
    auto it = start_.find(p);
    auto st = read_stat(p);
    return it != start_.end() && st && st->starttime == it->second && st->state != 'Z' &&
           st->state != 'X';
  }

  /// Live children of `master` that are not themselves masters (its workers).
  std::vector<pid_t> workers_of(pid_t master) {
    std::vector<pid_t> out;
    for (pid_t c : children_of(master))
      if (is_running(c) && !masters_.count(c)) {
        note(c);
        out.push_back(c);
      }
    return out;
  }

  void master(pid_t m) {
    masters_.insert(m);
    note_tree(m);
  }

  /// Reaps the recorded processes that exited as children of ours.
  void reap() {
    for (const auto& [p, start] : start_) {
      if (p == guard_.pid() || statuses_.count(p)) continue;
      auto st = read_stat(p);
      if (!st || st->starttime != start || st->ppid != ::getpid() || st->state != 'Z') continue;
      int ws = 0;
      if (::waitpid(p, &ws, WNOHANG) == p) statuses_[p] = ws;
    }
  }

  /// Waits until `p` has exited; reaps it if it is ours. The guard's own
  /// process (the first master) is waited for through the guard.
  bool wait_gone(pid_t p, milliseconds timeout) {
    if (p == guard_.pid()) return guard_.wait_exit(timeout).has_value();
    return wait_for(
        [&] {
          reap();
          return !running(p);
        },
        timeout, 5ms);
  }

  /// The wait status of a recorded process that exited as our child.
  std::optional<int> status_of(pid_t p) {
    if (p == guard_.pid()) return guard_.try_wait();
    reap();
    auto it = statuses_.find(p);
    if (it == statuses_.end()) return std::nullopt;
    return it->second;
  }

  std::vector<pid_t> all() const {
    std::vector<pid_t> out;
    for (const auto& [p, s] : start_) out.push_back(p);
    return out;
  }

  /// SIGKILLs every recorded process still running, then reaps those that
  /// end up as our children (for a while: orphans are reparented only once
  /// their parent is gone). A master or worker that had to be killed here
  /// is a failure of a test that ended well otherwise: the test did not
  /// account for it (new masters and their workers are no process objects,
  /// so the teardown audit would not see them).
  void kill_all() noexcept {
    std::vector<pid_t> left;
    try {
      // The guard's master, if it still runs, stops gracefully first: its
      // workers then end well (a SIGKILL here would be a violation of the
      // teardown audit, and a respawn).
      if (!guard_.exited()) {
        guard_.signal(SIGQUIT);
        guard_.wait_exit(20s);
      }
      auto still_running = [&] {
        reap();
        std::vector<pid_t> out;
        for (const auto& [p, start] : start_) {
          if (p == guard_.pid() || statuses_.count(p)) continue;
          auto st = read_stat(p);
          if (st && st->starttime == start && st->state != 'Z' && st->state != 'X')
            out.push_back(p);
        }
        return out;
      };
      // Orphaned workers of a master that just went drain by themselves
      // (orphan_timeout); a moment for them.
      wait_for([&] { return still_running().empty(); }, 2s, 5ms);
      left = still_running();
      for (const auto& [p, start] : start_) {
        if (p == guard_.pid()) continue;
        auto st = read_stat(p);
        if (st && st->starttime == start) ::kill(p, SIGKILL);
      }
      wait_for(
          [&] {
            reap();
            for (const auto& [p, start] : start_) {
              if (p == guard_.pid() || statuses_.count(p)) continue;
              auto st = read_stat(p);
              if (st && st->starttime == start) return false;
            }
            return true;
          },
          3s, 5ms);
    } catch (...) {
    }
    if (left.empty() || std::uncaught_exceptions() > 0) return;
    try {
      std::string pids;
      for (pid_t p : left) pids += " " + std::to_string(p);
      FAIL_CHECK("still running at the end of the test, SIGKILLed:" << pids);
    } catch (...) {
    }
  }

 private:
  process& guard_;
  std::map<pid_t, unsigned long long> start_;
  std::set<pid_t> masters_;
  std::map<pid_t, int> statuses_;
};

// "worker W (slot K, generation G) exited with code 0" in `log` for each of `workers`.
inline bool workers_exited_cleanly(const std::string& log, const std::vector<pid_t>& workers) {
  for (pid_t w : workers) {
    std::regex re("worker " + std::to_string(w) + R"( \(slot \d+, generation \d+\) exited with code 0)");
    if (!std::regex_search(log, re)) return false;
  }
  return true;
}

// How a new master ended, as the old master (its parent, which reaped it)
// logged it: "exited with code 0", "killed by signal 9"; "" if not logged.
inline std::string new_master_end(const server& srv, pid_t nm) {
  std::string log = srv.log();
  std::smatch m;
  std::regex re("new master " + std::to_string(nm) + R"( (exited with code \d+|killed by signal \d+))");
  return std::regex_search(log, m, re) ? m[1].str() : "";
}

// Until new master `nm` is gone (within `within`) and the master that started
// it has logged that it exited with code 0: a stopped new master left cleanly.
inline bool new_master_left_cleanly(const server& srv, family& fam, pid_t nm, milliseconds within = 15s) {
  return fam.wait_gone(nm, within) &&
         wait_for([&] { return new_master_end(srv, nm) == "exited with code 0"; }, 5s);
}

}  // namespace pmtest
