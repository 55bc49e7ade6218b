// bench/big_master: http_server's worker (examples/http/worker.hpp) under a
// master that holds --touch-mb MB of touched memory before it forks its
// workers, for the cost of a spawn as the master's resident set grows. Every
// other flag is procmodel's command line, as http_server takes it.
//
//   bench_big_master --touch-mb 1024 --listen 127.0.0.1:0 --workers 2 ...

#include <procmodel/procmodel.hpp>

#include <cstddef>
#include <string_view>
#include <vector>

#include "worker.hpp"

int main(int argc, char** argv) {
  procmodel::options opt;
  std::size_t touch_mb = 0;
  procmodel::command_line cli(opt);
  cli.add("--touch-mb", "MB", "memory the master touches before it forks workers (bench only)",
          [&](std::string_view v) {
            touch_mb = static_cast<std::size_t>(procmodel::parse_number("touch-mb", v, 0, 65536));
          });
  if (auto code = cli.parse(argc, argv))
    return *code;
  // Written, so resident (and copied into each worker's page tables on fork).
  std::vector<char> ballast(touch_mb << 20, 'x');
  http_example::http_worker worker;
  worker.greeting = "hello";
  procmodel::supervisor<http_example::http_worker> master(opt, worker);
  return master.run();
}
