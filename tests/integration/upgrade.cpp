// Hot upgrade of the master's own binary, end to end, and what goes with it:
// the control socket (-s upgrade, -s status), systemd notifications
// (NOTIFY_SOCKET), socket activation (LISTEN_FDS) and the validation of
// inherited descriptors (PROCMODEL_LISTENERS). Real masters, real signals,
// real clients on loopback.
//
// The claims under test are the design's: an automatic upgrade (`-s upgrade`)
// starts the binary on disk — found by its absolute path even when the master
// was started from a relative one — waits until it serves, then retires the
// old master, and no client sees a failed request; the manual dance (USR2,
// WINCH, QUIT, or HUP and QUIT the new one to roll back) works as nginx's;
// a new binary that exits or never gets ready is rolled back while the old
// master serves on; one upgrade at a time; inherited descriptors are checked,
// never guessed.
//
// Every process a test starts is killed by pid at the end. A new master is a
// child of the old one and outlives it: the test process is child subreaper
// (subreaper_scope), so those masters are reparented here, and `family`
// records each master and worker seen and reaps them.
//
// Figures (upgrade latency from `-s upgrade` to its exit, requests served
// under load) are reported with WARN; nothing asserts on timing.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/http_load.hpp"
#include "support/process.hpp"
#include "support/server.hpp"
#include "support/http_checks.hpp"
#include "support/notify_socket.hpp"
#include "support/upgrade.hpp"

#include <algorithm>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

using namespace pmtest;
using test_support::http_load;
using test_support::load_options;
using test_support::load_result;
using test_support::notify_socket;

namespace {

std::string describe(const run_result& r) {
  return "exit " + std::to_string(r.code()) + "\n--- stdout ---\n" + r.out + "--- stderr ---\n" +
         r.err;
}

// --- files ----------------------------------------------------------------------

// A copy of the http_server binary in `dir`, named http_server.
std::string copy_binary(const temp_dir& dir) {
  std::string to = dir.file("http_server");
  std::filesystem::copy_file(http_server, to, std::filesystem::copy_options::overwrite_existing);
  ::chmod(to.c_str(), 0755);
  return to;
}

// Replaces `path` on disk the way a package manager does: a new file renamed
// over it (cp onto a running binary fails with ETXTBSY).
void replace_file(const std::string& path, const std::string& from_file) {
  REQUIRE(::rename(from_file.c_str(), path.c_str()) == 0);
}

void replace_with_script(const std::string& path, const std::string& script) {
  std::string tmp = path + ".new";
  write_file(tmp, script);
  ::chmod(tmp.c_str(), 0755);
  replace_file(path, tmp);
}

void restore_binary(const std::string& path) {
  std::string tmp = path + ".new";
  std::filesystem::copy_file(http_server, tmp, std::filesystem::copy_options::overwrite_existing);
  ::chmod(tmp.c_str(), 0755);
  replace_file(path, tmp);
}

// argv[0] of a process, from /proc/<pid>/cmdline.
std::string argv0_of(pid_t pid) {
  std::string cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  return cmdline.substr(0, cmdline.find('\0'));
}

// --- what the master and -s upgrade say -------------------------------------------


// "upgrade: new master N is ready; send WINCH ...": the newest N.
pid_t manual_ready_new_master(const std::string& log) {
  static const std::regex re(R"(upgrade: new master (\d+) is ready; send WINCH)");
  return last_pid(log, re);
}

// The worker pid a body names ("hello from worker 0 generation 1 pid 4242").
pid_t body_pid(const std::string& body) {
  static const std::regex re(R"(pid (\d+))");
  std::smatch m;
  if (!std::regex_search(body, m, re)) return 0;
  return static_cast<pid_t>(std::stol(m[1]));
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::string join(const std::vector<double>& v) {
  std::string out;
  for (double d : v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%.1f", out.empty() ? "" : ", ", d);
    out += buf;
  }
  return out;
}


// --- sockets ------------------------------------------------------------------

// A TCP socket of the test's, bound (and listening, unless told not to) on
// HOST:0.
class test_socket {
 public:
  explicit test_socket(const char* host = "127.0.0.1", bool listening = true,
                       bool reuseport = false) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    int one = 1;
    if (reuseport) REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    REQUIRE(::inet_pton(AF_INET, host, &sa.sin_addr) == 1);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    if (listening) REQUIRE(::listen(fd_, 128) == 0);
    socklen_t len = sizeof sa;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
  }
  test_socket(const test_socket&) = delete;
  test_socket& operator=(const test_socket&) = delete;
  ~test_socket() { ::close(fd_); }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// An http_server fixture that talks to `sd` as its NOTIFY_SOCKET; WATCHDOG_USEC
// is `watchdog_usec` (empty: no watchdog, whatever the test's environment says).
server_config notified_config(const notify_socket& sd, unsigned workers = 2,
                              std::string watchdog_usec = "") {
  auto c = http_config(workers);
  c.env = {{"NOTIFY_SOCKET", sd.path()}, {"WATCHDOG_USEC", std::move(watchdog_usec)}};
  return c;
}

std::uint64_t monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1000ULL;
}

// --- running a program with a descriptor handed over --------------------------------

// run() with spawn_options of our own (fd 3, LISTEN_PID): to completion.
run_result run_with(const temp_dir& dir, const std::vector<std::string>& args, spawn_options opt,
                    milliseconds timeout = 10s) {
  static int counter = 0;
  ++counter;
  opt.stdout_path = dir.file("with" + std::to_string(counter) + ".out");
  opt.stderr_path = dir.file("with" + std::to_string(counter) + ".err");
  process p = process::spawn(http_server, args, opt);
  p.expect_any_exit();  // the test checks r.code()
  run_result r;
  wait_for(
      [&] {
        p.record_descendants();
        return p.exited();
      },
      timeout, 5ms);
  r.status = p.try_wait();
  p.kill_all();
  r.out = read_file(opt.stdout_path);
  r.err = read_file(opt.stderr_path);
  return r;
}

run_result upgrade_now(const server& srv, std::vector<std::string> extra = {},
                       milliseconds timeout = 30s) {
  std::vector<std::string> args = {"-s", "upgrade", "--pid-file", srv.pid_path()};
  args.insert(args.end(), extra.begin(), extra.end());
  return run(srv.dir(), http_server, args, timeout);
}

// --- the real binary, configured to rehearse failures ------------------------------

// An http_server fixture that reads <dir>/http.conf (ready, exit_at_start)
// at start and on HUP; a new master of an upgrade reads the file anew.
std::string conf_path(const server& srv) { return srv.dir().file("http.conf"); }
server_config conf_config(const server& srv, const std::string& text,
                          std::vector<std::string> extra = {}) {
  write_file(conf_path(srv), text);
  auto c = http_config(2, std::move(extra));
  c.extra.insert(c.extra.end(), {"--config", conf_path(srv)});
  return c;
}

// `-s upgrade` through the pid file, in the background.
process upgrade_in_background(const server& srv, const std::string& timeout_ms,
                              const std::string& name) {
  spawn_options o;
  o.stdout_path = srv.dir().file(name + ".out");
  o.stderr_path = srv.dir().file(name + ".err");
  return process::spawn(
      http_server, {"-s", "upgrade", "--pid-file", srv.pid_path(), "--upgrade-timeout", timeout_ms},
      o);
}

// Until master `pid` logs that its lifecycle runs.
bool master_running(const server& srv, pid_t pid) {
  return wait_for(
      [&] { return srv.log().find("master " + std::to_string(pid) + " started with") != std::string::npos; },
      10s);
}

// Every process of session `sid`, from /proc.
std::vector<pid_t> session_members(pid_t sid) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::string stat = read_file("/proc/" + std::string(e->d_name) + "/stat");
    auto paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    char state = 0;
    int ppid = 0, pgrp = 0, session = 0;
    if (std::sscanf(stat.c_str() + paren + 1, " %c %d %d %d", &state, &ppid, &pgrp, &session) == 4 &&
        session == sid && state != 'Z')
      out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

// Names as expected the lines of new master `nm` telling that its workers
// exited with code 3 (exit_at_start = 3: the crash loop a test provokes).
void expect_new_workers_exit_3(pid_t nm) {
  expect_log_pattern(std::to_string(nm) +
                     R"( master: worker \d+ \(slot \d+, generation \d+\) exited with code 3)");
}

// A master of http_server reading <dir>/http.conf, and the family that
// tracks every master and worker the test sees.
struct rig {
  subreaper_scope reaper;
  server srv{http_server, "procmodel-upgrade"};
  family fam{srv.master()};
  pid_t master = 0;

  explicit rig(const std::string& conf, std::vector<std::string> extra = {}) {
    PM_REQUIRE(srv, srv.start(conf_config(srv, conf, std::move(extra))));
    master = srv.master_pid();
    fam.master(master);
  }
  // The new master of the newest upgrade, once its lifecycle runs.
  pid_t new_master() {
    pid_t nm = 0;
    PM_REQUIRE(srv, wait_for([&] { return (nm = started_new_master(srv.log())) != 0; }, 10s));
    PM_REQUIRE(srv, master_running(srv, nm));
    return nm;
  }
  // QUIT to the first master: it exits with 0.
  void quit_master() {
    srv.master().signal(SIGQUIT);
    auto st = srv.master().wait_exit(15s);
    REQUIRE(st);
    CHECK(exit_code_of(*st) == 0);
  }
};

// SIGKILLs `pids` and whatever runs under them when it goes out of scope.
struct kill_on_exit {
  std::vector<pid_t> pids;
  ~kill_on_exit() {
    for (pid_t p : pids) {
      for (pid_t c : descendants_of(p)) ::kill(c, SIGKILL);
      ::kill(p, SIGKILL);
    }
    subreaper_scope::reap(pids);
  }
};

}  // namespace

// -----------------------------------------------------------------------------------

PM_TEST_CASE("8 automatic upgrades under keep-alive load from a relative argv0 drop nothing",
          "[upgrade][auto]") {
  subreaper_scope reaper;
  server srv("./http_server", "procmodel-upgrade");
  copy_binary(srv.dir());
  auto c = http_config();
  c.cwd = srv.dir().path();  // started as ./http_server from its own directory
  PM_REQUIRE(srv, srv.start(c));
  family fam(srv.master());
  pid_t current = srv.master_pid();
  fam.master(current);
  CHECK(argv0_of(current) == "./http_server");
  const std::string absolute = "started from " + srv.dir().file("http_server") + "\n";
  PM_REQUIRE(srv, fam.workers_of(current).size() == 2);
  int first_fds = count_open_fds(current);

  http_load load(srv.port(), {.connections = 50});
  load.start();
  PM_REQUIRE(srv, wait_for([&] { return load.snapshot().ok >= 500; }, 10s));

  std::vector<double> latencies;
  for (int i = 0; i < 8; ++i) {
    INFO("upgrade #" << i + 1 << " of master " << current);
    fam.note_tree(current);
    auto before = load.snapshot().ok;
    auto t0 = steady::now();
    auto r = upgrade_now(srv, {"--upgrade-timeout", "10000"});
    latencies.push_back(ms_since(t0));
    INFO(describe(r) << "\n" << srv.describe());
    REQUIRE(r.code() == 0);
    auto ok = parse_upgrade_ok(r.out);
    REQUIRE(ok);
    auto [next, old] = *ok;
    CHECK(old == current);
    CHECK(next != current);
    fam.master(next);
    // The new master is up when -s upgrade says so: the pid file names it.
    CHECK(pid_in(srv.pid_path()) == next);
    CHECK(fam.workers_of(next).size() == 2);
    // The old master quits gracefully, its workers first; exit code 0.
    REQUIRE(fam.wait_gone(current, 15s));
    auto st = fam.status_of(current);
    REQUIRE(st);
    CHECK(exit_code_of(*st) == 0);
    CHECK(!file_exists(srv.pid_path() + ".oldbin"));
    current = next;
    // The new generation serves the load before the next upgrade.
    CHECK(wait_for([&] { return load.snapshot().ok >= before + 300; }, 10s));
  }

  auto r = load.finish();
  fam.note_tree(current);
  WARN("8 automatic upgrades under keep-alive load (50 connections, 2 workers): "
       << r.ok << " requests answered, " << r.failed << " failed, " << r.non_2xx
       << " non-2xx; -s upgrade took " << join(latencies) << " ms (median " << median(latencies)
       << " ms)");
  int last_fds = count_open_fds(current);
  WARN("descriptors of the first master: " << first_fds << "; of the 9th: " << last_fds);
  INFO(describe(r) << "\n" << srv.describe());
  CHECK(losses(r) == "");  // not even refused: the listeners pass from master to master
  CHECK(r.ok > 500);

  // Only the newest master and its workers remain; it serves and is named.
  auto newest_workers = fam.workers_of(current);
  CHECK(newest_workers.size() == 2);
  for (pid_t p : fam.all()) {
    bool newest = p == current ||
                  std::find(newest_workers.begin(), newest_workers.end(), p) != newest_workers.end();
    INFO("pid " << p);
    CHECK(fam.running(p) == newest);
  }
  CHECK(pid_in(srv.pid_path()) == current);
  CHECK(!file_exists(srv.pid_path() + ".oldbin"));
  // Each new master was started from the absolute path, not from ./http_server.
  CHECK(count_of(srv.log(), absolute) == 8);
  auto body = http_get(srv.port());
  REQUIRE(body);
  pid_t served_by = body_pid(*body);
  CHECK(std::find(newest_workers.begin(), newest_workers.end(), served_by) != newest_workers.end());
  // Eight hand-overs leave the newest master with what the first one had.
  INFO(describe_fds(current));
  CHECK(last_fds == first_fds);

  // It stops like any master.
  ::kill(current, SIGQUIT);
  REQUIRE(fam.wait_gone(current, 15s));
  auto st = fam.status_of(current);
  REQUIRE(st);
  CHECK(exit_code_of(*st) == 0);
  CHECK(!file_exists(srv.pid_path()));
}

PM_TEST_CASE("automatic upgrades with per-worker reuseport sockets hand the very sockets over under load",
             "[upgrade][auto][reuseport]") {
  subreaper_scope reaper;
  server srv("./http_server", "procmodel-upgrade");
  copy_binary(srv.dir());
  auto c = http_config(2, {"--reuseport"});
  c.cwd = srv.dir().path();
  PM_REQUIRE(srv, srv.start(c));
  family fam(srv.master());
  pid_t current = srv.master_pid();
  fam.master(current);
  // One SO_REUSEPORT socket per slot; an upgrade passes them, never reopens.
  const auto sockets = listening_inodes(srv.port());
  PM_REQUIRE(srv, sockets.size() == 2);

  http_load load(srv.port(), {.connections = 20});
  load.start();
  PM_REQUIRE(srv, wait_for([&] { return load.snapshot().ok >= 300; }, 10s));
  for (int i = 0; i < 2; ++i) {
    INFO("upgrade #" << i + 1 << " of master " << current);
    const auto before = load.snapshot().ok;
    auto r = upgrade_now(srv, {"--upgrade-timeout", "10000"});
    INFO(describe(r) << "\n" << srv.describe());
    REQUIRE(r.code() == 0);
    auto ok = parse_upgrade_ok(r.out);
    REQUIRE(ok);
    fam.master(ok->first);
    REQUIRE(fam.wait_gone(current, 15s));
    current = ok->first;
    CHECK(listening_inodes(srv.port()) == sockets);
    // Each new worker holds its own slot's socket.
    auto workers = fam.workers_of(current);
    CHECK(workers.size() == 2);
    std::set<std::string> held;
    for (pid_t w : workers)
      for (const auto& f : open_fds(w))
        if (f.is_socket() && sockets.count(f.target.substr(8, f.target.size() - 9)))
          held.insert(f.target);
    CHECK(held.size() == 2);
    CHECK(wait_for([&] { return load.snapshot().ok >= before + 200; }, 10s));
  }
  auto r = load.finish();
  INFO(describe(r));
  CHECK(losses(r) == "");
  ::kill(current, SIGQUIT);
  CHECK(fam.wait_gone(current, 15s));
}

PM_TEST_CASE("manual upgrade: USR2 then WINCH and QUIT the old master under light load",
          "[upgrade][manual]") {
  subreaper_scope reaper;
  server srv(http_server, "procmodel-upgrade");
  PM_REQUIRE(srv, srv.start(http_config()));
  family fam(srv.master());
  pid_t old_master = srv.master_pid();
  fam.master(old_master);
  auto old_workers = fam.workers_of(old_master);
  PM_REQUIRE(srv, old_workers.size() == 2);

  http_load load(srv.port(), {.connections = 4});
  load.start();
  PM_REQUIRE(srv, wait_for([&] { return load.snapshot().ok >= 50; }, 10s));

  srv.master().signal(SIGUSR2);
  pid_t new_master = 0;
  PM_REQUIRE(srv, wait_for([&] { return (new_master = manual_ready_new_master(srv.log())) != 0; },
                           10s));
  fam.master(new_master);
  INFO("old master " << old_master << ", new master " << new_master);
  PM_CHECK(srv, pid_in(srv.pid_path()) == new_master);
  PM_CHECK(srv, pid_in(srv.pid_path() + ".oldbin") == old_master);
  std::vector<pid_t> new_workers;
  PM_REQUIRE(srv, wait_for([&] { return (new_workers = fam.workers_of(new_master)).size() == 2; },
                           10s));

  // Both masters' workers accept on the shared socket.
  std::set<pid_t> answered;
  auto any_of = [&](const std::vector<pid_t>& pids) {
    return std::any_of(pids.begin(), pids.end(), [&](pid_t p) { return answered.count(p) > 0; });
  };
  bool both = wait_for(
      [&] {
        if (auto b = http_get(srv.port())) answered.insert(body_pid(*b));
        return any_of(old_workers) && any_of(new_workers);
      },
      10s, 1ms);
  PM_CHECK(srv, both);

  // WINCH: the old workers leave, the old master stays (and holds the sockets).
  srv.master().signal(SIGWINCH);
  for (pid_t w : old_workers) PM_CHECK(srv, fam.wait_gone(w, 15s));
  PM_CHECK(srv, fam.running(old_master));
  PM_CHECK(srv, pid_in(srv.pid_path() + ".oldbin") == old_master);
  auto body = http_get(srv.port());
  PM_REQUIRE(srv, body.has_value());
  PM_CHECK(srv, std::count(new_workers.begin(), new_workers.end(), body_pid(*body)) == 1);

  // QUIT: the old master leaves; the new one is the master now.
  srv.master().signal(SIGQUIT);
  auto st = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, st.has_value());
  CHECK(exit_code_of(*st) == 0);
  PM_CHECK(srv, !file_exists(srv.pid_path() + ".oldbin"));
  PM_CHECK(srv, pid_in(srv.pid_path()) == new_master);
  PM_CHECK(srv, fam.running(new_master));
  body = http_get(srv.port());
  PM_REQUIRE(srv, body.has_value());
  PM_CHECK(srv, std::count(new_workers.begin(), new_workers.end(), body_pid(*body)) == 1);
  // The control socket answers for the new master.
  auto status = run(srv.dir(), http_server, {"-s", "status", "--pid-file", srv.pid_path()});
  PM_CHECK(srv, status.code() == 0);
  PM_CHECK(srv, status.out.find(std::to_string(new_master)) != std::string::npos);

  auto r = load.finish();
  INFO(describe(r));
  WARN("manual upgrade (USR2, WINCH, QUIT) under light load: " << r.ok << " requests, "
                                                               << r.failed << " failed");
  CHECK(losses(r) == "");

  ::kill(new_master, SIGQUIT);
  PM_REQUIRE(srv, fam.wait_gone(new_master, 15s));
  auto nst = fam.status_of(new_master);
  REQUIRE(nst);
  CHECK(exit_code_of(*nst) == 0);
  CHECK(!file_exists(srv.pid_path()));
}

PM_TEST_CASE("manual upgrade rolled back: WINCH then HUP the old master and QUIT the new one",
          "[upgrade][manual]") {
  // The rollback under test: the old master says so at error level.
  expect_log_line("upgrade rolled back: the new master ");
  subreaper_scope reaper;
  server srv(http_server, "procmodel-upgrade");
  notify_socket sd(srv.dir().file("notify.sock"));
  auto c = notified_config(sd, 2);
  PM_REQUIRE(srv, srv.start(c));
  family fam(srv.master());
  pid_t old_master = srv.master_pid();
  fam.master(old_master);
  auto old_workers = fam.workers_of(old_master);

  http_load load(srv.port(), {.connections = 4});
  load.start();
  PM_REQUIRE(srv, wait_for([&] { return load.snapshot().ok >= 50; }, 10s));

  srv.master().signal(SIGUSR2);
  pid_t new_master = 0;
  PM_REQUIRE(srv, wait_for([&] { return (new_master = manual_ready_new_master(srv.log())) != 0; },
                           10s));
  fam.master(new_master);
  INFO("old master " << old_master << ", new master " << new_master);
  std::vector<pid_t> new_workers;
  PM_REQUIRE(srv, wait_for([&] { return (new_workers = fam.workers_of(new_master)).size() == 2; },
                           10s));

  srv.master().signal(SIGWINCH);
  for (pid_t w : old_workers) PM_CHECK(srv, fam.wait_gone(w, 15s));

  // HUP brings the old master's workers back.
  srv.master().signal(SIGHUP);
  std::vector<pid_t> back;
  PM_REQUIRE(srv, wait_for(
                      [&] {
                        back = fam.workers_of(old_master);
                        return back.size() == 2 &&
                               std::all_of(back.begin(), back.end(),
                                           [&](pid_t w) { return srv.is_ready(w); });
                      },
                      10s));

  // QUIT to the new master: the old one takes its pid file back and serves alone.
  ::kill(new_master, SIGQUIT);
  PM_REQUIRE(srv, fam.wait_gone(new_master, 15s));
  for (pid_t w : new_workers) PM_CHECK(srv, fam.wait_gone(w, 15s));
  PM_CHECK(srv, wait_for([&] { return pid_in(srv.pid_path()) == old_master; }, 5s));
  PM_CHECK(srv, !file_exists(srv.pid_path() + ".oldbin"));
  PM_CHECK(srv, wait_for([&] { return srv.log().find("upgrade rolled back") != std::string::npos; },
                         5s));
  PM_CHECK(srv, fam.running(old_master));
  auto body = http_get(srv.port());
  PM_REQUIRE(srv, body.has_value());
  PM_CHECK(srv, std::count(back.begin(), back.end(), body_pid(*body)) == 1);
  // Its control socket is back too.
  auto status = run(srv.dir(), http_server, {"-s", "status", "--pid-file", srv.pid_path()});
  PM_CHECK(srv, status.code() == 0);
  PM_CHECK(srv, status.out.find(std::to_string(old_master)) != std::string::npos);

  auto r = load.finish();
  INFO(describe(r));
  WARN("manual upgrade rolled back (USR2, WINCH, HUP, QUIT new) under light load: "
       << r.ok << " requests, " << r.failed << " failed");
  CHECK(losses(r) == "");

  srv.master().signal(SIGQUIT);
  auto st = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, st.has_value());
  CHECK(exit_code_of(*st) == 0);
  CHECK(!file_exists(srv.pid_path()));

  // systemd saw one service all along: the new master, rolled back, did not
  // say STOPPING=1 (with NotifyAccess=all that stops the service) and named
  // no main pid; the old master stopped only at the end.
  sd.drain(200ms);
  INFO(sd.describe());
  std::vector<std::string> from_old, from_new;
  for (const auto& n : sd.seen()) {
    if (n.sender == old_master) from_old.push_back(n.text);
    if (n.sender == new_master) from_new.push_back(n.text);
  }
  CHECK(std::count(from_new.begin(), from_new.end(), "STOPPING=1") == 0);
  CHECK(std::none_of(from_new.begin(), from_new.end(),
                     [](const std::string& t) { return t.rfind("MAINPID=", 0) == 0; }));
  CHECK(std::none_of(from_old.begin(), from_old.end(),
                     [](const std::string& t) { return t.rfind("MAINPID=", 0) == 0; }));
  REQUIRE(!from_old.empty());
  CHECK(from_old.back() == "STOPPING=1");
  CHECK(std::count(from_old.begin(), from_old.end(), "STOPPING=1") == 1);
}

PM_TEST_CASE("an upgrade to a binary that exits or never gets ready fails while the old master serves",
          "[upgrade][auto][rollback]") {
  expect_log_line("upgrade failed: the new master ");  // the failures under test
  subreaper_scope reaper;
  server srv("./http_server", "procmodel-upgrade");
  std::string bin = copy_binary(srv.dir());
  auto c = conf_config(srv, "ready = yes\n");
  c.cwd = srv.dir().path();
  PM_REQUIRE(srv, srv.start(c));
  family fam(srv.master());
  pid_t master = srv.master_pid();
  fam.master(master);

  http_load load(srv.port(), {.connections = 10});
  load.start();
  PM_REQUIRE(srv, wait_for([&] { return load.snapshot().ok >= 100; }, 10s));

  // 1. A binary that exits at once.
  replace_with_script(bin, "#!/bin/sh\nexit 3\n");
  auto before = load.snapshot().ok;
  auto r = upgrade_now(srv, {"--upgrade-timeout", "5000"});
  {
    INFO(describe(r) << "\n" << srv.describe());
    CHECK(r.code() == 1);
    CHECK(r.err.find("exited with code 3") != std::string::npos);
    CHECK(pid_in(srv.pid_path()) == master);
    CHECK(!file_exists(srv.pid_path() + ".oldbin"));
    CHECK(srv.log().find("upgrade failed") != std::string::npos);
    CHECK(fam.running(master));
    CHECK(wait_for([&] { return load.snapshot().ok >= before + 100; }, 10s));
  }

  // 2. The real binary, whose workers never report ready: stopped with
  // SIGQUIT at the deadline (it has written the pid file and taken the
  // control socket by then; both come back).
  restore_binary(bin);
  write_file(conf_path(srv), "ready = no\n");
  before = load.snapshot().ok;
  auto t0 = steady::now();
  r = upgrade_now(srv, {"--upgrade-timeout", "1000"});
  double waited = ms_since(t0);
  pid_t unready = started_new_master(srv.log());
  {
    INFO(describe(r) << "\n" << srv.describe());
    CHECK(r.code() == 1);
    CHECK(r.err.find("not ready within 1000 ms") != std::string::npos);
    CHECK(waited >= 1000);
    REQUIRE(unready != 0);
    fam.note(unready);
    // SIGQUIT ended it and the master reaped it.
    CHECK(wait_for([&] { return !is_alive(unready); }, 10s));
    CHECK(wait_for([&] { return new_master_end(srv, unready) == "exited with code 0"; }, 5s));
    CHECK(pid_in(srv.pid_path()) == master);
    CHECK(!file_exists(srv.pid_path() + ".oldbin"));
    CHECK(fam.running(master));
    CHECK(wait_for([&] { return load.snapshot().ok >= before + 100; }, 10s));
  }

  // 3. The failures left nothing behind: the real binary upgrades at once.
  write_file(conf_path(srv), "ready = yes\n");
  r = upgrade_now(srv, {"--upgrade-timeout", "10000"});
  pid_t next = 0;
  {
    INFO(describe(r) << "\n" << srv.describe());
    CHECK(r.code() == 0);
    auto ok = parse_upgrade_ok(r.out);
    REQUIRE(ok);
    next = ok->first;
    fam.master(next);
    CHECK(srv.master().wait_exit(15s).has_value());
    CHECK(pid_in(srv.pid_path()) == next);
  }

  auto res = load.finish();
  INFO(describe(res));
  WARN("failed upgrades (exit 3, never ready) then a good one, under load: "
       << res.ok << " requests, " << res.failed << " failed");
  CHECK(losses(res) == "");

  ::kill(next, SIGQUIT);
  CHECK(fam.wait_gone(next, 15s));
}

PM_TEST_CASE("a manual upgrade whose new master never gets ready is stopped after the ready timeout",
          "[upgrade][manual][rollback]") {
  expect_log_line("upgrade failed: the new master ");  // the failure under test
  expect_log_line("upgrade rolled back: the new master ");  // the second new master, QUIT by the test
  rig rg("ready = yes\n", {"--ready-timeout", "1000"});
  auto& srv = rg.srv;
  auto& fam = rg.fam;
  pid_t master = rg.master;

  // The real binary, whose workers never report ready.
  write_file(conf_path(srv), "ready = no\n");
  srv.master().signal(SIGUSR2);
  pid_t unready = rg.new_master();
  fam.note(unready);
  PM_CHECK(srv, pid_in(srv.pid_path() + ".oldbin") == master);
  // The design: a successor (new workers, or a new master after USR2) not
  // ready within ready_timeout is stopped and the old one keeps serving.
  PM_REQUIRE(srv, wait_for([&] { return !is_alive(unready); }, 10s));
  PM_CHECK(srv, wait_for([&] { return new_master_end(srv, unready) == "exited with code 0"; }, 5s));
  PM_CHECK(srv, wait_for([&] { return pid_in(srv.pid_path()) == master; }, 5s));
  PM_CHECK(srv, !file_exists(srv.pid_path() + ".oldbin"));
  PM_CHECK(srv, srv.log().find("was not ready within 1000 ms") != std::string::npos);
  PM_CHECK(srv, http_get(srv.port()).has_value());

  // And the next USR2 is not refused as "under way".
  write_file(conf_path(srv), "ready = yes\n");
  srv.master().signal(SIGUSR2);
  pid_t next = 0;
  PM_CHECK(srv, wait_for([&] { return (next = manual_ready_new_master(srv.log())) != 0; }, 10s));
  if (next) {
    fam.master(next);
    ::kill(next, SIGQUIT);
    PM_CHECK(srv, new_master_left_cleanly(srv, fam, next));
  }
  rg.quit_master();
}

PM_TEST_CASE("a new master that ignores SIGQUIT at the upgrade deadline is killed and the next upgrade works",
          "[upgrade][auto][rollback]") {
  expect_log_line("upgrade failed: the new master ");  // the failure under test
  subreaper_scope reaper;
  server srv("./http_server", "procmodel-upgrade");
  std::string bin = copy_binary(srv.dir());
  auto c = http_config();
  c.cwd = srv.dir().path();
  c.extra = {"--shutdown-timeout", "1000", "--terminate-timeout", "1000"};
  PM_REQUIRE(srv, srv.start(c));
  family fam(srv.master());
  pid_t master = srv.master_pid();
  fam.master(master);

  // An ignored signal stays ignored across exec: sleep never sees the QUIT.
  replace_with_script(bin, "#!/bin/sh\ntrap '' QUIT\nexec sleep 1000\n");
  auto r = upgrade_now(srv, {"--upgrade-timeout", "1000"});
  pid_t sleeper = started_new_master(srv.log());
  {
    INFO(describe(r) << "\n" << srv.describe());
    CHECK(r.code() == 1);
    CHECK(r.err.find("not ready within 1000 ms") != std::string::npos);
    REQUIRE(sleeper != 0);
  }
  fam.note(sleeper);
  // QUIT did nothing; the master must not wait for it forever (one upgrade
  // at a time: it would refuse every upgrade from now on).
  bool gone = wait_for([&] { return !is_alive(sleeper); }, 10s);
  PM_CHECK(srv, gone);
  restore_binary(bin);
  auto next = upgrade_now(srv, {"--upgrade-timeout", "10000"});
  INFO(describe(next) << "\n" << srv.describe());
  CHECK(next.code() == 0);
  if (auto ok = parse_upgrade_ok(next.out)) {
    fam.master(ok->first);
    CHECK(srv.master().wait_exit(15s).has_value());
    ::kill(ok->first, SIGQUIT);
    CHECK(fam.wait_gone(ok->first, 15s));
  }
}

PM_TEST_CASE("one upgrade at a time: a second -s upgrade or USR2 is refused while one is under way",
          "[upgrade][auto]") {
  expect_log_line("upgrade failed: the new master ");  // the first upgrade's, on its deadline
  rig rg("ready = yes\n");
  auto& srv = rg.srv;
  auto& fam = rg.fam;
  pid_t master = rg.master;

  // The real binary, whose workers never report ready.
  write_file(conf_path(srv), "ready = no\n");
  process first = upgrade_in_background(srv, "2000", "first");
  first.expect_exit(1);  // it fails on its own deadline (checked below)
  pid_t unready = rg.new_master();
  fam.master(unready);

  // The pid file and the control socket are the new master's now: its table
  // shows the old master and says which one the pid file names.
  auto status = run(srv.dir(), http_server, {"-s", "status", "--pid-file", srv.pid_path()});
  {
    INFO(describe(status));
    CHECK(status.code() == 0);
    CHECK(std::regex_search(status.out, std::regex("\\b" + std::to_string(unready) + R"(\s+master\s+-\s+2\s+running)")));
    CHECK(std::regex_search(status.out, std::regex("\\b" + std::to_string(master) + R"(\s+old master\s)")));
    CHECK(status.out.find("names " + std::to_string(unready)) != std::string::npos);
  }
  // A second -s upgrade reaches the new master, which refuses while its parent lives.
  auto second = upgrade_now(srv);
  {
    INFO(describe(second) << "\n" << srv.describe());
    CHECK(second.code() == 1);
    CHECK(second.err.find("parent master " + std::to_string(master) + " still runs") != std::string::npos);
  }
  // USR2 to the old master: another upgrade is under way.
  srv.master().signal(SIGUSR2);
  PM_CHECK(srv, wait_for([&] { return srv.log().find("upgrade refused: another upgrade is under way (new master " + std::to_string(unready)) != std::string::npos; }, 5s));
  PM_CHECK(srv, count_of(srv.log(), "started from") == 1);

  // The first one fails on its own deadline, and says which.
  auto st = first.wait_exit(15s);
  REQUIRE(st);
  std::string first_err = read_file(srv.dir().file("first.err"));
  INFO(first_err << "\n" << srv.describe());
  CHECK(exit_code_of(*st) == 1);
  CHECK(first_err.find("not ready within 2000 ms") != std::string::npos);
  CHECK(pid_in(srv.pid_path()) == master);
  CHECK(!file_exists(srv.pid_path() + ".oldbin"));
  CHECK(new_master_left_cleanly(srv, fam, unready, 10s));
  CHECK(http_get(srv.port()).has_value());
  rg.quit_master();
}

PM_TEST_CASE("NOTIFY_SOCKET gets READY then RELOADING and READY around HUP then STOPPING",
          "[upgrade][systemd]") {
  server srv(http_server, "procmodel-upgrade");
  notify_socket sd(srv.dir().file("notify.sock"));
  auto c = notified_config(sd, 2);
  PM_REQUIRE(srv, srv.start(c));
  pid_t master = srv.master_pid();

  PM_CHECK(srv, sd.until("READY=1", 5s));
  std::uint64_t t_before = monotonic_usec();
  srv.master().signal(SIGHUP);
  PM_CHECK(srv, sd.until("READY=1", 10s));
  std::uint64_t t_after = monotonic_usec();
  srv.master().signal(SIGQUIT);
  PM_CHECK(srv, sd.until("STOPPING=1", 10s));
  auto st = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, st.has_value());
  sd.drain(200ms);

  INFO(sd.describe() << srv.describe());
  const auto& m = sd.seen();
  REQUIRE(m.size() == 4);
  CHECK(m[0].text == "READY=1");
  std::smatch reloading;
  REQUIRE(std::regex_match(m[1].text, reloading, std::regex(R"(RELOADING=1\nMONOTONIC_USEC=(\d+))")));
  std::uint64_t usec = std::stoull(reloading[1]);
  CHECK(usec >= t_before);
  CHECK(usec <= t_after);
  CHECK(m[2].text == "READY=1");
  CHECK(m[3].text == "STOPPING=1");
  for (const auto& n : m) CHECK(n.sender == master);
}

PM_TEST_CASE("WATCHDOG_USEC makes the master send WATCHDOG=1 again and again", "[upgrade][systemd]") {
  server srv(http_server, "procmodel-upgrade");
  notify_socket sd(srv.dir().file("notify.sock"));
  auto c = notified_config(sd, 1, "200000");
  PM_REQUIRE(srv, srv.start(c));
  // systemd kills a service silent for WatchdogSec (200 ms here): every gap
  // between pings must stay under it (sd_watchdog_enabled(3) suggests half).
  sd.until("WATCHDOG=1", 2s);
  auto t0 = steady::now();
  auto last = t0;
  double widest = 0;
  int pings = 0;
  while (ms_since(t0) < 2000)
    if (auto n = sd.next(300ms); n && n->text == "WATCHDOG=1") {
      ++pings;
      CHECK(n->sender == srv.master_pid());
      widest = std::max(widest, ms_since(last));
      last = steady::now();
    }
  widest = std::max(widest, ms_since(last));
  WARN("WATCHDOG_USEC=200000: " << pings << " WATCHDOG=1 in 2 s, widest gap " << widest << " ms");
  INFO(sd.describe());
  CHECK(widest < 200);
  CHECK(pings >= 10);  // 2 s / 200 ms, at the very least
  CHECK(pings <= 60);  // and not a flood
  srv.master().signal(SIGQUIT);
  CHECK(srv.master().wait_exit(15s).has_value());
}

PM_TEST_CASE("after an automatic upgrade the new master keeps the systemd watchdog fed",
          "[upgrade][systemd]") {
  subreaper_scope reaper;
  temp_dir dir("procmodel-upgrade");
  notify_socket sd(dir.file("notify.sock"));
  std::string pid_path = dir.file("master.pid");
  spawn_options opt;
  opt.stdout_path = dir.file("master.log");
  // As systemd starts a service with WatchdogSec=: WATCHDOG_PID is the main pid.
  opt.env = {{"NOTIFY_SOCKET", sd.path()}, {"WATCHDOG_USEC", "200000"}};
  opt.own_pid_env = {"WATCHDOG_PID"};
  process master = process::spawn(
      http_server, {"--listen", "127.0.0.1:0", "--workers", "1", "--pid-file", pid_path}, opt);
  family fam(master);
  fam.master(master.pid());
  auto log = [&] { return read_file(opt.stdout_path); };
  auto ping_from = [&](pid_t p, milliseconds within) {
    auto deadline = steady::now() + within;
    while (steady::now() < deadline)
      if (auto n = sd.next(50ms); n && n->text == "WATCHDOG=1" && n->sender == p) return true;
    return false;
  };
  INFO(log());
  REQUIRE(ping_from(master.pid(), 5s));

  auto r = run(dir, http_server, {"-s", "upgrade", "--pid-file", pid_path, "--upgrade-timeout",
                                  "10000"});
  INFO(describe(r));
  REQUIRE(r.code() == 0);
  auto ok = parse_upgrade_ok(r.out);
  REQUIRE(ok);
  pid_t next = ok->first;
  fam.master(next);
  REQUIRE(master.wait_exit(15s).has_value());
  // systemd now watches the new main pid: it must ping (WATCHDOG_PID names
  // the old master in the environment it inherited).
  bool fed = ping_from(next, 2s);
  INFO(sd.describe() << log());
  CHECK(fed);
  ::kill(next, SIGQUIT);
  CHECK(fam.wait_gone(next, 15s));
}

PM_TEST_CASE("after an automatic upgrade the old master names the new one with MAINPID",
          "[upgrade][systemd]") {
  subreaper_scope reaper;
  server srv(http_server, "procmodel-upgrade");
  notify_socket sd(srv.dir().file("notify.sock"));
  auto c = notified_config(sd, 2);
  PM_REQUIRE(srv, srv.start(c));
  family fam(srv.master());
  pid_t old_master = srv.master_pid();
  fam.master(old_master);
  PM_CHECK(srv, sd.until("READY=1", 5s));

  auto r = upgrade_now(srv, {"--upgrade-timeout", "10000"});
  INFO(describe(r));
  REQUIRE(r.code() == 0);
  auto ok = parse_upgrade_ok(r.out);
  REQUIRE(ok);
  pid_t new_master = ok->first;
  fam.master(new_master);
  PM_CHECK(srv, sd.until("MAINPID=" + std::to_string(new_master), 10s));
  REQUIRE(srv.master().wait_exit(15s).has_value());
  sd.drain(300ms);

  INFO(sd.describe() << srv.describe());
  std::size_t mainpid_at = sd.seen().size();
  for (std::size_t i = 0; i < sd.seen().size(); ++i) {
    const auto& n = sd.seen()[i];
    if (n.text == "MAINPID=" + std::to_string(new_master) && mainpid_at == sd.seen().size()) {
      mainpid_at = i;
      CHECK(n.sender == old_master);
    }
  }
  REQUIRE(mainpid_at < sd.seen().size());
  // The service does not stop: neither master says STOPPING=1 (with
  // NotifyAccess=all systemd would stop the service and kill the new master).
  for (const auto& n : sd.seen()) CHECK(n.text != "STOPPING=1");

  ::kill(new_master, SIGQUIT);
  CHECK(sd.until("STOPPING=1", 10s));
  CHECK(fam.wait_gone(new_master, 15s));
}

PM_TEST_CASE("after a manual upgrade the old master names the new one with MAINPID and not STOPPING",
          "[upgrade][systemd][manual]") {
  subreaper_scope reaper;
  server srv(http_server, "procmodel-upgrade");
  notify_socket sd(srv.dir().file("notify.sock"));
  auto c = notified_config(sd, 2);
  PM_REQUIRE(srv, srv.start(c));
  family fam(srv.master());
  pid_t old_master = srv.master_pid();
  fam.master(old_master);
  PM_CHECK(srv, sd.until("READY=1", 5s));

  srv.master().signal(SIGUSR2);
  pid_t new_master = 0;
  PM_REQUIRE(srv, wait_for([&] { return (new_master = manual_ready_new_master(srv.log())) != 0; },
                           10s));
  fam.master(new_master);
  srv.master().signal(SIGWINCH);
  srv.master().signal(SIGQUIT);
  REQUIRE(srv.master().wait_exit(15s).has_value());
  sd.drain(300ms);
  INFO(sd.describe() << srv.describe());
  // systemd's main pid moves to the new master; the old one's quitting is
  // not the service stopping (STOPPING=1 from the main pid would make
  // systemd stop the service and kill the new master with it).
  bool named = false;
  for (const auto& n : sd.seen()) {
    if (n.sender == old_master && n.text == "STOPPING=1" && !named)
      FAIL_CHECK("the old master said STOPPING=1 before it named its successor");
    if (n.sender == old_master && n.text == "MAINPID=" + std::to_string(new_master)) named = true;
  }
  CHECK(named);
  CHECK(http_get(srv.port()).has_value());
  ::kill(new_master, SIGQUIT);
  CHECK(fam.wait_gone(new_master, 15s));
}

PM_TEST_CASE("socket activation: the listener on fd 3 is served and --listen is not bound",
          "[upgrade][systemd][activation]") {
  subreaper_scope reaper;
  temp_dir dir("procmodel-upgrade");
  test_socket activated;  // what systemd would have bound
  test_socket taken;      // --listen names this port: binding it would fail
  std::string pid_path = dir.file("master.pid");
  spawn_options opt;
  opt.stdout_path = dir.file("master.log");
  opt.fd3 = activated.fd();
  opt.listen_pid_self = true;
  opt.env = {{"LISTEN_FDS", "1"}};
  process master = process::spawn(
      http_server,
      {"--listen", "127.0.0.1:" + std::to_string(taken.port()), "--workers", "2", "--pid-file",
       pid_path, "--log-level", "debug"},
      opt);
  family fam(master);
  fam.master(master.pid());
  auto log = [&] { return read_file(opt.stdout_path); };
  INFO("activated port " << activated.port() << ", --listen port " << taken.port());
  bool served = wait_for([&] { return http_get(activated.port()).has_value() || master.exited(); },
                         10s, 20ms) &&
                !master.exited();
  INFO(log());
  REQUIRE(served);
  CHECK(log().find("(socket activation)") != std::string::npos);
  CHECK(parse_port(log()) == activated.port());
  CHECK(log().find("cannot listen") == std::string::npos);
  CHECK(fam.running(master.pid()));
  // The master holds the very socket it was given (same inode), nothing on --listen's port
  // but ours.
  CHECK(listening_inodes(activated.port()).size() == 1);
  CHECK(listening_inodes(taken.port()).size() == 1);

  SECTION("and it upgrades: the new master takes the activated socket over") {
    run_result r = run(dir, http_server, {"-s", "upgrade", "--pid-file", pid_path,
                                          "--upgrade-timeout", "10000"});
    INFO(describe(r) << "\n" << log());
    CHECK(r.code() == 0);
    if (auto ok = parse_upgrade_ok(r.out)) {
      fam.master(ok->first);
      CHECK(master.wait_exit(15s).has_value());
      CHECK(http_get(activated.port()).has_value());
      ::kill(ok->first, SIGQUIT);
      CHECK(fam.wait_gone(ok->first, 15s));
    }
  }
  SECTION("and it stops") {
    master.signal(SIGQUIT);
    auto st = master.wait_exit(15s);
    REQUIRE(st);
    CHECK(exit_code_of(*st) == 0);
  }
}

PM_TEST_CASE("socket activation: bad LISTEN_FDS or fd 3 fail clearly and LISTEN_PID of another is ignored",
          "[upgrade][systemd][activation]") {
  // The refusals under test.
  expect_log_line("master: LISTEN_FDS='abc' is not usable");
  expect_log_line("master: LISTEN_FDS: descriptor 3 is not a socket");
  temp_dir dir("procmodel-upgrade");
  test_socket activated;
  const std::vector<std::string> args = {"--listen", "127.0.0.1:0", "--workers", "1"};

  spawn_options garbage;
  garbage.fd3 = activated.fd();
  garbage.listen_pid_self = true;
  garbage.env = {{"LISTEN_FDS", "abc"}};
  auto r = run_with(dir, args, garbage);
  {
    INFO(describe(r));
    CHECK(r.code() != 0);
    CHECK(r.code() != -1000);  // it exited by itself
    CHECK((r.out + r.err).find("LISTEN_FDS") != std::string::npos);
  }

  std::string plain = dir.file("plain.txt");
  write_file(plain, "not a socket\n");
  int file_fd = ::open(plain.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(file_fd >= 0);
  spawn_options not_socket;
  not_socket.fd3 = file_fd;
  not_socket.listen_pid_self = true;
  not_socket.env = {{"LISTEN_FDS", "1"}};
  r = run_with(dir, args, not_socket);
  ::close(file_fd);
  {
    INFO(describe(r));
    CHECK(r.code() != 0);
    CHECK(r.code() != -1000);
    CHECK((r.out + r.err).find("LISTEN_FDS") != std::string::npos);
    CHECK((r.out + r.err).find("not a socket") != std::string::npos);
  }

  // Meant for another process (pid 1): ignored, --listen is bound as usual.
  subreaper_scope reaper;
  spawn_options other;
  other.stdout_path = dir.file("other.log");
  other.fd3 = activated.fd();
  other.env = {{"LISTEN_FDS", "1"}, {"LISTEN_PID", "1"}};
  process master = process::spawn(http_server, args, other);
  family fam(master);
  fam.master(master.pid());
  auto log = [&] { return read_file(other.stdout_path); };
  REQUIRE(wait_for([&] { return parse_port(log()) != 0 || master.exited(); }, 10s));
  INFO(log());
  REQUIRE(!master.exited());
  std::uint16_t port = parse_port(log());
  CHECK(port != activated.port());
  CHECK(log().find("socket activation") == std::string::npos);
  CHECK(wait_for([&] { return http_get(port).has_value(); }, 10s, 20ms));
  master.signal(SIGQUIT);
  CHECK(master.wait_exit(15s).has_value());
}

PM_TEST_CASE("PROCMODEL_LISTENERS that is garbage or names a bad descriptor is refused with a clear message",
          "[upgrade][handover]") {
  // The refusals under test, one per start.
  expect_log_line("master: PROCMODEL_LISTENERS");
  expect_log_line("master: PROCMODEL_UPGRADE_FD: expected a whole number");
  temp_dir dir("procmodel-upgrade");
  std::string pid_path = dir.file("master.pid");
  auto args = [&](const std::string& listen) {
    return std::vector<std::string>{"--listen", listen, "--workers", "1", "--pid-file", pid_path};
  };
  auto refused = [&](const run_result& r, std::initializer_list<std::string_view> words) {
    INFO(describe(r));
    CHECK(r.code() != 0);
    CHECK(r.code() != -1000);  // it exited by itself
    for (auto w : words) {
      INFO("expected: " << w);
      CHECK(r.err.find(w) != std::string::npos);
    }
    CHECK(!file_exists(pid_path));
  };

  spawn_options o;
  o.env = {{"PROCMODEL_LISTENERS", "garbage"}};
  refused(run_with(dir, args("127.0.0.1:0"), o), {"PROCMODEL_LISTENERS", "garbage"});

  o.env = {{"PROCMODEL_LISTENERS", "0:99"}};
  refused(run_with(dir, args("127.0.0.1:0"), o), {"PROCMODEL_LISTENERS", "descriptor 99", "not open"});

  o.env = {{"PROCMODEL_LISTENERS", "1:3"}};
  test_socket one;
  o.fd3 = one.fd();
  refused(run_with(dir, args("127.0.0.1:0"), o), {"PROCMODEL_LISTENERS", "descriptor 3", "#1"});

  std::string plain = dir.file("plain.txt");
  write_file(plain, "not a socket\n");
  int file_fd = ::open(plain.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(file_fd >= 0);
  o.env = {{"PROCMODEL_LISTENERS", "0:3"}};
  o.fd3 = file_fd;
  refused(run_with(dir, args("127.0.0.1:0"), o), {"PROCMODEL_LISTENERS", "descriptor 3", "not a socket"});
  ::close(file_fd);

  test_socket bound_only("127.0.0.1", false);
  o.fd3 = bound_only.fd();
  refused(run_with(dir, args("127.0.0.1:0"), o),
          {"PROCMODEL_LISTENERS", "descriptor 3", "not a listening stream socket"});

  test_socket elsewhere("127.0.0.1");
  o.fd3 = elsewhere.fd();
  refused(run_with(dir, args("127.0.0.2:0"), o),
          {"PROCMODEL_LISTENERS", "bound to 127.0.0.1:" + std::to_string(elsewhere.port()),
           "not to 127.0.0.2:0"});

  // A socket made without SO_REUSEPORT for a --reuseport master, and the reverse.
  test_socket plain_listener("127.0.0.1");
  o.env = {{"PROCMODEL_LISTENERS", "0:3"}};
  o.fd3 = plain_listener.fd();
  auto with_reuseport = args("127.0.0.1:" + std::to_string(plain_listener.port()));
  with_reuseport.push_back("--reuseport");
  refused(run_with(dir, with_reuseport, o),
          {"PROCMODEL_LISTENERS", "was made without SO_REUSEPORT",
           "this master is configured with --reuseport"});
  test_socket reuseport_listener("127.0.0.1", true, true);
  o.fd3 = reuseport_listener.fd();
  refused(run_with(dir, args("127.0.0.1:" + std::to_string(reuseport_listener.port())), o),
          {"PROCMODEL_LISTENERS", "was made with SO_REUSEPORT",
           "this master is configured without --reuseport"});

  o.fd3 = elsewhere.fd();
  o.env = {{"PROCMODEL_LISTENERS", "0:3"}, {"PROCMODEL_UPGRADE_FD", "nonsense"}};
  refused(run_with(dir, args("127.0.0.1:0"), o), {"PROCMODEL_UPGRADE_FD"});
}

PM_TEST_CASE("the status command lists the master and its workers as a table and as JSON over a 0600 socket",
          "[upgrade][cli][status]") {
  server srv(http_server, "procmodel-upgrade");
  PM_REQUIRE(srv, srv.start(http_config(3)));
  pid_t master = srv.master_pid();
  auto workers = srv.workers();
  PM_REQUIRE(srv, workers.size() == 3);

  struct stat st {};
  std::string sock = srv.pid_path() + ".sock";
  REQUIRE(::lstat(sock.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);

  auto table = run(srv.dir(), http_server, {"-s", "status", "--pid-file", srv.pid_path()});
  {
    INFO(describe(table));
    CHECK(table.code() == 0);
    CHECK(table.out.find("PID") != std::string::npos);
    CHECK(table.out.find("RESTARTS") != std::string::npos);
    CHECK(std::regex_search(table.out,
                            std::regex("\\b" + std::to_string(master) + R"(\s+master\s+-\s+1\s+running\s)")));
    for (pid_t w : workers)
      CHECK(std::regex_search(table.out, std::regex("\\b" + std::to_string(w) +
                                                    R"(\s+worker\s+[0-2]\s+1\s+ready\s+[0-9.]+s\s+0\b)")));
    CHECK(count_of(table.out, "\n") == 1 + 1 + 3);
  }

  auto json = run(srv.dir(), http_server, {"-s", "status", "--json", "--pid-file", srv.pid_path()});
  {
    INFO(describe(json));
    CHECK(json.code() == 0);
    CHECK(json.out.rfind("[{", 0) == 0);
    CHECK(json.out.find("}]") != std::string::npos);
    CHECK(count_of(json.out, "\"pid\":") == 4);
    CHECK(json.out.find("{\"pid\":" + std::to_string(master) + ",\"role\":\"master\"") !=
          std::string::npos);
    for (pid_t w : workers)
      CHECK(json.out.find("{\"pid\":" + std::to_string(w) + ",\"role\":\"worker\"") !=
            std::string::npos);
    for (const char* field : {"\"role\":", "\"slot\":", "\"generation\":", "\"state\":",
                              "\"uptime\":", "\"restarts\":"})
      CHECK(count_of(json.out, field) == 4);
  }

  srv.master().signal(SIGQUIT);
  REQUIRE(srv.master().wait_exit(15s).has_value());
  CHECK(!file_exists(sock));
  auto gone = run(srv.dir(), http_server, {"-s", "status", "--pid-file", srv.pid_path()});
  INFO(describe(gone));
  CHECK(gone.code() == 1);
  CHECK(gone.err.find("-s status") != std::string::npos);
  CHECK(gone.err.find("cannot reach the master") != std::string::npos);
  auto up = run(srv.dir(), http_server, {"-s", "upgrade", "--pid-file", srv.pid_path()});
  CHECK(up.code() == 1);
  CHECK(up.err.find("cannot reach the master") != std::string::npos);
}

PM_TEST_CASE("silent control clients do not stall the master", "[upgrade][cli][status]") {
  server srv(http_server, "procmodel-upgrade");
  PM_REQUIRE(srv, srv.start(http_config(1)));
  std::string sock = srv.pid_path() + ".sock";
  // Ten clients connect and say nothing; the master must go on serving both
  // its control socket and HTTP while they sit there.
  std::vector<int> silent;
  for (int i = 0; i < 10; ++i) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock.c_str());
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    silent.push_back(fd);
  }
  auto t0 = steady::now();
  auto r = run(srv.dir(), http_server, {"-s", "status", "--pid-file", srv.pid_path()}, 20s);
  double ms = ms_since(t0);
  INFO(r.err);
  CHECK(r.code() == 0);
  CHECK(r.out.find("master") != std::string::npos);
  WARN("status with 10 silent control clients connected took " << ms << " ms");
  CHECK(ms < 5000);  // a master that waited a second per silent client takes 10 s
  CHECK(http_get(srv.port()).has_value());
  for (int fd : silent) ::close(fd);
}

PM_TEST_CASE("NOTIFY_SOCKET: STOPPING=1 on TERM, and an abstract @ socket works",
             "[upgrade][systemd]") {
  server srv(http_server, "procmodel-upgrade");
  // A name of our own in the abstract namespace: no file, nothing to clean.
  const std::string name = "@procmodel-test-" + std::to_string(::getpid()) + "-" +
                           std::to_string(steady::now().time_since_epoch().count());
  notify_socket sd(name);
  auto c = notified_config(sd, 1);
  PM_REQUIRE(srv, srv.start(c));
  PM_CHECK(srv, sd.until("READY=1", 5s));
  srv.master().signal(SIGTERM);
  PM_CHECK(srv, sd.until("STOPPING=1", 10s));
  auto st = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, st.has_value());
  PM_CHECK(srv, exit_code_of(*st) == 0);
  PM_CHECK(srv, srv.log().find("fast stop") != std::string::npos);
  INFO(sd.describe());
  for (const auto& m : sd.seen()) CHECK(m.sender == srv.master_pid());
}

// --- issue 7's numbered failures, each against the real binary ----------------------

PM_TEST_CASE("failure 1: a --daemon master upgrades to a new master that does not detach again",
          "[upgrade][failures][daemon]") {
  // -s upgrade, the same with a socket per worker, and nginx's USR2 then QUIT.
  enum class how { automatic, reuseport, manual };
  how mode = GENERATE(how::automatic, how::reuseport, how::manual);
  subreaper_scope reaper;
  temp_dir dir("procmodel-upgrade");
  std::string pid_path = dir.file("d.pid"), log_path = dir.file("d.log");
  std::vector<std::string> args = {"--daemon", "--listen", "127.0.0.1:0", "--workers", "2",
                                   "--pid-file", pid_path, "--log-file", log_path};
  if (mode == how::reuseport) args.push_back("--reuseport");
  audit_log_file(log_path);  // the daemon masters and their workers log here
  auto r = run(dir, http_server, args, 10s);
  INFO("mode " << static_cast<int>(mode) << "\n" << r.err << read_file(log_path));
  REQUIRE(r.code() == 0);
  pid_t old_master = pid_in(pid_path);
  REQUIRE(old_master != 0);
  kill_on_exit guard{{old_master}};
  auto old_workers = children_of(old_master);
  REQUIRE(old_workers.size() == 2);
  auto port = parse_port(read_file(log_path));
  REQUIRE(port != 0);
  REQUIRE(wait_for([&] { return http_get(port).has_value(); }, 5s));

  pid_t new_master = 0;
  if (mode == how::manual) {
    ::kill(old_master, SIGUSR2);
    REQUIRE(wait_for([&] { return (new_master = manual_ready_new_master(read_file(log_path))) != 0; }, 10s));
    guard.pids.push_back(new_master);
    ::kill(old_master, SIGQUIT);
  } else {
    auto up = run(dir, http_server,
                  {"-s", "upgrade", "--pid-file", pid_path, "--upgrade-timeout", "10000"}, 30s);
    INFO(describe(up) << "\n--- log ---\n" << read_file(log_path));
    CHECK(up.code() == 0);
    auto ok = parse_upgrade_ok(up.out);
    REQUIRE(ok);
    new_master = ok->first;
    guard.pids.push_back(new_master);
    CHECK(ok->second == old_master);
  }
  INFO("--- log ---\n" << read_file(log_path));

  // The old master quits (ours now: the daemon's launcher is gone).
  auto old_status = reap_within(old_master, 15s);
  REQUIRE(old_status);
  CHECK(exit_code_of(*old_status) == 0);
  CHECK(workers_exited_cleanly(read_file(log_path), old_workers));
  // The new master is the one the old master started, in the daemon's session:
  // no stray detached master serves the same sockets.
  CHECK(is_running(new_master));
  CHECK(pid_in(pid_path) == new_master);
  CHECK(::getsid(new_master) == old_master);
  std::vector<pid_t> new_workers;
  CHECK(wait_for([&] { return (new_workers = children_of(new_master)).size() == 2; }, 10s));
  auto members = session_members(old_master);
  std::sort(members.begin(), members.end());
  std::vector<pid_t> expected = new_workers;
  expected.push_back(new_master);
  std::sort(expected.begin(), expected.end());
  CHECK(members == expected);
  auto body = http_get(port);
  REQUIRE(body);
  CHECK(std::count(new_workers.begin(), new_workers.end(), body_pid(*body)) == 1);
  CHECK(count_of(read_file(log_path), "exited with code 0; this master keeps serving") == 0);

  auto q = run(dir, http_server, {"-s", "quit", "--pid-file", pid_path});
  CHECK(q.code() == 0);
  auto new_status = reap_within(new_master, 15s);
  REQUIRE(new_status);
  CHECK(exit_code_of(*new_status) == 0);
  CHECK(workers_exited_cleanly(read_file(log_path), new_workers));
  CHECK(!file_exists(pid_path));
}

PM_TEST_CASE("failure 2: resizing the terminal of a foreground master drains no worker",
          "[upgrade][failures][tty]") {
  temp_dir dir("procmodel-upgrade");
  std::string pid_path = dir.file("t.pid"), log_path = dir.file("t.log");
  auto start_under_pty = [&](bool force, int& pty) {
    winsize ws{24, 80, 0, 0};
    std::vector<std::string> args = {http_server, "--listen", "127.0.0.1:0", "--workers", "2",
                                     "--pid-file", pid_path, "--log-file", log_path};
    if (force) args.push_back("--winch-with-terminal");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::fflush(nullptr);
    pid_t pid = ::forkpty(&pty, nullptr, nullptr, &ws);
    if (pid == 0) {
      // Only the terminal on 0-2, as process::spawn starts a program: none
      // of the test's descriptors in the master (or in its fd audit).
      if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
        for (int fd = 3; fd < 1024; ++fd) ::close(fd);
      ::execv(http_server.c_str(), argv.data());
      ::_exit(127);
    }
    return pid;
  };
  auto resize = [](int pty, unsigned short cols) {
    winsize ws{24, cols, 0, 0};
    return ::ioctl(pty, TIOCSWINSZ, &ws) == 0;  // the tty sends SIGWINCH to its foreground
  };
  bool force = GENERATE(false, true);
  INFO((force ? "with --winch-with-terminal" : "by default"));
  ::unlink(log_path.c_str());
  // Started under a pty, not through process::spawn: the test checks the
  // master's end itself; the audit reads its log.
  audit_log_file(log_path);
  int pty = -1;
  pid_t master = start_under_pty(force, pty);
  REQUIRE(master > 0);
  kill_on_exit guard{{master}};
  std::vector<pid_t> workers;
  REQUIRE(wait_for([&] { return (workers = children_of(master)).size() == 2; }, 10s));
  auto port = parse_port(read_file(log_path));
  REQUIRE(wait_for([&] { return http_get(port).has_value(); }, 5s));

  REQUIRE(resize(pty, 100));
  INFO(read_file(log_path));
  REQUIRE(wait_for([&] { return read_file(log_path).find("received SIGWINCH") != std::string::npos; }, 5s));
  if (!force) {
    CHECK(wait_for([&] { return read_file(log_path).find("WINCH ignored") != std::string::npos; }, 5s));
    ::usleep(300'000);
    CHECK(children_of(master) == workers);
    CHECK(http_get(port).has_value());
  } else {
    // Forced, it is nginx's WINCH: every worker drains.
    for (pid_t w : workers) CHECK(wait_for([&] { return !is_alive(w); }, 10s));
    CHECK(workers_exited_cleanly(read_file(log_path), workers));
  }
  ::kill(master, SIGQUIT);
  int st = 0;
  bool exited = wait_for([&] { return ::waitpid(master, &st, WNOHANG) == master; }, 15s, 5ms);
  REQUIRE(exited);
  guard.pids.clear();
  CHECK(exit_code_of(st) == 0);
  if (!force) CHECK(workers_exited_cleanly(read_file(log_path), workers));
  ::close(pty);
}

PM_TEST_CASE("failure 3: USR2 and -s upgrade to a new master whose parent lives are refused",
          "[upgrade][failures]") {
  rig rg("ready = yes\n");
  auto& srv = rg.srv;
  auto& fam = rg.fam;
  pid_t old_master = rg.master;

  srv.master().signal(SIGUSR2);
  pid_t new_master = 0;
  PM_REQUIRE(srv, wait_for([&] { return (new_master = manual_ready_new_master(srv.log())) != 0; }, 10s));
  fam.master(new_master);
  PM_CHECK(srv, pid_in(srv.pid_path()) == new_master);

  ::kill(new_master, SIGUSR2);
  PM_CHECK(srv, wait_for([&] { return srv.log().find("upgrade refused: this master was started by an upgrade") != std::string::npos; }, 5s));
  auto r = upgrade_now(srv, {"--upgrade-timeout", "3000"});
  {
    INFO(describe(r) << "\n" << srv.describe());
    CHECK(r.code() == 1);
    CHECK(r.err.find("parent master " + std::to_string(old_master) + " still runs") != std::string::npos);
  }
  PM_CHECK(srv, count_of(srv.log(), "started from") == 1);  // no third master
  PM_CHECK(srv, pid_in(srv.pid_path()) == new_master);
  PM_CHECK(srv, pid_in(srv.pid_path() + ".oldbin") == old_master);

  // Roll back: QUIT the new master; the old one has its pid file again.
  expect_log_line("upgrade rolled back: the new master " + std::to_string(new_master) +
                  " exited with code 0 after it was ready");
  ::kill(new_master, SIGQUIT);
  PM_REQUIRE(srv, new_master_left_cleanly(srv, fam, new_master));
  PM_CHECK(srv, wait_for([&] { return pid_in(srv.pid_path()) == old_master; }, 5s));
  PM_CHECK(srv, http_get(srv.port()).has_value());
  rg.quit_master();
}

PM_TEST_CASE("failure 3: two -s upgrade whose new workers never get ready leave the pid file with the master",
          "[upgrade][failures]") {
  rig rg("ready = yes\n");
  auto& srv = rg.srv;
  auto& fam = rg.fam;
  pid_t master = rg.master;

  write_file(conf_path(srv), "ready = no\n");  // the real binary, whose workers never report ready
  pid_t previous = 0;
  for (int i = 0; i < 2; ++i) {
    auto r = upgrade_now(srv, {"--upgrade-timeout", "1500"});
    pid_t nm = started_new_master(srv.log());
    INFO("attempt " << i << "\n" << describe(r) << "\n" << srv.describe());
    CHECK(r.code() == 1);
    CHECK(r.err.find("not ready within 1500 ms") != std::string::npos);
    REQUIRE(nm != 0);
    REQUIRE(nm != previous);
    previous = nm;
    fam.note(nm);
    expect_log_line("upgrade failed: the new master " + std::to_string(nm) +
                    " was not ready within 1500 ms");
    // Given back as the failure was reported, not when the new master is gone.
    CHECK(pid_in(srv.pid_path()) == master);
    CHECK(!file_exists(srv.pid_path() + ".oldbin"));
    REQUIRE(new_master_left_cleanly(srv, fam, nm));
    CHECK(pid_in(srv.pid_path()) == master);
  }
  auto status = run(srv.dir(), http_server, {"-s", "status", "--pid-file", srv.pid_path()});
  PM_CHECK(srv, status.code() == 0);
  PM_CHECK(srv, status.out.find(std::to_string(master)) != std::string::npos);
  PM_CHECK(srv, http_get(srv.port()).has_value());
  rg.quit_master();
  CHECK(!file_exists(srv.pid_path()));
}

PM_TEST_CASE("failure 4: a HUP rolled back in a crash-looping new master is not its readiness",
          "[upgrade][failures]") {
  rig rg("ready = yes\n", {"--ready-timeout", "1000"});
  auto& srv = rg.srv;
  auto& fam = rg.fam;
  pid_t master = rg.master;

  write_file(conf_path(srv), "exit_at_start = 3\n");  // every new worker exits at once
  process up = upgrade_in_background(srv, "4000", "up");
  up.expect_exit(1);  // the upgrade fails on purpose
  pid_t nm = 0;
  PM_REQUIRE(srv, wait_for([&] { return (nm = started_new_master(srv.log())) != 0; }, 10s));
  fam.note(nm);
  // The new master's crash loop, its HUP rolled back, and the upgrade failed.
  expect_new_workers_exit_3(nm);
  expect_log_line(std::to_string(nm) + " master: reload to generation 3 rolled back: worker ");
  expect_log_line("upgrade failed: the new master " + std::to_string(nm) +
                  " was not ready within 4000 ms");
  PM_REQUIRE(srv, master_running(srv, nm));
  PM_CHECK(srv, pid_in(srv.pid_path()) == nm);
  ::kill(nm, SIGHUP);  // as `-s reload` would, through the pid file
  PM_CHECK(srv, wait_for([&] { return srv.log().find("rolled back") != std::string::npos; }, 10s));

  auto st = up.wait_exit(20s);
  REQUIRE(st);
  std::string err = read_file(srv.dir().file("up.err")), out = read_file(srv.dir().file("up.out"));
  INFO(out << err << "\n" << srv.describe());
  CHECK(exit_code_of(*st) == 1);
  CHECK(err.find("not ready within 4000 ms") != std::string::npos);
  CHECK(out.find("ok") == std::string::npos);
  PM_CHECK(srv, fam.running(master));
  PM_REQUIRE(srv, new_master_left_cleanly(srv, fam, nm));
  PM_CHECK(srv, pid_in(srv.pid_path()) == master);
  PM_CHECK(srv, http_get(srv.port()).has_value());
  rg.quit_master();
}

PM_TEST_CASE("failure 5: WINCH, then the new master dies: the old master starts its workers again",
          "[upgrade][failures]") {
  rig rg("ready = yes\n");
  auto& srv = rg.srv;
  auto& fam = rg.fam;
  pid_t master = rg.master;
  auto old_workers = fam.workers_of(master);
  PM_REQUIRE(srv, old_workers.size() == 2);

  write_file(conf_path(srv), "ready = no\n");
  srv.master().signal(SIGUSR2);
  pid_t nm = rg.new_master();
  std::vector<pid_t> nm_workers;
  PM_REQUIRE(srv, wait_for([&] { return (nm_workers = fam.workers_of(nm)).size() == 2; }, 10s));
  fam.master(nm);
  srv.master().signal(SIGWINCH);
  for (pid_t w : old_workers) PM_CHECK(srv, fam.wait_gone(w, 15s));
  // The master logs each exit after reaping it: gone is not yet logged.
  PM_CHECK(srv, wait_for([&] { return workers_exited_cleanly(srv.log(), old_workers); }, 5s));

  expect_log_line("upgrade failed: the new master " + std::to_string(nm) + " killed by signal 9");
  ::kill(nm, SIGKILL);
  PM_REQUIRE(srv, fam.wait_gone(nm, 15s));
  PM_CHECK(srv, wait_for([&] { return new_master_end(srv, nm) == "killed by signal 9"; }, 5s));
  // Its workers see their line to it close and leave by themselves; orphans,
  // they are reaped here.
  for (pid_t w : nm_workers) {
    PM_CHECK(srv, fam.wait_gone(w, 15s));
    auto wst = fam.status_of(w);
    REQUIRE(wst);
    CHECK(exit_code_of(*wst) == 0);
  }

  std::vector<pid_t> back;
  PM_CHECK(srv, wait_for([&] { return (back = fam.workers_of(master)).size() == 2; }, 10s));
  PM_CHECK(srv, srv.log().find("starts 2 worker(s) again") != std::string::npos);
  PM_CHECK(srv, pid_in(srv.pid_path()) == master);
  auto body = http_get(srv.port());
  PM_REQUIRE(srv, body.has_value());
  PM_CHECK(srv, std::count(back.begin(), back.end(), body_pid(*body)) == 1);
  rg.quit_master();
  CHECK(workers_exited_cleanly(srv.log(), back));
}

PM_TEST_CASE("failure 6: TERM to the old master before the new one is ready fails -s upgrade and stops both",
          "[upgrade][failures]") {
  rig rg("ready = yes\n");
  auto& srv = rg.srv;
  auto& fam = rg.fam;

  write_file(conf_path(srv), "ready = no\n");
  process up = upgrade_in_background(srv, "20000", "up");
  up.expect_exit(1);  // the upgrade fails on purpose
  pid_t nm = rg.new_master();
  fam.master(nm);
  srv.master().signal(SIGTERM);

  auto st = up.wait_exit(15s);
  REQUIRE(st);
  std::string err = read_file(srv.dir().file("up.err"));
  INFO(err << "\n" << srv.describe());
  CHECK(exit_code_of(*st) == 1);
  CHECK(err.find("old master is stopping") != std::string::npos);
  auto mst = srv.master().wait_exit(15s);
  REQUIRE(mst);
  CHECK(exit_code_of(*mst) == 0);
  PM_REQUIRE(srv, fam.wait_gone(nm, 15s));
  PM_CHECK(srv, new_master_end(srv, nm) == "exited with code 0");
  CHECK(!file_exists(srv.pid_path()));
  CHECK(!file_exists(srv.pid_path() + ".oldbin"));
}

PM_TEST_CASE("failure 7: a ready in flight when the deadline fires is ignored: exactly one master serves",
          "[upgrade][failures]") {
  rig rg("ready = yes\n");
  auto& srv = rg.srv;
  auto& fam = rg.fam;
  pid_t master = rg.master;

  // The new master's workers report ready 1.2 s after they start; it is held
  // stopped from before that until after the 2 s deadline. Woken, it reads
  // its workers' readiness (queued first) before the QUIT the deadline sent,
  // so its ready reaches the old master after the deadline: in flight.
  write_file(conf_path(srv), "ready_delay = 1200\n");
  auto t0 = steady::now();
  process up = upgrade_in_background(srv, "2000", "up");
  up.expect_exit(1);  // the upgrade fails on purpose
  pid_t nm = 0;
  PM_REQUIRE(srv, wait_for([&] { return (nm = started_new_master(srv.log())) != 0; }, 10s));
  PM_REQUIRE(srv, wait_for([&] { return children_of(nm).size() == 2; }, 5s, 1ms));
  fam.master(nm);
  expect_log_line("upgrade failed: the new master " + std::to_string(nm) +
                  " was not ready within 2000 ms");
  ::kill(nm, SIGSTOP);
  double stopped_at = ms_since(t0);
  PM_REQUIRE(srv, wait_for([&] { return srv.log().find("was not ready within 2000 ms") != std::string::npos; }, 10s));
  ::usleep(300'000);
  ::kill(nm, SIGCONT);

  auto st = up.wait_exit(20s);
  REQUIRE(st);
  std::string out = read_file(srv.dir().file("up.out")), err = read_file(srv.dir().file("up.err"));
  INFO(out << err << "\n" << srv.describe() << "\nstopped after " << stopped_at << " ms");
  CHECK(exit_code_of(*st) == 1);
  CHECK(err.find("not ready within 2000 ms") != std::string::npos);
  PM_REQUIRE(srv, new_master_left_cleanly(srv, fam, nm));
  // The old master serves on, alone, with its pid file.
  ::usleep(500'000);
  PM_CHECK(srv, fam.running(master));
  PM_CHECK(srv, pid_in(srv.pid_path()) == master);
  PM_CHECK(srv, http_get(srv.port()).has_value());
  WARN("late ready after the deadline: "
       << (srv.log().find("reported ready after its upgrade was abandoned") != std::string::npos
               ? "arrived and was ignored"
               : "never arrived (the new master took QUIT first)"));

  rg.quit_master();
}

PM_TEST_CASE("failure 8: a failed upgrade whose new master is hung gives the pid file back at once",
          "[upgrade][failures]") {
  rig rg("ready = yes\n", {"--shutdown-timeout", "3000"});
  auto& srv = rg.srv;
  auto& fam = rg.fam;
  pid_t master = rg.master;

  write_file(conf_path(srv), "ready = no\n");
  process up = upgrade_in_background(srv, "1500", "up");
  up.expect_exit(1);  // the upgrade fails on purpose
  pid_t nm = rg.new_master();
  fam.master(nm);
  expect_log_line("upgrade failed: the new master " + std::to_string(nm) +
                  " was not ready within 1500 ms");
  std::vector<pid_t> nm_workers;
  PM_REQUIRE(srv, wait_for([&] { return (nm_workers = fam.workers_of(nm)).size() == 2; }, 10s));
  ::kill(nm, SIGSTOP);  // hung: it acts on no signal but SIGKILL

  auto st = up.wait_exit(15s);
  REQUIRE(st);
  CHECK(exit_code_of(*st) == 1);
  PM_CHECK(srv, fam.running(nm));
  PM_CHECK(srv, pid_in(srv.pid_path()) == master);
  write_file(conf_path(srv), "ready = yes\n");
  auto reload = run(srv.dir(), http_server, {"-s", "reload", "--pid-file", srv.pid_path()});
  {
    INFO(describe(reload));
    CHECK(reload.code() == 0);
  }
  PM_CHECK(srv, wait_for([&] { return srv.log().find("reload: generation 3 serves") != std::string::npos ||
                                      srv.log().find("reload: generation 2 serves") != std::string::npos; }, 10s));
  // The hung new master is killed at shutdown_timeout.
  PM_REQUIRE(srv, fam.wait_gone(nm, 15s));
  PM_CHECK(srv, wait_for([&] { return new_master_end(srv, nm) == "killed by signal 9"; }, 5s));
  // Its workers lose their line to it and leave by themselves; orphans,
  // they are reaped here, and each must have ended cleanly.
  for (pid_t w : nm_workers) {
    PM_CHECK(srv, fam.wait_gone(w, 15s));
    auto wst = fam.status_of(w);
    REQUIRE(wst);
    CHECK(exit_code_of(*wst) == 0);
  }
  PM_CHECK(srv, pid_in(srv.pid_path()) == master);
  rg.quit_master();
}

PM_TEST_CASE("failure 9: PROCMODEL_UPGRADE_FD naming a handed-over listener is refused",
          "[upgrade][failures][handover]") {
  temp_dir dir("procmodel-upgrade");
  std::string pid_path = dir.file("master.pid");
  test_socket s;
  spawn_options o;
  o.fd3 = s.fd();
  o.env = {{"PROCMODEL_LISTENERS", "0:3"}, {"PROCMODEL_UPGRADE_FD", "3"}};
  expect_log_line("PROCMODEL_UPGRADE_FD=3: descriptor 3 is one of the inherited listeners");
  auto r = run_with(dir,
                    {"--listen", "127.0.0.1:" + std::to_string(s.port()), "--workers", "1",
                     "--pid-file", pid_path},
                    o, 5s);
  INFO(describe(r));
  CHECK(r.code() == 1);
  CHECK(r.err.find("PROCMODEL_UPGRADE_FD=3") != std::string::npos);
  CHECK(r.err.find("inherited listeners") != std::string::npos);
  CHECK(!file_exists(pid_path));
}

// --- control commands that tell the truth ----------------------------------------

PM_TEST_CASE("-s reload waits for the outcome; --no-wait only signals; -t checks the config",
          "[upgrade][cli][reload]") {
  rig rg("ready = yes\n", {"--ready-timeout", "2000"});
  auto& srv = rg.srv;
  auto reload = [&](std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"-s", "reload", "--pid-file", srv.pid_path()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run(srv.dir(), http_server, args, 30s);
  };
  auto r = reload();
  {
    INFO(describe(r) << "\n" << srv.describe());
    CHECK(r.code() == 0);
    CHECK(r.out.find("ok: generation 2 serves with 2 worker(s)") != std::string::npos);
  }
  write_file(conf_path(srv), "workers = none\n");
  expect_log_line("reload refused: " + conf_path(srv) + ":1: workers: expected a whole number");
  r = reload();
  {
    INFO(describe(r));
    CHECK(r.code() == 1);
    CHECK(r.err.find("configuration refused") != std::string::npos);
    CHECK(r.err.find("generation 2 keeps serving") != std::string::npos);
  }
  write_file(conf_path(srv), "exit_at_start = 3\n");
  expect_log_pattern(R"(worker \d+ \(slot \d+, generation 3\) exited with code 3)");
  expect_log_line("reload to generation 3 rolled back: worker ");
  r = reload();
  {
    INFO(describe(r));
    CHECK(r.code() == 1);
    CHECK(r.err.find("generation 3 rolled back") != std::string::npos);
    CHECK(r.err.find("exited with code 3") != std::string::npos);
  }
  write_file(conf_path(srv), "ready = yes\n");
  r = reload({"--no-wait"});
  {
    INFO(describe(r));
    CHECK(r.code() == 0);
    CHECK(r.out.empty());
  }
  PM_CHECK(srv, wait_for([&] { return srv.log().find("reload: generation 4 serves") != std::string::npos; }, 10s));

  // -t: the same loading, no master involved.
  auto check = [&](const std::string& text) {
    write_file(srv.dir().file("check.conf"), text);
    return run(srv.dir(), http_server, {"-t", "--config", srv.dir().file("check.conf")});
  };
  auto good = check("greeting = hi\nworkers = 3\n");
  CHECK(good.code() == 0);
  CHECK(good.out.find("configuration ok (3 worker(s))") != std::string::npos);
  auto bad = check("greeting = hi\nbogus = 1\n");
  CHECK(bad.code() == 1);
  CHECK(bad.err.find("unknown key 'bogus'") != std::string::npos);
  PM_CHECK(srv, srv.log().find("generation 5") == std::string::npos);  // nothing reached the master
  rg.quit_master();
}

PM_TEST_CASE("-s status answers during a graceful stop and during an upgrade, with backoff and generations",
          "[upgrade][cli][status]") {
  rig rg("ready = yes\n", {"--shutdown-timeout", "8000"});
  auto& srv = rg.srv;
  auto& fam = rg.fam;
  pid_t master = rg.master;
  auto status = [&] { return run(srv.dir(), http_server, {"-s", "status", "--pid-file", srv.pid_path()}); };

  // An upgrade whose new master's workers crash at start: it backs off.
  write_file(conf_path(srv), "exit_at_start = 3\n");
  srv.master().signal(SIGUSR2);
  pid_t nm = rg.new_master();
  fam.master(nm);
  expect_new_workers_exit_3(nm);
  expect_log_line("upgrade failed: the new master " + std::to_string(nm) + " exited with code 0");
  PM_CHECK(srv, wait_for([&] { return count_of(srv.log(), "next respawn in") >= 2; }, 10s));
  auto table = status();  // the pid file and the control socket are the new master's
  {
    INFO(describe(table) << "\n" << srv.describe());
    CHECK(table.code() == 0);
    CHECK(std::regex_search(table.out, std::regex("\\b" + std::to_string(nm) + R"(\s+master\s+-\s+2\s+running)")));
    CHECK(std::regex_search(table.out, std::regex("\\b" + std::to_string(master) + R"(\s+old master\s+-\s+-\s+serving)")));
    CHECK(std::regex_search(table.out, std::regex(R"(-\s+worker\s+\d+\s+2\s+backoff \d+\.\ds)")));
    CHECK(table.out.find("pid file " + srv.pid_path() + " names " + std::to_string(nm)) != std::string::npos);
  }
  // Roll back: QUIT the new master.
  ::kill(nm, SIGQUIT);
  PM_REQUIRE(srv, new_master_left_cleanly(srv, fam, nm));
  PM_CHECK(srv, wait_for([&] { return pid_in(srv.pid_path()) == master; }, 5s));

  // A graceful stop held up by an idle connection still answers.
  auto idle = tcp_client::connect(srv.port());
  PM_REQUIRE(srv, idle.has_value());
  ::usleep(200'000);
  srv.master().signal(SIGQUIT);
  PM_REQUIRE(srv, wait_for([&] { return srv.log().find("graceful stop") != std::string::npos; }, 5s));
  table = status();
  {
    INFO(describe(table) << "\n" << srv.describe());
    CHECK(table.code() == 0);
    CHECK(std::regex_search(table.out, std::regex("\\b" + std::to_string(master) + R"(\s+master\s+-\s+1\s+quitting)")));
    CHECK(table.out.find("draining") != std::string::npos);
  }
  idle->close();
  auto st = srv.master().wait_exit(15s);
  REQUIRE(st);
  CHECK(exit_code_of(*st) == 0);
}

PM_TEST_CASE("-s upgrade whose old master dies without a verdict exits non-zero and says so",
          "[upgrade][cli]") {
  rig rg("ready = yes\n");
  auto& srv = rg.srv;
  auto& fam = rg.fam;
  pid_t master = rg.master;
  auto old_workers = fam.workers_of(master);
  write_file(conf_path(srv), "ready = no\n");
  process up = upgrade_in_background(srv, "20000", "up");
  up.expect_exit(1);  // the upgrade fails on purpose
  pid_t nm = rg.new_master();
  fam.master(nm);
  srv.master().expect_signal(SIGKILL);  // on purpose: the client's verdict never comes
  srv.master().signal(SIGKILL);

  auto st = up.wait_exit(15s);
  REQUIRE(st);
  std::string out = read_file(srv.dir().file("up.out")), err = read_file(srv.dir().file("up.err"));
  INFO(out << err << "\n" << srv.describe());
  CHECK(exit_code_of(*st) == 1);
  CHECK(err.find("hung up without a verdict") != std::string::npos);
  auto mst = srv.master().wait_exit(5s);
  REQUIRE(mst);
  CHECK(WIFSIGNALED(*mst));
  CHECK(WTERMSIG(*mst) == SIGKILL);
  // Its workers and the new master are orphans reaped here.
  for (pid_t w : old_workers) {
    PM_CHECK(srv, fam.wait_gone(w, 10s));
    auto wst = fam.status_of(w);
    REQUIRE(wst);
    CHECK(exit_code_of(*wst) == 0);
  }
  ::kill(nm, SIGQUIT);
  PM_REQUIRE(srv, fam.wait_gone(nm, 15s));
  auto nst = fam.status_of(nm);
  REQUIRE(nst);
  CHECK(exit_code_of(*nst) == 0);
}

PM_TEST_CASE("the control socket answers a client of another uid with permission denied",
             "[upgrade][cli][status]") {
  if (::geteuid() != 0) {
    WARN("not root: cannot be another uid here; skipped");
    return;
  }
  server srv(http_server, "procmodel-upgrade");
  PM_REQUIRE(srv, srv.start(http_config(1)));
  const std::string sock = srv.pid_path() + ".sock";
  struct stat st {};
  PM_REQUIRE(srv, ::stat(sock.c_str(), &st) == 0);
  PM_CHECK(srv, (st.st_mode & 0777) == 0600);
  // The file mode alone keeps others out; open it up so that the master's
  // own check of the peer's uid is what is tested.
  PM_REQUIRE(srv, ::chmod(sock.c_str(), 0666) == 0);
  ::chmod(srv.dir().path().c_str(), 0755);

  auto ask_as = [&](uid_t uid) {
    int out[2];
    REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      if (uid != 0 && (::setgid(uid) != 0 || ::setuid(uid) != 0)) ::_exit(2);
      int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::memcpy(sa.sun_path, sock.c_str(), sock.size());
      if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) ::_exit(3);
      (void)!::send(fd, "status\n", 7, MSG_NOSIGNAL);
      char buf[4096];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) (void)!::write(out[1], buf, static_cast<std::size_t>(n));
      ::_exit(0);
    }
    ::close(out[1]);
    std::string answer;
    char buf[4096];
    for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) answer.append(buf, static_cast<std::size_t>(n));
    ::close(out[0]);
    int ws = 0;
    ::waitpid(child, &ws, 0);
    INFO("client as uid " << uid << ": " << describe_status(ws) << ", answer: " << answer);
    CHECK(exit_code_of(ws) == 0);
    return answer;
  };
  const std::string stranger = ask_as(65534);  // nobody
  PM_CHECK(srv, stranger.rfind("error: permission denied", 0) == 0);
  const std::string owner = ask_as(0);
  PM_CHECK(srv, owner.find("master") != std::string::npos);
  PM_CHECK(srv, owner.find("error") == std::string::npos);
}
