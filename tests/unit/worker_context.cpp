#include <procmodel/worker_context.hpp>
#include <procmodel/detail/run_worker.hpp>
#include "support/catch.hpp"

// What a worker sees, with a real io_context and a real channel (a
// socketpair from channel::make_pair) and no master: the test holds the
// master's end. Each worker runs through detail::run_worker, the code a
// forked worker runs, on the test's thread.

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <procmodel/signals.hpp>

using namespace std::chrono_literals;
using namespace procmodel;

namespace {

using clock_type = std::chrono::steady_clock;

// What the worker saw, shared with the test (run_worker copies the worker).
struct seen {
  clock_type::time_point start{};
  std::vector<clock_type::time_point> deadlines;  // one per drain handler call
  std::optional<drain_reason> reason;
  int reopens = 0;
  std::size_t live_at_drain = 0;
};

double ms_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A worker that tracks one connection, released `hold` after start (or
// never, when `hold` is zero), and records its drains.
struct holding_worker {
  std::shared_ptr<seen> s;
  milliseconds hold{0};
  bool ready_thrice = false;
  void operator()(worker_context& ctx) {
    s->start = clock_type::now();
    if (ready_thrice) {
      ctx.ready();
      ctx.ready();
      ctx.ready();
    }
    auto guard = std::make_shared<connection_guard>(ctx.track());
    ctx.on_drain([s = s, &ctx](clock_type::time_point deadline) {
      s->deadlines.push_back(deadline);
      s->reason = ctx.why_draining();
      s->live_at_drain = ctx.live_connections();
    });
    ctx.on_reopen([s = s] { ++s->reopens; });
    // A worker that misses every deadline must fail the test, not hang it.
    auto limit = std::make_shared<boost::asio::steady_timer>(ctx.loop(), 5s);
    limit->async_wait([limit, &ctx](boost::system::error_code ec) {
      if (!ec) ctx.stop(99);
    });
    if (hold > 0ms) {
      auto t = std::make_shared<boost::asio::steady_timer>(ctx.loop(), hold);
      t->async_wait([t, guard](boost::system::error_code) mutable { guard->release(); });
    } else {
      // Never released: the handler that owns it lives until the loop goes.
      auto t = std::make_shared<boost::asio::steady_timer>(ctx.loop(), 1h);
      t->async_wait([t, guard](boost::system::error_code) {});
    }
  }
};

worker_context::setup quiet_setup(milliseconds orphan = 500ms, milliseconds shutdown = 10s) {
  worker_context::setup s;
  s.slot = 0;
  s.generation = 1;
  s.owns_listeners = false;
  s.log_file = "/dev/null";
  s.orphan_timeout = orphan;
  s.shutdown_timeout = shutdown;
  return s;
}

template <class W>
int run(const W& w, channel worker_end, worker_context::setup setup = quiet_setup()) {
  return detail::run_worker<nginx_signals>(w, std::move(worker_end), std::move(setup), false,
                                           [](boost::asio::io_context*) {});
}

// Every message the master's end has, without waiting.
std::vector<message> received(const channel& master) {
  std::vector<message> out;
  message m;
  while (master.receive(m) == receive_status::received) out.push_back(m);
  return out;
}

}  // namespace

TEST_CASE("ready() tells the master once, however often it is called", "[worker_context]") {
  auto [master, worker] = channel::make_pair();
  auto s = std::make_shared<seen>();
  REQUIRE(master.send({message_type::terminate, 0}));  // exit once running
  CHECK(run(holding_worker{s, 0ms, true}, std::move(worker)) == 0);
  auto msgs = received(master);
  REQUIRE(msgs.size() == 1);
  CHECK(msgs[0].type == message_type::ready);
}

TEST_CASE("stop(code) ends the loop with that exit code", "[worker_context]") {
  struct stopper {
    void operator()(worker_context& ctx) {
      boost::asio::post(ctx.loop(), [&ctx] { ctx.stop(7); });
    }
  };
  auto [master, worker] = channel::make_pair();
  CHECK(run(stopper{}, std::move(worker)) == 7);
  CHECK(received(master).empty());  // never ready: nothing sent
}

TEST_CASE("a worker that throws exits with code 1", "[worker_context]") {
  auto [master, worker] = channel::make_pair();
  SECTION("from operator()") {
    struct thrower {
      void operator()(worker_context&) { throw std::runtime_error("boom"); }
    };
    CHECK(run(thrower{}, std::move(worker)) == 1);
  }
  SECTION("from a handler on its loop") {
    struct late_thrower {
      void operator()(worker_context& ctx) {
        boost::asio::post(ctx.loop(), [] { throw std::runtime_error("late boom"); });
      }
    };
    CHECK(run(late_thrower{}, std::move(worker)) == 1);
  }
}

TEST_CASE("terminate exits at once, live connections or not", "[worker_context]") {
  auto [master, worker] = channel::make_pair();
  auto s = std::make_shared<seen>();
  REQUIRE(master.send({message_type::terminate, 0}));
  const auto t0 = clock_type::now();
  CHECK(run(holding_worker{s, 0ms}, std::move(worker)) == 0);
  CHECK(ms_between(t0, clock_type::now()) < 1000);
  CHECK(s->deadlines.empty());  // no drain
}

TEST_CASE("quit drains: the worker exits when its last guard goes, before the deadline",
          "[worker_context]") {
  auto [master, worker] = channel::make_pair();
  auto s = std::make_shared<seen>();
  REQUIRE(master.send({message_type::quit, 5000}));
  CHECK(run(holding_worker{s, 200ms}, std::move(worker)) == 0);
  const double took = ms_between(s->start, clock_type::now());
  INFO("exited " << took << " ms after start");
  CHECK(took >= 190);   // not before the guard went
  CHECK(took < 2500);   // nor at the deadline (4000 ms)
  REQUIRE(s->deadlines.size() == 1);
  CHECK(s->reason == drain_reason::quit);
  CHECK(s->live_at_drain == 1);
}

TEST_CASE("a drain with nothing in flight ends at once", "[worker_context]") {
  struct idle {
    void operator()(worker_context&) {}
  };
  auto [master, worker] = channel::make_pair();
  REQUIRE(master.send({message_type::quit, 10000}));
  const auto t0 = clock_type::now();
  CHECK(run(idle{}, std::move(worker)) == 0);
  CHECK(ms_between(t0, clock_type::now()) < 1000);
}

TEST_CASE("the drain deadline: handlers get within minus a margin, the hard stop comes between",
          "[worker_context]") {
  // margin = min(within / 5, 500 ms); handlers see now + within - margin;
  // the loop stops at within - margin / 2 whatever is still open.
  auto [master, worker] = channel::make_pair();
  auto s = std::make_shared<seen>();
  REQUIRE(master.send({message_type::quit, 1000}));
  CHECK(run(holding_worker{s, 0ms}, std::move(worker)) == 0);  // never released
  const double took = ms_between(s->start, clock_type::now());
  REQUIRE(s->deadlines.size() == 1);
  const double deadline = ms_between(s->start, s->deadlines[0]);
  INFO("handler deadline at " << deadline << " ms, exit at " << took << " ms");
  CHECK(deadline >= 795);  // 1000 - 200
  CHECK(deadline <= 900);
  CHECK(took >= 895);      // 1000 - 100: the hard stop, not earlier
  CHECK(took < 1900);      // and not much later, even on two loaded cores
}

TEST_CASE("the margin is at most 500 ms", "[worker_context]") {
  struct drain_then_stop {
    std::shared_ptr<seen> s;
    void operator()(worker_context& ctx) {
      s->start = clock_type::now();
      ctx.on_drain([s = s, &ctx](clock_type::time_point d) {
        s->deadlines.push_back(d);
        ctx.stop(0);
      });
      auto g = std::make_shared<connection_guard>(ctx.track());
      auto t = std::make_shared<boost::asio::steady_timer>(ctx.loop(), 1h);
      t->async_wait([t, g](boost::system::error_code) {});
    }
  };
  auto [master, worker] = channel::make_pair();
  auto s = std::make_shared<seen>();
  REQUIRE(master.send({message_type::quit, 60000}));
  CHECK(run(drain_then_stop{s}, std::move(worker)) == 0);
  REQUIRE(s->deadlines.size() == 1);
  const double deadline = ms_between(s->start, s->deadlines[0]);
  CHECK(deadline >= 59'495);
  CHECK(deadline <= 59'600);
}

TEST_CASE("end of file on the channel: the master is gone, the worker drains within the orphan timeout",
          "[worker_context]") {
  auto [master, worker] = channel::make_pair();
  auto s = std::make_shared<seen>();
  master = channel{};  // closes the master's end
  CHECK(run(holding_worker{s, 0ms}, std::move(worker), quiet_setup(300ms)) == 0);
  const double took = ms_between(s->start, clock_type::now());
  REQUIRE(s->deadlines.size() == 1);
  CHECK(s->reason == drain_reason::master_lost);
  const double deadline = ms_between(s->start, s->deadlines[0]);
  INFO("handler deadline at " << deadline << " ms, exit at " << took << " ms");
  CHECK(deadline >= 235);  // 300 - 60
  CHECK(deadline <= 300);
  CHECK(took >= 265);      // 300 - 30
  CHECK(took < 1200);
}

TEST_CASE("a second quit does not restart the drain or move its deadline", "[worker_context]") {
  auto [master, worker] = channel::make_pair();
  auto s = std::make_shared<seen>();
  REQUIRE(master.send({message_type::quit, 1000}));
  REQUIRE(master.send({message_type::quit, 60000}));
  CHECK(run(holding_worker{s, 0ms}, std::move(worker)) == 0);
  CHECK(s->deadlines.size() == 1);
  CHECK(ms_between(s->start, clock_type::now()) < 1900);
}

TEST_CASE("reopen calls the on_reopen handlers", "[worker_context]") {
  auto [master, worker] = channel::make_pair();
  auto s = std::make_shared<seen>();
  REQUIRE(master.send({message_type::reopen, 0}));
  REQUIRE(master.send({message_type::reopen, 0}));
  REQUIRE(master.send({message_type::terminate, 0}));
  CHECK(run(holding_worker{s, 0ms}, std::move(worker)) == 0);
  CHECK(s->reopens == 2);
}

TEST_CASE("connection guards count, release early, move, and outlive their context",
          "[worker_context]") {
  boost::asio::io_context io;
  auto [master, worker] = channel::make_pair();
  std::optional<connection_guard> survivor;
  {
    worker_context ctx(io, std::move(worker), quiet_setup());
    auto a = ctx.track();
    auto b = ctx.track();
    CHECK(ctx.live_connections() == 2);
    a.release();
    a.release();  // twice: counted once
    CHECK(ctx.live_connections() == 1);
    connection_guard moved = std::move(b);
    CHECK(ctx.live_connections() == 1);
    moved = ctx.track();  // the old one it held is released
    CHECK(ctx.live_connections() == 1);
    survivor.emplace(std::move(moved));
  }
  survivor.reset();  // its context is gone: nothing to tell, no crash
  SUCCEED();
}

TEST_CASE("heartbeats come from the loop, and served() reports in batches",
          "[worker_context][watchdog]") {
  // Serves 7 units at once, blocks its loop for 300 ms, then stops.
  struct busy {
    void operator()(worker_context& ctx) {
      for (int i = 0; i < 7; ++i) ctx.served();
      auto t = std::make_shared<boost::asio::steady_timer>(ctx.loop(), 100ms);
      t->async_wait([t, &ctx](boost::system::error_code) {
        std::this_thread::sleep_for(300ms);  // a stuck loop sends nothing
        boost::asio::post(ctx.loop(), [&ctx] { ctx.stop(0); });
      });
    }
  };
  auto [master, worker] = channel::make_pair();
  auto setup = quiet_setup();
  setup.heartbeat_interval = 20ms;
  setup.report_every = 3;
  auto start = clock_type::now();
  CHECK(run(busy{}, std::move(worker), setup) == 0);
  CHECK(ms_between(start, clock_type::now()) >= 400);
  auto msgs = received(master);
  std::vector<std::int64_t> served;
  std::size_t heartbeats = 0;
  for (const auto& m : msgs) {
    if (m.type == message_type::served) served.push_back(m.argument);
    if (m.type == message_type::heartbeat) ++heartbeats;
  }
  // 3 and 6 as they happened; 7 with the first heartbeat.
  CHECK(served == std::vector<std::int64_t>{3, 6, 7});
  // Every 20 ms for 100 ms, none during the 300 ms block.
  CHECK(heartbeats >= 3);
  CHECK(heartbeats <= 8);
}

TEST_CASE("no heartbeat and no report unless the master asked", "[worker_context][watchdog]") {
  struct counter {
    void operator()(worker_context& ctx) {
      for (int i = 0; i < 100; ++i) ctx.served();
      CHECK(ctx.served_count() == 100);
      auto t = std::make_shared<boost::asio::steady_timer>(ctx.loop(), 100ms);
      t->async_wait([t, &ctx](boost::system::error_code) { ctx.stop(0); });
    }
  };
  auto [master, worker] = channel::make_pair();
  CHECK(run(counter{}, std::move(worker)) == 0);
  CHECK(received(master).empty());
}
