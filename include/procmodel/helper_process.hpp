#pragma once

/// @file helper_process.hpp
/// Helper processes: besides the worker pool, processes of a role of the
/// embedder's (nginx's cache manager, a log shipper), supervised and
/// respawned as workers are, told about quit and reopen, listed by role in
/// `-s status`, never counted as serving, stopped after the workers on a
/// graceful stop (basic_supervisor::add_helper).

#include <functional>
#include <optional>
#include <string>

#include "program.hpp"

namespace procmodel {

class worker_context;

/// `count` processes of `role`, each running `run` (forked, as a worker is:
/// its worker_context has its drain and reopen), or `exec` (a program, under
/// exec_spawner, spoken to as an exec'd worker is). A helper gets the
/// listening sockets only with `listeners`.
struct helper_process {
  std::string role;
  unsigned count = 1;
  std::function<void(worker_context&)> run{};
  std::optional<program> exec{};
  bool listeners = false;
};

}  // namespace procmodel
