#pragma once

/// @file src.hpp
/// The separately compiled part of procmodel. Compile this in exactly one
/// translation unit of a program built with PROCMODEL_SEPARATE_COMPILATION
/// defined everywhere (the `procmodel::compiled` CMake target does both):
///
/// @code
/// // procmodel.cpp
/// #include <procmodel/src.hpp>
/// @endcode

#if !defined(PROCMODEL_SEPARATE_COMPILATION)
#error "<procmodel/src.hpp> is for programs built with PROCMODEL_SEPARATE_COMPILATION defined in every file"
#endif

#include "impl/options.ipp"
#include "impl/worker_context.ipp"
#include "impl/connections.ipp"
#include "impl/any_supervisor.ipp"
