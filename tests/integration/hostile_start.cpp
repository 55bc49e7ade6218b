// The master in a hostile environment: what a careless parent leaves it
// (signals ignored or blocked, stdio closed, a pid file path too long for a
// unix socket), what a start that fails leaves behind, and how it lives
// through running out of descriptors. Real http_server and echo_server
// processes, real signals, loopback only.

#include "support/catch.hpp"
#include "support/http_checks.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

#include <csignal>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#ifndef PROCMODEL_HTTP_SERVER
#error "PROCMODEL_HTTP_SERVER must name the http_server binary"
#endif

using namespace pmtest;

namespace {

const std::string http_server = PROCMODEL_HTTP_SERVER;
const std::string echo_server = PROCMODEL_ECHO_SERVER;

// Kills the worker of slot 0 with SIGKILL and waits until a new one serves
// in its place; the new pid (0 if none came).
pid_t replace_slot0(server& srv) {
  const pid_t victim = srv.slot_pids().at(0);
  REQUIRE(::kill(victim, SIGKILL) == 0);
  pid_t next = 0;
  wait_for(
      [&] {
        next = srv.slot_pids().at(0);
        return next != victim && srv.is_ready(next);
      },
      10s);
  return next != victim ? next : 0;
}

// QUITs the master; its exit code (-1000 if it did not exit in time).
int quit(server& srv, milliseconds within = 15s) {
  srv.master().signal(SIGQUIT);
  auto st = srv.master().wait_exit(within);
  return st ? exit_code_of(*st) : -1000;
}

// Starts echo_server with `workers` workers (and a pid file, so a control socket).
void start_echo(server& srv, unsigned workers) {
  server_config cfg;
  cfg.workers = workers;
  PM_REQUIRE(srv, srv.start(cfg));
}

// A client of the master's control socket at `path`; -1 if it cannot connect.
int control_client(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) return fd;
  if (fd >= 0) ::close(fd);
  return -1;
}

// Descriptors closed on scope exit.
struct fd_list {
  std::vector<int> fds;
  ~fd_list() {
    for (int fd : fds) ::close(fd);
  }
};

// Whether the other end of `fd` closed (whatever it said before is read and dropped).
bool peer_closed(int fd) {
  char buf[512];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) continue;
    return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
}

// CPU ticks the process `pid` uses over `window`.
unsigned long long ticks_over(pid_t pid, milliseconds window) {
  auto before = cpu_ticks(pid).value_or(0);
  std::this_thread::sleep_for(window);
  return cpu_ticks(pid).value_or(0) - before;
}

// `-s status` against the master of `srv`.
run_result status_of(server& srv, const std::string& program) {
  return run(srv.dir(), program, {"-s", "status", "--pid-file", srv.pid_path()}, 10s);
}

}  // namespace

TEST_CASE("a master started with SIGCHLD ignored still replaces a killed worker and quits",
          "[hostile][signals]") {
  server srv(http_server, "procmodel-hostile");
  auto cfg = http_config(2);
  cfg.ignored_signals = {SIGCHLD, SIGHUP, SIGQUIT, SIGUSR1};  // as nohup and careless shells do
  cfg.blocked_signals = {SIGTERM, SIGCHLD};
  PM_REQUIRE(srv, srv.start(cfg));

  pid_t next = replace_slot0(srv);
  PM_CHECK(srv, next != 0);
  PM_CHECK(srv, wait_for([&] { return srv.workers().size() == 2; }, 5s));
  PM_CHECK(srv, srv.zombie_children().empty());
  // The workers still answer after the respawn.
  PM_CHECK(srv, http_get(srv.port()).has_value());

  const auto workers = srv.workers();
  PM_CHECK(srv, quit(srv) == 0);
  for (pid_t w : workers) PM_CHECK(srv, wait_for([&] { return !is_alive(w); }, 5s));
  // Escalation never hit a reaped pid: the master saw every worker exit.
  PM_CHECK(srv, srv.log().find("did not exit in time") == std::string::npos);
}

TEST_CASE("out of descriptors, the master survives, backs off, and recovers when they come back",
          "[hostile][resources]") {
  server srv(echo_server, "procmodel-hostile");
  start_echo(srv, 2);
  const pid_t master = srv.master_pid();
  const std::string control = srv.pid_path() + ".sock";
  const int fds_at_start = count_open_fds(master);

  // Silent clients: connected, never a byte. The master holds at most its cap.
  fd_list silent;
  for (int i = 0; i < 40; ++i) {
    int fd = control_client(control);
    PM_REQUIRE(srv, fd >= 0);
    silent.fds.push_back(fd);
  }
  std::this_thread::sleep_for(300ms);
  const int held = count_open_fds(master) - fds_at_start;
  WARN("master descriptors: " << fds_at_start << " at start, +" << held
                              << " with 40 silent control clients");
  PM_CHECK(srv, held <= 16);

  // Not one descriptor more for the master: every fd >= 3 is out of reach.
  rlimit old{};
  PM_REQUIRE(srv, ::prlimit(master, RLIMIT_NOFILE, nullptr, &old) == 0);
  rlimit starved = old;
  starved.rlim_cur = 3;
  PM_REQUIRE(srv, ::prlimit(master, RLIMIT_NOFILE, &starved, nullptr) == 0);
  // More clients wait in the accept queue the master cannot take from.
  for (int i = 0; i < 5; ++i) {
    int fd = control_client(control);
    if (fd >= 0) silent.fds.push_back(fd);
  }

  const pid_t victim = srv.slot_pids().at(0);
  PM_REQUIRE(srv, ::kill(victim, SIGKILL) == 0);
  PM_CHECK(srv, wait_for([&] { return !is_alive(victim); }, 5s));
  // The silent clients' deadlines pass meanwhile (their descriptors go back).
  const auto ticks = ticks_over(master, 3s);
  const long hz = ::sysconf(_SC_CLK_TCK);
  WARN("master CPU while out of descriptors: " << ticks << " ticks in 3 s (" << hz
                                               << " ticks/s)");
  PM_REQUIRE(srv, is_running(master));
  PM_CHECK(srv, ticks < static_cast<unsigned long long>(hz) * 3 / 10);  // < 10% of a core
  PM_CHECK(srv, srv.log().find("cannot start a worker for slot 0") != std::string::npos);
  PM_CHECK(srv, srv.log().find("master failed") == std::string::npos);
  PM_CHECK(srv, count_of(srv.log(), "control socket: cannot accept") <= 1);
  // Slot 1 still serves.
  PM_CHECK(srv, echo_once(srv.port()));

  // Descriptors come back: slot 0 is refilled and status answers again.
  PM_REQUIRE(srv, ::prlimit(master, RLIMIT_NOFILE, &old, nullptr) == 0);
  const auto t0 = steady::now();
  bool refilled = wait_for(
      [&] {
        auto now = srv.slot_pids();
        return now.at(0) != victim && srv.is_ready(now.at(0));
      },
      15s);
  WARN("slot 0 refilled " << ms_since(t0) << " ms after the limit was raised");
  PM_CHECK(srv, refilled);
  for (int fd : silent.fds) ::close(fd);
  silent.fds.clear();
  auto st = status_of(srv, echo_server);
  INFO("status: " << st.out << st.err);
  PM_CHECK(srv, st.code() == 0);
  PM_CHECK(srv, count_of(st.out, "worker") == 2);
  PM_CHECK(srv, wait_for([&] { return srv.workers().size() == 2; }, 5s));
  PM_CHECK(srv, wait_for([&] { return count_open_fds(master) == fds_at_start; }, 5s));
  PM_CHECK(srv, quit(srv) == 0);
}

TEST_CASE("the control socket caps and times out silent clients, and reads a request sent in pieces",
          "[hostile][control]") {
  server srv(echo_server, "procmodel-hostile");
  start_echo(srv, 1);
  const pid_t master = srv.master_pid();
  const std::string control = srv.pid_path() + ".sock";

  // A request split over three writes is read whole.
  {
    int fd = control_client(control);
    PM_REQUIRE(srv, fd >= 0);
    fd_list one{{fd}};
    for (const char* piece : {"sta", "tu", "s\n"}) {
      PM_REQUIRE(srv, ::send(fd, piece, std::strlen(piece), MSG_NOSIGNAL) > 0);
      std::this_thread::sleep_for(50ms);
    }
    std::string answer;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, static_cast<std::size_t>(n));
    INFO(answer);
    PM_CHECK(srv, answer.find("master") != std::string::npos);
    PM_CHECK(srv, answer.find("unknown request") == std::string::npos);
  }

  // A silent client is dropped at its deadline; the master's descriptors come back.
  const int fds_before = count_open_fds(master);
  fd_list silent;
  for (int i = 0; i < 30; ++i) silent.fds.push_back(control_client(control));
  std::this_thread::sleep_for(300ms);
  PM_CHECK(srv, count_open_fds(master) - fds_before <= 16);
  // Status answers (busy or not) while they sit there, and for sure after their deadline.
  const auto t0 = steady::now();
  bool closed = wait_for(
      [&] {
        for (int fd : silent.fds)
          if (!peer_closed(fd)) return false;
        return true;
      },
      10s);
  WARN("30 silent control clients all closed by the master after " << ms_since(t0) << " ms");
  PM_CHECK(srv, closed);
  PM_CHECK(srv, wait_for([&] { return count_open_fds(master) == fds_before; }, 5s));
  auto st = status_of(srv, echo_server);
  INFO("status: " << st.out << st.err);
  PM_CHECK(srv, st.code() == 0);
  PM_CHECK(srv, quit(srv) == 0);
}
