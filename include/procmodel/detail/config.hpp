#pragma once

/// @file config.hpp
/// Header-only (the default) or separately compiled, as Asio and fmt offer.
///
/// Header-only: every definition is inline and comes with the headers.
/// Separately compiled: define PROCMODEL_SEPARATE_COMPILATION for the whole
/// program (the `procmodel::compiled` CMake target does) and compile
/// `<procmodel/src.hpp>` in exactly one of its translation units; the other
/// files then see declarations only and build several times faster.

#if defined(PROCMODEL_SEPARATE_COMPILATION)
#define PROCMODEL_DECL
#else
#define PROCMODEL_HEADER_ONLY 1
#define PROCMODEL_DECL inline
#endif
