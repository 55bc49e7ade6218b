// examples/06-exec end to end: a master whose workers are a Python program
// (Debian's python3) started by exec_spawner, with real signals and real
// keep-alive clients on loopback. The claims are the forked workers' ones:
// it serves, a worker killed with -9 is respawned, a graceful stop under
// load and a reload under load lose no request; and a program that cannot
// be executed is logged and retried with backoff while the master lives on.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/http_checks.hpp"
#include "support/http_load.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

#include <csignal>
#include <map>
#include <regex>
#include <string>
#include <thread>

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
  load_options lo;
  lo.connections = 30;
  http_load load(srv.port(), lo);
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
  load_options lo;
  lo.connections = 30;
  http_load load(srv.port(), lo);
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
