#pragma once

/// @file http_checks.hpp
/// What the http_server end-to-end tests share: a fixture configuration, a
/// readable verdict of a load run, and one request on a kept-alive connection.

#include <string>
#include <utility>
#include <vector>

#include "support/http_load.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

namespace pmtest {

/// An http_server fixture configuration: `workers`, probed over HTTP.
inline server_config http_config(unsigned workers = 2, std::vector<std::string> extra = {}) {
  server_config c;
  c.workers = workers;
  c.http = true;
  c.extra = std::move(extra);
  return c;
}

/// A load run's counts and first failures, for failure messages.
inline std::string describe(const test_support::load_result& r) {
  std::string s = "ok " + std::to_string(r.ok) + ", non-2xx " + std::to_string(r.non_2xx) +
                  ", failed " + std::to_string(r.failed) + ", refused " +
                  std::to_string(r.refused) + ", Connection: close answers " +
                  std::to_string(r.closes);
  for (const auto& f : r.failures) s += "\n  failure: " + f;
  return s;
}

/// One request on an open keep-alive connection; the raw answer (headers and
/// body) or what went wrong.
inline std::string keepalive_request(tcp_client& c) {
  if (!c.send_all("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")) return "send failed";
  std::string in;
  for (;;) {
    auto end = in.find("\r\n\r\n");
    if (end != std::string::npos) {
      auto cl = in.find("Content-Length: ");
      if (cl != std::string::npos) {
        std::size_t len = std::stoul(in.substr(cl + 16));
        if (in.size() >= end + 4 + len) return in;
      }
    }
    auto st = c.recv_some(in, 5s);
    if (st != tcp_client::status::data)
      return std::string("recv: ") + to_string(st) + " after '" + in + "'";
  }
}

}  // namespace pmtest
