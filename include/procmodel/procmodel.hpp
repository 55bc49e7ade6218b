#pragma once

/// @file procmodel.hpp
/// Everything, with the defaults: `procmodel::supervisor<Worker>(options).run(argc, argv)`.
///
/// Built with PROCMODEL_SEPARATE_COMPILATION (detail/config.hpp), it gives
/// only what a server's own files use: the options, the worker's view and
/// serve(), and `supervisor<Worker>` over the compiled any_supervisor. The policies and
/// `basic_supervisor` are then one include away (`<procmodel/supervisor.hpp>`).

#include "detail/config.hpp"

#include "connections.hpp"
#include "log.hpp"
#include "options.hpp"
#include "signals.hpp"
#include "worker_context.hpp"

#if defined(PROCMODEL_HEADER_ONLY)
#include "asio_loop.hpp"
#include "channel.hpp"
#include "control.hpp"
#include "lifecycle.hpp"
#include "listeners.hpp"
#include "pid_file.hpp"
#include "policies.hpp"
#include "spawner.hpp"
#include "program.hpp"
#include "exec_spawner.hpp"
#include "helper_process.hpp"
#include "supervisor.hpp"
#else
#include "any_supervisor.hpp"
#endif

/// procmodel's version, as MAJOR * 10000 + MINOR * 100 + PATCH.
#define PROCMODEL_VERSION 100
