// examples/http's configuration parser: text either parses into a greeting
// without control characters and a worker count in 1..1024, or is refused
// with std::runtime_error naming the line.

#include "../../examples/http/config.hpp"

#include <stdexcept>

#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using procmodel_fuzz::require;
  http_example::config c;
  try {
    c = http_example::parse_config(procmodel_fuzz::as_text(data, size), "fuzzed.conf");
  } catch (const std::runtime_error& e) {
    require(std::string_view(e.what()).starts_with("fuzzed.conf:"), "the error names file and line");
    return 0;
  }
  require(!c.greeting.empty(), "greeting not empty");
  for (char ch : c.greeting) require(static_cast<unsigned char>(ch) >= 0x20, "no control character");
  require(!c.workers || (*c.workers >= 1 && *c.workers <= 1024), "workers in 1..1024");
  return 0;
}
