#pragma once

/// @file exec_spawner.hpp
/// exec_spawner: workers that are programs of their own, in any language,
/// spoken to the systemd way. A program gets the listeners as socket
/// activation passes them (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, from
/// descriptor 3), its slot and generation (PROCMODEL_SLOT,
/// PROCMODEL_GENERATION), and a NOTIFY_SOCKET of its own where READY=1,
/// STOPPING=1, WATCHDOG=1 and STATUS=... are understood; the master's
/// commands reach it as signals (program::quit_signal, SIGTERM, SIGUSR1).
/// The spawner speaks for the program on the worker's channel, so the
/// supervisor and the lifecycle treat it as any forked worker.
///
/// A program is started as posix_spawn starts one (clone with CLONE_VM and
/// CLONE_VFORK): the child shares the master's memory until it execs, so no
/// page table is copied and a spawn costs the same whatever the master
/// holds. So does a request with per-worker settings (--user, --group,
/// --worker-rlimit-*, --worker-cpu-affinity, --worker-priority,
/// --worker-directory, as `spawn_request::plan`): the master resolves them
/// into plain data first and the child applies them with raw system calls
/// (detail/child_settings.hpp), neither allocating nor going through glibc's
/// setuid, which signals every thread of the process. Two cases fork
/// instead, and pay the copy as a forked worker does: a request whose
/// settings are only code (`spawn_request::enter` without `plan`), which
/// may allocate, throw and log; and a build with ThreadSanitizer, whose
/// interceptors would run in the child on the master's memory.
///
/// @par Example
/// @code
/// using pool = procmodel::supervisor_with<procmodel::exec_worker,
///                                         procmodel::use_spawner<procmodel::exec_spawner>>;
/// pool sup(opt, procmodel::exec_worker{{"/usr/bin/python3", {"worker.py"}}});
/// return sup.run(argc, argv);
/// @endcode

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <fmt/core.h>

#include "channel.hpp"
#include "detail/child_settings.hpp"
#include "detail/close_fds.hpp"
#include "detail/format.hpp"
#include "detail/notify_socket.hpp"
#include "detail/signal_fd.hpp"
#include "detail/vfork.hpp"
#include "program.hpp"
#include "spawner.hpp"
#include "worker_context.hpp"

extern char** environ;

namespace procmodel {

/// The Worker of a pool of programs: `supervisor_with<exec_worker,
/// use_spawner<exec_spawner>>`. A reloader edits `run` to change what the
/// next generation runs.
struct exec_worker {
  program run;

  /// What exec_spawner runs for each worker.
  [[nodiscard]] const program& exec_program() const noexcept { return run; }
  /// Never called under exec_spawner, which runs the program instead.
  void operator()(worker_context&) const {
    throw std::logic_error("exec_worker runs a program: supervise it with exec_spawner");
  }
};

namespace detail {

/// LISTEN_FDNAMES wants no ':' in a name: "127.0.0.1:8080" is "127.0.0.1-8080".
inline std::string listen_fd_name(const listener& l) {
  std::string name = l.local;
  for (char& c : name)
    if (c == ':' || static_cast<unsigned char>(c) < 0x20) c = '-';
  return name;
}

/// The environment a program starts with: the master's, without what
/// belongs to the master (its own socket activation, its notify socket),
/// then what the program is told. LISTEN_PID and WATCHDOG_PID come last,
/// filled in by the child with its own pid.
inline std::vector<std::string> program_environment(const spawn_request& req, const program& prog,
                                                    const std::string& notify) {
  static constexpr std::string_view ours[] = {
      "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", "NOTIFY_SOCKET=", "WATCHDOG_USEC=",
      "WATCHDOG_PID=", "PROCMODEL_SLOT=", "PROCMODEL_GENERATION="};
  auto named = [](std::string_view entry, std::string_view prefix) {
    return entry.starts_with(prefix);
  };
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view entry = *e;
    bool drop = false;
    for (auto prefix : ours) drop = drop || named(entry, prefix);
    for (const auto& added : prog.env) {
      auto eq = added.find('=');
      drop = drop || (eq != std::string::npos && named(entry, std::string_view(added).substr(0, eq + 1)));
    }
    if (!drop) env.emplace_back(entry);
  }
  for (const auto& added : prog.env) env.push_back(added);
  env.push_back(detail::format("PROCMODEL_SLOT={}", req.slot));
  env.push_back(detail::format("PROCMODEL_GENERATION={}", req.generation));
  env.push_back(detail::format("NOTIFY_SOCKET={}", notify));
  if (!req.listeners.empty()) {
    std::string names;
    for (const auto& l : req.listeners) names += (names.empty() ? "" : ":") + listen_fd_name(l);
    env.push_back(detail::format("LISTEN_FDS={}", req.listeners.size()));
    env.push_back("LISTEN_FDNAMES=" + names);
  }
  if (req.heartbeat_timeout.count() > 0)
    env.push_back(detail::format("WATCHDOG_USEC={}", req.heartbeat_timeout.count() * 1000));
  return env;
}

/// What the child reports on its close-on-exec pipe when it cannot exec.
struct exec_failure {
  int stage = 0;  ///< 1: the per-worker settings, 2: the descriptors, 3: exec
  int error = 0;
  child_step setting = child_step::none;  ///< which one, at stage 1 from a plan
};

/// A program's argv and environment, built by the master before the child
/// exists (which may not allocate). LISTEN_PID and WATCHDOG_PID are blank
/// slots the child fills in with its own pid. Pointers into it are handed
/// out: it stays where it is made.
struct exec_image {
  std::vector<std::string> env, args;
  std::string listen_pid = std::string(32, '\0'), watchdog_pid = std::string(32, '\0');
  std::vector<char*> envp, argv;
  std::vector<int> listen_fds;

  exec_image(const spawn_request& req, const program& prog, const std::string& notify)
      : env(program_environment(req, prog, notify)), args{prog.path} {
    for (auto& e : env) envp.push_back(e.data());
    if (!req.listeners.empty()) envp.push_back(listen_pid.data());
    if (req.heartbeat_timeout.count() > 0) envp.push_back(watchdog_pid.data());
    envp.push_back(nullptr);
    args.insert(args.end(), prog.args.begin(), prog.args.end());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (const auto& l : req.listeners) listen_fds.push_back(l.fd);
  }
  exec_image(const exec_image&) = delete;
  exec_image& operator=(const exec_image&) = delete;
};

/// What exec_spawner's child reads: all of it prepared by the master.
struct exec_child {
  const child_settings* settings;       ///< the per-worker settings as data; null: none
  const std::function<bool()>* enter;  ///< else as code (forked child only); null: none
  const int* listen_fds;
  int listen_count;
  int report;  ///< close-on-exec pipe for an exec_failure
  pid_t master;
  int quit_signal;  ///< sent to the program when the master dies
  char* const* argv;
  char* const* envp;
  char* listen_pid;  ///< "LISTEN_PID=<its pid>", written by the child
  char* watchdog_pid;
};

}  // namespace detail

/// Runs a program for each worker whose Worker names one (exec_program(),
/// as exec_worker does), and forks as fork_spawner for any other.
class exec_spawner {
 public:
  static constexpr bool separate_processes() noexcept { return true; }

  exec_spawner() = default;
  exec_spawner(const exec_spawner&) = delete;
  exec_spawner& operator=(const exec_spawner&) = delete;

  /// Starts `req.exec` (else forks as fork_spawner). Throws std::system_error
  /// when the program cannot be executed (missing, not executable): the
  /// master logs it and retries with backoff.
  pid_t spawn(const spawn_request& req) {
    if (!req.exec) return fork_spawner{}.spawn(req);
    return start(req, *req.exec);
  }

  void kill(pid_t pid) { ::kill(pid, SIGKILL); }

  /// Reaps every exited child; a program's notify socket goes with it.
  void reap(const std::function<void(pid_t, int)>& on_exit) {
    fork_spawner{}.reap([&](pid_t pid, int status) {
      programs_.erase(pid);
      on_exit(pid, status);
    });
  }

  /// The last STATUS= a program sent; empty if none (or not a program).
  [[nodiscard]] std::string status_of(pid_t pid) const {
    auto it = programs_.find(pid);
    return it == programs_.end() ? std::string() : it->second->status;
  }

 private:
  // What the master holds for one running program: its notify socket and
  // the worker's end of its channel, each waited on by the master's loop.
  struct running {
    running(boost::asio::io_context& io, detail::notify_socket&& n, detail::unique_fd chan)
        : notify(std::move(n)), channel_end(std::move(chan)), notify_wait(io, notify.fd()),
          channel_wait(io, channel_end.fd()) {}
    ~running() {
      // The sockets are owned above; these only wait on them.
      boost::system::error_code ignored;
      notify_wait.cancel(ignored);
      channel_wait.cancel(ignored);
      (void)notify_wait.release();
      (void)channel_wait.release();
    }
    running(const running&) = delete;
    running& operator=(const running&) = delete;

    pid_t pid = 0;
    program prog;
    detail::notify_socket notify;
    channel channel_end;
    boost::asio::posix::stream_descriptor notify_wait;
    boost::asio::posix::stream_descriptor channel_wait;
    std::string status;
    unsigned complaints = 0;  // bad datagrams logged; a flood is logged once
    std::function<void(log_level, const std::string&)> log;

    void complain(const std::string& text) {
      if (!log) return;
      if (complaints < max_complaints)
        log(log_level::warn, detail::format("worker {}: {}; ignored", pid, text));
      else if (complaints == max_complaints)
        log(log_level::warn,
            detail::format("worker {}: more bad notify datagrams; no longer logged", pid));
      ++complaints;
    }
  };
  static constexpr unsigned max_complaints = 8;

  pid_t start(const spawn_request& req, const program& prog) {
    if (!req.master) throw std::invalid_argument("exec_spawner: the request names no loop");
    if (req.channel_fd < 0) throw std::invalid_argument("exec_spawner: the request names no channel");
    detail::notify_socket notify;
    // The master keeps the worker's end: the supervisor closes its own copy.
    detail::unique_fd chan(::fcntl(req.channel_fd, F_DUPFD_CLOEXEC, 3));
    if (!chan) detail::throw_errno("exec_spawner: dup");
    detail::exec_image image(req, prog, notify.name());

    int report[2];
    if (::pipe2(report, O_CLOEXEC) != 0) detail::throw_errno("exec_spawner: pipe");
    detail::unique_fd report_read(report[0]), report_write(report[1]);
    const bool planned = req.plan && !req.plan->empty();
    detail::child_settings settings;
    if (planned) settings = detail::child_settings_of(*req.plan, req.slot);
    detail::exec_child child{planned ? &settings : nullptr,
                             !planned && req.enter ? &req.enter : nullptr,
                             image.listen_fds.data(),
                             static_cast<int>(image.listen_fds.size()),
                             report_write.get(),
                             ::getpid(),
                             prog.quit_signal,
                             image.argv.data(),
                             image.envp.data(),
                             image.listen_pid.data(),
                             image.watchdog_pid.data()};
    const bool copy = child.enter || !detail::vfork_usable;
    pid_t pid = 0;
    {
      detail::master_dumpable keep;
      pid = copy ? fork_child(child) : clone_child(child);
    }
    report_write.reset();
    throw_if_failed(pid, report_read.get(), prog, req);

    auto r = std::make_shared<running>(*req.master, std::move(notify), std::move(chan));
    r->pid = pid;
    r->prog = prog;
    r->log = req.log;
    programs_[pid] = r;
    wait_notify(r);
    wait_channel(r);
    return pid;
  }

  // Settings as code may allocate, throw and log, none of which is safe in
  // a child that shares the master's memory, so that child gets a copy of
  // it; so does every child under ThreadSanitizer (detail::vfork_usable).
  static pid_t fork_child(const detail::exec_child& child) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) detail::throw_errno("fork");
    if (pid == 0) run_child(child);
    return pid;
  }

  // Else as posix_spawn: no copy of the master's page tables, so a spawn
  // costs the same whatever the master holds.
  static pid_t clone_child(detail::exec_child& child) {
    detail::child_stack stack(child_stack_size);
    return detail::clone_vfork(&child_main, &child, stack);
  }
  // glibc's posix_spawn takes 32 KiB and the arguments; ASan's frames are larger.
  static constexpr std::size_t child_stack_size = 256 * 1024;

  PROCMODEL_CHILD_NO_ASAN static int child_main(void* child) {
    run_child(*static_cast<const detail::exec_child*>(child));
  }

  // Throws what the child reported on `report` when it could not exec, once
  // it is reaped; returns when the pipe closed on its exec.
  static void throw_if_failed(pid_t pid, int report, const program& prog,
                              const spawn_request& req) {
    detail::exec_failure failure;
    ssize_t n;
    do n = ::read(report, &failure, sizeof failure);
    while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(sizeof failure)) return;
    int status = 0;
    ::waitpid(pid, &status, 0);  // it exits at once with 127; nothing else reaps it
    switch (failure.stage) {
      case 1:
        if (failure.setting != detail::child_step::none && req.plan)
          throw std::system_error(
              failure.error ? failure.error : EPERM, std::generic_category(),
              "the per-worker settings failed: " +
                  detail::describe(failure.setting, *req.plan, req.slot));
        throw std::system_error(failure.error ? failure.error : EPERM, std::generic_category(),
                                "the per-worker settings failed (see above)");
      case 2:
        throw std::system_error(failure.error, std::generic_category(),
                                "cannot pass the listening sockets");
      default:
        throw std::system_error(failure.error, std::generic_category(),
                                detail::format("cannot execute '{}' (exit 127)", prog.path));
    }
  }

  // In the child: nothing here returns, allocates or throws, but settings
  // as code, which run only in a forked child.
  [[noreturn]] PROCMODEL_CHILD_NO_ASAN static void run_child(const detail::exec_child& c) {
    int report = c.report;
    // Handlers first, then the mask: a master's handler never runs here.
    detail::reset_signals_after_fork();
    ::signal(SIGPIPE, SIG_DFL);  // ignored dispositions would survive the exec
    if (c.settings) {
      const detail::child_step_failure f = detail::apply_child_settings(*c.settings);
      if (f.step != detail::child_step::none) child_failed(report, 1, f.error, f.step);
    } else if (c.enter && !(*c.enter)()) {
      child_failed(report, 1, 0);
    }
    // After the privilege drop, which clears it: the program drains when
    // the master dies, as a forked worker does when its channel closes.
    ::prctl(PR_SET_PDEATHSIG, c.quit_signal);
    if (::getppid() != c.master) ::_exit(1);
    // The listeners go to 3, 4, ...: first out of the way of one another.
    const int n = c.listen_count;
    int high[256];
    if (n > 256) child_failed(report, 2, EMFILE);
    int keep_report = ::fcntl(report, F_DUPFD_CLOEXEC, 3 + n);
    if (keep_report < 0) child_failed(report, 2, errno);
    report = keep_report;
    for (int i = 0; i < n; ++i)
      if ((high[i] = ::fcntl(c.listen_fds[i], F_DUPFD_CLOEXEC, 3 + n)) < 0)
        child_failed(report, 2, errno);
    for (int i = 0; i < n; ++i)
      if (::dup2(high[i], 3 + i) < 0) child_failed(report, 2, errno);  // without close-on-exec
    int keep[257];
    for (int i = 0; i < n; ++i) keep[i] = 3 + i;
    keep[n] = report;
    close_range_except(keep, n + 1);
    const pid_t self = ::getpid();
    std::snprintf(c.listen_pid, 32, "LISTEN_PID=%d", self);
    std::snprintf(c.watchdog_pid, 32, "WATCHDOG_PID=%d", self);
    ::execvpe(c.argv[0], c.argv, c.envp);
    child_failed(report, 3, errno);
  }

  // Reports on the close-on-exec pipe why the child cannot exec, and exits.
  [[noreturn]] PROCMODEL_CHILD_NO_ASAN static void child_failed(
      int report, int stage, int error, detail::child_step setting = detail::child_step::none) {
    detail::exec_failure f{stage, error, setting};
    (void)!::write(report, &f, sizeof f);
    ::_exit(127);
  }

  // close_all_except without allocating (the child of a loop's owner).
  static void close_range_except(const int* keep, int count) {
    unsigned from = 3;
    for (int i = 0; i < count; ++i) {  // keep is ascending: 3..n+2, then the report pipe
      auto fd = static_cast<unsigned>(keep[i]);
      if (fd > from) ::syscall(SYS_close_range, from, fd - 1, 0);
      from = fd + 1;
    }
    ::syscall(SYS_close_range, from, ~0U, 0);
  }

  // Datagrams on the program's notify socket become channel messages.
  static void wait_notify(const std::shared_ptr<running>& self) {
    self->notify_wait.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                              [weak = std::weak_ptr<running>(self)](const boost::system::error_code& ec) {
                                auto r = weak.lock();
                                if (ec || !r) return;
                                read_notify(*r);
                                wait_notify(r);
                              });
  }

  static void read_notify(running& r) {
    while (auto d = detail::receive_notify(r.notify.fd())) {
      if (d->oversized) {
        r.complain(detail::format("notify datagram from pid {} longer than {} bytes", d->sender,
                                  detail::notify_max));
        continue;
      }
      if (d->sender == 0 || !detail::sent_by(d->sender, r.pid)) {
        r.complain(
            detail::format("notify datagram from pid {}, neither the worker nor a process of "
                           "its own",
                           d->sender));
        continue;
      }
      auto m = detail::parse_notify(d->text);
      if (!m.problem.empty()) {
        r.complain(
            detail::format("malformed notify datagram ({}, {} bytes)", m.problem, d->text.size()));
        continue;
      }
      if (m.status) r.status = *m.status;
      if (m.ready) r.channel_end.send({message_type::ready, 0});
      if (m.watchdog) r.channel_end.send({message_type::heartbeat, 0});
      if (m.stopping) r.channel_end.send({message_type::stopping, 0});
    }
  }

  // The master's commands on the channel become signals to the program.
  static void wait_channel(const std::shared_ptr<running>& self) {
    self->channel_wait.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                               [weak = std::weak_ptr<running>(self)](const boost::system::error_code& ec) {
                                 auto r = weak.lock();
                                 if (ec || !r) return;
                                 if (read_channel(*r)) wait_channel(r);
                               });
  }

  static bool read_channel(running& r) {
    message m;
    for (;;) {
      switch (r.channel_end.receive(m)) {
        case receive_status::would_block: return true;
        case receive_status::closed: return false;
        case receive_status::failed: return true;  // a stray datagram: the next may be good
        case receive_status::received:
          int signo = 0;
          switch (m.type) {
            case message_type::quit: signo = r.prog.quit_signal; break;
            case message_type::terminate: signo = r.prog.terminate_signal; break;
            case message_type::reopen: signo = r.prog.reopen_signal; break;
            default: break;
          }
          if (signo != 0) ::kill(r.pid, signo);
          break;
      }
    }
  }

  std::map<pid_t, std::shared_ptr<running>> programs_;
};

}  // namespace procmodel
