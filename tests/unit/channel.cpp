#include <procmodel/channel.hpp>

#include "support/catch.hpp"
#include "support/fd_flags.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace procmodel;

namespace {

using test_support::cloexec;
using test_support::nonblocking;

int socket_type(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  REQUIRE(::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0);
  return type;
}

// A datagram in the channel's wire format, with the parts a test wants wrong.
std::vector<unsigned char> wire(std::uint32_t magic, std::uint8_t type, std::int64_t argument,
                                std::size_t size = detail::wire_size) {
  std::vector<unsigned char> buf(std::max<std::size_t>(size, 16), 0);
  std::memcpy(buf.data(), &magic, 4);
  buf[4] = type;
  std::memcpy(buf.data() + 8, &argument, 8);
  buf.resize(size);
  return buf;
}

void raw_send(const channel& c, const std::vector<unsigned char>& bytes) {
  REQUIRE(::send(c.fd(), bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(bytes.size()));
}

}  // namespace

TEST_CASE("channel::make_pair: two open - close-on-exec - non-blocking seqpacket ends",
          "[channel]") {
  auto [master, worker] = channel::make_pair();
  for (const channel* c : {&master, &worker}) {
    REQUIRE(c->is_open());
    CHECK(c->fd() > STDERR_FILENO);
    CHECK(cloexec(c->fd()));
    CHECK(nonblocking(c->fd()));
    CHECK(socket_type(c->fd()) == SOCK_SEQPACKET);
  }
  CHECK(master.fd() != worker.fd());
}

TEST_CASE("channel: each message type round-trips with its argument", "[channel]") {
  auto type = GENERATE(message_type::quit, message_type::terminate, message_type::reopen,
                       message_type::ready, message_type::heartbeat);
  auto argument = GENERATE(std::int64_t{0}, std::int64_t{1}, std::int64_t{-1},
                           std::int64_t{10'000}, std::int64_t{-86'400'000},
                           std::numeric_limits<std::int64_t>::max(),
                           std::numeric_limits<std::int64_t>::min());
  auto [master, worker] = channel::make_pair();
  CAPTURE(static_cast<int>(type), argument);

  // Down and up.
  for (auto [from, to] : {std::pair{&master, &worker}, std::pair{&worker, &master}}) {
    REQUIRE(from->send({type, argument}));
    message m;
    REQUIRE(to->receive(m) == receive_status::received);
    CHECK(m.type == type);
    CHECK(m.argument == argument);
    CHECK(to->receive(m) == receive_status::would_block);
  }
}

TEST_CASE("channel: messages arrive whole and in order", "[channel]") {
  auto [master, worker] = channel::make_pair();
  for (std::int64_t i = 0; i < 50; ++i) REQUIRE(master.send({message_type::quit, i * 1000 - 7}));
  message m;
  for (std::int64_t i = 0; i < 50; ++i) {
    REQUIRE(worker.receive(m) == receive_status::received);
    CHECK(m.argument == i * 1000 - 7);
  }
  CHECK(worker.receive(m) == receive_status::would_block);
}

TEST_CASE("channel: message_type values match worker_command", "[channel]") {
  STATIC_REQUIRE(static_cast<int>(message_type::quit) == static_cast<int>(worker_command::quit));
  STATIC_REQUIRE(static_cast<int>(message_type::terminate) ==
                 static_cast<int>(worker_command::terminate));
  STATIC_REQUIRE(static_cast<int>(message_type::reopen) ==
                 static_cast<int>(worker_command::reopen));
}

TEST_CASE("channel: receive on an empty channel would block", "[channel]") {
  auto [master, worker] = channel::make_pair();
  message m{message_type::ready, 42};
  CHECK(worker.receive(m) == receive_status::would_block);
  CHECK(master.receive(m) == receive_status::would_block);
  CHECK(m.type == message_type::ready);  // untouched
  CHECK(m.argument == 42);
}

TEST_CASE("channel: closed once the peer is gone", "[channel]") {
  auto [master, worker] = channel::make_pair();
  message m;

  SECTION("nothing pending") {
    master.close();
    CHECK_FALSE(master.is_open());
    CHECK(worker.receive(m) == receive_status::closed);
    CHECK(worker.receive(m) == receive_status::closed);
  }
  SECTION("what was sent before is still delivered first") {
    REQUIRE(master.send({message_type::quit, 5}));
    master.close();
    REQUIRE(worker.receive(m) == receive_status::received);
    CHECK(m.argument == 5);
    CHECK(worker.receive(m) == receive_status::closed);
  }
  SECTION("sending to a closed peer fails without SIGPIPE") {
    worker.close();
    CHECK_FALSE(master.send({message_type::quit, 1}));
  }
  SECTION("a closed end neither sends nor receives") {
    worker.close();
    CHECK_FALSE(worker.send({message_type::ready, 0}));
    CHECK(worker.receive(m) == receive_status::closed);
  }
}

TEST_CASE("channel: release hands the descriptor over", "[channel]") {
  auto [master, worker] = channel::make_pair();
  int fd = worker.release();
  CHECK_FALSE(worker.is_open());
  channel adopted{detail::unique_fd(fd)};
  REQUIRE(master.send({message_type::reopen, 0}));
  message m;
  CHECK(adopted.receive(m) == receive_status::received);
  CHECK(m.type == message_type::reopen);
}

TEST_CASE("channel: a malformed datagram fails and does not desync the next", "[channel]") {
  struct row {
    const char* name;
    std::vector<unsigned char> bytes;
  };
  auto r = GENERATE(values<row>({
      {"wrong magic", wire(0x12345678, 1, 0)},
      {"one byte short", wire(detail::channel_magic, 1, 0, detail::wire_size - 1)},
      {"one byte long", wire(detail::channel_magic, 1, 0, detail::wire_size + 1)},
      {"far too long", wire(detail::channel_magic, 1, 0, 4096)},
      {"four bytes", wire(detail::channel_magic, 1, 0, 4)},
      {"empty", {}},
  }));
  INFO(r.name);
  auto [master, worker] = channel::make_pair();
  raw_send(master, r.bytes);
  REQUIRE(master.send({message_type::quit, 1234}));

  message m;
  CHECK(worker.receive(m) == receive_status::failed);
  REQUIRE(worker.receive(m) == receive_status::received);
  CHECK(m.type == message_type::quit);
  CHECK(m.argument == 1234);
  CHECK(worker.receive(m) == receive_status::would_block);
}

TEST_CASE("channel: an unknown type with the right magic is received as is", "[channel]") {
  auto [master, worker] = channel::make_pair();
  raw_send(master, wire(detail::channel_magic, 99, -3));
  message m;
  REQUIRE(worker.receive(m) == receive_status::received);
  CHECK(static_cast<int>(m.type) == 99);
  CHECK(m.argument == -3);
}
