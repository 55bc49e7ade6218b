# Builds and runs one consumer project of procmodel; registered with ctest by
# tests/CMakeLists.txt. Every step must succeed; a failing step stops with its
# output.
#
#   cmake -DMODE=find_package -DPROCMODEL_BINARY_DIR=<procmodel build> -DPREFIX=<dir>
#         -DSOURCE_DIR=<consumer> -DWORK_DIR=<dir> -DCXX_COMPILER=<c++>
#         -DGENERATOR=<generator> [-DMAKE_PROGRAM=<make>] [-DBUILD_TYPE=<config>]
#         -P run_consumer.cmake
#   cmake -DMODE=add_subdirectory -DPROCMODEL_ROOT=<procmodel source> ... -P run_consumer.cmake
cmake_minimum_required(VERSION 3.21)

foreach(var MODE SOURCE_DIR WORK_DIR CXX_COMPILER GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()

function(run_step what)
  message(STATUS "consumer (${MODE}): ${what}")
  string(REPLACE ";" " " shown "${ARGN}")
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output
    TIMEOUT 280)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "consumer (${MODE}): ${what} failed (${rc})\n"
      "command: ${shown}\n${output}")
  endif()
endfunction()

set(configure_args
  -S ${SOURCE_DIR} -B ${WORK_DIR}
  -G ${GENERATOR}
  -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(MAKE_PROGRAM)
  list(APPEND configure_args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
set(config_args)
if(BUILD_TYPE)
  list(APPEND configure_args -DCMAKE_BUILD_TYPE=${BUILD_TYPE})
  set(config_args --config ${BUILD_TYPE})
endif()

file(REMOVE_RECURSE ${WORK_DIR})

if(MODE STREQUAL "find_package")
  foreach(var PROCMODEL_BINARY_DIR PREFIX)
    if(NOT ${var})
      message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required for find_package")
    endif()
  endforeach()
  file(REMOVE_RECURSE ${PREFIX})
  run_step("install into ${PREFIX}"
    ${CMAKE_COMMAND} --install ${PROCMODEL_BINARY_DIR} --prefix ${PREFIX} ${config_args})
  run_step("configure" ${CMAKE_COMMAND} ${configure_args} -DCMAKE_PREFIX_PATH=${PREFIX})
  # The package must come from the fresh prefix, not from anywhere else.
  file(STRINGS ${WORK_DIR}/CMakeCache.txt found REGEX "^procmodel_DIR:")
  string(REGEX REPLACE "^procmodel_DIR:[A-Z]+=" "" found "${found}")
  file(REAL_PATH "${PREFIX}" real_prefix)
  file(REAL_PATH "${found}" real_found)
  string(FIND "${real_found}" "${real_prefix}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "consumer (find_package): procmodel found at '${found}', "
      "not under '${PREFIX}'")
  endif()
elseif(MODE STREQUAL "add_subdirectory")
  if(NOT PROCMODEL_ROOT)
    message(FATAL_ERROR "run_consumer.cmake: -DPROCMODEL_ROOT=... is required for add_subdirectory")
  endif()
  run_step("configure" ${CMAKE_COMMAND} ${configure_args} -DPROCMODEL_ROOT=${PROCMODEL_ROOT})
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

run_step("build" ${CMAKE_COMMAND} --build ${WORK_DIR} ${config_args})

set(program)
foreach(candidate ${WORK_DIR}/consumer ${WORK_DIR}/${BUILD_TYPE}/consumer)
  if(EXISTS ${candidate} AND NOT IS_DIRECTORY ${candidate})
    set(program ${candidate})
    break()
  endif()
endforeach()
if(NOT program)
  message(FATAL_ERROR "consumer (${MODE}): no 'consumer' executable under ${WORK_DIR}")
endif()
run_step("run ${program} --help" ${program} --help)
# A consumer that also builds the installed test doubles runs them.
get_filename_component(program_dir ${program} DIRECTORY)
if(EXISTS ${program_dir}/consumer_testing)
  run_step("run ${program_dir}/consumer_testing" ${program_dir}/consumer_testing)
endif()
message(STATUS "consumer (${MODE}): ok")
