#pragma once

/// @file status_report.hpp
/// What `-s status` prints: the master's rows gathered by the supervisor,
/// written here as the operator's table or as JSON. Nothing in it depends on
/// the Worker, so every supervisor shares one copy.

#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include "format.hpp"

namespace procmodel::detail {

/// One process, or one empty slot, as `-s status` shows it. "-" in a text
/// field and a negative uptime mean "not known here" (null in JSON).
struct status_row {
  pid_t pid;
  std::string role, slot, generation, state;
  double uptime;  ///< seconds
  std::string restarts;
  std::string replaced{};  ///< why the slot's worker was last replaced
  std::string said{};      ///< what a program last said (sd_notify's STATUS=)
};

/// A program's own words in a JSON string: quotes, backslashes and control
/// characters escaped.
inline std::string json_escaped(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += {'\\', c};
    else if (static_cast<unsigned char>(c) < 0x20) out += detail::format("\\u{:04x}", static_cast<int>(c));
    else out += c;
  }
  return out;
}

struct status_report {
  std::vector<status_row> rows;
  pid_t named = 0;                 ///< the master the pid file names; 0: none
  std::vector<std::string> notes;  ///< lines the text form adds under the table

  /// One JSON array, one object per row.
  [[nodiscard]] std::string json() const {
    std::string out = "[";
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (i) out += ',';
      out += json_object(rows[i]);
    }
    return out + "]\n";
  }

  /// The table, what each program said, then the notes.
  [[nodiscard]] std::string text() const {
    std::string out = table_line("PID", "ROLE", "SLOT", "GENERATION", "STATE", "UPTIME", "RESTARTS");
    for (const auto& r : rows)
      out += table_line(r.pid ? std::to_string(r.pid) : "-", r.role, r.slot, r.generation, r.state,
                        r.uptime < 0 ? std::string("-") : detail::format("{:.1f}s", r.uptime),
                        r.restarts);
    for (const auto& r : rows)
      if (!r.said.empty()) out += detail::format("{} {} says: {}\n", r.role, r.pid, r.said);
    for (const auto& n : notes) out += n + '\n';
    return out;
  }

 private:
  static std::string table_line(std::string_view pid, std::string_view role, std::string_view slot,
                                std::string_view generation, std::string_view state,
                                std::string_view uptime, std::string_view restarts) {
    return detail::format("{:>8}  {:<10}  {:>4}  {:>10}  {:<11}  {:>10}  {:>8}\n", pid, role, slot,
                          generation, state, uptime, restarts);
  }

  [[nodiscard]] std::string json_object(const status_row& r) const {
    auto or_null = [](const std::string& v) { return v == "-" ? std::string("null") : v; };
    std::string out = detail::format(
        "{{\"pid\":{},\"role\":\"{}\",\"slot\":{},\"generation\":{},\"state\":\"{}\","
        "\"uptime\":{},\"restarts\":{}",
        r.pid ? std::to_string(r.pid) : "null", json_escaped(r.role), or_null(r.slot),
        or_null(r.generation), json_escaped(r.state),
        r.uptime < 0 ? std::string("null") : detail::format("{:.3f}", r.uptime), or_null(r.restarts));
    if (r.role.ends_with("master"))
      out += detail::format(",\"pid_file\":{}", r.pid == named ? "true" : "false");
    if (!r.replaced.empty())
      out += detail::format(",\"last_replacement\":\"{}\"", json_escaped(r.replaced));
    if (!r.said.empty()) out += detail::format(",\"status\":\"{}\"", json_escaped(r.said));
    return out + '}';
  }
};

}  // namespace procmodel::detail
