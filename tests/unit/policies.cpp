#include <procmodel/policies.hpp>

#include "support/catch.hpp"

#include <csignal>
#include <functional>
#include <type_traits>

#include <procmodel/supervisor.hpp>
#include <procmodel/testing/fake_loop.hpp>
#include <procmodel/testing/fake_spawner.hpp>

// Policies named one at a time: which basic_supervisor the names resolve to,
// and that the named policy is the one a running supervisor uses.

using namespace procmodel;
using procmodel::testing::fake_loop;
using procmodel::testing::fake_spawner;
using procmodel::testing::killed_by;

namespace {

struct idle_worker {
  void operator()(worker_context&) {}
};

// A Lifecycle of its own, to tell it from the default by type.
struct my_lifecycle : nginx_lifecycle {
  using nginx_lifecycle::nginx_lifecycle;
};

// --- resolution, at compile time ----------------------------------------------

// No option: the defaults, which are basic_supervisor's own.
static_assert(std::is_same_v<supervisor_with<idle_worker>, supervisor<idle_worker>>);
static_assert(std::is_same_v<supervisor_with<idle_worker>::spawner_type, runtime_spawner>);
static_assert(std::is_same_v<policies<>::spawner, runtime_spawner>);
static_assert(std::is_same_v<policies<>::signals, nginx_signals>);
static_assert(std::is_same_v<policies<>::lifecycle, nginx_lifecycle>);
static_assert(std::is_same_v<policies<>::loop, asio_loop>);

// One policy without naming those before it.
static_assert(std::is_same_v<supervisor_with<idle_worker, use_signals<graceful_term_signals>>,
                             basic_supervisor<idle_worker, runtime_spawner, graceful_term_signals>>);
static_assert(std::is_same_v<supervisor_with<idle_worker, use_loop<fake_loop>>,
                             basic_supervisor<idle_worker, runtime_spawner, nginx_signals,
                                              nginx_lifecycle, fake_loop>>);

// Any order gives the same type.
using signals_then_spawner =
    supervisor_with<idle_worker, use_signals<graceful_term_signals>, use_spawner<inline_spawner>>;
using spawner_then_signals =
    supervisor_with<idle_worker, use_spawner<inline_spawner>, use_signals<graceful_term_signals>>;
static_assert(std::is_same_v<signals_then_spawner, spawner_then_signals>);
static_assert(std::is_same_v<signals_then_spawner,
                             basic_supervisor<idle_worker, inline_spawner, graceful_term_signals>>);

// All four, scrambled.
using all_four = supervisor_with<idle_worker, use_loop<fake_loop>, use_lifecycle<my_lifecycle>,
                                 use_signals<graceful_term_signals>, use_spawner<fake_spawner>>;
static_assert(std::is_same_v<all_four, basic_supervisor<idle_worker, fake_spawner,
                                                        graceful_term_signals, my_lifecycle,
                                                        fake_loop>>);
static_assert(std::is_same_v<all_four::worker_type, idle_worker>);
static_assert(std::is_same_v<all_four::spawner_type, fake_spawner>);
static_assert(std::is_same_v<all_four::signals_type, graceful_term_signals>);
static_assert(std::is_same_v<all_four::lifecycle_type, my_lifecycle>);
static_assert(std::is_same_v<all_four::loop_type, fake_loop>);

// The named alias.
static_assert(std::is_same_v<graceful_term_supervisor<idle_worker>,
                             basic_supervisor<idle_worker, runtime_spawner, graceful_term_signals>>);

// What the checks behind the static_asserts see (the failing cases are
// compile-fail tests: tests/compile_fail/).
static_assert(detail::is_policy_option<use_spawner<fork_spawner>>);
static_assert(detail::is_policy_option<use_loop<asio_loop>>);
static_assert(!detail::is_policy_option<graceful_term_signals>);
static_assert(!detail::is_policy_option<fork_spawner>);
static_assert(detail::count_options<use_signals, use_signals<nginx_signals>, use_loop<asio_loop>,
                                    use_signals<graceful_term_signals>> == 2);
static_assert(detail::count_options<use_spawner, use_signals<nginx_signals>> == 0);

// --- the chosen policy is the one in effect, at run time ----------------------

options two_workers() {
  options o;
  o.workers = 2;
  o.without_listeners = true;  // the fake workers serve no socket
  o.pid_file.clear();
  o.level = log_level::error;
  return o;
}

// Sends SIGTERM to a supervisor with two fake workers; returns what the
// master then told the first worker over its channel.
template <class Supervisor>
message_type told_on_sigterm() {
  Supervisor sup(two_workers());
  message_type told{};
  bool ran = false;
  sup.loop().on_run([&](fake_loop& loop) {
    ran = true;
    auto& sp = fake_spawner::of(loop.context());
    REQUIRE(sp.spawn_count() == 2);
    loop.raise(SIGTERM);
    message m;
    REQUIRE(sp.worker_channel(1000).receive(m) == receive_status::received);
    told = m.type;
    sp.exit_all(killed_by(SIGKILL));
    loop.raise(SIGCHLD);
    CHECK(loop.stopped());
  });
  CHECK(sup.run() == 0);
  REQUIRE(ran);
  return told;
}

}  // namespace

TEST_CASE("policies: use_signals<> changes what SIGTERM means, wherever it is named",
          "[policies]") {
  // nginx's table: SIGTERM is the fast stop.
  CHECK(told_on_sigterm<supervisor_with<idle_worker, use_spawner<fake_spawner>,
                                        use_loop<fake_loop>>>() == message_type::terminate);
  // graceful_term_signals, named first, last or in between: SIGTERM drains.
  CHECK(told_on_sigterm<supervisor_with<idle_worker, use_signals<graceful_term_signals>,
                                        use_spawner<fake_spawner>, use_loop<fake_loop>>>() ==
        message_type::quit);
  CHECK(told_on_sigterm<supervisor_with<idle_worker, use_loop<fake_loop>,
                                        use_spawner<fake_spawner>,
                                        use_signals<graceful_term_signals>>>() ==
        message_type::quit);
  CHECK(told_on_sigterm<supervisor_with<idle_worker, use_spawner<fake_spawner>,
                                        use_signals<graceful_term_signals>,
                                        use_loop<fake_loop>>>() == message_type::quit);
}

TEST_CASE("policies: the spawner named is the one a supervisor builds", "[policies]") {
  supervisor_with<idle_worker, use_loop<fake_loop>, use_spawner<fake_spawner>> sup(two_workers());
  bool ran = false;
  sup.loop().on_run([&](fake_loop& loop) {
    ran = true;
    CHECK(&sup.spawner() == &fake_spawner::of(loop.context()));
    CHECK(sup.spawner().spawn_count() == 2);
    loop.raise(SIGTERM);
    sup.spawner().exit_all(killed_by(SIGKILL));
    loop.raise(SIGCHLD);
  });
  CHECK(sup.run() == 0);
  CHECK(ran);
}
