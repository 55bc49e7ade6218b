// A worker process under hostile conditions, end to end with the real example
// servers: how each worker ends on QUIT and TERM (read from the master's log,
// so that a worker that crashes on its way out is seen), a master killed while
// its workers drain, programs a worker starts, signals during start-up, and
// running out of descriptors.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/http_checks.hpp"
#include "support/http_load.hpp"
#include "support/process.hpp"
#include "support/server.hpp"
#include "support/teardown.hpp"

#include <atomic>
#include <csignal>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace pmtest;

namespace {

// How each worker ended, from the master's "worker PID (slot K, generation G)
// exited with code N" / "killed by signal N (...)" lines.
std::map<pid_t, std::string> worker_ends(const std::string& log) {
  static const std::regex line(
      R"(worker (\d+) \(slot \d+, generation \d+\) (exited with code \d+|killed by signal \d+))");
  std::map<pid_t, std::string> out;
  for (std::sregex_iterator it(log.begin(), log.end(), line), end; it != end; ++it)
    out[static_cast<pid_t>(std::stol((*it)[1]))] = (*it)[2];
  return out;
}

// Every worker the master started ended with code 0, as its log says.
void check_workers_exited_cleanly(const server& srv) {
  auto ends = worker_ends(srv.log());
  INFO(srv.describe());
  REQUIRE(!srv.started().empty());
  for (const auto& w : srv.started()) {
    INFO("worker " << w.pid);
    CHECK(ends[w.pid] == "exited with code 0");
  }
  CHECK(srv.log().find("AddressSanitizer") == std::string::npos);
}

// Sends `signo` to the master; it and every worker it started end with code 0.
void stop_cleanly(server& srv, int signo) {
  srv.master().signal(signo);
  auto status = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  check_workers_exited_cleanly(srv);
}

// An http_server with a kept-alive connection open in each listener's queue,
// so that both the Worker's own objects and handler-owned sessions exist at exit.
void stop_and_check(int signo) {
  server srv(http_server, "procmodel-worker");
  auto c = http_config();
  c.extra = {"--shutdown-timeout", "1000", "--terminate-timeout", "2000"};
  PM_REQUIRE(srv, srv.start(c));
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  REQUIRE(keepalive_request(*client).rfind("HTTP/1.1 200", 0) == 0);
  stop_cleanly(srv, signo);
}

}  // namespace

PM_TEST_CASE("http_server workers exit with code 0 on QUIT", "[worker][teardown]") {
  stop_and_check(SIGQUIT);
}

PM_TEST_CASE("http_server workers exit with code 0 on TERM", "[worker][teardown]") {
  stop_and_check(SIGTERM);
}

namespace {

// The wait status of `pid`, a child of ours (an orphan we adopted as
// subreaper), once it exits within `timeout`.
std::optional<int> wait_child(pid_t pid, milliseconds timeout) {
  std::optional<int> out;
  wait_for(
      [&] {
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid)
          out = status;
        return out.has_value();
      },
      timeout, 5ms);
  return out;
}

// Whether `pid` logged "worker K: draining".
bool logged_draining(const server& srv, pid_t pid) {
  return srv.log().find(std::to_string(pid) + " worker 0: draining") != std::string::npos;
}

}  // namespace

PM_TEST_CASE("a worker already draining exits within orphan_timeout when its master is killed",
          "[worker][orphan]") {
  subreaper_scope reaper;  // the orphaned workers come to us: we see how they end
  server srv(http_server, "procmodel-worker");
  PM_REQUIRE(srv, srv.start(http_config(1)));  // shutdown_timeout: 10 s, orphan_timeout: 500 ms
  // An idle kept-alive connection keeps the old worker draining until its deadline.
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  REQUIRE(keepalive_request(*client).rfind("HTTP/1.1 200", 0) == 0);
  pid_t old_worker = srv.slot_pids().at(0);
  PM_REQUIRE(srv, srv.master().signal(SIGHUP));
  PM_REQUIRE(srv, wait_for([&] { return logged_draining(srv, old_worker); }, 10s));
  pid_t new_worker = srv.slot_pids().at(0);
  PM_REQUIRE(srv, new_worker != old_worker);
  srv.workers();  // recorded for the cleanup, should a check fail

  srv.master().expect_signal(SIGKILL);  // on purpose: its workers are orphans now
  auto t0 = steady::now();
  PM_REQUIRE(srv, srv.master().signal(SIGKILL));
  auto master_status = srv.master().wait_exit(5s);
  PM_REQUIRE(srv, master_status.has_value());
  PM_CHECK(srv, exit_code_of(*master_status) == -SIGKILL);

  auto old_status = wait_child(old_worker, 15s);
  double old_ms = ms_since(t0);
  auto new_status = wait_child(new_worker, 5s);
  WARN("master killed: the draining worker exited after " << old_ms << " ms");
  PM_REQUIRE(srv, old_status.has_value());
  PM_CHECK(srv, exit_code_of(*old_status) == 0);
  PM_CHECK(srv, old_ms < 3000);  // orphan_timeout (500 ms), not shutdown_timeout (10 s)
  PM_REQUIRE(srv, new_status.has_value());
  PM_CHECK(srv, exit_code_of(*new_status) == 0);
}

namespace {

// A field of /proc/<pid>/status ("SigBlk", "SigIgn", ...) as a bit set.
unsigned long long status_mask(pid_t pid, const std::string& field) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field + ":", 0) == 0)
      return std::stoull(line.substr(field.size() + 1), nullptr, 16);
  throw std::runtime_error("no " + field + " for pid " + std::to_string(pid));
}

constexpr unsigned long long bit(int signo) {
  return 1ULL << (signo - 1);
}

}  // namespace

PM_TEST_CASE("a program a worker starts with system() has no signal blocked and stops on SIGTERM",
          "[worker][signals]") {
  subreaper_scope reaper;  // the program outlives its shell: it comes to us
  server srv(echo_server, "procmodel-worker");
  const std::string pid_file = srv.dir().file("program.pid");
  server_config c;
  c.workers = 1;
  c.env = {{"ECHO_RUN_AT_START",
            "sleep 60 & echo $! > " + pid_file + ".tmp && mv " + pid_file + ".tmp " + pid_file}};
  PM_REQUIRE(srv, srv.start(c));
  PM_REQUIRE(srv, wait_for([&] { return file_exists(pid_file); }, 10s));
  pid_t program = static_cast<pid_t>(std::stol(read_file(pid_file)));
  srv.master().record(program);
  REQUIRE(is_running(program));

  auto blocked = status_mask(program, "SigBlk");
  auto ignored = status_mask(program, "SigIgn");
  INFO("SigBlk " << std::hex << blocked << ", SigIgn " << ignored);
  CHECK(blocked == 0);
  // sh ignores INT and QUIT in a background job; no other standard signal
  // may be ignored (the real-time ones are the C library's business).
  CHECK((ignored & (bit(32) - 1) & ~(bit(SIGINT) | bit(SIGQUIT))) == 0);

  ::kill(program, SIGTERM);
  auto status = wait_child(program, 3s);
  REQUIRE(status.has_value());
  CHECK(exit_code_of(*status) == -SIGTERM);

  stop_cleanly(srv, SIGQUIT);
}

PM_TEST_CASE("USR1 sent to workers while they start kills none of them", "[worker][signals]") {
  server srv(echo_server, "procmodel-worker");
  server_config c;
  c.workers = 4;
  PM_REQUIRE(srv, srv.start(c));
  // As logrotate's `killall -USR1`: every child of the master, as fast as we
  // can, while reloads start new workers.
  std::atomic<bool> done{false};
  std::atomic<long> sent{0};
  const pid_t master = srv.master_pid();
  std::thread flood([&] {
    while (!done)
      for (pid_t w : children_of(master))
        if (::kill(w, SIGUSR1) == 0)
          ++sent;
  });
  for (int i = 0; i < 60; ++i) {
    srv.master().signal(SIGHUP);
    std::this_thread::sleep_for(50ms);
  }
  done = true;
  flood.join();
  srv.workers();

  stop_cleanly(srv, SIGQUIT);  // every worker ended with code 0: none by USR1
  auto started = srv.started().size();
  auto ends = worker_ends(srv.log());
  std::size_t killed = 0;
  for (const auto& [pid, end] : ends)
    killed += end.rfind("killed by signal", 0) == 0 ? 1 : 0;
  WARN(sent << " USR1 sent; " << started << " workers started, " << killed
            << " killed by a signal");
  PM_CHECK(srv, started > 40);  // 240 at most; fewer when slow reloads fold HUPs together
  PM_CHECK(srv, killed == 0);
}

namespace {

// CPU time `pid` uses over `window`, in clock ticks.
unsigned long long ticks_over(pid_t pid, milliseconds window) {
  auto before = cpu_ticks(pid);
  std::this_thread::sleep_for(window);
  auto after = cpu_ticks(pid);
  return before && after ? *after - *before : ~0ULL;
}

// Starts `program` with one worker, lowers the worker's RLIMIT_NOFILE to what
// it holds, queues connections it cannot accept, and checks that it neither
// spins nor floods its log, and serves them once descriptors come back.
void check_accept_backoff(const std::string& program, bool http) {
  // The one line out of descriptors provokes, on purpose.
  expect_log_line("accept() failed: Too many open files; retrying with backoff");
  server srv(program, "procmodel-worker");
  server_config c = http ? http_config(1) : server_config{};
  c.workers = 1;
  PM_REQUIRE(srv, srv.start(c));
  const pid_t w = srv.workers().at(0);
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));

  auto idle = ticks_over(w, 1000ms);
  rlimit old{};
  PM_REQUIRE(srv, ::prlimit(w, RLIMIT_NOFILE, nullptr, &old) == 0);
  rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(count_open_fds(w));
  PM_REQUIRE(srv, ::prlimit(w, RLIMIT_NOFILE, &low, nullptr) == 0);
  // Three connections the kernel completes into the queue: at least one
  // stays there (a hole in the descriptor table may take the first ones).
  std::vector<tcp_client> clients;
  for (int i = 0; i < 3; ++i) {
    auto cl = tcp_client::connect(srv.port());
    PM_REQUIRE(srv, cl.has_value());
    clients.push_back(std::move(*cl));
  }
  std::this_thread::sleep_for(200ms);
  auto starved = ticks_over(w, 1000ms);
  WARN((http ? "http_server" : "echo_server")
       << " worker: " << idle / tick * 100 << "% CPU idle, " << starved / tick * 100
       << "% CPU with accept() failing on EMFILE");
  PM_CHECK(srv, starved <= static_cast<unsigned long long>(tick / 20));  // at most 5% of a CPU
  const auto log_lines = lines_with(srv.log(), "Too many open files").size();
  PM_CHECK(srv, log_lines == 1);

  // Descriptors back: the queued connections are served.
  PM_REQUIRE(srv, ::prlimit(w, RLIMIT_NOFILE, &old, nullptr) == 0);
  for (auto& cl : clients) {
    if (http)
      PM_CHECK(srv, keepalive_request(cl).rfind("HTTP/1.1 200", 0) == 0);
    else
      PM_CHECK(srv, cl.echo("back\n"));
  }
  PM_CHECK(srv, lines_with(srv.log(), "Too many open files").size() == log_lines);
  PM_CHECK(srv, lines_with(srv.log(), "accepting again").size() == 1);

  clients.clear();
  stop_cleanly(srv, SIGQUIT);
}

}  // namespace

PM_TEST_CASE("out of descriptors, an http_server worker backs off and logs once", "[worker][emfile]") {
  check_accept_backoff(http_server, true);
}

PM_TEST_CASE("out of descriptors, an echo_server worker backs off and logs once", "[worker][emfile]") {
  check_accept_backoff(echo_server, false);
}
