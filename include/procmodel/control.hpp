#pragma once

/// @file control.hpp
/// `prog -s COMMAND`: tells the running master what to do, through the pid file.

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "options.hpp"
#include "pid_file.hpp"
#include "signals.hpp"

namespace procmodel {

/// Sends `c` to the master named by `opt.pid_file`. Returns the exit code
/// for the program: 0 when the signal was delivered, 1 otherwise (with a
/// message on stderr that says why).
template <class Signals = nginx_signals>
int send_command(const options& opt, command c) {
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "%s: -s %s: %s\n", opt.program_name.c_str(), std::string(to_string(c)).c_str(),
                 why.c_str());
    return 1;
  };
  if (opt.pid_file.empty()) return fail("needs --pid-file PATH to find the master");
  int signo = Signals::signal_for(c);
  if (signo == 0) return fail("no signal carries this command");
  pid_t pid = 0;
  try {
    pid = pid_file::read(opt.pid_file);
  } catch (const std::runtime_error& e) {
    return fail(e.what());
  }
  // A pid file left behind by a crash may name a pid reused by anything.
  if (::kill(pid, 0) == 0 && !pid_file::same_executable(pid).value_or(true))
    return fail(fmt::format("pid file {} names process {}, which runs {}, not this program "
                            "(stale pid file?)",
                            opt.pid_file, pid, pid_file::executable(pid)));
  if (::kill(pid, signo) != 0) {
    if (errno == ESRCH)
      return fail(fmt::format("no process {} is running (stale pid file {})", pid, opt.pid_file));
    return fail(fmt::format("cannot signal process {}: {}", pid, std::strerror(errno)));
  }
  return 0;
}

}  // namespace procmodel
