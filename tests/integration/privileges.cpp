// Privilege drop and per-worker settings, end to end with the real
// http_server: started as root with --user nobody, every worker runs as
// nobody (real, effective, saved and filesystem ids), with no supplementary
// groups and no capability left, so setuid(0) fails in it; the master keeps
// root; a log rotation (USR1), a reload (HUP) and a hot upgrade (-s upgrade)
// keep all of that. The per-worker settings (--worker-rlimit-nofile,
// --worker-rlimit-core, --worker-cpu-affinity, --worker-priority,
// --worker-directory) are read back from /proc for each worker, the master's
// own left as they were. Mistakes stop the start with a clear message.
//
// The privilege tests need root; without it they say so and pass.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/http_checks.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <pwd.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace pmtest;
using test_support::http_get;

namespace {

using pmtest::drop_problems;  // of one process

// The problems of every process in `workers`, "" if none.
std::string drop_problems(const std::vector<pid_t>& workers, const passwd& pw) {
  std::string out;
  for (pid_t w : workers) {
    auto p = drop_problems(w, pw);
    if (!p.empty())
      out += p + "\n";
  }
  return out;
}

// Live, non-zombie children of `pid`.
std::vector<pid_t> running_children(pid_t pid) {
  std::vector<pid_t> out;
  for (pid_t c : children_of(pid))
    if (is_running(c))
      out.push_back(c);
  return out;
}

// Whether some descriptor of `pid` is the file at `path` (by its name now).
bool has_open(pid_t pid, const std::string& path) {
  for (const auto& f : open_fds(pid))
    if (f.target == path)
      return true;
  return false;
}

// The workers of generation `gen` started so far, by the master's log.
std::vector<pid_t> generation(const server& srv, std::uint64_t gen) {
  std::vector<pid_t> out;
  for (const auto& s : srv.started())
    if (s.generation == gen)
      out.push_back(s.pid);
  return out;
}

// A server whose directory the workers' user can reach (the log file is in it).
server_config as_nobody(server& srv, unsigned workers) {
  ::chmod(srv.dir().path().c_str(), 0755);
  auto c = http_config(workers, {"--user", "nobody"});
  c.log_file = true;
  return c;
}

}  // namespace

PM_TEST_CASE("as root with --user nobody, workers drop to nobody across reopen, reload and upgrade",
             "[privileges]") {
  auto pw = nobody_if_root();
  if (!pw)
    return;
  subreaper_scope reaper;  // the upgraded master outlives its parent: it comes to us
  server srv(http_server, "procmodel-privileges");
  PM_REQUIRE(srv, srv.start(as_nobody(srv, 2)));
  const pid_t master = srv.master_pid();
  INFO(srv.describe());

  // The master keeps root and its capabilities; every worker is nobody.
  CHECK(status_field(master, "Uid") == four_ids(0));
  CHECK(status_field(master, "CapEff") != "0000000000000000");
  auto first = srv.workers();
  REQUIRE(first.size() == 2);
  CHECK(drop_problems(first, *pw).empty());
  CHECK(srv.log().find("workers run as user nobody (uid " + std::to_string(pw->pw_uid)) !=
        std::string::npos);
  struct stat st {};
  REQUIRE(::stat(srv.log_path().c_str(), &st) == 0);
  CHECK(st.st_uid == pw->pw_uid);  // the workers open it by name, as nobody

  // logrotate: move the file away, USR1. The master makes a new one and
  // gives it to nobody; the workers, nobody by now, reopen it by name.
  const std::string rotated = srv.log_path() + ".1";
  REQUIRE(::rename(srv.log_path().c_str(), rotated.c_str()) == 0);
  srv.master().signal(SIGUSR1);
  CHECK(wait_for(
      [&] {
        for (pid_t w : first)
          if (!has_open(w, srv.log_path()))
            return false;
        return has_open(master, srv.log_path());
      },
      10s));
  REQUIRE(::stat(srv.log_path().c_str(), &st) == 0);
  CHECK(st.st_uid == pw->pw_uid);
  CHECK(read_file(rotated).find("cannot reopen") == std::string::npos);

  // HUP: a new generation, dropped too; the old one drains and exits 0 (the
  // teardown audit reads every "exited with code" line of the log).
  srv.master().signal(SIGHUP);
  CHECK(wait_for(
      [&] {
        auto g2 = generation(srv, 2);
        if (g2.size() != 2)
          return false;
        for (pid_t w : g2)
          if (!srv.is_ready(w))
            return false;
        for (pid_t w : first)
          if (is_running(w))
            return false;
        return true;
      },
      15s));
  auto second = generation(srv, 2);
  CHECK(drop_problems(second, *pw).empty());
  auto answer = http_get(srv.port());
  REQUIRE(answer);
  CHECK(answer->find("generation 2") != std::string::npos);
  // A worker of the first generation wrote its drain to the new file.
  CHECK(srv.log().find(std::to_string(first[0]) + " worker ") != std::string::npos);

  // -s upgrade with the real binary: the new master is root again (it was
  // exec'ed by the old one, which kept root), its workers nobody.
  auto r = run(srv.dir(), http_server, {"-s", "upgrade", "--pid-file", srv.pid_path()}, 30s);
  INFO("-s upgrade: exit " << r.code() << "\n" << r.out << r.err);
  REQUIRE(r.code() == 0);
  auto old_end = srv.master().wait_exit(15s);
  REQUIRE(old_end);
  CHECK(exit_code_of(*old_end) == 0);
  const pid_t next = static_cast<pid_t>(std::stol(read_file(srv.pid_path())));
  daemon_reaper guard(next);  // SIGKILLed if the test stops early
  REQUIRE(next != master);
  CHECK(status_field(next, "Uid") == four_ids(0));
  std::vector<pid_t> third;
  CHECK(wait_for([&] { return (third = running_children(next)).size() == 2; }, 10s));
  CHECK(drop_problems(third, *pw).empty());
  answer = http_get(srv.port());
  REQUIRE(answer);
  bool served_by_new = false;
  for (pid_t w : third)
    served_by_new |= answer->find("pid " + std::to_string(w) + "\n") != std::string::npos;
  CHECK(served_by_new);

  // The new master stops gracefully: exit 0, after its workers (exit 0 too,
  // by the log the audit reads).
  ::kill(next, SIGQUIT);
  auto next_end = reap_within(next, 20s);
  REQUIRE(next_end);
  CHECK(exit_code_of(*next_end) == 0);
  guard.pid = 0;
  for (pid_t w : third)
    CHECK_FALSE(is_alive(w));
}

PM_TEST_CASE("a worker that cannot enter its directory as nobody exits 1, saying why",
             "[privileges]") {
  auto pw = nobody_if_root();
  if (!pw)
    return;
  server srv(http_server, "procmodel-privileges");
  // A directory only root may enter: the master sees it, nobody cannot chdir.
  const std::string locked = srv.dir().file("locked");
  REQUIRE(::mkdir(locked.c_str(), 0700) == 0);
  auto c = as_nobody(srv, 1);
  c.extra.insert(c.extra.end(), {"--worker-directory", locked});
  c.wait_workers = false;
  c.wait_ready = false;
  PM_REQUIRE(srv, srv.start(c));
  const std::string why = "cannot start: worker_directory " + locked + ": Permission denied";
  expect_log_line(why);
  expect_log_pattern(R"(worker \d+ \(slot 0, generation 1\) exited with code 1)");
  PM_CHECK(srv, wait_for([&] { return srv.log().find(why) != std::string::npos; }, 10s));
  PM_CHECK(srv, wait_for(
                    [&] {
                      return srv.log().find("(slot 0, generation 1) exited with code 1") !=
                             std::string::npos;
                    },
                    10s));
  CHECK(http_get(srv.port(), 200ms) == std::nullopt);  // nothing serves as root instead
}

PM_TEST_CASE("mistakes in the privilege and per-worker options stop the start before it serves",
             "[privileges]") {
  struct row {
    std::vector<std::string> args;
    int code;
    std::string needle;
  };
  const std::vector<row> rows = {
      {{"--user", "no-such-user-procmodel"}, 1, "--user no-such-user-procmodel: no such user"},
      {{"--user", "root", "--group", "no-such-group-procmodel"},
       1,
       "--group no-such-group-procmodel: no such group"},
      {{"--group", "root"}, 1, "--group root: needs --user"},
      {{"--user", "root", "--single-process"},
       1,
       "--user root: the workers are threads of the master (--single-process)"},
      {{"--worker-directory", "/nonexistent/procmodel"},
       1,
       "--worker-directory /nonexistent/procmodel: No such file or directory"},
      {{"--worker-cpu-affinity", "1023"},
       1,
       "--worker-cpu-affinity: CPU 1023 is not one this master may run on"},
      {{"--worker-rlimit-nofile", "1073741824"}, 1, "--worker-rlimit-nofile 1073741824: above"},
      {{"--worker-priority", "20"}, 2, "--worker-priority: expected a whole number from -20 to 19"},
      {{"--worker-cpu-affinity", "two"}, 2, "--worker-cpu-affinity: expected 'auto' or a CPU list"},
  };
  temp_dir dir("procmodel-privileges");
  for (const auto& r : rows) {
    std::vector<std::string> args = {"--listen", "127.0.0.1:0", "--workers", "1"};
    args.insert(args.end(), r.args.begin(), r.args.end());
    auto res = run(dir, http_server, args, 10s);
    INFO(args.back() << ": exit " << res.code() << "\n" << res.out << res.err);
    CHECK(res.code() == r.code);
    CHECK(res.err.find(r.needle) != std::string::npos);
    CHECK(res.err.find("listening on") == std::string::npos);
    CHECK(res.err.find("started worker") == std::string::npos);
    expect_log_line(r.needle);  // the [error] line of the refused start
  }
  // -t refuses the same configuration without starting anything.
  auto t = run(dir, http_server, {"-t", "--user", "no-such-user-procmodel"}, 10s);
  CHECK(t.code() == 1);
  CHECK(t.err.find("configuration refused: --user no-such-user-procmodel: no such user") !=
        std::string::npos);
}

PM_TEST_CASE("per-worker rlimits, CPU, priority and directory, read back from /proc",
             "[privileges][worker-settings]") {
  // A CPU list in the reverse of the master's CPUs, so that slot k is not on
  // CPU k by chance; auto in a second run.
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(::sched_getaffinity(0, sizeof set, &set) == 0);
  std::vector<unsigned> cpus;
  for (unsigned c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set))
      cpus.push_back(c);
  std::vector<unsigned> reversed(cpus.rbegin(), cpus.rend());
  std::string list;
  for (unsigned c : reversed)
    list += (list.empty() ? "" : ",") + std::to_string(c);
  rlimit hard{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &hard) == 0);
  // Below the hard limit: any master may lower it, root or not.
  const unsigned long nofile = std::min<rlim_t>(hard.rlim_max, 4321);

  for (const std::string& affinity : {list, std::string("auto")}) {
    INFO("--worker-cpu-affinity " << affinity);
    const std::vector<unsigned>& order = affinity == "auto" ? cpus : reversed;
    server srv(http_server, "procmodel-worker-settings");
    const std::string dir = srv.dir().path();
    auto c = http_config(3, {"--worker-rlimit-nofile", std::to_string(nofile),
                             "--worker-rlimit-core", "0", "--worker-cpu-affinity", affinity,
                             "--worker-priority", "7", "--worker-directory", dir});
    PM_REQUIRE(srv, srv.start(c));
    auto check_worker = [&](unsigned slot, pid_t w) {
      INFO("worker " << w << " in slot " << slot);
      CHECK(limit_of(w, "Max open files") == std::to_string(nofile) + " " + std::to_string(nofile));
      CHECK(limit_of(w, "Max core file size") == "0 0");
      CHECK(status_field(w, "Cpus_allowed_list") == std::to_string(order[slot % order.size()]));
      CHECK(nice_of(w) == "7");
      CHECK(std::filesystem::read_symlink("/proc/" + std::to_string(w) + "/cwd") == dir);
    };
    auto slots = srv.slot_pids();
    PM_REQUIRE(srv, slots.size() == 3);
    for (auto [slot, w] : slots)
      check_worker(slot, w);
    // The master is left as it was.
    const pid_t m = srv.master_pid();
    for (const char* limit : {"Max open files", "Max core file size"})
      CHECK(limit_of(m, limit) == limit_of(::getpid(), limit));
    CHECK(nice_of(m) == nice_of(::getpid()));
    CHECK(status_field(m, "Cpus_allowed_list") == status_field(::getpid(), "Cpus_allowed_list"));
    CHECK(std::filesystem::read_symlink("/proc/" + std::to_string(m) + "/cwd") ==
          std::filesystem::current_path());
    // A reload's workers get the same.
    srv.master().signal(SIGHUP);
    PM_CHECK(srv, wait_for(
                      [&] {
                        auto g2 = generation(srv, 2);
                        return g2.size() == 3 && std::all_of(g2.begin(), g2.end(), [&](pid_t w) {
                                 return srv.is_ready(w);
                               });
                      },
                      15s));
    for (auto [slot, w] : srv.slot_pids())
      check_worker(slot, w);
    CHECK(http_get(srv.port()));
  }
}
