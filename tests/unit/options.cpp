#include <procmodel/options.hpp>

#include "support/catch.hpp"

#include <chrono>
#include <cstdio>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

#include <procmodel/listeners.hpp>

using namespace std::chrono_literals;
using namespace procmodel;

namespace {

// Redirects a standard stream (1 or 2) into a temporary file while alive.
class capture {
 public:
  explicit capture(int fd) : fd_(fd), file_(std::tmpfile()) {
    REQUIRE(file_ != nullptr);
    std::fflush(nullptr);
    saved_ = ::dup(fd_);
    REQUIRE(saved_ >= 0);
    REQUIRE(::dup2(::fileno(file_), fd_) == fd_);
  }
  ~capture() { restore(); if (file_) std::fclose(file_); }
  capture(const capture&) = delete;
  capture& operator=(const capture&) = delete;

  // Everything written so far; restores the stream.
  std::string text() {
    restore();
    std::string out;
    std::rewind(file_);
    char buf[512];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, file_)) > 0) out.append(buf, n);
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(nullptr);
    ::dup2(saved_, fd_);
    ::close(saved_);
    saved_ = -1;
  }
  int fd_;
  std::FILE* file_;
  int saved_ = -1;
};

struct parsed {
  std::optional<int> code;
  std::string out, err;
};

// Parses `args` (argv[0] is "/usr/sbin/demo") over `opt` with `cli`.
parsed parse(command_line& cli, std::initializer_list<const char*> args) {
  std::vector<const char*> argv{"/usr/sbin/demo"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(nullptr);
  parsed p;
  capture out(STDOUT_FILENO), err(STDERR_FILENO);
  p.code = cli.parse(static_cast<int>(argv.size() - 1), argv.data());
  p.out = out.text();
  p.err = err.text();
  return p;
}

parsed parse(options& opt, std::initializer_list<const char*> args) {
  command_line cli(opt);
  return parse(cli, args);
}

}  // namespace

TEST_CASE("command_line: no arguments leave the defaults", "[options]") {
  options opt;
  opt.listen = {"127.0.0.1:8080"};
  auto p = parse(opt, {});
  CHECK_FALSE(p.code);
  CHECK(p.err.empty());
  CHECK(opt.workers >= 1);
  CHECK(opt.listen == std::vector<std::string>{"127.0.0.1:8080"});
  CHECK(opt.pid_file.empty());
  CHECK(opt.log_file.empty());
  CHECK(opt.level == log_level::info);
  CHECK(opt.shutdown_timeout == 10s);
  CHECK(opt.terminate_timeout == 5s);
  CHECK_FALSE(opt.daemon);
  CHECK_FALSE(opt.signal);
  CHECK(opt.query.empty());
  CHECK(opt.program_name == "demo");  // argv[0]'s last component
}

TEST_CASE("command_line cannot be copied: its handlers point back at it", "[options]") {
  STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<command_line>);
  STATIC_REQUIRE_FALSE(std::is_move_constructible_v<command_line>);
  STATIC_REQUIRE_FALSE(std::is_copy_assignable_v<command_line>);
}

TEST_CASE("command_line: every standard flag", "[options]") {
  options opt;
  auto p = parse(opt, {"--listen", "127.0.0.1:8080", "--workers", "3", "--pid-file", "/run/demo.pid",
                       "--log-file", "/var/log/demo.log", "--log-level", "debug",
                       "--shutdown-timeout", "2500", "--terminate-timeout", "750", "--daemon",
                       "-s", "reopen"});
  INFO(p.err);
  REQUIRE_FALSE(p.code);
  CHECK(opt.listen == std::vector<std::string>{"127.0.0.1:8080"});
  CHECK(opt.workers == 3);
  CHECK(opt.pid_file == "/run/demo.pid");
  CHECK(opt.log_file == "/var/log/demo.log");
  CHECK(opt.level == log_level::debug);
  CHECK(opt.shutdown_timeout == 2500ms);
  CHECK(opt.terminate_timeout == 750ms);
  CHECK(opt.daemon);
  CHECK(opt.signal == command::reopen);
}

TEST_CASE("command_line: --flag=value", "[options]") {
  options opt;
  auto p = parse(opt, {"--workers=7", "--listen=[::1]:9000", "--pid-file=/tmp/x=y.pid",
                       "--log-level=warn", "--shutdown-timeout=0", "--terminate-timeout=86400000"});
  INFO(p.err);
  REQUIRE_FALSE(p.code);
  CHECK(opt.workers == 7);
  CHECK(opt.listen == std::vector<std::string>{"[::1]:9000"});
  CHECK(opt.pid_file == "/tmp/x=y.pid");  // split at the first '='
  CHECK(opt.level == log_level::warn);
  CHECK(opt.shutdown_timeout == 0ms);
  CHECK(opt.terminate_timeout == 86'400'000ms);
}

TEST_CASE("command_line: each log level", "[options]") {
  auto [name, level] = GENERATE(std::pair{"debug", log_level::debug}, std::pair{"info", log_level::info},
                                std::pair{"notice", log_level::notice},
                                std::pair{"warn", log_level::warn},
                                std::pair{"error", log_level::error});
  options opt;
  opt.level = level == log_level::info ? log_level::error : log_level::info;
  REQUIRE_FALSE(parse(opt, {"--log-level", name}).code);
  CHECK(opt.level == level);
}

TEST_CASE("command_line: each -s command", "[options]") {
  auto c = GENERATE(command::stop, command::quit, command::reopen, command::drain_workers,
                    command::add_worker, command::remove_worker);
  options opt;
  std::string name(to_string(c));
  REQUIRE_FALSE(parse(opt, {"-s", name.c_str()}).code);
  CHECK(opt.signal == c);
  CHECK(parse_command(name) == c);
  CHECK(opt.query.empty());
}

TEST_CASE("command_line: -s status and -s upgrade ask the master over its control socket",
          "[options]") {
  std::string q = GENERATE(std::string("status"), std::string("upgrade"));
  options opt;
  REQUIRE_FALSE(parse(opt, {"-s", q.c_str(), "--json", "--control", "/tmp/x.sock",
                            "--upgrade-timeout", "1234"}).code);
  CHECK(opt.query == q);
  CHECK_FALSE(opt.signal);
  CHECK(opt.json);
  CHECK(opt.control_socket == "/tmp/x.sock");
  CHECK(opt.upgrade_timeout == 1234ms);
}

TEST_CASE("command_line: the last -s wins - '-s stop -s status' does not stop the master",
          "[options]") {
  // Found by tests/fuzz/command_line: both were kept and run() sent the signal.
  options opt;
  REQUIRE_FALSE(parse(opt, {"-s", "stop", "-s", "status"}).code);
  CHECK(opt.query == "status");
  CHECK_FALSE(opt.signal);
  options back;
  REQUIRE_FALSE(parse(back, {"-s", "upgrade", "-s", "reopen"}).code);
  CHECK(back.signal == command::reopen);
  CHECK(back.query.empty());
}

TEST_CASE("command_line: -s reload waits for the outcome unless --no-wait; -t checks the config",
          "[options]") {
  options opt;
  REQUIRE_FALSE(parse(opt, {"-s", "reload"}).code);
  CHECK(opt.query == "reload");
  CHECK_FALSE(opt.signal);
  CHECK_FALSE(opt.no_wait);
  options quick;
  REQUIRE_FALSE(parse(quick, {"-s", "reload", "--no-wait"}).code);
  CHECK(quick.no_wait);
  auto flag = GENERATE(std::string("-t"), std::string("--check-config"));
  options check;
  REQUIRE_FALSE(parse(check, {flag.c_str()}).code);
  CHECK(check.check_config);
}

TEST_CASE("command_line: --listen repeats - and the first replaces the default", "[options]") {
  options opt;
  opt.listen = {"0.0.0.0:80"};
  REQUIRE_FALSE(parse(opt, {"--listen", "127.0.0.1:1", "--listen=127.0.0.1:2", "--listen",
                            "[::1]:3"})
                    .code);
  CHECK(opt.listen == std::vector<std::string>{"127.0.0.1:1", "127.0.0.1:2", "[::1]:3"});

  SECTION("without --listen the default stays") {
    options o2;
    o2.listen = {"0.0.0.0:80"};
    REQUIRE_FALSE(parse(o2, {"--workers", "2"}).code);
    CHECK(o2.listen == std::vector<std::string>{"0.0.0.0:80"});
  }
  SECTION("an empty --listen clears the default: no address at all") {
    options o3;
    o3.listen = {"0.0.0.0:80"};
    REQUIRE_FALSE(parse(o3, {"--listen="}).code);
    CHECK(o3.listen.empty());
  }
}

TEST_CASE("command_line: a program's own flags", "[options]") {
  options opt;
  command_line cli(opt);
  std::string config;
  int verbose = 0;
  cli.add("--config", "PATH", "configuration file", [&](std::string_view v) { config = v; })
      .add_flag("--verbose", "say more", [&] { ++verbose; })
      .add("--port", "N", "a port", [](std::string_view v) { parse_number("--port", v, 1, 65535); });

  SECTION("parsed alongside the standard ones") {
    auto p = parse(cli, {"--config", "/etc/demo.conf", "--workers", "2", "--verbose", "--verbose"});
    REQUIRE_FALSE(p.code);
    CHECK(config == "/etc/demo.conf");
    CHECK(verbose == 2);
    CHECK(opt.workers == 2);
  }
  SECTION("--name=value works for them too") {
    REQUIRE_FALSE(parse(cli, {"--config=/a.conf"}).code);
    CHECK(config == "/a.conf");
  }
  SECTION("a flag without a value refuses one") {
    auto p = parse(cli, {"--verbose=1"});
    CHECK(p.code == 2);
    CHECK(p.err.find("--verbose takes no value") != std::string::npos);
    CHECK(verbose == 0);
  }
  SECTION("a handler's rejection is a usage error naming the flag") {
    auto p = parse(cli, {"--port", "0"});
    CHECK(p.code == 2);
    CHECK(p.err.find("--port") != std::string::npos);
  }
  SECTION("they appear in --help") {
    auto p = parse(cli, {"--help"});
    CHECK(p.code == 0);
    CHECK(p.out.find("--config PATH") != std::string::npos);
    CHECK(p.out.find("configuration file") != std::string::npos);
    CHECK(p.out.find("--verbose") != std::string::npos);
  }
}

TEST_CASE("command_line: usage errors return 2 and name the flag", "[options]") {
  struct row {
    std::vector<const char*> args;
    const char* needle;
  };
  auto r = GENERATE(values<row>({
      {{"--bogus"}, "unknown option '--bogus'"},
      {{"--bogus=1"}, "unknown option '--bogus=1'"},
      {{"-x"}, "unknown option '-x'"},
      {{"workers"}, "unknown option 'workers'"},
      {{"--workers"}, "--workers needs a value"},
      {{"--listen"}, "--listen needs a value"},
      {{"-s"}, "-s needs a value"},
      {{"--workers", "two"}, "--workers: expected a whole number from 1 to 1024, got 'two'"},
      {{"--workers", "3x"}, "--workers: expected a whole number"},
      {{"--workers", ""}, "--workers: expected a whole number"},
      {{"--workers", "-1"}, "--workers: expected a whole number"},
      {{"--workers", "0"}, "--workers: expected a whole number from 1 to 1024, got '0'"},
      {{"--workers", "1025"}, "got '1025'"},
      {{"--workers=99999999999999999999"}, "--workers: expected a whole number"},
      {{"--shutdown-timeout", "86400001"}, "--shutdown-timeout: expected a whole number"},
      {{"--terminate-timeout", "1.5"}, "--terminate-timeout: expected a whole number"},
      {{"--log-level", "loud"}, "--log-level: unknown level 'loud'"},
      {{"-s", "restart"}, "-s: unknown command 'restart'"},
      {{"--daemon=yes"}, "--daemon takes no value"},
      // privileges and per-worker settings
      {{"--user", ""}, "--user: expected a user name or number"},
      {{"--user"}, "--user needs a value"},
      {{"--group", ""}, "--group: expected a group name or number"},
      {{"--worker-rlimit-nofile", "0"}, "--worker-rlimit-nofile: expected a whole number from 1 to"},
      {{"--worker-rlimit-nofile", "unlimited"}, "--worker-rlimit-nofile: expected a whole number"},
      {{"--worker-rlimit-nofile", "2000000000"}, "got '2000000000'"},
      {{"--worker-rlimit-core", "-1"}, "--worker-rlimit-core: expected a whole number from 0 to"},
      {{"--worker-rlimit-core", "lots"}, "or 'unlimited', got 'lots'"},
      {{"--worker-rlimit-core", "18446744073709551616"}, "--worker-rlimit-core: expected"},
      {{"--worker-cpu-affinity", ""}, "--worker-cpu-affinity: expected 'auto' or a CPU list"},
      {{"--worker-cpu-affinity", "0,,1"}, "got '0,,1'"},
      {{"--worker-cpu-affinity", "1024"}, "CPUs are numbered 0 to 1023"},
      {{"--worker-cpu-affinity", "3-1"}, "3-1 ends before it starts"},
      {{"--worker-cpu-affinity", "0x1"}, "--worker-cpu-affinity: expected 'auto'"},
      {{"--worker-cpu-affinity", "Auto"}, "--worker-cpu-affinity: expected 'auto'"},
      {{"--worker-priority", "20"}, "--worker-priority: expected a whole number from -20 to 19"},
      {{"--worker-priority", "-21"}, "got '-21'"},
      {{"--worker-directory", "srv"}, "--worker-directory: expected an absolute path, got 'srv'"},
      {{"--worker-directory", ""}, "--worker-directory: expected an absolute path"},
      {{"--reload-batch", "-1"}, "--reload-batch: expected a whole number from 0 to 1024, got '-1'"},
      {{"--reload-batch", "1025"}, "--reload-batch: expected a whole number"},
      {{"--reload-batch"}, "--reload-batch needs a value"},
      {{"--sigterm", "drain"}, "--sigterm: unknown mode 'drain' (expected auto, stop or quit)"},
      {{"--subreaper=1"}, "--subreaper takes no value"},
  }));
  options opt;
  std::vector<const char*> argv{"demo"};
  argv.insert(argv.end(), r.args.begin(), r.args.end());
  argv.push_back(nullptr);
  command_line cli(opt);
  std::optional<int> code;
  std::string err;
  {
    capture c(STDERR_FILENO);
    code = cli.parse(static_cast<int>(argv.size() - 1), argv.data());
    err = c.text();
  }
  INFO(err);
  CHECK(code == 2);
  CHECK(err.find(r.needle) != std::string::npos);
  CHECK(err.starts_with("demo: "));
  CHECK(err.find("Try 'demo --help'.") != std::string::npos);
}

TEST_CASE("command_line: --help and -h print usage and return 0", "[options]") {
  auto flag = GENERATE("--help", "-h");
  options opt;
  opt.workers = 4;
  auto p = parse(opt, {"--workers", "2", flag, "--bogus"});
  CHECK(p.code == 0);  // stops at --help, before the bad flag
  CHECK(p.err.empty());
  CHECK(p.out.starts_with("usage: demo [options]"));
  for (const char* f : {"--listen ADDRESS", "--workers N", "--pid-file PATH", "--log-file PATH",
                        "--log-level LEVEL", "--shutdown-timeout MS", "--terminate-timeout MS",
                        "--daemon", "-s COMMAND", "-h, --help"})
    CHECK(p.out.find(f) != std::string::npos);
}

// The line of `text` that starts with "  " + `flag` (a help line), or "".
std::string help_line(const std::string& text, const std::string& flag) {
  auto at = text.find("\n  " + flag + " ");
  if (at == std::string::npos) return "";
  auto end = text.find('\n', at + 1);
  return text.substr(at + 1, end - at - 1);
}

TEST_CASE("command_line: --help shows the program's own defaults, not the library's",
          "[options]") {
  options opt;
  opt.workers = 2;
  opt.listen = {"127.0.0.1:8080", "[::1]:8080"};
  opt.pid_file = "/run/demo.pid";
  opt.log_file = "/var/log/demo.log";
  opt.level = log_level::notice;
  opt.shutdown_timeout = 2500ms;
  opt.terminate_timeout = 750ms;
  opt.ready_timeout = 3s;
  opt.upgrade_timeout = 45s;
  opt.reuseport = true;
  auto p = parse(opt, {"--workers", "7", "--help"});  // what argv says before --help is not a default
  CHECK(p.code == 0);
  INFO(p.out);
  CHECK(help_line(p.out, "--workers N").ends_with("(default: 2)"));
  CHECK(p.out.find("CPU count") == std::string::npos);
  CHECK(help_line(p.out, "--listen ADDRESS").ends_with("(default: 127.0.0.1:8080 [::1]:8080)"));
  CHECK(help_line(p.out, "--pid-file PATH").ends_with("(default: /run/demo.pid)"));
  CHECK(help_line(p.out, "--control PATH").ends_with("(default: /run/demo.pid.sock)"));
  CHECK(help_line(p.out, "--log-file PATH").ends_with("(default: /var/log/demo.log)"));
  CHECK(help_line(p.out, "--log-level LEVEL").ends_with("(default: notice)"));
  CHECK(help_line(p.out, "--shutdown-timeout MS").ends_with("(default: 2500)"));
  CHECK(help_line(p.out, "--terminate-timeout MS").ends_with("(default: 750)"));
  CHECK(help_line(p.out, "--ready-timeout MS").ends_with("(default: 3000)"));
  CHECK(help_line(p.out, "--upgrade-timeout MS").ends_with("(default: 45000)"));
  CHECK(help_line(p.out, "--reuseport").ends_with("(default: on)"));
  CHECK(help_line(p.out, "--daemon").ends_with("(default: off)"));

  options bare;
  bare.workers = 3;
  auto b = parse(bare, {"--help"});
  INFO(b.out);
  CHECK(help_line(b.out, "--listen ADDRESS").ends_with("(default: none)"));
  CHECK(help_line(b.out, "--pid-file PATH").ends_with("(default: none)"));
  CHECK(help_line(b.out, "--log-file PATH").ends_with("(default: stderr)"));
  CHECK(help_line(b.out, "--workers N").ends_with("(default: 3)"));
}

TEST_CASE("command_line: --help lists every command -s accepts, from the parser's own table",
          "[options]") {
  options opt;
  auto p = parse(opt, {"--help"});
  INFO(p.out);
  auto section = p.out.find("Commands for -s");
  REQUIRE(section != std::string::npos);
  const std::string commands = p.out.substr(section);
  // Every command a signal carries, and the ones asked over the control socket.
  for (command c : {command::stop, command::quit, command::reload, command::reopen,
                    command::upgrade, command::drain_workers, command::add_worker,
                    command::remove_worker})
    CHECK(help_line(commands, std::string(to_string(c))) != "");
  CHECK(help_line(commands, "status") != "");
  // What the table lists, the parser takes; nothing else.
  for (const auto& c : control_commands) {
    options o;
    std::string name(c.name);
    auto r = parse(o, {"-s", name.c_str()});
    INFO(name << ": " << r.err);
    CHECK_FALSE(r.code);
    CHECK((c.asks ? o.query == name : o.signal == parse_command(name)));
    CHECK(help_line(commands, name).find(std::string(c.help)) != std::string::npos);
  }
  options bad;
  auto r = parse(bad, {"-s", "restart"});
  CHECK(r.code == 2);
  CHECK(r.err.find("(expected stop, quit, reload, reopen, upgrade, status, drain-workers, "
                   "add-worker or remove-worker)") != std::string::npos);
}

TEST_CASE("parse_number", "[options]") {
  CHECK(parse_number("n", "0", 0, 10) == 0);
  CHECK(parse_number("n", "10", 0, 10) == 10);
  CHECK(parse_number("n", "-3", -5, 10) == -3);
  CHECK_THROWS_AS(parse_number("n", "11", 0, 10), std::invalid_argument);
  CHECK_THROWS_AS(parse_number("n", "+1", 0, 10), std::invalid_argument);
  CHECK_THROWS_AS(parse_number("n", " 1", 0, 10), std::invalid_argument);
  CHECK_THROWS_WITH(parse_number("the count", "x", 0, 10),
                    "the count: expected a whole number from 0 to 10, got 'x'");
}

TEST_CASE("parse_endpoint accepts", "[options][endpoint]") {
  struct row {
    const char* text;
    const char* host;
    std::uint16_t port;
  };
  auto r = GENERATE(values<row>({
      {"127.0.0.1:8080", "127.0.0.1", 8080},
      {"0.0.0.0:0", "0.0.0.0", 0},
      {"[::1]:443", "::1", 443},
      {"[fe80::1%lo]:80", "fe80::1%lo", 80},
      {"[::]:65535", "::", 65535},
      {"*:80", "", 80},
      {":80", "", 80},
      {"localhost:80", "localhost", 80},
      {"example.org:8443", "example.org", 8443},
  }));
  INFO(r.text);
  auto spec = parse_endpoint(r.text);
  CHECK(spec.host == r.host);
  CHECK(spec.port == r.port);
}

TEST_CASE("parse_endpoint refuses - naming the address", "[options][endpoint]") {
  struct row {
    const char* text;
    const char* why;
  };
  auto r = GENERATE(values<row>({
      {"127.0.0.1", "expected HOST:PORT"},
      {"", "expected HOST:PORT"},
      {"localhost", "expected HOST:PORT"},
      {"127.0.0.1:", "expected a whole number"},
      {"127.0.0.1:70000", "expected a whole number from 0 to 65535, got '70000'"},
      {"127.0.0.1:-1", "expected a whole number"},
      {"127.0.0.1:http", "expected a whole number"},
      {"::1:80", "write IPv6 addresses as [HOST]:PORT"},
      {"::1", "write IPv6 addresses as [HOST]:PORT"},
      {"[::1]", "expected [HOST]:PORT"},
      {"[::1]80", "expected [HOST]:PORT"},
      {"[::1]:", "expected a whole number"},
      {"[::1:80", "missing ']'"},
  }));
  INFO(r.text);
  try {
    parse_endpoint(r.text);
    FAIL("accepted '" << r.text << "'");
  } catch (const std::invalid_argument& e) {
    std::string what = e.what();
    CHECK(what.find(fmt::format("'{}'", r.text)) != std::string::npos);
    CHECK(what.find(r.why) != std::string::npos);
  }
}

TEST_CASE("command_line: the watchdog and recycling flags", "[options][watchdog]") {
  options opt;
  CHECK(opt.heartbeat_timeout == 0ms);
  CHECK(opt.max_requests == 0);
  CHECK(opt.max_rss == 0);
  auto p = parse(opt, {"--heartbeat-timeout", "5000", "--heartbeat-grace", "2000",
                       "--max-requests", "1000", "--max-age=3600000", "--max-rss", "200",
                       "--rss-check-interval", "250", "--recycle-jitter", "25"});
  INFO(p.err);
  REQUIRE_FALSE(p.code);
  CHECK(opt.heartbeat_timeout == 5000ms);
  CHECK(opt.heartbeat_grace == 2000ms);
  CHECK(opt.max_requests == 1000);
  CHECK(opt.max_age == 3600000ms);
  CHECK(opt.max_rss == 200ull << 20);
  CHECK(opt.rss_check_interval == 250ms);
  CHECK(opt.recycle_jitter == 0.25);

  for (auto bad : {std::vector<const char*>{"--heartbeat-timeout", "29"},
                   std::vector<const char*>{"--heartbeat-timeout", "1s"},
                   std::vector<const char*>{"--max-rss", "-5"},
                   std::vector<const char*>{"--rss-check-interval", "0"},
                   std::vector<const char*>{"--recycle-jitter", "0.5"}}) {
    options o;
    command_line cli(o);
    std::vector<const char*> argv{"/usr/sbin/demo", bad[0], bad[1], nullptr};
    capture err(STDERR_FILENO);
    auto code = cli.parse(3, argv.data());
    std::string text = err.text();
    INFO(bad[0] << " " << bad[1] << ": " << text);
    CHECK(code == 2);
    CHECK(text.find(bad[0]) != std::string::npos);
  }
  // 0 turns the watchdog off again.
  options off;
  REQUIRE_FALSE(parse(off, {"--heartbeat-timeout", "0"}).code);
  CHECK(off.heartbeat_timeout == 0ms);
}

// --- Privileges and per-worker settings ---

TEST_CASE("command_line: the privilege and per-worker flags", "[options][worker-settings]") {
  options opt;
  auto p = parse(opt, {"--user", "nobody", "--group", "nogroup", "--worker-rlimit-nofile", "65536",
                       "--worker-rlimit-core", "unlimited", "--worker-cpu-affinity", "3,0-1",
                       "--worker-priority", "-5", "--worker-directory", "/srv/app"});
  INFO(p.err);
  REQUIRE_FALSE(p.code);
  CHECK(opt.user == "nobody");
  CHECK(opt.group == "nogroup");
  CHECK(opt.worker_rlimit_nofile == 65536u);
  CHECK(opt.worker_rlimit_core == rlimit_unlimited);
  CHECK_FALSE(opt.worker_cpu_affinity.automatic);
  CHECK(opt.worker_cpu_affinity.cpus == std::vector<unsigned>{3, 0, 1});
  CHECK(opt.worker_priority == -5);
  CHECK(opt.worker_directory == "/srv/app");

  options bytes;
  REQUIRE_FALSE(parse(bytes, {"--worker-rlimit-core=1048576", "--worker-cpu-affinity=auto"}).code);
  CHECK(bytes.worker_rlimit_core == 1048576u);
  CHECK(bytes.worker_cpu_affinity.automatic);
  CHECK(bytes.worker_cpu_affinity.enabled());

  options none;
  REQUIRE_FALSE(parse(none, {}).code);
  CHECK(none.user.empty());
  CHECK_FALSE(none.worker_rlimit_nofile);
  CHECK_FALSE(none.worker_rlimit_core);
  CHECK_FALSE(none.worker_cpu_affinity.enabled());
  CHECK_FALSE(none.worker_priority);
  CHECK(none.worker_directory.empty());
}

TEST_CASE("command_line: --help shows the privilege and per-worker defaults",
          "[options][worker-settings]") {
  options opt;
  opt.user = "www-data";
  opt.worker_rlimit_nofile = 8192;
  opt.worker_rlimit_core = rlimit_unlimited;
  opt.worker_cpu_affinity.automatic = true;
  opt.worker_priority = -5;
  opt.worker_directory = "/srv";
  auto p = parse(opt, {"--help"});
  INFO(p.out);
  CHECK(help_line(p.out, "--user NAME").ends_with("(default: www-data)"));
  CHECK(help_line(p.out, "--group NAME").ends_with("(default: the user's primary group)"));
  CHECK(help_line(p.out, "--worker-rlimit-nofile N").ends_with("(default: 8192)"));
  CHECK(help_line(p.out, "--worker-rlimit-core BYTES").ends_with("(default: unlimited)"));
  CHECK(help_line(p.out, "--worker-cpu-affinity CPUS").ends_with("(default: auto)"));
  CHECK(help_line(p.out, "--worker-priority N").ends_with("(default: -5)"));
  CHECK(help_line(p.out, "--worker-directory DIR").ends_with("(default: /srv)"));

  options bare;
  auto b = parse(bare, {"--help"});
  CHECK(help_line(b.out, "--user NAME").ends_with("(default: the master's)"));
  CHECK(help_line(b.out, "--worker-rlimit-nofile N").ends_with("(default: the master's)"));
  CHECK(help_line(b.out, "--worker-cpu-affinity CPUS").ends_with("(default: off)"));
}

TEST_CASE("command_line: rolling reloads, subreaper and what SIGTERM means", "[options]") {
  options opt;
  CHECK(opt.reload_batch == 0);
  CHECK_FALSE(opt.subreaper);
  CHECK(opt.sigterm == sigterm_mode::automatic);
  auto p = parse(opt, {"--reload-batch", "2", "--subreaper", "--sigterm", "quit"});
  INFO(p.err);
  REQUIRE_FALSE(p.code);
  CHECK(opt.reload_batch == 2);
  CHECK(opt.subreaper);
  CHECK(opt.sigterm == sigterm_mode::quit);
  for (auto [text, mode] : {std::pair{"auto", sigterm_mode::automatic},
                            std::pair{"stop", sigterm_mode::stop},
                            std::pair{"quit", sigterm_mode::quit}}) {
    options o;
    REQUIRE_FALSE(parse(o, {"--sigterm", text}).code);
    CHECK(o.sigterm == mode);
  }
  options shown;
  shown.reload_batch = 4;
  auto h = parse(shown, {"--help"});
  CHECK(help_line(h.out, "--reload-batch K").ends_with("(default: 4)"));
  CHECK(help_line(h.out, "--subreaper").ends_with("(default: off)"));
  CHECK(help_line(h.out, "--sigterm MODE").ends_with("(default: auto)"));
}
