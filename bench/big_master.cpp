// bench/big_master: http_server's worker (examples/http/worker.hpp) under a
// master that holds --touch-mb MB of touched memory before it forks its
// workers, for the cost of a spawn as the master's resident set grows. With
// --exec PROGRAM, each worker is PROGRAM run by exec_spawner instead (bench
// bare_http serves so), for the cost of starting a program. Every other flag
// is procmodel's command line, as http_server takes it.
//
//   bench_big_master --touch-mb 1024 --listen 127.0.0.1:0 --workers 2 ...
//   bench_big_master --touch-mb 1024 --exec build/release/bench/bench_bare_http ...

#include <procmodel/procmodel.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "worker.hpp"

namespace {

using exec_master = procmodel::supervisor_with<procmodel::exec_worker,
                                               procmodel::use_spawner<procmodel::exec_spawner>>;

int run_forked(const procmodel::options& opt) {
  http_example::http_worker worker;
  worker.greeting = "hello";
  procmodel::supervisor<http_example::http_worker> master(opt, worker);
  return master.run();
}

int run_exec(const procmodel::options& opt, const std::string& path) {
  procmodel::program prog;
  prog.path = path;
  exec_master master(opt, procmodel::exec_worker{prog});
  return master.run();
}

}  // namespace

int main(int argc, char** argv) {
  procmodel::options opt;
  std::size_t touch_mb = 0;
  std::string exec;
  procmodel::command_line cli(opt);
  cli.add("--touch-mb", "MB", "memory the master touches before it forks workers (bench only)",
          [&](std::string_view v) {
            touch_mb = static_cast<std::size_t>(procmodel::parse_number("touch-mb", v, 0, 65536));
          });
  cli.add("--exec", "PROGRAM", "run PROGRAM for each worker, as exec_spawner does (bench only)",
          [&](std::string_view v) { exec = v; });
  if (auto code = cli.parse(argc, argv))
    return *code;
  // Written, so resident (and copied into each worker's page tables on fork).
  std::vector<char> ballast(touch_mb << 20, 'x');
  return exec.empty() ? run_forked(opt) : run_exec(opt, exec);
}
