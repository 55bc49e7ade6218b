#pragma once

// http_server's worker: the session of session.hpp under procmodel. Its hooks
// keep the connection in the worker's set (drained on a graceful stop), count
// each request as served (for --max-requests) and, with --debug-paths, answer
// the paths that rehearse the watchdog and recycling: GET /debug/block
// answers, then blocks the worker's loop for good (?ignore-abort: and ignores
// SIGABRT); GET /debug/grow?mb=N keeps N MB more.

#include <procmodel/procmodel.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "session.hpp"

namespace http_example {

struct procmodel_hooks {
  procmodel::connection conn;
  procmodel::worker_context* ctx;
  bool debug_paths = false;
  bool block_after = false;

  void attach(session<procmodel_hooks>& s) {
    // At the drain deadline, if idle and nothing of a next request came.
    conn.on_close([&s] {
      if (s.nothing_read())
        s.close();
    });
  }
  void idle() { conn.idle(); }
  void busy() { conn.busy(); }
  [[nodiscard]] bool draining() const { return conn.draining(); }
  void served() { ctx->served(); }
  bool answer(const request& req, response& res) { return debug_paths && debug_path(req, res); }
  void after_write() const {
    // A stuck loop, as a deadlock would leave it.
    while (block_after)
      std::this_thread::sleep_for(std::chrono::hours(1));
  }

  // Test-only paths; false for any other.
  bool debug_path(const request& req, response& res) {
    static std::vector<std::vector<char>> kept;  // what /debug/grow took, for good
    std::string_view target(req.target().data(), req.target().size());
    if (target == "/debug/block" || target == "/debug/block?ignore-abort") {
      if (target.ends_with("?ignore-abort"))
        std::signal(SIGABRT, SIG_IGN);
      block_after = true;
      res.body() = fmt::format("pid {} blocks its loop\n", ctx->pid());
    } else if (target.starts_with("/debug/grow?mb=")) {
      unsigned mb = 0;
      try {
        mb = static_cast<unsigned>(procmodel::parse_number("mb", target.substr(15), 1, 4096));
      } catch (const std::invalid_argument& e) {
        res.result(http::status::bad_request);
        res.body() = std::string(e.what()) + "\n";
        return true;
      }
      kept.emplace_back(std::size_t(mb) << 20, 'x');  // touched: resident
      res.body() = fmt::format("pid {} keeps {} MB more\n", ctx->pid(), mb);
    } else {
      return false;
    }
    res.result(http::status::ok);
    return true;
  }
};

// Each worker runs its own copy of the configuration; the loop's handlers own
// the sessions, the acceptors and the ready timer.
struct http_worker {
  std::string greeting;
  bool report_ready = true;
  unsigned ready_delay_ms = 0;
  std::optional<int> exit_at_start;
  bool debug_paths = false;
  unsigned exit_from_slot = 0;
  void operator()(procmodel::worker_context& ctx) const {
    if (exit_at_start && ctx.slot() >= exit_from_slot)
      std::_Exit(*exit_at_start);
    auto body = std::make_shared<const std::string>(
        fmt::format("{} from worker {} generation {} pid {}\n", greeting, ctx.slot(),
                    ctx.generation(), ctx.pid()));
    // Every listener; on a drain, what the kernel queued is served too.
    procmodel::serve(ctx,
                     [body, &ctx, debug = debug_paths](tcp::socket s, procmodel::connection c) {
                       std::make_shared<session<procmodel_hooks>>(
                           std::move(s), body, procmodel_hooks{std::move(c), &ctx, debug})
                           ->read();
                     });
    if (!report_ready)
      return;
    if (ready_delay_ms == 0)
      return ctx.ready();
    auto timer = std::make_shared<boost::asio::steady_timer>(
        ctx.loop(), std::chrono::milliseconds(ready_delay_ms));
    timer->async_wait([timer, &ctx](beast::error_code ec) {
      if (!ec)
        ctx.ready();
    });
  }
};

}  // namespace http_example
