#pragma once

/// @file vfork.hpp
/// A child that shares the caller's memory until it execs, as glibc's
/// posix_spawn starts one: no page table is copied, so starting a program
/// costs the same whatever the caller's resident set. The caller's thread
/// waits until the child execs or exits.

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstring>
#include <system_error>

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/// On the functions such a child runs that do not return (they exec or
/// exit): ASan knows nothing of the child's stack, so it could neither
/// clean up after their frames nor unwind them.
#define PROCMODEL_CHILD_NO_ASAN __attribute__((no_sanitize_address))

// ThreadSanitizer intercepts the calls such a child makes and records them
// in the caller's memory, which the child shares: under it, fork instead.
#if defined(__SANITIZE_THREAD__)
#define PROCMODEL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PROCMODEL_TSAN 1
#endif
#endif
#ifndef PROCMODEL_TSAN
#define PROCMODEL_TSAN 0
#endif

namespace procmodel::detail {

/// Whether clone_vfork's child may run here: not under ThreadSanitizer,
/// whose bookkeeping in the shared memory the child would corrupt.
inline constexpr bool vfork_usable = !PROCMODEL_TSAN;

/// The stack such a child runs on: mapped (only what it touches becomes
/// resident), with an inaccessible page below, so that an overflow faults
/// instead of writing over the caller's memory.
class child_stack {
 public:
  explicit child_stack(std::size_t size)
      : guard_(static_cast<std::size_t>(::sysconf(_SC_PAGESIZE))) {
    size_ = size + guard_;
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap");
    base_ = static_cast<char*>(p);
    if (::mprotect(base_, guard_, PROT_NONE) != 0) {
      const int error = errno;
      ::munmap(base_, size_);
      throw std::system_error(error, std::generic_category(), "mprotect");
    }
  }
  ~child_stack() { ::munmap(base_, size_); }
  child_stack(const child_stack&) = delete;
  child_stack& operator=(const child_stack&) = delete;

  [[nodiscard]] void* top() const noexcept { return base_ + size_; }

 private:
  std::size_t guard_;
  std::size_t size_ = 0;
  char* base_ = nullptr;
};

/// Every signal blocked in the calling thread, glibc's own included (which
/// pthread_sigmask would leave out), until destroyed.
class all_signals_blocked {
 public:
  all_signals_blocked() noexcept {
    sigset_t all;
    std::memset(&all, 0xff, sizeof all);
    ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old_, _NSIG / 8);
  }
  ~all_signals_blocked() { ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old_, nullptr, _NSIG / 8); }
  all_signals_blocked(const all_signals_blocked&) = delete;
  all_signals_blocked& operator=(const all_signals_blocked&) = delete;

 private:
  sigset_t old_{};
};

/// Runs `fn(arg)` on `stack` in a child that shares this process's memory
/// (clone with CLONE_VM | CLONE_VFORK) and returns its pid once it has
/// exec'd or exited. Signals stay blocked meanwhile, so that none of this
/// process's handlers runs in the child on the shared memory: `fn` resets
/// every handled signal to its default before it unblocks any. `fn` makes
/// only async-signal-safe calls: no malloc, no exception; it and what it
/// calls that does not return are PROCMODEL_CHILD_NO_ASAN.
inline pid_t clone_vfork(int (*fn)(void*), void* arg, const child_stack& stack) {
  pid_t pid = -1;
  int error = 0;
  {
    all_signals_blocked blocked;
    pid = ::clone(fn, stack.top(), CLONE_VM | CLONE_VFORK | SIGCHLD, arg);
    error = errno;
  }
  if (pid < 0) throw std::system_error(error, std::generic_category(), "clone");
  return pid;
}

}  // namespace procmodel::detail
