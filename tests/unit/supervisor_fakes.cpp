#include <procmodel/supervisor.hpp>

#include "support/catch.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <functional>
#include <vector>

#include <procmodel/testing/fake_loop.hpp>
#include <procmodel/testing/fake_spawner.hpp>

using namespace std::chrono_literals;
using namespace procmodel;
using procmodel::testing::exited_with;
using procmodel::testing::fake_loop;
using procmodel::testing::fake_spawner;
using procmodel::testing::killed_by;

namespace {

// Never runs: the fake spawner starts nothing.
struct idle_worker {
  void operator()(worker_context&) {}
};

using fake_supervisor =
    basic_supervisor<idle_worker, fake_spawner, nginx_signals, nginx_lifecycle, fake_loop>;

constexpr timer_id escalation{timer_kind::kill_escalation, 0};

options two_workers() {
  options o;
  o.workers = 2;
  o.listen.clear();   // no listeners
  o.without_listeners = true;
  o.pid_file.clear(); // no pid file
  o.level = log_level::error;
  o.shutdown_timeout = 10s;
  o.terminate_timeout = 5s;
  return o;
}

// Runs `script` inside sup.run() with the fake spawner at hand; returns run()'s code.
int run(fake_supervisor& sup, const std::function<void(fake_loop&, fake_spawner&)>& script) {
  bool ran = false;
  sup.loop().on_run([&](fake_loop& loop) {
    ran = true;
    script(loop, fake_spawner::of(loop.context()));
  });
  int code = sup.run();
  REQUIRE(ran);
  return code;
}

// The next message on a worker's channel end.
message next(channel& c) {
  message m;
  REQUIRE(c.receive(m) == receive_status::received);
  return m;
}

// The worker end of the channel of the request for `pid`, as the supervisor
// laid out keep_fds: the last element.
channel& worker_end(fake_spawner& sp, pid_t pid) {
  auto& w = sp.at(pid);
  REQUIRE_FALSE(w.request.keep_fds.empty());
  REQUIRE(w.channel_end.fd() == w.request.keep_fds.back());
  return w.channel_end;
}

std::vector<pid_t> table_pids(const fake_supervisor& sup) {
  std::vector<pid_t> out;
  for (const auto& p : sup.lifecycle().processes()) out.push_back(p.pid);
  return out;
}

}  // namespace

TEST_CASE("supervisor with fakes: start spawns one worker per slot", "[supervisor][fakes]") {
  fake_supervisor sup(two_workers());
  int code = run(sup, [&](fake_loop& loop, fake_spawner& sp) {
    REQUIRE(sp.spawn_count() == 2);
    for (unsigned k = 0; k < 2; ++k) {
      const auto& req = sp.workers()[k].request;
      CHECK(req.slot == k);
      CHECK(req.generation == 1);
      CHECK(req.keep_fds.size() == 1);  // no listeners: only the channel
      CHECK(req.master == &loop.context());
      CHECK(req.body);
      CHECK(req.on_exit);
    }
    CHECK(table_pids(sup) == std::vector<pid_t>{1000, 1001});
    CHECK(sup.lifecycle().current_phase() == phase::running);
    CHECK(loop.watched_fds().size() == 2);  // the master's channel ends
    for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGTTIN, SIGTTOU})
      CHECK(std::count(loop.watched_signals().begin(), loop.watched_signals().end(), s) == 1);
    CHECK_FALSE(loop.stopped());

    // Leave: fast stop, every worker gone.
    loop.raise(SIGTERM);
    sp.exit_all(killed_by(SIGTERM));
    loop.raise(SIGCHLD);
    CHECK(loop.stopped());
  });
  CHECK(code == 0);
}

TEST_CASE("supervisor with fakes: a reaped crash is respawned into its slot",
          "[supervisor][fakes]") {
  fake_supervisor sup(two_workers());
  run(sup, [&](fake_loop& loop, fake_spawner& sp) {
    sp.exit(1000, exited_with(1));
    CHECK(loop.raise(SIGCHLD));
    CHECK(sp.reaps() == 1);
    CHECK(sp.pending_exits() == 0);

    REQUIRE(sp.spawn_count() == 3);
    CHECK(sp.workers()[2].pid == 1002);
    CHECK(sp.workers()[2].request.slot == 0);
    CHECK(table_pids(sup) == std::vector<pid_t>{1001, 1002});
    CHECK(sup.lifecycle().processes()[1].restarts == 1);
    CHECK(loop.watched_fds().size() == 2);  // 1000's channel unwatched, 1002's watched
    CHECK(sp.live() == std::vector<pid_t>{1001, 1002});

    // An exit the lifecycle does not know (an adopted orphan) changes nothing.
    sp.exit(31337, exited_with(0));
    loop.raise(SIGCHLD);
    CHECK(sp.spawn_count() == 3);

    loop.raise(SIGTERM);
    sp.exit_all();
    loop.raise(SIGCHLD);
  });
}

TEST_CASE("supervisor with fakes: ready comes up the channel", "[supervisor][fakes]") {
  fake_supervisor sup(two_workers());
  run(sup, [&](fake_loop& loop, fake_spawner& sp) {
    REQUIRE(worker_end(sp, 1001).send({message_type::ready, 0}));
    CHECK(loop.poll_readable() == 1);
    CHECK(sup.lifecycle().processes()[0].state == process_state::starting);
    CHECK(sup.lifecycle().processes()[1].state == process_state::ready);

    // A worker whose channel closes is left to SIGCHLD: it is unwatched, not respawned.
    worker_end(sp, 1000).close();
    const int master_fd = loop.watched_fds().front();
    CHECK(loop.poll_readable() == 1);
    CHECK_FALSE(loop.watching(master_fd));
    CHECK(sp.spawn_count() == 2);

    loop.raise(SIGTERM);
    sp.exit_all();
    loop.raise(SIGCHLD);
  });
}

TEST_CASE("supervisor with fakes: SIGQUIT drains over the channels and exits last",
          "[supervisor][fakes]") {
  fake_supervisor sup(two_workers());
  int code = run(sup, [&](fake_loop& loop, fake_spawner& sp) {
    CHECK(loop.raise(SIGQUIT));
    for (pid_t pid : {1000, 1001}) {
      INFO("worker " << pid);
      auto m = next(worker_end(sp, pid));
      CHECK(m.type == message_type::quit);
      CHECK(m.argument == 10'000);  // the shutdown timeout, in ms
      message more;
      CHECK(worker_end(sp, pid).receive(more) == receive_status::would_block);
    }
    CHECK(loop.due_in(escalation) == 10s);
    CHECK(sup.lifecycle().current_phase() == phase::quitting);

    SECTION("all leave in time") {
      sp.exit(1000, exited_with(0));
      loop.raise(SIGCHLD);
      CHECK_FALSE(loop.stopped());
      sp.exit(1001, exited_with(3));  // however they leave: no respawn
      loop.raise(SIGCHLD);
      CHECK(loop.stopped());
      CHECK(sp.spawn_count() == 2);
      CHECK_FALSE(loop.armed(escalation));
      CHECK(sp.kills().empty());
    }
    SECTION("a straggler is killed at the deadline") {
      sp.exit(1000, exited_with(0));
      loop.raise(SIGCHLD);
      sp.exit_on_kill(true);
      CHECK(loop.advance(9999ms) == 0);
      CHECK(sp.kills().empty());
      CHECK(loop.advance(1ms) == 1);
      CHECK(sp.kills() == std::vector<pid_t>{1001});
      loop.raise(SIGCHLD);
      CHECK(loop.stopped());
    }
  });
  CHECK(code == 0);
}

TEST_CASE("supervisor with fakes: SIGTERM terminates - SIGUSR1 reopens", "[supervisor][fakes]") {
  fake_supervisor sup(two_workers());
  run(sup, [&](fake_loop& loop, fake_spawner& sp) {
    loop.raise(SIGUSR1);
    for (pid_t pid : {1000, 1001}) CHECK(next(worker_end(sp, pid)).type == message_type::reopen);

    loop.raise(SIGTERM);
    for (pid_t pid : {1000, 1001}) CHECK(next(worker_end(sp, pid)).type == message_type::terminate);
    CHECK(loop.due_in(escalation) == 5s);

    loop.raise(SIGQUIT);  // ignored during a fast stop
    message m;
    CHECK(worker_end(sp, 1000).receive(m) == receive_status::would_block);

    sp.exit_all();
    loop.raise(SIGCHLD);
    CHECK(loop.stopped());
  });
}

TEST_CASE("supervisor with fakes: TTIN and TTOU", "[supervisor][fakes]") {
  fake_supervisor sup(two_workers());
  run(sup, [&](fake_loop& loop, fake_spawner& sp) {
    loop.raise(SIGTTIN);
    REQUIRE(sp.spawn_count() == 3);
    CHECK(sp.workers()[2].request.slot == 2);

    loop.raise(SIGTTOU);
    auto m = next(worker_end(sp, 1002));
    CHECK(m.type == message_type::quit);
    sp.exit(1002, exited_with(0));
    loop.raise(SIGCHLD);
    CHECK(sp.spawn_count() == 3);  // not replaced

    loop.raise(SIGTERM);
    sp.exit_all();
    loop.raise(SIGCHLD);
  });
}

TEST_CASE("supervisor with fakes: a failed spawn is retried after the backoff",
          "[supervisor][fakes]") {
  fake_supervisor sup(two_workers());
  run(sup, [&](fake_loop& loop, fake_spawner& sp) {
    const timer_id respawn0{timer_kind::respawn, 0};
    sp.fail_next(EAGAIN);
    sp.exit(1000, exited_with(1));
    loop.raise(SIGCHLD);
    CHECK(sp.spawn_count() == 2);  // the attempt failed
    CHECK(loop.due_in(respawn0) == 100ms);
    CHECK(loop.watched_fds().size() == 1);  // the failed attempt's channel is gone

    CHECK(loop.advance(100ms) == 1);
    REQUIRE(sp.spawn_count() == 3);
    CHECK(sp.workers()[2].request.slot == 0);
    CHECK(loop.watched_fds().size() == 2);

    loop.raise(SIGTERM);
    sp.exit_all();
    loop.raise(SIGCHLD);
  });
}

TEST_CASE("supervisor with fakes: signals outside the table are not delivered",
          "[supervisor][fakes]") {
  fake_supervisor sup(two_workers());
  run(sup, [&](fake_loop& loop, fake_spawner& sp) {
    CHECK_FALSE(loop.raise(SIGALRM));
    CHECK(loop.raise(SIGPIPE));  // watched (so it cannot kill the master), means nothing
    CHECK(sp.spawn_count() == 2);
    CHECK(sup.lifecycle().current_phase() == phase::running);
    loop.raise(SIGTERM);
    sp.exit_all();
    loop.raise(SIGCHLD);
  });
}

TEST_CASE("supervisor with fakes: workers = 0 is refused before anything starts",
          "[supervisor][fakes]") {
  auto o = two_workers();
  o.workers = 0;
  fake_supervisor sup(o);
  bool ran = false;
  sup.loop().on_run([&](fake_loop&) { ran = true; });
  CHECK(sup.run() == 1);
  CHECK_FALSE(ran);
  CHECK(sup.loop().watched_signals().empty());
}

TEST_CASE("supervisor with fakes: 40 failed spawns in a row back off to the cap, then recover",
          "[supervisor][fakes][torture]") {
  fake_supervisor sup(two_workers());
  run(sup, [&](fake_loop& loop, fake_spawner& sp) {
    const timer_id respawn0{timer_kind::respawn, 0};
    const int errors[] = {EAGAIN, ENOMEM, EMFILE, ENFILE};
    for (int i = 0; i < 40; ++i) sp.fail_next(errors[i % 4]);
    sp.exit(1000, exited_with(1));
    loop.raise(SIGCHLD);
    milliseconds longest{0};
    int retries = 0;
    // The first respawn is at once (within the restart intensity) and fails;
    // from then on each retry waits, twice as long, at most backoff_max.
    while (auto due = loop.due_in(respawn0)) {
      longest = std::max(longest, *due);
      CHECK(*due <= 10s);
      loop.advance(*due);
      ++retries;
      REQUIRE(retries < 100);
    }
    WARN("40 failed spawns: " << retries << " retries, longest backoff " << longest.count()
                              << " ms");
    CHECK(longest == 10s);
    CHECK(sup.lifecycle().current_phase() == phase::running);
    REQUIRE(sp.spawn_count() == 3);  // the two first, then the one that worked
    CHECK(sp.workers()[2].request.slot == 0);
    CHECK(loop.watched_fds().size() == 2);  // no channel of a failed attempt left over
    loop.raise(SIGTERM);
    sp.exit_all();
    loop.raise(SIGCHLD);
  });
}

TEST_CASE("supervisor with fakes: a reload whose user the workers cannot take is refused",
          "[supervisor][fakes][worker-settings]") {
  // The fake spawner's workers share the master's process: no user of their own.
  fake_supervisor sup(two_workers());
  sup.on_reload([](idle_worker&, options& next) { next.user = "nobody"; });
  int code = run(sup, [&](fake_loop& loop, fake_spawner& sp) {
    loop.raise(SIGHUP);
    CHECK(sp.spawn_count() == 2);  // no new generation
    CHECK(sup.opts().user.empty());
    CHECK(sup.lifecycle().current_phase() == phase::running);
    loop.raise(SIGTERM);
    sp.exit_all(killed_by(SIGTERM));
    loop.raise(SIGCHLD);
    CHECK(loop.stopped());
  });
  CHECK(code == 0);

  // At start, the same is an error before anything is spawned.
  auto o = two_workers();
  o.user = "nobody";
  fake_supervisor refused(o);
  bool ran = false;
  refused.loop().on_run([&](fake_loop&) { ran = true; });
  CHECK(refused.run() == 1);
  CHECK_FALSE(ran);
}
