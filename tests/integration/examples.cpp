// The numbered examples (examples/NN-*), each started as its README says:
// a connection works, the signal its README names does what it says, and
// each process ends as it should (the teardown audit: exit codes, every
// worker's "exited with code 0", no error line unless expected).

#include "support/catch.hpp"
#include "support/process.hpp"
#include "support/server.hpp"
#include "support/teardown.hpp"

#include <csignal>
#include <string>

#ifndef PROCMODEL_EXAMPLE_MINIMAL
#error "tests/CMakeLists.txt passes the example programs' paths"
#endif

using namespace pmtest;

namespace {

const std::string minimal_server = PROCMODEL_EXAMPLE_MINIMAL;
const std::string greeter = PROCMODEL_EXAMPLE_GREETER;
const std::string signal_table_server = PROCMODEL_EXAMPLE_SIGNAL_TABLE;
const std::string debug_server = PROCMODEL_EXAMPLE_SINGLE_PROCESS;

// Sends `line` and reads exactly `answer` back.
bool round_trip(tcp_client& c, const std::string& line, const std::string& answer) {
  if (!c.send_all(line))
    return false;
  auto back = c.recv_exact(answer.size());
  return back && *back == answer;
}

// The master's exit, within `timeout`: its wait status, if it exited.
void require_exit_code_0(server& srv, milliseconds timeout = 10s) {
  auto status = srv.master().wait_exit(timeout);
  PM_REQUIRE(srv, status.has_value());
  PM_CHECK(srv, exit_code_of(*status) == 0);
  PM_CHECK(srv, !file_exists(srv.pid_path()));
}

}  // namespace

PM_TEST_CASE(
    "examples: 01-minimal echoes lines, and QUIT answers the line in flight, closes idle "
    "clients at the drain deadline and exits 0",
    "[examples]") {
  server srv(minimal_server, "procmodel-ex01");
  server_config c;
  c.extra = {"--shutdown-timeout", "2000"};
  PM_REQUIRE(srv, srv.start(c));
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  PM_REQUIRE(srv, client->echo("hello\n"));

  REQUIRE(srv.master().signal(SIGQUIT));
  PM_REQUIRE(
      srv, wait_for([&] { return count_of(srv.log(), ": draining (asked by master)") == 2; }, 5s));
  // Idle when the drain began: closed at the deadline, not reset.
  PM_CHECK(srv, client->wait_closed(5s) == tcp_client::status::eof);
  require_exit_code_0(srv);
}

PM_TEST_CASE(
    "examples: 02-config-reload answers with the configured greeting: HUP applies a new "
    "file, and a bad file is refused while the old greeting serves on",
    "[examples][reload]") {
  temp_dir dir("procmodel-ex02-conf");
  const std::string conf = dir.file("greeter.conf");
  write_file(conf, "greeting = hello\nworkers = 2\n");

  server srv(greeter, "procmodel-ex02");
  server_config c;
  c.extra = {"--config", conf};
  c.wait_ready = false;  // the answer is not an echo: checked below
  PM_REQUIRE(srv, srv.start(c));
  PM_REQUIRE(srv, wait_for(
                      [&] {
                        auto cl = tcp_client::connect(srv.port(), 1s);
                        return cl && round_trip(*cl, "a\n", "hello a\n");
                      },
                      10s, 50ms));

  // -t checks a file without any master.
  write_file(conf, "greeting = bonjour\nworkers = 1\n");
  auto check = run(dir, greeter, {"-t", "--config", conf});
  PM_CHECK(srv, check.code() == 0);

  auto reload = run(dir, greeter, {"-s", "reload", "--pid-file", srv.pid_path()}, 20s);
  PM_REQUIRE(srv, reload.code() == 0);
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  PM_CHECK(srv, round_trip(*client, "b\n", "bonjour b\n"));
  client.reset();

  // Out of range: refused, and the serving generation stays as it was.
  write_file(conf, "greeting = hi\nworkers = 0\n");
  expect_log_line("workers must be 1 to 64");
  auto refused = run(dir, greeter, {"-s", "reload", "--pid-file", srv.pid_path()}, 20s);
  PM_CHECK(srv, refused.code() == 1);
  PM_CHECK(srv, (refused.out + refused.err).find("workers must be 1 to 64") != std::string::npos);
  auto after = tcp_client::connect(srv.port());
  REQUIRE(after);
  PM_CHECK(srv, round_trip(*after, "c\n", "bonjour c\n"));
  after.reset();

  REQUIRE(srv.master().signal(SIGQUIT));
  require_exit_code_0(srv);
}

PM_TEST_CASE(
    "examples: 03-signal-table drains on SIGTERM: the line in flight is answered, "
    "USR2 is ignored, and the master exits 0",
    "[examples][signals]") {
  server srv(signal_table_server, "procmodel-ex03");
  PM_REQUIRE(srv, srv.start());
  const auto workers = srv.workers();

  // Not a command in this table: ignored, not the default action (death).
  REQUIRE(srv.master().signal(SIGUSR2));
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  PM_REQUIRE(srv, client->echo("before\n"));
  PM_CHECK(srv, !srv.master().exited());
  PM_CHECK(srv, srv.workers() == workers);

  REQUIRE(srv.master().signal(SIGTERM));
  PM_REQUIRE(
      srv, wait_for([&] { return count_of(srv.log(), ": draining (asked by master)") == 2; }, 5s));
  // Draining, not terminated: the connection still gets its answer.
  PM_CHECK(srv, client->echo("while draining\n"));
  PM_CHECK(srv, client->wait_closed(5s) == tcp_client::status::eof);
  require_exit_code_0(srv);
}

PM_TEST_CASE(
    "examples: 04-single-process serves from one process (workers are threads), and "
    "QUIT ends it with 0",
    "[examples][single_process]") {
  server srv(debug_server, "procmodel-ex04");
  server_config c;
  c.wait_workers = false;  // threads, not processes
  c.wait_ready = false;
  PM_REQUIRE(srv, srv.start(c));
  PM_REQUIRE(srv, wait_for(
                      [&] {
                        auto cl = tcp_client::connect(srv.port(), 1s);
                        if (!cl || !cl->send_all("x\n"))
                          return false;
                        const std::string prefix = "worker ";
                        auto back = cl->recv_exact(prefix.size());  // or more: the whole line
                        return back && back->starts_with(prefix);
                      },
                      10s, 50ms));
  PM_CHECK(srv, children_of(srv.master_pid()).empty());
  auto client = tcp_client::connect(srv.port());
  REQUIRE(client);
  const std::string pid = std::to_string(srv.master_pid());
  REQUIRE(client->send_all("y\n"));
  // "worker K (pid P): y\n": the pid is the master's own.
  const std::string expected_tail = "(pid " + pid + "): y\n";
  auto back = client->recv_exact(std::string("worker 0 ").size() + expected_tail.size());
  REQUIRE(back);
  PM_CHECK(srv, back->ends_with(expected_tail));
  client.reset();

  REQUIRE(srv.master().signal(SIGQUIT));
  require_exit_code_0(srv);
}
