#pragma once

/// @file supervisor.hpp
/// basic_supervisor: wires the policies together and owns the process table's
/// edge — the listeners, the channels, the pid file. One loop owns the state;
/// signals, child exits and channel messages all become lifecycle events on it,
/// and the lifecycle's actions are carried out here.

#include <csignal>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>
#include <unistd.h>

#include "asio_loop.hpp"
#include "channel.hpp"
#include "control.hpp"
#include "detail/daemon.hpp"
#include "lifecycle.hpp"
#include "listeners.hpp"
#include "log.hpp"
#include "options.hpp"
#include "pid_file.hpp"
#include "signals.hpp"
#include "spawner.hpp"
#include "worker_context.hpp"

namespace procmodel {

/// A master process supervising workers of type `Worker`, a callable
/// `void operator()(worker_context&)` copied into each worker.
template <class Worker, class Spawner = fork_spawner, class Signals = nginx_signals,
          class Lifecycle = nginx_lifecycle, class Loop = asio_loop>
class basic_supervisor {
  static_assert(std::is_invocable_v<Worker&, worker_context&>,
                "Worker is missing: void operator()(procmodel::worker_context&)");
  static_assert(detail::check_spawner_policy<Spawner>());
  static_assert(detail::check_signals_policy<Signals>());
  static_assert(detail::check_lifecycle_policy<Lifecycle>());
  static_assert(detail::check_loop_policy<Loop>());

 public:
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
    if (opt_.signal) return send_command<Signals>(opt_, *opt_.signal);
    if (opt_.query_status) {
      std::fprintf(stderr, "%s: -s status: this version has no control socket yet\n",
                   opt_.program_name.c_str());
      return 1;
    }
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
    if (!opt_.pid_file.empty()) pid_file::remove_if_ours(opt_.pid_file, ::getpid());
    log_.notice("exit");
    return exit_code_;
  }

  [[nodiscard]] const options& opts() const noexcept { return opt_; }
  [[nodiscard]] const Lifecycle& lifecycle() const noexcept { return *lifecycle_; }
  [[nodiscard]] const listener_set& listeners() const noexcept { return listeners_; }
  Loop& loop() noexcept { return loop_; }
  Spawner& spawner() noexcept { return spawner_; }
  logger& log() noexcept { return log_; }

 private:
  void start() {
    if (opt_.workers == 0) throw std::invalid_argument("workers must be at least 1");
    if (!opt_.pid_file.empty() && pid_file::names_live_master(opt_.pid_file, ::getpid()))
      throw std::runtime_error(fmt::format(
          "another master is running (pid {} in {}); stop it or use another pid file",
          pid_file::read(opt_.pid_file), opt_.pid_file));
    listeners_.bind_all(opt_.listen, opt_.backlog, opt_.reuseport ? opt_.workers : 0);
    for (const auto& l : listeners_.for_slot(0))
      log_.notice("listening on {}{}", l.local, opt_.reuseport ? " (a socket per worker)" : "");
    if (opt_.daemon) daemon_.detach(opt_.log_file.empty());
    if (!opt_.pid_file.empty()) pid_file::write(opt_.pid_file, ::getpid());

    std::vector<int> watched(Signals::watched.begin(), Signals::watched.end());
    watched.push_back(SIGCHLD);
    loop_.watch_signals(watched, [this](int signo) { on_signal(signo); });

    lifecycle_.emplace(to_lifecycle_config(opt_));
    log_.notice("master {} started with {} worker(s)", ::getpid(), opt_.workers);
    dispatch(events::started{});
  }

  void on_signal(int signo) {
    if (signo == SIGCHLD) {
      spawner_.reap([this](pid_t pid, int status) { on_exit(pid, status); });
      return;
    }
    if (auto c = Signals::master(signo)) {
      const char* name = ::sigabbrev_np(signo);
      log_.info("received SIG{}: {}", name ? name : "?", to_string(*c));
      dispatch(events::commanded{*c});
    }
  }

  void on_exit(pid_t pid, int status) {
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
        std::visit([this](auto& act) { this->perform(act); }, a);
    }
    dispatching_ = false;
  }

  void perform(const actions::spawn& a) {
    try {
      listeners_.ensure_slots(a.slot + 1);
    } catch (const std::exception& e) {
      log_.error("{}", e.what());
      dispatch(events::spawn_failed{a.slot, a.generation, EADDRINUSE});
      return;
    }
    auto [master_end, worker_end] = channel::make_pair();
    spawn_request req;
    req.slot = a.slot;
    req.generation = a.generation;
    req.keep_fds = listeners_.fds_for_slot(a.slot);
    req.keep_fds.push_back(worker_end.fd());
    req.master = &loop_.context();
    req.on_exit = [this](pid_t id, int status) { on_exit(id, status); };
    worker_context::setup setup;
    setup.slot = a.slot;
    setup.generation = a.generation;
    setup.listeners = listeners_.for_slot(a.slot);
    setup.owns_listeners = Spawner::separate_processes;
    setup.log_file = opt_.log_file;
    setup.level = opt_.level;
    setup.shutdown_timeout = opt_.shutdown_timeout;
    setup.orphan_timeout = opt_.orphan_timeout;
    int worker_fd = worker_end.fd();
    req.body = [worker = worker_, worker_fd, setup](bool own_process,
                                                    const spawn_request::attach_fn& attach) {
      return detail::run_worker<Signals>(worker, channel(detail::unique_fd(worker_fd)), setup,
                                         own_process, attach);
    };
    pid_t pid = 0;
    try {
      pid = spawner_.spawn(req);
    } catch (const std::system_error& e) {
      dispatch(events::spawn_failed{a.slot, a.generation, e.code().value()});
      return;
    }
    // A forked worker has its own copy; an in-process one took ownership.
    if (Spawner::separate_processes) worker_end.close(); else worker_end.release();
    int fd = master_end.fd();
    channels_.emplace(pid, std::move(master_end));
    loop_.watch_readable(fd, [this, pid] { return on_channel(pid); });
    dispatch(events::spawned{a.slot, a.generation, pid});
  }

  void perform(const actions::send& a) {
    auto it = channels_.find(a.pid);
    if (it == channels_.end() || !it->second.send({static_cast<message_type>(a.what), a.argument}))
      log_.warn("cannot reach worker {} over its channel", a.pid);
  }

  void perform(const actions::kill& a) { spawner_.kill(a.pid); }

  void perform(const actions::arm_timer& a) {
    loop_.arm_timer(a.id, a.after, [this, id = a.id] { dispatch(events::timer_fired{id}); });
  }

  void perform(const actions::cancel_timer& a) { loop_.cancel_timer(a.id); }

  void perform(const actions::stop_listening&) {
    listeners_.freeze();
    listeners_.close_all();
  }

  void perform(const actions::reopen_logs&) { log_.reopen(); }

  void perform(const actions::log& a) { log_.write_line(a.level, a.text); }

  void perform(const actions::serving& a) {
    try {
      listeners_.steer(a.workers);
    } catch (const std::exception& e) {
      log_.error("{}", e.what());
    }
  }

  // Runs the embedder's reloader on copies; only a complete success is kept.
  void perform(const actions::load_config&) {
    Worker next = worker_;
    options next_opt = opt_;
    events::config_loaded result;
    try {
      if (reloader_) reloader_(next, next_opt);
      if (next_opt.workers == 0) throw std::invalid_argument("workers must be at least 1");
      if (next_opt.listen != opt_.listen)
        log_.warn("reload: listen addresses change only with a restart or an upgrade; kept");
      next_opt.listen = opt_.listen;
      next_opt.reuseport = opt_.reuseport;
      if (next_opt.log_file != opt_.log_file) log_.open(next_opt.log_file);
      log_.set_level(next_opt.level);
      worker_ = std::move(next);
      opt_ = std::move(next_opt);
      result.ok = true;
      result.config = to_lifecycle_config(opt_);
    } catch (const std::exception& e) {
      result.error = e.what();
    }
    dispatch(std::move(result));
  }

  void perform(const actions::exit& a) {
    exit_code_ = a.code;
    loop_.stop();
  }

  options opt_;
  Worker worker_;
  reloader reloader_;
  logger log_;
  Loop loop_;
  Spawner spawner_;
  std::optional<Lifecycle> lifecycle_;
  listener_set listeners_;
  detail::daemonizer daemon_;
  std::map<pid_t, channel> channels_;
  std::deque<event> pending_;
  bool dispatching_ = false;
  int exit_code_ = 0;
};

/// The common case: forked workers, nginx's signals and lifecycle, Asio.
template <class Worker>
using supervisor = basic_supervisor<Worker>;

}  // namespace procmodel
