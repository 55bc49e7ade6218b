cmake_policy(VERSION 3.21)
# Builds one markdown file's code blocks (see CMakeLists.txt here) and fails,
# naming each block that does not compile, when any does not. With
# EXPECT_FAILURE=<stem> it checks the mechanism instead: the build must fail,
# on block <stem> and on no other.
#
# cmake -DBUILD_DIR=... -DTARGET=... -DCONFIG=... -DMARKDOWN=... -DNAME=... -DBLOCKS_DIR=...
#       -DSOURCES=a.cpp,b.cpp [-DEXPECT_FAILURE=stem]
#       -P run_code_blocks.cmake

foreach(var BUILD_DIR TARGET MARKDOWN NAME BLOCKS_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_code_blocks.cmake: ${var} is not set")
  endif()
endforeach()

# The page as it is now: a block added or removed since the last configure
# changes the target's sources, so configure again first (a build alone
# would compile the old set once more).
include(${CMAKE_CURRENT_LIST_DIR}/code_blocks.cmake)
set(now)
procmodel_extract_code_blocks(${MARKDOWN} ${BLOCKS_DIR} ${NAME} now)
string(REPLACE "," ";" configured "${SOURCES}")
if(NOT now STREQUAL configured)
  message(STATUS "${MARKDOWN} changed since the last configure: configuring ${BUILD_DIR} again")
  execute_process(COMMAND ${CMAKE_COMMAND} ${BUILD_DIR} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "configuring ${BUILD_DIR} failed")
  endif()
endif()

set(config_args)
if(CONFIG)
  set(config_args --config ${CONFIG})
endif()
# --keep-going (make's -k): every block that fails is reported, not the first.
execute_process(
  COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET} ${config_args} -- -k
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE output
  ERROR_VARIABLE output)

# The blocks that failed: make and ninja both name the object they could not
# build ("...blocks/x_3.cpp.o] Error 1", "FAILED: .../blocks/x_3.cpp.o").
# Brackets out first: they would group list elements.
string(REGEX REPLACE "[][]" "" plain "${output}")
string(REGEX MATCHALL "blocks/[A-Za-z0-9_]+\\.cpp\\.o Error|FAILED: [^\n]*blocks/[A-Za-z0-9_]+\\.cpp\\.o"
  failed "${plain}")
set(failed_blocks)
foreach(f IN LISTS failed)
  string(REGEX MATCH "blocks/([A-Za-z0-9_]+)\\.cpp\\.o" m "${f}")
  list(APPEND failed_blocks ${CMAKE_MATCH_1})
endforeach()
list(REMOVE_DUPLICATES failed_blocks)

if(EXPECT_FAILURE)
  if(rc EQUAL 0)
    message(FATAL_ERROR "${MARKDOWN}: block ${EXPECT_FAILURE} must NOT compile, but the build succeeded")
  endif()
  if(NOT failed_blocks STREQUAL EXPECT_FAILURE)
    message(FATAL_ERROR "${MARKDOWN}: expected block ${EXPECT_FAILURE} alone to fail; "
      "failed: '${failed_blocks}'\n${output}")
  endif()
  message(STATUS "${MARKDOWN}: block ${EXPECT_FAILURE} fails to compile, as it must, and no other")
  return()
endif()

if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${MARKDOWN}: code block(s) that do not compile: ${failed_blocks} "
    "(the messages below name the markdown file and line; the generated files are under "
    "${BUILD_DIR}/tests/docs/blocks/)\n${output}")
endif()
message(STATUS "${MARKDOWN}: every code block compiles")
