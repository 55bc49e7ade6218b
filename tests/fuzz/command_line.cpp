// command_line::parse over argv made of the input's NUL-separated fields:
// it returns nullopt (run), 0 (--help) or 2 (usage error, said on stderr),
// never throws, and what it accepts is in range.

#include <procmodel/options.hpp>

#include <string>
#include <vector>

#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using procmodel_fuzz::require;
  std::vector<std::string> args{"fuzzed"};
  procmodel_fuzz::for_each_field(procmodel_fuzz::as_text(data, size),
                                 [&](std::string_view f) { args.emplace_back(f); });
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  procmodel::options opt;
  procmodel::command_line cli(opt);
  std::optional<int> code;
  try {
    code = cli.parse(static_cast<int>(args.size()), argv.data());
  } catch (...) {
    require(false, "parse never throws");
  }
  require(!code || *code == 0 || *code == 2, "exit codes are 0 or 2");
  if (!code) {
    require(opt.workers >= 1 && opt.workers <= 1024, "workers in range");
    require(opt.shutdown_timeout.count() >= 0 && opt.shutdown_timeout.count() <= 86'400'000,
            "shutdown timeout in range");
    require(opt.ready_timeout.count() >= 1, "ready timeout positive");
    require(!opt.signal || opt.query.empty(), "-s names one command");
  }
  return 0;
}
