#pragma once

/// @file restart_policy.hpp
/// The clock procmodel measures time with, and the crash-loop protection
/// that options and the lifecycle share.

#include <chrono>

namespace procmodel {

using steady_clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// Restart intensity: up to `max_restarts` respawns of a slot within `period`
/// are immediate; past that every respawn waits, doubling from
/// `backoff_initial` to `backoff_max`, until a worker of the slot stays up for
/// `period`, which clears the slot's record.
struct restart_policy {
  unsigned max_restarts = 5;
  milliseconds period{10'000};
  milliseconds backoff_initial{100};
  milliseconds backoff_max{10'000};
};

}  // namespace procmodel
