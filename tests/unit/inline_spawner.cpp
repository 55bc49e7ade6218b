#include <procmodel/spawner.hpp>

#include "support/catch.hpp"

#include <atomic>
#include <csignal>
#include <mutex>
#include <set>
#include <thread>

#include <unistd.h>

#include <procmodel/supervisor.hpp>

// Single-process mode end to end: a whole supervisor whose workers are threads
// of this test process, stopped with a real SIGQUIT.

namespace {

std::atomic<int> started{0};
std::atomic<int> drained{0};
std::mutex seen_mutex;
std::set<std::thread::id> threads;
std::set<pid_t> pids;

struct thread_worker {
  void operator()(procmodel::worker_context& ctx) {
    {
      std::lock_guard lock(seen_mutex);
      threads.insert(std::this_thread::get_id());
      pids.insert(::getpid());
    }
    ctx.on_drain([](auto) { ++drained; });
    ctx.ready();
    // Every thread has the master's signals blocked: the SIGQUIT waits for
    // the master's signalfd, as it would from an operator.
    if (++started == 2) ::kill(::getpid(), SIGQUIT);
  }
};

}  // namespace

TEST_CASE("inline_spawner runs a whole supervisor in one process until SIGQUIT",
          "[spawner][inline]") {
  sigset_t before;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &before);

  procmodel::options opt;
  opt.workers = 2;
  opt.without_listeners = true;  // the workers serve no socket
  opt.level = procmodel::log_level::warn;
  procmodel::basic_supervisor<thread_worker, procmodel::inline_spawner> master(opt);
  int code = master.run();

  CHECK(code == 0);
  CHECK(started == 2);
  CHECK(drained == 2);  // each worker was told to drain over its channel
  CHECK(threads.size() == 2);
  CHECK(threads.count(std::this_thread::get_id()) == 0);
  CHECK(pids == std::set<pid_t>{::getpid()});
  CHECK(master.lifecycle().current_phase() == procmodel::phase::exited);
  CHECK(master.lifecycle().processes().empty());

  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

TEST_CASE("inline_spawner hands out negative ids that never name a process", "[spawner][inline]") {
  STATIC_REQUIRE_FALSE(procmodel::inline_spawner::separate_processes);
  STATIC_REQUIRE(procmodel::detail::check_spawner_policy<procmodel::inline_spawner>());
}
