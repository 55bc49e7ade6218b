// The master in a hostile environment: what a careless parent leaves it
// (signals ignored or blocked, stdio closed, a pid file path too long for a
// unix socket), what a start that fails leaves behind, and how it lives
// through running out of descriptors. Real http_server and echo_server
// processes, real signals, loopback only.

#include "support/catch.hpp"
#include "support/http_checks.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

#include <csignal>
#include <string>
#include <vector>

#ifndef PROCMODEL_HTTP_SERVER
#error "PROCMODEL_HTTP_SERVER must name the http_server binary"
#endif

using namespace pmtest;

namespace {

const std::string http_server = PROCMODEL_HTTP_SERVER;
const std::string echo_server = PROCMODEL_ECHO_SERVER;

// Kills the worker of slot 0 with SIGKILL and waits until a new one serves
// in its place; the new pid (0 if none came).
pid_t replace_slot0(server& srv) {
  const pid_t victim = srv.slot_pids().at(0);
  REQUIRE(::kill(victim, SIGKILL) == 0);
  pid_t next = 0;
  wait_for(
      [&] {
        next = srv.slot_pids().at(0);
        return next != victim && srv.is_ready(next);
      },
      10s);
  return next != victim ? next : 0;
}

// QUITs the master; its exit code (-1000 if it did not exit in time).
int quit(server& srv, milliseconds within = 15s) {
  srv.master().signal(SIGQUIT);
  auto st = srv.master().wait_exit(within);
  return st ? exit_code_of(*st) : -1000;
}

}  // namespace

TEST_CASE("a master started with SIGCHLD ignored still replaces a killed worker and quits",
          "[hostile][signals]") {
  server srv(http_server, "procmodel-hostile");
  auto cfg = http_config(2);
  cfg.ignored_signals = {SIGCHLD, SIGHUP, SIGQUIT, SIGUSR1};  // as nohup and careless shells do
  cfg.blocked_signals = {SIGTERM, SIGCHLD};
  PM_REQUIRE(srv, srv.start(cfg));

  pid_t next = replace_slot0(srv);
  PM_CHECK(srv, next != 0);
  PM_CHECK(srv, wait_for([&] { return srv.workers().size() == 2; }, 5s));
  PM_CHECK(srv, srv.zombie_children().empty());
  // The workers still answer after the respawn.
  PM_CHECK(srv, http_get(srv.port()).has_value());

  const auto workers = srv.workers();
  PM_CHECK(srv, quit(srv) == 0);
  for (pid_t w : workers) PM_CHECK(srv, wait_for([&] { return !is_alive(w); }, 5s));
  // Escalation never hit a reaped pid: the master saw every worker exit.
  PM_CHECK(srv, srv.log().find("did not exit in time") == std::string::npos);
}
