#pragma once

// http_server's configuration file: one `key = value` per line, `#` starts a
// comment. Keys: greeting (text), workers (1..1024), listen (an address with
// nginx's listen parameters, as --listen takes it: one line per address,
// TCP only; read at start and by the new master of an upgrade, a reload
// keeps the sockets it has); for rehearsing failures,
// ready (yes/no: whether workers report ready), ready_delay (ms before they
// do), exit_at_start (a code every worker exits with before serving) and
// exit_from_slot (only workers of this slot and above exit so).

#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <procmodel/listen_spec.hpp>
#include <procmodel/options.hpp>

namespace http_example {

struct config {
  std::string greeting = "hello";
  std::optional<unsigned> workers;
  std::vector<std::string> listen;
  bool ready = true;
  unsigned ready_delay_ms = 0;
  std::optional<int> exit_at_start;
  unsigned exit_from_slot = 0;
};

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

/// Parses configuration text; throws std::runtime_error naming the line.
inline config parse_config(std::string_view text, std::string_view name = "config") {
  config c;
  int lineno = 0;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++lineno;
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    auto fail = [&](std::string_view why) {
      return std::runtime_error(std::string(name) + ":" + std::to_string(lineno) + ": " +
                                std::string(why));
    };
    auto eq = line.find('=');
    if (eq == std::string_view::npos) throw fail("expected 'key = value'");
    std::string_view key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    if (key == "greeting") {
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
        value = value.substr(1, value.size() - 2);
      if (value.empty()) throw fail("greeting must not be empty");
      for (char ch : value)
        if (static_cast<unsigned char>(ch) < 0x20) throw fail("greeting holds a control character");
      c.greeting = std::string(value);
    } else if (key == "workers") {
      try {
        c.workers = static_cast<unsigned>(procmodel::parse_number("workers", value, 1, 1024));
      } catch (const std::invalid_argument& e) {
        throw fail(e.what());
      }
    } else if (key == "listen") {
      try {
        if (procmodel::parse_listen(value).type != procmodel::listen_spec::kind::tcp)
          throw fail("http_server serves TCP addresses only");
      } catch (const std::invalid_argument& e) {
        throw fail(e.what());
      }
      c.listen.emplace_back(value);
    } else if (key == "ready") {
      if (value != "yes" && value != "no") throw fail("ready must be yes or no");
      c.ready = value == "yes";
    } else if (key == "ready_delay") {
      try {
        c.ready_delay_ms = static_cast<unsigned>(procmodel::parse_number("ready_delay", value, 0, 600'000));
      } catch (const std::invalid_argument& e) {
        throw fail(e.what());
      }
    } else if (key == "exit_at_start") {
      try {
        c.exit_at_start = static_cast<int>(procmodel::parse_number("exit_at_start", value, 0, 255));
      } catch (const std::invalid_argument& e) {
        throw fail(e.what());
      }
    } else if (key == "exit_from_slot") {
      try {
        c.exit_from_slot = static_cast<unsigned>(procmodel::parse_number("exit_from_slot", value, 0, 1023));
      } catch (const std::invalid_argument& e) {
        throw fail(e.what());
      }
    } else {
      throw fail("unknown key '" + std::string(key) +
                 "' (known: greeting, workers, listen, ready, ready_delay, exit_at_start, "
                 "exit_from_slot)");
    }
  }
  return c;
}

/// Reads and parses a configuration file; throws std::runtime_error.
inline config load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace http_example
