// Counts failed assertions for the teardown audit (support/teardown.hpp),
// which prints the logs of a test that failed.

#ifndef PROCMODEL_CATCH2_V3
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#endif
#include "support/catch.hpp"

#include <atomic>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "support/on_failure.hpp"

namespace pmtest {

namespace {
std::atomic<int> failed{0};

std::vector<const std::function<std::string()>*>& describers() {
  static std::vector<const std::function<std::string()>*> all;
  return all;
}

void count_failure() {
  ++failed;
  for (const auto* d : describers()) {
    std::string text = (*d)();
    std::fprintf(stderr, "----- at the failure above -----\n%s", text.c_str());
  }
  std::fflush(stderr);
}

#ifdef PROCMODEL_CATCH2_V3
class failure_counter : public Catch::EventListenerBase {
 public:
  using Catch::EventListenerBase::EventListenerBase;
  void assertionEnded(const Catch::AssertionStats& stats) override {
    if (!stats.assertionResult.isOk()) count_failure();
  }
};
#else
class failure_counter : public Catch::TestEventListenerBase {
 public:
  using Catch::TestEventListenerBase::TestEventListenerBase;
  bool assertionEnded(const Catch::AssertionStats& stats) override {
    if (!stats.assertionResult.isOk()) count_failure();
    return true;
  }
};
#endif
}  // namespace

int failed_assertions() noexcept { return failed.load(); }

on_failure::on_failure(std::function<std::string()> describe) : describe_(std::move(describe)) {
  describers().push_back(&describe_);
}
on_failure::~on_failure() { std::erase(describers(), &describe_); }

CATCH_REGISTER_LISTENER(failure_counter)

}  // namespace pmtest
