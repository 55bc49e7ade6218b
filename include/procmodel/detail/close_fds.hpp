#pragma once

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <vector>

#include <dirent.h>
#include <unistd.h>
#include <sys/syscall.h>

namespace procmodel::detail {

/// Closes every descriptor above stderr that is not in `keep`: a worker holds
/// only its channel, the listeners and stdio, whatever the master had open.
inline void close_all_except(std::vector<int> keep) noexcept {
  std::sort(keep.begin(), keep.end());
  unsigned int from = 3;
  bool ok = true;
  for (int fd : keep) {
    if (fd < static_cast<int>(from)) continue;
    if (static_cast<unsigned>(fd) > from)
      ok = ok && ::syscall(SYS_close_range, from, static_cast<unsigned>(fd) - 1, 0) == 0;
    from = static_cast<unsigned>(fd) + 1;
  }
  ok = ok && ::syscall(SYS_close_range, from, ~0U, 0) == 0;
  if (ok) return;
  // Kernels before 5.9: walk /proc/self/fd.
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return;
  int dir_fd = ::dirfd(dir);
  std::vector<int> doomed;
  while (dirent* e = ::readdir(dir)) {
    int fd = std::atoi(e->d_name);
    if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd < 3 || fd == dir_fd) continue;
    if (!std::binary_search(keep.begin(), keep.end(), fd)) doomed.push_back(fd);
  }
  ::closedir(dir);
  for (int fd : doomed) ::close(fd);
}

}  // namespace procmodel::detail
