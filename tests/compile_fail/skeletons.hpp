#pragma once

// The policy skeletons of docs/architecture.md, declared as a user would copy
// them. A snippet defines OMIT_<POLICY>_<MEMBER> before including this to
// leave one member out; compile_ok.cpp leaves none out.

#include <array>
#include <csignal>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include <procmodel/supervisor.hpp>

struct skeleton_worker {
  void operator()(procmodel::worker_context&) {}
};

class my_spawner {
 public:
  explicit my_spawner(const procmodel::options& opt);
  bool separate_processes() const;
  pid_t spawn(const procmodel::spawn_request& req);
  void kill(pid_t id);
#ifndef OMIT_SPAWNER_REAP
  void reap(const std::function<void(pid_t id, int wait_status)>& on_exit);
#endif
};

struct my_signals {
  static constexpr std::array<int, 2> watched = {SIGTERM, SIGQUIT};
  static constexpr std::optional<procmodel::command> master(int) noexcept { return std::nullopt; }
  static constexpr procmodel::worker_reaction worker(int) noexcept {
    return procmodel::worker_reaction::ignore;
  }
#ifndef OMIT_SIGNALS_SIGNAL_FOR
  static constexpr int signal_for(procmodel::command) noexcept { return 0; }
#endif
};

class my_lifecycle {
 public:
  explicit my_lifecycle(const procmodel::lifecycle_config& config);
  std::vector<procmodel::action> handle(const procmodel::event& e,
                                        procmodel::steady_clock::time_point now);
  const std::vector<procmodel::process_info>& processes() const;
  procmodel::phase current_phase() const;
#ifndef OMIT_LIFECYCLE_GENERATION
  std::uint64_t generation() const;
#endif
  std::optional<procmodel::upgrade_status> upgrade() const;
#ifndef OMIT_LIFECYCLE_BACKOFFS
  std::vector<procmodel::backoff_status> backoffs() const;
#endif
  pid_t parent_master() const;
};

class my_loop {
 public:
  my_loop() = default;
  boost::asio::io_context& context();
  procmodel::steady_clock::time_point now() const;
  void watch_signals(std::span<const int> signals, std::function<void(int)> on_signal);
  void watch_readable(int fd, std::function<bool()> on_readable);
  void unwatch(int fd);
  void arm_timer(procmodel::timer_id id, procmodel::milliseconds after, std::function<void()> fire);
#ifndef OMIT_LOOP_CANCEL_TIMER
  void cancel_timer(procmodel::timer_id id);
#endif
  void run();
  void stop();
};

// Instantiating the class runs every contract check.
using skeleton_supervisor =
    procmodel::basic_supervisor<skeleton_worker, my_spawner, my_signals, my_lifecycle, my_loop>;
inline constexpr std::size_t skeleton_size = sizeof(skeleton_supervisor);
