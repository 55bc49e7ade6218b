#pragma once

// Shared by procmodel's libFuzzer targets: a property check that libFuzzer
// reports as a crash, with the input that broke it saved beside the run.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace procmodel_fuzz {

/// Aborts (libFuzzer saves the input) when a property of the parser fails.
inline void require(bool ok, const char* property) {
  if (ok) return;
  std::fprintf(stderr, "property violated: %s\n", property);
  std::abort();
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Splits the input at NUL bytes: argv-like fields for targets that take several strings.
template <class F>
void for_each_field(std::string_view text, F&& f) {
  for (;;) {
    auto nul = text.find('\0');
    f(text.substr(0, nul));
    if (nul == std::string_view::npos) return;
    text.remove_prefix(nul + 1);
  }
}

}  // namespace procmodel_fuzz
