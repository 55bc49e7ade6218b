#include <procmodel/exec_spawner.hpp>
#include "support/catch.hpp"
#include "support/process.hpp"
#include "support/programs.hpp"

// exec_spawner with real programs: what a program is handed (LISTEN_FDS from
// descriptor 3, LISTEN_PID its own, its slot and generation, a notify
// socket), what its datagrams become on the worker's channel, what the
// master's commands become (signals), and the bad input that is logged and
// survived: garbage, oversized and foreign datagrams, a program that cannot
// be executed. And how the program is started: without copying the master's
// page tables, with or without per-worker settings (applied in the child
// with raw system calls, read back from /proc), unless the settings are only
// code, which runs in a forked child.

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <procmodel/detail/worker_setup.hpp>

using namespace std::chrono_literals;
using namespace procmodel;
using pmtest::drop_problems;
using pmtest::limit_of;
using pmtest::nice_of;
using pmtest::status_field;
using pmtest::temp_dir;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct bound_listener {
  detail::unique_fd fd;
  std::uint16_t port = 0;
  bound_listener() {
    fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(fd.get(), 8) == 0);
    socklen_t len = sizeof sa;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
  }
};

// A program that writes what it was handed to argv[1], sends the datagrams
// a test needs (garbage, oversized, then the real ones) and exits with 3 on
// SIGQUIT.
constexpr const char* notifying_program = R"(
import os, signal, socket, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGQUIT})
with open(sys.argv[1] + ".tmp", "w") as out:
    e = os.environ
    fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
    port = socket.socket(fileno=os.dup(3)).getsockname()[1]
    out.write(f"{e.get('LISTEN_FDS')} {e.get('LISTEN_PID') == str(os.getpid())} {e.get('LISTEN_FDNAMES')} "
              f"{e.get('PROCMODEL_SLOT')} {e.get('PROCMODEL_GENERATION')} {e.get('WATCHDOG_USEC')} "
              f"{port} {e.get('NOTIFY_SOCKET')} {e.get('MASTER_ONLY', 'unset')} {e.get('ADDED')} {fds}\n")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
to = "\0" + os.environ["NOTIFY_SOCKET"][1:]
s.sendto(b"not an assignment", to)
s.sendto(b"X=" + b"a" * 5000, to)
s.sendto(b"STATUS=warming up\nREADY=1", to)
s.sendto(b"WATCHDOG=1", to)
s.sendto(b"STOPPING=1", to)
signal.sigwait({signal.SIGQUIT})
sys.exit(3)
)";

struct harness {
  boost::asio::io_context io;
  exec_spawner spawner;
  std::vector<std::string> logged;
  channel master_end, worker_end;
  harness() { std::tie(master_end, worker_end) = channel::make_pair(); }

  spawn_request request(const program& prog, const std::vector<listener>& ls) {
    spawn_request req;
    req.slot = 1;
    req.generation = 7;
    req.exec = &prog;
    req.channel_fd = worker_end.fd();
    req.listeners = ls;
    for (const auto& l : ls) req.keep_fds.push_back(l.fd);
    req.keep_fds.push_back(worker_end.fd());
    req.master = &io;
    req.heartbeat_timeout = 3s;
    req.log = [this](log_level, const std::string& text) { logged.push_back(text); };
    return req;
  }

  // Runs the loop until `done` or 10 s.
  template <class Done>
  bool run_until(Done done) {
    for (int i = 0; i < 200 && !done(); ++i) io.run_for(50ms);
    return done();
  }

  bool logged_with(const std::string& needle) const {
    for (const auto& l : logged)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
};

int reap_one(exec_spawner& sp, pid_t pid) {
  int status = -1;
  for (int i = 0; i < 200 && status == -1; ++i) {
    sp.reap([&](pid_t p, int st) {
      if (p == pid) status = st;
    });
    if (status == -1) ::usleep(50'000);
  }
  return status;
}

// Minor page faults the calling thread has taken.
long minor_faults() {
  rusage u{};
  ::getrusage(RUSAGE_THREAD, &u);
  return u.ru_minflt;
}

// Private memory with every page written, so resident (no huge pages: one
// fault per page is the unit counted).
class touched_memory {
 public:
  explicit touched_memory(std::size_t pages)
      : page_(static_cast<std::size_t>(::sysconf(_SC_PAGESIZE))), pages_(pages) {
    void* p = ::mmap(nullptr, page_ * pages_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    REQUIRE(p != MAP_FAILED);
    base_ = static_cast<char*>(p);
    ::madvise(base_, page_ * pages_, MADV_NOHUGEPAGE);
    write_all();
  }
  ~touched_memory() { ::munmap(base_, page_ * pages_); }
  touched_memory(const touched_memory&) = delete;
  touched_memory& operator=(const touched_memory&) = delete;

  // That the measure works: after a fork, rewriting the memory faults on
  // (nearly) every page.
  void require_copied_by_fork() {
    const pid_t forked = ::fork();
    if (forked == 0) ::_exit(0);
    ::waitpid(forked, nullptr, 0);
    REQUIRE(rewrite_faults() >= static_cast<long>(pages_ * 9 / 10));
  }

  // The faults that writing every page again takes: each page a fork has
  // write-protected for copy-on-write faults once, even after the child
  // exec'd; a page nobody copied does not.
  long rewrite_faults() {
    const long before = minor_faults();
    write_all();
    return minor_faults() - before;
  }

 private:
  void write_all() {
    volatile char* p = base_;
    for (std::size_t i = 0; i < pages_; ++i) p[i * page_] = static_cast<char>(p[i * page_] + 1);
  }
  std::size_t page_, pages_;
  char* base_ = nullptr;
};

}  // namespace

TEST_CASE("notify datagrams: assignments are understood, unknown keys ignored, garbage refused",
          "[exec]") {
  auto m = detail::parse_notify("READY=1\nSTATUS=serving 3 clients\nMAINPID=42\n");
  CHECK(m.problem.empty());
  CHECK(m.ready);
  CHECK_FALSE(m.stopping);
  CHECK(m.status == "serving 3 clients");
  m = detail::parse_notify("WATCHDOG=1\nSTOPPING=1");
  CHECK((m.watchdog && m.stopping && !m.ready));
  CHECK(detail::parse_notify("READY=0").ready == false);
  for (std::string bad : {std::string(""), std::string("READY"), std::string("=1"),
                          std::string("ready=1"), std::string("READY=1\nhello"),
                          std::string("READY=1\0x", 9)}) {
    INFO(bad);
    auto g = detail::parse_notify(bad);
    CHECK_FALSE(g.problem.empty());
    CHECK_FALSE(g.ready);  // nothing is taken from a refused datagram
  }
}

TEST_CASE("notify datagrams: a STATUS= with control characters is kept escaped", "[exec]") {
  // An escape sequence would reach the operator's terminal through -s status.
  auto m = detail::parse_notify("STATUS=\x1b[2Jgone\r\tok\x7f");
  CHECK(m.problem.empty());
  CHECK(m.status == "\\x1b[2Jgone\\x0d\\x09ok\\x7f");
  CHECK(detail::parse_notify("STATUS=caf\xc3\xa9 ready").status == "caf\xc3\xa9 ready");
}

TEST_CASE("a program's environment: the master's own systemd variables are replaced by its",
          "[exec]") {
  ::setenv("NOTIFY_SOCKET", "/run/systemd/notify", 1);
  ::setenv("LISTEN_FDNAMES", "masters", 1);
  ::setenv("ADDED", "old", 1);
  program prog;
  prog.path = "/bin/true";
  prog.env = {"ADDED=new"};
  spawn_request req;
  req.slot = 2;
  req.generation = 5;
  req.listeners = {listener{3, "127.0.0.1:0", "127.0.0.1:8080"}, listener{4, "unix:/a", "unix:/a"}};
  auto env = detail::program_environment(req, prog, "@abc");
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("LISTEN_FDNAMES");
  ::unsetenv("ADDED");
  auto has = [&](const std::string& e) { return std::find(env.begin(), env.end(), e) != env.end(); };
  CHECK(has("NOTIFY_SOCKET=@abc"));
  CHECK_FALSE(has("NOTIFY_SOCKET=/run/systemd/notify"));
  CHECK(has("LISTEN_FDS=2"));
  CHECK(has("LISTEN_FDNAMES=127.0.0.1-8080:unix-/a"));
  CHECK(has("PROCMODEL_SLOT=2"));
  CHECK(has("PROCMODEL_GENERATION=5"));
  CHECK(has("ADDED=new"));
  CHECK_FALSE(has("ADDED=old"));
  CHECK_FALSE(has("LISTEN_FDNAMES=masters"));
}

TEST_CASE("a program gets its listeners from 3 and a notify socket, whose datagrams become messages",
          "[exec]") {
  harness h;
  bound_listener l;
  const std::string report = fmt::format("/tmp/procmodel-exec-{}.txt", ::getpid());
  ::setenv("MASTER_ONLY", "inherited", 1);
  program prog;
  prog.path = pmtest::python3;
  prog.args = {"-c", notifying_program, report};
  prog.env = {"ADDED=yes"};
  auto req = h.request(prog, {listener{l.fd.get(), "127.0.0.1:0", fmt::format("127.0.0.1:{}", l.port)}});
  const pid_t pid = h.spawner.spawn(req);
  ::unsetenv("MASTER_ONLY");
  h.worker_end.close();
  REQUIRE(pid > 0);

  bool ready = false, heartbeat = false, stopping = false;
  REQUIRE(h.run_until([&] {
    message m;
    while (h.master_end.receive(m) == receive_status::received) {
      ready = ready || m.type == message_type::ready;
      heartbeat = heartbeat || m.type == message_type::heartbeat;
      stopping = stopping || m.type == message_type::stopping;
    }
    return ready && heartbeat && stopping;
  }));
  CHECK(h.spawner.status_of(pid) == "warming up");
  CHECK(h.logged_with(fmt::format("worker {}: malformed notify datagram", pid)));
  CHECK(h.logged_with("longer than 4096 bytes"));

  const std::string seen = slurp(report);
  std::remove(report.c_str());
  INFO(seen);
  std::istringstream in(seen);
  std::string fds_count, own_pid, names, slot, generation, watchdog, port, notify, master_only, added;
  in >> fds_count >> own_pid >> names >> slot >> generation >> watchdog >> port >> notify >>
      master_only >> added;
  CHECK(fds_count == "1");
  CHECK(own_pid == "True");
  CHECK(names == fmt::format("127.0.0.1-{}", l.port));
  CHECK(slot == "1");
  CHECK(generation == "7");
  CHECK(watchdog == "3000000");
  CHECK(port == std::to_string(l.port));
  CHECK(notify.starts_with("@"));
  CHECK(master_only == "inherited");
  CHECK(added == "yes");
  // stdio, the listener at 3 and what Python opened itself: neither the
  // channel nor the notify socket crossed the exec.
  CHECK(seen.find("[0, 1, 2, 3, ") != std::string::npos);

  // A datagram from this process, which is not the worker: logged, ignored.
  {
    detail::unique_fd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path + 1, notify.data() + 1, notify.size() - 1);
    const char text[] = "READY=1";
    REQUIRE(::sendto(s.get(), text, sizeof text - 1, 0, reinterpret_cast<sockaddr*>(&sa),
                     static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + notify.size())) > 0);
    REQUIRE(h.run_until([&] { return h.logged_with(fmt::format("from pid {}, neither", ::getpid())); }));
    message m;
    CHECK(h.master_end.receive(m) == receive_status::would_block);
  }

  // quit over the channel is SIGQUIT to the program.
  REQUIRE(h.master_end.send({message_type::quit, 1000}));
  h.io.run_for(100ms);  // the loop carries it out
  const int status = reap_one(h.spawner, pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
  CHECK(h.spawner.status_of(pid).empty());  // forgotten with the process
}

TEST_CASE("a program that cannot be executed is a spawn error naming it, and leaves no child",
          "[exec]") {
  harness h;
  program missing;
  missing.path = "/nonexistent/procmodel-worker";
  auto req = h.request(missing, {});
  try {
    h.spawner.spawn(req);
    FAIL("spawn succeeded");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == ENOENT);
    CHECK(std::string(e.what()).find("cannot execute '/nonexistent/procmodel-worker'") !=
          std::string::npos);
  }
  const std::string plain = fmt::format("/tmp/procmodel-exec-plain-{}", ::getpid());
  { std::ofstream(plain) << "#!/bin/sh\nexit 0\n"; }
  ::chmod(plain.c_str(), 0644);
  program not_executable;
  not_executable.path = plain;
  auto req2 = h.request(not_executable, {});
  try {
    h.spawner.spawn(req2);
    FAIL("spawn succeeded");
  } catch (const std::system_error& e) {
    CHECK(e.code().value() == EACCES);
  }
  std::remove(plain.c_str());
  int status = 0;
  CHECK(::waitpid(-1, &status, WNOHANG) <= 0);  // each failed child was reaped at once
}

TEST_CASE("a program starts without a copy of the master's page tables, signals reset",
          "[exec]") {
  constexpr std::size_t pages = 2048;
  touched_memory memory(pages);
  memory.require_copied_by_fork();
  // What the master blocks and ignores must not reach the program.
  sigset_t usr1, old_mask;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
  auto old_hup = ::signal(SIGHUP, SIG_IGN);

  harness h;
  const std::string report = fmt::format("/tmp/procmodel-exec-vfork-{}.txt", ::getpid());
  program prog;
  prog.path = "/bin/sh";
  prog.args = {"-c", fmt::format("exec grep -E '^Sig(Blk|Ign)' /proc/self/status > {}", report)};
  auto req = h.request(prog, {});
  const pid_t pid = h.spawner.spawn(req);
  const long faults = memory.rewrite_faults();
  ::signal(SIGHUP, old_hup);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);

  if (detail::vfork_usable) {
    INFO(faults << " faults rewriting " << pages << " pages after the spawn");
    CHECK(faults < static_cast<long>(pages / 10));
  } else {
    WARN("built with ThreadSanitizer: exec_spawner forks every program");
  }
  const int status = reap_one(h.spawner, pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const std::string seen = slurp(report);
  std::remove(report.c_str());
  CHECK(seen == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

TEST_CASE(
    "a program with per-worker settings starts without a copy of the master's page tables too, "
    "the settings applied",
    "[exec][worker-settings]") {
  constexpr std::size_t pages = 2048;
  touched_memory memory(pages);
  memory.require_copied_by_fork();
  // What any user may set: a lower limit, one CPU (in the reverse of the
  // allowed order, so that slot 1 is not on CPU 1 by chance), a higher nice
  // value, a directory. As root, the user nobody besides.
  rlimit hard{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &hard) == 0);
  const std::string master_files = limit_of(::getpid(), "Max open files");
  const std::uint64_t nofile = std::min<rlim_t>(hard.rlim_max, 4321);
  detail::worker_plan plan;
  plan.rlimit_nofile = nofile;
  plan.rlimit_core = 0;
  const std::vector<unsigned> cpus = detail::allowed_cpus();
  plan.cpus.assign(cpus.rbegin(), cpus.rend());
  plan.priority = 7;
  temp_dir dir("procmodel-exec-settings");
  ::chmod(dir.path().c_str(), 0755);  // nobody enters it
  plan.directory = dir.path();
  const passwd* nobody = ::geteuid() == 0 ? ::getpwnam("nobody") : nullptr;
  if (nobody)
    plan.identity = detail::resolve_identity("nobody", "");
  else
    WARN("not root (or no user nobody): the switch to another user is not covered");

  REQUIRE(::prctl(PR_GET_DUMPABLE) == 1);

  harness h;
  program prog;
  prog.path = "/bin/sleep";
  prog.args = {"30"};
  auto req = h.request(prog, {});
  req.plan = &plan;
  const pid_t pid = h.spawner.spawn(req);
  const long faults = memory.rewrite_faults();
  if (detail::vfork_usable) {
    INFO(faults << " faults rewriting " << pages << " pages after the spawn");
    CHECK(faults < static_cast<long>(pages / 10));
  } else {
    WARN("built with ThreadSanitizer: exec_spawner forks every program");
  }

  // The program runs with them. Its name comes last: the kernel lets the
  // master go on (CLONE_VFORK) once the exec has the program's memory, and
  // renames the process a moment later, so a read at once may still see ours.
  CHECK(pmtest::wait_for(
      [&] { return slurp("/proc/" + std::to_string(pid) + "/comm") == "sleep\n"; }, 2s));
  CHECK(limit_of(pid, "Max open files") == fmt::format("{} {}", nofile, nofile));
  CHECK(limit_of(pid, "Max core file size") == "0 0");
  CHECK(status_field(pid, "Cpus_allowed_list") ==
        std::to_string(plan.cpus[req.slot % plan.cpus.size()]));
  CHECK(nice_of(pid) == "7");
  CHECK(std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/cwd") == dir.path());
  if (nobody) CHECK(drop_problems(pid, *nobody).empty());
  // The master, whose memory the child shared, is left as it was.
  CHECK(limit_of(::getpid(), "Max open files") == master_files);
  CHECK(nice_of(::getpid()) != "7");
  CHECK(std::filesystem::current_path() != std::filesystem::path(dir.path()));
  CHECK(::geteuid() == (nobody ? 0u : ::getuid()));
  CHECK(::prctl(PR_GET_DUMPABLE) == 1);  // the drop cleared it on the shared memory

  h.spawner.kill(pid);
  const int status = reap_one(h.spawner, pid);
  CHECK(WIFSIGNALED(status));
}

TEST_CASE("a per-worker setting the child cannot apply is a spawn error naming it and its errno",
          "[exec][worker-settings]") {
  harness h;
  program prog;
  prog.path = "/bin/true";
  auto req = h.request(prog, {});
  struct row {
    detail::worker_plan plan;
    int error;
    std::string what;
  };
  std::vector<row> rows;
  // The master checks the CPUs when it loads the options; one may go offline since.
  rows.push_back({{}, EINVAL, "the per-worker settings failed: worker_cpu_affinity: CPU 1023"});
  rows.back().plan.cpus = {1023};
  rows.push_back({{}, ENOENT, "the per-worker settings failed: worker_directory /nonexistent/pm"});
  rows.back().plan.directory = "/nonexistent/pm";
  temp_dir dir("procmodel-exec-settings");
  const std::string locked = dir.file("locked");
  REQUIRE(::mkdir(locked.c_str(), 0700) == 0);
  if (::geteuid() == 0 && ::getpwnam("nobody")) {
    // The directory is entered after the drop: as nobody, who may not.
    rows.push_back({{}, EACCES, "the per-worker settings failed: worker_directory " + locked});
    rows.back().plan.identity = detail::resolve_identity("nobody", "");
    rows.back().plan.directory = locked;
  } else {
    WARN("not root (or no user nobody): a directory entered after the drop is not covered");
  }
  for (const auto& r : rows) {
    INFO(r.what);
    req.plan = &r.plan;
    try {
      h.spawner.spawn(req);
      FAIL("spawn succeeded");
    } catch (const std::system_error& e) {
      CHECK(e.code().value() == r.error);
      CHECK(std::string(e.what()) == r.what + ": " + std::strerror(r.error));
    }
    int status = 0;
    CHECK(::waitpid(-1, &status, WNOHANG) <= 0);  // the failed child was reaped at once
  }
}

TEST_CASE("per-worker settings given only as code run in a forked child, whose failure is a "
          "spawn error",
          "[exec]") {
  harness h;
  program prog;
  prog.path = "/bin/true";
  auto req = h.request(prog, {});
  bool entered_here = false;
  req.enter = [&entered_here] {
    entered_here = true;
    return false;
  };
  try {
    h.spawner.spawn(req);
    FAIL("spawn succeeded");
  } catch (const std::system_error& e) {
    CHECK(std::string(e.what()).find("the per-worker settings failed") != std::string::npos);
  }
  CHECK_FALSE(entered_here);  // in a copy of this process, not in its memory
  int status = 0;
  CHECK(::waitpid(-1, &status, WNOHANG) <= 0);  // the failed child was reaped at once

  req.enter = [] { return true; };
  const pid_t pid = h.spawner.spawn(req);
  status = reap_one(h.spawner, pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
