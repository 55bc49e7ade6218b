// Supervision, end to end: the echo example run as real processes, driven
// with real signals and real loopback sockets. Every test starts its own
// master on 127.0.0.1:0 in its own temporary directory; the guard in
// support/process.hpp SIGKILLs whatever is left of it at the end.
//
// Figures that the issue bounds (respawn latency, cleanup after the master
// is killed, crash-loop spawns and CPU) are measured and reported with WARN;
// the assertions on them are generous so that a loaded machine does not
// make them flake, but they still fail when the behaviour is broken.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>
#include <csignal>

using namespace pmtest;

namespace {

std::string fmt_ms(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f ms", ms);
  return buf;
}

// The inode in "socket:[123]".
std::string socket_inode(const std::string& target) {
  auto open = target.find('[');
  auto close = target.find(']');
  if (open == std::string::npos || close == std::string::npos)
    return target;
  return target.substr(open + 1, close - open - 1);
}

// Waits (transient zombies are fine: the master reaps on SIGCHLD) until the
// master has no zombie child; checks it.
void check_no_zombies(server& srv) {
  bool none = wait_for([&] { return srv.zombie_children().empty(); }, 5s);
  INFO("zombie children of the master that stayed for 5 s");
  PM_CHECK(srv, none);
}

// Whether every pid in `pids` is gone or a zombie.
bool all_gone_or_zombie(const std::vector<pid_t>& pids) {
  return std::all_of(pids.begin(), pids.end(), [](pid_t p) { return !is_running(p); });
}

// The socket inodes `pid` holds, each with how many descriptors refer to it.
std::map<std::string, int> socket_inodes(pid_t pid) {
  std::map<std::string, int> out;
  for (const auto& f : open_fds(pid))
    if (f.is_socket())
      ++out[socket_inode(f.target)];
  return out;
}

// Checks that `worker` holds stdio (0 -> /dev/null, 1 and 2 -> the log),
// the listener inherited from the master and its acceptor's duplicate, its
// own channel (a socket no other worker and not the master holds), and its
// loop's epoll/eventfd/timerfd plus its signalfd: three sockets for one
// listener, no other file. Everything above 2 is close-on-exec.
// `channels` collects the channel inodes seen, to tell siblings apart.
void audit_worker_fds(server& srv, pid_t worker, std::set<std::string>& channels) {
  const pid_t master = srv.master_pid();
  auto master_sockets = socket_inodes(master);
  const std::string listener = listening_inode(srv.port());
  auto fds = open_fds(worker);
  INFO("worker " << worker << " descriptors:\n" << describe_fds(worker));
  INFO("master descriptors:\n" << describe_fds(master));
  INFO("listener inode " << listener);
  PM_REQUIRE(srv, !listener.empty());
  PM_REQUIRE(srv, !fds.empty());
  std::map<std::string, int> sockets;
  for (const auto& f : fds) {
    INFO("descriptor " << f.fd << " -> " << f.target);
    if (f.fd <= 2) {
      if (f.fd == 0)
        PM_CHECK(srv, f.target == "/dev/null");
      else
        PM_CHECK(srv, f.target == srv.stdio_path());
      continue;
    }
    PM_CHECK(srv, f.cloexec());
    if (f.is_socket()) {
      ++sockets[socket_inode(f.target)];
      continue;
    }
    const bool loop_fd = f.target == "anon_inode:[eventpoll]" ||
                         f.target == "anon_inode:[eventfd]" || f.target == "anon_inode:[timerfd]" ||
                         f.target == "anon_inode:[signalfd]" ||
                         f.target.rfind("pipe:", 0) == 0;  // the worker's signal pipe
    PM_CHECK(srv, loop_fd);
  }
  int socket_count = 0;
  for (const auto& [inode, n] : sockets)
    socket_count += n;
  PM_CHECK(srv, socket_count == 3);  // listener + its duplicate + the channel
  PM_CHECK(srv, sockets.size() == 2);
  for (const auto& [inode, n] : sockets) {
    INFO("socket inode " << inode << " held " << n << " time(s)");
    if (n == 2) {
      PM_CHECK(srv, inode == listener);  // the master's listener, not a new socket
    } else {
      PM_CHECK(srv, n == 1);
      PM_CHECK(srv, master_sockets.count(inode) == 0);  // its own end, not the master's
      PM_CHECK(srv, channels.insert(inode).second);     // and not a sibling's
    }
  }
}

// Starts `srv` with `workers` workers and `extra` flags (and `env`), then
// opens one client that has had `first` echoed back: the session a drain has
// to wait for.
tcp_client start_with_client(server& srv, std::vector<std::string> extra, std::string_view first,
                             unsigned workers = 2,
                             std::vector<std::pair<std::string, std::string>> env = {}) {
  server_config cfg;
  cfg.workers = workers;
  cfg.extra = std::move(extra);
  cfg.env = std::move(env);
  PM_REQUIRE(srv, srv.start(cfg));
  PM_REQUIRE(srv, srv.workers().size() == workers);
  auto client = tcp_client::connect(srv.port());
  PM_REQUIRE(srv, client.has_value());
  PM_REQUIRE(srv, client->echo(first));
  return std::move(*client);
}

}  // namespace

PM_TEST_CASE("echo_server starts one master and N workers with only the descriptors they need",
          "[supervision][echo]") {
  server srv(echo_server);
  server_config cfg;
  cfg.workers = 2;
  PM_REQUIRE(srv, srv.start(cfg));

  const pid_t master = srv.master_pid();
  auto workers = srv.workers();
  PM_REQUIRE(srv, workers.size() == 2);
  // Exactly the master and two workers: no other child, no grandchild.
  PM_CHECK(srv, children_of(master).size() == 2);
  for (pid_t w : workers) {
    INFO("worker " << w);
    PM_CHECK(srv, children_of(w).empty());
    auto st = read_stat(w);
    PM_REQUIRE(srv, st.has_value());
    PM_CHECK(srv, st->ppid == master);
  }

  // The pid file names the master.
  PM_CHECK(srv, read_file(srv.pid_path()) == std::to_string(master) + "\n");

  // Two workers in slots 0 and 1 of generation 1, as the log says.
  auto started = srv.started();
  PM_REQUIRE(srv, started.size() == 2);
  std::set<unsigned> slots;
  for (const auto& s : started) {
    slots.insert(s.slot);
    PM_CHECK(srv, s.generation == 1);
    PM_CHECK(srv, std::find(workers.begin(), workers.end(), s.pid) != workers.end());
  }
  PM_CHECK(srv, slots == std::set<unsigned>{0, 1});

  // Echo works, over several connections and on one connection repeatedly.
  for (int i = 0; i < 5; ++i)
    PM_CHECK(srv, echo_once(srv.port(), "hello " + std::to_string(i)));
  {
    auto c = tcp_client::connect(srv.port());
    PM_REQUIRE(srv, c.has_value());
    for (int i = 0; i < 3; ++i)
      PM_CHECK(srv, c->echo("line " + std::to_string(i) + "\n"));
  }

  // Each worker holds only stdio, the listener and its duplicate, its own
  // channel and its own loop's descriptors.
  std::set<std::string> channel_inodes;
  for (pid_t w : workers)
    audit_worker_fds(srv, w, channel_inodes);

  // The master holds the listener once, its control socket (there is a pid
  // file) and one channel end per worker.
  {
    auto master_sockets = socket_inodes(master);
    INFO("master descriptors:\n" << describe_fds(master));
    PM_CHECK(srv, master_sockets.size() == 4);
    PM_CHECK(srv, master_sockets[listening_inode(srv.port())] == 1);
  }

  // Every descriptor the master opened is close-on-exec from birth.
  for (const auto& f : open_fds(master)) {
    if (f.fd <= 2)
      continue;
    INFO("master fd " << f.fd << " -> " << f.target << " lacks FD_CLOEXEC\n"
                      << describe_fds(master));
    PM_CHECK(srv, f.cloexec());
  }

  check_no_zombies(srv);
}

PM_TEST_CASE("a worker killed with SIGKILL is replaced in its slot", "[supervision][echo][respawn]") {
  server srv(echo_server);
  server_config cfg;
  cfg.workers = 2;
  PM_REQUIRE(srv, srv.start(cfg));

  auto slots = srv.slot_pids();
  PM_REQUIRE(srv, slots.size() == 2);
  const pid_t survivor = slots.at(0);
  const pid_t victim = slots.at(1);

  // Freeze the survivor so that only the replacement can answer: the time
  // to an echo is then the time until the new worker accepts.
  PM_REQUIRE(srv, ::kill(survivor, SIGSTOP) == 0);
  PM_REQUIRE(srv, wait_for([&] { return process_state(survivor) == 'T'; }, 5s));

  const auto t0 = steady::now();
  expect_worker_end(victim, "killed by signal 9");
  PM_REQUIRE(srv, ::kill(victim, SIGKILL) == 0);
  // The master holds the listener, so the handshake completes at once; the
  // echo comes back only once a worker accepted.
  auto client = tcp_client::connect(srv.port(), 5s);
  bool echoed = client && client->echo("after respawn\n", 10s);
  const double latency = ms_since(t0);
  ::kill(survivor, SIGCONT);

  WARN("respawn latency (SIGKILL of a worker to the new worker echoing): " << fmt_ms(latency)
                                                                           << " (target 100 ms)");
  PM_REQUIRE(srv, echoed);
  CHECK(latency < 2000.0);

  // A new worker, new pid, same slot, same generation.
  auto started = srv.started();
  std::vector<started_worker> in_slot1;
  for (const auto& s : started)
    if (s.slot == 1)
      in_slot1.push_back(s);
  PM_REQUIRE(srv, in_slot1.size() == 2);
  const pid_t replacement = in_slot1.back().pid;
  PM_CHECK(srv, replacement != victim);
  PM_CHECK(srv, in_slot1.back().generation == 1);
  PM_CHECK(srv, srv.log().find("worker " + std::to_string(victim) +
                               " (slot 1, generation 1) killed by signal 9") != std::string::npos);

  // The victim is reaped (no zombie), the replacement runs beside the survivor.
  PM_CHECK(srv, wait_for([&] { return !is_alive(victim); }, 5s));
  PM_CHECK(srv, srv.zombie_children().empty());
  check_no_zombies(srv);
  auto workers = srv.workers();
  std::sort(workers.begin(), workers.end());
  std::vector<pid_t> expected = {survivor, replacement};
  std::sort(expected.begin(), expected.end());
  PM_CHECK(srv, workers == expected);
  PM_CHECK(srv, srv.slot_pids().at(0) == survivor);  // slot 0 untouched

  // Both serve.
  PM_CHECK(srv, wait_for([&] { return srv.is_ready(replacement); }, 10s));
  for (int i = 0; i < 4; ++i)
    PM_CHECK(srv, echo_once(srv.port()));

  // The replacement was forked by a master that holds other channels: it
  // holds none of them. (First let it close the connection it served.)
  client->close();
  PM_CHECK(srv, wait_for([&] { return socket_inodes(replacement).size() == 2; }, 5s));
  std::set<std::string> channels;
  for (pid_t w : srv.workers())
    audit_worker_fds(srv, w, channels);
}

PM_TEST_CASE("repeated respawns leak nothing in the master", "[supervision][echo][respawn]") {
  server srv(echo_server);
  server_config cfg;
  cfg.workers = 2;
  PM_REQUIRE(srv, srv.start(cfg));
  const pid_t master = srv.master_pid();
  const int fds_before = count_open_fds(master);
  INFO("master descriptors at start: " << fds_before);

  // Kills the worker of `slot` and waits until its replacement is ready.
  auto replace = [&](unsigned slot) {
    const pid_t old = srv.slot_pids().at(slot);
    expect_worker_end(old, "killed by signal 9");
    PM_REQUIRE(srv, ::kill(old, SIGKILL) == 0);
    PM_REQUIRE(srv, wait_for(
                        [&] {
                          auto now = srv.slot_pids();
                          return now.at(slot) != old && srv.is_ready(now.at(slot));
                        },
                        10s));
  };
  // Three times per slot: within the restart intensity (5 in 10 s), so
  // every respawn is immediate.
  for (int i = 0; i < 3; ++i) {
    replace(0);
    replace(1);
  }
  // Both at once: one SIGCHLD may stand for both exits.
  auto before = srv.slot_pids();
  for (auto [slot, pid] : before) {
    expect_worker_end(pid, "killed by signal 9");
    PM_REQUIRE(srv, ::kill(pid, SIGKILL) == 0);
  }
  PM_REQUIRE(srv, wait_for(
                      [&] {
                        auto now = srv.slot_pids();
                        for (auto [slot, pid] : now)
                          if (pid == before.at(slot) || !srv.is_ready(pid))
                            return false;
                        return true;
                      },
                      10s));

  PM_CHECK(srv, srv.started().size() == 2 + 6 + 2);
  PM_CHECK(srv, srv.log().find("next respawn in") == std::string::npos);
  PM_CHECK(srv, wait_for([&] { return srv.workers().size() == 2; }, 10s));
  check_no_zombies(srv);
  // Every dead worker's channel end is closed in the master.
  INFO("master descriptors now:\n" << describe_fds(master));
  PM_CHECK(srv, wait_for([&] { return count_open_fds(master) == fds_before; }, 5s));
  for (int i = 0; i < 4; ++i)
    PM_CHECK(srv, echo_once(srv.port()));
}

PM_TEST_CASE("QUIT serves the connections still waiting in the accept queue",
          "[supervision][echo][quit]") {
  server srv(echo_server);
  server_config cfg;
  cfg.workers = 2;
  cfg.extra = {"--shutdown-timeout", "60000"};
  PM_REQUIRE(srv, srv.start(cfg));
  const auto workers = srv.workers();
  PM_REQUIRE(srv, workers.size() == 2);

  // With the workers frozen, the kernel completes handshakes into the
  // listener's queue and nobody accepts them.
  for (pid_t w : workers)
    PM_REQUIRE(srv, ::kill(w, SIGSTOP) == 0);
  PM_REQUIRE(
      srv,
      wait_for([&] { return process_state(workers[0]) == 'T' && process_state(workers[1]) == 'T'; },
               5s));
  std::vector<tcp_client> queued;
  for (int i = 0; i < 5; ++i) {
    auto c = tcp_client::connect(srv.port());
    PM_REQUIRE(srv, c.has_value());
    PM_REQUIRE(srv, c->send_all("queued " + std::to_string(i) + "\n"));
    queued.push_back(std::move(*c));
  }

  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  PM_REQUIRE(srv,
             wait_for([&] { return srv.log().find("graceful stop") != std::string::npos; }, 10s));
  for (pid_t w : workers)
    ::kill(w, SIGCONT);

  // Every queued connection is accepted and answered, none reset.
  for (int i = 0; i < 5; ++i) {
    const std::string want = "queued " + std::to_string(i) + "\n";
    auto got = queued[static_cast<std::size_t>(i)].recv_exact(want.size(), 10s);
    INFO("queued connection "
         << i << ": "
         << (got ? "answered" : to_string(queued[static_cast<std::size_t>(i)].last_status())));
    PM_CHECK(srv, got.has_value());
    if (got)
      PM_CHECK(srv, *got == want);
  }
  for (auto& c : queued)
    c.close();
  auto status = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  PM_CHECK(srv, !file_exists(srv.pid_path()));
}

PM_TEST_CASE("QUIT drains: an open session is served to its end, then the master exits",
          "[supervision][echo][quit]") {
  server srv(echo_server);
  auto client = start_with_client(srv, {"--shutdown-timeout", "60000"}, "before quit\n");
  const auto workers = srv.workers();

  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  PM_REQUIRE(srv,
             wait_for([&] { return srv.log().find("graceful stop") != std::string::npos; }, 10s));
  // The idle worker leaves; the one serving the client stays.
  PM_CHECK(srv, wait_for([&] { return srv.workers().size() == 1; }, 10s));

  // Data sent after the QUIT is still echoed, more than once.
  PM_CHECK(srv, client.echo("after quit 1\n"));
  PM_CHECK(srv, client.echo("after quit 2\n"));

  // The master waits for that client: still up a while later, pid file in place.
  PM_CHECK(srv, !srv.master().wait_exit(500ms).has_value());
  PM_CHECK(srv, client.echo("still served\n"));
  PM_CHECK(srv, file_exists(srv.pid_path()));
  check_no_zombies(srv);

  client.close();
  auto status = srv.master().wait_exit(10s);
  PM_REQUIRE(srv, status.has_value());
  INFO("master " << describe_status(*status));
  PM_CHECK(srv, exit_code_of(*status) == 0);
  PM_CHECK(srv, wait_for([&] { return all_gone_or_zombie(workers); }, 5s));
  for (pid_t w : workers)
    PM_CHECK(srv, !is_alive(w));
  PM_CHECK(srv, !file_exists(srv.pid_path()));
  PM_CHECK(srv, srv.log().find("every worker has exited") != std::string::npos);
}

PM_TEST_CASE("QUIT with a client that never closes ends at the shutdown timeout",
          "[supervision][echo][quit]") {
  server srv(echo_server);
  auto client = start_with_client(srv, {"--shutdown-timeout", "1000"}, "hold\n");
  const auto workers = srv.workers();

  // Through the control command this time: `-s quit` reads the pid file.
  const auto t0 = steady::now();
  auto ctl = run(srv.dir(), echo_server, {"-s", "quit", "--pid-file", srv.pid_path()});
  INFO("-s quit: " << ctl.err);
  PM_REQUIRE(srv, ctl.code() == 0);

  auto status = srv.master().wait_exit(10s);
  const double took = ms_since(t0);
  WARN("QUIT with a client that never closes, --shutdown-timeout 1000: master exited after "
       << fmt_ms(took) << "; "
       << (srv.log().find("drain deadline reached") != std::string::npos
               ? "the worker met its drain deadline"
               : "the worker did not log a drain deadline")
       << (srv.log().find("sending SIGKILL") != std::string::npos ? ", SIGKILL was needed" : ""));
  PM_REQUIRE(srv, status.has_value());
  INFO("master " << describe_status(*status));
  PM_CHECK(srv, exit_code_of(*status) == 0);
  // The worker's hard stop comes at 1000 - 1000/5/2 = 900 ms after the quit
  // reached it: not before, and well before the master would have to
  // SIGKILL it (at 1000 ms) - with room for two loaded cores.
  PM_CHECK(srv, took >= 850.0);
  PM_CHECK(srv, took < 1000.0 + 3000.0);
  PM_CHECK(srv, srv.log().find("drain deadline reached") != std::string::npos);
  PM_CHECK(srv, !srv.needed_sigkill());
  PM_CHECK(srv, wait_for([&] { return all_gone_or_zombie(workers); }, 5s));
  for (pid_t w : workers)
    PM_CHECK(srv, !is_alive(w));
  PM_CHECK(srv, !file_exists(srv.pid_path()));
  // The client is cut off at the deadline.
  auto end = client.wait_closed(5s);
  INFO("client saw " << to_string(end));
  PM_CHECK(srv, (end == tcp_client::status::eof || end == tcp_client::status::reset));
}

PM_TEST_CASE("TERM during a graceful stop turns it into a fast stop", "[supervision][echo][stop]") {
  server srv(echo_server);
  // The client holds the drain open.
  auto client = start_with_client(srv, {"--shutdown-timeout", "60000", "--terminate-timeout", "3000"},
                                  "x");
  const auto workers = srv.workers();

  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  PM_REQUIRE(srv,
             wait_for([&] { return srv.log().find("graceful stop") != std::string::npos; }, 10s));
  PM_CHECK(srv, client.echo("still served"));

  const auto t0 = steady::now();
  PM_REQUIRE(srv, srv.master().signal(SIGTERM));
  auto status = srv.master().wait_exit(3000ms + 5000ms);
  const double took = ms_since(t0);
  WARN("SIGTERM during a graceful stop: master exited after " << fmt_ms(took));
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  // The workers exit on the terminate command, long before the master's
  // SIGKILL escalation (terminate_timeout, 3000 ms) could have done it.
  PM_CHECK(srv, took < 2000.0);
  PM_CHECK(srv, !srv.needed_sigkill());
  PM_CHECK(srv, wait_for([&] { return all_gone_or_zombie(workers); }, 5s));
  for (pid_t w : workers)
    PM_CHECK(srv, !is_alive(w));
  PM_CHECK(srv, !file_exists(srv.pid_path()));
  auto end = client.wait_closed(5s);
  INFO("client saw " << to_string(end));
  PM_CHECK(srv, end != tcp_client::status::timeout);
}

PM_TEST_CASE("TERM and INT stop master and workers fast", "[supervision][echo][stop]") {
  for (int signo : {SIGTERM, SIGINT}) {
    DYNAMIC_SECTION("signal " << ::sigabbrev_np(signo)) {
      server srv(echo_server);
      server_config cfg;
      cfg.workers = 2;
      cfg.extra = {"--terminate-timeout", "3000"};
      PM_REQUIRE(srv, srv.start(cfg));
      const auto workers = srv.workers();
      PM_REQUIRE(srv, workers.size() == 2);
      auto client = tcp_client::connect(srv.port());  // an open session does not hold a fast stop
      PM_REQUIRE(srv, client.has_value());
      PM_REQUIRE(srv, client->echo("x"));
      check_no_zombies(srv);

      const auto t0 = steady::now();
      PM_REQUIRE(srv, srv.master().signal(signo));
      auto status = srv.master().wait_exit(3000ms + 5000ms);
      const double took = ms_since(t0);
      WARN("SIG" << ::sigabbrev_np(signo) << ": master exited after " << fmt_ms(took));
      PM_REQUIRE(srv, status.has_value());
      INFO("master " << describe_status(*status));
      PM_CHECK(srv, exit_code_of(*status) == 0);
      // Not by the SIGKILL escalation at terminate_timeout (3000 ms).
      PM_CHECK(srv, took < 2000.0);
      PM_CHECK(srv, !srv.needed_sigkill());
      PM_CHECK(srv, wait_for([&] { return all_gone_or_zombie(workers); }, 5s));
      for (pid_t w : workers)
        PM_CHECK(srv, !is_alive(w));
      PM_CHECK(srv, !file_exists(srv.pid_path()));
      PM_CHECK(srv, srv.log().find("fast stop") != std::string::npos);
    }
  }
}

PM_TEST_CASE("workers leave when the master is killed with SIGKILL", "[supervision][echo][orphans]") {
  // Orphaned workers are reparented to this test, not to PID 1 (which may
  // never reap them in a container), so that none is left as a zombie.
  subreaper_scope reaper;
  server srv(echo_server);
  server_config cfg;
  cfg.workers = 2;
  PM_REQUIRE(srv, srv.start(cfg));
  const auto workers = srv.workers();
  PM_REQUIRE(srv, workers.size() == 2);
  struct reap_at_end {
    std::vector<pid_t> pids;
    ~reap_at_end() { subreaper_scope::reap(pids); }
  } reap_workers{workers};
  // An idle kept-open session: its worker drains until the orphan deadline.
  auto client = tcp_client::connect(srv.port());
  PM_REQUIRE(srv, client.has_value());
  PM_REQUIRE(srv, client->echo("x"));

  const auto t0 = steady::now();
  srv.master().expect_signal(SIGKILL);
  PM_REQUIRE(srv, srv.master().signal(SIGKILL));
  auto status = srv.master().wait_exit(5s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == -SIGKILL);

  // Gone, or a zombie waiting for its new parent (this test) to reap it.
  const bool gone = wait_for([&] { return all_gone_or_zombie(workers); }, 10s, 5ms);
  const double took = ms_since(t0);
  std::string states;
  for (pid_t w : workers) {
    char s = process_state(w);
    auto st = read_stat(w);
    states += " worker " + std::to_string(w) + ": " +
              (s == '\0'  ? std::string("gone")
               : s == 'Z' ? "exited, zombie of " + std::to_string(st ? st->ppid : 0)
                          : std::string("still running, state ") + s);
  }
  WARN("master SIGKILLed: no worker running after " << fmt_ms(took) << " (target ~500 ms, the orphan timeout);" << states);
  PM_REQUIRE(srv, gone);
  // The worker holding an idle session drains until the orphan deadline:
  // 500 ms, its hard stop at 450 ms after it saw the channel close. Not
  // before, and not much after (the design's ~500 ms, on two loaded cores).
  CHECK(took >= 400.0);
  CHECK(took < 1500.0);
  auto end = client->wait_closed(5s);
  INFO("client saw " << to_string(end));
  PM_CHECK(srv, end != tcp_client::status::timeout);
}

PM_TEST_CASE("USR1 reopens the log files of master and workers", "[supervision][echo][reopen]") {
  server srv(echo_server);
  server_config cfg;
  cfg.workers = 2;
  cfg.log_file = true;
  PM_REQUIRE(srv, srv.start(cfg));
  const auto workers = srv.workers();
  PM_REQUIRE(srv, workers.size() == 2);

  const std::string path = srv.log_path();
  const std::string rotated = path + ".1";
  PM_REQUIRE(srv, ::rename(path.c_str(), rotated.c_str()) == 0);
  const std::string before = read_file(rotated);

  PM_REQUIRE(srv, srv.master().signal(SIGUSR1));
  PM_REQUIRE(srv, wait_for([&] { return file_exists(path); }, 10s));

  // Master and both workers now write to the new file, none to the old one.
  auto writes_to_new_only = [&](pid_t pid) {
    bool to_new = false, to_old = false;
    for (const auto& f : open_fds(pid)) {
      if (f.target == path)
        to_new = true;
      if (f.target == rotated)
        to_old = true;
    }
    return to_new && !to_old;
  };
  for (pid_t p : {srv.master_pid(), workers[0], workers[1]}) {
    INFO("process " << p << " descriptors:\n" << describe_fds(p));
    PM_CHECK(srv, wait_for([&] { return writes_to_new_only(p); }, 10s));
  }

  // New lines go to the new file, from the master and from the workers.
  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  auto status = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);

  const std::string fresh = read_file(path);
  const std::string old = read_file(rotated);
  INFO("--- new log ---\n" << fresh << "--- rotated log ---\n" << old);
  PM_CHECK(srv, fresh.find("master: received SIGQUIT") != std::string::npos);
  PM_CHECK(srv, fresh.find("master: graceful stop") != std::string::npos);
  PM_CHECK(srv, fresh.find("master: exit") != std::string::npos);
  for (pid_t w : workers) {
    INFO("worker " << w);
    PM_CHECK(srv, fresh.find("] " + std::to_string(w) + " worker ") != std::string::npos);
    PM_CHECK(srv, old.find("] " + std::to_string(w) + " worker ") == std::string::npos);
  }
  // The rotated file keeps what it had and gets nothing from after the reopen.
  PM_CHECK(srv, old.rfind(before, 0) == 0);
  PM_CHECK(srv, old.find("listening on") != std::string::npos);
  PM_CHECK(srv, old.find("graceful stop") == std::string::npos);
  PM_CHECK(srv, fresh.find("listening on") == std::string::npos);
}

// Needs the test hook in examples/echo: ECHO_CRASH_AT_START=1 makes every
// worker exit(3) as soon as it starts.
PM_TEST_CASE("a worker that crashes at start is respawned with backoff, not in a fork storm",
          "[supervision][echo][crash-loop]") {
  server srv(echo_server);
  expect_log_line("exited with code 3 unexpectedly");  // the crash loop under test
  PM_REQUIRE(srv, srv.start(crashing_echo_config()));
  const pid_t master = srv.master_pid();

  const long ticks_per_s = ::sysconf(_SC_CLK_TCK);
  auto cpu0 = cpu_ticks(master);
  PM_REQUIRE(srv, cpu0.has_value());
  // A measurement window, not a wait for a condition.
  for (int i = 0; i < 30; ++i) {
    std::this_thread::sleep_for(100ms);
    srv.workers();  // records the short-lived workers for the guard
  }
  auto cpu1 = cpu_ticks(master);
  PM_REQUIRE(srv, cpu1.has_value());
  const auto spawns = srv.started().size();
  const auto cpu = *cpu1 - *cpu0;
  WARN("crash loop: " << spawns << " workers started in 3 s (defaults allow ~10); master CPU "
                      << cpu << " ticks (" << (1000.0 * static_cast<double>(cpu) / ticks_per_s)
                      << " ms) over those 3 s");

  const std::string log = srv.log();
  PM_CHECK(srv, spawns >= 2);  // it does respawn
  PM_CHECK(srv, spawns <= 15);
  PM_CHECK(srv, log.find("exited with code 3 unexpectedly") != std::string::npos);
  PM_CHECK(srv, log.find("next respawn in") != std::string::npos);
  PM_CHECK(srv, cpu < static_cast<unsigned long long>(ticks_per_s));  // < 1 s of CPU
  check_no_zombies(srv);

  // QUIT while a respawn timer is pending: it exits, and nothing is respawned.
  // (The 6th backoff, 3200 ms, is armed about 3.1 s after the start.)
  PM_REQUIRE(srv, wait_for([&] { return srv.log().find("next respawn in 3200 ms") != std::string::npos; }, 10s));
  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  auto status = srv.master().wait_exit(10s);
  PM_REQUIRE(srv, status.has_value());
  INFO("master " << describe_status(*status));
  PM_CHECK(srv, exit_code_of(*status) == 0);
  const std::string final_log = srv.log();
  auto quit_at = final_log.find("received SIGQUIT");
  PM_REQUIRE(srv, quit_at != std::string::npos);
  PM_CHECK(srv, final_log.find("started worker", quit_at) == std::string::npos);
  PM_CHECK(srv, !file_exists(srv.pid_path()));
  for (pid_t p : srv.master().recorded())
    if (p != master)
      PM_CHECK(srv, !is_running(p));
}

// --- bad input ---------------------------------------------------------------

PM_TEST_CASE("echo_server rejects bad command lines", "[supervision][echo][cli]") {
  temp_dir dir("procmodel-cli");

  SECTION("unknown flag: exit 2, the flag named on stderr") {
    auto r = run(dir, echo_server, {"--listen", "127.0.0.1:0", "--frobnicate", "7"});
    INFO("stderr: " << r.err << "\nstdout: " << r.out);
    CHECK(r.code() == 2);
    CHECK(r.err.find("--frobnicate") != std::string::npos);
  }
  SECTION("--workers 0: exit 2") {
    auto r = run(dir, echo_server, {"--listen", "127.0.0.1:0", "--workers", "0"});
    INFO("stderr: " << r.err);
    CHECK(r.code() == 2);
    CHECK(r.err.find("--workers") != std::string::npos);
  }
  SECTION("--workers abc: exit 2") {
    auto r = run(dir, echo_server, {"--listen", "127.0.0.1:0", "--workers", "abc"});
    INFO("stderr: " << r.err);
    CHECK(r.code() == 2);
    CHECK(r.err.find("--workers") != std::string::npos);
  }
  SECTION("--listen nonsense: non-zero exit, the address named") {
    expect_log_line("invalid listen address 'nonsense'");
    auto r = run(dir, echo_server, {"--listen", "nonsense", "--workers", "1"});
    INFO("stderr: " << r.err);
    CHECK(r.status.has_value());
    CHECK(r.code() > 0);
    CHECK(r.err.find("nonsense") != std::string::npos);
  }
}

PM_TEST_CASE("echo_server refuses a pid file that is a symbolic link", "[supervision][echo][cli]") {
  temp_dir dir("procmodel-cli");
  const std::string target = dir.file("precious");
  const std::string link = dir.file("master.pid");
  write_file(target, "precious content\n");
  REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);

  expect_log_line("is a symbolic link; refusing to write through it");
  auto r =
      run(dir, echo_server, {"--listen", "127.0.0.1:0", "--workers", "1", "--pid-file", link}, 10s);
  INFO("stderr: " << r.err);
  CHECK(r.status.has_value());
  CHECK(r.code() > 0);
  CHECK(r.err.find("symbolic link") != std::string::npos);
  CHECK(read_file(target) == "precious content\n");
  struct stat st {};
  REQUIRE(::lstat(link.c_str(), &st) == 0);
  CHECK(S_ISLNK(st.st_mode));
}

PM_TEST_CASE("the -s control command fails with a message on a bad pid file",
          "[supervision][echo][cli]") {
  temp_dir dir("procmodel-cli");
  const std::string pid_path = dir.file("master.pid");

  SECTION("junk in the pid file") {
    write_file(pid_path, "not a pid\n");
    auto r = run(dir, echo_server, {"-s", "quit", "--pid-file", pid_path});
    INFO("stderr: " << r.err);
    CHECK(r.code() == 1);
    CHECK(r.err.find(pid_path) != std::string::npos);
  }
  SECTION("a stale pid") {
    // A pid that certainly ran and is gone: a child of ours, reaped.
    pid_t dead = ::fork();
    REQUIRE(dead >= 0);
    if (dead == 0)
      ::_exit(0);
    int st = 0;
    REQUIRE(::waitpid(dead, &st, 0) == dead);
    REQUIRE_FALSE(is_alive(dead));
    write_file(pid_path, std::to_string(dead) + "\n");
    auto r = run(dir, echo_server, {"-s", "quit", "--pid-file", pid_path});
    INFO("stderr: " << r.err);
    CHECK(r.code() == 1);
    CHECK(r.err.find("no process") != std::string::npos);
  }
  SECTION("no pid file at all") {
    auto r = run(dir, echo_server, {"-s", "quit", "--pid-file", pid_path});
    INFO("stderr: " << r.err);
    CHECK(r.code() == 1);
    CHECK(r.err.find(pid_path) != std::string::npos);
  }
}

PM_TEST_CASE("a second master with the same pid file is refused", "[supervision][echo][cli]") {
  server srv(echo_server);
  server_config cfg;
  cfg.workers = 1;
  PM_REQUIRE(srv, srv.start(cfg));
  const auto workers = srv.workers();
  const std::string pid_before = read_file(srv.pid_path());

  expect_log_line("another master is running (pid " + std::to_string(srv.master_pid()));
  auto r = run(srv.dir(), echo_server,
               {"--listen", "127.0.0.1:0", "--workers", "1", "--pid-file", srv.pid_path()}, 10s);
  INFO("second master's stderr: " << r.err);
  PM_CHECK(srv, r.status.has_value());
  PM_CHECK(srv, r.code() > 0);
  PM_CHECK(srv, r.err.find(srv.pid_path()) != std::string::npos);

  // The first keeps serving, with the same workers and its pid file.
  PM_CHECK(srv, read_file(srv.pid_path()) == pid_before);
  PM_CHECK(srv, !srv.master().exited());
  PM_CHECK(srv, srv.workers() == workers);
  for (int i = 0; i < 3; ++i)
    PM_CHECK(srv, echo_once(srv.port()));
  check_no_zombies(srv);

  // And a clean stop still works through it.
  PM_REQUIRE(srv, srv.master().signal(SIGTERM));
  auto status = srv.master().wait_exit(10s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  PM_CHECK(srv, !file_exists(srv.pid_path()));
}

// A pid file outlives its master (kill -9, a crash, a reboot) and its pid
// may be reused by any process. `-s` should then refuse, as the start-up
// check (pid_file::names_live_master) does, instead of signalling a
// stranger.
PM_TEST_CASE("the -s control command does not signal a process that is not a master",
          "[supervision][echo][cli]") {
  temp_dir dir("procmodel-cli");
  const std::string pid_path = dir.file("master.pid");
  spawn_options opt;
  opt.stdout_path = dir.file("sleep.log");
  process stranger = process::spawn("/bin/sleep", {"60"}, opt);
  stranger.expect_killed();  // it must outlive the -s attempt; the guard ends it
  REQUIRE(wait_for([&] { return is_running(stranger.pid()); }, 5s));
  write_file(pid_path, std::to_string(stranger.pid()) + "\n");

  // SIGUSR1 ends `sleep` (no core dump, unlike SIGQUIT).
  auto r = run(dir, echo_server, {"-s", "reopen", "--pid-file", pid_path});
  INFO("stderr: " << r.err);
  CHECK(r.code() == 1);
  CHECK(!r.err.empty());
  CHECK(!stranger.wait_exit(300ms).has_value());
  CHECK(is_running(stranger.pid()));
}

// A program that sets options::pid_file (echo_server takes it from
// ECHO_PID_FILE) is controlled with `-s` alone, and --help says where.
PM_TEST_CASE("with a default pid file set by the program, -s needs no --pid-file and --help shows it",
             "[supervision][echo][cli]") {
  server srv(echo_server);
  server_config cfg;
  cfg.workers = 1;
  cfg.pid_file = false;  // no --pid-file: the program's default
  cfg.env = {{"ECHO_PID_FILE", srv.pid_path()}};
  PM_REQUIRE(srv, srv.start(cfg));
  PM_REQUIRE(srv, wait_for([&] {
    return read_file(srv.pid_path()) == std::to_string(srv.master_pid()) + "\n";
  }, 10s));

  auto help = run(srv.dir(), echo_server, {"--help"}, 10s, cfg.env);
  PM_CHECK(srv, help.code() == 0);
  PM_CHECK(srv, help.out.find("(default: " + srv.pid_path() + ")") != std::string::npos);
  PM_CHECK(srv, help.out.find("(default: 127.0.0.1:7000)") != std::string::npos);

  auto status = run(srv.dir(), echo_server, {"-s", "status"}, 10s, cfg.env);
  INFO("-s status: " << status.err);
  PM_CHECK(srv, status.code() == 0);
  PM_CHECK(srv, status.out.find(std::to_string(srv.master_pid()) + "  master") != std::string::npos);

  auto reopen = run(srv.dir(), echo_server, {"-s", "reopen"}, 10s, cfg.env);
  INFO("-s reopen: " << reopen.err);
  PM_CHECK(srv, reopen.code() == 0);
  PM_CHECK(srv, wait_for([&] { return !lines_with(srv.log(), "received SIGUSR1").empty(); }, 5s));

  // Without the program's default nothing names the master.
  auto lost = run(srv.dir(), echo_server, {"-s", "reopen"});
  PM_CHECK(srv, lost.code() == 1);
  PM_CHECK(srv, lost.err.find("needs --pid-file PATH") != std::string::npos);

  auto quit = run(srv.dir(), echo_server, {"-s", "quit"}, 10s, cfg.env);
  PM_CHECK(srv, quit.code() == 0);
  auto st = srv.master().wait_exit(15s);
  PM_REQUIRE(srv, st.has_value());
  PM_CHECK(srv, exit_code_of(*st) == 0);
  PM_CHECK(srv, !file_exists(srv.pid_path()));
}

// The binary an operator runs `-s` from need not be the path the master was
// started from: a symbolic link, a hard link or a copy of the same file is the
// same program. Another program is still refused, and told which one runs.
PM_TEST_CASE("the -s command works from a link or a copy of the master binary and refuses another program",
             "[supervision][echo][cli]") {
  temp_dir bin("procmodel-bin");
  const std::string copy = bin.file("echo_server");
  std::filesystem::copy_file(echo_server, copy);
  REQUIRE(::chmod(copy.c_str(), 0755) == 0);
  const std::string symlink = bin.file("echo-symlink"), hardlink = bin.file("echo-hardlink"),
                    second_copy = bin.file("echo-copy");
  REQUIRE(::symlink(copy.c_str(), symlink.c_str()) == 0);
  REQUIRE(::link(copy.c_str(), hardlink.c_str()) == 0);
  std::filesystem::copy_file(copy, second_copy);
  REQUIRE(::chmod(second_copy.c_str(), 0755) == 0);

  server srv(copy);
  server_config cfg;
  cfg.workers = 1;
  PM_REQUIRE(srv, srv.start(cfg));

  // SIGUSR1 (reopen) is harmless to repeat; the master logs each one.
  int delivered = 0;
  for (const std::string& via : {symlink, hardlink, second_copy, echo_server}) {
    auto r = run(srv.dir(), via, {"-s", "reopen", "--pid-file", srv.pid_path()});
    INFO(via << ": " << r.err);
    PM_CHECK(srv, r.code() == 0);
    PM_CHECK(srv, r.err.empty());
    if (r.code() == 0) ++delivered;
  }
  PM_CHECK(srv, wait_for([&] { return static_cast<int>(lines_with(srv.log(), "received SIGUSR1").size()) == delivered; },
                         5s));

  // http_server is another program: refused, and the message names both.
  auto r = run(srv.dir(), http_server, {"-s", "reopen", "--pid-file", srv.pid_path()});
  INFO("http_server -s reopen: " << r.err);
  PM_CHECK(srv, r.code() == 1);
  PM_CHECK(srv, r.err.find("names process " + std::to_string(srv.master_pid()) + ", which runs " +
                           copy + ": another program, neither this one") != std::string::npos);
  PM_CHECK(srv, r.err.find("stale") == std::string::npos);
  std::this_thread::sleep_for(300ms);
  PM_CHECK(srv, static_cast<int>(lines_with(srv.log(), "received SIGUSR1").size()) == delivered);
  PM_CHECK(srv, !srv.master().exited());
}

// After a package upgrade replaced the binary on disk, /proc/<pid>/exe of
// the running master reads "<path> (deleted)". It is still the master that
// owns the pid file, and a second one must still be refused.
PM_TEST_CASE("a second master is refused even after the binary was replaced on disk",
          "[supervision][echo][cli]") {
  temp_dir bin("procmodel-bin");
  const std::string copy = bin.file("echo_server");
  std::filesystem::copy_file(echo_server, copy);
  REQUIRE(::chmod(copy.c_str(), 0755) == 0);

  server srv(copy);
  server_config cfg;
  cfg.workers = 1;
  PM_REQUIRE(srv, srv.start(cfg));
  const std::string pid_before = read_file(srv.pid_path());

  // Replace the file the way package managers do: a new file renamed over it.
  std::filesystem::copy_file(echo_server, copy + ".new");
  REQUIRE(::chmod((copy + ".new").c_str(), 0755) == 0);
  REQUIRE(::rename((copy + ".new").c_str(), copy.c_str()) == 0);

  expect_log_line("another master is running (pid " + std::to_string(srv.master_pid()));
  auto r = run(srv.dir(), copy,
               {"--listen", "127.0.0.1:0", "--workers", "1", "--pid-file", srv.pid_path()}, 5s);
  INFO("second master's stderr: " << r.err);
  PM_CHECK(srv, r.status.has_value());
  PM_CHECK(srv, r.code() > 0);
  PM_CHECK(srv, read_file(srv.pid_path()) == pid_before);
  PM_CHECK(srv, !srv.master().exited());
  PM_CHECK(srv, echo_once(srv.port()));
}

// --- the worker column of the signal table ------------------------------------
// A worker signalled directly (by an operator, a process manager, a kill of
// the process group): TERM/INT exit now, QUIT drains, USR1 reopens, the rest
// is ignored. The master learns only from the exit and replaces it.

namespace {

// The master's line for the end of `worker` (any status), or "".
std::string end_line(server& srv, pid_t worker) {
  for (const auto& l : lines_with(srv.log(), "worker " + std::to_string(worker) + " (slot "))
    if (l.find(" exited with code ") != std::string::npos ||
        l.find(" killed by signal ") != std::string::npos)
      return l;
  return "";
}

// Waits until slot 0 has a ready worker other than `old`; that worker.
pid_t replacement_of(server& srv, pid_t old) {
  pid_t now = 0;
  const bool replaced = wait_for(
      [&] {
        now = srv.slot_pids().at(0);
        return now != old && srv.is_ready(now);
      },
      10s);
  return replaced ? now : 0;
}

}  // namespace

PM_TEST_CASE("TERM or INT sent to a worker ends it at once, session and all, and it is replaced",
             "[supervision][echo][worker-signals]") {
  const int signo = GENERATE(SIGTERM, SIGINT);
  INFO("signal " << signo);
  server srv(echo_server);
  auto client = start_with_client(srv, {"--shutdown-timeout", "60000"}, "hi\n", 1);
  const pid_t worker = srv.workers().at(0);

  const auto t0 = steady::now();
  PM_REQUIRE(srv, ::kill(worker, signo) == 0);
  const auto end = client.wait_closed(5s);
  const double took = ms_since(t0);
  INFO("client saw " << to_string(end) << " after " << fmt_ms(took));
  PM_CHECK(srv, end != tcp_client::status::timeout);
  PM_CHECK(srv, took < 2000.0);  // now, not after a drain of up to 60 s
  PM_CHECK(srv, wait_for([&] { return !end_line(srv, worker).empty(); }, 5s));
  PM_CHECK(srv, end_line(srv, worker).find("exited with code 0") != std::string::npos);
  PM_CHECK(srv, srv.log().find("draining (a signal to the worker)") == std::string::npos);
  PM_CHECK(srv, replacement_of(srv, worker) != 0);
  PM_CHECK(srv, echo_once(srv.port()));
}

PM_TEST_CASE("QUIT sent to a worker drains it: its session is served to the end, then it exits 0",
             "[supervision][echo][worker-signals]") {
  server srv(echo_server);
  auto client = start_with_client(srv, {"--shutdown-timeout", "60000"}, "hi\n", 1);
  const pid_t worker = srv.workers().at(0);

  PM_REQUIRE(srv, ::kill(worker, SIGQUIT) == 0);
  PM_REQUIRE(srv, wait_for([&] { return srv.log().find("draining (a signal to the worker)") != std::string::npos; }, 5s));
  // Still served, more than once, and still there a while later.
  PM_CHECK(srv, client.echo("after quit 1\n"));
  std::this_thread::sleep_for(300ms);  // a window in which it must not leave
  PM_CHECK(srv, is_running(worker));
  PM_CHECK(srv, end_line(srv, worker).empty());
  PM_CHECK(srv, client.echo("after quit 2\n"));

  client.close();
  PM_CHECK(srv, wait_for([&] { return !end_line(srv, worker).empty(); }, 5s));
  PM_CHECK(srv, end_line(srv, worker).find("exited with code 0") != std::string::npos);
  PM_CHECK(srv, replacement_of(srv, worker) != 0);
  PM_CHECK(srv, echo_once(srv.port()));
}

PM_TEST_CASE("USR1 sent to a worker reopens its log file, and only its own",
             "[supervision][echo][worker-signals]") {
  server srv(echo_server);
  server_config cfg;
  cfg.workers = 1;
  cfg.log_file = true;
  PM_REQUIRE(srv, srv.start(cfg));
  const pid_t worker = srv.workers().at(0);
  const std::string path = srv.log_path();
  const std::string rotated = path + ".1";
  audit_log_file(rotated);
  PM_REQUIRE(srv, ::rename(path.c_str(), rotated.c_str()) == 0);

  PM_REQUIRE(srv, ::kill(worker, SIGUSR1) == 0);
  auto holds = [](pid_t pid, const std::string& file) {
    for (const auto& f : open_fds(pid))
      if (f.target == file) return true;
    return false;
  };
  INFO("worker descriptors:\n" << describe_fds(worker));
  PM_CHECK(srv, wait_for([&] { return holds(worker, path) && !holds(worker, rotated); }, 5s));
  // The master was not told: it still writes to the rotated file.
  PM_CHECK(srv, holds(srv.master_pid(), rotated));
  PM_CHECK(srv, !holds(srv.master_pid(), path));
  PM_CHECK(srv, is_running(worker));
  PM_CHECK(srv, echo_once(srv.port()));
}

PM_TEST_CASE("HUP, USR2, WINCH, TTIN and TTOU sent to a worker are ignored; it serves on and exits 0 later",
             "[supervision][echo][worker-signals]") {
  server srv(echo_server);
  auto client = start_with_client(srv, {}, "hi\n", 1);
  const pid_t worker = srv.workers().at(0);
  for (int signo : {SIGHUP, SIGUSR2, SIGWINCH, SIGTTIN, SIGTTOU}) {
    INFO("signal " << signo);
    PM_REQUIRE(srv, ::kill(worker, signo) == 0);
    PM_CHECK(srv, client.echo("still here\n"));
  }
  // Each echo above took a turn of the worker's loop after its signal was
  // pending on the signalfd, so each signal was read by then; a window for a
  // late reaction anyway.
  std::this_thread::sleep_for(200ms);
  PM_CHECK(srv, is_running(worker));
  PM_CHECK(srv, srv.workers() == std::vector<pid_t>{worker});
  PM_CHECK(srv, end_line(srv, worker).empty());
  PM_CHECK(srv, srv.log().find("draining") == std::string::npos);
  PM_CHECK(srv, client.echo("and here\n"));

  client.close();
  PM_REQUIRE(srv, srv.master().signal(SIGQUIT));
  auto status = srv.master().wait_exit(10s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  PM_CHECK(srv, end_line(srv, worker).find("exited with code 0") != std::string::npos);
}

// graceful_term_signals in a real supervisor (echo_server with
// ECHO_GRACEFUL_TERM=1): TERM drains the master and the workers; -s stop
// then means SIGINT, the fast stop.
PM_TEST_CASE("with graceful_term_signals TERM drains: an open session is served, then the master exits 0",
             "[supervision][echo][worker-signals][graceful-term]") {
  server srv(echo_server);
  auto client = start_with_client(srv, {"--shutdown-timeout", "60000"}, "hi\n", 2,
                                  {{"ECHO_GRACEFUL_TERM", "1"}});
  const auto workers = srv.workers();

  SECTION("TERM to the master") {
    PM_REQUIRE(srv, srv.master().signal(SIGTERM));
    PM_REQUIRE(srv, wait_for([&] { return srv.log().find("graceful stop") != std::string::npos; }, 5s));
    PM_CHECK(srv, srv.log().find("fast stop") == std::string::npos);
    PM_CHECK(srv, client.echo("after term\n"));
    PM_CHECK(srv, !srv.master().wait_exit(500ms).has_value());
    PM_CHECK(srv, client.echo("still served\n"));
    client.close();
    auto status = srv.master().wait_exit(10s);
    PM_REQUIRE(srv, status.has_value());
    PM_CHECK(srv, exit_code_of(*status) == 0);
    for (pid_t w : workers)
      PM_CHECK(srv, end_line(srv, w).find("exited with code 0") != std::string::npos);
  }
  SECTION("TERM to each worker") {
    for (pid_t w : workers) PM_REQUIRE(srv, ::kill(w, SIGTERM) == 0);
    PM_REQUIRE(srv, wait_for([&] { return count_of(srv.log(), "draining (a signal to the worker)") >= 2; }, 5s));
    PM_CHECK(srv, client.echo("after term\n"));  // the one serving it drains, not exits
    client.close();
    for (pid_t w : workers) {
      PM_CHECK(srv, wait_for([&] { return !end_line(srv, w).empty(); }, 5s));
      PM_CHECK(srv, end_line(srv, w).find("exited with code 0") != std::string::npos);
    }
  }
  SECTION("-s stop is the fast stop (SIGINT)") {
    // The control command runs the same program, with the same signal table.
    auto r = run(srv.dir(), echo_server, {"-s", "stop", "--pid-file", srv.pid_path()}, 10s,
                 {{"ECHO_GRACEFUL_TERM", "1"}});
    PM_CHECK(srv, r.code() == 0);
    auto status = srv.master().wait_exit(10s);
    PM_REQUIRE(srv, status.has_value());
    PM_CHECK(srv, exit_code_of(*status) == 0);
    PM_CHECK(srv, srv.log().find("received SIGINT") != std::string::npos);
    PM_CHECK(srv, srv.log().find("fast stop") != std::string::npos);
    PM_CHECK(srv, client.wait_closed(5s) != tcp_client::status::timeout);
  }
}

// --- the pid file -------------------------------------------------------------

PM_TEST_CASE("the pid file appears whole: written to a temporary file, then renamed into place",
             "[supervision][echo][pid-file]") {
  // inotify on the directory sees every step: an atomic write shows the pid
  // file only as the target of a rename, never created or written in place
  // (a reader of a file written in place can see it empty or half written).
  temp_dir watch_dir("procmodel-pid");
  int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  REQUIRE(in >= 0);
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } close_in{in};
  REQUIRE(::inotify_add_watch(in, watch_dir.path().c_str(),
                              IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO) >= 0);
  server srv(echo_server);
  server_config cfg;
  cfg.workers = 1;
  cfg.pid_file = false;
  const std::string pid_path = watch_dir.file("master.pid");
  cfg.extra = {"--pid-file", pid_path};
  PM_REQUIRE(srv, srv.start(cfg));
  PM_REQUIRE(srv, wait_for([&] { return read_file(pid_path) == std::to_string(srv.master_pid()) + "\n"; }, 10s));

  std::vector<std::string> on_pid_file;  // what happened to "master.pid" itself
  bool renamed_in = false;
  alignas(inotify_event) char buf[8192];
  for (ssize_t n; (n = ::read(in, buf, sizeof buf)) > 0;)
    for (char* p = buf; p < buf + n;) {
      auto* e = reinterpret_cast<inotify_event*>(p);
      if (e->len && std::string(e->name) == "master.pid") {
        if (e->mask & IN_MOVED_TO) renamed_in = true;
        if (e->mask & IN_CREATE) on_pid_file.push_back("created in place");
        if (e->mask & IN_MODIFY) on_pid_file.push_back("written in place");
      }
      p += sizeof(inotify_event) + e->len;
    }
  INFO("events on master.pid other than the rename: " << on_pid_file.size());
  for (const auto& what : on_pid_file) INFO(what);
  PM_CHECK(srv, renamed_in);
  PM_CHECK(srv, on_pid_file.empty());
  // No temporary file is left: it was the one renamed (beside the pid
  // file lives only the control socket, master.pid.sock).
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(watch_dir.path()))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  PM_CHECK(srv, names == std::vector<std::string>{"master.pid", "master.pid.sock"});
}
