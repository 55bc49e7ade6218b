#pragma once

// Coverage and profile counters live in each process's memory, and the
// runtime that writes them out does so from exit(). A forked worker leaves
// with _exit() (it must not run the master's exit handlers), so without this
// a program built with --coverage, -fprofile-generate or
// -fprofile-instr-generate records none of what its workers ran.
//
// The runtimes are found through weak references: in a program built without
// instrumentation they are null, and writing the counters costs nothing.

// GCC: the documented interface, when the program references it itself...
extern "C" void __gcov_dump() __attribute__((weak));
// ...else what every instrumented object calls at exit (GCC 7 and later),
// which is always linked: a weak reference alone does not pull __gcov_dump's
// member out of libgcov.a.
extern "C" void __gcov_exit() __attribute__((weak));
// Clang's -fprofile-instr-generate (its --coverage defines __gcov_dump).
extern "C" int __llvm_profile_write_file() __attribute__((weak));

namespace procmodel::detail {

/// Writes this process's coverage and profile counters, if it has any: for
/// a child that ends with _exit().
inline void write_profile_counters() noexcept {
  if (__gcov_dump)
    __gcov_dump();
  else if (__gcov_exit)
    __gcov_exit();
  if (__llvm_profile_write_file) __llvm_profile_write_file();
}

}  // namespace procmodel::detail
