// What `-s status` prints, text and JSON, from the rows a master gathers.

#include <procmodel/detail/status_report.hpp>

#include "support/catch.hpp"

#include <string>

using procmodel::detail::status_report;
using procmodel::detail::status_row;

namespace {

status_report two_masters_and_a_program() {
  status_report r;
  r.rows.push_back({100, "master", "-", "3", "serving", 12.34, "-"});
  r.rows.push_back({200, "new master", "-", "-", "starting", 0.5, "-"});
  r.rows.push_back({0, "worker", "1", "3", "backoff 2.0s", -1.0, "4", "1.0s ago, pid 300: killed by signal 9"});
  r.rows.push_back({301, "cache \"warm\"", "0", "-", "running", 2.0, "0", "", "warming\\x1b"});
  r.named = 100;
  r.notes = {"pid file /run/x.pid names 100"};
  return r;
}

}  // namespace

TEST_CASE("status text: a table, what each program said, then the notes", "[status]") {
  std::string t = two_masters_and_a_program().text();
  CHECK(t ==
        "     PID  ROLE        SLOT  GENERATION  STATE            UPTIME  RESTARTS\n"
        "     100  master         -           3  serving           12.3s         -\n"
        "     200  new master     -           -  starting           0.5s         -\n"
        "       -  worker         1           3  backoff 2.0s           -         4\n"
        "     301  cache \"warm\"     0           -  running            2.0s         0\n"
        "cache \"warm\" 301 says: warming\\x1b\n"
        "pid file /run/x.pid names 100\n");
}

TEST_CASE("status JSON: unknowns are null, text is escaped, masters say which the pid file names",
          "[status]") {
  std::string j = two_masters_and_a_program().json();
  CHECK(j ==
        "[{\"pid\":100,\"role\":\"master\",\"slot\":null,\"generation\":3,\"state\":\"serving\","
        "\"uptime\":12.340,\"restarts\":null,\"pid_file\":true},"
        "{\"pid\":200,\"role\":\"new master\",\"slot\":null,\"generation\":null,\"state\":\"starting\","
        "\"uptime\":0.500,\"restarts\":null,\"pid_file\":false},"
        "{\"pid\":null,\"role\":\"worker\",\"slot\":1,\"generation\":3,\"state\":\"backoff 2.0s\","
        "\"uptime\":null,\"restarts\":4,\"last_replacement\":\"1.0s ago, pid 300: killed by signal 9\"},"
        "{\"pid\":301,\"role\":\"cache \\\"warm\\\"\",\"slot\":0,\"generation\":null,\"state\":\"running\","
        "\"uptime\":2.000,\"restarts\":0,\"status\":\"warming\\\\x1b\"}]\n");
}

TEST_CASE("status JSON: control characters become \\u escapes", "[status]") {
  status_report r;
  r.rows.push_back({7, "worker", "0", "1", "ready", 1.0, "0", "", std::string("a\tb\x01", 4)});
  CHECK(r.json().find("\"status\":\"a\\u0009b\\u0001\"") != std::string::npos);
}
