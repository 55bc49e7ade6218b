#pragma once

// procmodel's own format strings: checked at compile time in procmodel's own
// builds (PROCMODEL_CHECK_FORMAT_STRINGS, which its CMake targets define),
// and not again in every program that includes the headers, where checking a
// few hundred strings is a noticeable part of the compile.

#include <string>
#include <utility>

#include <fmt/core.h>

namespace procmodel::detail {

#if defined(PROCMODEL_CHECK_FORMAT_STRINGS)
template <class... Args>
using format_string = fmt::format_string<Args...>;
#else
template <class... Args>
using format_string = fmt::string_view;
#endif

// fmt::format for procmodel's own format strings.
template <class... Args>
std::string format(format_string<Args...> f, Args&&... args) {
  return fmt::vformat(f, fmt::make_format_args(args...));
}

}  // namespace procmodel::detail
