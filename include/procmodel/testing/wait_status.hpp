#pragma once

/// @file testing/wait_status.hpp
/// Wait statuses, as waitpid(2) reports them, for feeding `events::exited`
/// and fake_spawner exits.

#include <sys/wait.h>

namespace procmodel::testing {

/// The wait status of a child that called exit(code).
constexpr int exited_with(int code) noexcept { return (code & 0xff) << 8; }

/// The wait status of a child killed by `signo` (with a core dump if `core`).
constexpr int killed_by(int signo, bool core = false) noexcept {
  return (signo & 0x7f) | (core ? 0x80 : 0);
}

}  // namespace procmodel::testing
