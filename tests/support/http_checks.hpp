#pragma once

/// @file http_checks.hpp
/// What the http_server end-to-end tests share: a fixture configuration, a
/// readable verdict of a load run, and one request on a kept-alive connection.

#include <optional>
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
                  std::to_string(r.refused) + ", timed out " + std::to_string(r.timed_out) +
                  ", slow " + std::to_string(r.slow) + ", slowest answer " +
                  std::to_string(static_cast<long>(r.max_latency_ms)) +
                  " ms, Connection: close answers " + std::to_string(r.closes);
  for (const auto& f : r.failures) s += "\n  " + f;
  return s;
}

/// What a zero-loss run lost, "" if nothing: failed, non-2xx, timed-out and
/// slow requests, and refused connects — unless `refused_after` is given (a
/// stop closes the listeners) and every refusal came after it.
inline std::string losses(const test_support::load_result& r,
                          std::optional<steady::time_point> refused_after = std::nullopt) {
  std::string out;
  auto add = [&](std::uint64_t n, const char* what) {
    if (n) out += (out.empty() ? "" : ", ") + std::to_string(n) + " " + what;
  };
  add(r.failed, "failed");
  add(r.non_2xx, "non-2xx");
  add(r.timed_out, "timed out");
  add(r.slow, "slow");
  if (r.refused && (!refused_after || (r.first_refused && *r.first_refused < *refused_after)))
    add(r.refused, refused_after ? "refused, the first before the stop" : "refused");
  return out;
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
