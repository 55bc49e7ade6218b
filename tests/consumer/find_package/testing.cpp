// The test doubles procmodel installs (procmodel/testing/), used the way an
// embedder's unit test would: each header compiles from the install, and the
// driver runs a start, a quit and the workers' exits without a fork.
#include <procmodel/testing/fake_loop.hpp>
#include <procmodel/testing/fake_spawner.hpp>
#include <procmodel/testing/lifecycle_driver.hpp>
#include <procmodel/testing/wait_status.hpp>

#include <cstdio>

int main() {
  using namespace procmodel;
  using namespace procmodel::testing;
  lifecycle_config config;
  config.workers = 2;
  lifecycle_driver d(config);
  d.start();
  d.ready_generation(1);
  d.command(command::quit);
  for (pid_t pid : d.pids()) d.exit(pid, exited_with(0));
  if (d.exit_code() != 0 || !d.processes().empty()) {
    std::fputs(d.describe().c_str(), stderr);
    return 1;
  }
  std::puts("testing doubles: ok");
  return 0;
}
