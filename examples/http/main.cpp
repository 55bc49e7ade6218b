// http_server: procmodel's demo. An HTTP/1.1 keep-alive server (Boost.Beast)
// whose answer names the worker that served it:
//
//   hello from worker 0 generation 1 pid 4242
//
// On a graceful stop each worker accepts what the kernel already queued, stops
// accepting, answers the next request on every kept-alive connection with
// `Connection: close`, and closes connections that stay idle at the deadline:
// no client sees a reset.
//
// Each request counts as served (for --max-requests). With --debug-paths,
// for rehearsing the watchdog and recycling: GET /debug/block answers, then
// blocks the worker's loop for good (?ignore-abort: and ignores SIGABRT);
// GET /debug/grow?mb=N keeps N MB more.

#include <procmodel/procmodel.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "config.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

constexpr auto keepalive_timeout = std::chrono::seconds(75);  // as nginx

class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, procmodel::connection conn, std::shared_ptr<const std::string> body,
          procmodel::worker_context& ctx, bool debug_paths)
      : stream_(std::move(socket)), body_(std::move(body)), ctx_(ctx), debug_paths_(debug_paths),
        conn_(std::move(conn)) {
    // At the drain deadline, if idle and nothing of a next request came.
    conn_.on_close([this] {
      if (buffer_.size() == 0) close();
    });
  }

  void read() {
    request_ = {};
    conn_.idle();
    stream_.expires_after(keepalive_timeout);
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       self->conn_.busy();
                       if (ec) return self->close();
                       self->respond();
                     });
  }

 private:
  void respond();
  bool debug_path();
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  std::shared_ptr<const std::string> body_;
  procmodel::worker_context& ctx_;
  bool debug_paths_;
  bool block_after_ = false;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  procmodel::connection conn_;  // last: leaves the set before the stream goes
};

void session::respond() {
  // Draining: this answer is the connection's last.
  bool keep_alive = request_.keep_alive() && !conn_.draining();
  ctx_.served();
  response_ = {};
  response_.version(request_.version());
  if (debug_paths_ && debug_path()) {
    // answered by debug_path()
  } else if (request_.method() == http::verb::get || request_.method() == http::verb::head) {
    response_.result(http::status::ok);
    response_.body() = *body_;
  } else {
    response_.result(http::status::method_not_allowed);
    response_.set(http::field::allow, "GET, HEAD");
    response_.body() = "method not allowed\n";
  }
  response_.set(http::field::server, "procmodel-http");
  response_.set(http::field::content_type, "text/plain");
  response_.keep_alive(keep_alive);
  response_.prepare_payload();
  if (request_.method() == http::verb::head) response_.body().clear();
  http::async_write(stream_, response_,
                    [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
                      // A stuck loop, as a deadlock would leave it.
                      while (self->block_after_) std::this_thread::sleep_for(std::chrono::hours(1));
                      if (ec || !keep_alive) return self->close();
                      self->read();
                    });
}

// Test-only paths; false for any other.
bool session::debug_path() {
  static std::vector<std::vector<char>> kept;  // what /debug/grow took, for good
  std::string_view target(request_.target().data(), request_.target().size());
  if (target == "/debug/block" || target == "/debug/block?ignore-abort") {
    if (target.ends_with("?ignore-abort")) std::signal(SIGABRT, SIG_IGN);
    block_after_ = true;
    response_.body() = fmt::format("pid {} blocks its loop\n", ctx_.pid());
  } else if (target.starts_with("/debug/grow?mb=")) {
    unsigned mb = 0;
    try {
      mb = static_cast<unsigned>(procmodel::parse_number("mb", target.substr(15), 1, 4096));
    } catch (const std::invalid_argument& e) {
      response_.result(http::status::bad_request);
      response_.body() = std::string(e.what()) + "\n";
      return true;
    }
    kept.emplace_back(std::size_t(mb) << 20, 'x');  // touched: resident
    response_.body() = fmt::format("pid {} keeps {} MB more\n", ctx_.pid(), mb);
  } else {
    return false;
  }
  response_.result(http::status::ok);
  return true;
}

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
    if (exit_at_start && ctx.slot() >= exit_from_slot) std::_Exit(*exit_at_start);
    auto body = std::make_shared<const std::string>(fmt::format(
        "{} from worker {} generation {} pid {}\n", greeting, ctx.slot(), ctx.generation(), ctx.pid()));
    // Every listener; on a drain, what the kernel queued is served too.
    procmodel::serve(ctx, [body, &ctx, debug = debug_paths](tcp::socket s, procmodel::connection c) {
      std::make_shared<session>(std::move(s), std::move(c), body, ctx, debug)->read();
    });
    if (!report_ready) return;
    if (ready_delay_ms == 0) return ctx.ready();
    auto timer = std::make_shared<asio::steady_timer>(ctx.loop(), std::chrono::milliseconds(ready_delay_ms));
    timer->async_wait([timer, &ctx](beast::error_code ec) {
      if (!ec) ctx.ready();
    });
  }
};

}  // namespace

int main(int argc, char** argv) {
  procmodel::options opt;
  opt.listen = {"127.0.0.1:8080"};
  std::string config_path;
  procmodel::command_line cli(opt);
  cli.add("--config", "PATH", "configuration file (greeting = ..., workers = N)",
          [&](std::string_view v) { config_path = v; });
  bool debug_paths = false;
  cli.add_flag("--debug-paths",
               "for tests: GET /debug/block blocks a worker's loop, /debug/grow?mb=N grows it",
               [&] { debug_paths = true; });
  if (auto code = cli.parse(argc, argv)) return *code;

  // The file's listen addresses serve unless the command line names some.
  const bool listen_given = std::any_of(argv + 1, argv + argc, [](const char* a) {
    return std::string_view(a).starts_with("--listen");
  });
  http_example::config conf;
  if (!config_path.empty() && !opt.signal) {
    try {
      conf = http_example::load_config(config_path);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", opt.program_name.c_str(), e.what());
      return 1;
    }
    if (conf.workers) opt.workers = *conf.workers;
    if (!conf.listen.empty() && !listen_given) opt.listen = conf.listen;
  }
  procmodel::supervisor<http_worker> master(
      opt, http_worker{conf.greeting, conf.ready, conf.ready_delay_ms, conf.exit_at_start,
                       debug_paths, conf.exit_from_slot});
  // HUP re-reads the file; a file that does not parse refuses the reload and
  // the serving generation goes on untouched.
  if (!config_path.empty())
    master.on_reload([config_path, listen_given](http_worker& next, procmodel::options& next_opt) {
      auto c = http_example::load_config(config_path);
      next.greeting = c.greeting;
      next.report_ready = c.ready;
      next.ready_delay_ms = c.ready_delay_ms;
      next.exit_at_start = c.exit_at_start;
      next.exit_from_slot = c.exit_from_slot;
      if (c.workers) next_opt.workers = *c.workers;
      // A change is the master's to refuse: it keeps its sockets, and says so.
      if (!c.listen.empty() && !listen_given) next_opt.listen = c.listen;
    });
  return master.run();
}
