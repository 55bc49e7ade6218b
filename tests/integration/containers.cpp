// The master as a container's init, end to end: echo_server run as PID 1 of
// a new PID namespace (`unshare --fork --pid --mount-proc`) reaps the
// orphans its workers leave and stops gracefully on SIGTERM, the container
// runtime's stop signal; with --subreaper, outside a namespace, it reaps the
// orphans of its descendants too.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/process.hpp"
#include "support/teardown.hpp"

#include <csignal>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

using namespace pmtest;

namespace {

const std::string unshare_program = "/usr/bin/unshare";

// The pids (as the master's namespace numbers them) the orphans wrote to `path`.
std::vector<std::string> orphan_pids(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

// Every worker leaves an orphan: a shell started with system() puts a
// subshell in the background, notes its pid and exits; the subshell exits
// with 7 a little later, its parent gone.
std::pair<std::string, std::string> orphan_maker(const std::string& record) {
  return {"ECHO_RUN_AT_START", "(sleep 0.3; exit 7) & echo $! >> " + record};
}

// Whether this machine can make a PID namespace (root, util-linux).
bool can_unshare(const temp_dir& dir) {
  if (::access(unshare_program.c_str(), X_OK) != 0) return false;
  spawn_options o;
  o.stdout_path = dir.file("probe.out");
  auto probe = process::spawn(unshare_program, {"--fork", "--pid", "--mount-proc", "/bin/true"}, o);
  probe.expect_any_exit();
  auto st = probe.wait_exit(10s);
  return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
}

// Whether the master logged reaping orphan `pid` with exit code 7.
bool reaped(const std::string& log, const std::string& pid) {
  return log.find("reaped process " + pid + ", not a worker of this master: exited with code 7") !=
         std::string::npos;
}

}  // namespace

PM_TEST_CASE("as PID 1 of a PID namespace the master reaps orphans and SIGTERM drains",
             "[containers][pid1]") {
  temp_dir dir("procmodel-pid1");
  if (!can_unshare(dir)) {
    WARN("SKIP: cannot run `unshare --fork --pid --mount-proc` here (needs util-linux and root)");
    return;
  }
  const std::string record = dir.file("orphans");
  const std::string log_path = dir.file("stdio.log");
  spawn_options o;
  o.stdout_path = log_path;
  o.env = {orphan_maker(record)};
  auto ns = process::spawn(unshare_program,
                           {"--fork", "--pid", "--mount-proc", echo_server, "--listen",
                            "127.0.0.1:0", "--workers", "2", "--log-level", "debug"},
                           o);
  ns.stop_at_teardown(SIGKILL, 1s);  // the master's end is the test's to check
  auto log = [&] { return read_file(log_path); };
  INFO("--- log ---\n" << log());
  REQUIRE(wait_for([&] { return parse_port(log()) != 0; }, 10s));
  const std::uint16_t port = parse_port(log());
  // unshare's only child is the master: PID 1 inside, this pid outside.
  REQUIRE(wait_for([&] { return children_of(ns.pid()).size() == 1; }, 5s));
  const pid_t master = children_of(ns.pid()).at(0);
  ns.record_descendants();
  CHECK(log().find("master 1 started with 2 worker(s)") != std::string::npos);
  CHECK(log().find("master is PID 1: it reaps orphaned processes; SIGTERM drains (graceful stop)") !=
        std::string::npos);

  // Each worker's orphan is reparented to the master, which reaps it.
  REQUIRE(wait_for([&] { return orphan_pids(record).size() == 2; }, 10s));
  const auto orphans = orphan_pids(record);
  for (const auto& pid : orphans) {
    INFO("orphan " << pid << " (the namespace's numbering)");
    CHECK(wait_for([&] { return reaped(log(), pid); }, 10s));
  }
  // None is left a zombie: the master has no zombie child, and only its
  // two workers are children of it.
  CHECK(wait_for(
      [&] {
        auto kids = children_of(master);
        for (pid_t c : kids)
          if (process_state(c) == 'Z') return false;
        return kids.size() == 2;
      },
      5s));
  // Not mistaken for workers: none was respawned, none counted as one.
  CHECK(log().find("unexpectedly") == std::string::npos);
  CHECK(count_of(log(), "started worker ") == 2);
  CHECK(echo_once(port));

  // SIGTERM (docker stop, kubectl delete) is a graceful stop: a client
  // connected before it is served on until it hangs up.
  auto client = tcp_client::connect(port);
  REQUIRE(client.has_value());
  REQUIRE(client->echo("before SIGTERM\n"));
  REQUIRE(::kill(master, SIGTERM) == 0);
  REQUIRE(wait_for([&] { return log().find("graceful stop: draining 2 worker(s)") != std::string::npos; },
                   5s));
  CHECK(log().find("received SIGTERM: quit") != std::string::npos);
  CHECK(client->echo("served while draining\n"));
  CHECK_FALSE(ns.exited());
  client->close();
  auto st = ns.wait_exit(15s);
  REQUIRE(st.has_value());
  CHECK(describe_status(*st) == "exited with code 0");  // unshare passes on the master's exit
  const std::string end = log();
  CHECK(std::regex_search(end, std::regex(R"(worker \d+ \(slot 0, generation 1\) exited with code 0)")));
  CHECK(std::regex_search(end, std::regex(R"(worker \d+ \(slot 1, generation 1\) exited with code 0)")));
  CHECK(end.find("every worker has exited; master exits") != std::string::npos);
  CHECK(end.find("sending SIGKILL") == std::string::npos);
  CHECK(end.find("fast stop") == std::string::npos);
}

PM_TEST_CASE("as PID 1, --sigterm stop keeps SIGTERM the fast stop", "[containers][pid1]") {
  temp_dir dir("procmodel-pid1");
  if (!can_unshare(dir)) {
    WARN("SKIP: cannot run `unshare --fork --pid --mount-proc` here (needs util-linux and root)");
    return;
  }
  const std::string log_path = dir.file("stdio.log");
  spawn_options o;
  o.stdout_path = log_path;
  auto ns = process::spawn(unshare_program,
                           {"--fork", "--pid", "--mount-proc", echo_server, "--listen",
                            "127.0.0.1:0", "--workers", "1", "--sigterm", "stop"},
                           o);
  ns.stop_at_teardown(SIGKILL, 1s);
  auto log = [&] { return read_file(log_path); };
  INFO("--- log ---\n" << log());
  REQUIRE(wait_for([&] { return parse_port(log()) != 0; }, 10s));
  REQUIRE(wait_for([&] { return children_of(ns.pid()).size() == 1; }, 5s));
  const pid_t master = children_of(ns.pid()).at(0);
  ns.record_descendants();
  CHECK(log().find("SIGTERM is a fast stop") != std::string::npos);
  auto client = tcp_client::connect(parse_port(log()));
  REQUIRE(client.has_value());
  REQUIRE(client->echo("before SIGTERM\n"));
  REQUIRE(::kill(master, SIGTERM) == 0);
  // A fast stop does not wait for the client.
  auto st = ns.wait_exit(10s);
  REQUIRE(st.has_value());
  CHECK(describe_status(*st) == "exited with code 0");
  CHECK(log().find("received SIGTERM: stop") != std::string::npos);
  CHECK(log().find("fast stop: terminating 1 worker(s)") != std::string::npos);
}

PM_TEST_CASE("a master started with --subreaper reaps the orphans of its workers", "[containers][subreaper]") {
  for (bool subreaper : {true, false}) {
    INFO((subreaper ? "--subreaper" : "without --subreaper"));
    temp_dir dir("procmodel-subreaper");
    const std::string record = dir.file("orphans");
    const std::string log_path = dir.file("stdio.log");
    spawn_options o;
    o.stdout_path = log_path;
    o.env = {orphan_maker(record)};
    std::vector<std::string> args = {"--listen", "127.0.0.1:0", "--workers", "1", "--log-level",
                                     "debug"};
    if (subreaper) args.push_back("--subreaper");
    auto master = process::spawn(echo_server, args, o);
    master.stop_at_teardown(SIGQUIT, 10s);
    auto log = [&] { return read_file(log_path); };
    INFO("--- log ---\n" << log());
    REQUIRE(wait_for([&] { return orphan_pids(record).size() == 1; }, 10s));
    const std::string orphan = orphan_pids(record).at(0);
    if (subreaper) {
      CHECK(log().find("master is a subreaper: it reaps orphaned descendants") != std::string::npos);
      CHECK(wait_for([&] { return reaped(log(), orphan); }, 10s));
    } else {
      // The orphan goes to the nearest subreaper above the master (this test
      // process, or init), not to the master.
      const pid_t pid = static_cast<pid_t>(std::stol(orphan));
      CHECK(wait_for([&] { return !is_running(pid); }, 10s));
      ::waitpid(pid, nullptr, WNOHANG);  // ours if this test process adopted it
      std::this_thread::sleep_for(100ms);
      CHECK(log().find("reaped process") == std::string::npos);
      CHECK(log().find("master is a subreaper") == std::string::npos);
    }
    REQUIRE(master.signal(SIGQUIT));
    auto st = master.wait_exit(10s);
    REQUIRE(st.has_value());
    CHECK(describe_status(*st) == "exited with code 0");
  }
}
