// The master in a hostile environment: what a careless parent leaves it
// (signals ignored or blocked, stdio closed, a pid file path too long for a
// unix socket), what a start that fails leaves behind, and how it lives
// through running out of descriptors. Real http_server and echo_server
// processes, real signals, loopback only.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/http_checks.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

#include <algorithm>
#include <csignal>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

using namespace pmtest;

namespace {

// Kills the worker of slot 0 with SIGKILL and waits until a new one serves
// in its place; the new pid (0 if none came).
pid_t replace_slot0(server& srv) {
  const pid_t victim = srv.slot_pids().at(0);
  expect_worker_end(victim, "killed by signal 9");  // on purpose
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

PM_TEST_CASE("a master started with SIGCHLD ignored still replaces a killed worker and quits",
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

PM_TEST_CASE("out of descriptors, the master survives, backs off, and recovers when they come back",
          "[hostile][resources]") {
  if (!can_starve_descriptors()) return;
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
  // What starvation makes the master say, on purpose.
  expect_log_line("control socket: cannot accept: Too many open files");
  expect_log_pattern(R"(cannot start a worker for slot \d: (socketpair: )?Too many open files)");
  PM_REQUIRE(srv, ::prlimit(master, RLIMIT_NOFILE, &starved, nullptr) == 0);
  // More clients wait in the accept queue the master cannot take from.
  for (int i = 0; i < 5; ++i) {
    int fd = control_client(control);
    if (fd >= 0) silent.fds.push_back(fd);
  }

  const pid_t victim = srv.slot_pids().at(0);
  expect_worker_end(victim, "killed by signal 9");  // on purpose
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

PM_TEST_CASE("the control socket caps and times out silent clients, and reads a request sent in pieces",
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

namespace {

// The descriptor numbers `pid` holds for the listening socket on `port`.
std::vector<int> listener_fds(pid_t pid, std::uint16_t port) {
  std::vector<int> out;
  const std::string inode = "socket:[" + listening_inode(port) + "]";
  for (const auto& f : open_fds(pid))
    if (f.target == inode) out.push_back(f.fd);
  return out;
}

// Checks that `pid` holds /dev/null on 0, 1 and 2 (or the log on 1 and 2 when
// `log` is given) and its listener on `port` above them.
void check_stdio_and_listener(server& srv, pid_t pid, std::uint16_t port, const std::string& log) {
  INFO("process " << pid << ":\n" << describe_fds(pid));
  auto fds = open_fds(pid);
  for (int n : {0, 1, 2}) {
    INFO("descriptor " << n);
    auto it = std::find_if(fds.begin(), fds.end(), [&](const fd_entry& f) { return f.fd == n; });
    PM_REQUIRE(srv, it != fds.end());
    PM_CHECK(srv, (it->target == "/dev/null" || (!log.empty() && it->target == log)));
  }
  auto listeners = listener_fds(pid, port);
  PM_CHECK(srv, !listeners.empty());
  for (int fd : listeners) PM_CHECK(srv, fd > 2);
}

}  // namespace

PM_TEST_CASE("a master started with stdin, stdout and stderr closed keeps its listener off them",
          "[hostile][stdio]") {
  server srv(http_server, "procmodel-hostile");
  auto cfg = http_config(2);
  cfg.log_file = true;  // no stderr to log to
  cfg.closed_stdio = {0, 1, 2};
  PM_REQUIRE(srv, srv.start(cfg));
  check_stdio_and_listener(srv, srv.master_pid(), srv.port(), "");
  for (pid_t w : srv.workers()) check_stdio_and_listener(srv, w, srv.port(), "");
  PM_CHECK(srv, http_get(srv.port()).has_value());
  PM_CHECK(srv, quit(srv) == 0);
}

PM_TEST_CASE("a daemon (--daemon) started with stdio closed reports its start truly and serves",
          "[hostile][stdio][daemon]") {
  temp_dir dir("procmodel-hostile");
  const std::string pid_path = dir.file("d.pid"), log_path = dir.file("d.log");
  spawn_options opt;
  opt.stdout_path = dir.file("launcher.out");
  opt.closed_stdio = {0, 1, 2};
  process launcher = process::spawn(http_server,
                                    {"--daemon", "--listen", "127.0.0.1:0", "--workers", "1",
                                     "--pid-file", pid_path, "--log-file", log_path,
                                     "--log-level", "debug"},
                                    opt);
  auto st = launcher.wait_exit(10s);
  launcher.forget_daemons();
  INFO(read_file(log_path));
  REQUIRE(st.has_value());
  CHECK(exit_code_of(*st) == 0);  // the daemon's verdict, not a byte of its log
  REQUIRE(wait_for([&] { return file_exists(pid_path); }, 5s));
  const pid_t daemon_pid = std::stoi(read_file(pid_path));
  daemon_reaper guard{daemon_pid};
  const auto port = parse_port(read_file(log_path));
  REQUIRE(port != 0);
  CHECK(wait_for([&] { return http_get(port).has_value(); }, 5s));
  server none(http_server);  // only for the failure messages
  check_stdio_and_listener(none, daemon_pid, port, "");
  for (pid_t w : children_of(daemon_pid)) check_stdio_and_listener(none, w, port, "");
  REQUIRE(::kill(daemon_pid, SIGQUIT) == 0);
  CHECK(wait_for([&] { return !is_alive(daemon_pid); }, 10s));
  CHECK(!file_exists(pid_path));
}

PM_TEST_CASE("a start that fails after its listeners are bound leaves no pid file",
          "[hostile][pidfile]") {
  temp_dir dir("procmodel-hostile");
  const std::string pid_path = dir.file("master.pid");
  // The control socket cannot be created where a directory stands.
  REQUIRE(::mkdir((pid_path + ".sock").c_str(), 0700) == 0);
  expect_log_line("sock exists and is not a socket");  // the refusal under test
  auto r = run(dir, echo_server,
               {"--listen", "127.0.0.1:0", "--workers", "1", "--pid-file", pid_path}, 10s);
  INFO("stderr: " << r.err);
  CHECK(r.code() == 1);
  CHECK(r.err.find("control socket") != std::string::npos);
  CHECK_FALSE(file_exists(pid_path));
}

PM_TEST_CASE("a pid file path of 150 characters works, -s status included", "[hostile][pidfile]") {
  server srv(echo_server, "procmodel-hostile");
  std::string deep = srv.dir().path();
  while (deep.size() < 150 - 12) {
    deep += "/" + std::string(std::min<std::size_t>(40, 150 - 12 - deep.size()), 'd');
    REQUIRE(::mkdir(deep.c_str(), 0700) == 0);
  }
  server_config cfg;
  cfg.workers = 2;
  cfg.pid_path = deep + "/master.pid";
  INFO("pid file " << cfg.pid_path << " (" << cfg.pid_path.size() << " characters)");
  REQUIRE(cfg.pid_path.size() >= 150);
  PM_REQUIRE(srv, srv.start(cfg));
  auto st = status_of(srv, echo_server);
  INFO("status: " << st.out << st.err);
  PM_CHECK(srv, st.code() == 0);
  PM_CHECK(srv, count_of(st.out, "worker") == 2);
  auto q = run(srv.dir(), echo_server, {"-s", "quit", "--pid-file", srv.pid_path()});
  PM_CHECK(srv, q.code() == 0);
  auto exit = srv.master().wait_exit(10s);
  PM_REQUIRE(srv, exit.has_value());
  PM_CHECK(srv, exit_code_of(*exit) == 0);
  PM_CHECK(srv, !file_exists(srv.pid_path()));
  PM_CHECK(srv, !file_exists(srv.pid_path() + ".sock"));
}

namespace {

int bad_inputs = 0;  // tried by the integration tests below

// The whole answer of the control socket at `path` to `request` (sent as is).
std::string ask(const std::string& path, std::string_view request) {
  int fd = control_client(path);
  if (fd < 0) return "(cannot connect)";
  fd_list one{{fd}};
  if (!request.empty() && ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) < 0)
    return "(cannot send)";
  ::shutdown(fd, SHUT_WR);
  std::string answer;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) return answer + "(no end of answer in 5 s)";
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return answer;
    answer.append(buf, static_cast<std::size_t>(n));
  }
}

// A TCP socket listening on 127.0.0.1:0 (close-on-exec): what a previous
// master would hand over. Its port in `port`.
int listening_socket(std::uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0 || ::listen(fd, 16) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
    throw std::runtime_error("cannot make a listening socket");
  port = ntohs(sa.sin_port);
  return fd;
}

}  // namespace

PM_TEST_CASE("bad control requests are answered with an error and change nothing",
          "[hostile][control][bad_input]") {
  server srv(echo_server, "procmodel-hostile");
  start_echo(srv, 2);
  const std::string control = srv.pid_path() + ".sock";
  const auto workers = srv.workers();
  const std::vector<std::string> junk = {
      "\n", "\r\n", "statusX\n", "status json extra\n", "STATUS\n", " status\n", "status \n",
      "quit\n", "reload now\n", "reloadx\n", "stop\n", "status\tjson\n", "upgrade abc\n", "upgrade 0\n",
      "upgrade -5\n", "upgrade 99999999999999\n", "upgrade 1 2\n", "upgrade  5\n", "upgrade x5\n",
      std::string(300, 'a') + "\n", std::string(5000, 's'), std::string("st\0atus\n", 8),
      "\xff\xfe\xfd\n", "\x1b[2J\n", std::string("status\0json\n", 12), "{\"cmd\":\"status\"}\n",
      "GET / HTTP/1.1\r\n\r\n", "upgrade\x01\n", "status json json\n",
  };
  for (const auto& req : junk) {
    ++bad_inputs;
    std::string answer = ask(control, req);
    INFO("request '" << req.substr(0, 40) << "' (" << req.size() << " bytes): answer '" << answer
                     << "'");
    PM_CHECK(srv, answer.rfind("error: ", 0) == 0);
  }
  ++bad_inputs;  // a client that sends nothing and closes
  PM_CHECK(srv, ask(control, "").rfind("error: ", 0) == 0);
  // Nothing changed: same workers, no upgrade, still serving and answering.
  PM_CHECK(srv, srv.workers() == workers);
  PM_CHECK(srv, srv.log().find("upgrade:") == std::string::npos);
  PM_CHECK(srv, echo_once(srv.port()));
  auto st = status_of(srv, echo_server);
  PM_CHECK(srv, st.code() == 0);
  PM_CHECK(srv, quit(srv) == 0);
}

PM_TEST_CASE("PROCMODEL_UPGRADE_FD that is not the previous master's channel is refused",
          "[hostile][handover][bad_input]") {
  temp_dir dir("procmodel-hostile");
  std::uint16_t port = 0;
  const int listener = listening_socket(port);
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } guard{listener};
  const std::string pid_path = dir.file("m.pid");
  for (const char* value : {"", "-1", "0", "2", "abc", "3x", "99999999999", "99", "3"}) {
    ++bad_inputs;
    spawn_options opt;
    opt.stdout_path = dir.file("u.log");
    opt.fd3 = listener;
    opt.env = {{"PROCMODEL_LISTENERS", "0:3"}, {"PROCMODEL_UPGRADE_FD", value}};
    process p = process::spawn(echo_server,
                               {"--listen", "127.0.0.1:" + std::to_string(port), "--workers", "1",
                                "--pid-file", pid_path},
                               opt);
    p.expect_exit(1);  // refused, as checked below
    auto st = p.wait_exit(10s);
    p.record_descendants();
    INFO("PROCMODEL_UPGRADE_FD='" << value << "': " << read_file(opt.stdout_path));
    CHECK(st.has_value());
    if (st) CHECK(exit_code_of(*st) == 1);
    CHECK(read_file(opt.stdout_path).find("PROCMODEL_UPGRADE_FD") != std::string::npos);
    CHECK_FALSE(file_exists(pid_path));
    ::unlink(opt.stdout_path.c_str());
  }
  // The socket handed over was left as it was: still listening.
  int accepting = 0;
  socklen_t len = sizeof accepting;
  ::getsockopt(listener, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len);
  CHECK(accepting == 1);
}

PM_TEST_CASE("a master with no address to listen on refuses to start and leaves no worker and no pid file",
             "[hostile][pidfile][bad_input]") {
  ++bad_inputs;
  temp_dir dir("procmodel-hostile");
  const std::string pid_path = dir.file("master.pid");
  expect_log_line("no socket to serve");  // the refusal under test
  // echo_server sets a default address; an empty --listen clears it.
  auto r = run(dir, echo_server,
               {"--listen=", "--workers", "2", "--log-level", "debug", "--pid-file", pid_path}, 10s);
  INFO("stderr: " << r.err);
  REQUIRE(r.status);  // it exited on its own
  CHECK(WIFEXITED(*r.status));
  CHECK(r.code() == 1);
  CHECK(r.err.find("no socket to serve: set options::listen, pass --listen HOST:PORT, or start "
                   "by socket activation") != std::string::npos);
  CHECK(r.err.find("options::without_listeners") != std::string::npos);
  CHECK(r.err.find("started with") == std::string::npos);  // the master never ran
  CHECK(r.err.find("worker 0") == std::string::npos);      // nor did any worker
  CHECK_FALSE(file_exists(pid_path));
  CHECK_FALSE(file_exists(pid_path + ".sock"));
}

PM_TEST_CASE("a master refuses a pid file path that is a FIFO or a directory, and replaces junk",
          "[hostile][pidfile][bad_input]") {
  temp_dir dir("procmodel-hostile");
  SECTION("a FIFO or a directory: a clear error, left as it was") {
    const std::string fifo = dir.file("fifo.pid"), sub = dir.file("dir.pid");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    REQUIRE(::mkdir(sub.c_str(), 0700) == 0);
    expect_log_line("exists and is not a regular file");  // the refusals under test
    for (const auto& path : {fifo, sub}) {
      ++bad_inputs;
      auto r = run(dir, echo_server, {"--listen", "127.0.0.1:0", "--workers", "1", "--pid-file", path});
      INFO(path << ": " << r.err);
      CHECK(r.code() == 1);
      CHECK(r.err.find(path) != std::string::npos);
    }
    struct stat st {};
    CHECK((::lstat(fifo.c_str(), &st) == 0 && S_ISFIFO(st.st_mode)));
    CHECK((::lstat(sub.c_str(), &st) == 0 && S_ISDIR(st.st_mode)));
  }
  SECTION("junk, huge or naming a dead pid: replaced by a master that starts") {
    for (const std::string& junk :
         {std::string("not a pid\n"), std::string(1 << 20, '9'), std::string("1\n"),
          std::string(64, '\0')}) {
      ++bad_inputs;
      server srv(echo_server, "procmodel-hostile");
      write_file(srv.pid_path(), junk);
      start_echo(srv, 1);
      PM_CHECK(srv, read_file(srv.pid_path()) == std::to_string(srv.master_pid()) + "\n");
      PM_CHECK(srv, quit(srv) == 0);
    }
  }
}

PM_TEST_CASE("bad inputs tried by the integration suite", "[hostile][bad_input][zz_count]") {
  WARN("bad inputs tried in tests/integration/hostile_start.cpp: " << bad_inputs);
  SUCCEED();
}

PM_TEST_CASE("an upgrade asked for while out of descriptors fails, and the master goes on",
          "[hostile][resources][upgrade]") {
  if (!can_starve_descriptors()) return;
  server srv(echo_server, "procmodel-hostile");
  start_echo(srv, 2);
  const pid_t master = srv.master_pid();
  const auto workers = srv.workers();
  rlimit old{};
  PM_REQUIRE(srv, ::prlimit(master, RLIMIT_NOFILE, nullptr, &old) == 0);
  rlimit starved = old;
  starved.rlim_cur = 3;
  expect_log_line("upgrade failed: socketpair: Too many open files");  // the failure under test
  PM_REQUIRE(srv, ::prlimit(master, RLIMIT_NOFILE, &starved, nullptr) == 0);
  PM_REQUIRE(srv, srv.master().signal(SIGUSR2));
  PM_CHECK(srv, wait_for([&] { return srv.log().find("upgrade failed") != std::string::npos; }, 5s));
  PM_REQUIRE(srv, is_running(master));
  PM_CHECK(srv, srv.log().find("master failed") == std::string::npos);
  // Nothing was handed over: the pid file still names this master, the workers serve.
  PM_CHECK(srv, read_file(srv.pid_path()) == std::to_string(master) + "\n");
  PM_CHECK(srv, !file_exists(srv.pid_path() + ".oldbin"));
  PM_CHECK(srv, srv.workers() == workers);
  PM_CHECK(srv, echo_once(srv.port()));
  PM_REQUIRE(srv, ::prlimit(master, RLIMIT_NOFILE, &old, nullptr) == 0);
  auto st = status_of(srv, echo_server);
  INFO("status: " << st.out << st.err);
  PM_CHECK(srv, st.code() == 0);
  PM_CHECK(srv, quit(srv) == 0);
}

PM_TEST_CASE("the pid file is written only once the master watches its signals", "[hostile][pidfile]") {
  // strace tells the order of the system calls for certain: the master's
  // signalfd must come before the rename that puts its pid file in place.
  temp_dir dir("procmodel-hostile");
  auto probe = run(dir, "/usr/bin/strace", {"-o", "/dev/null", "/bin/true"}, 10s);
  if (probe.code() != 0) {
    WARN("strace cannot run here (" << probe.err << "); the start order is not checked");
    return;
  }
  const std::string trace = dir.file("trace"), pid_path = dir.file("m.pid");
  spawn_options opt;
  opt.stdout_path = dir.file("m.log");
  if (const char* asan = std::getenv("ASAN_OPTIONS"))  // LeakSanitizer refuses to run traced
    opt.env = {{"ASAN_OPTIONS", std::string(asan) + ":detect_leaks=0"}};
  process tracer = process::spawn(
      "/usr/bin/strace",
      {"-f", "-qq", "-o", trace, "-e", "trace=signalfd,signalfd4,rename,renameat,renameat2",
       echo_server, "--listen", "127.0.0.1:0", "--workers", "1", "--pid-file", pid_path},
      opt);
  REQUIRE(wait_for([&] { return file_exists(pid_path); }, 20s));
  const pid_t master = std::stoi(read_file(pid_path));
  REQUIRE(::kill(master, SIGQUIT) == 0);
  auto st = tracer.wait_exit(20s);
  INFO(read_file(opt.stdout_path) << "--- trace ---\n" << read_file(trace));
  REQUIRE(st.has_value());
  CHECK(exit_code_of(*st) == 0);  // strace exits with its tracee's status
  std::size_t signalfd_at = std::string::npos, rename_at = std::string::npos, line_no = 0;
  const std::string mine = std::to_string(master) + " ";
  for (const auto& line : lines_with(read_file(trace), "")) {
    ++line_no;
    if (line.rfind(mine, 0) != 0) continue;
    if (signalfd_at == std::string::npos && line.find("signalfd") != std::string::npos)
      signalfd_at = line_no;
    if (rename_at == std::string::npos && line.find("rename") != std::string::npos &&
        line.find(pid_path + "\"") != std::string::npos)
      rename_at = line_no;
  }
  REQUIRE(signalfd_at != std::string::npos);
  REQUIRE(rename_at != std::string::npos);
  CHECK(signalfd_at < rename_at);
}
