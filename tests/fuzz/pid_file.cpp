// pid_file::read: whatever a pid file holds, the answer is a pid above 1 that
// is exactly the file's decimal text (one trailing newline allowed), or a
// std::runtime_error naming the file.

#include <procmodel/pid_file.hpp>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "fuzz.hpp"

namespace {
std::string scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/procmodel-fuzz-pid." + std::to_string(::getpid());
  }();
  return path;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using procmodel_fuzz::require;
  const std::string path = scratch_path();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  require(fd >= 0, "scratch file opens");
  require(::write(fd, data, size) == static_cast<ssize_t>(size), "scratch file written");
  ::close(fd);
  std::string_view text = procmodel_fuzz::as_text(data, size);
  try {
    pid_t pid = procmodel::pid_file::read(path);
    std::string_view digits = text;
    if (digits.ends_with('\n')) digits.remove_suffix(1);
    require(pid > 1, "a pid above 1");
    while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
    require(digits == std::to_string(pid), "exactly the file's decimal text");
  } catch (const std::runtime_error& e) {
    require(std::string_view(e.what()).find(path) != std::string_view::npos, "the error names the file");
  }
  ::unlink(path.c_str());
  return 0;
}
