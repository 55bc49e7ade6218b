#pragma once

// What the benchmarks share: starting http_server and nginx the same way,
// running wrk and reading its verdict, and a few statistics.

#include "support/http_load.hpp"
#include "support/process.hpp"

#include <algorithm>
#include <functional>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#ifndef PROCMODEL_HTTP_SERVER
#error "PROCMODEL_HTTP_SERVER must name the http_server binary"
#endif

namespace bench {

using namespace pmtest;
using test_support::http_get;


struct settings {
  int duration_s = 10;
  unsigned workers = 2;
  int reloads = 30;
  std::string nginx = "/usr/sbin/nginx";
  std::string wrk = "/usr/bin/wrk";
  std::string http_server = PROCMODEL_HTTP_SERVER;
};


inline std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  ::close(fd);
  return ntohs(sa.sin_port);
}

inline bool start_procmodel(const settings& s, bool reuseport, temp_dir& dir, process& master,
                     std::uint16_t& port) {
  write_file(dir.file("http.conf"), "greeting = hello\n");
  std::vector<std::string> args = {"--listen",   "127.0.0.1:0", "--workers",
                                   std::to_string(s.workers), "--pid-file", dir.file("pm.pid"),
                                   "--log-file", dir.file("pm.log"), "--config",
                                   dir.file("http.conf"), "--log-level", "notice"};
  if (reuseport) args.push_back("--reuseport");
  spawn_options o;
  o.stdout_path = dir.file("stdio.log");
  master = process::spawn(s.http_server, args, o);
  if (!wait_for([&] { return parse_port(read_file(dir.file("pm.log"))) != 0; }, 10s)) return false;
  port = parse_port(read_file(dir.file("pm.log")));
  return wait_for([&] { return http_get(port).has_value(); }, 10s);
}

/// Starts nginx in the foreground (`master` is its master), or daemonized
/// through a shell when `daemon`: nginx honours USR2 only when its parent has
/// changed since it started, as it has for a daemon (`master` is then the
/// shell; the master's pid is in nginx.pid).
inline bool start_nginx(const settings& s, temp_dir& dir, process& master, std::uint16_t& port,
                        bool daemon = false) {
  port = free_port();
  std::string conf = "worker_processes " + std::to_string(s.workers) +
                     ";\n"
                     + std::string(daemon ? "daemon on;\n" : "daemon off;\n") +
                     "master_process on;\n"
                     "pid " + dir.file("nginx.pid") + ";\n"
                     "error_log " + dir.file("error.log") + " notice;\n"
                     "events { worker_connections 4096; }\n"
                     "http {\n  access_log off;\n"
                     "  client_body_temp_path " + dir.file("tmp") + ";\n"
                     "  server {\n    listen 127.0.0.1:" + std::to_string(port) + ";\n"
                     "    location / { return 200 \"hello from nginx\\n\"; }\n  }\n}\n";
  write_file(dir.file("nginx.conf"), conf);
  spawn_options o;
  o.stdout_path = dir.file("stdio.log");
  if (daemon)
    master = process::spawn("/bin/sh", {"-c", s.nginx + " -p " + dir.path() + " -c " +
                                                  dir.file("nginx.conf")}, o);
  else
    master = process::spawn(s.nginx, {"-p", dir.path(), "-c", dir.file("nginx.conf")}, o);
  return wait_for([&] { return http_get(port).has_value(); }, 10s);
}

struct wrk_result {
  long requests = 0, connect = 0, read = 0, write = 0, timeout = 0, non2xx = 0;
  double rps = 0;
  [[nodiscard]] long failed() const { return connect + read + write + timeout + non2xx; }
};

inline wrk_result parse_wrk(const std::string& out) {
  wrk_result r;
  std::smatch m;
  if (std::regex_search(out, m, std::regex(R"((\d+) requests in)"))) r.requests = std::stol(m[1]);
  if (std::regex_search(out, m, std::regex(R"(Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+))"))) {
    r.connect = std::stol(m[1]);
    r.read = std::stol(m[2]);
    r.write = std::stol(m[3]);
    r.timeout = std::stol(m[4]);
  }
  if (std::regex_search(out, m, std::regex(R"(Non-2xx or 3xx responses: (\d+))"))) r.non2xx = std::stol(m[1]);
  if (std::regex_search(out, m, std::regex(R"(Requests/sec:\s+([\d.]+))"))) r.rps = std::stod(m[1]);
  return r;
}

// As wait_for, but polling every 100 µs: the latencies measured are a few ms.
template <class Pred>
bool poll_until(Pred pred, milliseconds timeout) {
  auto deadline = steady::now() + timeout;
  while (steady::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return pred();
}

inline double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}


/// Starts wrk (2 threads, 50 connections) against `port` for `seconds`.
inline process start_wrk(const settings& s, const temp_dir& dir, std::uint16_t port, bool close,
                         const std::string& out) {
  std::vector<std::string> args = {"-t2", "-c50", "-d" + std::to_string(s.duration_s) + "s"};
  if (close) args.insert(args.end(), {"-H", "Connection: close"});
  args.push_back("http://127.0.0.1:" + std::to_string(port) + "/");
  spawn_options o;
  o.stdout_path = dir.file(out);
  return process::spawn(s.wrk, args, o);
}

}  // namespace bench
