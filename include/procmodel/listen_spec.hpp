#pragma once

/// @file listen_spec.hpp
/// A listen address as it is written in the options, on the command line or
/// in a configuration file: `HOST:PORT`, `[V6]:PORT`, `unix:/PATH` or
/// `udp://HOST:PORT`, then
/// nginx's listen parameters, separated by spaces:
///
///     127.0.0.1:8080 backlog=1024 deferred fastopen=256 so_keepalive=30s:10s:3
///     unix:/run/app.sock mode=0660 group=www-data

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <sys/types.h>
#include <sys/un.h>

#include <fmt/core.h>

#include "detail/config.hpp"
#include "detail/format.hpp"

namespace procmodel {

// From options.hpp, which is included at the end: its --listen flag checks
// addresses with parse_listen(), so this header is complete before it.
PROCMODEL_DECL long long parse_number(std::string_view what, std::string_view text, long long lo,
                                      long long hi);

/// HOST and PORT of a listen address; HOST is empty for every interface.
struct endpoint_spec {
  std::string host;
  std::uint16_t port = 0;
};

/// Parses "127.0.0.1:8080", "[::1]:8080", "localhost:80", "*:80" or ":80".
/// Throws std::invalid_argument with a message naming the address.
inline endpoint_spec parse_endpoint(std::string_view text) {
  auto fail = [&](std::string_view why) {
    return std::invalid_argument(detail::format("invalid listen address '{}': {}", text, why));
  };
  std::string_view host, port;
  if (text.starts_with('[')) {
    auto close = text.find(']');
    if (close == std::string_view::npos) throw fail("missing ']'");
    host = text.substr(1, close - 1);
    if (host.empty() || host == "*")
      throw fail("no address between '[' and ']' (write '*:PORT' for any address)");
    if (close + 1 >= text.size() || text[close + 1] != ':') throw fail("expected [HOST]:PORT");
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) throw fail("expected HOST:PORT or unix:/PATH");
    host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) throw fail("write IPv6 addresses as [HOST]:PORT");
    if (host.find_first_of("[]") != std::string_view::npos) throw fail("unbalanced '[' or ']'");
    port = text.substr(colon + 1);
  }
  if (host == "*") host = {};
  endpoint_spec spec;
  spec.host = std::string(host);
  spec.port = static_cast<std::uint16_t>(
      parse_number(detail::format("port of '{}'", text), port, 0, 65535));
  return spec;
}

/// nginx's `so_keepalive=`: on, off, or `[idle]:[interval]:[count]`, each
/// part left out keeping the system's value.
struct keepalive_spec {
  bool on = true;
  std::optional<int> idle;      ///< seconds before the first probe (TCP_KEEPIDLE)
  std::optional<int> interval;  ///< seconds between probes (TCP_KEEPINTVL)
  std::optional<int> count;     ///< probes before the connection is dropped (TCP_KEEPCNT)
};

/// A parsed listen address. Parameters left unset keep the system's value
/// (the backlog: options::backlog).
struct listen_spec {
  enum class kind : std::uint8_t { tcp, unix_stream, udp };
  kind type = kind::tcp;
  std::string address;     ///< the address as written, without parameters
  endpoint_spec endpoint;  ///< tcp, udp
  std::string path;        ///< unix_stream: the socket file

  std::optional<int> backlog;
  bool deferred = false;          ///< tcp: TCP_DEFER_ACCEPT (wake on data, not on the handshake)
  std::optional<int> fastopen;    ///< tcp: TCP_FASTOPEN, the queue of pending fast opens
  std::optional<bool> ipv6only;   ///< tcp over IPv6: IPV6_V6ONLY (on unless said)
  std::optional<keepalive_spec> keepalive;  ///< tcp: SO_KEEPALIVE for accepted connections
  std::optional<int> rcvbuf;      ///< SO_RCVBUF in bytes
  std::optional<int> sndbuf;      ///< SO_SNDBUF in bytes
  std::optional<mode_t> mode;     ///< unix_stream: the file's mode (as chmod)
  std::string user;               ///< unix_stream: the file's owner, by name or number
  std::string group;              ///< unix_stream: the file's group, by name or number
};

namespace detail {

inline bool on_off(std::string_view what, std::string_view v) {
  if (v == "on") return true;
  if (v == "off") return false;
  throw std::invalid_argument(detail::format("{}: expected on or off, got '{}'", what, v));
}

// A size as nginx writes them: 65536, 64k, 1m.
inline int parse_size(std::string_view what, std::string_view v) {
  long long unit = 1;
  if (!v.empty() && (v.back() == 'k' || v.back() == 'K')) unit = 1024;
  if (!v.empty() && (v.back() == 'm' || v.back() == 'M')) unit = 1024 * 1024;
  if (unit != 1) v.remove_suffix(1);
  return static_cast<int>(parse_number(what, v, 1, (1LL << 30) / unit) * unit);
}

// Seconds, as nginx's so_keepalive parts: "30" or "30s", "2m".
inline int parse_seconds(std::string_view what, std::string_view v) {
  long long unit = 1;
  if (!v.empty() && v.back() == 's') v.remove_suffix(1);
  else if (!v.empty() && v.back() == 'm') unit = 60, v.remove_suffix(1);
  else if (!v.empty() && v.back() == 'h') unit = 3600, v.remove_suffix(1);
  return static_cast<int>(parse_number(what, v, 1, 32767 / unit) * unit);
}

inline keepalive_spec parse_keepalive(std::string_view v) {
  constexpr std::string_view what = "so_keepalive";
  if (v == "on" || v == "off") return {v == "on", {}, {}, {}};
  keepalive_spec k;
  std::optional<int>* parts[] = {&k.idle, &k.interval, &k.count};
  for (int i = 0; i < 3; ++i) {
    auto colon = v.find(':');
    if ((colon == std::string_view::npos) != (i == 2))
      throw std::invalid_argument(
          detail::format("{}: expected on, off or [idle]:[interval]:[count], got '{}'", what, v));
    auto part = v.substr(0, colon);
    v = colon == std::string_view::npos ? std::string_view{} : v.substr(colon + 1);
    if (part.empty()) continue;
    *parts[i] = i == 2 ? static_cast<int>(parse_number("so_keepalive count", part, 1, 127))
                       : parse_seconds(i == 0 ? "so_keepalive idle" : "so_keepalive interval", part);
  }
  return k;
}

}  // namespace detail

/// Parses a listen address and its parameters. Throws std::invalid_argument
/// naming the address and what is wrong; a parameter that does not fit the
/// kind of address (`deferred` on a unix socket) is refused, not ignored.
inline listen_spec parse_listen(std::string_view text) {
  const std::string_view whole = text;
  auto fail = [&](std::string_view why) {
    return std::invalid_argument(detail::format("invalid listen address '{}': {}", whole, why));
  };
  auto next_word = [&]() {
    while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    auto end = text.find(' ');
    auto word = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end);
    return word;
  };
  listen_spec s;
  auto address = next_word();
  if (address.empty()) throw fail("no address");
  s.address = std::string(address);
  if (address.starts_with("unix:")) {
    s.type = listen_spec::kind::unix_stream;
    s.path = std::string(address.substr(5));
    if (s.path.empty() || s.path.front() != '/') throw fail("a unix socket needs an absolute path");
    if (s.path.size() >= sizeof(sockaddr_un::sun_path))
      throw fail(
          detail::format("the path is longer than {} bytes", sizeof(sockaddr_un::sun_path) - 1));
    if (s.path.find('\0') != std::string::npos) throw fail("the path holds a NUL byte");
  } else if (address.starts_with("udp://")) {
    s.type = listen_spec::kind::udp;
    s.endpoint = parse_endpoint(address.substr(6));
  } else {
    s.endpoint = parse_endpoint(address);
  }
  const bool tcp = s.type == listen_spec::kind::tcp;
  const bool unix_socket = s.type == listen_spec::kind::unix_stream;
  for (auto word = next_word(); !word.empty(); word = next_word()) {
    auto eq = word.find('=');
    auto name = word.substr(0, eq);
    auto value = eq == std::string_view::npos ? std::string_view{} : word.substr(eq + 1);
    auto needs_value = [&] {
      if (eq == std::string_view::npos || value.empty())
        throw fail(detail::format("'{}' needs a value ({}=...)", name, name));
    };
    auto tcp_only = [&] {
      if (!tcp)
        throw fail(detail::format("'{}' is for TCP addresses, not {}", name,
                               unix_socket ? "unix sockets" : "UDP"));
    };
    auto stream_only = [&] {
      if (s.type == listen_spec::kind::udp) throw fail(detail::format("'{}' is not for UDP", name));
    };
    auto ip_only = [&] {
      if (unix_socket) throw fail(detail::format("'{}' is not for unix sockets", name));
    };
    auto unix_only = [&] {
      if (!unix_socket) throw fail(detail::format("'{}' is for unix sockets", name));
    };
    try {
      if (name == "backlog") {
        stream_only();
        needs_value();
        s.backlog = static_cast<int>(parse_number("backlog", value, 1, 1 << 20));
      } else if (name == "deferred") {
        tcp_only();
        if (eq != std::string_view::npos) throw fail("'deferred' takes no value");
        s.deferred = true;
      } else if (name == "fastopen") {
        tcp_only();
        needs_value();
        s.fastopen = static_cast<int>(parse_number("fastopen", value, 0, 1 << 20));
      } else if (name == "ipv6only") {
        ip_only();
        needs_value();
        s.ipv6only = detail::on_off("ipv6only", value);
      } else if (name == "so_keepalive") {
        tcp_only();
        needs_value();
        s.keepalive = detail::parse_keepalive(value);
      } else if (name == "rcvbuf" || name == "sndbuf") {
        needs_value();
        (name == "rcvbuf" ? s.rcvbuf : s.sndbuf) = detail::parse_size(name, value);
      } else if (name == "mode") {
        unix_only();
        needs_value();
        if (value.find_first_not_of("01234567") != std::string_view::npos || value.size() > 4)
          throw fail(detail::format("mode '{}' is not an octal file mode such as 0660", value));
        s.mode = static_cast<mode_t>(std::stoul(std::string(value), nullptr, 8));
      } else if (name == "user" || name == "group") {
        unix_only();
        needs_value();
        (name == "user" ? s.user : s.group) = std::string(value);
      } else {
        throw fail(detail::format(
            "unknown parameter '{}' (backlog=, deferred, fastopen=, ipv6only=, so_keepalive=, "
            "rcvbuf=, sndbuf=; for unix sockets mode=, user=, group=)",
            name));
      }
    } catch (const std::invalid_argument& e) {
      if (std::string_view(e.what()).starts_with("invalid listen address")) throw;
      throw fail(e.what());
    }
  }
  if (s.ipv6only && s.endpoint.host.find(':') == std::string::npos)
    throw fail("ipv6only is for IPv6 addresses ([HOST]:PORT)");
  return s;
}

}  // namespace procmodel

#include "options.hpp"
