#include <procmodel/detail/signal_fd.hpp>

#include "support/catch.hpp"

#include <array>
#include <csignal>
#include <stdexcept>

#include <poll.h>

// A worker's signals: handlers and a pipe, with an empty mask. One test case,
// because the pipe is once per process and its handlers stay installed.

TEST_CASE("signal_pipe delivers a signal sent before it existed and leaves nothing blocked",
          "[signals][worker]") {
  // As in a freshly forked worker: the master's watched signals are blocked.
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGUSR1);
  sigaddset(&blocked, SIGUSR2);
  REQUIRE(::pthread_sigmask(SIG_BLOCK, &blocked, nullptr) == 0);
  REQUIRE(::raise(SIGUSR1) == 0);  // during start-up: stays pending, does not kill

  constexpr std::array<int, 2> watched = {SIGUSR1, SIGUSR2};
  procmodel::detail::signal_pipe sigs{std::span<const int>(watched)};

  sigset_t now;
  REQUIRE(::pthread_sigmask(SIG_SETMASK, nullptr, &now) == 0);
  for (int s = 1; s < 32; ++s) {
    INFO("signal " << s);
    CHECK(sigismember(&now, s) == 0);
  }

  pollfd p{sigs.fd(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 1000) == 1);
  int signo = 0;
  REQUIRE(sigs.read(signo));
  CHECK(signo == SIGUSR1);
  CHECK_FALSE(sigs.read(signo));

  // Several of a kind count once, as with a signalfd; each kind is kept.
  REQUIRE(::raise(SIGUSR2) == 0);
  REQUIRE(::raise(SIGUSR2) == 0);
  REQUIRE(::raise(SIGUSR1) == 0);
  std::array<int, 2> got{};
  REQUIRE(sigs.read(got[0]));
  REQUIRE(sigs.read(got[1]));
  CHECK_FALSE(sigs.read(signo));
  CHECK(got == std::array<int, 2>{SIGUSR1, SIGUSR2});

  CHECK_THROWS_AS(procmodel::detail::signal_pipe{std::span<const int>(watched)}, std::logic_error);
}
