# Builds and runs one consumer of procmodel; registered with ctest by
# tests/CMakeLists.txt. Every step must succeed; a failing step stops with its
# output. Each way ends by running the programs it built (PROGRAMS, each
# program/consumer.cpp: `consumer` header-only, `consumer_compiled` against
# procmodel's static library): `--help`, then a whole supervisor run with one worker.
#
#   cmake -DMODE=find_package -DPROCMODEL_BINARY_DIR=<procmodel build> -DPREFIX=<dir>
#         -DSOURCE_DIR=<consumer project> -DWORK_DIR=<dir> -DCXX_COMPILER=<c++>
#         -DGENERATOR=<generator> -DPROGRAMS=<name>[,<name>...] [-DMAKE_PROGRAM=<make>]
#         [-DBUILD_TYPE=<config>] [-DFMT_HEADER_ONLY=0|1]
#         [-DBUILD_TARGETS=<target>[,<target>...]] -P run_consumer.cmake
#   cmake -DMODE=add_subdirectory|fetch_content -DPROCMODEL_ROOT=<procmodel source> ...
#   cmake -DMODE=pkg_config -DPROCMODEL_ROOT=<procmodel source> -DPREFIX=<dir>
#         -DPKG_CONFIG=<pkg-config> -DVERSION=<procmodel version>
#         -DINSTALLED_TARGETS=<target>[,<target>...] ...
#
# pkg_config follows the README's "Install" section: a top-level configure with
# tests and examples off (which must define no other target to build),
# `cmake --install`, then `c++ $(pkg-config --cflags --libs procmodel)` (or
# procmodel-compiled for consumer_compiled).
cmake_minimum_required(VERSION 3.21)

foreach(var MODE WORK_DIR CXX_COMPILER GENERATOR PROGRAMS)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()

function(require)
  foreach(var IN LISTS ARGN)
    if(NOT ${var})
      message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required for ${MODE}")
    endif()
  endforeach()
endfunction()

# run_step(<what> <command>...): the step's output is in `step_output`; it may
# last `step_timeout` seconds.
set(step_timeout 840)
function(run_step what)
  message(STATUS "consumer (${MODE}): ${what}")
  string(REPLACE ";" " " shown "${ARGN}")
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output
    TIMEOUT ${step_timeout})
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "consumer (${MODE}): ${what} failed (${rc})\n"
      "command: ${shown}\n${output}")
  endif()
  set(step_output "${output}" PARENT_SCOPE)
endfunction()

function(expect_output what text)
  string(FIND "${step_output}" "${text}" at)
  if(at LESS 0)
    message(FATAL_ERROR "consumer (${MODE}): ${what}: no '${text}' in its output:\n${step_output}")
  endif()
endfunction()

set(generator_args -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(MAKE_PROGRAM)
  list(APPEND generator_args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
set(config_args)
if(BUILD_TYPE)
  list(APPEND generator_args -DCMAKE_BUILD_TYPE=${BUILD_TYPE})
  set(config_args --config ${BUILD_TYPE})
endif()
if(NOT DEFINED FMT_HEADER_ONLY)
  set(FMT_HEADER_ONLY 0)
endif()
set(configure_args -S ${SOURCE_DIR} -B ${WORK_DIR} ${generator_args}
  -DCONSUMER_FMT_HEADER_ONLY=${FMT_HEADER_ONLY})

string(REPLACE "," ";" PROGRAMS "${PROGRAMS}")
string(REPLACE "," ";" INSTALLED_TARGETS "${INSTALLED_TARGETS}")
file(REMOVE_RECURSE ${WORK_DIR})

if(MODE STREQUAL "find_package")
  require(SOURCE_DIR PROCMODEL_BINARY_DIR PREFIX)
  file(REMOVE_RECURSE ${PREFIX})
  string(REPLACE "," ";" BUILD_TARGETS "${BUILD_TARGETS}")
  foreach(target IN LISTS BUILD_TARGETS)
    run_step("build ${target}, which the install takes"
      ${CMAKE_COMMAND} --build ${PROCMODEL_BINARY_DIR} --target ${target} ${config_args})
  endforeach()
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
  run_step("build" ${CMAKE_COMMAND} --build ${WORK_DIR} ${config_args})
elseif(MODE STREQUAL "add_subdirectory" OR MODE STREQUAL "fetch_content")
  require(SOURCE_DIR PROCMODEL_ROOT)
  run_step("configure" ${CMAKE_COMMAND} ${configure_args} -DPROCMODEL_ROOT=${PROCMODEL_ROOT})
  run_step("build" ${CMAKE_COMMAND} --build ${WORK_DIR} ${config_args})
elseif(MODE STREQUAL "pkg_config")
  if(NOT PKG_CONFIG)
    message(FATAL_ERROR "consumer (pkg_config): no pkg-config program; install pkg-config")
  endif()
  require(PROCMODEL_ROOT PREFIX VERSION INSTALLED_TARGETS)
  file(REMOVE_RECURSE ${PREFIX})
  set(build ${WORK_DIR}/procmodel)
  # Ask CMake's file API which targets the configure defines.
  file(WRITE ${build}/.cmake/api/v1/query/codemodel-v2 "")
  run_step("configure procmodel to install only"
    ${CMAKE_COMMAND} -S ${PROCMODEL_ROOT} -B ${build} ${generator_args}
      -DPROCMODEL_BUILD_TESTS=OFF -DPROCMODEL_BUILD_EXAMPLES=OFF)
  file(GLOB index ${build}/.cmake/api/v1/reply/index-*.json)
  file(READ "${index}" json)
  string(JSON codemodel GET "${json}" reply codemodel-v2 jsonFile)
  file(READ ${build}/.cmake/api/v1/reply/${codemodel} json)
  string(JSON last LENGTH "${json}" configurations 0 targets)
  math(EXPR last "${last} - 1")
  foreach(i RANGE ${last})
    string(JSON name GET "${json}" configurations 0 targets ${i} name)
    string(JSON file GET "${json}" configurations 0 targets ${i} jsonFile)
    file(READ ${build}/.cmake/api/v1/reply/${file} target_json)
    string(JSON type GET "${target_json}" type)
    if(NOT type MATCHES "^(INTERFACE_LIBRARY|UTILITY)$" AND NOT name IN_LIST INSTALLED_TARGETS)
      message(FATAL_ERROR "consumer (pkg_config): a configure to install only defines "
        "${type} '${name}', which is not installed")
    endif()
  endforeach()
  run_step("build procmodel" ${CMAKE_COMMAND} --build ${build} ${config_args})
  run_step("install into ${PREFIX}"
    ${CMAKE_COMMAND} --install ${build} --prefix ${PREFIX} ${config_args})

  file(GLOB_RECURSE pc_files ${PREFIX}/*.pc)
  list(FILTER pc_files INCLUDE REGEX "/pkgconfig/procmodel\\.pc$")
  list(LENGTH pc_files count)
  if(NOT count EQUAL 1)
    message(FATAL_ERROR "consumer (pkg_config): expected one pkgconfig/procmodel.pc "
      "under ${PREFIX}, found: ${pc_files}")
  endif()
  get_filename_component(pc_dir ${pc_files} DIRECTORY)
  # Ahead of the system's own directories, where fmt.pc is.
  set(ENV{PKG_CONFIG_PATH} "${pc_dir}:$ENV{PKG_CONFIG_PATH}")
  file(MAKE_DIRECTORY ${WORK_DIR})
  foreach(name IN LISTS PROGRAMS)
    # consumer: header-only procmodel.pc; consumer_compiled: procmodel-compiled.pc.
    if(name STREQUAL "consumer_compiled")
      set(module procmodel-compiled)
      set(compiled 1)
    else()
      set(module procmodel)
      set(compiled 0)
    endif()
    run_step("pkg-config --modversion ${module}" ${PKG_CONFIG} --modversion ${module})
    string(STRIP "${step_output}" found_version)
    if(NOT found_version STREQUAL VERSION)
      message(FATAL_ERROR "consumer (pkg_config): ${module} is version '${found_version}', "
        "expected '${VERSION}'")
    endif()
    run_step("pkg-config --cflags --libs ${module}" ${PKG_CONFIG} --cflags --libs ${module})
    separate_arguments(flags UNIX_COMMAND "${step_output}")
    run_step("compile and link ${name} with ${module}'s flags"
      ${CXX_COMPILER} -std=c++20 -DCONSUMER_FMT_HEADER_ONLY=0 -DCONSUMER_COMPILED=${compiled}
        ${CMAKE_CURRENT_LIST_DIR}/program/consumer.cpp -o ${WORK_DIR}/${name} ${flags})
  endforeach()
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()

foreach(name IN LISTS PROGRAMS)
  set(program)
  foreach(candidate ${WORK_DIR}/${name} ${WORK_DIR}/${BUILD_TYPE}/${name})
    if(EXISTS ${candidate} AND NOT IS_DIRECTORY ${candidate})
      set(program ${candidate})
      break()
    endif()
  endforeach()
  if(NOT program)
    message(FATAL_ERROR "consumer (${MODE}): no '${name}' executable under ${WORK_DIR}")
  endif()
  set(step_timeout 60)
  run_step("run ${program} --help" ${program} --help)
  expect_output("${name} --help" "--workers N")
  # The worker prints this line, then asks its master for a graceful stop.
  run_step("run ${program} with one worker" ${program} --workers 1)
  expect_output("${name}'s run" "consumer: worker 0 ready on 127.0.0.1:")
endforeach()
# A consumer that also builds the installed test doubles runs them.
get_filename_component(program_dir ${program} DIRECTORY)
if(EXISTS ${program_dir}/consumer_testing)
  run_step("run ${program_dir}/consumer_testing" ${program_dir}/consumer_testing)
  expect_output("consumer_testing" "testing doubles: ok")
endif()
message(STATUS "consumer (${MODE}): ok")
