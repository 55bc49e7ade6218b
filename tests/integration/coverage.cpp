// A program built with --coverage records what its forked workers ran. The
// runtime writes the counters from exit(), and a worker leaves with _exit()
// (it must not run the master's exit handlers), so procmodel writes them
// itself first (detail::write_profile_counters). Checked with the real
// echo_server built with --coverage and gcov reading what it wrote: the line
// that echoes runs only in a worker.

#include "support/catch.hpp"
#include "support/process.hpp"
#include "support/server.hpp"
#include "support/teardown.hpp"

#include <csignal>
#include <filesystem>
#include <sstream>
#include <string>

using namespace pmtest;

#ifdef PROCMODEL_COVERAGE_ECHO_SERVER

namespace {

// gcov's count for the first line of `source` in its annotated `listing`
// that holds `text`: -1 if the line is not executable or not found, 0 if it
// never ran ("#####").
long count_of_line(const std::string& listing, std::string_view source, std::string_view text) {
  std::istringstream in(listing);
  std::string line;
  bool in_source = false;
  while (std::getline(in, line)) {
    // Each file starts with "        -:    0:Source:<path>".
    if (line.find(":    0:Source:") != std::string::npos) {
      in_source = line.ends_with(source);
      continue;
    }
    if (!in_source || line.find(text) == std::string::npos) continue;
    std::string count = line.substr(0, line.find(':'));
    count.erase(0, count.find_first_not_of(' '));
    if (count == "-") return -1;
    if (count.starts_with("#####") || count.starts_with("=====")) return 0;
    return std::stol(count);  // "12*": some of the line's blocks did not run
  }
  return -1;
}

}  // namespace

PM_TEST_CASE(
    "coverage: a program built with --coverage records what its forked workers ran, "
    "although each leaves with _exit()",
    "[coverage]") {
  temp_dir counters("procmodel-gcov");
  server srv(PROCMODEL_COVERAGE_ECHO_SERVER, "procmodel-coverage");
  server_config c;
  c.workers = 2;
  // The counters go to <prefix>/<the object's directory>/main.cpp.gcda, so
  // every run of the test starts from none.
  c.env = {{"GCOV_PREFIX", counters.path()}};
  PM_REQUIRE(srv, srv.start(c));
  for (int i = 0; i < 3; ++i) {
    auto client = tcp_client::connect(srv.port());
    REQUIRE(client);
    PM_REQUIRE(srv, client->echo("counted\n"));
  }
  REQUIRE(srv.master().signal(SIGQUIT));
  auto status = srv.master().wait_exit(10s);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  PM_CHECK(srv, count_of(srv.log(), "exited with code 0") == 2);

  // gcov wants the notes file (.gcno, from the compiler) beside the counters.
  const std::string object = PROCMODEL_COVERAGE_ECHO_OBJECT;
  const std::string stem = object.substr(0, object.size() - 2);  // main.cpp.o -> main.cpp
  const std::string dir = counters.path() + object.substr(0, object.rfind('/'));
  const std::string gcda = counters.path() + stem + ".gcda";
  INFO("counters: " << gcda);
  REQUIRE(file_exists(gcda));
  REQUIRE(file_exists(stem + ".gcno"));
  std::filesystem::copy_file(stem + ".gcno", counters.path() + stem + ".gcno");
  spawn_options opt;
  opt.cwd = dir;
  opt.stdout_path = counters.file("gcov.txt");
  opt.stderr_path = counters.file("gcov.err");
  auto gcov = process::spawn(PROCMODEL_GCOV, {"--stdout", gcda}, opt);
  auto gcov_status = gcov.wait_exit(60s);
  REQUIRE(gcov_status.has_value());
  INFO("gcov: " << read_file(counters.file("gcov.err")));
  REQUIRE(exit_code_of(*gcov_status) == 0);
  const std::string listing = read_file(counters.file("gcov.txt"));

  // The master ran main(); only the workers ran an echo: the 3 here, one
  // line each, and start()'s readiness probe.
  CHECK(count_of_line(listing, "examples/echo/main.cpp", "int main(") >= 1);
  CHECK(count_of_line(listing, "examples/echo/main.cpp", "asio::async_write(self->socket_") >= 3);
}

#else

PM_TEST_CASE("coverage: a program built with --coverage records what its forked workers ran",
             "[coverage]") {
  SKIP("built with a compiler other than GCC, or without gcov: tests/CMakeLists.txt");
}

#endif
