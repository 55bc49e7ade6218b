// channel::receive on whatever datagram a peer sends: a message only for a
// well-formed 16-byte datagram with the magic, `failed` for anything else,
// and the channel stays usable afterwards.

#include <procmodel/channel.hpp>

#include <cstring>

#include <sys/socket.h>

#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using procmodel_fuzz::require;
  if (size > 4096) return 0;
  auto [a, b] = procmodel::channel::make_pair();
  ssize_t sent = ::send(b.fd(), data, size, MSG_DONTWAIT | MSG_NOSIGNAL);
  require(sent == static_cast<ssize_t>(size), "datagram sent");
  procmodel::message m;
  auto st = a.receive(m);
  std::uint32_t magic = 0;
  if (size >= 4) std::memcpy(&magic, data, 4);
  bool well_formed = size == procmodel::detail::wire_size && magic == procmodel::detail::channel_magic;
  if (well_formed) {
    require(st == procmodel::receive_status::received, "a well-formed datagram is received");
    require(static_cast<unsigned char>(m.type) == data[4], "type from byte 4");
    std::int64_t arg = 0;
    std::memcpy(&arg, data + 8, 8);
    require(m.argument == arg, "argument from bytes 8..15");
  } else {
    require(st == procmodel::receive_status::failed, "anything else is failed, never a message");
  }
  // The channel still works: a real message follows and arrives intact.
  require(b.send({procmodel::message_type::ready, 42}), "send after garbage");
  require(a.receive(m) == procmodel::receive_status::received && m.argument == 42 &&
              m.type == procmodel::message_type::ready,
          "a real message after garbage arrives intact");
  b.close();
  require(a.receive(m) == procmodel::receive_status::closed, "end-of-file is closed");
  return 0;
}
