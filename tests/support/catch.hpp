#pragma once

// The one place tests include Catch2 from: v2.13 (what Debian 12 ships) or v3,
// which tests/CMakeLists.txt announces with PROCMODEL_CATCH2_V3.
#ifdef PROCMODEL_CATCH2_V3
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

#ifndef SKIP  // Catch2 v2 has no SKIP: a warning, and the test case ends there
#define SKIP(msg) \
  do {            \
    WARN(msg);    \
    return;       \
  } while (false)
#endif
