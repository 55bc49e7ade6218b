#include <procmodel/spawner.hpp>

#include "support/catch.hpp"

#include <atomic>
#include <csignal>
#include <mutex>
#include <set>
#include <thread>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <procmodel/supervisor.hpp>

// Single-process mode end to end: a whole supervisor whose workers are threads
// of this test process, stopped with a real SIGQUIT; with inline_spawner named,
// and with the default spawner told --single-process on the command line.

namespace {

// Restores this thread's signal mask when it goes.
struct saved_signal_mask {
  sigset_t before;
  saved_signal_mask() { ::pthread_sigmask(SIG_SETMASK, nullptr, &before); }
  ~saved_signal_mask() { ::pthread_sigmask(SIG_SETMASK, &before, nullptr); }
};

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
  saved_signal_mask mask;  // the supervisor blocks its signals in this thread

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
  saved_signal_mask mask;  // the supervisor blocks its signals in this thread
  procmodel::options opt = two_workers();
  opt.single_process = true;
  opt.level = procmodel::log_level::error;
  started = 0;
  procmodel::basic_supervisor<thread_worker, procmodel::fork_spawner> master(opt);
  CHECK(master.run() == 1);
  CHECK(started == 0);  // no worker ran
}

namespace {

std::atomic<int> listening{0};
std::string worker_errors;  // under seen_mutex: Catch2 asserts on the test's thread only

// Makes its acceptor only after the graceful stop has begun: SIGQUIT, then
// the master's quit on the channel (sent after the master has closed its own
// listeners), then descriptors opened as any thread of the process may, which
// take the numbers the master freed.
struct late_acceptor_worker {
  void operator()(procmodel::worker_context& ctx) {
    ctx.ready();
    if (++started == 2) ::kill(::getpid(), SIGQUIT);
    pollfd quit{ctx.master_channel().fd(), POLLIN, 0};
    if (::poll(&quit, 1, 10'000) != 1) return note("no quit from the master within 10 s");
    std::vector<int> others;
    for (int i = 0; i < 8; ++i) others.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    int accepting = 0;
    socklen_t len = sizeof accepting;
    try {
      auto acceptor = ctx.acceptor(0);
      if (::getsockopt(acceptor.native_handle(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) == 0 &&
          accepting == 1)
        ++listening;
    } catch (const std::exception& e) {
      note(e.what());
    }
    for (int fd : others) ::close(fd);
  }
  static void note(const std::string& what) {
    std::lock_guard lock(seen_mutex);
    worker_errors += what + "\n";
  }
};

// Descriptors open in this process.
std::size_t open_fds() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n - 1;  // the directory's own
}

// Serves until the fast stop it asks for, once both workers run.
struct stopped_worker {
  void operator()(procmodel::worker_context& ctx) {
    auto acceptor = std::make_shared<boost::asio::ip::tcp::acceptor>(ctx.acceptor(0));
    procmodel::accept_loop(ctx, acceptor, [](boost::asio::ip::tcp::socket) {});
    ctx.ready();
    if (++started == 2) ::kill(::getpid(), SIGTERM);
  }
};

// Runs two `Worker` threads under a supervisor until they stop it; checks
// that it exited 0 and left no descriptor open (the listener copies).
template <class Worker>
void run_to_end() {
  saved_signal_mask mask;  // the supervisor blocks its signals in this thread
  started = 0;
  procmodel::options opt = two_workers();
  opt.level = procmodel::log_level::error;
  const std::size_t fds_before = open_fds();
  {
    procmodel::basic_supervisor<Worker, procmodel::inline_spawner> master(opt);
    CHECK(master.run() == 0);
    CHECK(started == 2);
    CHECK(master.lifecycle().processes().empty());
  }
  CHECK(open_fds() == fds_before);
}

}  // namespace

TEST_CASE("an in-process worker's listeners are its own: the master closing its copies at a stop does not take them",
          "[spawner][inline][race]") {
  // A worker thread that starts just before a graceful stop makes its
  // acceptor after the master has closed its listeners (seen once in CI:
  // "accept() failed: Socket operation on non-socket"). A forked worker has
  // copies of its own; a thread must have them too.
  listening = 0;
  worker_errors.clear();
  run_to_end<late_acceptor_worker>();
  CHECK(listening == 2);  // each made a listening acceptor from its listener 0
  CHECK(worker_errors == "");
}

TEST_CASE("an in-process worker's listener copies are closed when a fast stop ends it undrained",
          "[spawner][inline][race]") {
  run_to_end<stopped_worker>();
}

TEST_CASE("inline_spawner hands out negative ids that never name a process", "[spawner][inline]") {
  STATIC_REQUIRE_FALSE(procmodel::inline_spawner::separate_processes());
  STATIC_REQUIRE(procmodel::detail::check_spawner_policy<procmodel::inline_spawner>());
}
