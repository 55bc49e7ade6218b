#pragma once

/// @file programs.hpp
/// The example programs the integration tests run: their paths, which
/// tests/CMakeLists.txt passes as PROCMODEL_HTTP_SERVER and
/// PROCMODEL_ECHO_SERVER (built header-only, or on the compiled library for
/// the `_compiled` suites).

#include <string>

#ifndef PROCMODEL_HTTP_SERVER
#error "PROCMODEL_HTTP_SERVER must name the http_server binary"
#endif
#ifndef PROCMODEL_ECHO_SERVER
#error "PROCMODEL_ECHO_SERVER must name the echo_server binary"
#endif

namespace pmtest {

inline const std::string http_server = PROCMODEL_HTTP_SERVER;
inline const std::string echo_server = PROCMODEL_ECHO_SERVER;
#ifdef PROCMODEL_EXEC_MASTER
/// examples/06-exec: a master whose workers are worker.py, run by python3.
inline const std::string exec_master = PROCMODEL_EXEC_MASTER;
inline const std::string exec_worker = PROCMODEL_EXEC_WORKER;
inline const std::string python3 = PROCMODEL_PYTHON3;
#endif
#ifdef PROCMODEL_HELPER_MASTER
/// examples/05-helper-process: workers plus a "janitor" helper process.
inline const std::string helper_master = PROCMODEL_HELPER_MASTER;
#endif

}  // namespace pmtest
