// Listeners as nginx has them, end to end against the real echo_server:
// unix-domain stream sockets (`--listen unix:/PATH`): a load of echo clients
// on one through reloads, a hot upgrade and a graceful stop loses nothing; a
// stale socket file left by a killed master is replaced, a symbolic link or
// a file that is not a socket at the path is refused before anything serves.
// nginx's listen parameters are on the master's socket (read back with
// pidfd_getfd and getsockopt, and with ss). UDP listeners: no datagram sent
// while a worker served is lost across reloads, TTIN and TTOU, shared or one
// socket per slot. And sockets that outlive a
// crashed master: with systemd's file-descriptor store (emulated here, as
// systemd keeps it), connections made while the master and every worker
// were dead are answered by the restarted master, none refused.

#include "support/programs.hpp"
#include "support/catch.hpp"
#include "support/fd_flags.hpp"
#include "support/notify_socket.hpp"
#include "support/process.hpp"
#include "support/server.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

using namespace pmtest;
using test_support::fd_store;
using test_support::int_option;

namespace {

// A socket bound to `address` on loopback (port 0) and listening, or -1.
int listening_on(const char* address) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  ::inet_pton(AF_INET, address, &sa.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 16) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A connected TCP socket to 127.0.0.1:`port`, or -1.
int connect_tcp(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A connected unix stream socket, or -1.
int connect_unix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  path.copy(un.sun_path, sizeof un.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&un), sizeof un) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `line` and reads until it has come back whole; false on anything else.
bool round_trip(int fd, const std::string& line, milliseconds timeout = 5s) {
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size()))
    return false;
  std::string got;
  auto deadline = steady::now() + timeout;
  while (got.size() < line.size()) {
    pollfd p{fd, POLLIN, 0};
    auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now()).count();
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char buf[256];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got == line;
}

// Echo clients on a unix socket: each opens a connection, makes `per_connection`
// round trips, closes it and opens the next, until stop(). A failed connect or
// a round trip that does not come back whole is a failure. finish_connections()
// lets each client end the connection it is in (a graceful stop: no new ones).
class unix_echo_load {
 public:
  unix_echo_load(std::string path, int clients, int per_connection = 20)
      : path_(std::move(path)), per_connection_(per_connection) {
    for (int i = 0; i < clients; ++i) threads_.emplace_back([this, i] { run(i); });
  }
  ~unix_echo_load() { stop(); }

  void finish_connections() { no_new_ = true; }
  void stop() {
    no_new_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  long ok() const { return ok_; }
  long failed() const { return failed_; }
  long connections() const { return connections_; }
  std::string first_failure() const {
    std::lock_guard lock(m_);
    return first_failure_;
  }

 private:
  void fail(std::string why) {
    ++failed_;
    std::lock_guard lock(m_);
    if (first_failure_.empty()) first_failure_ = std::move(why);
  }
  void run(int id) {
    while (!no_new_) {
      int fd = connect_unix(path_);
      if (fd < 0) {
        fail(std::string("connect: ") + std::strerror(errno));
        std::this_thread::sleep_for(10ms);
        continue;
      }
      ++connections_;
      for (int k = 0; k < per_connection_; ++k) {
        std::string line = "client " + std::to_string(id) + " line " + std::to_string(k) + "\n";
        if (!round_trip(fd, line)) {
          fail("round trip " + std::to_string(k) + " of a connection");
          break;
        }
        ++ok_;
      }
      ::close(fd);
    }
  }

  std::string path_;
  int per_connection_;
  std::atomic<bool> no_new_{false};
  std::atomic<long> ok_{0}, failed_{0}, connections_{0};
  mutable std::mutex m_;
  std::string first_failure_;
  std::vector<std::thread> threads_;
};

bool is_socket_file(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// echo_server with a TCP listener (for the start probe) and `unix_address`.
server_config unix_config(const std::string& unix_address, std::vector<std::string> more = {}) {
  server_config c;
  c.workers = 2;
  c.extra = {"--listen", unix_address, "--shutdown-timeout", "8000"};
  c.extra.insert(c.extra.end(), more.begin(), more.end());
  return c;
}

// The ok / failed counts keep growing, for `timeout` at most.
bool serves_on(const unix_echo_load& load, long more, milliseconds timeout = 10s) {
  long before = load.ok();
  return wait_for([&] { return load.ok() >= before + more; }, timeout);
}

// "ok: new master N serves; old master M quits": N.
pid_t upgraded_to(const std::string& out) {
  static const std::regex re(R"(ok: new master (\d+) serves)");
  std::smatch m;
  return std::regex_search(out, m, re) ? static_cast<pid_t>(std::stol(m[1])) : 0;
}

// A descriptor of `pid` taken into this process (pidfd_getfd: we are its
// parent, or root).
int steal_fd(pid_t pid, int fd) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return -1;
  int out = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0));
  ::close(pidfd);
  return out;
}

// UDP flows against `port`: each of `flows` sockets sends a numbered datagram
// every `every` and a thread per flow collects the echoes, until stop().
class udp_flows {
 public:
  udp_flows(std::uint16_t port, int flows, milliseconds every) {
    for (int i = 0; i < flows; ++i) {
      auto f = std::make_unique<flow>();
      f->fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(port);
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::connect(f->fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
      flows_.push_back(std::move(f));
    }
    for (auto& f : flows_) {
      flow* fp = f.get();
      fp->receiver = std::thread([this, fp] { receive(*fp); });
      fp->sender = std::thread([this, fp, every] {
        for (long seq = 0; !stop_sending_; ++seq) {
          std::string d = std::to_string(seq);
          if (::send(fp->fd, d.data(), d.size(), 0) == static_cast<ssize_t>(d.size())) ++fp->sent;
          std::this_thread::sleep_for(every);
        }
      });
    }
  }
  ~udp_flows() { stop(0ms); }

  /// Stops sending, waits `grace` for the last echoes, then stops receiving.
  void stop(milliseconds grace) {
    stop_sending_ = true;
    for (auto& f : flows_)
      if (f->sender.joinable()) f->sender.join();
    std::this_thread::sleep_for(grace);
    stop_receiving_ = true;
    for (auto& f : flows_) {
      if (f->receiver.joinable()) f->receiver.join();
      if (f->fd >= 0) ::close(std::exchange(f->fd, -1));
    }
  }
  long sent() const {
    long n = 0;
    for (auto& f : flows_) n += f->sent;
    return n;
  }
  long echoed() const {
    long n = 0;
    for (auto& f : flows_) n += f->echoed;
    return n;
  }

 private:
  struct flow {
    int fd = -1;
    std::atomic<long> sent{0}, echoed{0};
    std::vector<bool> seen;
    std::thread sender, receiver;
  };
  void receive(flow& f) {
    while (!stop_receiving_) {
      pollfd p{f.fd, POLLIN, 0};
      if (::poll(&p, 1, 20) != 1) continue;
      char buf[64];
      ssize_t n = ::recv(f.fd, buf, sizeof buf - 1, 0);
      if (n <= 0) continue;
      std::size_t seq = std::stoul(std::string(buf, static_cast<std::size_t>(n)));
      if (seq >= f.seen.size()) f.seen.resize(seq + 1);
      if (!f.seen[seq]) {
        f.seen[seq] = true;
        ++f.echoed;
      }
    }
  }
  std::vector<std::unique_ptr<flow>> flows_;
  std::atomic<bool> stop_sending_{false}, stop_receiving_{false};
};

// The kernel's count of UDP datagrams dropped on a full receive buffer.
long udp_rcvbuf_errors() {
  std::istringstream in(read_file("/proc/net/snmp"));
  std::string header, values;
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("Udp:")) (header.empty() ? header : values) = line;
  std::istringstream h(header), v(values);
  for (std::string name, value; h >> name && v >> value;)
    if (name == "RcvbufErrors") return std::stol(value);
  return 0;
}

// The lines telling that generation `gen` serves.
bool generation_serves(const server& srv, int gen) {
  return srv.log().find("generation " + std::to_string(gen)) != std::string::npos;
}

// QUIT to a master the test started: it drains and exits with 0.
void quit_and_expect_exit_0(process& master) {
  master.signal(SIGQUIT);
  auto st = master.wait_exit(15s);
  REQUIRE(st);
  CHECK(exit_code_of(*st) == 0);
}

}  // namespace

PM_TEST_CASE("a unix socket serves through reloads, a hot upgrade and QUIT with no failed request",
             "[unix][reload][upgrade][drain]") {
  subreaper_scope reaper;
  server srv(echo_server, "procmodel-unix");
  const std::string path = srv.dir().file("echo.sock");
  PM_REQUIRE(srv, srv.start(unix_config("unix:" + path + " mode=0666")));
  PM_REQUIRE(srv, is_socket_file(path));
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0666);
  PM_CHECK(srv, srv.log().find("listening on unix:" + path) != std::string::npos);

  unix_echo_load load(path, 8);
  PM_REQUIRE(srv, serves_on(load, 500));

  // Reloads: a new generation takes the same socket; the old one drains.
  for (int i = 0; i < 3; ++i) {
    auto gen_line = "generation " + std::to_string(i + 2);
    srv.master().signal(SIGHUP);
    PM_REQUIRE(srv, wait_for([&] { return srv.log().find(gen_line) != std::string::npos; }, 10s));
    PM_REQUIRE(srv, serves_on(load, 300));
  }
  srv.master().record_descendants();

  // A hot upgrade: the new master takes the socket over, the file stays.
  auto r = run(srv.dir(), echo_server, {"-s", "upgrade", "--pid-file", srv.pid_path()}, 30s);
  INFO(r.out << r.err << srv.describe());
  REQUIRE(r.code() == 0);
  pid_t next = upgraded_to(r.out);
  REQUIRE(next > 0);
  srv.master().record(next);
  for (pid_t d : descendants_of(next)) srv.master().record(d);
  auto old_status = srv.master().wait_exit(15s);  // the old master quits after handing over
  REQUIRE(old_status);
  CHECK(exit_code_of(*old_status) == 0);
  CHECK(is_socket_file(path));  // not removed by the old master
  PM_REQUIRE(srv, serves_on(load, 300));
  CHECK(load.failed() == 0);

  // QUIT to the new master: clients end the connections they are in; the
  // socket file goes as the stop begins (new clients are refused at once).
  load.finish_connections();
  for (pid_t d : descendants_of(next)) srv.master().record(d);
  REQUIRE(::kill(next, SIGQUIT) == 0);
  CHECK(wait_for([&] { return !is_socket_file(path); }, 5s));
  load.stop();
  CHECK(wait_for([&] { return !is_alive(next) || process_state(next) == 'Z'; }, 15s));
  int status = 0;
  REQUIRE(::waitpid(next, &status, 0) == next);  // reparented to us (subreaper)
  CHECK(exit_code_of(status) == 0);
  auto workers_left = [&] {
    int n = 0;
    for (pid_t p : srv.master().recorded())
      if (p != srv.master_pid() && p != next && is_running(p)) ++n;
    return n;
  };
  CHECK(wait_for([&] { return workers_left() == 0; }, 10s));
  WARN("unix socket echo load (8 clients, 20 round trips per connection) through 3 reloads, "
       "an upgrade and QUIT: "
       << load.ok() << " round trips on " << load.connections() << " connections, "
       << load.failed() << " failed");
  INFO("first failure: " << load.first_failure());
  CHECK(load.failed() == 0);
  CHECK(load.ok() > 1000);
  // Every worker of every generation drained and exited 0 (the log says how each ended).
  const std::string log = srv.log();
  CHECK(log.find("killed by signal") == std::string::npos);
  CHECK(std::regex_search(log, std::regex(R"(exited with code [1-9])")) == false);
}

PM_TEST_CASE("a fast stop removes the socket file too", "[unix][stop]") {
  server srv(echo_server, "procmodel-unix");
  const std::string path = srv.dir().file("echo.sock");
  PM_REQUIRE(srv, srv.start(unix_config("unix:" + path)));
  REQUIRE(is_socket_file(path));
  srv.master().signal(SIGTERM);
  auto st = srv.master().wait_exit(10s);
  REQUIRE(st);
  CHECK(exit_code_of(*st) == 0);
  CHECK(!is_socket_file(path));
  CHECK(srv.log().find("removed the socket file unix:" + path) != std::string::npos);
}

PM_TEST_CASE("a stale socket file left by a killed master is replaced; the new master serves",
             "[unix][bad_input]") {
  temp_dir dir("procmodel-unix");
  const std::string path = dir.file("echo.sock");
  {
    server first(echo_server, "procmodel-unix");
    PM_REQUIRE(first, first.start(unix_config("unix:" + path)));
    for (pid_t w : first.workers()) ::kill(w, SIGKILL);
    first.master().signal(SIGKILL);
    first.master().expect_signal(SIGKILL);
    REQUIRE(first.master().wait_exit(5s));
    for (pid_t p : first.master().recorded())
      if (p != first.master_pid()) expect_worker_end(p, "killed by signal 9");
  }
  REQUIRE(is_socket_file(path));  // left behind, nobody accepting
  CHECK(connect_unix(path) < 0);

  server srv(echo_server, "procmodel-unix");
  PM_REQUIRE(srv, srv.start(unix_config("unix:" + path)));
  int fd = connect_unix(path);
  REQUIRE(fd >= 0);
  CHECK(round_trip(fd, "again\n"));
  ::close(fd);
}

PM_TEST_CASE("a symbolic link or a file that is not a socket at the path is refused at start",
             "[unix][bad_input]") {
  temp_dir dir("procmodel-unix");
  const std::string path = dir.file("echo.sock");
  const std::string target = dir.file("precious");
  write_file(target, "keep me");
  struct row {
    bool symlink;
    const char* says;
  };
  auto r = GENERATE(values<row>({{true, "it is a symbolic link"},
                                 {false, "the file exists and is not a socket"}}));
  expect_log_line(r.says);  // the master's [error] line, as asked
  if (r.symlink)
    REQUIRE(::symlink(target.c_str(), path.c_str()) == 0);
  else
    write_file(path, "not a socket");
  auto res = run(dir, echo_server,
                 {"--listen", "unix:" + path, "--workers", "1", "--pid-file", dir.file("m.pid")},
                 10s);
  INFO(res.out << res.err);
  REQUIRE(res.status);
  CHECK(res.code() != 0);
  CHECK(res.err.find(r.says) != std::string::npos);
  CHECK(read_file(target) == "keep me");
  CHECK(!file_exists(dir.file("m.pid")));
  ::unlink(path.c_str());
}

PM_TEST_CASE("nginx's listen parameters are on the master's socket", "[listen][options]") {
  server srv(echo_server, "procmodel-listen");
  server_config c;
  c.workers = 1;
  // A second address, with parameters, beside the helper's 127.0.0.1:0.
  c.extra = {"--listen", "127.0.0.1:0 backlog=77 deferred fastopen=32 so_keepalive=50:7:5 rcvbuf=96k"};
  PM_REQUIRE(srv, srv.start(c));
  const auto ports = parse_ports(srv.log());
  PM_REQUIRE(srv, ports.size() == 2);
  const std::uint16_t port = ports[1];
  // The listening socket: the descriptor of the master bound to our port.
  int found = -1;
  for (const auto& e : open_fds(srv.master_pid())) {
    int fd = steal_fd(srv.master_pid(), e.fd);
    if (fd < 0) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (int_option(fd, SOL_SOCKET, SO_ACCEPTCONN) == 1 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 &&
        ss.ss_family == AF_INET &&
        ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port) == port && found < 0) {
      found = fd;
      continue;
    }
    ::close(fd);
  }
  PM_REQUIRE(srv, found >= 0);
  CHECK(int_option(found, IPPROTO_TCP, TCP_DEFER_ACCEPT) > 0);
  CHECK(int_option(found, IPPROTO_TCP, TCP_FASTOPEN) == 32);
  CHECK(int_option(found, SOL_SOCKET, SO_KEEPALIVE) == 1);
  CHECK(int_option(found, IPPROTO_TCP, TCP_KEEPIDLE) == 50);
  CHECK(int_option(found, IPPROTO_TCP, TCP_KEEPINTVL) == 7);
  CHECK(int_option(found, IPPROTO_TCP, TCP_KEEPCNT) == 5);
  CHECK(int_option(found, SOL_SOCKET, SO_RCVBUF) == 2 * 96 * 1024);
  ::close(found);
  // ss shows a listening socket's backlog as its Send-Q.
  auto ss = run(srv.dir(), "/usr/bin/ss", {"-ltnH", "sport = :" + std::to_string(port)}, 10s);
  if (ss.status && ss.code() == 0) {
    INFO(ss.out);
    CHECK(std::regex_search(ss.out, std::regex(R"(LISTEN\s+\d+\s+77\s)")));
  } else {
    WARN("ss(8) is not available here; the backlog is not checked");
  }
  // A client is served through the deferred socket (it sends first).
  CHECK(echo_once(port));
}

PM_TEST_CASE("http_server takes listen addresses and their parameters from its config file",
             "[listen][options][http]") {
  temp_dir dir("procmodel-listen");
  const std::string conf = dir.file("http.conf");
  write_file(conf, "greeting = from the file\nlisten = 127.0.0.1:0 backlog=33 deferred\n");
  spawn_options o;
  o.stdout_path = dir.file("m.log");
  process m = process::spawn(http_server, {"--config", conf, "--workers", "1", "--log-level", "debug"}, o);
  m.stop_at_teardown(SIGQUIT, 20s);
  auto log = [&] { return read_file(dir.file("m.log")); };
  REQUIRE(wait_for([&] { return parse_port(log()) != 0 || m.exited(); }, 10s));
  const std::uint16_t port = parse_port(log());
  INFO(log());
  REQUIRE(port != 0);
  CHECK(parse_ports(log()).size() == 1);  // the file's address instead of the default
  auto body = wait_for([&] { return http_get(port).has_value(); }, 10s) ? http_get(port) : std::nullopt;
  REQUIRE(body);
  CHECK(body->find("from the file") != std::string::npos);
  auto ss = run(dir, "/usr/bin/ss", {"-ltnH", "sport = :" + std::to_string(port)}, 10s);
  if (ss.status && ss.code() == 0) {
    INFO(ss.out);
    CHECK(std::regex_search(ss.out, std::regex(R"(LISTEN\s+\d+\s+33\s)")));
  }
  // A reload that changes the address keeps the socket, and says so.
  write_file(conf, "greeting = again\nlisten = 127.0.0.1:1 backlog=33\n");
  m.signal(SIGHUP);
  CHECK(wait_for([&] { return log().find("listen addresses change only with a restart") != std::string::npos; }, 10s));
  CHECK(wait_for([&] {
    auto b = http_get(port);
    return b && b->find("again") != std::string::npos;
  }, 10s));
  quit_and_expect_exit_0(m);
}

PM_TEST_CASE("a listen address that does not parse is a usage error, before anything starts",
             "[listen][bad_input]") {
  temp_dir dir("procmodel-listen");
  auto r = GENERATE(as<std::string>{}, "127.0.0.1:0 backlog=lots", "unix:relative.sock",
                    "127.0.0.1:0 mode=0600", "127.0.0.1:0 bogus");
  auto res = run(dir, echo_server, {"--listen", r, "--pid-file", dir.file("m.pid")}, 10s);
  INFO(res.out << res.err);
  REQUIRE(res.status);
  CHECK(res.code() == 2);
  CHECK(res.err.find("invalid listen address '" + r + "'") != std::string::npos);
  CHECK(!file_exists(dir.file("m.pid")));
}

PM_TEST_CASE("sockets in systemd's fd store outlive a crash: connections made while no master ran are answered",
             "[listen][systemd][fdstore]") {
  temp_dir dir("procmodel-fdstore");
  fd_store store(dir.file("notify"));
  const std::string path = dir.file("echo.sock");
  std::uint16_t port = 0;
  {
    server srv(echo_server, "procmodel-fdstore");
    auto c = unix_config("unix:" + path, {"--fd-store"});
    c.env = {{"NOTIFY_SOCKET", store.path()}};
    PM_REQUIRE(srv, srv.start(c));
    port = srv.port();
    PM_REQUIRE(srv, wait_for([&] {
                 store.receive(50ms);
                 return store.size() == 2;
               }, 10s));
    PM_CHECK(srv, store.names() == "procmodel-listen-0-0:procmodel-listen-1-0");
    // The crash: the master and every worker are killed at once.
    auto workers = srv.workers();
    srv.master().signal(SIGKILL);
    for (pid_t w : workers) ::kill(w, SIGKILL);
    srv.master().expect_signal(SIGKILL);
    REQUIRE(srv.master().wait_exit(5s));
    for (pid_t w : workers) expect_worker_end(w, "killed by signal 9");
    CHECK(wait_for([&] {
      for (pid_t w : workers)
        if (is_running(w)) return false;
      return true;
    }, 5s));
  }
  // No master, no worker: the kernel still queues connections on the
  // sockets the store holds. Clients connect and speak first.
  std::vector<int> tcp, local;
  for (int i = 0; i < 8; ++i) {
    int t = connect_tcp(port);
    REQUIRE(t >= 0);  // not refused
    tcp.push_back(t);
    int u = connect_unix(path);
    REQUIRE(u >= 0);  // not refused either: the socket file stayed
    local.push_back(u);
  }
  for (int fd : tcp) REQUIRE(::send(fd, "queued\n", 7, MSG_NOSIGNAL) == 7);
  for (int fd : local) REQUIRE(::send(fd, "queued\n", 7, MSG_NOSIGNAL) == 7);

  // systemd restarts the service, handing the stored sockets over.
  spawn_options o;
  o.stdout_path = dir.file("restarted.log");
  o.pass_fds = store.fds();
  o.listen_pid_self = true;
  o.env = {{"LISTEN_FDS", std::to_string(store.size())},
           {"LISTEN_FDNAMES", store.names()},
           {"NOTIFY_SOCKET", store.path()}};
  process restarted = process::spawn(
      echo_server,
      {"--listen", "127.0.0.1:0", "--listen", "unix:" + path, "--workers", "2", "--fd-store",
       "--pid-file", dir.file("m.pid"), "--log-level", "debug"},
      o);
  restarted.stop_at_teardown(SIGQUIT, 20s);
  auto log = [&] { return read_file(dir.file("restarted.log")); };
  int answered = 0;
  auto echoed = [&](int fd) {
    std::string got;
    auto deadline = steady::now() + 10s;
    while (got.size() < 7 && steady::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) != 1) continue;
      char buf[64];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
    return got == "queued\n";
  };
  for (int fd : tcp) answered += echoed(fd);
  for (int fd : local) answered += echoed(fd);
  INFO(log());
  CHECK(answered == 16);
  CHECK(log().find("took over 2 listening socket(s) from systemd's file-descriptor store") !=
        std::string::npos);
  // The same sockets (no bind: the port is the old one), and still in the store.
  CHECK(parse_port(log()) == port);
  store.receive(100ms);
  CHECK(store.size() == 2);
  for (int fd : tcp) ::close(fd);
  for (int fd : local) ::close(fd);
  quit_and_expect_exit_0(restarted);
}

PM_TEST_CASE("stored sockets that no longer fit the configuration leave the store; the master binds anew",
             "[listen][systemd][fdstore][bad_input]") {
  temp_dir dir("procmodel-fdstore");
  fd_store store(dir.file("notify"));
  // Stored for address #0, but bound elsewhere (127.0.0.2, not 127.0.0.1);
  // and stored for an address #3 that is no longer configured.
  int elsewhere = listening_on("127.0.0.2");
  int gone = listening_on("127.0.0.1");
  REQUIRE(elsewhere >= 0);
  REQUIRE(gone >= 0);
  spawn_options o;
  o.stdout_path = dir.file("m.log");
  o.pass_fds = {elsewhere, gone};
  o.listen_pid_self = true;
  o.env = {{"LISTEN_FDS", "2"},
           {"LISTEN_FDNAMES", "procmodel-listen-0-0:procmodel-listen-3-0"},
           {"NOTIFY_SOCKET", store.path()}};
  expect_log_line("dropped from the store");
  process m = process::spawn(
      echo_server, {"--listen", "127.0.0.1:0", "--workers", "1", "--fd-store", "--log-level", "debug"},
      o);
  ::close(elsewhere);
  ::close(gone);
  m.stop_at_teardown(SIGQUIT, 20s);
  auto log = [&] { return read_file(dir.file("m.log")); };
  REQUIRE(wait_for([&] { return parse_port(log()) != 0 || m.exited(); }, 10s));
  INFO(log());
  CHECK(count_of(log(), "dropped from the store") == 2);
  CHECK(log().find("procmodel-listen-0-0 (descriptor 3) is bound to 127.0.0.2:") != std::string::npos);
  CHECK(log().find("procmodel-listen-3-0 (descriptor 4) no listen address #3 is configured now") !=
        std::string::npos);
  CHECK(wait_for([&] { return echo_once(parse_port(log())); }, 10s));  // bound anew, serving
  // systemd was told to forget both, then given the new socket.
  CHECK(wait_for([&] {
    store.receive(50ms);
    return store.size() == 1;
  }, 5s));
  CHECK(store.removed() == std::vector<std::string>{"procmodel-listen-0-0", "procmodel-listen-3-0"});
  CHECK(store.names() == "procmodel-listen-0-0");
  quit_and_expect_exit_0(m);
}

PM_TEST_CASE("UDP: no datagram sent while a worker served is lost across reloads, TTIN and TTOU",
             "[listen][udp][reload]") {
  const bool reuseport = GENERATE(false, true);
  server srv(echo_server, "procmodel-udp");
  server_config c;
  c.workers = 2;
  // A receive buffer that rides out a worker starved of CPU for a while on a
  // busy machine (the loss under test is the design's, not the kernel's
  // dropping datagrams on a full buffer: RcvbufErrors).
  c.extra = {"--listen", "udp://127.0.0.1:0 rcvbuf=16m", "--shutdown-timeout", "4000"};
  if (reuseport) c.extra.push_back("--reuseport");
  PM_REQUIRE(srv, srv.start(c));
  const auto ports = parse_ports(srv.log());
  PM_REQUIRE(srv, ports.size() >= 2);
  const std::uint16_t port = ports.back();
  PM_CHECK(srv, srv.log().find("listening on udp://127.0.0.1:" + std::to_string(port)) !=
                    std::string::npos);

  const long rcvbuf_errors_before = udp_rcvbuf_errors();
  udp_flows load(port, 6, 2ms);
  PM_REQUIRE(srv, wait_for([&] { return load.echoed() > 300; }, 10s));
  for (int i = 0; i < 3; ++i) {
    srv.master().signal(SIGHUP);
    PM_REQUIRE(srv, wait_for([&] { return generation_serves(srv, i + 2); }, 10s));
    long before = load.echoed();
    PM_REQUIRE(srv, wait_for([&] { return load.echoed() > before + 300; }, 10s));
  }
  srv.master().signal(SIGTTIN);  // a third worker
  PM_REQUIRE(srv, wait_for([&] { return srv.workers().size() >= 3; }, 10s));
  std::this_thread::sleep_for(300ms);
  srv.master().signal(SIGTTOU);  // and away again: it drains what its socket holds
  PM_REQUIRE(srv, wait_for([&] { return count_of(srv.log(), "exited with code 0") >= 7; }, 15s));
  long before = load.echoed();
  PM_REQUIRE(srv, wait_for([&] { return load.echoed() > before + 300; }, 10s));
  load.stop(500ms);
  WARN("UDP echo, " << (reuseport ? "a socket per slot" : "one shared socket")
                    << ", 6 flows at 500 datagrams/s each, through 3 reloads, TTIN and TTOU: "
                    << load.sent() << " sent, " << load.echoed() << " echoed; the kernel dropped "
                    << udp_rcvbuf_errors() - rcvbuf_errors_before << " on full buffers");
  PM_CHECK(srv, load.sent() > 1000);
  PM_CHECK(srv, load.echoed() == load.sent());
}
