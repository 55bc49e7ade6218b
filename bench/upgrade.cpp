// bench/upgrade: hot binary upgrades under wrk load, procmodel's automatic
// `http_server -s upgrade` side by side with nginx's USR2 dance (USR2, wait for
// the new master, WINCH the old one, QUIT it). Prints failed requests (socket
// errors and non-2xx, as wrk counts them) and how long each upgrade took.
//
//   bench_upgrade [--duration S] [--workers N] [--upgrades N] [--nginx PATH] [--wrk PATH]

#include "common.hpp"

#include <cstdio>
#include <string>
#include <vector>

#include <sys/prctl.h>

namespace {

using namespace bench;

struct outcome {
  std::optional<wrk_result> load;
  std::vector<double> took;  // ms per upgrade
  int failed_upgrades = 0;
};

// procmodel: `http_server -s upgrade` waits until the new master serves.
bool upgrade_procmodel(const settings& s, temp_dir& dir) {
  auto r = run(dir, s.http_server, {"-s", "upgrade", "--pid-file", dir.file("pm.pid")}, 60s);
  return r.code() == 0;
}

// nginx: USR2, wait for the new master's pid file, WINCH and QUIT the old one.
bool upgrade_nginx(temp_dir& dir) {
  std::string pid_path = dir.file("nginx.pid");
  pid_t old_master = std::stoi(read_file(pid_path));
  ::kill(old_master, SIGUSR2);
  bool up = wait_for(
      [&] {
        auto text = read_file(pid_path);
        return !text.empty() && std::stoi(text) != old_master && file_exists(pid_path + ".oldbin");
      },
      10s, 1ms);
  if (!up) return false;
  pid_t new_master = std::stoi(read_file(pid_path));
  // The new master's workers must be up before the old ones go.
  if (!wait_for([&] { return !children_of(new_master).empty(); }, 10s, 1ms)) return false;
  ::kill(old_master, SIGWINCH);
  // The old master's children are its workers and the new master.
  wait_for(
      [&] {
        for (pid_t c : children_of(old_master))
          if (c != new_master && is_running(c)) return false;
        return true;
      },
      10s, 1ms);
  ::kill(old_master, SIGQUIT);
  return wait_for([&] { return !is_running(old_master); }, 10s, 1ms);
}

outcome run_one(const settings& s, bool nginx, int upgrades) {
  outcome o;
  temp_dir dir("procmodel-bench");
  process master;
  std::uint16_t port = 0;
  bool up = nginx ? start_nginx(s, dir, master, port, true)
                  : start_procmodel(s, false, dir, master, port);
  if (!up) {
    std::fprintf(stderr, "%s did not start; see %s\n", nginx ? "nginx" : "http_server",
                 dir.path().c_str());
    std::exit(1);
  }
  process wrk = start_wrk(s, dir, port, false, "wrk.out");
  auto gap = std::chrono::milliseconds(s.duration_s * 1000 / (upgrades + 1));
  for (int i = 0; i < upgrades; ++i) {
    std::this_thread::sleep_for(gap);
    auto t0 = steady::now();
    bool ok = nginx ? upgrade_nginx(dir) : upgrade_procmodel(s, dir);
    if (ok) o.took.push_back(ms_since(t0));
    else ++o.failed_upgrades;
  }
  if (wrk.wait_exit(60s)) o.load = parse_wrk(read_file(dir.file("wrk.out")));
  // Stop whichever master is current, then everything this run left behind.
  std::string pid_path = dir.file(nginx ? "nginx.pid" : "pm.pid");
  if (file_exists(pid_path)) ::kill(std::stoi(read_file(pid_path)), SIGQUIT);
  std::this_thread::sleep_for(1s);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  int upgrades = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--duration") s.duration_s = std::stoi(argv[i + 1]);
    else if (a == "--workers") s.workers = static_cast<unsigned>(std::stoi(argv[i + 1]));
    else if (a == "--upgrades") upgrades = std::stoi(argv[i + 1]);
    else if (a == "--nginx") s.nginx = argv[i + 1];
    else if (a == "--wrk") s.wrk = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--duration S] [--workers N] [--upgrades N] [--nginx PATH] [--wrk PATH]\n", argv[0]);
      return 2;
    }
  }
  for (const auto& tool : {s.wrk, s.nginx})
    if (::access(tool.c_str(), X_OK) != 0) {
      std::fprintf(stderr, "bench_upgrade: %s is missing (apt-get install wrk nginx-light)\n", tool.c_str());
      return 2;
    }
  // Upgraded masters are reparented to us: we reap them and kill what is left.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  outcome pm = run_one(s, false, upgrades);
  outcome ng = run_one(s, true, upgrades);
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }

  std::printf("\n%d hot upgrades under wrk -t2 -c50 -d%ds (keep-alive), %u workers each\n\n",
              upgrades, s.duration_s, s.workers);
  std::printf("%-22s %10s %9s %8s %8s %8s %8s %8s %12s %9s\n", "server", "requests", "failed",
              "connect", "read", "write", "timeout", "non2xx", "upgrade, med", "upgraded");
  for (int i = 0; i < 2; ++i) {
    const outcome& o = i == 0 ? pm : ng;
    if (!o.load) continue;
    const auto& w = *o.load;
    std::printf("%-22s %10ld %9ld %8ld %8ld %8ld %8ld %8ld %9.1f ms %5zu/%d\n",
                i == 0 ? "procmodel -s upgrade" : "nginx USR2 dance", w.requests, w.failed(),
                w.connect, w.read, w.write, w.timeout, w.non2xx, median(o.took), o.took.size(),
                upgrades);
  }
  return 0;
}
