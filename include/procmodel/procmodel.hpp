#pragma once

/// @file procmodel.hpp
/// Everything, with the defaults: `procmodel::supervisor<Worker>(options).run(argc, argv)`.

#include "asio_loop.hpp"
#include "channel.hpp"
#include "connections.hpp"
#include "control.hpp"
#include "lifecycle.hpp"
#include "listeners.hpp"
#include "log.hpp"
#include "options.hpp"
#include "pid_file.hpp"
#include "signals.hpp"
#include "spawner.hpp"
#include "supervisor.hpp"
#include "worker_context.hpp"

/// procmodel's version, as MAJOR * 10000 + MINOR * 100 + PATCH.
#define PROCMODEL_VERSION 100
