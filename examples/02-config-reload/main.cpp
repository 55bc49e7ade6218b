// 02-config-reload: a configuration file, re-read on HUP (or `-s reload`),
// validated before anything changes. Each worker answers every line with
// "<greeting> <line>". A file that does not parse, or that asks for
// something out of range, is refused: the serving workers go on as they were
// and `-s reload` says why.
//
//   greeter --config greeter.conf --pid-file /tmp/greeter.pid
//   greeter -t --config greeter.conf                  # check a file, start nothing
//   greeter -s reload --pid-file /tmp/greeter.pid     # waits for the verdict
//
// greeter.conf:
//   greeting = hello
//   workers = 2

#include <procmodel/procmodel.hpp>

#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

struct config {
  std::string greeting = "hello";
  std::optional<unsigned> workers;
};

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Parses and validates; throws with a message that names the line.
config load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("cannot open " + path);
  config c;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    line = trim(line);
    if (line.empty() || line[0] == '#')
      continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos)
      throw std::runtime_error(path + ":" + std::to_string(n) + ": expected key = value");
    const std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    if (key == "greeting") {
      if (value.empty())
        throw std::runtime_error(path + ":" + std::to_string(n) + ": empty greeting");
      c.greeting = value;
    } else if (key == "workers") {
      unsigned long w = 0;  // not a number: out of range below
      try {
        w = std::stoul(value);
      } catch (const std::exception&) {
      }
      if (w < 1 || w > 64)
        throw std::runtime_error(path + ":" + std::to_string(n) + ": workers must be 1 to 64");
      c.workers = static_cast<unsigned>(w);
    } else {
      throw std::runtime_error(path + ":" + std::to_string(n) + ": unknown key " + key);
    }
  }
  return c;
}

class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket s, procmodel::connection c, std::string greeting)
      : socket_(std::move(s)), conn_(std::move(c)), greeting_(std::move(greeting)) {
    conn_.on_close([this] { socket_.close(); });
  }

  void read() {
    conn_.idle();
    asio::async_read_until(socket_, asio::dynamic_buffer(in_), '\n',
                           [self = shared_from_this()](auto ec, std::size_t n) {
                             self->conn_.busy();
                             if (!ec)
                               self->answer(n);
                           });
  }

 private:
  void answer(std::size_t n) {
    out_ = greeting_ + " " + in_.substr(0, n);
    in_.erase(0, n);
    asio::async_write(socket_, asio::buffer(out_), [self = shared_from_this()](auto ec, auto) {
      if (!ec && !self->conn_.draining())
        self->read();
    });
  }

  tcp::socket socket_;
  std::string in_, out_;
  procmodel::connection conn_;
  std::string greeting_;
};

// A Worker is plain configuration: each worker process gets its own copy,
// and a reload edits a copy for the next generation.
struct greeter_worker {
  std::string greeting;

  void operator()(procmodel::worker_context& ctx) {
    procmodel::serve(ctx, [g = greeting](tcp::socket s, procmodel::connection c) {
      std::make_shared<session>(std::move(s), std::move(c), g)->read();
    });
    ctx.ready();
  }
};

}  // namespace

int main(int argc, char** argv) {
  procmodel::options opt;
  opt.listen = {"127.0.0.1:7002"};
  std::string path;
  procmodel::command_line cli(opt);
  cli.add("--config", "PATH", "configuration file (greeting = ..., workers = N)",
          [&](std::string_view v) { path = v; });
  if (auto code = cli.parse(argc, argv))
    return *code;

  config conf;
  if (!path.empty() && !opt.signal && opt.query.empty() && !opt.check_config) {
    try {
      conf = load_config(path);  // a bad file stops the start
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", opt.program_name.c_str(), e.what());
      return 1;
    }
    if (conf.workers)
      opt.workers = *conf.workers;
  }

  procmodel::supervisor<greeter_worker> master(opt, greeter_worker{conf.greeting});
  // Runs in the master on HUP (and for -t), on copies: throwing refuses the
  // reload and nothing changes; returning starts a new generation from the copies.
  master.on_reload([path](greeter_worker& next, procmodel::options& next_opt) {
    if (path.empty())
      return;
    const config c = load_config(path);
    next.greeting = c.greeting;
    if (c.workers)
      next_opt.workers = *c.workers;
  });
  return master.run();
}
