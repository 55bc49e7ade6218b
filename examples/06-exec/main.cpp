// exec_master: procmodel supervising workers written in another language.
// Each worker is worker.py (Python, standard library only), started with the
// listening sockets passed as systemd passes them and a notify socket of its
// own; reloads, drains, respawns and upgrades work as for forked workers.
//
//   exec_master --listen 127.0.0.1:8080 --workers 2 --pid-file /tmp/exec.pid
//   exec_master --message-file /tmp/message   # HUP re-reads it

#include <procmodel/exec_spawner.hpp>
#include <procmodel/supervisor.hpp>

#include <fstream>
#include <string>

#ifndef PROCMODEL_PYTHON3
#define PROCMODEL_PYTHON3 "python3"
#endif
#ifndef PROCMODEL_EXEC_WORKER
#define PROCMODEL_EXEC_WORKER "worker.py"
#endif

namespace {

using exec_master =
    procmodel::supervisor_with<procmodel::exec_worker, procmodel::use_spawner<procmodel::exec_spawner>>;

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  procmodel::options opt;
  opt.listen = {"127.0.0.1:8080"};
  std::string python = PROCMODEL_PYTHON3, script = PROCMODEL_EXEC_WORKER, message_file, access_log;
  procmodel::command_line cli(opt);
  cli.add("--python", "PATH", "the Python interpreter", [&](std::string_view v) { python = v; });
  cli.add("--worker", "PATH", "the worker program", [&](std::string_view v) { script = v; });
  cli.add("--message-file", "PATH", "the first line is the greeting; HUP re-reads it",
          [&](std::string_view v) { message_file = v; });
  cli.add("--access-log", "PATH", "each worker's access log (USR1 reopens it)",
          [&](std::string_view v) { access_log = v; });
  if (auto code = cli.parse(argc, argv)) return *code;

  // What a generation runs: a reload may change the greeting.
  auto make = [=](const std::string& message) {
    procmodel::program p;
    p.path = python;
    p.args = {script, "--message", message};
    if (!access_log.empty()) p.args.insert(p.args.end(), {"--log", access_log});
    return procmodel::exec_worker{p};
  };
  std::string message = "hello from python";
  if (!message_file.empty() && !opt.signal && opt.query.empty()) {
    try {
      message = first_line(message_file);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", opt.program_name.c_str(), e.what());
      return 1;
    }
  }
  exec_master master(opt, make(message));
  if (!message_file.empty())
    master.on_reload([=](procmodel::exec_worker& next, procmodel::options&) {
      next = make(first_line(message_file));
    });
  return master.run();
}
