// systemd_listen_fds: LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from the
// input (NUL-separated; a missing field leaves the variable unset). Another
// process's sockets are never taken; garbage in LISTEN_PID or LISTEN_FDS is a
// std::runtime_error; what is taken is 3..3+N-1.

#include <procmodel/listeners.hpp>

#include <charconv>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <unistd.h>

#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using procmodel_fuzz::require;
  std::string_view text = procmodel_fuzz::as_text(data, size);
  const char* names[] = {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"};
  std::string values[3];
  bool set[3] = {};
  int i = 0;
  procmodel_fuzz::for_each_field(text, [&](std::string_view field) {
    if (i >= 3) return;
    // "$" stands for this process's pid, so that the owned case is reached.
    values[i] = field == "$" ? std::to_string(::getpid()) : std::string(field);
    set[i] = true;
    ++i;
  });
  for (int k = 0; k < 3; ++k) {
    if (set[k]) ::setenv(names[k], values[k].c_str(), 1);
    else ::unsetenv(names[k]);
  }
  std::optional<std::vector<int>> fds;
  bool threw = false;
  try {
    fds = procmodel::systemd_listen_fds(::getpid());
  } catch (const std::runtime_error&) {
    threw = true;
  }
  long long pid = 0;
  auto [end, ec] = std::from_chars(values[0].data(), values[0].data() + values[0].size(), pid);
  bool ours = set[0] && ec == std::errc{} && end == values[0].data() + values[0].size() &&
              pid == ::getpid();
  if (!set[1]) require(!threw && !fds, "no LISTEN_FDS: nothing taken");
  if (fds) {
    require(ours, "taken only when LISTEN_PID is ours");
    require(!fds->empty() && fds->size() <= 4096, "1..4096 descriptors");
    for (std::size_t k = 0; k < fds->size(); ++k)
      require((*fds)[k] == static_cast<int>(3 + k), "descriptors from 3 on, in order");
  }
  if (set[1] && !ours && !threw) require(!fds, "another process's sockets are never taken");
  return 0;
}
