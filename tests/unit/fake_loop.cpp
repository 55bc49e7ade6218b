#include <procmodel/testing/fake_loop.hpp>

#include "support/catch.hpp"

#include <chrono>
#include <csignal>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <procmodel/asio_loop.hpp>

using namespace std::chrono_literals;
using namespace procmodel;
using namespace procmodel::testing;

TEST_CASE("fake_loop satisfies the Loop contract", "[testing][fake_loop]") {
  STATIC_REQUIRE(detail::check_loop_policy<fake_loop>());
}

TEST_CASE("fake_loop: run runs the script - stop is recorded", "[testing][fake_loop]") {
  fake_loop loop;
  loop.run();  // no script: returns at once
  CHECK(loop.run_calls() == 1);
  std::vector<std::string> trail;
  loop.on_run([&](fake_loop& l) {
    trail.push_back("script");
    l.stop();
    trail.push_back(l.stopped() ? "stopped" : "running");
  });
  CHECK_FALSE(loop.stopped());
  loop.run();
  CHECK(trail == std::vector<std::string>{"script", "stopped"});
  CHECK(loop.stop_calls() == 1);
}

TEST_CASE("fake_loop: timers fire in deadline order - each at its deadline", "[testing][fake_loop]") {
  fake_loop loop;
  const timer_id a{timer_kind::respawn, 0}, b{timer_kind::respawn, 1}, k{timer_kind::kill_escalation, 0};
  std::vector<std::string> fired;
  std::vector<milliseconds> when;
  auto note = [&](const char* name) {
    return [&, name] {
      fired.push_back(name);
      when.push_back(std::chrono::duration_cast<milliseconds>(loop.now() - fake_loop::origin()));
    };
  };
  loop.arm_timer(a, 300ms, note("a"));
  loop.arm_timer(b, 100ms, note("b"));
  loop.arm_timer(k, 200ms, note("k"));
  CHECK(loop.armed_timers() == 3);
  CHECK(loop.due_in(a) == 300ms);

  SECTION("in order") {
    CHECK(loop.advance(250ms) == 2);
    CHECK(fired == std::vector<std::string>{"b", "k"});
    CHECK(when == std::vector<milliseconds>{100ms, 200ms});
    CHECK(loop.now() == fake_loop::origin() + 250ms);
    CHECK(loop.due_in(a) == 50ms);
    CHECK(loop.advance(50ms) == 1);
    CHECK(fired.back() == "a");
    CHECK(loop.armed_timers() == 0);
  }
  SECTION("cancelled and re-armed") {
    loop.cancel_timer(b);
    loop.arm_timer(a, 50ms, note("a2"));  // replaces a
    CHECK_FALSE(loop.armed(b));
    CHECK(loop.advance(1s) == 2);
    CHECK(fired == std::vector<std::string>{"a2", "k"});
  }
  SECTION("a timer armed while firing fires too, if due") {
    loop.cancel_timer(a);
    loop.cancel_timer(k);
    loop.arm_timer(b, 100ms, [&] {
      fired.push_back("b");
      loop.arm_timer(a, 10ms, note("chained"));
    });
    CHECK(loop.advance(105ms) == 1);
    CHECK(loop.advance(5ms) == 1);
    CHECK(fired == std::vector<std::string>{"b", "chained"});
    CHECK(when == std::vector<milliseconds>{110ms});
  }
}

TEST_CASE("fake_loop: raise delivers watched signals only", "[testing][fake_loop]") {
  fake_loop loop;
  CHECK_FALSE(loop.raise(SIGQUIT));  // nothing watched yet
  std::vector<int> got;
  const int watched[] = {SIGQUIT, SIGCHLD};
  loop.watch_signals(watched, [&](int s) { got.push_back(s); });
  CHECK(loop.watched_signals() == std::vector<int>{SIGQUIT, SIGCHLD});
  CHECK(loop.raise(SIGQUIT));
  CHECK(loop.raise(SIGCHLD));
  CHECK_FALSE(loop.raise(SIGTERM));
  CHECK(got == std::vector<int>{SIGQUIT, SIGCHLD});
}

TEST_CASE("fake_loop: readable and poll_readable call watch handlers", "[testing][fake_loop]") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
  fake_loop loop;
  int calls = 0;
  bool keep = true;
  loop.watch_readable(fds[0], [&] {
    ++calls;
    char c;
    while (::read(fds[0], &c, 1) == 1) {
    }
    return keep;
  });
  CHECK(loop.watching(fds[0]));
  CHECK(loop.watched_fds() == std::vector<int>{fds[0]});

  CHECK(loop.poll_readable() == 0);  // nothing to read
  CHECK(calls == 0);
  REQUIRE(::write(fds[1], "x", 1) == 1);
  CHECK(loop.poll_readable() == 1);
  CHECK(calls == 1);
  CHECK(loop.poll_readable() == 0);

  CHECK(loop.readable(fds[0]));  // forced
  CHECK(calls == 2);
  keep = false;
  CHECK(loop.readable(fds[0]));
  CHECK_FALSE(loop.watching(fds[0]));  // a handler returning false is unwatched
  CHECK_FALSE(loop.readable(fds[0]));
  CHECK(calls == 3);

  loop.watch_readable(fds[0], [] { return true; });
  loop.unwatch(fds[0]);
  CHECK(loop.watched_fds().empty());
  ::close(fds[0]);
  ::close(fds[1]);
}
