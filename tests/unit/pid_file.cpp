#include <procmodel/pid_file.hpp>

#include "support/catch.hpp"

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using procmodel::pid_file;

namespace {

// A fresh directory, removed with its contents at the end.
class temp_dir {
 public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/procmodel-pid-XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~temp_dir() {
    for (const auto& name : entries()) {
      std::string p = path_ + "/" + name;
      if (::rmdir(p.c_str()) != 0) ::unlink(p.c_str());
    }
    ::rmdir(path_.c_str());
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  [[nodiscard]] std::string operator/(const std::string& name) const { return path_ + "/" + name; }

  [[nodiscard]] std::set<std::string> entries() const {
    std::set<std::string> out;
    if (DIR* d = ::opendir(path_.c_str())) {
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") out.insert(n);
      }
      ::closedir(d);
    }
    return out;
  }

 private:
  std::string path_;
};

void put(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  REQUIRE(f.good());
}

std::string get(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool is_symlink(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

// The message of the runtime_error `f` throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return {};
}

// A child that exists until the guard goes; `exec` makes it run another program.
class child {
 public:
  explicit child(bool exec) {
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      if (exec) ::execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
      for (;;) ::pause();
    }
    if (exec) {  // until the exec happened, /proc/PID/exe is still ours
      std::string link = "/proc/" + std::to_string(pid_) + "/exe";
      for (int i = 0; i < 500; ++i) {
        char buf[256] = {};
        if (::readlink(link.c_str(), buf, sizeof buf - 1) > 0 &&
            std::string(buf).find("sleep") != std::string::npos)
          break;
        ::usleep(2000);
      }
    }
  }
  ~child() { stop(); }
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  [[nodiscard]] pid_t pid() const { return pid_; }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("pid_file: write then read", "[pid_file]") {
  temp_dir dir;
  const auto path = dir / "demo.pid";
  pid_file::write(path, 4242);
  CHECK(get(path) == "4242\n");
  CHECK(pid_file::read(path) == 4242);

  SECTION("writing again replaces the pid") {
    pid_file::write(path, 77);
    CHECK(get(path) == "77\n");
    CHECK(pid_file::read(path) == 77);
  }
  SECTION("mode 0644 at most") {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777 & ~0644) == 0);
  }
}

TEST_CASE("pid_file: write is atomic and leaves no temporary file", "[pid_file]") {
  temp_dir dir;
  const auto path = dir / "demo.pid";
  pid_file::write(path, 4242);
  pid_file::write(path, 4243);
  CHECK(dir.entries() == std::set<std::string>{"demo.pid"});

  SECTION("a temporary file left by a crashed master of our pid is replaced") {
    const auto stale = path + ".tmp." + std::to_string(::getpid());
    put(stale, "junk");
    pid_file::write(path, 4244);
    CHECK(pid_file::read(path) == 4244);
    CHECK(dir.entries() == std::set<std::string>{"demo.pid"});
  }
}

TEST_CASE("pid_file: write refuses a symbolic link and leaves its target alone", "[pid_file]") {
  temp_dir dir;
  const auto target = dir / "target";
  const auto link = dir / "demo.pid";
  put(target, "precious\n");
  REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);

  auto msg = error_of([&] { pid_file::write(link, 4242); });
  CHECK(msg.find("symbolic link") != std::string::npos);
  CHECK(msg.find(link) != std::string::npos);
  CHECK(get(target) == "precious\n");
  CHECK(is_symlink(link));
  CHECK(dir.entries() == std::set<std::string>{"demo.pid", "target"});

  SECTION("a dangling link too") {
    const auto dangling = dir / "dangling.pid";
    REQUIRE(::symlink((dir / "nowhere").c_str(), dangling.c_str()) == 0);
    CHECK_THROWS_AS(pid_file::write(dangling, 4242), std::runtime_error);
    CHECK(dir.entries().count("nowhere") == 0);
  }
}

TEST_CASE("pid_file: write refuses a directory", "[pid_file]") {
  temp_dir dir;
  const auto path = dir / "demo.pid";
  REQUIRE(::mkdir(path.c_str(), 0755) == 0);
  auto msg = error_of([&] { pid_file::write(path, 4242); });
  CHECK(msg.find("not a regular file") != std::string::npos);
  CHECK(dir.entries() == std::set<std::string>{"demo.pid"});
}

TEST_CASE("pid_file: write into a missing directory fails naming it", "[pid_file]") {
  temp_dir dir;
  auto msg = error_of([&] { pid_file::write(dir / "no/such/dir/demo.pid", 4242); });
  CHECK(msg.find("no/such/dir/demo.pid") != std::string::npos);
}

TEST_CASE("pid_file: read refuses a symbolic link", "[pid_file]") {
  temp_dir dir;
  const auto target = dir / "target";
  const auto link = dir / "demo.pid";
  put(target, "4242\n");
  REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);
  auto msg = error_of([&] { pid_file::read(link); });
  CHECK(msg.find("symbolic link") != std::string::npos);
  CHECK(msg.find(link) != std::string::npos);
}

TEST_CASE("pid_file: read refuses a directory and a missing file", "[pid_file]") {
  temp_dir dir;
  const auto sub = dir / "sub";
  REQUIRE(::mkdir(sub.c_str(), 0755) == 0);
  CHECK(error_of([&] { pid_file::read(sub); }).find("not a regular file") != std::string::npos);
  CHECK(error_of([&] { pid_file::read(dir / "missing.pid"); }).find("cannot open") !=
        std::string::npos);
}

TEST_CASE("pid_file: read refuses anything but a pid", "[pid_file]") {
  auto junk = GENERATE(as<std::string>{}, "abc", "12abc", "", "\n", "-5", "0", "1", "99999999999",
                       "2147483648", " 123", "123 ", "123\n\n", "123\r\n", "+123", "0x1f", "12\n34",
                       // 20 and 31 digits: no overflow on the way to refusing them (fuzz_pid_file)
                       "99999999999999999999", "9999999999999999999999999999999");
  temp_dir dir;
  const auto path = dir / "demo.pid";
  put(path, junk);
  INFO("content: '" << junk << "'");
  auto msg = error_of([&] { pid_file::read(path); });
  CHECK(msg == fmt::format("pid file {} does not hold a pid", path));
}

TEST_CASE("pid_file: read accepts a pid with or without a newline", "[pid_file]") {
  auto [text, pid] = GENERATE(std::pair<std::string, pid_t>{"123\n", 123}, std::pair<std::string, pid_t>{"123", 123},
                              std::pair<std::string, pid_t>{"2\n", 2},
                              std::pair<std::string, pid_t>{"2147483647", 2147483647});
  temp_dir dir;
  const auto path = dir / "demo.pid";
  put(path, text);
  CHECK(pid_file::read(path) == pid);
}

TEST_CASE("pid_file: remove_if_ours removes only a file naming us", "[pid_file]") {
  temp_dir dir;
  const auto path = dir / "demo.pid";
  pid_file::write(path, 4242);

  CHECK_FALSE(pid_file::remove_if_ours(path, 4243));
  CHECK(dir.entries() == std::set<std::string>{"demo.pid"});

  CHECK(pid_file::remove_if_ours(path, 4242));
  CHECK(dir.entries().empty());

  CHECK_FALSE(pid_file::remove_if_ours(path, 4242));  // already gone

  SECTION("junk is left alone") {
    put(path, "junk");
    CHECK_FALSE(pid_file::remove_if_ours(path, 4242));
    CHECK(get(path) == "junk");
  }
  SECTION("a link naming us is left alone, and so is its target") {
    const auto target = dir / "target";
    put(target, "4242\n");
    REQUIRE(::symlink(target.c_str(), path.c_str()) == 0);
    CHECK_FALSE(pid_file::remove_if_ours(path, 4242));
    CHECK(is_symlink(path));
    CHECK(get(target) == "4242\n");
  }
}

TEST_CASE("pid_file: names_live_master", "[pid_file]") {
  temp_dir dir;
  const auto path = dir / "demo.pid";

  SECTION("no file") { CHECK_FALSE(pid_file::names_live_master(path, ::getpid())); }
  SECTION("junk") {
    put(path, "abc\n");
    CHECK_FALSE(pid_file::names_live_master(path, ::getpid()));
  }
  SECTION("our own pid") {
    pid_file::write(path, ::getpid());
    CHECK_FALSE(pid_file::names_live_master(path, ::getpid()));
  }
  SECTION("a dead pid") {
    pid_t dead = 0;
    {
      child c(false);
      dead = c.pid();
    }  // killed and reaped
    REQUIRE(::kill(dead, 0) != 0);
    pid_file::write(path, dead);
    CHECK_FALSE(pid_file::names_live_master(path, ::getpid()));
  }
  SECTION("a live process running another program") {
    child c(true);
    pid_file::write(path, c.pid());
    CHECK_FALSE(pid_file::names_live_master(path, ::getpid()));
  }
  SECTION("a live process running this program") {
    child c(false);
    pid_file::write(path, c.pid());
    CHECK(pid_file::names_live_master(path, ::getpid()));
    c.stop();
    CHECK_FALSE(pid_file::names_live_master(path, ::getpid()));
  }
}
