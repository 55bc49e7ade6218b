// Counts failed assertions for the teardown audit (support/teardown.hpp),
// which prints the logs of a test that failed.

#ifndef PROCMODEL_CATCH2_V3
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#endif
#include "support/catch.hpp"

#include <atomic>

namespace pmtest {

namespace {
std::atomic<int> failed{0};

#ifdef PROCMODEL_CATCH2_V3
class failure_counter : public Catch::EventListenerBase {
 public:
  using Catch::EventListenerBase::EventListenerBase;
  void assertionEnded(const Catch::AssertionStats& stats) override {
    if (!stats.assertionResult.isOk()) ++failed;
  }
};
#else
class failure_counter : public Catch::TestEventListenerBase {
 public:
  using Catch::TestEventListenerBase::TestEventListenerBase;
  bool assertionEnded(const Catch::AssertionStats& stats) override {
    if (!stats.assertionResult.isOk()) ++failed;
    return true;
  }
};
#endif
}  // namespace

int failed_assertions() noexcept { return failed.load(); }

CATCH_REGISTER_LISTENER(failure_counter)

}  // namespace pmtest
