// bench/reload: procmodel's http_server and nginx side by side, under the same
// wrk load, reloaded every 200 ms. Prints failed requests for each (socket
// errors and non-2xx, as wrk counts them) with keep-alive and with
// `Connection: close` clients, then idle reload latency (HUP until the new
// generation serves and the old one is gone) and respawn latency (SIGKILL of a
// worker until a new one serves). Figures, not assertions: run it, read it.
//
//   bench_reload [--duration S] [--workers N] [--reloads N] [--nginx PATH] [--wrk PATH]

#include "support/http_load.hpp"
#include "support/process.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#ifndef PROCMODEL_HTTP_SERVER
#error "PROCMODEL_HTTP_SERVER must name the http_server binary"
#endif

using namespace pmtest;
using test_support::http_get;

namespace {

struct settings {
  int duration_s = 10;
  unsigned workers = 2;
  int reloads = 30;
  std::string nginx = "/usr/sbin/nginx";
  std::string wrk = "/usr/bin/wrk";
  std::string http_server = PROCMODEL_HTTP_SERVER;
};

// A server under test: how to start it and how to find its master.
struct subject {
  std::string name;
  std::function<bool(temp_dir&, process&, std::uint16_t&)> start;
  std::string pid_file;  // set by start
};

std::uint16_t free_port() {
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

bool start_procmodel(const settings& s, bool reuseport, temp_dir& dir, process& master,
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

bool start_nginx(const settings& s, temp_dir& dir, process& master, std::uint16_t& port) {
  port = free_port();
  std::string conf = "worker_processes " + std::to_string(s.workers) +
                     ";\n"
                     "daemon off;\nmaster_process on;\n"
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
  master = process::spawn(s.nginx, {"-p", dir.path(), "-c", dir.file("nginx.conf")}, o);
  return wait_for([&] { return http_get(port).has_value(); }, 10s);
}

struct wrk_result {
  long requests = 0, connect = 0, read = 0, write = 0, timeout = 0, non2xx = 0;
  double rps = 0;
  [[nodiscard]] long failed() const { return connect + read + write + timeout + non2xx; }
};

wrk_result parse_wrk(const std::string& out) {
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

// wrk for the duration while the master gets a HUP every 200 ms.
std::optional<wrk_result> load_with_reloads(const settings& s, temp_dir& dir, process& master,
                                            std::uint16_t port, bool close, int& hups) {
  std::vector<std::string> args = {"-t2", "-c50", "-d" + std::to_string(s.duration_s) + "s"};
  if (close) args.insert(args.end(), {"-H", "Connection: close"});
  args.push_back("http://127.0.0.1:" + std::to_string(port) + "/");
  spawn_options o;
  std::string out = dir.file(close ? "wrk-close.out" : "wrk-ka.out");
  o.stdout_path = out;
  process wrk = process::spawn(s.wrk, args, o);
  hups = 0;
  auto t0 = steady::now();
  while (!wrk.exited() && ms_since(t0) < (s.duration_s + 20) * 1000.0) {
    std::this_thread::sleep_for(200ms);
    if (ms_since(t0) < s.duration_s * 1000.0 - 200 && master.signal(SIGHUP)) ++hups;
  }
  if (!wrk.wait_exit(30s)) return std::nullopt;
  return parse_wrk(read_file(out));
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

double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// HUP until every old worker is gone, the new count is up, and it serves.
std::vector<double> reload_latency(process& master, unsigned workers, std::uint16_t port, int n) {
  std::vector<double> out;
  for (int i = 0; i < n; ++i) {
    auto old = children_of(master.pid());
    auto t0 = steady::now();
    master.signal(SIGHUP);
    bool ok = poll_until(
        [&] {
          auto now = children_of(master.pid());
          std::size_t live = 0;
          for (pid_t c : now) {
            if (std::find(old.begin(), old.end(), c) != old.end() && is_running(c)) return false;
            if (is_running(c)) ++live;
          }
          return live == workers;
        },
        10s);
    if (!ok) continue;
    double ms = ms_since(t0);
    if (http_get(port)) out.push_back(ms);
    std::this_thread::sleep_for(50ms);
  }
  return out;
}

// SIGKILL one worker; until a new one is up and answers.
std::vector<double> respawn_latency(process& master, unsigned workers, std::uint16_t port, int n) {
  std::vector<double> out;
  for (int i = 0; i < n; ++i) {
    auto kids = children_of(master.pid());
    if (kids.empty()) break;
    pid_t victim = kids.front();
    auto t0 = steady::now();
    ::kill(victim, SIGKILL);
    bool ok = poll_until(
        [&] {
          std::size_t live = 0;
          for (pid_t c : children_of(master.pid()))
            if (c != victim && is_running(c)) ++live;
          return live == workers && !is_running(victim);
        },
        10s);
    if (ok && http_get(port)) out.push_back(ms_since(t0));
    std::this_thread::sleep_for(300ms);  // stay under the restart intensity
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--duration") s.duration_s = std::stoi(argv[i + 1]);
    else if (a == "--workers") s.workers = static_cast<unsigned>(std::stoi(argv[i + 1]));
    else if (a == "--reloads") s.reloads = std::stoi(argv[i + 1]);
    else if (a == "--nginx") s.nginx = argv[i + 1];
    else if (a == "--wrk") s.wrk = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--duration S] [--workers N] [--reloads N] [--nginx PATH] [--wrk PATH]\n", argv[0]);
      return 2;
    }
  }
  for (const auto& tool : {s.wrk, s.nginx})
    if (::access(tool.c_str(), X_OK) != 0) {
      std::fprintf(stderr, "bench_reload: %s is missing (apt-get install wrk nginx-light)\n", tool.c_str());
      return 2;
    }

  struct row {
    std::string name;
    std::optional<wrk_result> ka, close;
    int hups_ka = 0, hups_close = 0;
    std::vector<double> reload, respawn;
  };
  std::vector<row> rows;
  for (int which = 0; which < 3; ++which) {
    row r;
    r.name = which == 0 ? "procmodel http_server" : which == 1 ? "procmodel --reuseport" : "nginx";
    for (int mode = 0; mode < 3; ++mode) {
      temp_dir dir("procmodel-bench");
      process master;
      std::uint16_t port = 0;
      bool up = which == 2 ? start_nginx(s, dir, master, port)
                           : start_procmodel(s, which == 1, dir, master, port);
      if (!up) {
        std::fprintf(stderr, "%s did not start; see %s\n", r.name.c_str(), dir.path().c_str());
        return 1;
      }
      std::this_thread::sleep_for(200ms);
      if (mode == 0) r.ka = load_with_reloads(s, dir, master, port, false, r.hups_ka);
      if (mode == 1) r.close = load_with_reloads(s, dir, master, port, true, r.hups_close);
      if (mode == 2) {
        r.reload = reload_latency(master, s.workers, port, s.reloads);
        r.respawn = respawn_latency(master, s.workers, port, 10);
      }
      master.signal(SIGQUIT);
      master.wait_exit(15s);
    }
    rows.push_back(std::move(r));
    std::fprintf(stderr, "done: %s\n", rows.back().name.c_str());
  }

  std::printf("\nreloads every 200 ms under wrk -t2 -c50 -d%ds, %u workers each\n\n", s.duration_s,
              s.workers);
  std::printf("%-24s %-11s %10s %6s %9s %8s %8s %8s %8s %8s\n", "server", "clients", "requests",
              "HUPs", "failed", "connect", "read", "write", "timeout", "non2xx");
  for (const auto& r : rows)
    for (int mode = 0; mode < 2; ++mode) {
      const auto& w = mode == 0 ? r.ka : r.close;
      if (!w) continue;
      std::printf("%-24s %-11s %10ld %6d %9ld %8ld %8ld %8ld %8ld %8ld\n", r.name.c_str(),
                  mode == 0 ? "keep-alive" : "close", w->requests, mode == 0 ? r.hups_ka : r.hups_close,
                  w->failed(), w->connect, w->read, w->write, w->timeout, w->non2xx);
    }
  std::printf("\n%-24s %22s %22s\n", "server", "idle reload, median", "respawn, median");
  for (const auto& r : rows)
    std::printf("%-24s %16.2f ms (%2zu) %16.2f ms (%2zu)\n", r.name.c_str(), median(r.reload),
                r.reload.size(), median(r.respawn), r.respawn.size());
  const row& pm = rows[0];
  const row& ng = rows[2];
  std::printf("\nratios (nginx / procmodel):\n");
  if (pm.ka && ng.ka)
    std::printf("  failed requests, keep-alive: %ld vs %ld\n", ng.ka->failed(), pm.ka->failed());
  if (pm.close && ng.close)
    std::printf("  failed requests, close:      %ld vs %ld\n", ng.close->failed(), pm.close->failed());
  if (median(pm.reload) > 0)
    std::printf("  idle reload latency:         %.1fx\n", median(ng.reload) / median(pm.reload));
  return 0;
}
