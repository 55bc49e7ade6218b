// http_server: procmodel's demo. An HTTP/1.1 keep-alive server (Boost.Beast)
// whose answer names the worker that served it:
//
//   hello from worker 0 generation 1 pid 4242
//
// On a graceful stop each worker accepts what the kernel already queued, stops
// accepting, answers the next request on every kept-alive connection with
// `Connection: close`, and closes connections that stay idle at the deadline:
// no client sees a reset.
//
// Each request counts as served (for --max-requests). With --debug-paths,
// for rehearsing the watchdog and recycling: GET /debug/block answers, then
// blocks the worker's loop for good (?ignore-abort: and ignores SIGABRT);
// GET /debug/grow?mb=N keeps N MB more.

#include <procmodel/procmodel.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>

#include "config.hpp"
#include "worker.hpp"

using http_example::http_worker;

int main(int argc, char** argv) {
  procmodel::options opt;
  opt.listen = {"127.0.0.1:8080"};
  std::string config_path;
  procmodel::command_line cli(opt);
  cli.add("--config", "PATH", "configuration file (greeting = ..., workers = N)",
          [&](std::string_view v) { config_path = v; });
  bool debug_paths = false;
  cli.add_flag("--debug-paths",
               "for tests: GET /debug/block blocks a worker's loop, /debug/grow?mb=N grows it",
               [&] { debug_paths = true; });
  if (auto code = cli.parse(argc, argv)) return *code;

  // The file's listen addresses serve unless the command line names some.
  const bool listen_given = std::any_of(argv + 1, argv + argc, [](const char* a) {
    return std::string_view(a).starts_with("--listen");
  });
  http_example::config conf;
  if (!config_path.empty() && !opt.signal) {
    try {
      conf = http_example::load_config(config_path);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", opt.program_name.c_str(), e.what());
      return 1;
    }
    if (conf.workers) opt.workers = *conf.workers;
    if (!conf.listen.empty() && !listen_given) opt.listen = conf.listen;
  }
  procmodel::supervisor<http_worker> master(
      opt, http_worker{conf.greeting, conf.ready, conf.ready_delay_ms, conf.exit_at_start,
                       debug_paths, conf.exit_from_slot});
  // HUP re-reads the file; a file that does not parse refuses the reload and
  // the serving generation goes on untouched.
  if (!config_path.empty())
    master.on_reload([config_path, listen_given](http_worker& next, procmodel::options& next_opt) {
      auto c = http_example::load_config(config_path);
      next.greeting = c.greeting;
      next.report_ready = c.ready;
      next.ready_delay_ms = c.ready_delay_ms;
      next.exit_at_start = c.exit_at_start;
      next.exit_from_slot = c.exit_from_slot;
      if (c.workers) next_opt.workers = *c.workers;
      // A change is the master's to refuse: it keeps its sockets, and says so.
      if (!c.listen.empty() && !listen_given) next_opt.listen = c.listen;
    });
  return master.run();
}
