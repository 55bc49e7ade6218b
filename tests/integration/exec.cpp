// examples/06-exec end to end: a master whose workers are a Python program
// (Debian's python3) started by exec_spawner, with real signals and real
// keep-alive clients on loopback. The claims are the forked workers' ones:
// it serves, a worker killed with -9 is respawned, a graceful stop under
// load and a reload under load lose no request; and a program that cannot
// be executed is logged and retried with backoff while the master lives on.
// A hot upgrade does not adopt the programs: the new master starts its own
// generation and the old one drains, as a reload; a new master whose
// programs cannot start is rolled back while the old programs serve on.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/http_checks.hpp"
#include "support/http_load.hpp"
#include "support/process.hpp"
#include "support/server.hpp"
#include "support/upgrade.hpp"

#include <csignal>
#include <filesystem>
#include <map>
#include <regex>
#include <string>
#include <thread>

#include <sys/stat.h>
#include <unistd.h>

using namespace pmtest;
using test_support::http_load;
using test_support::load_options;
using test_support::load_result;

namespace {

server_config exec_config(unsigned workers = 2, std::vector<std::string> extra = {}) {
  server_config c = http_config(workers, std::move(extra));
  c.timeout = 20s;  // Python starts slower than a fork
  return c;
}

// "hello from python slot S generation G pid P"
struct body_info {
  unsigned slot = 0;
  std::uint64_t generation = 0;
  pid_t pid = 0;
};
std::optional<body_info> parse_body(const std::string& body) {
  static const std::regex re(R"(hello from python slot (\d+) generation (\d+) pid (\d+)\n)");
  std::smatch m;
  if (!std::regex_match(body, m, re)) return std::nullopt;
  return body_info{static_cast<unsigned>(std::stoul(m[1])), std::stoull(m[2]),
                   static_cast<pid_t>(std::stol(m[3]))};
}

std::string exe_of(pid_t pid) {
  char buf[4096] = {};
  ssize_t n = ::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

// The descriptors of `pid` that are sockets.
std::vector<fd_entry> sockets_of(pid_t pid) {
  std::vector<fd_entry> out;
  for (const auto& f : open_fds(pid))
    if (f.target.rfind("socket:", 0) == 0) out.push_back(f);
  return out;
}

// PROCMODEL_GENERATION in the environment of `pid`, from /proc; 0 if absent.
std::uint64_t generation_env_of(pid_t pid) {
  const std::string env = read_file("/proc/" + std::to_string(pid) + "/environ");
  const std::string key = std::string("PROCMODEL_GENERATION=");
  for (std::size_t at = 0; at < env.size(); at = env.find('\0', at) + 1) {
    if (env.compare(at, key.size(), key) == 0) return std::stoull(env.substr(at + key.size()));
    if (env.find('\0', at) == std::string::npos) break;
  }
  return 0;
}

// The generation `-s status` shows for each worker it lists ready.
std::map<pid_t, std::uint64_t> ready_generations(const std::string& status) {
  static const std::regex re(R"((\d+)\s+worker\s+\d+\s+(\d+)\s+ready)");
  std::map<pid_t, std::uint64_t> out;
  for (std::sregex_iterator it(status.begin(), status.end(), re), end; it != end; ++it)
    out[static_cast<pid_t>(std::stol((*it)[1]))] = std::stoull((*it)[2]);
  return out;
}

// The answers of `r` per (generation, pid) of the worker that gave them.
std::map<std::pair<std::uint64_t, pid_t>, std::uint64_t> answers_by_worker(const load_result& r) {
  std::map<std::pair<std::uint64_t, pid_t>, std::uint64_t> out;
  for (const auto& [body, n] : r.bodies)
    if (auto b = parse_body(body)) out[{b->generation, b->pid}] += n;
  return out;
}

bool contains(const std::vector<pid_t>& pids, pid_t p) {
  return std::find(pids.begin(), pids.end(), p) != pids.end();
}

}  // namespace

PM_TEST_CASE("exec: the Python worker serves on the socket it inherits, the systemd way",
             "[exec]") {
  server srv(exec_master, "procmodel-exec");
  PM_REQUIRE(srv, srv.start(exec_config()));
  auto workers = srv.workers();
  PM_REQUIRE(srv, workers.size() == 2);
  std::set<std::string> listening;
  for (const auto& inode : listening_inodes(srv.port())) listening.insert("socket:[" + inode + "]");
  PM_REQUIRE(srv, listening.size() == 1);
  for (pid_t w : workers) {
    INFO("worker " << w << ": " << describe_fds(w));
    // Debian's python3 runs the program (not a fork of the master).
    CHECK(exe_of(w).find("python3") != std::string::npos);
    // Descriptor 3 is the listener; nothing else of the master's crossed the exec.
    bool fd3_listens = false;
    for (const auto& f : sockets_of(w))
      if (f.fd == 3) fd3_listens = listening.count(f.target) == 1;
    CHECK(fd3_listens);
    for (const auto& f : sockets_of(w))
      if (f.fd != 3) CHECK(listening.count(f.target) == 0);
  }
  // Kept alive, and the worker's answer names it.
  auto c = tcp_client::connect(srv.port());
  REQUIRE(c);
  std::string first = keepalive_request(*c), second = keepalive_request(*c);
  auto b1 = parse_body(first.substr(first.find("\r\n\r\n") + 4));
  auto b2 = parse_body(second.substr(second.find("\r\n\r\n") + 4));
  INFO(first << "\n---\n" << second);
  REQUIRE(b1);
  REQUIRE(b2);
  CHECK(b1->pid == b2->pid);
  CHECK(b1->generation == 1);
  CHECK(std::find(workers.begin(), workers.end(), b1->pid) != workers.end());
  // -s status lists them ready, with the STATUS= each sent.
  auto st = run(srv.dir(), exec_master, {"--pid-file", srv.pid_path(), "-s", "status"});
  INFO(st.out << st.err);
  CHECK(st.code() == 0);
  CHECK(count_of(st.out, " ready ") >= 2);
  CHECK(st.out.find("serving on 1 socket(s)") != std::string::npos);
}

PM_TEST_CASE("exec: a Python worker killed with -9 is respawned in its slot", "[exec]") {
  server srv(exec_master, "procmodel-exec");
  PM_REQUIRE(srv, srv.start(exec_config()));
  auto before = srv.workers();
  PM_REQUIRE(srv, before.size() == 2);
  const pid_t victim = before[0];
  expect_worker_end(victim, "killed by signal 9");
  PM_REQUIRE(srv, ::kill(victim, SIGKILL) == 0);
  PM_REQUIRE(srv, wait_for([&] {
    auto now = srv.workers();
    return now.size() == 2 && std::find(now.begin(), now.end(), victim) == now.end() &&
           std::all_of(now.begin(), now.end(), [&](pid_t w) { return srv.is_ready(w); });
  }, 20s));
  PM_CHECK(srv, count_of(srv.log(), "worker " + std::to_string(victim) + " (slot") >= 1);
  PM_CHECK(srv, srv.log().find("killed by signal 9 (Killed) unexpectedly") != std::string::npos);
  PM_CHECK(srv, http_get(srv.port()).has_value());
}

PM_TEST_CASE("exec: QUIT under keep-alive load: no request fails, every Python worker exits 0",
             "[exec][drain]") {
  server srv(exec_master, "procmodel-exec");
  PM_REQUIRE(srv, srv.start(exec_config(2, {"--shutdown-timeout", "5000"})));
  auto workers = srv.workers();
  http_load load(srv.port(), {.connections = 30});
  load.start();
  PM_REQUIRE(srv, wait_for([&] { return load.snapshot().ok >= 300; }, 20s));
  const auto quit_at = steady::now();
  srv.master().signal(SIGQUIT);
  auto status = srv.master().wait_exit(20s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  CHECK(wait_for([&] { return load.all_stopped(); }, 10s));
  auto r = load.stop();
  WARN("exec QUIT under keep-alive load: " << describe(r));
  INFO(describe(r) << "\n" << srv.describe());
  CHECK(r.ok >= 300);
  CHECK(losses(r, quit_at) == "");
  CHECK(r.closes >= 1);  // told to close, not cut
  for (pid_t w : workers) {
    CHECK(!is_running(w));
    PM_CHECK(srv, srv.log().find("worker " + std::to_string(w) + " (slot") != std::string::npos);
  }
  PM_CHECK(srv, count_of(srv.log(), "exited with code 0") >= 2);
  PM_CHECK(srv, count_of(srv.log(), "needed SIGKILL") == 0);
  PM_CHECK(srv, !srv.needed_sigkill());
}

PM_TEST_CASE("exec: HUP reloads under keep-alive load lose no request", "[exec][reload]") {
  server srv(exec_master, "procmodel-exec");
  const std::string message = srv.dir().file("message");
  write_file(message, "hello from python\n");
  PM_REQUIRE(srv, srv.start(exec_config(2, {"--message-file", message})));
  http_load load(srv.port(), {.connections = 30});
  load.start();
  PM_REQUIRE(srv, wait_for([&] { return load.snapshot().ok >= 200; }, 20s));
  const int hups = 4;
  for (int i = 0; i < hups; ++i) {
    PM_REQUIRE(srv, srv.master().signal(SIGHUP));
    PM_REQUIRE(srv, wait_for([&] {
      return count_of(srv.log(), "reload: generation ") >= static_cast<std::size_t>(i + 1);
    }, 20s));
    std::this_thread::sleep_for(300ms);
  }
  // The old generations drain under load; then the clients stop.
  PM_REQUIRE(srv, wait_for([&] {
    return srv.workers().size() == 2 &&
           count_of(srv.log(), "exited with code 0") >= static_cast<std::size_t>(2 * hups);
  }, 20s));
  auto r = load.finish(5s);
  std::map<std::uint64_t, std::uint64_t> per_generation;
  for (const auto& [body, n] : r.bodies)
    if (auto b = parse_body(body)) per_generation[b->generation] += n;
  std::string gens;
  for (const auto& [g, n] : per_generation) gens += " " + std::to_string(g) + ":" + std::to_string(n);
  WARN("exec reload under keep-alive load: " << hups << " HUPs; " << describe(r)
                                             << "; answers per generation:" << gens);
  INFO(describe(r));
  PM_CHECK(srv, losses(r) == "");
  PM_CHECK(srv, per_generation.size() >= 3);
  PM_CHECK(srv, per_generation.count(1 + hups) == 1);
  PM_CHECK(srv, count_of(srv.log(), "rolled back") == 0);
}

PM_TEST_CASE("exec: a program that cannot be executed is logged and retried with backoff",
             "[exec]") {
  server srv(exec_master, "procmodel-exec");
  auto c = exec_config(1, {"--python", "/nonexistent/python3"});
  c.wait_workers = false;
  expect_log_line("cannot execute '/nonexistent/python3'");
  expect_log_line("cannot start a worker for slot 0");
  PM_REQUIRE(srv, srv.start(c));
  PM_REQUIRE(srv, wait_for([&] { return count_of(srv.log(), "next respawn in") >= 2; }, 20s));
  const std::string log = srv.log();
  PM_CHECK(srv, log.find("slot 0: cannot execute '/nonexistent/python3' (exit 127): No such file "
                         "or directory") != std::string::npos);
  PM_CHECK(srv, srv.zombie_children().empty());
  PM_CHECK(srv, !srv.master().exited());
  // The master still obeys: QUIT stops it with 0.
  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  auto status = srv.master().wait_exit(10s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
}

PM_TEST_CASE("exec: -s upgrade under keep-alive load starts new programs and drains the old ones",
             "[exec][upgrade]") {
  subreaper_scope reaper;  // the new master outlives its parent, the first master
  server srv(exec_master, "procmodel-exec");
  PM_REQUIRE(srv, srv.start(exec_config(2, {"--shutdown-timeout", "5000"})));
  family fam(srv.master());
  const pid_t old_master = srv.master_pid();
  fam.master(old_master);
  const auto old_workers = fam.workers_of(old_master);
  PM_REQUIRE(srv, old_workers.size() == 2);
  for (pid_t w : old_workers) PM_CHECK(srv, generation_env_of(w) == 1);

  http_load load(srv.port(), {.connections = 20});
  load.start();
  PM_REQUIRE(srv, wait_for([&] { return load.snapshot().ok >= 200; }, 20s));

  auto up = run(srv.dir(), exec_master,
                {"-s", "upgrade", "--pid-file", srv.pid_path(), "--upgrade-timeout", "20000"}, 40s);
  INFO("-s upgrade: exit " << up.code() << "\n" << up.out << up.err);
  PM_REQUIRE(srv, up.code() == 0);
  auto ok = parse_upgrade_ok(up.out);
  PM_REQUIRE(srv, ok.has_value());
  const pid_t new_master = ok->first;
  PM_CHECK(srv, ok->second == old_master);
  fam.master(new_master);
  PM_CHECK(srv, pid_in(srv.pid_path()) == new_master);

  // The new master runs programs of its own: new pids, the next generation.
  const auto new_workers = fam.workers_of(new_master);
  PM_REQUIRE(srv, new_workers.size() == 2);
  for (pid_t w : new_workers) {
    PM_CHECK(srv, !contains(old_workers, w));
    PM_CHECK(srv, generation_env_of(w) == 2);
  }
  auto st = run(srv.dir(), exec_master, {"--pid-file", srv.pid_path(), "-s", "status"});
  INFO("-s status:\n" << st.out << st.err);
  PM_CHECK(srv, st.code() == 0);
  const auto listed = ready_generations(st.out);
  PM_CHECK(srv, listed.size() == 2);
  for (pid_t w : new_workers) PM_CHECK(srv, (listed.count(w) == 1 && listed.at(w) == 2));

  // The old master drains its programs, each exits 0, then it exits 0.
  auto old_end = srv.master().wait_exit(20s);
  PM_REQUIRE(srv, old_end.has_value());
  PM_CHECK(srv, exit_code_of(*old_end) == 0);
  for (pid_t w : old_workers) PM_CHECK(srv, !fam.running(w));
  PM_CHECK(srv, workers_exited_cleanly(srv.log(), old_workers));
  PM_CHECK(srv, count_of(srv.log(), "needed SIGKILL") == 0);

  // The new generation serves the load; then the clients stop.
  const auto after = load.snapshot().ok;
  PM_CHECK(srv, wait_for([&] { return load.snapshot().ok >= after + 200; }, 20s));
  auto r = load.finish(5s);
  const auto answers = answers_by_worker(r);
  std::string who;
  for (const auto& [key, n] : answers)
    who += " g" + std::to_string(key.first) + "/" + std::to_string(key.second) + ":" +
           std::to_string(n);
  WARN("exec upgrade under keep-alive load: " << describe(r)
                                              << "; answers by generation/pid:" << who);
  INFO(describe(r) << "\nanswers:" << who);
  PM_CHECK(srv, losses(r) == "");
  for (const auto& [key, n] : answers) {
    INFO("generation " << key.first << " pid " << key.second);
    PM_CHECK(srv, (key.first == 1 ? contains(old_workers, key.second)
                                  : contains(new_workers, key.second)));
    PM_CHECK(srv, (key.first == 1 || key.first == 2));
  }
  PM_CHECK(srv, std::any_of(answers.begin(), answers.end(),
                            [](const auto& a) { return a.first.first == 2; }));

  // Nothing is left but the new master and its programs.
  for (pid_t p : fam.all()) {
    INFO("pid " << p);
    PM_CHECK(srv, fam.running(p) == (p == new_master || contains(new_workers, p)));
  }

  // QUIT ends the new master as any: its programs exit 0, then it does.
  PM_REQUIRE(srv, ::kill(new_master, SIGQUIT) == 0);
  PM_REQUIRE(srv, fam.wait_gone(new_master, 20s));
  auto new_end = fam.status_of(new_master);
  PM_REQUIRE(srv, new_end.has_value());
  PM_CHECK(srv, exit_code_of(*new_end) == 0);
  for (pid_t w : new_workers) PM_CHECK(srv, !fam.running(w));
  PM_CHECK(srv, workers_exited_cleanly(srv.log(), new_workers));
  PM_CHECK(srv, !file_exists(srv.pid_path()));
}

PM_TEST_CASE(
    "exec: an upgrade whose programs cannot start is rolled back and the old programs serve on",
    "[exec][upgrade][rollback]") {
  expect_log_line("upgrade failed: the new master ");  // the failure under test
  expect_log_line("cannot start a worker for slot");    // the new master's, every retry
  subreaper_scope reaper;
  server srv(exec_master, "procmodel-exec");
  // The interpreter through a script of the test's, executable for now.
  const std::string interpreter = srv.dir().file("python3");
  write_file(interpreter, "#!/bin/sh\nexec " + python3 + " \"$@\"\n");
  PM_REQUIRE(srv, ::chmod(interpreter.c_str(), 0755) == 0);
  expect_log_line("cannot execute '" + interpreter + "'");
  PM_REQUIRE(srv,
             srv.start(exec_config(2, {"--python", interpreter, "--shutdown-timeout", "5000"})));
  family fam(srv.master());
  const pid_t master = srv.master_pid();
  fam.master(master);
  const auto workers = fam.workers_of(master);
  PM_REQUIRE(srv, workers.size() == 2);

  http_load load(srv.port(), {.connections = 20});
  load.start();
  PM_REQUIRE(srv, wait_for([&] { return load.snapshot().ok >= 200; }, 20s));

  // The new master's programs cannot be executed: it never gets ready.
  PM_REQUIRE(srv, ::chmod(interpreter.c_str(), 0644) == 0);
  auto up = run(srv.dir(), exec_master,
                {"-s", "upgrade", "--pid-file", srv.pid_path(), "--upgrade-timeout", "3000"}, 30s);
  const pid_t failed = started_new_master(srv.log());
  INFO("-s upgrade: exit " << up.code() << "\n" << up.out << up.err);
  PM_CHECK(srv, up.code() == 1);
  PM_CHECK(srv, up.err.find("not ready within 3000 ms") != std::string::npos);
  PM_REQUIRE(srv, failed != 0);
  fam.note(failed);
  PM_CHECK(srv, new_master_left_cleanly(srv, fam, failed));
  PM_CHECK(srv, srv.log().find("cannot execute '" + interpreter +
                                "' (exit 127): Permission denied") != std::string::npos);

  // The old master serves on with its own programs, untouched.
  PM_CHECK(srv, fam.running(master));
  PM_CHECK(srv, pid_in(srv.pid_path()) == master);
  PM_CHECK(srv, !file_exists(srv.pid_path() + ".oldbin"));
  PM_CHECK(srv, fam.workers_of(master) == workers);
  const auto after = load.snapshot().ok;
  PM_CHECK(srv, wait_for([&] { return load.snapshot().ok >= after + 200; }, 20s));
  auto r = load.finish(5s);
  WARN("exec upgrade rolled back under keep-alive load: " << describe(r));
  INFO(describe(r));
  PM_CHECK(srv, losses(r) == "");
  for (const auto& [key, n] : answers_by_worker(r)) {
    INFO("generation " << key.first << " pid " << key.second);
    PM_CHECK(srv, key.first == 1);
    PM_CHECK(srv, contains(workers, key.second));
  }
  for (pid_t p : fam.all()) {
    INFO("pid " << p);
    PM_CHECK(srv, fam.running(p) == (p == master || contains(workers, p)));
  }

  // It stops as always: its programs exit 0, then it does.
  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  auto end = srv.master().wait_exit(20s);
  PM_REQUIRE(srv, end.has_value());
  PM_CHECK(srv, exit_code_of(*end) == 0);
  PM_CHECK(srv, workers_exited_cleanly(srv.log(), workers));
}

PM_TEST_CASE("exec: per-worker settings reach the programs, read back from /proc",
             "[exec][worker-settings]") {
  server srv(exec_master, "procmodel-exec");
  ::chmod(srv.dir().path().c_str(), 0755);  // nobody enters it
  std::vector<std::string> extra = {"--worker-rlimit-nofile", "4321", "--worker-cpu-affinity",
                                    "auto", "--worker-priority", "7", "--worker-directory",
                                    srv.dir().path()};
  auto pw = nobody_if_root();  // else the switch to another user is not covered
  if (pw) {
    // The source tree may sit where nobody cannot read (a clone in a 0700
    // directory): the programs run a copy nobody can.
    const auto script = std::filesystem::path(srv.dir().path()) / "worker.py";
    std::filesystem::copy_file(exec_worker, script);
    std::filesystem::permissions(script, std::filesystem::perms::owner_read |
                                             std::filesystem::perms::group_read |
                                             std::filesystem::perms::others_read);
    extra.insert(extra.end(), {"--user", "nobody", "--worker", script.string()});
  }
  PM_REQUIRE(srv, srv.start(exec_config(2, extra)));
  auto slots = srv.slot_pids();
  PM_REQUIRE(srv, slots.size() == 2);
  for (auto [slot, w] : slots) {
    INFO("worker " << w << " in slot " << slot);
    CHECK(exe_of(w).find("python3") != std::string::npos);
    CHECK(limit_of(w, "Max open files") == "4321 4321");
    CHECK(status_field(w, "Cpus_allowed_list").find_first_of(",-") == std::string::npos);
    CHECK(nice_of(w) == "7");
    CHECK(std::filesystem::read_symlink("/proc/" + std::to_string(w) + "/cwd") ==
          srv.dir().path());
    if (pw) CHECK(drop_problems(w, *pw).empty());
  }
  PM_CHECK(srv, http_get(srv.port()).has_value());

  // The programs, as nobody, still stop on the master's quit: each exits 0.
  std::vector<pid_t> workers;
  for (auto [slot, w] : slots) workers.push_back(w);
  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  auto end = srv.master().wait_exit(20s);
  PM_REQUIRE(srv, end.has_value());
  PM_CHECK(srv, exit_code_of(*end) == 0);
  PM_CHECK(srv, workers_exited_cleanly(srv.log(), workers));
}
