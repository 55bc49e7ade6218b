// http_server: procmodel's demo. An HTTP/1.1 keep-alive server (Boost.Beast)
// whose answer names the worker that served it:
//
//   hello from worker 0 generation 1 pid 4242
//
// On a graceful stop each worker accepts what the kernel already queued, stops
// accepting, answers the next request on every kept-alive connection with
// `Connection: close`, and closes connections that stay idle at the deadline:
// no client sees a reset.

#include <procmodel/procmodel.hpp>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <memory>
#include <set>
#include <string>

#include <boost/asio/ip/tcp.hpp>
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

class server;

class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket socket, server& srv, procmodel::connection_guard guard)
      : stream_(std::move(socket)), srv_(srv), guard_(std::move(guard)) {}
  ~session();

  void start();
  // Drain: close now if waiting between requests with nothing received.
  void close_if_idle() {
    if (idle_ && buffer_.size() == 0) close();
  }

 private:
  void read();
  void respond();
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  server& srv_;
  procmodel::connection_guard guard_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  bool idle_ = false;
};

class server {
 public:
  server(procmodel::worker_context& ctx, std::string greeting, bool report_ready,
         unsigned ready_delay_ms)
      : ctx_(ctx),
        greeting_(std::move(greeting)),
        report_ready_(report_ready),
        ready_delay_(ready_delay_ms) {}

  void start() {
    for (std::size_t i = 0; i < ctx_.listeners().size(); ++i) {
      acceptors_.push_back(std::make_shared<tcp::acceptor>(ctx_.acceptor(i)));
      // Backs off when out of descriptors instead of spinning on accept().
      procmodel::accept_loop(ctx_, acceptors_.back(),
                             [this](tcp::socket s) { open(std::move(s)); });
    }
    ctx_.on_drain([this](procmodel::steady_clock::time_point deadline) { drain(deadline); });
    if (!report_ready_) return;
    if (ready_delay_.count() == 0) return ctx_.ready();
    ready_timer_ = std::make_unique<asio::steady_timer>(ctx_.loop(), ready_delay_);
    ready_timer_->async_wait([this](beast::error_code ec) {
      if (!ec) ctx_.ready();
    });
  }

  [[nodiscard]] bool draining() const { return ctx_.draining(); }
  [[nodiscard]] std::string body() const {
    return fmt::format("{} from worker {} generation {} pid {}\n", greeting_, ctx_.slot(),
                       ctx_.generation(), ctx_.pid());
  }
  void add(session* s) { sessions_.insert(s); }
  void remove(session* s) { sessions_.erase(s); }

 private:
  void open(tcp::socket s) {
    std::make_shared<session>(std::move(s), *this, ctx_.track())->start();
  }

  void drain(procmodel::steady_clock::time_point deadline) {
    // Whatever the kernel has accepted is served; then no more accepting.
    for (auto& a : acceptors_) procmodel::drain_acceptor(*a, [this](tcp::socket s) { open(std::move(s)); });
    // Kept-alive connections get `Connection: close` on their next answer;
    // those still idle at the deadline are closed then.
    idle_timer_ = std::make_unique<asio::steady_timer>(ctx_.loop(), deadline);
    idle_timer_->async_wait([this](beast::error_code ec) {
      if (ec) return;
      auto open_sessions = sessions_;  // closing edits the set
      for (auto* s : open_sessions) s->close_if_idle();
    });
  }

  procmodel::worker_context& ctx_;
  std::string greeting_;
  bool report_ready_ = true;
  std::chrono::milliseconds ready_delay_{0};
  std::unique_ptr<asio::steady_timer> ready_timer_;
  std::vector<std::shared_ptr<tcp::acceptor>> acceptors_;
  std::set<session*> sessions_;
  std::unique_ptr<asio::steady_timer> idle_timer_;
};

session::~session() { srv_.remove(this); }

void session::start() {
  srv_.add(this);
  read();
}

void session::read() {
  request_ = {};
  idle_ = true;
  stream_.expires_after(keepalive_timeout);
  http::async_read(stream_, buffer_, request_,
                   [self = shared_from_this()](beast::error_code ec, std::size_t) {
                     self->idle_ = false;
                     if (ec) return self->close();
                     self->respond();
                   });
}

void session::respond() {
  bool keep_alive = request_.keep_alive() && !srv_.draining();
  response_ = {};
  response_.version(request_.version());
  if (request_.method() == http::verb::get || request_.method() == http::verb::head) {
    response_.result(http::status::ok);
    response_.body() = srv_.body();
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
                      if (ec || !keep_alive) return self->close();
                      self->read();
                    });
}

// Each worker runs its own copy; the server lives as long as that copy, and
// the loop runs after operator() returns.
struct http_worker {
  std::string greeting;
  std::shared_ptr<server> srv;
  bool report_ready = true;
  unsigned ready_delay_ms = 0;
  std::optional<int> exit_at_start;
  void operator()(procmodel::worker_context& ctx) {
    if (exit_at_start) std::_Exit(*exit_at_start);
    srv = std::make_shared<server>(ctx, greeting, report_ready, ready_delay_ms);
    srv->start();
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
  if (auto code = cli.parse(argc, argv)) return *code;

  http_example::config conf;
  if (!config_path.empty() && !opt.signal) {
    try {
      conf = http_example::load_config(config_path);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", opt.program_name.c_str(), e.what());
      return 1;
    }
    if (conf.workers) opt.workers = *conf.workers;
  }
  procmodel::supervisor<http_worker> master(
      opt, http_worker{conf.greeting, nullptr, conf.ready, conf.ready_delay_ms, conf.exit_at_start});
  // HUP re-reads the file; a file that does not parse refuses the reload and
  // the serving generation goes on untouched.
  if (!config_path.empty())
    master.on_reload([config_path](http_worker& next, procmodel::options& next_opt) {
      auto c = http_example::load_config(config_path);
      next.greeting = c.greeting;
      next.report_ready = c.ready;
      next.ready_delay_ms = c.ready_delay_ms;
      next.exit_at_start = c.exit_at_start;
      if (c.workers) next_opt.workers = *c.workers;
    });
  return master.run();
}
