#pragma once

/// @file child_settings.hpp
/// How a worker applies its worker_plan to itself, in one order for forked
/// workers and exec'd programs alike: resource limits, CPU, priority, then
/// the privilege drop (setgroups, setresgid, setresuid, verified), then the
/// working directory. What needs root (raising a hard limit, a lower nice
/// value) comes before the drop; the directory after it, so the user must
/// reach it.
///
/// The plan becomes plain data for the slot (child_settings), applied with raw
/// system calls: what a child that shares the master's memory until it execs
/// (exec_spawner's) may do. The master resolves everything before the child
/// exists (ids, supplementary groups, limits, the CPU of the slot); the child
/// neither allocates, nor throws, nor logs, nor goes through glibc's setuid
/// family, which would signal every thread of the master. Whoever can, names
/// what failed (describe): the master for an exec'd program, a forked worker
/// itself (apply_worker_plan).

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>

#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../log.hpp"
#include "format.hpp"
#include "vfork.hpp"
#include "worker_setup.hpp"

namespace procmodel::detail {

// The calls on 32-bit ids where the plain ones take 16 bits (i386, arm).
#ifdef SYS_setresuid32
inline constexpr long sys_setgroups = SYS_setgroups32, sys_setresgid = SYS_setresgid32,
                      sys_setresuid = SYS_setresuid32, sys_getresgid = SYS_getresgid32,
                      sys_getresuid = SYS_getresuid32, sys_setuid = SYS_setuid32;
#else
inline constexpr long sys_setgroups = SYS_setgroups, sys_setresgid = SYS_setresgid,
                      sys_setresuid = SYS_setresuid, sys_getresgid = SYS_getresgid,
                      sys_getresuid = SYS_getresuid, sys_setuid = SYS_setuid;
#endif

/// Which setting a child could not apply (0: none).
enum class child_step : int {
  none,
  rlimit_nofile,
  rlimit_core,
  cpu_affinity,
  priority,
  setgroups,
  setgid,
  setuid,
  ids_unchanged,  ///< getresuid/getresgid show another user after the drop
  root_regained,  ///< setuid(0) succeeded after the drop
  directory,
};

/// What a child reports when a setting fails.
struct child_step_failure {
  child_step step = child_step::none;
  int error = 0;
};

/// The settings of one slot, ready for a child that may not allocate.
/// `groups` and `directory` point into the plan: it outlives the child's exec.
struct child_settings {
  struct limit {
    int resource;
    std::uint64_t value;  ///< soft and hard; rlimit_unlimited is RLIM64_INFINITY
    child_step step;
  };
  limit limits[2]{};
  int limit_count = 0;
  bool pin = false;
  cpu_set_t cpus{};
  bool renice = false;
  int nice = 0;
  bool drop = false;
  uid_t uid = 0;
  gid_t gid = 0;
  const gid_t* groups = nullptr;  ///< supplementary, resolved with getgrouplist
  std::size_t group_count = 0;
  const char* directory = nullptr;
};

/// `plan` for slot `slot`, resolved in the master.
inline child_settings child_settings_of(const worker_plan& plan, unsigned slot) {
  child_settings s;
  if (plan.rlimit_nofile)
    s.limits[s.limit_count++] = {RLIMIT_NOFILE, *plan.rlimit_nofile, child_step::rlimit_nofile};
  if (plan.rlimit_core)
    s.limits[s.limit_count++] = {RLIMIT_CORE, *plan.rlimit_core, child_step::rlimit_core};
  if (!plan.cpus.empty()) {
    s.pin = true;
    CPU_ZERO(&s.cpus);
    CPU_SET(plan.cpus[slot % plan.cpus.size()], &s.cpus);
  }
  if (plan.priority) {
    s.renice = true;
    s.nice = *plan.priority;
  }
  if (plan.identity) {
    s.drop = true;
    s.uid = plan.identity->uid;
    s.gid = plan.identity->gid;
    s.groups = plan.identity->groups.data();
    s.group_count = plan.identity->groups.size();
  }
  if (!plan.directory.empty())
    s.directory = plan.directory.c_str();
  return s;
}

/// Applies `s` to the calling process: limits, CPU, priority, then the drop
/// (groups, gid, uid, verified), then the directory, as the user. Raw system
/// calls only: safe in a child that shares the master's memory. Stops at the
/// first failure and returns it.
/// The drop marks the shared memory undumpable, the master's included:
/// the master restores it (master_dumpable) once the child has exec'd.
PROCMODEL_CHILD_NO_ASAN inline child_step_failure apply_child_settings(
    const child_settings& s) noexcept {
  auto failed = [](child_step step) { return child_step_failure{step, errno}; };
  for (int i = 0; i < s.limit_count; ++i) {
    struct {
      std::uint64_t cur, max;
    } l{s.limits[i].value, s.limits[i].value};
    if (::syscall(SYS_prlimit64, 0, s.limits[i].resource, &l, nullptr) != 0)
      return failed(s.limits[i].step);
  }
  if (s.pin && ::syscall(SYS_sched_setaffinity, 0, sizeof s.cpus, &s.cpus) != 0)
    return failed(child_step::cpu_affinity);
  if (s.renice && ::syscall(SYS_setpriority, PRIO_PROCESS, 0, s.nice) != 0)
    return failed(child_step::priority);
  if (s.drop) {
    if (::syscall(sys_setgroups, s.group_count, s.groups) != 0)
      return failed(child_step::setgroups);
    if (::syscall(sys_setresgid, s.gid, s.gid, s.gid) != 0)
      return failed(child_step::setgid);
    if (::syscall(sys_setresuid, s.uid, s.uid, s.uid) != 0)
      return failed(child_step::setuid);
    uid_t ruid = 0, euid = 0, suid = 0;
    gid_t rgid = 0, egid = 0, sgid = 0;
    if (::syscall(sys_getresuid, &ruid, &euid, &suid) != 0 ||
        ::syscall(sys_getresgid, &rgid, &egid, &sgid) != 0)
      return failed(child_step::ids_unchanged);
    if (ruid != s.uid || euid != s.uid || suid != s.uid || rgid != s.gid || egid != s.gid ||
        sgid != s.gid)
      return {child_step::ids_unchanged, EPERM};
    if (s.uid != 0 && ::syscall(sys_setuid, 0) == 0)
      return {child_step::root_regained, EPERM};
    // Not PR_SET_DUMPABLE, as a forked worker does for its cores: it marks
    // the memory, the master's too, so another process of the user could
    // ptrace this child into the master's memory until the exec, which
    // makes the program dumpable anyway (all its ids are the user's).
  }
  if (s.directory && ::syscall(SYS_chdir, s.directory) != 0)
    return failed(child_step::directory);
  return {};
}

/// The master's dumpable flag (prctl PR_GET_DUMPABLE) until destroyed: a
/// child that shares its memory and changes its ids clears it, as the
/// kernel marks the memory, not the process.
class master_dumpable {
 public:
  master_dumpable() noexcept : flag_(::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)) {}
  ~master_dumpable() {
    if (flag_ >= 0 && ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != flag_)
      ::prctl(PR_SET_DUMPABLE, flag_, 0, 0, 0);
  }
  master_dumpable(const master_dumpable&) = delete;
  master_dumpable& operator=(const master_dumpable&) = delete;

 private:
  int flag_;
};

/// What failed, named after the setting ("worker_directory /srv/www").
inline std::string describe(child_step step, const worker_plan& plan, unsigned slot) {
  switch (step) {
    case child_step::rlimit_nofile:
      return format("worker_rlimit_nofile {}: setrlimit", plan.rlimit_nofile.value_or(0));
    case child_step::rlimit_core:
      return format("worker_rlimit_core {}: setrlimit", plan.rlimit_core.value_or(0));
    case child_step::cpu_affinity:
      return plan.cpus.empty()
                 ? std::string("worker_cpu_affinity")
                 : format("worker_cpu_affinity: CPU {}", plan.cpus[slot % plan.cpus.size()]);
    case child_step::priority:
      return format("worker_priority {}", plan.priority.value_or(0));
    case child_step::setgroups:
      return "setgroups";
    case child_step::setgid:
      return format("setgid({})", plan.identity ? plan.identity->gid : 0);
    case child_step::setuid:
      return format("setuid({})", plan.identity ? plan.identity->uid : 0);
    case child_step::ids_unchanged:
      return plan.identity ? format("privileges not dropped: the ids are not uid {}, gid {}",
                                    plan.identity->uid, plan.identity->gid)
                           : std::string("privileges not dropped");
    case child_step::root_regained:
      return "privileges not dropped: setuid(0) succeeded";
    case child_step::directory:
      return format("worker_directory {}", plan.directory);
    case child_step::none:
      break;
  }
  return "the per-worker settings";
}

/// Applies `plan` to this forked worker process of slot `slot`; throws
/// std::system_error naming what failed. Its memory is its own, so after the
/// drop a core limit other than 0 makes it dumpable again (setuid cleared the
/// flag), as nginx does for worker_rlimit_core.
inline void apply_worker_plan(const worker_plan& plan, unsigned slot) {
  const child_step_failure f = apply_child_settings(child_settings_of(plan, slot));
  if (f.step != child_step::none)
    throw std::system_error(f.error, std::generic_category(), describe(f.step, plan, slot));
  if (plan.identity && plan.rlimit_core && *plan.rlimit_core != 0)
    ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

/// apply_worker_plan in a forked worker; false when it failed, after
/// logging why (to the log file the worker would have used).
inline bool enter_worker(const worker_plan& plan, unsigned slot, const std::string& log_file,
                         log_level level) {
  if (plan.empty()) return true;
  try {
    apply_worker_plan(plan, slot);
    return true;
  } catch (const std::exception& e) {
    logger log;
    log.set_role(detail::format("worker {}", slot));
    log.set_level(level);
    try {
      log.open(log_file);
    } catch (const std::exception&) {  // stderr, then
    }
    log.error("cannot start: {}", e.what());
    return false;
  }
}

}  // namespace procmodel::detail
