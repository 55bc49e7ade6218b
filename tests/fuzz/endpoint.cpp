// parse_endpoint: a listen address either parses into HOST and PORT that
// format back to an address that parses the same, or is refused with
// std::invalid_argument naming it. Nothing else escapes.

#include <procmodel/listeners.hpp>

#include <stdexcept>
#include <string>

#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using procmodel_fuzz::require;
  std::string_view text = procmodel_fuzz::as_text(data, size);
  procmodel::endpoint_spec spec;
  try {
    spec = procmodel::parse_endpoint(text);
  } catch (const std::invalid_argument& e) {
    // what() is a C string: it holds the address up to a NUL (argv cannot hold one).
    require(std::string_view(e.what()).find(text.substr(0, text.find('\0'))) != std::string_view::npos,
            "the error names the address");
    return 0;
  }
  // Accepted: the port came from the text and HOST holds no ':' unless bracketed.
  require(text.find(std::to_string(spec.port)) != std::string_view::npos, "port is in the text");
  bool bracketed = text.starts_with('[');
  require(bracketed || spec.host.find(':') == std::string::npos, "unbracketed host has no ':'");
  std::string again = bracketed ? "[" + spec.host + "]:" + std::to_string(spec.port)
                                : (spec.host.empty() ? "" : spec.host) + ":" + std::to_string(spec.port);
  procmodel::endpoint_spec back;
  try {
    back = procmodel::parse_endpoint(again);
  } catch (const std::invalid_argument&) {
    require(false, "a formatted endpoint parses again");
  }
  require(back.host == spec.host && back.port == spec.port, "round trip keeps HOST and PORT");
  return 0;
}
