#include <procmodel/spawner.hpp>

#include "support/catch.hpp"

#include <atomic>
#include <optional>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

// runtime_spawner, the default Spawner: a process per worker, or with
// options::single_process (--single-process) a thread of the master per
// worker, as inline_spawner does; chosen when the program runs. A whole
// supervisor run with --single-process is in inline_spawner.cpp.

using procmodel::runtime_spawner;
using procmodel::spawn_request;

namespace {

// Spawns `body` and runs `master` until its exit is reported; the wait status.
std::optional<int> spawn_and_wait(runtime_spawner& sp, boost::asio::io_context& master,
                                  std::function<int(bool, const spawn_request::attach_fn&)> body,
                                  pid_t& id) {
  std::optional<int> status;
  spawn_request req;
  req.body = std::move(body);
  req.master = &master;
  req.on_exit = [&](pid_t who, int st) {
    if (who == id) status = st;
  };
  id = sp.spawn(req);
  // A process is reaped (as on SIGCHLD); a thread reports on the master's loop.
  for (int i = 0; i < 5000 && !status; ++i) {
    sp.reap([&](pid_t who, int st) {
      if (who == id) status = st;
    });
    master.restart();
    master.poll();
    if (!status) ::usleep(1000);
  }
  return status;
}

}  // namespace

TEST_CASE("runtime_spawner forks by default", "[spawner][runtime]") {
  runtime_spawner sp;
  CHECK(sp.separate_processes());
  CHECK(runtime_spawner(procmodel::options{}).separate_processes());
  STATIC_REQUIRE(procmodel::detail::check_spawner_policy<runtime_spawner>());

  boost::asio::io_context master;
  const pid_t self = ::getpid();
  pid_t id = 0;
  auto status = spawn_and_wait(sp, master, [self](bool own_process, const auto&) {
    return own_process && ::getpid() != self ? 7 : 1;
  }, id);
  CHECK(id > 0);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 7);
}

TEST_CASE("runtime_spawner with single_process runs workers as threads, like inline_spawner",
          "[spawner][runtime][inline]") {
  procmodel::options opt;
  opt.single_process = true;
  runtime_spawner sp(opt);
  CHECK_FALSE(sp.separate_processes());

  boost::asio::io_context master;
  const pid_t self = ::getpid();
  const auto caller = std::this_thread::get_id();
  pid_t id = 0;
  auto status = spawn_and_wait(sp, master, [self, caller](bool own_process, const auto&) {
    return !own_process && ::getpid() == self && std::this_thread::get_id() != caller ? 5 : 1;
  }, id);
  CHECK(id < 0);  // never a process's pid
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 5);

  // kill() stops the worker's loop, the only way to end a thread from outside.
  std::atomic<bool> running{false};
  auto killed = [&] {
    pid_t worker = 0;
    std::optional<int> st;
    spawn_request req;
    req.master = &master;
    req.on_exit = [&](pid_t who, int s) {
      if (who == worker) st = s;
    };
    req.body = [&running](bool, const spawn_request::attach_fn& attach) {
      boost::asio::io_context io;
      auto work = boost::asio::make_work_guard(io);
      attach(&io);
      running = true;
      io.run();  // until kill()
      attach(nullptr);
      return 9;
    };
    worker = sp.spawn(req);
    for (int i = 0; i < 5000 && !running; ++i) ::usleep(1000);
    sp.kill(worker);
    for (int i = 0; i < 5000 && !st; ++i) {
      master.restart();
      master.poll();
      if (!st) ::usleep(1000);
    }
    return st;
  }();
  REQUIRE(killed);
  CHECK(WEXITSTATUS(*killed) == 9);
}
