// --single-process, end to end with the real echo_server (which uses the
// default supervisor and knows nothing of the flag): the workers are threads
// of the master, so the program is one process with no children; it serves,
// reloads on HUP into a new generation of threads, and drains on QUIT. And
// http_server, which integration_single_process_compiled runs as built on
// the separately compiled library.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/process.hpp"
#include "support/server.hpp"
#include "support/teardown.hpp"

#include <csignal>
#include <map>
#include <regex>
#include <string>

#include <dirent.h>
#include <sys/wait.h>

using namespace pmtest;

namespace {

// The threads of `pid` (sanitizer runtimes may add some of their own).
std::size_t thread_count(pid_t pid) {
  std::size_t n = 0;
  if (DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/task").c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

// Every "started worker ID" of `generation`; a thread's id is negative.
std::vector<pid_t> started_ids(const std::string& log, unsigned generation) {
  static const std::regex re(R"(started worker (-?\d+) in slot \d+ \(generation (\d+)\))");
  std::vector<pid_t> out;
  for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it)
    if (std::stoul((*it)[2]) == generation) out.push_back(static_cast<pid_t>(std::stol((*it)[1])));
  return out;
}

// How the worker `id` ended, from the master's log; "" while it runs.
std::string end_of(const std::string& log, pid_t id) {
  const std::regex re("worker " + std::to_string(id) +
                      R"( \(slot \d+, generation \d+\) (exited with code \d+|killed by signal \d+))");
  std::smatch m;
  return std::regex_search(log, m, re) ? m[1].str() : "";
}

// Whether the master logged that worker `id` is ready (--log-level debug).
bool ready(const std::string& log, pid_t id) {
  for (const auto& l : lines_with(log, "worker " + std::to_string(id) + " (slot "))
    if (l.find("is ready") != std::string::npos) return true;
  return false;
}

// A server started with --single-process and 2 workers, serving.
void start_single_process(server& srv, std::vector<std::string> more = {}, bool http = false) {
  server_config c;
  c.http = http;
  c.extra = {"--single-process"};
  c.extra.insert(c.extra.end(), more.begin(), more.end());
  c.wait_workers = false;  // they are not processes
  PM_REQUIRE(srv, srv.start(c));
  PM_REQUIRE(srv, wait_for([&] {
               auto ids = started_ids(srv.log(), 1);
               return ids.size() == 2 && ready(srv.log(), ids[0]) && ready(srv.log(), ids[1]);
             }, 10s));
  PM_REQUIRE(srv, wait_for([&] { return http ? http_get(srv.port()).has_value()
                                              : echo_once(srv.port()); }, 10s, 50ms));
}

}  // namespace

PM_TEST_CASE("single process (--single-process): one process serves, and QUIT drains it to exit code 0",
             "[single_process]") {
  server srv(echo_server, "procmodel-single");
  start_single_process(srv);
  const pid_t master = srv.master_pid();
  const auto ids = started_ids(srv.log(), 1);
  for (pid_t id : ids) PM_CHECK(srv, id < 0);  // not processes
  PM_CHECK(srv, children_of(master).empty());
  PM_CHECK(srv, thread_count(master) >= 3);  // the master and two workers

  // A session open when QUIT comes is served until its client leaves.
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  REQUIRE(client->echo("before\n"));
  REQUIRE(srv.master().signal(SIGQUIT));
  PM_REQUIRE(srv, wait_for([&] { return count_of(srv.log(), ": draining (asked by master)") == 2; }, 5s));
  PM_CHECK(srv, client->echo("while draining\n"));
  PM_CHECK(srv, !srv.master().exited());
  client.reset();

  auto status = srv.master().wait_exit(10s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  for (pid_t id : ids) PM_CHECK(srv, end_of(srv.log(), id) == "exited with code 0");
  PM_CHECK(srv, !file_exists(srv.pid_path()));
}

PM_TEST_CASE("single process (--single-process): HUP reloads into a new generation of threads",
             "[single_process][reload]") {
  server srv(echo_server, "procmodel-single");
  start_single_process(srv);
  const pid_t master = srv.master_pid();
  const auto threads_before = thread_count(master);
  const auto old_ids = started_ids(srv.log(), 1);

  REQUIRE(srv.master().signal(SIGHUP));
  PM_REQUIRE(srv, wait_for([&] {
               return srv.log().find("reload: generation 2 serves with 2 worker(s)") !=
                      std::string::npos;
             }, 10s));
  const auto new_ids = started_ids(srv.log(), 2);
  PM_REQUIRE(srv, new_ids.size() == 2);
  for (pid_t id : new_ids) PM_CHECK(srv, id < 0);
  // The old generation drains and its threads are joined: none pile up.
  PM_CHECK(srv, wait_for([&] {
             return end_of(srv.log(), old_ids[0]) == "exited with code 0" &&
                    end_of(srv.log(), old_ids[1]) == "exited with code 0";
           }, 10s));
  PM_CHECK(srv, wait_for([&] { return thread_count(master) == threads_before; }, 5s));
  PM_CHECK(srv, echo_once(srv.port()));
  PM_CHECK(srv, children_of(master).empty());
  // The teardown's QUIT ends it; the audit checks exit code 0.
}

PM_TEST_CASE("single process (--single-process): --reuseport gives each worker thread its socket",
             "[single_process][reuseport]") {
  server srv(echo_server, "procmodel-single");
  start_single_process(srv, {"--reuseport"});
  PM_CHECK(srv, srv.log().find("(a socket per worker)") != std::string::npos);
  // Connections spread over both slots' sockets; every one is served.
  for (int i = 0; i < 20; ++i) PM_REQUIRE(srv, echo_once(srv.port()));
  PM_CHECK(srv, children_of(srv.master_pid()).empty());
}

PM_TEST_CASE("single process (--single-process): -s upgrade hands over to a new master that runs threads too",
             "[single_process][upgrade]") {
  subreaper_scope reaper;  // the new master outlives its parent: it comes to us
  server srv(echo_server, "procmodel-single");
  start_single_process(srv);
  const pid_t old_master = srv.master_pid();

  auto r = run(srv.dir(), echo_server, {"-s", "upgrade", "--pid-file", srv.pid_path()}, 30s);
  INFO(r.out << r.err);
  PM_REQUIRE(srv, r.code() == 0);
  auto old_status = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, old_status.has_value());
  PM_CHECK(srv, exit_code_of(*old_status) == 0);

  const pid_t next = static_cast<pid_t>(std::stol(read_file(srv.pid_path())));
  PM_REQUIRE(srv, next != old_master);
  PM_CHECK(srv, echo_once(srv.port()));  // the same sockets, served by the new master
  PM_CHECK(srv, children_of(next).empty());
  PM_CHECK(srv, thread_count(next) >= 3);

  ::kill(next, SIGQUIT);
  int status = 0;
  bool gone = wait_for([&] { return ::waitpid(next, &status, WNOHANG) == next; }, 15s, 5ms);
  if (!gone) subreaper_scope::reap({next});
  PM_REQUIRE(srv, gone);
  PM_CHECK(srv, exit_code_of(status) == 0);
}

PM_TEST_CASE("single process (--single-process): --daemon detaches first, then runs its threads",
             "[single_process][daemon]") {
  temp_dir dir("procmodel-single");
  const std::string pid_path = dir.file("d.pid"), log_path = dir.file("d.log");
  auto r = run(dir, echo_server,
               {"--single-process", "--daemon", "--listen", "127.0.0.1:0", "--workers", "2",
                "--pid-file", pid_path, "--log-file", log_path},
               10s);
  audit_log_file(log_path);
  INFO(r.err << read_file(log_path));
  REQUIRE(r.code() == 0);  // the parent returns once the daemon is up
  REQUIRE(file_exists(pid_path));
  const pid_t daemon_pid = std::stoi(read_file(pid_path));
  daemon_reaper guard{daemon_pid};
  CHECK(::getsid(daemon_pid) == daemon_pid);  // detached
  const auto port = parse_port(read_file(log_path));
  REQUIRE(port != 0);
  CHECK(wait_for([&] { return echo_once(port); }, 5s, 50ms));
  CHECK(started_ids(read_file(log_path), 1).size() == 2);
  CHECK(children_of(daemon_pid).empty());
  CHECK(thread_count(daemon_pid) >= 3);

  CHECK(run(dir, echo_server, {"-s", "quit", "--pid-file", pid_path}).code() == 0);
  CHECK(wait_for([&] { return !is_running(daemon_pid); }, 10s));
  const auto log = read_file(log_path);
  for (pid_t id : started_ids(log, 1)) CHECK(end_of(log, id) == "exited with code 0");
}

PM_TEST_CASE("single process (--single-process): http_server serves from one process",
             "[single_process][http]") {
  server srv(http_server, "procmodel-single");
  start_single_process(srv, {}, true);
  for (pid_t id : started_ids(srv.log(), 1)) PM_CHECK(srv, id < 0);
  auto answer = http_get(srv.port());
  PM_REQUIRE(srv, answer.has_value());
  PM_CHECK(srv, answer->find("pid " + std::to_string(srv.master_pid())) != std::string::npos);
  PM_CHECK(srv, children_of(srv.master_pid()).empty());
}
