#include <procmodel/detail/child_settings.hpp>

#include "support/catch.hpp"

#include <cerrno>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

// What the master checks before any worker exists (worker_plan_of), and what
// a forked worker does to itself (apply_worker_plan); the integration tests
// (tests/integration/privileges.cpp) run the same through the examples.

using namespace procmodel;
using detail::worker_plan_of;

namespace {

// The message worker_plan_of throws for `opt`, or "" if it accepts it.
std::string refusal(const options& opt, bool separate_processes = true) {
  try {
    worker_plan_of(opt, separate_processes);
    return "";
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
}

// Runs `body` in a forked child; its exit code (-1 if it did not exit).
template <class Body>
int in_child(Body&& body) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 99;
    try {
      code = body();
    } catch (...) {
      code = 98;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool can_switch_users() {
  return detail::has_capability(CAP_SETUID) && detail::has_capability(CAP_SETGID);
}

// nobody, when this test may become nobody (it runs as root); else why not.
std::optional<detail::worker_identity> nobody_if_root() {
  if (!can_switch_users()) {
    WARN("SKIP: needs root to become another user");
    return std::nullopt;
  }
  const passwd* nobody = ::getpwnam("nobody");
  if (!nobody) {
    WARN("SKIP: no user 'nobody' here");
    return std::nullopt;
  }
  return detail::worker_identity{"nobody", nobody->pw_uid, nobody->pw_gid, {}};
}

}  // namespace

TEST_CASE("worker_plan_of: no settings, nothing to apply", "[worker-setup]") {
  CHECK(worker_plan_of(options{}, true).empty());
  CHECK(worker_plan_of(options{}, false).empty());
}

TEST_CASE("resolve_identity: a user's ids and groups, as initgroups", "[worker-setup]") {
  const passwd* nobody = ::getpwnam("nobody");
  if (!nobody)
    SKIP("no user 'nobody' here");
  uid_t uid = nobody->pw_uid;
  gid_t gid = nobody->pw_gid;
  auto id = detail::resolve_identity("nobody", "");
  CHECK(id.user == "nobody");
  CHECK(id.uid == uid);
  CHECK(id.gid == gid);
  for (gid_t g : id.groups)
    CHECK(g != gid);  // the primary group is the gid, not a supplement

  auto root = detail::resolve_identity("root", "");
  CHECK(root.uid == 0);
  CHECK(root.gid == 0);

  // --group replaces the primary group; names and numbers both resolve.
  auto as_root_group = detail::resolve_identity("nobody", "0");
  CHECK(as_root_group.uid == uid);
  CHECK(as_root_group.gid == 0);
  if (const group* g = ::getgrgid(gid)) {
    auto named = detail::resolve_identity("nobody", g->gr_name);
    CHECK(named.gid == gid);
  }
  // A number the user database does not know, as containers use.
  auto numeric = detail::resolve_identity("123456", "654321");
  CHECK(numeric.uid == 123456u);
  CHECK(numeric.gid == 654321u);
  CHECK(numeric.groups.empty());
  CHECK(detail::describe(numeric) == "uid 123456, gid 654321, no supplementary groups");
}

TEST_CASE("worker_plan_of refuses what no worker could do, naming the option", "[worker-setup]") {
  struct row {
    const char* what;
    options opt;
    const char* needle;
  };
  options unknown_user;
  unknown_user.user = "no-such-user-procmodel";
  options unknown_group;
  unknown_group.user = "root";
  unknown_group.group = "no-such-group-procmodel";
  options group_alone;
  group_alone.group = "root";
  options numeric_alone;
  numeric_alone.user = "123456";
  options missing_dir;
  missing_dir.worker_directory = "/nonexistent/procmodel";
  options file_dir;
  file_dir.worker_directory = "/proc/self/status";
  options foreign_cpu;
  foreign_cpu.worker_cpu_affinity.cpus = {0, 1023};
  options too_many_files;
  too_many_files.worker_rlimit_nofile = 1u << 30;  // above fs.nr_open's default
  auto r = GENERATE_COPY(values<row>({
      {"unknown user", unknown_user, "--user no-such-user-procmodel: no such user"},
      {"unknown group", unknown_group, "--group no-such-group-procmodel: no such group"},
      {"group alone", group_alone, "--group root: needs --user"},
      {"numeric user alone", numeric_alone, "--user 123456: no such user in the user database"},
      {"missing directory", missing_dir, "--worker-directory /nonexistent/procmodel: No such file"},
      {"not a directory", file_dir, "--worker-directory /proc/self/status: not a directory"},
      {"foreign CPU", foreign_cpu, "--worker-cpu-affinity: CPU 1023 is not one this master"},
      {"above nr_open", too_many_files, "--worker-rlimit-nofile 1073741824: above"},
  }));
  INFO(r.what);
  CHECK_THAT(refusal(r.opt), Catch::Contains(r.needle));
}

TEST_CASE("worker_plan_of: no other user for workers that are threads of the master",
          "[worker-setup]") {
  options opt;
  opt.user = "nobody";
  CHECK_THAT(refusal(opt, false), Catch::Contains("--user nobody: the workers are threads"));
  // The other settings are process-wide: with threads they are not applied.
  options limits;
  limits.worker_rlimit_nofile = 100;
  limits.worker_directory = "/";
  CHECK(worker_plan_of(limits, false).empty());
}

TEST_CASE("worker_plan_of: auto affinity is every CPU the master may use, a list as given",
          "[worker-setup]") {
  options opt;
  opt.worker_cpu_affinity.automatic = true;
  auto plan = worker_plan_of(opt, true);
  CHECK(plan.cpus == detail::allowed_cpus());
  CHECK_FALSE(plan.cpus.empty());

  options listed;
  unsigned first = detail::allowed_cpus().front();
  listed.worker_cpu_affinity.cpus = {first, first};
  CHECK(worker_plan_of(listed, true).cpus == std::vector<unsigned>{first, first});
}

TEST_CASE("worker_plan_of: a master that is not root may not switch users or raise limits",
          "[worker-setup]") {
  auto nobody = nobody_if_root();
  if (!nobody)
    return;
  // Each check in a child that first becomes nobody: whether worker_plan_of
  // refuses `opt` there with `needle` ("" for: accepts, with nothing to drop).
  auto as_nobody = [&](const options& opt, const std::string& needle) {
    return in_child([&] {
             detail::worker_plan drop;
             drop.identity = *nobody;
             detail::apply_worker_plan(drop, 0);
             if (needle.empty())
               return worker_plan_of(opt, true).identity ? 1 : 0;
             return refusal(opt).find(needle) != std::string::npos ? 0 : 1;
           }) == 0;
  };
  options root;
  root.user = "root";
  CHECK(as_nobody(root, "--user root: switching users needs a master started as root"));
  options same;
  same.user = "nobody";  // the workers already are nobody: nothing to drop
  CHECK(as_nobody(same, ""));
  rlimit l{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &l) == 0);
  if (l.rlim_max != RLIM_INFINITY) {
    options files;
    files.worker_rlimit_nofile = l.rlim_max + 1;
    CHECK(as_nobody(files, "which only a master with CAP_SYS_RESOURCE"));
  }
  options first;
  first.worker_priority = -20;
  CHECK(as_nobody(first, "--worker-priority -20: below"));
}

TEST_CASE("apply_worker_plan: limits, CPU, priority, then the drop, after which setuid(0) fails",
          "[worker-setup]") {
  if (!can_switch_users())
    SKIP("needs root");
  options opt;
  opt.user = "nobody";
  opt.worker_rlimit_nofile = 1234;
  opt.worker_rlimit_core = 0;
  opt.worker_priority = 7;
  opt.worker_directory = "/";
  opt.worker_cpu_affinity.automatic = true;
  auto plan = worker_plan_of(opt, true);
  REQUIRE(plan.identity);
  const auto cpus = plan.cpus;
  // Exit codes name the first check that failed; 0 when every one held.
  int code = in_child([&] {
    detail::apply_worker_plan(plan, 1);
    const auto& id = *plan.identity;
    uid_t r = 0, e = 0, s = 0;
    ::getresuid(&r, &e, &s);
    if (r != id.uid || e != id.uid || s != id.uid)
      return 1;
    gid_t rg = 0, eg = 0, sg = 0;
    ::getresgid(&rg, &eg, &sg);
    if (rg != id.gid || eg != id.gid || sg != id.gid)
      return 2;
    if (::getgroups(0, nullptr) != static_cast<int>(id.groups.size()))
      return 3;
    if (::setuid(0) == 0 || errno != EPERM)
      return 4;
    rlimit l{};
    ::getrlimit(RLIMIT_NOFILE, &l);
    if (l.rlim_cur != 1234 || l.rlim_max != 1234)
      return 5;
    errno = 0;
    if (::getpriority(PRIO_PROCESS, 0) != 7)
      return 6;
    if (detail::allowed_cpus() != std::vector<unsigned>{cpus[1 % cpus.size()]})
      return 7;
    char cwd[64];
    if (!::getcwd(cwd, sizeof cwd) || std::string(cwd) != "/")
      return 8;
    if (::prctl(PR_GET_DUMPABLE) != 0)  // setuid cleared it; a core limit of 0 asks for no cores
      return 9;
    return 0;
  });
  CHECK(code == 0);
  // A core limit above 0 asks for cores: the worker is dumpable again after the drop.
  plan.rlimit_core = 1 << 20;
  CHECK(in_child([&] {
          detail::apply_worker_plan(plan, 0);
          return ::prctl(PR_GET_DUMPABLE) == 1 ? 0 : 1;
        }) == 0);
}

TEST_CASE("enter_worker: a setting that fails is logged and the worker does not start",
          "[worker-setup]") {
  detail::worker_plan plan;
  plan.directory = "/nonexistent/procmodel";  // the master checked it; now it is gone
  char path[] = "/tmp/procmodel-enter-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  CHECK(in_child([&] { return detail::enter_worker(plan, 3, path, log_level::info) ? 0 : 1; }) ==
        1);
  std::FILE* f = std::fopen(path, "r");
  REQUIRE(f);
  char line[512] = {};
  std::string text;
  while (std::fgets(line, sizeof line, f))
    text += line;
  std::fclose(f);
  ::unlink(path);
  CHECK_THAT(text, Catch::Contains("[error]") &&
                       Catch::Contains("worker 3: cannot start: worker_directory "
                                       "/nonexistent/procmodel: No such file or directory"));
  CHECK(in_child([&] { return detail::enter_worker({}, 0, "", log_level::info) ? 0 : 1; }) == 0);
}

TEST_CASE("give_file_to: the log file becomes the workers' user's, a device stays as it is",
          "[worker-setup]") {
  auto nobody = nobody_if_root();
  if (!nobody)
    return;
  const detail::worker_identity& id = *nobody;
  char path[] = "/tmp/procmodel-give-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(::fchmod(fd, 0040) == 0);  // the owner could neither read nor write it
  CHECK(detail::give_file_to(fd, id).empty());
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_uid == id.uid);
  CHECK((st.st_mode & 0777) == 0640);
  ::close(fd);
  ::unlink(path);

  int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  REQUIRE(null >= 0);
  struct stat before {
  }, after{};
  REQUIRE(::fstat(null, &before) == 0);
  CHECK(detail::give_file_to(null, id).empty());
  REQUIRE(::fstat(null, &after) == 0);
  CHECK(after.st_uid == before.st_uid);
  ::close(null);
}
