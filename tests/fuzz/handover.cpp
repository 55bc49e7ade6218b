// parse_handover (PROCMODEL_LISTENERS, "INDEX:FD,..."): garbage from the
// environment is refused with std::runtime_error; what is accepted names
// descriptors from 3 on, each once, with indexes in range.

#include <procmodel/listeners.hpp>

#include <set>
#include <stdexcept>

#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using procmodel_fuzz::require;
  std::string_view text = procmodel_fuzz::as_text(data, size);
  std::vector<procmodel::inherited_fd> fds;
  try {
    fds = procmodel::parse_handover(text);
  } catch (const std::runtime_error& e) {
    require(std::string_view(e.what()).starts_with(procmodel::handover_env),
            "the error names the variable");
    return 0;
  }
  require(!fds.empty(), "an accepted handover names a descriptor");
  std::set<int> seen;
  for (const auto& f : fds) {
    require(f.fd >= 3, "never stdio");
    require(f.index <= 1023, "index in range");
    require(seen.insert(f.fd).second, "each descriptor once");
  }
  auto items = static_cast<std::size_t>(std::count(text.begin(), text.end(), ',')) + 1;
  require(items == fds.size(), "one entry per comma-separated item");
  return 0;
}
