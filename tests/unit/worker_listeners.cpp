#include <procmodel/listeners.hpp>  // detail::local_address
#include <procmodel/worker_context.hpp>

#include "support/catch.hpp"
#include "support/loopback.hpp"

#include <unistd.h>

// The worker's view of its listeners around a drain.

using test_support::listen_loopback;

TEST_CASE("after a drain the listeners are no longer handed out", "[worker][listeners]") {
  boost::asio::io_context io;
  auto [master_end, worker_end] = procmodel::channel::make_pair();
  procmodel::worker_context::setup s;
  s.listeners = {listen_loopback()};
  s.owns_listeners = true;  // a forked worker's copies: the drain closes them
  s.level = procmodel::log_level::warn;
  procmodel::worker_context ctx(io, std::move(worker_end), std::move(s));

  const int number = ctx.listeners().at(0).fd;
  {
    auto a = ctx.acceptor(0);  // before the drain: a duplicate of the listener
    CHECK(a.is_open());
    CHECK(a.native_handle() != number);
  }
  ctx.drain(procmodel::drain_reason::quit, procmodel::milliseconds(1000));

  // The drain closed the listener; its number may now name anything else.
  int other = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(other >= 0);
  if (other != number) {  // open() usually takes the freed number itself
    REQUIRE(::dup3(other, number, O_CLOEXEC) == number);
    ::close(other);
  }

  CHECK(ctx.listeners().at(0).fd == -1);               // never a stale number
  CHECK_THROWS_AS(ctx.acceptor(0), std::logic_error);  // never a dup of whatever it names now
  ::close(number);
}

TEST_CASE("after a drain in single-process mode the master's listeners are not handed out",
          "[worker][listeners]") {
  boost::asio::io_context io;
  auto [master_end, worker_end] = procmodel::channel::make_pair();
  auto l = listen_loopback();
  const int number = l.fd;
  procmodel::worker_context::setup s;
  s.listeners = {l};
  s.owns_listeners = false;  // the master's own descriptors
  s.level = procmodel::log_level::warn;
  procmodel::worker_context ctx(io, std::move(worker_end), std::move(s));
  ctx.drain(procmodel::drain_reason::quit, procmodel::milliseconds(1000));

  CHECK(::fcntl(number, F_GETFD) >= 0);   // not the worker's to close
  CHECK(ctx.listeners().at(0).fd == -1);  // the master may close it at any time now
  CHECK_THROWS_AS(ctx.acceptor(0), std::logic_error);
  ::close(number);
}

TEST_CASE("acceptor(i) past the last listener says how many there are and how to add one",
          "[worker][listeners]") {
  boost::asio::io_context io;
  auto [master_end, worker_end] = procmodel::channel::make_pair();
  procmodel::worker_context::setup s;  // no listeners: a master started without an address
  s.level = procmodel::log_level::warn;
  procmodel::worker_context ctx(io, std::move(worker_end), std::move(s));

  std::string what;
  try {
    (void)ctx.acceptor(0);
  } catch (const std::logic_error& e) {
    what = e.what();
  }
  CHECK(what.find("acceptor(0): this worker has 0 listener(s)") != std::string::npos);
  CHECK(what.find("options::listen or --listen HOST:PORT") != std::string::npos);
}
