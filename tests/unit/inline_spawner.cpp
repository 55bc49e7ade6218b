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
// of this test process, stopped with a real SIGQUIT; with inline_spawner named,
// and with the default spawner told --single-process on the command line.

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

// Runs `master` (two workers) until the workers' SIGQUIT; checks that they
// were threads of this process and drained.
template <class Supervisor, class... Argv>
void run_two_threads(Supervisor& master, Argv... argv) {
  started = 0;
  drained = 0;
  threads.clear();
  pids.clear();
  sigset_t before;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &before);

  const char* args[] = {"prog", argv..., nullptr};
  int code = sizeof...(Argv) > 0 ? master.run(static_cast<int>(sizeof...(Argv)) + 1, args)
                                 : master.run();

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

procmodel::options two_workers() {
  procmodel::options opt;
  opt.workers = 2;
  opt.listen = {"127.0.0.1:0"};
  opt.level = procmodel::log_level::warn;
  return opt;
}

}  // namespace

TEST_CASE("inline_spawner runs a whole supervisor in one process until SIGQUIT",
          "[spawner][inline]") {
  procmodel::basic_supervisor<thread_worker, procmodel::inline_spawner> master(two_workers());
  run_two_threads(master);
}

TEST_CASE("single_process (--single-process) makes the default supervisor run threads",
          "[spawner][inline][runtime]") {
  procmodel::options opt = two_workers();
  opt.workers = 1;  // the command line says 2
  procmodel::supervisor<thread_worker> master(opt);
  // The flag, as an operator gives it; no template in the program.
  run_two_threads(master, "--single-process", "--workers", "2");
  CHECK(master.opts().single_process);
  CHECK_FALSE(master.spawner().separate_processes());
}

TEST_CASE("single_process with a spawner that always forks is refused at start",
          "[spawner][runtime]") {
  sigset_t before;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &before);
  procmodel::options opt = two_workers();
  opt.single_process = true;
  opt.level = procmodel::log_level::error;
  started = 0;
  procmodel::basic_supervisor<thread_worker, procmodel::fork_spawner> master(opt);
  CHECK(master.run() == 1);
  CHECK(started == 0);  // no worker ran
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

TEST_CASE("inline_spawner hands out negative ids that never name a process", "[spawner][inline]") {
  STATIC_REQUIRE_FALSE(procmodel::inline_spawner::separate_processes());
  STATIC_REQUIRE(procmodel::detail::check_spawner_policy<procmodel::inline_spawner>());
}
