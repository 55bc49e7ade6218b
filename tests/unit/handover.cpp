// PROCMODEL_LISTENERS, as a new master reads it from its predecessor:
// "INDEX:FD,..." and nothing looser.

#include <procmodel/listeners.hpp>

#include <stdexcept>
#include <string>

#include "support/catch.hpp"

using procmodel::parse_handover;

TEST_CASE("a handover names each descriptor with its address index", "[handover]") {
  auto fds = parse_handover("0:3,0:4,1:7");
  REQUIRE(fds.size() == 3);
  CHECK(fds[0].index == 0);
  CHECK(fds[0].fd == 3);
  CHECK(fds[1].fd == 4);
  CHECK(fds[2].index == 1);
  CHECK(fds[2].fd == 7);
}

TEST_CASE("a handover with garbage is refused, naming the variable and the problem", "[handover]") {
  struct bad {
    const char* text;
    const char* says;
  };
  const bad cases[] = {
      {"", "empty"},
      {"0:3,", "an item is empty"},  // found by tests/fuzz/handover
      {",0:3", "an item is empty"},
      {"0:3,,0:4", "an item is empty"},
      {"0:3,0:3", "named twice"},
      {"0:2", "descriptor"},
      {"0:1048577", "descriptor"},
      {"1024:5", "index"},
      {"-1:5", "index"},
      {"0-5", "is not INDEX:FD"},
      {"0:5x", "descriptor"},
      {"0: 5", "descriptor"},
  };
  for (const auto& c : cases) {
    INFO("PROCMODEL_LISTENERS='" << c.text << "'");
    try {
      parse_handover(c.text);
      FAIL("accepted");
    } catch (const std::runtime_error& e) {
      std::string what = e.what();
      CHECK(what.starts_with("PROCMODEL_LISTENERS='" + std::string(c.text) + "'"));  // the whole value
      CHECK(what.find(c.says) != std::string::npos);
    }
  }
}
