// Catch2 v2's main, compiled once for every test executable (v3 links
// Catch2::Catch2WithMain instead).
#ifndef PROCMODEL_CATCH2_V3
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
