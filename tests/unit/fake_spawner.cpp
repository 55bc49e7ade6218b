#include <procmodel/testing/fake_spawner.hpp>

#include "support/catch.hpp"

#include <cerrno>
#include <csignal>
#include <stdexcept>
#include <system_error>
#include <utility>
#include <vector>

using namespace procmodel;
using namespace procmodel::testing;

namespace {

std::vector<std::pair<pid_t, int>> reap_all(fake_spawner& sp) {
  std::vector<std::pair<pid_t, int>> out;
  sp.reap([&](pid_t pid, int status) { out.emplace_back(pid, status); });
  return out;
}

spawn_request request(unsigned slot, std::vector<int> keep = {}) {
  spawn_request r;
  r.slot = slot;
  r.generation = 1;
  r.keep_fds = std::move(keep);
  return r;
}

}  // namespace

TEST_CASE("fake_spawner satisfies the Spawner contract", "[testing][fake_spawner]") {
  STATIC_REQUIRE(detail::check_spawner_policy<fake_spawner>());
  STATIC_REQUIRE_FALSE(fake_spawner::separate_processes());
}

TEST_CASE("fake_spawner: pids from 1000 up - requests recorded", "[testing][fake_spawner]") {
  fake_spawner sp;
  sp.adopt_channels(false);
  CHECK(sp.spawn(request(0, {7})) == 1000);
  CHECK(sp.spawn(request(1)) == 1001);
  REQUIRE(sp.spawn_count() == 2);
  auto reqs = sp.requests();
  CHECK(reqs[0].slot == 0);
  CHECK(reqs[0].keep_fds == std::vector<int>{7});
  CHECK(reqs[1].slot == 1);
  CHECK(sp.live() == std::vector<pid_t>{1000, 1001});
  CHECK(sp.at(1001).request.slot == 1);
  CHECK_THROWS_AS(sp.at(42), std::out_of_range);

  fake_spawner other(50);
  CHECK(other.spawn(request(0)) == 50);
}

TEST_CASE("fake_spawner: queued exits come out of the next reap", "[testing][fake_spawner]") {
  fake_spawner sp;
  sp.spawn(request(0));
  sp.spawn(request(1));
  CHECK(reap_all(sp).empty());

  sp.exit(1001, killed_by(SIGSEGV));
  sp.exit(1000, exited_with(2));
  sp.exit(77);  // not ours: reported all the same, as waitpid(-1) would
  CHECK(sp.pending_exits() == 3);
  auto got = reap_all(sp);
  CHECK(got == std::vector<std::pair<pid_t, int>>{
                   {1001, killed_by(SIGSEGV)}, {1000, exited_with(2)}, {77, exited_with(0)}});
  CHECK(sp.pending_exits() == 0);
  CHECK(sp.live().empty());
  CHECK(sp.at(1000).exited);
  CHECK(reap_all(sp).empty());
  CHECK(sp.reaps() == 3);
}

TEST_CASE("fake_spawner: exit_all queues each live worker once", "[testing][fake_spawner]") {
  fake_spawner sp;
  for (unsigned k = 0; k < 3; ++k) sp.spawn(request(k));
  sp.exit(1001, exited_with(1));
  reap_all(sp);
  sp.exit(1002, exited_with(5));
  sp.exit_all(exited_with(9));
  CHECK(reap_all(sp) ==
        std::vector<std::pair<pid_t, int>>{{1002, exited_with(5)}, {1000, exited_with(9)}});
}

TEST_CASE("fake_spawner: an exit handler may spawn", "[testing][fake_spawner]") {
  fake_spawner sp;
  sp.spawn(request(0));
  sp.exit(1000, exited_with(1));
  sp.reap([&](pid_t, int) { sp.spawn(request(0)); });
  CHECK(sp.live() == std::vector<pid_t>{1001});
}

TEST_CASE("fake_spawner: kill is recorded - exit_on_kill queues SIGKILL", "[testing][fake_spawner]") {
  fake_spawner sp;
  sp.spawn(request(0));
  sp.kill(1000);
  CHECK(sp.kills() == std::vector<pid_t>{1000});
  CHECK(sp.pending_exits() == 0);
  sp.exit_on_kill(true);
  sp.kill(1000);
  CHECK(reap_all(sp) == std::vector<std::pair<pid_t, int>>{{1000, killed_by(SIGKILL)}});
}

TEST_CASE("fake_spawner: fail_next throws system_error once per failure", "[testing][fake_spawner]") {
  fake_spawner sp;
  sp.fail_next(EAGAIN);
  sp.fail_next(ENOMEM);
  try {
    sp.spawn(request(0));
    FAIL("spawned");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == EAGAIN);
  }
  CHECK_THROWS_AS(sp.spawn(request(0)), std::system_error);
  CHECK(sp.spawn(request(0)) == 1000);  // failures take no pid
  CHECK(sp.spawn_count() == 1);
}

TEST_CASE("fake_spawner: adopts the last keep_fd as the worker's channel", "[testing][fake_spawner]") {
  auto [master, worker] = channel::make_pair();
  fake_spawner sp;
  int fd = worker.release();
  sp.spawn(request(0, {fd}));
  CHECK(sp.worker_channel(1000).fd() == fd);
  REQUIRE(master.send({message_type::quit, 7}));
  message m;
  REQUIRE(sp.worker_channel(1000).receive(m) == receive_status::received);
  CHECK(m.argument == 7);
}

TEST_CASE("fake_spawner::of finds the spawner by the master's io_context",
          "[testing][fake_spawner]") {
  boost::asio::io_context io;
  CHECK_THROWS_AS(fake_spawner::of(io), std::logic_error);
  {
    fake_spawner sp;
    auto r = request(0);
    r.master = &io;
    sp.fail_next();
    CHECK_THROWS(sp.spawn(r));  // registered even when the spawn fails
    CHECK(&fake_spawner::of(io) == &sp);
  }
  CHECK_THROWS_AS(fake_spawner::of(io), std::logic_error);  // gone with it
}
