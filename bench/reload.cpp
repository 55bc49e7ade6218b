// bench/reload: procmodel's http_server and nginx side by side, under the same
// wrk load, reloaded every 200 ms. Prints failed requests for each (socket
// errors and non-2xx, as wrk counts them) with keep-alive and with
// `Connection: close` clients, then idle reload latency (HUP until the new
// generation serves and the old one is gone) and respawn latency (SIGKILL of a
// worker until a new one serves). Figures, not assertions: run it, read it.
//
//   bench_reload [--duration S] [--workers N] [--reloads N] [--nginx PATH] [--wrk PATH]

#include "common.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <optional>
#include <regex>
#include <string>
#include <vector>


namespace {

using namespace bench;

// wrk for the duration while the master gets a HUP every 200 ms.
std::optional<wrk_result> load_with_reloads(const settings& s, temp_dir& dir, process& master,
                                            std::uint16_t port, bool close, int& hups) {
  std::string out = close ? "wrk-close.out" : "wrk-ka.out";
  process wrk = start_wrk(s, dir, port, close, out);
  hups = 0;
  auto t0 = steady::now();
  while (!wrk.exited() && ms_since(t0) < (s.duration_s + 20) * 1000.0) {
    std::this_thread::sleep_for(200ms);
    if (ms_since(t0) < s.duration_s * 1000.0 - 200 && master.signal(SIGHUP)) ++hups;
  }
  if (!wrk.wait_exit(30s)) return std::nullopt;
  return parse_wrk(read_file(dir.file(out)));
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
