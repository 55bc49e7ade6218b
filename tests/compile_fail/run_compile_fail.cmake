# Builds one snippet's target (see CMakeLists.txt here) and checks the outcome
# its source announces. A snippet expected to fail passes only if the build
# fails AND its first error line matches the expected regex: a snippet that
# fails for another reason (a typo, a missing include) fails the test.
#
# cmake -DBUILD_DIR=... -DTARGET=... -DCONFIG=... -DSOURCE=... -P run_compile_fail.cmake

foreach(var BUILD_DIR TARGET SOURCE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_compile_fail.cmake: ${var} is not set")
  endif()
endforeach()

file(STRINGS ${SOURCE} expect_error REGEX "^// expect-error: " LIMIT_COUNT 1)
string(REGEX REPLACE "^// expect-error: " "" expect_error "${expect_error}")

set(config_args)
if(CONFIG)
  set(config_args --config ${CONFIG})
endif()
execute_process(
  COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET} ${config_args}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE output
  ERROR_VARIABLE output)

if(NOT expect_error)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${SOURCE} must compile, but the build failed:\n${output}")
  endif()
  message(STATUS "${SOURCE} compiles, as it must")
  return()
endif()

if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} must NOT compile (expected an error matching "
    "'${expect_error}'), but it built")
endif()
# The first diagnostic that is an error: "file:line:col: error: ..." (GCC and
# Clang both print the message on that line).
string(REGEX MATCH "[^\n]*error:[^\n]*" first_error "${output}")
if(NOT first_error)
  message(FATAL_ERROR "${SOURCE}: the build failed without a compiler error:\n${output}")
endif()
if(NOT first_error MATCHES "${expect_error}")
  message(FATAL_ERROR "${SOURCE}: the first error does not name the rule.\n"
    "expected: ${expect_error}\nfirst error: ${first_error}\n\nwhole output:\n${output}")
endif()
message(STATUS "${SOURCE} fails as it must: ${first_error}")
