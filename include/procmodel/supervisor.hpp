#pragma once

/// @file supervisor.hpp
/// basic_supervisor: wires the policies together and owns the process table's
/// edge — the listeners, the channels, the pid file. One loop owns the state;
/// signals, child exits and channel messages all become lifecycle events on it,
/// and the lifecycle's actions are carried out here.

#include <climits>
#include <concepts>
#include <csignal>
#include <cstring>
#include <fstream>
#include <cstdio>
#include <deque>
#include <set>
#include <exception>
#include <functional>
#include <map>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <system_error>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "asio_loop.hpp"
#include "channel.hpp"
#include "control.hpp"
#include "detail/child_settings.hpp"
#include "detail/daemon.hpp"
#include "detail/run_worker.hpp"
#include "detail/signal_fd.hpp"
#include "detail/status_report.hpp"
#include "helper_process.hpp"
#include "lifecycle.hpp"
#include "listeners.hpp"
#include "log.hpp"
#include "options.hpp"
#include "pid_file.hpp"
#include "policies.hpp"
#include "signals.hpp"
#include "spawner.hpp"
#include "systemd.hpp"
#include "worker_context.hpp"

#if !defined(PROCMODEL_HEADER_ONLY)
#include "any_supervisor.hpp"  // supervisor<Worker>, separately compiled
#endif

namespace procmodel {

namespace detail {

/// The part of the options the lifecycle works with.
inline lifecycle_config to_lifecycle_config(const options& opt) {
  lifecycle_config c;
  c.workers = opt.workers;
  c.terminate_timeout = opt.terminate_timeout;
  c.shutdown_timeout = opt.shutdown_timeout;
  c.ready_timeout = opt.ready_timeout;
  c.max_draining_generations = opt.max_draining_generations;
  c.restart = opt.restart;
  c.winch_with_terminal = opt.winch_with_terminal;
  // Threads of the master share its memory, and SIGABRT would end it.
  c.heartbeat_timeout = opt.single_process ? milliseconds(0) : opt.heartbeat_timeout;
  c.heartbeat_grace = opt.heartbeat_grace;
  c.max_requests = opt.max_requests;
  c.max_age = opt.max_age;
  c.max_rss = opt.single_process ? 0 : opt.max_rss;
  c.recycle_jitter = opt.recycle_jitter;
  c.recycle_seed = static_cast<std::uint64_t>(steady_clock::now().time_since_epoch().count()) ^
                   (static_cast<std::uint64_t>(::getpid()) << 32);
  c.reload_batch = opt.reload_batch;
  return c;
}

/// The resident memory of process `pid` in bytes, from /proc; 0 if unknown.
inline std::uint64_t resident_bytes(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/statm", pid));
  std::uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

/// The variable naming the descriptor a new master reports ready on.
inline constexpr const char* upgrade_channel_env = "PROCMODEL_UPGRADE_FD";
/// Set beside the handover when the sockets came from systemd, not --listen.
inline constexpr const char* activated_env = "PROCMODEL_ACTIVATED";
/// Set beside the handover: the number the new master's first generation takes.
inline constexpr const char* generation_env = "PROCMODEL_GENERATION";

/// Whether this process has a controlling terminal (whose resizes send WINCH).
inline bool has_controlling_terminal() {
  unique_fd tty(::open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC));
  return static_cast<bool>(tty);
}

/// This program's absolute path, as the kernel knows it; a binary replaced
/// on disk since ("PATH (deleted)") is the new one at PATH.
inline std::string own_executable() {
  char buf[PATH_MAX + 1] = {};
  ssize_t n = ::readlink("/proc/self/exe", buf, PATH_MAX);
  if (n <= 0) return {};
  std::string path(buf, static_cast<std::size_t>(n));
  constexpr std::string_view deleted = " (deleted)";
  if (path.ends_with(deleted)) path.resize(path.size() - deleted.size());
  return path;
}

/// This program's arguments, argv[0] included, as it was started.
inline std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> out;
  std::string arg;
  while (std::getline(in, arg, '\0')) out.push_back(arg);
  return out;
}

}  // namespace detail

/// A master process supervising workers of type `Worker`, a callable
/// `void operator()(worker_context&)` copied into each worker. To name one
/// policy without the ones before it, see supervisor_with.
template <class Worker, class Spawner = runtime_spawner, class Signals = nginx_signals,
          class Lifecycle = nginx_lifecycle, class Loop = asio_loop>
class basic_supervisor {
  static_assert(detail::check_worker<Worker>());
  static_assert(detail::check_spawner_policy<Spawner>());
  static_assert(detail::check_signals_policy<Signals>());
  static_assert(detail::check_lifecycle_policy<Lifecycle>());
  static_assert(detail::check_loop_policy<Loop>());

 public:
  using worker_type = Worker;
  using spawner_type = Spawner;
  using signals_type = Signals;
  using lifecycle_type = Lifecycle;
  using loop_type = Loop;

  /// Re-reads the configuration on reload (HUP): edits the Worker and the
  /// options the next generation starts with, or throws to refuse the reload
  /// (the message is logged; the serving generation is untouched).
  using reloader = std::function<void(Worker& next, options& next_options)>;

  explicit basic_supervisor(options opt, Worker worker = Worker{})
      : opt_(std::move(opt)), worker_(std::move(worker)) {}

  /// Sets what a reload re-reads. Without one a reload starts a new
  /// generation with the same Worker and options (nginx's HUP without edits).
  basic_supervisor& on_reload(reloader r) {
    reloader_ = std::move(r);
    return *this;
  }

  /// Adds helper processes beside the workers (helper_process.hpp); before
  /// run(). Throws std::invalid_argument for an empty, duplicate or reserved
  /// role, a count of 0, or neither `run` nor `exec`.
  basic_supervisor& add_helper(helper_process h) {
    static_assert(requires(const Lifecycle& l) { l.helpers(); },
                  "Lifecycle policy is missing: helpers() const (add_helper needs a lifecycle that "
                  "keeps helper processes, as nginx_lifecycle does)");
    if (h.role.empty() || h.role == "master" || h.role == "worker" || h.role.find(' ') != std::string::npos)
      throw std::invalid_argument(fmt::format("helper role '{}': a word other than master and worker", h.role));
    if (h.count == 0) throw std::invalid_argument(fmt::format("helper {}: count must be at least 1", h.role));
    if (!h.run && !h.exec) throw std::invalid_argument(fmt::format("helper {}: neither run nor exec", h.role));
    for (const auto& other : helpers_)
      if (other.role == h.role) throw std::invalid_argument(fmt::format("helper {}: added twice", h.role));
    helpers_.push_back(std::move(h));
    return *this;
  }

  basic_supervisor(const basic_supervisor&) = delete;
  basic_supervisor& operator=(const basic_supervisor&) = delete;

  /// Parses the standard flags from argv over the options, then run().
  int run(int argc, const char* const* argv) {
    command_line cli(opt_);
    if (auto code = cli.parse(argc, argv)) return *code;
    return run();
  }

  /// Runs the master until it stops; returns the process exit code.
  /// With `options::signal` set, only tells the running master and returns.
  int run() {
    detail::open_missing_stdio();
    if (opt_.check_config) return check_config();
    if (opt_.query == "reload" && opt_.no_wait) return send_command<Signals>(opt_, command::reload);
    if (opt_.signal) return send_command<Signals>(opt_, *opt_.signal);
    if (!opt_.query.empty()) return query_master(opt_);
    log_.set_level(opt_.level);
    try {
      log_.open(opt_.log_file);
    } catch (const std::exception& e) {
      log_.error("{}", e.what());
      return 1;
    }
    try {
      start();
    } catch (const std::exception& e) {
      log_.error("{}", e.what());
      // A failed start leaves nothing behind that names it.
      control_.close(true);
      if (!opt_.pid_file.empty()) pid_file::remove_if_ours(opt_.pid_file, ::getpid());
      daemon_.notify_started(1);
      return 1;
    }
    daemon_.notify_started(0);
    try {
      loop_.run();
    } catch (const std::exception& e) {
      // Workers see their channel close and drain on their own.
      log_.error("master failed: {}; workers will drain and exit", e.what());
      exit_code_ = 1;
    }
    control_.close(true);
    if (!opt_.pid_file.empty()) {
      pid_file::remove_if_ours(opt_.pid_file, ::getpid());
      pid_file::remove_if_ours(opt_.pid_file + ".oldbin", ::getpid());
    }
    log_.notice("exit");
    return exit_code_;
  }

  [[nodiscard]] const options& opts() const noexcept { return opt_; }
  [[nodiscard]] const Lifecycle& lifecycle() const noexcept { return *lifecycle_; }
  [[nodiscard]] const listener_set& listeners() const noexcept { return listeners_; }
  Loop& loop() noexcept { return loop_; }
  /// The spawner; it exists once run() has started the master.
  Spawner& spawner() noexcept { return *spawner_; }
  logger& log() noexcept { return log_; }

 private:
  void start() {
    if (opt_.workers == 0) throw std::invalid_argument("workers must be at least 1");
    make_spawner();
    worker_plan_ = plan_workers(opt_);  // before anything serves: an unknown user stops the start
    give_log_to_workers();
    if (!opt_.pid_file.empty() && pid_file::names_live_master(opt_.pid_file, ::getpid()))
      throw std::runtime_error(fmt::format(
          "another master is running (pid {} in {}); stop it or use another pid file",
          pid_file::read(opt_.pid_file), opt_.pid_file));
    // From here a signal waits for the loop instead of killing a master
    // half started (logrotate's `killall -USR1`).
    std::vector<int> watched(Signals::watched.begin(), Signals::watched.end());
    watched.push_back(SIGCHLD);
    detail::take_over_signals(watched);
    reap_orphans();
    exe_ = detail::own_executable();
    args_ = detail::own_arguments();
    take_listeners();
    store_listeners();
    for (const auto& l : listeners_.for_slot(0))
      log_.notice("listening on {}{}", l.local, opt_.reuseport ? " (a socket per worker)" : "");
    const bool daemonized = should_daemonize(opt_.daemon, handed_over_);
    if (daemonized) daemon_.detach(opt_.log_file.empty());
    loop_.watch_signals(watched, [this](int signo) { on_signal(signo); });
    open_control(parent_master_ != 0);
    if (auto every = systemd_.watchdog()) arm_watchdog(std::chrono::duration_cast<milliseconds>(*every / 2));
    {
      lifecycle_config config = detail::to_lifecycle_config(opt_);
      for (const auto& h : helpers_) config.helpers.push_back({h.role, h.count});
      lifecycle_.emplace(config);
    }
    if (opt_.single_process && (opt_.heartbeat_timeout.count() > 0 || opt_.max_rss > 0))
      log_.warn("--single-process: no heartbeat watchdog and no --max-rss (the workers are "
                "threads of the master)");
    sample_rss();
    // Last: a pid file names a master that handles its signals and answers
    // on its control socket.
    if (!opt_.pid_file.empty()) pid_file::write(opt_.pid_file, ::getpid());
    log_.notice("master {} started with {} worker(s)", ::getpid(), opt_.workers);
    dispatch(events::started{::getpid(), first_generation_, parent_master_,
                             detail::has_controlling_terminal(), daemonized});
    // End of file on the line to the previous master: it has exited.
    if (parent_channel_.is_open())
      loop_.watch_readable(parent_channel_.fd(), [this] {
        char byte = 0;
        ssize_t n = ::recv(parent_channel_.fd(), &byte, 1, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
        parent_channel_.close();
        dispatch(events::parent_master_gone{});
        return false;
      });
  }

  // Built from the options when the Spawner takes them: the command line
  // has been parsed by now.
  void make_spawner() {
    if constexpr (std::is_constructible_v<Spawner, const options&>)
      spawner_.emplace(opt_);
    else
      spawner_.emplace();
    if (opt_.single_process && spawner_->separate_processes())
      throw std::invalid_argument(
          "--single-process: this program's spawner always starts worker processes");
  }

  // Resolves the user and checks the per-worker settings of `opt`; throws
  // what is wrong.
  detail::worker_plan plan_workers(const options& opt) {
    detail::worker_plan plan = detail::worker_plan_of(opt, spawner_->separate_processes());
    if (!spawner_->separate_processes() &&
        (opt.worker_rlimit_nofile || opt.worker_rlimit_core || opt.worker_cpu_affinity.enabled() ||
         opt.worker_priority || !opt.worker_directory.empty()))
      log_.warn("the workers are threads of the master: worker rlimits, CPU affinity, priority "
                "and directory are not applied");
    if (plan.identity)
      log_.notice("workers run as user {} ({})", plan.identity->user, detail::describe(*plan.identity));
    return plan;
  }

  // Workers open the log file by its path as their user (at start and on
  // reopen), so the master's own is theirs.
  void give_log_to_workers() {
    if (!worker_plan_.identity || log_.path().empty()) return;
    if (auto why = detail::give_file_to(log_.fd(), *worker_plan_.identity); !why.empty())
      log_.warn("log file {}: {}; workers running as {} may not write it", log_.path(), why,
                worker_plan_.identity->user);
  }

  // As PID 1, or a subreaper when asked, orphaned descendants become this
  // master's children; the reap on SIGCHLD (waitpid of any child) takes
  // them, and the lifecycle tells them from workers. PID 1 gets no default
  // action for a signal without a handler, which the master never relies
  // on: every signal it acts on is blocked and read from its signalfd.
  void reap_orphans() {
    pid_one_ = ::getpid() == 1;
    if (pid_one_)
      log_.notice("master is PID 1: it reaps orphaned processes; SIGTERM {}",
                  master_command<Signals>(SIGTERM, opt_.sigterm, true) == command::quit
                      ? "drains (graceful stop)"
                      : "is a fast stop");
    if (!opt_.subreaper || pid_one_) return;
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
      throw std::system_error(errno, std::generic_category(), "--subreaper: prctl(PR_SET_CHILD_SUBREAPER)");
    log_.notice("master is a subreaper: it reaps orphaned descendants");
  }

  void on_signal(int signo) {
    if (signo == SIGCHLD) {
      spawner_->reap([this](pid_t pid, int status) { on_exit(pid, status); });
      return;
    }
    if (auto c = master_command<Signals>(signo, opt_.sigterm, pid_one_)) {
      const char* name = ::sigabbrev_np(signo);
      log_.info("received SIG{}: {}", name ? name : "?", to_string(*c));
      dispatch(events::commanded{*c});
    }
  }

  // --- listeners: inherited from a previous master or systemd, or bound ---

  void take_listeners() {
    unsigned slots = opt_.reuseport ? opt_.workers : 0;
    if (const char* handed = std::getenv(handover_env)) {
      std::string text = handed;
      ::unsetenv(handover_env);
      handed_over_ = true;
      if (const char* gen = std::getenv(detail::generation_env)) {
        std::string gen_text = gen;
        ::unsetenv(detail::generation_env);
        try {
          first_generation_ = static_cast<std::uint64_t>(
              parse_number(detail::generation_env, gen_text, 1, 1LL << 53));
        } catch (const std::invalid_argument& e) {
          throw std::runtime_error(e.what());
        }
      }
      activated_ = std::getenv(detail::activated_env) != nullptr;
      ::unsetenv(detail::activated_env);
      if (activated_) {  // systemd's sockets, passed on as they came
        std::vector<int> fds;
        for (const auto& h : parse_handover(text)) fds.push_back(h.fd);
        listeners_.adopt_activated(fds);
      } else {
        listeners_.adopt_all(opt_.listen, opt_.backlog, slots, parse_handover(text));
      }
      if (const char* chan = std::getenv(detail::upgrade_channel_env)) {
        std::string fd_text = chan;
        ::unsetenv(detail::upgrade_channel_env);
        int fd = 0;
        try {
          fd = static_cast<int>(parse_number(detail::upgrade_channel_env, fd_text, 3, 1 << 20));
        } catch (const std::invalid_argument& e) {
          throw std::runtime_error(e.what());
        }
        if (auto why = upgrade_fd_problem(fd, listeners_.fds()); !why.empty())
          throw std::runtime_error(
              fmt::format("{}={}: {}", detail::upgrade_channel_env, fd_text, why));
        // Not a listener handed over, nor anything else but a channel.
        detail::check_channel_fd(fd, fmt::format("{}={}", detail::upgrade_channel_env, fd_text));
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        parent_channel_ = channel(detail::unique_fd(fd));
        parent_master_ = ::getppid();
      }
      log_.notice("took over {} listening socket(s) from the previous master",
                  listeners_.all().size());
      return;
    }
    if (auto activated = systemd_listen_fds(::getpid())) {
      const char* names_env = std::getenv("LISTEN_FDNAMES");
      std::string names = names_env ? names_env : "";
      ::unsetenv("LISTEN_FDS");
      ::unsetenv("LISTEN_PID");
      ::unsetenv("LISTEN_FDNAMES");
      if (auto stored = stored_listeners(*activated, names)) return restore_listeners(*stored, slots);
      listeners_.adopt_activated(*activated);
      activated_ = true;
      log_.notice("took over {} socket(s) from systemd (socket activation)", activated->size());
      return;
    }
    if (opt_.listen.empty() && !opt_.without_listeners)
      throw std::runtime_error(
          "no socket to serve: set options::listen, pass --listen HOST:PORT, or start by socket "
          "activation; a program whose workers serve no socket sets options::without_listeners");
    listeners_.bind_all(opt_.listen, opt_.backlog, slots);
  }

  // The sockets systemd passed, when they are the ones a previous master
  // stored (every name procmodel-listen-INDEX-SLOT); nothing when they come
  // from socket units. A mix is refused: nothing is guessed.
  static std::optional<std::vector<stored_fd>> stored_listeners(const std::vector<int>& fds,
                                                               const std::string& names) {
    std::vector<std::string_view> split;
    for (std::string_view rest = names; !names.empty();) {
      auto colon = rest.find(':');
      split.push_back(rest.substr(0, colon));
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
    std::vector<stored_fd> out;
    for (std::size_t i = 0; i < fds.size(); ++i)
      if (auto s = i < split.size() ? stored_fd::from_name(split[i], fds[i]) : std::nullopt)
        out.push_back(*s);
    if (out.empty()) return std::nullopt;
    if (out.size() != fds.size())
      throw std::runtime_error(fmt::format(
          "LISTEN_FDNAMES='{}': sockets of a socket unit mixed with ones a previous master "
          "stored; give the service one or the other",
          names));
    return out;
  }

  // A master restarted by systemd after its predecessor died takes back the
  // sockets that one stored: connections queued meanwhile are served. A
  // socket that no longer fits the configuration leaves the store.
  void restore_listeners(const std::vector<stored_fd>& stored, unsigned slots) {
    std::vector<std::pair<stored_fd, std::string>> dropped;
    auto fitting = listeners_.still_fitting(opt_.listen, slots, stored, dropped);
    for (const auto& [s, why] : dropped) {
      log_.warn("systemd's stored socket {} (descriptor {}) {}: dropped from the store",
                s.name(), s.fd, why);
      systemd_.remove_stored_fd(s.name());
      ::close(s.fd);
    }
    if (opt_.listen.empty())
      throw std::runtime_error("no socket to serve: the stored sockets fit no listen address");
    listeners_.adopt_all(opt_.listen, opt_.backlog, slots, fitting);
    for (const auto& s : stored)  // systemd has these; the dropped ones' names are free again
      if (std::none_of(dropped.begin(), dropped.end(), [&](const auto& d) { return d.first.fd == s.fd; }))
        stored_.insert(s.name());
    log_.notice(
        "took over {} listening socket(s) from systemd's file-descriptor store; connections "
        "queued while no master ran are served",
        fitting.size());
  }

  // Under systemd with a file-descriptor store, every listening socket is
  // kept there (once), so that a master restarted after a crash finds the
  // queues it left instead of binding anew.
  void store_listeners() {
    if (activated_ || !systemd_.enabled() || !(opt_.fd_store || systemd_notifier::has_fd_store()))
      return;
    for (const auto& s : listeners_.to_store())
      if (stored_.insert(s.name()).second && !systemd_.store_fd(s.fd, s.name()))
        log_.warn("cannot store listening socket {} with systemd: {}", s.name(),
                  std::strerror(errno));
  }

  // --- control socket ---

  /// Control clients waiting for their request line, at most; more are told
  /// the master is busy. Each has control_deadline to send it, so that
  /// clients that never speak cannot take the master's descriptors.
  static constexpr std::size_t max_control_clients = 16;
  static constexpr milliseconds control_deadline{2'000};
  /// A request line is this long at most.
  static constexpr std::size_t max_control_request = 256;
  /// How long the control socket is left alone after accept failed (out of
  /// descriptors): the queued client keeps it readable, and retrying at once
  /// would spin.
  static constexpr milliseconds control_backoff{500};

  void open_control(bool take_over) {
    std::string path = control_path(opt_);
    if (path.empty()) return;
    control_.open(path, take_over);
    loop_.cancel_timer({timer_kind::control_backoff, 0});
    loop_.watch_readable(control_.fd(), [this] { return accept_control(); });
  }

  // Takes every waiting client; false (stop watching for control_backoff)
  // when accept fails.
  bool accept_control() {
    for (;;) {
      int error = 0;
      auto client = control_.accept(error);
      if (!client && error == 0) return true;
      if (!client) {
        if (!control_starved_)
          log_.error("control socket: cannot accept: {}; trying again every {} ms",
                     std::strerror(error), control_backoff.count());
        control_starved_ = true;
        loop_.arm_timer({timer_kind::control_backoff, 0}, control_backoff, [this] {
          if (control_.fd() >= 0)
            loop_.watch_readable(control_.fd(), [this] { return accept_control(); });
        });
        return false;
      }
      if (control_starved_) log_.notice("control socket: accepting again");
      control_starved_ = false;
      if (control_clients_.size() >= max_control_clients)
        reply(*client, "error: the master is busy with other control clients; try again\n");
      else
        await_request(std::move(*client));
    }
  }

  // A client's request line is read as it arrives, on the loop, in as many
  // pieces as it comes: a slow or silent client never stalls the master.
  void await_request(detail::unique_fd client) {
    int fd = client.get();
    unsigned serial = ++control_serial_;
    control_clients_[fd] = control_client{std::move(client), {}, serial};
    loop_.watch_readable(fd, [this, fd] { return read_request(fd); });
    loop_.arm_timer({timer_kind::control_deadline, serial}, control_deadline, [this, fd, serial] {
      auto it = control_clients_.find(fd);
      if (it == control_clients_.end() || it->second.serial != serial) return;
      loop_.unwatch(fd);
      control_clients_.erase(it);
    });
  }

  // Reads what a control client sent; once the line is whole (or the client
  // closed, or it is too long) serves it and stops watching.
  bool read_request(int fd) {
    auto it = control_clients_.find(fd);
    if (it == control_clients_.end()) return false;
    std::string& req = it->second.request;
    for (;;) {
      char buf[max_control_request + 1];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      if (n > 0) req.append(buf, static_cast<std::size_t>(n));
      if (n > 0 && req.find('\n') == std::string::npos && req.size() <= max_control_request)
        continue;
      break;
    }
    control_client c = std::move(it->second);
    control_clients_.erase(it);
    loop_.unwatch(fd);
    loop_.cancel_timer({timer_kind::control_deadline, c.serial});
    if (auto nl = c.request.find('\n'); nl != std::string::npos) c.request.resize(nl);
    if (c.request.size() > max_control_request)
      reply(c.fd, fmt::format("error: request longer than {} bytes\n", max_control_request));
    else
      serve_control(std::move(c.fd), c.request);
    return false;
  }

  void serve_control(detail::unique_fd client, std::string_view req) {
    while (!req.empty() && (req.back() == '\n' || req.back() == '\r')) req.remove_suffix(1);
    if (req == "status" || req == "status json") {
      reply(client, status_table(req == "status json"));
    } else if (req == "reload") {
      dispatch(events::commanded{command::reload, wait_for_verdict(std::move(client))});
    } else if (req == "upgrade" || req.starts_with("upgrade ")) {
      // "upgrade MS": the client's own --upgrade-timeout.
      milliseconds timeout = opt_.upgrade_timeout;
      if (req.size() > 8) {
        try {
          timeout = milliseconds(parse_number("timeout", req.substr(8), 1, 86'400'000));
        } catch (const std::invalid_argument& e) {
          return reply(client, fmt::format("error: {}\n", e.what()));
        }
      }
      dispatch(events::upgrade_requested{true, timeout, wait_for_verdict(std::move(client))});
    } else {
      reply(client,
            fmt::format("error: unknown request '{}' (status, status json, reload, upgrade)\n", req));
    }
  }

  // Keeps a control client until the lifecycle answers it (actions::reply).
  std::uint64_t wait_for_verdict(detail::unique_fd client) {
    std::uint64_t id = next_client_++;
    waiting_.emplace(id, std::move(client));
    return id;
  }

  static void reply(detail::unique_fd& client, const std::string& text) {
    if (!client) return;
    (void)!::send(client.get(), text.data(), text.size(), MSG_NOSIGNAL);
    client.reset();
  }

  [[nodiscard]] std::string status_table(bool json) const {
    detail::status_report report = status_report();
    return json ? report.json() : report.text();
  }

  // The master, a new or old master, empty slots, helpers and workers, and
  // the notes the text form adds under them.
  [[nodiscard]] detail::status_report status_report() const {
    auto now = loop_.now();
    auto secs = [&](steady_clock::time_point t) {
      return std::chrono::duration<double>(now - t).count();
    };
    auto said_by = [&](pid_t pid) -> std::string {
      if constexpr (requires(const Spawner& sp) { { sp.status_of(pid) } -> std::convertible_to<std::string>; })
        return spawner_->status_of(pid);
      else
        return {};
    };
    std::map<unsigned, replacement_status> replaced;
    if constexpr (requires(const Lifecycle& l) { l.replacements(); })
      for (auto& r : lifecycle_->replacements()) replaced[r.slot] = r;
    auto replaced_text = [&](unsigned slot) -> std::string {
      auto it = replaced.find(slot);
      if (it == replaced.end()) return {};
      return fmt::format("{:.1f}s ago, pid {}: {}",
                         std::chrono::duration<double>(now - it->second.at).count(),
                         it->second.pid, it->second.cause);
    };
    detail::status_report report;
    auto& rows = report.rows;
    try {
      if (!opt_.pid_file.empty()) report.named = pid_file::read(opt_.pid_file);
    } catch (const std::runtime_error&) {
    }
    rows.push_back({::getpid(), "master", "-", std::to_string(lifecycle_->generation()),
                    std::string(to_string(lifecycle_->current_phase())), secs(started_at_), "-"});
    if (auto u = lifecycle_->upgrade(); u && u->pid != 0)
      rows.push_back({u->pid, "new master", "-", "-",
                      u->abandoned ? "stopping" : u->ready ? "ready" : "starting", secs(u->since),
                      "-"});
    if (pid_t parent = lifecycle_->parent_master())
      rows.push_back({parent, "old master", "-", "-", "serving", -1.0, "-"});
    for (const auto& b : lifecycle_->backoffs())
      rows.push_back({0, "worker", std::to_string(b.slot), std::to_string(b.generation),
                      fmt::format("backoff {:.1f}s",
                                  std::chrono::duration<double>(b.next_attempt - now).count()),
                      -1.0, std::to_string(b.restarts), replaced_text(b.slot)});
    if constexpr (requires(const Lifecycle& l) { l.helpers(); })
      for (const auto& h : lifecycle_->helpers())
        rows.push_back({h.pid, h.role, std::to_string(h.index), "-",
                        h.pid == 0 ? (h.respawn_at ? fmt::format("backoff {:.1f}s",
                                                                 std::chrono::duration<double>(*h.respawn_at - now).count())
                                                   : std::string("stopped"))
                                   : h.state == process_state::ready ? std::string("running")
                                                                     : std::string(to_string(h.state)),
                        h.pid == 0 ? -1.0 : secs(h.started), std::to_string(h.restarts), "",
                        h.pid == 0 ? std::string() : said_by(h.pid)});
    for (const auto& p : lifecycle_->processes())
      rows.push_back({p.pid, "worker", std::to_string(p.slot), std::to_string(p.generation),
                      std::string(to_string(p.state)), secs(p.started), std::to_string(p.restarts),
                      p.generation == lifecycle_->generation() ? replaced_text(p.slot) : "",
                      said_by(p.pid)});
    // Why each slot's worker was last replaced: a crash, a missed heartbeat, a recycling.
    for (const auto& [slot, r] : replaced)
      report.notes.push_back(fmt::format("slot {} last replaced {}", slot, replaced_text(slot)));
    // Two masters: say which one `-s` reaches through the pid file.
    if (report.named != 0 && (lifecycle_->upgrade() || lifecycle_->parent_master()))
      report.notes.push_back(fmt::format("pid file {} names {}", opt_.pid_file, report.named));
    if constexpr (requires(const Lifecycle& l) { { l.roll() } -> std::same_as<std::optional<roll_status>>; })
      if (auto r = lifecycle_->roll())
        report.notes.push_back(fmt::format(
            "rolling reload to generation {}: {} of {} slot(s) moved, {} at a time, at most {} "
            "worker(s)",
            r->generation, r->moved, r->workers, r->batch, r->cap));
    return report;
  }

  // --- hot upgrade: the lifecycle decides, these carry it out ---

  void perform(const actions::rename_pid_file&) {
    events::pid_file_renamed result;
    if (!opt_.pid_file.empty() &&
        ::rename(opt_.pid_file.c_str(), (opt_.pid_file + ".oldbin").c_str()) != 0) {
      result.ok = false;
      result.error = fmt::format("cannot rename {} to {}.oldbin: {}", opt_.pid_file,
                                 opt_.pid_file, std::strerror(errno));
    }
    dispatch(std::move(result));
  }

  void perform(const actions::exec_upgrade& a) {
    if (exe_.empty() || ::access(exe_.c_str(), X_OK) != 0)
      return dispatch(events::new_master_failed{
          fmt::format("cannot execute {}", exe_.empty() ? "this binary" : exe_)});
    auto [mine, theirs] = channel::make_pair();
    std::vector<int> keep = listeners_.fds();
    keep.push_back(theirs.fd());
    std::string handover = listeners_.handover();
    std::string generation = std::to_string(a.next_generation);
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
      detail::reset_signals_after_fork();
      ::signal(SIGPIPE, SIG_DFL);
      detail::close_all_except(keep);
      for (int fd : keep) ::fcntl(fd, F_SETFD, 0);  // these, and only these, cross the exec
      ::setenv(handover_env, handover.c_str(), 1);
      if (activated_) ::setenv(detail::activated_env, "1", 1);
      ::setenv(detail::upgrade_channel_env, std::to_string(theirs.fd()).c_str(), 1);
      ::setenv(detail::generation_env, generation.c_str(), 1);
      // systemd's WATCHDOG_PID names the main pid, which this one becomes.
      if (systemd_.watchdog()) ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
      std::vector<char*> argv;
      for (auto& arg : args_) argv.push_back(arg.data());
      argv.push_back(nullptr);
      ::execv(exe_.c_str(), argv.data());
      std::fprintf(stderr, "cannot execute %s: %s\n", exe_.c_str(), std::strerror(errno));
      ::_exit(127);
    }
    if (pid < 0) return dispatch(events::new_master_failed{fmt::format("fork: {}", std::strerror(errno))});
    if (new_master_line_.is_open()) loop_.unwatch(new_master_line_.fd());
    new_master_line_ = std::move(mine);
    new_master_ = pid;
    loop_.watch_readable(new_master_line_.fd(), [this, pid] { return on_new_master_line(pid); });
    log_.notice("upgrade: new master {} started from {}", pid, exe_);
    dispatch(events::new_master_started{pid});
  }

  // What the new master reports; false once its line is closed.
  bool on_new_master_line(pid_t pid) {
    message m;
    for (;;) {
      auto st = new_master_line_.receive(m);
      if (st == receive_status::would_block) return true;
      if (st != receive_status::received) return false;  // its exit tells the rest
      if (m.type == message_type::ready) dispatch(events::new_master_ready{pid});
    }
  }

  void perform(const actions::restore_pid_file& a) {
    restore_pid_file();
    if (a.take_back_control) take_back_control();
  }

  // Operators reach this master again. Out of descriptors that can fail:
  // then it is tried again until it works, as the accept loop backs off.
  void take_back_control() {
    try {
      if (control_.fd() >= 0) loop_.unwatch(control_.fd());
      control_.close(false);
      open_control(true);
    } catch (const std::exception& e) {
      log_.error("{}; the control socket is tried again in {} ms", e.what(),
                 control_backoff.count());
      loop_.arm_timer({timer_kind::control_backoff, 1}, control_backoff, [this] {
        if (lifecycle_->current_phase() == phase::running) take_back_control();
      });
    }
  }

  void perform(const actions::signal_new_master& a) {
    if (a.pid > 0 && a.pid == new_master_) ::kill(a.pid, a.signo);
  }

  void perform(const actions::reply& a) {
    auto it = waiting_.find(a.client);
    if (it == waiting_.end()) return;
    reply(it->second, fmt::format("{}: {}\n", a.ok ? "ok" : "error", a.text));
    waiting_.erase(it);
  }

  void perform(const actions::report_ready_to_parent&) {
    // The line stays open: its end of file says the previous master is gone.
    if (parent_channel_.is_open() && !parent_channel_.send({message_type::ready, 0}))
      log_.warn("cannot tell the previous master this one is ready");
  }

  void perform(const actions::hand_over& a) { systemd_.main_pid(a.pid); }

  // Only on the lifecycle's word that this master renamed it. Out of
  // descriptors (the failure that may have ended the upgrade) the file cannot
  // be opened to check its pid: then a regular file, not a link, is enough.
  void restore_pid_file() {
    if (opt_.pid_file.empty()) return;
    std::string old = opt_.pid_file + ".oldbin";
    detail::unique_fd probe(::open(old.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (!probe && (errno == EMFILE || errno == ENFILE)) {
      struct stat st {};
      if (::lstat(old.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
    } else {
      probe.reset();
      try {
        if (pid_file::read(old) != ::getpid()) return;
      } catch (const std::runtime_error&) {
        return;
      }
    }
    if (::rename(old.c_str(), opt_.pid_file.c_str()) != 0)
      log_.error("cannot restore pid file {}: {}", opt_.pid_file, std::strerror(errno));
  }

  void arm_watchdog(milliseconds every) {
    loop_.arm_timer({timer_kind::watchdog, 0}, every, [this, every] {
      systemd_.watchdog_ping();
      arm_watchdog(every);
    });
  }

  // --max-rss: the supervisor measures, the lifecycle decides.
  void sample_rss() {
    if (opt_.max_rss == 0 || !spawner_->separate_processes() || rss_sampling_) return;
    rss_sampling_ = true;
    loop_.arm_timer({timer_kind::rss_sample, 0}, opt_.rss_check_interval, [this] {
      rss_sampling_ = false;
      std::vector<pid_t> pids;
      for (const auto& p : lifecycle_->processes())
        if (p.state == process_state::ready) pids.push_back(p.pid);
      for (pid_t pid : pids)
        if (auto bytes = detail::resident_bytes(pid)) dispatch(events::worker_rss{pid, bytes});
      sample_rss();
    });
  }

  void on_exit(pid_t pid, int status) {
    if (pid == new_master_ && new_master_line_.is_open()) {
      loop_.unwatch(new_master_line_.fd());
      new_master_line_.close();
    }
    if (auto it = channels_.find(pid); it != channels_.end()) {
      loop_.unwatch(it->second.fd());
      channels_.erase(it);
    }
    dispatch(events::exited{pid, status});
  }

  // Reads what a worker reports; false once the channel is closed.
  bool on_channel(pid_t pid) {
    auto it = channels_.find(pid);
    if (it == channels_.end()) return false;
    message m;
    for (;;) {
      switch (it->second.receive(m)) {
        case receive_status::would_block: return true;
        case receive_status::closed: return false;  // it is exiting; SIGCHLD tells the rest
        case receive_status::failed:
          log_.warn("malformed message from worker {}; ignored", pid);
          return true;
        case receive_status::received:
          if (m.type == message_type::ready) dispatch(events::ready{pid});
          if (m.type == message_type::heartbeat) dispatch(events::heartbeat{pid});
          if (m.type == message_type::served && m.argument >= 0)
            dispatch(events::served{pid, static_cast<std::uint64_t>(m.argument)});
          if (m.type == message_type::stopping) dispatch(events::stopping{pid});
          break;
      }
    }
  }

  // Feeds an event to the lifecycle and carries out its actions; events that
  // actions cause are queued, never handled re-entrantly.
  void dispatch(event e) {
    pending_.push_back(std::move(e));
    if (dispatching_) return;
    dispatching_ = true;
    while (!pending_.empty()) {
      event next = std::move(pending_.front());
      pending_.pop_front();
      for (auto& a : lifecycle_->handle(next, loop_.now()))
        std::visit([this](auto& act) { this->carry_out(act); }, a);
    }
    dispatching_ = false;
  }

  // Runs out of descriptors, memory or processes are events, never
  // exceptions out of the loop: the master must outlive them.
  template <class Action>
  void carry_out(const Action& act) {
    try {
      perform(act);
    } catch (const std::exception& e) {
      failed(act, e);
    }
  }

  static int error_of(const std::exception& e) {
    if (auto* s = dynamic_cast<const std::system_error*>(&e)) return s->code().value();
    if (dynamic_cast<const std::bad_alloc*>(&e)) return ENOMEM;
    return EIO;
  }

  // The lifecycle retries with backoff.
  void failed(const actions::spawn& a, const std::exception& e) {
    dispatch(events::spawn_failed{a.slot, a.generation, error_of(e), e.what()});  // the lifecycle logs it
  }

  // Before the new master exists: this one keeps serving.
  void failed(const actions::exec_upgrade&, const std::exception& e) {
    dispatch(events::new_master_failed{e.what()});
  }

  template <class Action>
  void failed(const Action&, const std::exception& e) {
    log_.error("{}", e.what());
  }

  void perform(const actions::spawn& a) {
    try {
      listeners_.ensure_slots(a.slot + 1);
    } catch (const std::exception& e) {
      dispatch(events::spawn_failed{a.slot, a.generation, EADDRINUSE, e.what()});
      return;
    }
    const recipe& made = recipe_for(a.generation);
    const program* exec = nullptr;
    if constexpr (requires(const Worker& w) { { w.exec_program() } -> std::convertible_to<const program&>; })
      exec = &made.worker.exec_program();
    pid_t pid = 0;
    try {
      pid = launch({a.slot, a.generation, &made.opt, &made.plan, exec, true, true}, made.worker);
    } catch (const std::exception& e) {
      failed(a, e);
      return;
    }
    dispatch(events::spawned{a.slot, a.generation, pid});
  }

  // Only a Lifecycle that keeps helpers (helpers()) asks for one; add_helper()
  // does not compile with any other.
  void perform(const actions::spawn_helper& a) {
    if constexpr (requires(const Lifecycle& l) { l.helpers(); })
      start_helper(a);
    else
      log_.error("the Lifecycle policy asked for helper {} but keeps no helpers()", a.helper);
  }

  void start_helper(const actions::spawn_helper& a) {
    const auto& info = lifecycle_->helpers().at(a.helper);
    const auto& h = *std::find_if(helpers_.begin(), helpers_.end(),
                                  [&](const helper_process& x) { return x.role == info.role; });
    const std::string role = info.role;
    const unsigned index = info.index;
    auto body = [run = h.run, role](worker_context& ctx) {
      if (!run) throw std::runtime_error(fmt::format("helper {} names a program: it needs exec_spawner", role));
      run(ctx);
    };
    pid_t pid = 0;
    try {
      pid = launch({index, lifecycle_->generation(), &opt_, &worker_plan_, h.exec ? &*h.exec : nullptr,
                    h.listeners, false},
                   body);
    } catch (const std::exception& e) {
      dispatch(events::helper_spawn_failed{a.helper, error_of(e), e.what()});  // the lifecycle logs it
      return;
    }
    dispatch(events::helper_spawned{a.helper, pid});
  }

  // What a process the master starts is: a worker of a slot, or a helper.
  struct launch_spec {
    unsigned slot;
    std::uint64_t generation;
    const options* opt;
    const detail::worker_plan* plan;
    const program* exec;  // a program to run instead of `work` (exec_spawner)
    bool listeners;       // handed the slot's listeners
    bool worker;          // reports its work (max_requests)
  };

  // Starts one process running `work` (with its own channel, watched);
  // returns its id. Throws what the spawner or the channel throws.
  template <class Work>
  pid_t launch(const launch_spec& l, const Work& work) {
    auto [master_end, worker_end] = channel::make_pair();
    const options& o = *l.opt;
    spawn_request req;
    req.slot = l.slot;
    req.generation = l.generation;
    if (l.listeners) req.keep_fds = listeners_.fds_for_slot(l.worker ? l.slot : 0);
    req.keep_fds.push_back(worker_end.fd());
    req.master = &loop_.context();
    req.on_exit = [this](pid_t id, int status) { on_exit(id, status); };
    worker_context::setup setup;
    setup.slot = l.slot;
    setup.generation = l.generation;
    if (l.listeners) setup.listeners = listeners_.for_slot(l.worker ? l.slot : 0);
    const bool separate = spawner_->separate_processes();
    // A worker owns its listeners, a forked one by the fork; a thread gets
    // duplicates made here, before it runs. The master closes its own at a
    // stop or a reload, perhaps before a thread just started has made its
    // acceptors, and another thread may have reused the numbers by then.
    auto copies = separate ? nullptr : duplicate_listeners(setup.listeners);
    setup.log_file = o.log_file;
    setup.level = o.level;
    setup.shutdown_timeout = o.shutdown_timeout;
    setup.orphan_timeout = o.orphan_timeout;
    if (separate) setup.heartbeat_interval = o.heartbeat_timeout / 3;  // helpers too
    if (o.max_requests != 0 && l.worker)
      setup.report_every = std::max<std::uint64_t>(1, o.max_requests / 50);
    int worker_fd = worker_end.fd();
    req.exec = l.exec;
    req.channel_fd = worker_fd;
    req.listeners = setup.listeners;
    if (!l.plan->empty()) {  // exec_spawner applies the plan itself, without a fork
      req.plan = l.plan;
      req.enter = [plan = *l.plan, slot = l.slot, log_file = o.log_file, level = o.level] {
        return detail::enter_worker(plan, slot, log_file, level);
      };
    }
    if (separate) req.heartbeat_timeout = o.heartbeat_timeout;
    req.log = [this](log_level level, const std::string& text) { log_.write_line(level, text); };
    req.body = [work, worker_fd, setup, plan = *l.plan, copies](bool own_process,
                                                                const spawn_request::attach_fn& attach) {
      if (copies)
        for (auto& fd : *copies) fd.release();  // the worker's context closes them now
      if (own_process && !detail::enter_worker(plan, setup.slot, setup.log_file, setup.level))
        return 1;
      return detail::run_worker<Signals>(work, channel(detail::unique_fd(worker_fd)), setup,
                                         own_process, attach);
    };
    pid_t pid = spawner_->spawn(req);
    // A forked worker has its own copy; an in-process one took ownership.
    if (separate) worker_end.close(); else worker_end.release();
    int fd = master_end.fd();
    channels_.emplace(pid, std::move(master_end));
    loop_.watch_readable(fd, [this, pid] { return on_channel(pid); });
    return pid;
  }

  // Points `ls` at duplicates of their descriptors (close-on-exec), owned
  // by the result until the worker takes them.
  static std::shared_ptr<std::vector<detail::unique_fd>> duplicate_listeners(std::vector<listener>& ls) {
    auto copies = std::make_shared<std::vector<detail::unique_fd>>();
    for (auto& one : ls) {
      detail::unique_fd fd(::fcntl(one.fd, F_DUPFD_CLOEXEC, 3));
      if (!fd) detail::throw_errno("dup listener");
      one.fd = fd.get();
      copies->push_back(std::move(fd));
    }
    return copies;
  }

  // What a generation's workers run, and with which options. A reload loads
  // the next configuration before its generation serves: until then the
  // serving generation's respawns, and the slots a failed rolling reload
  // gives back to it, start from its own configuration, not the new one.
  struct recipe {
    Worker worker;
    options opt;
    detail::worker_plan plan;  // the user and per-worker settings, resolved
  };

  const recipe& recipe_for(std::uint64_t generation) {
    // A generation older than the serving one never spawns again.
    std::erase_if(recipes_, [&](const auto& r) { return r.first < lifecycle_->generation(); });
    auto it = recipes_.find(generation);
    if (it == recipes_.end()) it = recipes_.emplace(generation, recipe{worker_, opt_, worker_plan_}).first;
    return it->second;
  }

  void perform(const actions::send& a) {
    auto it = channels_.find(a.pid);
    if (it == channels_.end() || !it->second.send({static_cast<message_type>(a.what), a.argument}))
      log_.warn("cannot reach worker {} over its channel", a.pid);
  }

  // SIGKILL is the spawner's; another signal (the watchdog's SIGABRT) goes
  // to a worker process only, never to a thread of the master.
  void perform(const actions::kill& a) {
    if (a.signo == SIGKILL)
      spawner_->kill(a.pid);
    else if (spawner_->separate_processes() && a.pid > 0)
      ::kill(a.pid, a.signo);
  }

  void perform(const actions::arm_timer& a) {
    loop_.arm_timer(a.id, a.after, [this, id = a.id] { dispatch(events::timer_fired{id}); });
  }

  void perform(const actions::cancel_timer& a) { loop_.cancel_timer(a.id); }

  // The control socket stays: status answers until the master exits.
  void perform(const actions::stop_listening& a) {
    if (a.freeze) {
      listeners_.freeze();
      remove_socket_files();
    }
    listeners_.close_all();
  }

  void remove_socket_files() {
    for (const auto& path : listeners_.remove_socket_files())
      log_.notice("removed the socket file unix:{}", path);
  }

  void perform(const actions::notify& a) {
    switch (a.what) {
      case actions::notice::ready: systemd_.ready(); break;
      case actions::notice::reloading: systemd_.reloading(); break;
      case actions::notice::stopping: systemd_.stopping(); break;
    }
  }

  void perform(const actions::reopen_logs&) {
    log_.reopen();
    give_log_to_workers();
  }

  void perform(const actions::log& a) { log_.write_line(a.level, a.text); }

  void perform(const actions::serving& a) {
    try {
      listeners_.steer(a.workers);
    } catch (const std::exception& e) {
      log_.error("{}", e.what());
    }
    store_listeners();  // per-slot sockets of new slots
  }

  // The configuration a reload would load: the reloader run on copies.
  // Throws what refuses it.
  void load_next(Worker& next, options& next_opt) const {
    if (reloader_) reloader_(next, next_opt);
    if (next_opt.workers == 0) throw std::invalid_argument("workers must be at least 1");
  }

  // -t: whether the configuration loads, without a master.
  int check_config() {
    Worker next = worker_;
    options next_opt = opt_;
    try {
      load_next(next, next_opt);
      detail::worker_plan_of(next_opt, !next_opt.single_process);  // an unknown user, ...
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: configuration refused: %s\n", opt_.program_name.c_str(), e.what());
      return 1;
    }
    std::printf("%s: configuration ok (%u worker(s))\n", opt_.program_name.c_str(), next_opt.workers);
    return 0;
  }

  // Runs the embedder's reloader on copies; only a complete success is kept.
  void perform(const actions::load_config&) {
    Worker next = worker_;
    options next_opt = opt_;
    events::config_loaded result;
    try {
      load_next(next, next_opt);
      if (next_opt.listen != opt_.listen)
        log_.warn("reload: listen addresses change only with a restart or an upgrade; kept");
      next_opt.listen = opt_.listen;
      next_opt.reuseport = opt_.reuseport;
      next_opt.single_process = opt_.single_process;  // the spawner is built at start
      detail::worker_plan plan = plan_workers(next_opt);
      if (next_opt.log_file != opt_.log_file) log_.open(next_opt.log_file);
      worker_plan_ = std::move(plan);
      give_log_to_workers();
      log_.set_level(next_opt.level);
      worker_ = std::move(next);
      opt_ = std::move(next_opt);
      result.ok = true;
      result.config = detail::to_lifecycle_config(opt_);
      sample_rss();
    } catch (const std::exception& e) {
      result.error = e.what();
    }
    dispatch(std::move(result));
  }

  void perform(const actions::exit& a) {
    if (a.remove_socket_files) remove_socket_files();
    exit_code_ = a.code;
    loop_.stop();
  }

  options opt_;
  Worker worker_;
  reloader reloader_;
  logger log_;
  Loop loop_;
  std::optional<Spawner> spawner_;  // built at start, from the options
  detail::worker_plan worker_plan_;   // what each forked worker applies to itself
  std::optional<Lifecycle> lifecycle_;
  listener_set listeners_;
  detail::daemonizer daemon_;
  std::map<pid_t, channel> channels_;
  std::map<std::uint64_t, recipe> recipes_;  // by generation: what its workers were loaded with
  std::vector<helper_process> helpers_;      // add_helper()'s, in order
  std::deque<event> pending_;
  bool dispatching_ = false;
  int exit_code_ = 0;
  steady_clock::time_point started_at_ = steady_clock::now();
  std::string exe_;                 // resolved at start: what an upgrade runs
  std::vector<std::string> args_;   // and with which arguments
  systemd_notifier systemd_;
  control_server control_;
  pid_t new_master_ = 0;               // the last master this one started
  channel new_master_line_;            // it reports ready here
  std::map<std::uint64_t, detail::unique_fd> waiting_;  // control clients awaiting a verdict
  std::uint64_t next_client_ = 1;
  struct control_client {
    detail::unique_fd fd;
    std::string request;  // what came so far
    unsigned serial = 0;  // tells its deadline from a later client's on the same fd
  };
  std::map<int, control_client> control_clients_;  // waiting for their request line
  unsigned control_serial_ = 0;
  bool control_starved_ = false;  // accept failed; logged once until it works again
  channel parent_channel_;             // a new master's line to the previous one
  pid_t parent_master_ = 0;
  bool handed_over_ = false;           // the listeners came from a previous master
  std::uint64_t first_generation_ = 1;
  bool activated_ = false;  // the listeners came from systemd
  bool rss_sampling_ = false;  // the rss_sample timer is armed
  bool pid_one_ = false;    // the master is PID 1 (a container's init)
  std::set<std::string> stored_;  // names in systemd's file-descriptor store
};

#if defined(PROCMODEL_HEADER_ONLY)
/// The common case: forked workers (threads with `--single-process`),
/// nginx's signals and lifecycle, Asio.
template <class Worker>
using supervisor = basic_supervisor<Worker>;
#endif

/// A supervisor whose policies are named one at a time, in any order, the
/// rest left at their defaults (policies.hpp):
/// `supervisor_with<W, use_signals<graceful_term_signals>, use_spawner<inline_spawner>>`
/// is `basic_supervisor<W, inline_spawner, graceful_term_signals>`.
template <class Worker, class... Options>
using supervisor_with =
    basic_supervisor<Worker, typename policies<Options...>::spawner,
                     typename policies<Options...>::signals,
                     typename policies<Options...>::lifecycle, typename policies<Options...>::loop>;

/// SIGTERM drains, as systemd and container runtimes expect; SIGINT stays
/// the fast stop.
template <class Worker>
using graceful_term_supervisor = supervisor_with<Worker, use_signals<graceful_term_signals>>;

}  // namespace procmodel
