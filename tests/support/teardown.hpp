#pragma once

/// @file teardown.hpp
/// The invariants every integration test ends with, as nginx-tests and
/// VTest end theirs. PM_TEST_CASE is TEST_CASE plus, once its body is done
/// (every server and client of the test destroyed, each master still
/// running stopped with SIGQUIT by its guard):
///   - each process the test started ended as it expects (exit code 0
///     unless the test said otherwise: process::expect_exit/expect_signal/
///     expect_any_exit/expect_killed), and left no descendant running;
///   - each worker ended well: the master's "worker N (slot k, generation g)
///     exited with code 0" — any other code or "killed by signal" is a
///     violation;
///   - no sanitizer report, no uncaught exception and no `[error]`/`[alert]`
///     line in any log or stderr of those processes;
///   - no descriptor and no child of the test process left behind.
/// A test opts out of a line only by naming it: expect_log_line("text")
/// makes every line containing "text" expected.
///
/// On any failure of the test (a CHECK, a REQUIRE, a violation) the logs are
/// printed to stderr. With PROCMODEL_KEEP_LOGS=1 the temporary directories
/// (logs, pid files, configs) stay, and their paths are printed.

#include <cstdio>
#include <exception>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "support/catch.hpp"
#include "support/process.hpp"

namespace pmtest {

/// Failed assertions so far in this executable (support/failure_count.cpp
/// counts them with a Catch listener).
int failed_assertions() noexcept;

/// One PM_TEST_CASE's audit: opens the registry, and at the end checks it.
class audit_scope {
 public:
  audit_scope() : failed_at_start_(failed_assertions()) {
    current_audit() = &registry_;
    for (const auto& f : open_fds(::getpid())) fds_at_start_.insert(f.fd);
    for (pid_t c : children_of(::getpid())) children_at_start_.insert(c);
  }
  audit_scope(const audit_scope&) = delete;
  audit_scope& operator=(const audit_scope&) = delete;

  /// The checks; each violation is a failed check that names it.
  void finish() {
    finished_ = true;
    std::vector<std::string> violations;
    for (const auto& p : registry_.processes) check_process(*p, violations);
    for (const auto& path : log_files()) scan_log(path, violations);
    for (const auto& f : open_fds(::getpid()))
      if (!fds_at_start_.count(f.fd))
        violations.push_back("the test process left descriptor " + std::to_string(f.fd) +
                             " -> " + f.target + " open");
    for (pid_t c : children_of(::getpid()))
      if (!children_at_start_.count(c))
        violations.push_back("the test process left child " + std::to_string(c) + " (state " +
                             std::string(1, process_state(c)) + ")");
    if (violations.empty()) return;
    std::string all;
    for (const auto& v : violations) all += "\n  " + v;
    FAIL_CHECK("teardown invariants violated (name an expected line with expect_log_line):" << all);
  }

  ~audit_scope() {
    const bool failed =
        !finished_ || std::uncaught_exceptions() > 0 || failed_assertions() > failed_at_start_;
    if (failed) print_logs();
    current_audit() = nullptr;
    if (keep_logs()) {
      for (const auto& d : registry_.dirs)
        std::fprintf(stderr, "procmodel: logs kept in %s (PROCMODEL_KEEP_LOGS=1)\n", d.c_str());
    } else {
      for (const auto& d : registry_.dirs) temp_dir::remove_tree(d);
    }
  }

 private:
  [[nodiscard]] std::vector<std::string> log_files() const {
    std::vector<std::string> out;
    auto add = [&](const std::string& path) {
      if (std::find(out.begin(), out.end(), path) == out.end()) out.push_back(path);
    };
    for (const auto& p : registry_.processes)
      for (const auto& l : p->logs) add(l);
    for (const auto& l : registry_.logs) add(l);
    return out;
  }

  [[nodiscard]] bool expected(const std::string& line) const {
    for (const auto& e : registry_.expected_lines)
      if (line.find(e) != std::string::npos) return true;
    for (const auto& re : registry_.expected_patterns)
      if (std::regex_search(line, re)) return true;
    return false;
  }

  static void check_process(const audited_process& p, std::vector<std::string>& violations) {
    const std::string who = p.program + " " + std::to_string(p.pid);
    for (pid_t d : p.left_behind)
      violations.push_back(who + " exited but left process " + std::to_string(d) + " running");
    const auto& e = p.expected;
    if (e.what == expected_end::kind::killed) return;
    if (p.killed_at_teardown || !p.status) {
      violations.push_back(who + " was still running at the end of the test (SIGKILLed)");
      return;
    }
    const int st = *p.status;
    switch (e.what) {
      case expected_end::kind::code:
        if (!WIFEXITED(st) || WEXITSTATUS(st) != e.value)
          violations.push_back(who + " " + describe_status(st) + "; expected exit code " +
                               std::to_string(e.value));
        break;
      case expected_end::kind::signal:
        if (!WIFSIGNALED(st) || WTERMSIG(st) != e.value)
          violations.push_back(who + " " + describe_status(st) + "; expected signal " +
                               std::to_string(e.value));
        break;
      case expected_end::kind::any_code:
        if (!WIFEXITED(st))
          violations.push_back(who + " " + describe_status(st) + "; expected an exit");
        break;
      case expected_end::kind::killed: break;
    }
  }

  void scan_log(const std::string& path, std::vector<std::string>& violations) const {
    static const std::regex worker_end(
        R"(worker (\d+) \(slot \d+, generation \d+\) (exited with code (\d+)|killed by signal))");
    static const char* const alarms[] = {
        "ERROR: AddressSanitizer", "runtime error:",     "ThreadSanitizer",
        "LeakSanitizer",           "terminate called",   "[error]",
        "[alert]"};
    std::istringstream in(read_file(path));
    int n = 0;
    for (std::string line; std::getline(in, line);) {
      ++n;
      if (expected(line)) continue;
      std::smatch m;
      bool bad = std::regex_search(line, m, worker_end) && !(m[3].matched && m[3] == "0");
      for (const char* a : alarms) bad = bad || line.find(a) != std::string::npos;
      if (bad) violations.push_back(path + ":" + std::to_string(n) + ": " + line);
    }
  }

  void print_logs() const {
    for (const auto& path : log_files()) {
      std::string text = read_file(path);
      // The end is what explains a failure; a load test's debug log is long.
      constexpr std::size_t keep = 64 * 1024;
      std::string cut = text.size() > keep ? "[... " + std::to_string(text.size() - keep) +
                                                 " bytes ...]\n" + text.substr(text.size() - keep)
                                           : text;
      std::fprintf(stderr, "----- %s -----\n%s", path.c_str(), cut.c_str());
    }
    std::fflush(stderr);
  }

  audit_registry registry_;
  int failed_at_start_ = 0;
  bool finished_ = false;
  std::set<int> fds_at_start_;
  std::set<pid_t> children_at_start_;
};

}  // namespace pmtest

#define PM_TEST_CONCAT2(a, b) a##b
#define PM_TEST_CONCAT(a, b) PM_TEST_CONCAT2(a, b)
#define PM_TEST_CASE_WITH(body, ...)      \
  static void body();                     \
  TEST_CASE(__VA_ARGS__) {                \
    ::pmtest::audit_scope pm_audit_scope; \
    body();                               \
    pm_audit_scope.finish();              \
  }                                       \
  static void body()

/// TEST_CASE that ends through the teardown invariants above.
#define PM_TEST_CASE(...) PM_TEST_CASE_WITH(PM_TEST_CONCAT(pm_test_body_, __LINE__), __VA_ARGS__)
