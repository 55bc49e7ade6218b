#pragma once

/// @file on_failure.hpp
/// More to print when an assertion fails: while an on_failure lives, every
/// failed CHECK or REQUIRE also prints what it describes to stderr (the
/// Catch listener in support/failure_count.cpp calls it). For lifecycle
/// tests: the actions and the table behind a check that printed `false`.

#include <functional>
#include <string>

namespace pmtest {

class on_failure {
 public:
  explicit on_failure(std::function<std::string()> describe);
  on_failure(const on_failure&) = delete;
  on_failure& operator=(const on_failure&) = delete;
  ~on_failure();

 private:
  std::function<std::string()> describe_;
};

}  // namespace pmtest

#define PM_ON_FAILURE_CONCAT2(a, b) a##b
#define PM_ON_FAILURE_CONCAT(a, b) PM_ON_FAILURE_CONCAT2(a, b)
/// Prints `expr` (a string) on every failed assertion of the enclosing scope.
#define PM_SHOW_ON_FAILURE(expr) \
  ::pmtest::on_failure PM_ON_FAILURE_CONCAT(pm_on_failure_, __LINE__)([&] { return (expr); })
