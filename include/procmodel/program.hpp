#pragma once

/// @file program.hpp
/// A worker that is a program of its own, in any language: what
/// exec_spawner runs instead of a Worker's code (exec_spawner.hpp).

#include <csignal>
#include <string>
#include <vector>

namespace procmodel {

/// A program to run as a worker: its path (searched in PATH when it has no
/// slash), its arguments, its environment additions, and the signals that
/// carry the master's commands to it.
struct program {
  std::string path;
  std::vector<std::string> args;   ///< argv[1..]; argv[0] is `path`
  std::vector<std::string> env;    ///< "NAME=value", added to the master's environment
  int quit_signal = SIGQUIT;       ///< drain: finish in-flight work, then exit
  int terminate_signal = SIGTERM;  ///< exit now
  int reopen_signal = SIGUSR1;     ///< reopen log files

  bool operator==(const program&) const = default;
};

}  // namespace procmodel
