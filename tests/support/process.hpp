#pragma once

/// @file process.hpp
/// Helpers for integration tests that run real processes: spawn a program
/// (fork + execv, output to a file), an RAII guard that SIGKILLs it and every
/// descendant it has seen, /proc readers (children, state, CPU ticks, open
/// descriptors), polling with deadlines, temporary directories, and a small
/// blocking TCP client on plain POSIX sockets. No Asio here.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pmtest {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

/// Milliseconds elapsed since `t0`, as a double (for reports).
inline double ms_since(steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(steady::now() - t0).count();
}

/// Polls `pred` every `step` until it holds or `timeout` passes; the final
/// answer of `pred` (checked once more at the deadline).
template <class Pred>
bool wait_for(Pred&& pred, milliseconds timeout, milliseconds step = 10ms) {
  auto deadline = steady::now() + timeout;
  for (;;) {
    if (pred())
      return true;
    if (steady::now() >= deadline)
      return pred();
    std::this_thread::sleep_for(step);
  }
}

/// The whole content of a file; empty when it cannot be read.
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return {};
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// The text after "Name:" on its line of /proc/<pid>/status, tabs kept.
inline std::string status_field(pid_t pid, const std::string& name) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name + ":", 0) == 0) {
      auto v = line.substr(name.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      v.erase(v.find_last_not_of(" \t") + 1);
      return v;
    }
  return "?";
}

/// "SOFT HARD" of limit `name` ("Max open files") in /proc/<pid>/limits.
inline std::string limit_of(pid_t pid, const std::string& name) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/limits"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name + " ", 0) == 0) {
      std::istringstream values(line.substr(name.size()));
      std::string soft, hard;
      values >> soft >> hard;
      return soft + " " + hard;
    }
  return "?";
}

/// Field 19 of /proc/<pid>/stat: the nice value.
inline std::string nice_of(pid_t pid) {
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  if (close == std::string::npos)
    return "?";
  std::istringstream fields(stat.substr(close + 2));  // from field 3
  std::string f;
  for (int i = 3; i <= 19; ++i)
    fields >> f;
  return f;
}

/// "N\tN\tN\tN": the real, effective, saved and filesystem ids of a status line.
inline std::string four_ids(unsigned id) {
  auto s = std::to_string(id);
  return s + "\t" + s + "\t" + s + "\t" + s;
}

/// What /proc says a worker that dropped to `pw` must be: every uid and gid
/// its, no supplementary group, no capability (so setuid(0) fails: without
/// CAP_SETUID a process may only set the ids it already has).
inline std::string drop_problems(pid_t pid, const passwd& pw) {
  std::string out;
  auto expect = [&](const std::string& field, const std::string& want) {
    auto got = status_field(pid, field);
    if (got != want)
      out += " " + field + " '" + got + "' (want '" + want + "')";
  };
  expect("Uid", four_ids(pw.pw_uid));
  expect("Gid", four_ids(pw.pw_gid));
  expect("Groups", "");
  expect("CapPrm", "0000000000000000");
  expect("CapEff", "0000000000000000");
  return out.empty() ? "" : "worker " + std::to_string(pid) + ":" + out;
}

/// The uid of nobody, or a reason why the privilege tests cannot run here.
inline std::optional<passwd> nobody_if_root() {
  if (::geteuid() != 0) {
    WARN("SKIP: not root, so the master cannot switch users here");
    return std::nullopt;
  }
  const passwd* pw = ::getpwnam("nobody");
  if (!pw) {
    WARN("SKIP: no user 'nobody' here");
    return std::nullopt;
  }
  return *pw;
}

/// Writes `text` to `path`, replacing it.
inline void write_file(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out)
    throw std::runtime_error("cannot write " + path);
  out << text;
}

inline bool file_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

/// How many times `needle` occurs in `text`.
inline std::size_t count_of(std::string_view text, std::string_view needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string_view::npos;
       pos = text.find(needle, pos + needle.size()))
    ++n;
  return n;
}

// ---------------------------------------------------------------------------
// The teardown audit's registry (teardown.hpp checks it at the end of a test)

/// How a process a test started must end; the teardown audit checks it.
struct expected_end {
  enum class kind {
    code,     ///< exits with `value`
    signal,   ///< killed by signal `value`
    any_code, ///< exits (the test checks the code itself), never killed
    killed,   ///< the test leaves it running: the guard SIGKILLs it
  };
  kind what = kind::code;
  int value = 0;
};

/// One process a test started, as the audit sees it.
struct audited_process {
  pid_t pid = 0;
  std::string program;
  std::vector<std::string> logs;  ///< its stdout and stderr files
  expected_end expected;
  std::optional<int> status;        ///< its wait status once reaped
  bool killed_at_teardown = false;  ///< it was still running when its guard went away
  std::vector<pid_t> left_behind;   ///< descendants still running after it exited
};

/// What the test running now started, logged and named as expected. One per
/// PM_TEST_CASE (teardown.hpp); none outside.
struct audit_registry {
  std::vector<std::shared_ptr<audited_process>> processes;
  std::vector<std::string> logs;            ///< more log files (a --log-file)
  std::vector<std::string> dirs;            ///< temporary directories, removed after the audit
  std::vector<std::string> expected_lines;  ///< a log line containing one of these is expected
  std::vector<std::regex> expected_patterns;  ///< or matching one of these
};

inline audit_registry*& current_audit() {
  static audit_registry* current = nullptr;
  return current;
}

/// PROCMODEL_KEEP_LOGS=1: temporary directories (logs, pid files) stay.
inline bool keep_logs() {
  const char* v = std::getenv("PROCMODEL_KEEP_LOGS");
  return v && std::string_view(v) == "1";
}

/// Names a log line the running test expects: a line that contains `text`
/// is no teardown violation (an `[error]` line, a worker that exited with a
/// code other than 0 or was killed, a sanitizer report).
inline void expect_log_line(std::string text) {
  if (auto* a = current_audit())
    a->expected_lines.push_back(std::move(text));
}

/// Names the log lines matching the regular expression `pattern` as expected.
inline void expect_log_pattern(const std::string& pattern) {
  if (auto* a = current_audit())
    a->expected_patterns.emplace_back(pattern);
}

/// Names the master's line telling that worker `pid` ended as `how` ("killed
/// by signal 9", "exited with code 3") as expected.
inline void expect_worker_end(pid_t pid, const std::string& how) {
  expect_log_pattern("worker " + std::to_string(pid) + R"( \(slot \d+, generation \d+\) )" + how);
}

/// One more log file for the audit to read (a master's --log-file).
inline void audit_log_file(std::string path) {
  if (auto* a = current_audit())
    a->logs.push_back(std::move(path));
}

/// A directory from mkdtemp, removed with its content on destruction.
class temp_dir {
 public:
  explicit temp_dir(std::string_view prefix = "procmodel-it") {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base && *base ? base : "/tmp") + "/" + std::string(prefix) + ".XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data()))
      throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
    path_ = buf.data();
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    if (path_.empty())
      return;
    // The audit at the end of the test still reads the logs in here: it
    // removes the directory after that (or keeps it, PROCMODEL_KEEP_LOGS=1).
    if (auto* a = current_audit()) {
      a->dirs.push_back(path_);
      return;
    }
    if (keep_logs()) {
      std::fprintf(stderr, "procmodel: kept %s (PROCMODEL_KEEP_LOGS=1)\n", path_.c_str());
      return;
    }
    remove_tree(path_);
  }
  /// rm -r `path`.
  static void remove_tree(const std::string& path) {
    ::nftw(
        path.c_str(),
        [](const char* p, const struct stat*, int, struct FTW*) {
          ::remove(p);
          return 0;
        },
        16, FTW_DEPTH | FTW_PHYS);
  }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  /// `path()/name`.
  [[nodiscard]] std::string file(std::string_view name) const {
    return path_ + "/" + std::string(name);
  }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------
// /proc readers

/// The fields of /proc/<pid>/stat the tests use.
struct proc_stat {
  char state = '?';  ///< R, S, D, T, Z, ...
  pid_t ppid = 0;
  unsigned long long utime = 0;      ///< clock ticks in user mode
  unsigned long long stime = 0;      ///< clock ticks in kernel mode
  unsigned long long starttime = 0;  ///< clock ticks after boot: tells a reused pid apart
};

/// /proc/<pid>/stat, or nothing when the process is gone (fully reaped).
inline std::optional<proc_stat> read_stat(pid_t pid) {
  std::string text = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = text.rfind(')');  // the command name may hold spaces and parentheses
  if (text.empty() || close == std::string::npos)
    return std::nullopt;
  std::istringstream in(text.substr(close + 2));
  // Fields from 3 (state) on; man 5 proc numbers them from 1.
  std::vector<std::string> f;
  for (std::string s; in >> s;)
    f.push_back(s);
  if (f.size() < 20)
    return std::nullopt;
  proc_stat st;
  st.state = f[0].empty() ? '?' : f[0][0];
  st.ppid = static_cast<pid_t>(std::stol(f[1]));
  st.utime = std::stoull(f[11]);      // field 14
  st.stime = std::stoull(f[12]);      // field 15
  st.starttime = std::stoull(f[19]);  // field 22
  return st;
}

/// The state letter of a process ('Z' for a zombie), or 0 when it is gone.
inline char process_state(pid_t pid) {
  auto st = read_stat(pid);
  return st ? st->state : '\0';
}

/// Whether `pid` exists (kill(pid, 0) does not fail with ESRCH). A zombie exists.
inline bool is_alive(pid_t pid) {
  if (pid <= 0)
    return false;
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

/// Whether `pid` exists and is not a zombie.
inline bool is_running(pid_t pid) {
  char s = process_state(pid);
  return s != '\0' && s != 'Z' && s != 'X';
}

/// User + system CPU time of `pid` in clock ticks (sysconf(_SC_CLK_TCK) per second).
inline std::optional<unsigned long long> cpu_ticks(pid_t pid) {
  auto st = read_stat(pid);
  if (!st)
    return std::nullopt;
  return st->utime + st->stime;
}

/// Direct children of `pid` (zombies included), from
/// /proc/<pid>/task/*/children, or by scanning /proc/*/stat for the ppid.
inline std::vector<pid_t> children_of(pid_t pid) {
  std::set<pid_t> out;
  std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  bool have_children_files = false;
  if (DIR* d = ::opendir(task_dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9')
        continue;
      std::string path = task_dir + "/" + e->d_name + "/children";
      if (::access(path.c_str(), R_OK) != 0)
        continue;
      have_children_files = true;
      std::istringstream in(read_file(path));
      for (pid_t c; in >> c;)
        out.insert(c);
    }
    ::closedir(d);
  }
  if (!have_children_files) {
    if (DIR* d = ::opendir("/proc")) {
      while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
          continue;
        pid_t p = static_cast<pid_t>(std::atoi(e->d_name));
        if (auto st = read_stat(p); st && st->ppid == pid)
          out.insert(p);
      }
      ::closedir(d);
    }
  }
  return {out.begin(), out.end()};
}

/// Every descendant of `pid`, depth first.
inline std::vector<pid_t> descendants_of(pid_t pid) {
  std::vector<pid_t> out;
  for (pid_t c : children_of(pid)) {
    out.push_back(c);
    for (pid_t g : descendants_of(c))
      out.push_back(g);
  }
  return out;
}

/// One open descriptor of a process.
struct fd_entry {
  int fd = -1;
  std::string target;       ///< readlink of /proc/<pid>/fd/<fd>: "socket:[123]", "/tmp/x.log", ...
  unsigned long flags = 0;  ///< "flags:" of /proc/<pid>/fdinfo/<fd> (octal there)
  [[nodiscard]] bool cloexec() const noexcept { return (flags & 02000000UL) != 0; }
  [[nodiscard]] bool is_socket() const { return target.rfind("socket:", 0) == 0; }
  [[nodiscard]] bool is_path() const { return !target.empty() && target[0] == '/'; }
};

/// The open descriptors of `pid`, sorted by number.
inline std::vector<fd_entry> open_fds(pid_t pid) {
  std::vector<fd_entry> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (!d)
    return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    fd_entry fe;
    fe.fd = std::atoi(e->d_name);
    char buf[4096];
    ssize_t n = ::readlink((dir + "/" + e->d_name).c_str(), buf, sizeof buf - 1);
    if (n < 0)
      continue;  // closed meanwhile
    fe.target.assign(buf, static_cast<std::size_t>(n));
    std::istringstream info(read_file("/proc/" + std::to_string(pid) + "/fdinfo/" + e->d_name));
    for (std::string line; std::getline(info, line);)
      if (line.rfind("flags:", 0) == 0)
        fe.flags = std::stoul(line.substr(6), nullptr, 8);
    out.push_back(std::move(fe));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.fd < b.fd; });
  return out;
}

/// Number of open descriptors of `pid` (-1 when it is gone).
inline int count_open_fds(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (!d)
    return -1;
  int n = 0;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9')
      ++n;
  ::closedir(d);
  return n;
}

/// "fd 3 -> socket:[123] flags 02004002" lines, for failure messages.
inline std::string describe_fds(pid_t pid) {
  std::string out;
  for (const auto& f : open_fds(pid)) {
    char flags[32];
    std::snprintf(flags, sizeof flags, "%#lo", f.flags);
    out += "  fd " + std::to_string(f.fd) + " -> " + f.target + " flags " + flags + "\n";
  }
  return out;
}

/// "pid (state S)" and its descendants, for failure messages.
inline std::string describe_tree(pid_t pid, int depth = 0) {
  std::string out(static_cast<std::size_t>(depth) * 2, ' ');
  char s = process_state(pid);
  out += std::to_string(pid) + " (state " + (s ? std::string(1, s) : std::string("gone")) + ")\n";
  for (pid_t c : children_of(pid))
    out += describe_tree(c, depth + 1);
  return out;
}

/// The inode of the TCP socket listening on `port` (IPv4, from /proc/net/tcp),
/// as it appears in "socket:[INODE]"; empty when none listens there.
inline std::string listening_inode(std::uint16_t port) {
  std::istringstream in(read_file("/proc/net/tcp"));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, st, queues, timer, retr, uid, timeout, inode;
    if (!(f >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode))
      continue;
    auto colon = local.find(':');
    if (st != "0A" || colon == std::string::npos)
      continue;
    if (std::stoul(local.substr(colon + 1), nullptr, 16) == port)
      return inode;
  }
  return {};
}

/// The inodes of the IPv4 TCP sockets in LISTEN state bound to `port`, from
/// the kernel's sock_diag netlink interface (what ss(8) uses): unlike
/// /proc/net/tcp it is not slowed down by the thousands of TIME_WAIT
/// entries a load test leaves. Nothing when netlink is not available.
inline std::optional<std::set<std::string>> listening_inodes_netlink(std::uint16_t port) {
  int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0)
    return std::nullopt;
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.req.sdiag_family = AF_INET;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = 1U << 10;  // TCP_LISTEN
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, &msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) !=
      static_cast<ssize_t>(sizeof msg)) {
    ::close(fd);
    return std::nullopt;
  }
  timeval tv{2, 0};  // never hang a test on a silent kernel
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  constexpr auto align4 = [](std::size_t v) { return (v + 3) & ~std::size_t{3}; };
  const std::size_t header = align4(sizeof(nlmsghdr));
  std::set<std::string> out;
  std::vector<char> buf(65536);
  // The dump comes in as many datagrams as it takes, then NLMSG_DONE.
  enum class step { more, done, failed };
  auto parse = [&](std::size_t n) {
    for (std::size_t off = 0; off + sizeof(nlmsghdr) <= n;) {
      nlmsghdr h{};
      std::memcpy(&h, buf.data() + off, sizeof h);
      if (h.nlmsg_len < sizeof h || off + h.nlmsg_len > n || h.nlmsg_type == NLMSG_ERROR)
        return step::failed;
      if (h.nlmsg_type == NLMSG_DONE)
        return step::done;
      if (h.nlmsg_len >= header + sizeof(inet_diag_msg)) {
        inet_diag_msg d{};
        std::memcpy(&d, buf.data() + off + header, sizeof d);
        if (ntohs(d.id.idiag_sport) == port)
          out.insert(std::to_string(d.idiag_inode));
      }
      off += align4(h.nlmsg_len);
    }
    return step::more;
  };
  step st = step::more;
  while (st == step::more) {
    ssize_t got = ::recv(fd, buf.data(), buf.size(), 0);
    if (got < 0 && errno == EINTR)
      continue;
    st = got <= 0 ? step::failed : parse(static_cast<std::size_t>(got));
  }
  ::close(fd);
  if (st != step::done)
    return std::nullopt;
  return out;
}

/// The inodes of every TCP socket listening on `port` (IPv4): one per socket
/// of a SO_REUSEPORT group. From netlink, else from /proc/net/tcp.
inline std::set<std::string> listening_inodes(std::uint16_t port) {
  if (auto fast = listening_inodes_netlink(port))
    return *fast;
  std::set<std::string> out;
  std::istringstream in(read_file("/proc/net/tcp"));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, st, queues, timer, retr, uid, timeout, inode;
    if (!(f >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode))
      continue;
    auto colon = local.find(':');
    if (st == "0A" && colon != std::string::npos &&
        std::stoul(local.substr(colon + 1), nullptr, 16) == port)
      out.insert(inode);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Log parsing

/// The port of the first "listening on HOST:PORT" line (0 if there is none).
inline std::uint16_t parse_port(const std::string& log) {
  static const std::regex re(R"(listening on \S*:(\d+))");
  std::smatch m;
  if (!std::regex_search(log, m, re))
    return 0;
  return static_cast<std::uint16_t>(std::stoul(m[1].str()));
}

/// Every "listening on HOST:PORT" port, in order.
inline std::vector<std::uint16_t> parse_ports(const std::string& log) {
  static const std::regex re(R"(listening on \S*:(\d+))");
  std::vector<std::uint16_t> out;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
       ++it)
    out.push_back(static_cast<std::uint16_t>(std::stoul((*it)[1].str())));
  return out;
}

/// One "started worker PID in slot K (generation G)" line.
struct started_worker {
  pid_t pid = 0;
  unsigned slot = 0;
  std::uint64_t generation = 0;
};

/// Every "started worker ..." line, in order.
inline std::vector<started_worker> parse_started_workers(const std::string& log) {
  static const std::regex re(R"(started worker (\d+) in slot (\d+) \(generation (\d+)\))");
  std::vector<started_worker> out;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
       ++it)
    out.push_back({static_cast<pid_t>(std::stol((*it)[1].str())),
                   static_cast<unsigned>(std::stoul((*it)[2].str())), std::stoull((*it)[3].str())});
  return out;
}

/// The lines of `log` that contain `needle`.
inline std::vector<std::string> lines_with(const std::string& log, std::string_view needle) {
  std::vector<std::string> out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos)
      out.push_back(line);
  return out;
}

// ---------------------------------------------------------------------------
// Processes

/// How to start a program.
struct spawn_options {
  std::string stdout_path;  ///< appended to; "" keeps the test's stdout
  std::string stderr_path;  ///< appended to; "" means the same as stdout_path
  /// Variables added to (or replacing in) the environment.
  std::vector<std::pair<std::string, std::string>> env;
  /// The directory the program starts in ("" keeps the test's); a relative
  /// `program` is found from there.
  std::string cwd;
  /// A descriptor of the test's to hand to the program as descriptor 3 (the
  /// systemd socket activation layout); -1 for none.
  int fd3 = -1;
  /// Descriptors of the test's to hand over as 3, 4, 5, ... in this order
  /// (systemd's LISTEN_FDS layout, for more than one); not with fd3.
  std::vector<int> pass_fds;
  /// Sets LISTEN_PID to the program's own pid (socket activation: it is only
  /// known in the child, after the fork).
  bool listen_pid_self = false;
  /// More variables set to the program's own pid (WATCHDOG_PID, ...).
  std::vector<std::string> own_pid_env;
  /// Signals the program starts with ignored (SIG_IGN survives exec), as a
  /// careless parent (a shell script, a CI runner) may leave them.
  std::vector<int> ignored_signals;
  /// Signals the program starts with blocked (the mask survives exec).
  std::vector<int> blocked_signals;
  /// Descriptors among 0, 1, 2 the program starts without (closed before exec).
  std::vector<int> closed_stdio;
};

/// Exit code of a wait status; -signal when killed by a signal.
inline int exit_code_of(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return -WTERMSIG(status);
  return -1000;
}

inline std::string describe_status(int status) {
  if (WIFEXITED(status))
    return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

/// A spawned program. The RAII guard: on destruction, the process is
/// stopped (SIGSTOP, so it forks no more), then it and every descendant,
/// current or recorded earlier, get SIGKILL, and the process is reaped, and
/// so are its descendants (this process is child subreaper meanwhile, so
/// they are reparented here instead of to PID 1). Recorded pids are killed
/// only while their start time still matches, so a reused pid is never hit.
/// Movable, not copyable.
class process {
 public:
  process() = default;

  /// fork + execv(program, [program, args...]); stdio to the files named in `opt`,
  /// stdin from /dev/null, every other inherited descriptor closed.
  static process spawn(const std::string& program, const std::vector<std::string>& args,
                       const spawn_options& opt = {}) {
    std::vector<std::string> argv_s;
    argv_s.push_back(program);
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_s;
    std::set<std::string> replaced;
    for (const auto& [k, v] : opt.env) {
      env_s.push_back(k + "=" + v);
      replaced.insert(k);
    }
    // "NAME=" with room for the pid, filled in by the child (no allocation
    // after the fork).
    std::vector<std::string> own_pid = opt.own_pid_env;
    if (opt.listen_pid_self)
      own_pid.push_back("LISTEN_PID");
    for (auto& name : own_pid) {
      replaced.insert(name);
      name += '=';
      name.resize(name.size() + 24, '\0');
    }
    for (char** e = environ; e && *e; ++e) {
      std::string_view kv(*e);
      std::string key(kv.substr(0, kv.find('=')));
      if (!replaced.count(key))
        env_s.emplace_back(kv);
    }
    std::vector<char*> envp;
    for (auto& e : env_s)
      envp.push_back(e.data());
    for (auto& e : own_pid)
      envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string cwd = opt.cwd;
    const int fd3 = opt.fd3;
    const std::vector<int> pass = opt.pass_fds;
    if (pass.size() > 64 || (fd3 >= 0 && !pass.empty()))
      throw std::invalid_argument("spawn: at most 64 pass_fds, and not with fd3");
    const std::vector<int> ignored = opt.ignored_signals;
    const std::vector<int> closed_stdio = opt.closed_stdio;
    sigset_t blocked;
    sigemptyset(&blocked);
    for (int s : opt.blocked_signals)
      sigaddset(&blocked, s);
    std::string out_path = opt.stdout_path;
    std::string err_path = opt.stderr_path.empty() ? opt.stdout_path : opt.stderr_path;

    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0)
      throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      // No controlling terminal, as under a service manager: a master that
      // has one ignores WINCH (a resize), and tests run from a terminal too.
      ::setsid();
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      for (int s = 1; s < NSIG; ++s)
        if (s != SIGKILL && s != SIGSTOP)
          ::signal(s, SIG_DFL);
      int in = ::open("/dev/null", O_RDONLY);
      if (in >= 0)
        ::dup2(in, 0);
      if (!out_path.empty()) {
        int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (out < 0)
          ::_exit(126);
        ::dup2(out, 1);
        if (err_path == out_path)
          ::dup2(out, 2);
      }
      if (!err_path.empty() && err_path != out_path) {
        int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (err < 0)
          ::_exit(126);
        ::dup2(err, 2);
      }
      unsigned first_closed = 3;
      if (fd3 >= 0) {
        // dup2 leaves the copy inheritable; fd 3 itself only loses close-on-exec.
        if (fd3 == 3 ? ::fcntl(3, F_SETFD, 0) != 0 : ::dup2(fd3, 3) != 3)
          ::_exit(126);
        first_closed = 4;
      }
      if (!pass.empty()) {
        // Out of the way first: a source may sit where another one goes.
        int high[64];
        for (std::size_t i = 0; i < pass.size(); ++i)
          if ((high[i] = ::fcntl(pass[i], F_DUPFD, 512)) < 0)
            ::_exit(126);
        for (std::size_t i = 0; i < pass.size(); ++i)
          if (::dup2(high[i], static_cast<int>(3 + i)) < 0)
            ::_exit(126);
        first_closed = static_cast<unsigned>(3 + pass.size());
      }
      for (auto& e : own_pid) {
        // The digits of our pid after "NAME=", without allocating.
        char digits[16];
        int n = 0;
        for (long v = ::getpid(); v > 0 && n < 15; v /= 10)
          digits[n++] = static_cast<char>('0' + v % 10);
        char* at = e.data() + std::strlen(e.data());
        while (n > 0)
          *at++ = digits[--n];
        *at = '\0';
      }
      if (!cwd.empty() && ::chdir(cwd.c_str()) != 0)
        ::_exit(126);
      for (int s : ignored)
        ::signal(s, SIG_IGN);
      ::sigprocmask(SIG_SETMASK, &blocked, nullptr);
      // The program must start with only stdio (and fd3): the test's own
      // descriptors would otherwise show up in its fd audit.
      if (::syscall(SYS_close_range, first_closed, ~0U, 0U) != 0)
        for (int fd = static_cast<int>(first_closed); fd < 1024; ++fd)
          ::close(fd);
      for (int fd : closed_stdio)
        ::close(fd);
      ::execve(program.c_str(), argv.data(), envp.data());
      ::_exit(127);
    }
    process p;
    p.pid_ = pid;
    p.record(pid);
    if (auto* a = current_audit()) {
      p.audit_ = std::make_shared<audited_process>();
      p.audit_->pid = pid;
      p.audit_->program = program;
      for (const auto& path : {out_path, err_path})
        if (!path.empty() && std::find(p.audit_->logs.begin(), p.audit_->logs.end(), path) ==
                                 p.audit_->logs.end())
          p.audit_->logs.push_back(path);
      a->processes.push_back(p.audit_);
    }
    return p;
  }

  process(process&& o) noexcept
      : pid_(std::exchange(o.pid_, 0)),
        status_(std::exchange(o.status_, std::nullopt)),
        seen_(std::move(o.seen_)),
        audit_(std::move(o.audit_)),
        teardown_signal_(o.teardown_signal_),
        teardown_wait_(o.teardown_wait_) {}
  process& operator=(process&& o) noexcept {
    if (this != &o) {
      cleanup();
      pid_ = std::exchange(o.pid_, 0);
      status_ = std::exchange(o.status_, std::nullopt);
      seen_ = std::move(o.seen_);
      audit_ = std::move(o.audit_);
      teardown_signal_ = o.teardown_signal_;
      teardown_wait_ = o.teardown_wait_;
    }
    return *this;
  }

  /// The teardown audit's expectations (the default: exit code 0).
  void expect_exit(int code) { expect({expected_end::kind::code, code}); }
  void expect_signal(int signo) { expect({expected_end::kind::signal, signo}); }
  /// Exits, with a code the test checks itself; never killed.
  void expect_any_exit() { expect({expected_end::kind::any_code, 0}); }
  /// The test leaves it running on purpose; the guard's SIGKILL is its end.
  void expect_killed() { expect({expected_end::kind::killed, 0}); }

  /// A process still running when the guard goes away first gets `signo` and
  /// up to `wait` to exit by itself (a master: SIGQUIT, a graceful stop the
  /// audit then checks); only then SIGKILL.
  void stop_at_teardown(int signo, milliseconds wait) {
    teardown_signal_ = signo;
    teardown_wait_ = wait;
  }
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  ~process() { cleanup(); }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

  /// Records the current descendants so that cleanup kills them even after
  /// they were reparented (the master died). Call it whenever children change.
  void record_descendants() {
    if (pid_ <= 0 || status_)
      return;
    for (pid_t d : descendants_of(pid_))
      record(d);
  }

  /// Stops tracking descendants that left our session (a daemon and its
  /// workers): a command that daemonizes must leave its daemon running.
  void forget_daemons() {
    const pid_t ours = ::getsid(0);
    for (auto it = seen_.begin(); it != seen_.end();) {
      pid_t sid = ::getsid(it->first);
      it = (it->first != pid_ && sid > 0 && sid != ours) ? seen_.erase(it) : std::next(it);
    }
  }

  /// Records one pid (with its start time) to kill on cleanup.
  void record(pid_t pid) {
    if (auto st = read_stat(pid))
      seen_[pid] = st->starttime;
  }

  /// Every pid recorded so far (the process itself included).
  [[nodiscard]] std::vector<pid_t> recorded() const {
    std::vector<pid_t> out;
    for (const auto& [p, t] : seen_)
      out.push_back(p);
    return out;
  }

  /// Sends `signo`; false if the process is gone.
  bool signal(int signo) const { return pid_ > 0 && !status_ && ::kill(pid_, signo) == 0; }

  /// The wait status if it has exited (reaps it), without waiting.
  std::optional<int> try_wait() {
    if (status_ || pid_ <= 0)
      return status_;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_)
      set_status(st);
    return status_;
  }

  /// Waits up to `timeout` for the process to exit; its wait status, or nothing.
  std::optional<int> wait_exit(milliseconds timeout) {
    wait_for([&] { return try_wait().has_value(); }, timeout, 5ms);
    return status_;
  }

  [[nodiscard]] bool exited() { return try_wait().has_value(); }

  /// SIGKILLs and reaps now (what the destructor does).
  void kill_all() { cleanup(); }

 private:
  void cleanup() noexcept {
    if (pid_ <= 0)
      return;
    // While we kill the tree, its orphans come to us, not to PID 1 (which
    // in a container may never reap them): no zombie outlives the test.
    int was_subreaper = 0;
    ::prctl(PR_GET_CHILD_SUBREAPER, &was_subreaper, 0, 0, 0);
    if (!was_subreaper)
      ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    try {
      if (!try_wait() && teardown_signal_ != 0) {
        record_descendants();
        ::kill(pid_, teardown_signal_);
        wait_for(
            [&] {
              record_descendants();
              return try_wait().has_value();
            },
            teardown_wait_, 5ms);
      }
      if (audit_ && !try_wait())
        audit_->killed_at_teardown = true;
      if (audit_ && try_wait() && !audit_->killed_at_teardown) {
        // It exited by itself: whatever it started must be gone too (a
        // worker still draining gets a moment).
        auto still_running = [&] {
          std::vector<pid_t> out;
          for (const auto& [p, start] : seen_) {
            auto st = read_stat(p);
            if (p != pid_ && st && st->starttime == start && st->state != 'Z' &&
                st->state != 'X')
              out.push_back(p);
          }
          return out;
        };
        wait_for([&] { return still_running().empty(); }, 1s, 5ms);
        audit_->left_behind = still_running();
      }
      if (!try_wait()) {
        ::kill(pid_, SIGSTOP);  // no more forks while we collect its tree
        wait_for(
            [&] {
              char st = process_state(pid_);
              return st == 'T' || st == 'Z' || !st;
            },
            1s, 1ms);
        record_descendants();
      }
      for (const auto& [p, start] : seen_) {
        if (p == pid_)
          continue;
        auto st = read_stat(p);
        if (st && st->starttime == start)
          ::kill(p, SIGKILL);
      }
      if (!status_) {
        ::kill(pid_, SIGKILL);
        int st = 0;
        while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
        }
        set_status(st);
      }
      // Descendants reparented to us (we are a child subreaper) are ours to
      // reap; they got SIGKILL above, so this does not block for long.
      for (const auto& [p, start] : seen_) {
        if (p == pid_)
          continue;
        auto st = read_stat(p);
        if (!st || st->ppid != ::getpid() || st->starttime != start)
          continue;
        ::kill(p, SIGKILL);
        int ws = 0;
        while (::waitpid(p, &ws, 0) < 0 && errno == EINTR) {
        }
      }
    } catch (...) {
    }
    if (!was_subreaper)
      ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    pid_ = 0;
  }

  void set_status(int st) {
    status_ = st;
    if (audit_)
      audit_->status = st;
  }
  void expect(expected_end e) {
    if (audit_)
      audit_->expected = e;
  }

  pid_t pid_ = 0;
  std::optional<int> status_;
  std::map<pid_t, unsigned long long> seen_;  // pid -> start time
  std::shared_ptr<audited_process> audit_;    // nothing outside a PM_TEST_CASE
  int teardown_signal_ = 0;
  milliseconds teardown_wait_{0};
};

/// Makes this process the child subreaper while it lives: orphans among its
/// descendants (workers whose master died) are reparented here, not to
/// PID 1, which in a container may never reap them. reap() collects them.
class subreaper_scope {
 public:
  subreaper_scope() { ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }
  subreaper_scope(const subreaper_scope&) = delete;
  subreaper_scope& operator=(const subreaper_scope&) = delete;
  ~subreaper_scope() { ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); }

  /// SIGKILLs and reaps each of `pids` that is a child of ours now. Safe:
  /// a child's pid cannot be reused before we reap it.
  static void reap(const std::vector<pid_t>& pids) {
    for (pid_t p : pids) {
      auto st = read_stat(p);
      if (!st || st->ppid != ::getpid())
        continue;
      ::kill(p, SIGKILL);
      int status = 0;
      while (::waitpid(p, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
};

/// The wait status of `pid` once it exits as a child of ours (with a
/// subreaper_scope, orphans come here); nothing if it has not within `timeout`.
inline std::optional<int> reap_within(pid_t pid, milliseconds timeout) {
  std::optional<int> out;
  wait_for(
      [&] {
        int ws = 0;
        if (::waitpid(pid, &ws, WNOHANG) != pid) return false;
        out = ws;
        return true;
      },
      timeout, 5ms);
  return out;
}

/// Whether the programs under test run with a sanitizer runtime (the asan
/// and tsan test presets set these variables for every test).
inline bool sanitized() {
  return std::getenv("ASAN_OPTIONS") || std::getenv("UBSAN_OPTIONS") ||
         std::getenv("TSAN_OPTIONS");
}

/// Resident memory a sanitized process may gain without leaking: ASan keeps
/// freed memory in quarantine (up to 256 MB). Leaks there are LeakSanitizer's
/// to find, at the process's exit; 0 in the plain build.
inline long sanitizer_rss_allowance_kib() { return sanitized() ? 32 * 1024 : 0; }

/// Whether a test that takes every descriptor from a process can run: a
/// sanitizer runtime needs descriptors of its own (UBSan's vptr check opens
/// a pipe to probe memory), so a process starved of all of them is stopped
/// by the sanitizer, not by the code under test. Says why when it cannot.
inline bool can_starve_descriptors() {
  if (!sanitized())
    return true;
  std::fprintf(stderr,
               "skipped under a sanitizer: its runtime needs descriptors of its own "
               "(checked in the plain build)\n");
  return false;
}

/// SIGKILLs a process that is not our child (a daemon) and its descendants
/// on scope exit, whatever the test did meanwhile.
struct daemon_reaper {
  explicit daemon_reaper(pid_t p) : pid(p) {}
  pid_t pid = 0;
  daemon_reaper(const daemon_reaper&) = delete;
  daemon_reaper& operator=(const daemon_reaper&) = delete;
  ~daemon_reaper() {
    if (pid <= 0)
      return;
    for (pid_t c : descendants_of(pid))
      ::kill(c, SIGKILL);
    ::kill(pid, SIGKILL);
  }
};

/// Result of running a program to completion.
struct run_result {
  std::optional<int> status;  ///< wait status; nothing if it did not exit in time (then killed)
  std::string out;            ///< its stdout
  std::string err;            ///< its stderr
  [[nodiscard]] int code() const { return status ? exit_code_of(*status) : -1000; }
};

/// Runs `program args...` to completion (killing it, and all it started,
/// after `timeout`), with stdout and stderr captured in files under `dir`.
inline run_result run(const temp_dir& dir, const std::string& program,
                      const std::vector<std::string>& args, milliseconds timeout = 10s,
                      const std::vector<std::pair<std::string, std::string>>& env = {}) {
  static int counter = 0;
  ++counter;
  spawn_options opt;
  opt.stdout_path = dir.file("run" + std::to_string(counter) + ".out");
  opt.stderr_path = dir.file("run" + std::to_string(counter) + ".err");
  opt.env = env;
  process p = process::spawn(program, args, opt);
  p.expect_any_exit();  // the test checks r.code()
  run_result r;
  wait_for(
      [&] {
        p.record_descendants();
        return p.exited();
      },
      timeout, 5ms);
  r.status = p.try_wait();
  p.forget_daemons();  // `--daemon` runs: the test owns the daemon, by pid
  p.kill_all();
  r.out = read_file(opt.stdout_path);
  r.err = read_file(opt.stderr_path);
  return r;
}

// ---------------------------------------------------------------------------
// TCP client on loopback

/// A blocking-style TCP client: every operation takes a timeout.
class tcp_client {
 public:
  /// What a receive saw.
  enum class status { data, eof, reset, timeout, error };

  tcp_client() = default;
  tcp_client(tcp_client&& o) noexcept : fd_(std::exchange(o.fd_, -1)), last_(o.last_) {}
  tcp_client& operator=(tcp_client&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
      last_ = o.last_;
    }
    return *this;
  }
  tcp_client(const tcp_client&) = delete;
  tcp_client& operator=(const tcp_client&) = delete;
  ~tcp_client() { close(); }

  /// Connects to 127.0.0.1:`port`; nothing if refused or not done in `timeout`.
  static std::optional<tcp_client> connect(std::uint16_t port, milliseconds timeout = 5s) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
      return std::nullopt;
    tcp_client c;
    c.fd_ = fd;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0)
      return c;
    if (errno != EINPROGRESS)
      return std::nullopt;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1)
      return std::nullopt;
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0)
      return std::nullopt;
    return c;
  }

  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] bool is_open() const noexcept { return fd_ >= 0; }

  /// Sends all of `data`; false on error or timeout.
  bool send_all(std::string_view data, milliseconds timeout = 5s) {
    auto deadline = steady::now() + timeout;
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        data.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!wait_io(POLLOUT, deadline))
          return false;
        continue;
      }
      return false;
    }
    return true;
  }

  /// Receives what is there (waiting up to `timeout` for something).
  status recv_some(std::string& out, milliseconds timeout = 5s) {
    return last_ = recv_some_(out, timeout);
  }

 private:
  status recv_some_(std::string& out, milliseconds timeout) {
    auto deadline = steady::now() + timeout;
    for (;;) {
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) {
        out.append(buf, static_cast<std::size_t>(n));
        return status::data;
      }
      if (n == 0)
        return status::eof;
      if (errno == EINTR)
        continue;
      if (errno == ECONNRESET)
        return status::reset;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        return status::error;
      if (!wait_io(POLLIN, deadline))
        return status::timeout;
    }
  }

 public:
  /// Receives exactly `n` bytes, or nothing (on timeout, EOF or error:
  /// last_status() says which).
  std::optional<std::string> recv_exact(std::size_t n, milliseconds timeout = 5s) {
    auto deadline = steady::now() + timeout;
    std::string out;
    while (out.size() < n) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
      if (left < 0ms)
        left = 0ms;
      if (recv_some(out, left) != status::data)
        return std::nullopt;
    }
    return out;
  }

  /// What the last receive saw.
  [[nodiscard]] status last_status() const noexcept { return last_; }

  /// Sends `text` and reads it back; true if the echo matched.
  bool echo(std::string_view text, milliseconds timeout = 5s) {
    if (!send_all(text, timeout))
      return false;
    auto back = recv_exact(text.size(), timeout);
    return back && *back == text;
  }

  /// Waits until the peer closes (EOF or reset); the status seen (timeout if not).
  status wait_closed(milliseconds timeout = 5s) {
    auto deadline = steady::now() + timeout;
    for (;;) {
      std::string ignored;
      auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
      if (left < 0ms)
        left = 0ms;
      auto s = recv_some(ignored, left);
      if (s != status::data)
        return s;
    }
  }

  void close() noexcept {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

 private:
  bool wait_io(short events, steady::time_point deadline) {
    for (;;) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now()).count();
      if (left <= 0)
        return false;
      pollfd p{fd_, events, 0};
      int r = ::poll(&p, 1, static_cast<int>(left));
      if (r > 0)
        return true;
      if (r < 0 && errno != EINTR)
        return false;
    }
  }

  int fd_ = -1;
  status last_ = status::data;
};

inline const char* to_string(tcp_client::status s) {
  switch (s) {
    case tcp_client::status::data:
      return "data";
    case tcp_client::status::eof:
      return "eof";
    case tcp_client::status::reset:
      return "reset";
    case tcp_client::status::timeout:
      return "timeout";
    case tcp_client::status::error:
      return "error";
  }
  return "?";
}

/// One fresh connection, one echo round trip; true if it worked.
inline bool echo_once(std::uint16_t port, std::string_view text = "ping\n",
                      milliseconds timeout = 2s) {
  auto c = tcp_client::connect(port, timeout);
  return c && c->echo(text, timeout);
}

}  // namespace pmtest
