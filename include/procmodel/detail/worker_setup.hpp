#pragma once

/// @file worker_setup.hpp
/// What a worker process does to itself before its Worker runs (nginx's
/// ngx_worker_process_init), resolved and checked by the master
/// (worker_plan_of), so that a mistake stops the start or refuses a reload
/// instead of failing in every worker. Applying it, in forked workers and
/// exec'd programs alike, is child_settings.hpp's.

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>

#include "../detail/format.hpp"
#include "../options.hpp"

namespace procmodel::detail {

/// Who the workers run as, resolved by the master.
struct worker_identity {
  std::string user;  ///< as given, for messages
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  ///< supplementary groups, without gid
};

/// The options a worker applies to itself, resolved and checked.
struct worker_plan {
  std::optional<worker_identity> identity;
  std::optional<std::uint64_t> rlimit_nofile;
  std::optional<std::uint64_t> rlimit_core;
  std::vector<unsigned> cpus;  ///< slot k runs on cpus[k % size]; empty: not pinned
  std::optional<int> priority;
  std::string directory;
  [[nodiscard]] bool empty() const noexcept {
    return !identity && !rlimit_nofile && !rlimit_core && cpus.empty() && !priority &&
           directory.empty();
  }
};

// A whole decimal number, or nothing.
inline std::optional<unsigned> id_number(const std::string& text) {
  try {
    return static_cast<unsigned>(parse_number("id", text, 0, 0xfffffffeLL));
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
}

// getpwnam_r, getgrgid_r...: retried with a bigger buffer on ERANGE.
template <class Entry, class Lookup>
bool look_up(Entry& entry, std::vector<char>& buf, Lookup&& lookup) {
  for (buf.resize(4096);; buf.resize(buf.size() * 2)) {
    Entry* found = nullptr;
    int rc = lookup(&entry, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (1u << 24)) continue;
    return rc == 0 && found;
  }
}

/// Resolves `user` and `group` (names, or numbers without an entry) as
/// initgroups would: the user's groups from the group database, without the
/// primary one (the gid already grants it). Throws std::invalid_argument.
inline worker_identity resolve_identity(const std::string& user, const std::string& group) {
  worker_identity id;
  id.user = user;
  passwd pw{};
  std::vector<char> pw_buf;
  bool has_entry = look_up(pw, pw_buf, [&](passwd* e, char* b, std::size_t n, passwd** f) {
    return ::getpwnam_r(user.c_str(), e, b, n, f);
  });
  if (!has_entry) {
    if (auto uid = id_number(user)) {
      has_entry = look_up(pw, pw_buf, [&](passwd* e, char* b, std::size_t n, passwd** f) {
        return ::getpwuid_r(*uid, e, b, n, f);
      });
      id.uid = *uid;
      if (!has_entry && group.empty())
        throw std::invalid_argument(detail::format(
            "--user {}: no such user in the user database; give its group with --group", user));
    } else {
      throw std::invalid_argument(detail::format("--user {}: no such user", user));
    }
  }
  if (has_entry) {
    id.uid = pw.pw_uid;
    id.gid = pw.pw_gid;
  }
  if (!group.empty()) {
    struct group gr{};
    std::vector<char> gr_buf;
    auto by_name = [&](struct group* e, char* b, std::size_t n, struct group** f) {
      return ::getgrnam_r(group.c_str(), e, b, n, f);
    };
    if (look_up(gr, gr_buf, by_name))
      id.gid = gr.gr_gid;
    else if (auto gid = id_number(group))
      id.gid = *gid;
    else
      throw std::invalid_argument(detail::format("--group {}: no such group", group));
  }
  if (has_entry) {
    int n = 16;
    std::vector<gid_t> all;
    for (;;) {
      all.resize(static_cast<std::size_t>(n));
      int count = n;
      if (::getgrouplist(pw.pw_name, id.gid, all.data(), &count) >= 0) {
        all.resize(static_cast<std::size_t>(count));
        break;
      }
      n = count > n ? count : n * 2;
    }
    for (gid_t g : all)
      if (g != id.gid) id.groups.push_back(g);
  }
  return id;
}

/// "uid 65534, gid 65534, no supplementary groups", for the log.
inline std::string describe(const worker_identity& id) {
  std::string groups;
  for (gid_t g : id.groups) groups += detail::format("{}{}", groups.empty() ? "" : ",", g);
  return detail::format("uid {}, gid {}, {}", id.uid, id.gid,
                     groups.empty() ? "no supplementary groups" : "supplementary groups " + groups);
}

/// The CPUs this process may run on, in order.
inline std::vector<unsigned> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) throw_errno("sched_getaffinity");
  std::vector<unsigned> out;
  for (unsigned c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

/// Whether this process has capability `cap` (CAP_SETUID, ...) in its
/// effective set: root in a container may lack some. Without /proc: euid 0.
inline bool has_capability(unsigned cap) {
  std::FILE* f = std::fopen("/proc/self/status", "re");
  if (!f) return ::geteuid() == 0;
  char line[256];
  unsigned long long eff = 0;
  bool found = false;
  while (!found && std::fgets(line, sizeof line, f))
    found = std::sscanf(line, "CapEff: %llx", &eff) == 1;
  std::fclose(f);
  if (!found) return ::geteuid() == 0;
  return cap < 64 && ((eff >> cap) & 1) != 0;
}

/// Resolves and checks what the workers apply to themselves; throws
/// std::invalid_argument with the option's name. `separate_processes`:
/// whether workers are processes (with threads there is nothing to apply,
/// and running as root where a user was asked for is refused).
inline worker_plan worker_plan_of(const options& opt, bool separate_processes) {
  worker_plan plan;
  if (!opt.group.empty() && opt.user.empty())
    throw std::invalid_argument("--group " + opt.group + ": needs --user");
  if (!opt.user.empty() && !separate_processes)
    throw std::invalid_argument("--user " + opt.user +
                                ": the workers are threads of the master (--single-process); "
                                "they cannot run as another user");
  if (!separate_processes) return plan;
  if (!opt.user.empty()) {
    worker_identity id = resolve_identity(opt.user, opt.group);
    if (has_capability(CAP_SETUID) && has_capability(CAP_SETGID)) {
      plan.identity = std::move(id);
    } else if (id.uid != ::geteuid() || id.gid != ::getegid()) {
      throw std::invalid_argument(
          detail::format("--user {}: switching users needs a master started as root; this one "
                      "runs as uid {} without CAP_SETUID and CAP_SETGID", opt.user, ::geteuid()));
    }  // else the workers already run as that user: nothing to drop
  }
  auto check_limit = [&](int resource, std::uint64_t value, std::string_view name) {
    rlimit now{};
    if (::getrlimit(resource, &now) != 0) throw_errno("getrlimit");
    bool above = value == rlimit_unlimited ? now.rlim_max != RLIM_INFINITY : value > now.rlim_max;
    if (above && !has_capability(CAP_SYS_RESOURCE))
      throw std::invalid_argument(detail::format(
          "{} {}: above the hard limit {}, which only a master with CAP_SYS_RESOURCE (root) "
          "can raise", name, value == rlimit_unlimited ? "unlimited" : detail::format("{}", value),
          now.rlim_max));
  };
  if (opt.worker_rlimit_nofile) {
    check_limit(RLIMIT_NOFILE, *opt.worker_rlimit_nofile, "--worker-rlimit-nofile");
    std::uint64_t nr_open = 0;
    if (std::FILE* f = std::fopen("/proc/sys/fs/nr_open", "re")) {
      unsigned long long v = 0;
      if (std::fscanf(f, "%llu", &v) == 1) nr_open = v;
      std::fclose(f);
    }
    if (nr_open && *opt.worker_rlimit_nofile > nr_open)
      throw std::invalid_argument(detail::format(
          "--worker-rlimit-nofile {}: above the system's ceiling fs.nr_open = {}",
          *opt.worker_rlimit_nofile, nr_open));
    plan.rlimit_nofile = opt.worker_rlimit_nofile;
  }
  if (opt.worker_rlimit_core) {
    check_limit(RLIMIT_CORE, *opt.worker_rlimit_core, "--worker-rlimit-core");
    plan.rlimit_core = opt.worker_rlimit_core;
  }
  if (opt.worker_cpu_affinity.enabled()) {
    std::vector<unsigned> allowed = allowed_cpus();
    if (opt.worker_cpu_affinity.automatic) {
      plan.cpus = allowed;
    } else {
      for (unsigned c : opt.worker_cpu_affinity.cpus)
        if (std::find(allowed.begin(), allowed.end(), c) == allowed.end()) {
          std::string list;
          for (unsigned a : allowed) list += detail::format("{}{}", list.empty() ? "" : ",", a);
          throw std::invalid_argument(detail::format(
              "--worker-cpu-affinity: CPU {} is not one this master may run on ({})", c, list));
        }
      plan.cpus = opt.worker_cpu_affinity.cpus;
    }
  }
  if (opt.worker_priority && !has_capability(CAP_SYS_NICE)) {
    // Without CAP_SYS_NICE, RLIMIT_NICE bounds how far the nice value may fall.
    errno = 0;
    int now = ::getpriority(PRIO_PROCESS, 0);
    rlimit l{};
    ::getrlimit(RLIMIT_NICE, &l);
    long floor = std::min<long>(now, 20 - static_cast<long>(std::min<rlim_t>(l.rlim_cur, 40)));
    if (errno == 0 && *opt.worker_priority < floor)
      throw std::invalid_argument(detail::format(
          "--worker-priority {}: below {}, which only a master with CAP_SYS_NICE (root) can go",
          *opt.worker_priority, floor));
  }
  plan.priority = opt.worker_priority;
  if (!opt.worker_directory.empty()) {
    struct stat st{};
    if (::stat(opt.worker_directory.c_str(), &st) != 0)
      throw std::invalid_argument(detail::format("--worker-directory {}: {}", opt.worker_directory,
                                              std::strerror(errno)));
    if (!S_ISDIR(st.st_mode))
      throw std::invalid_argument(
          detail::format("--worker-directory {}: not a directory", opt.worker_directory));
    plan.directory = opt.worker_directory;
  }
  return plan;
}

/// Makes the master's open log file writable for the workers' user, as
/// nginx does on reopen: owned by it, readable and writable by its owner.
/// Returns what failed, or "".
/// Anything but a regular file (a terminal, /dev/stderr) is left alone.
inline std::string give_file_to(int fd, const worker_identity& id) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) return detail::format("fstat: {}", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return {};
  if (::fchown(fd, id.uid, static_cast<gid_t>(-1)) != 0)
    return detail::format("chown to uid {}: {}", id.uid, std::strerror(errno));
  if ((st.st_mode & (S_IRUSR | S_IWUSR)) != (S_IRUSR | S_IWUSR) &&
      ::fchmod(fd, st.st_mode | S_IRUSR | S_IWUSR) != 0)
    return detail::format("chmod u+rw: {}", std::strerror(errno));
  return {};
}

}  // namespace procmodel::detail
