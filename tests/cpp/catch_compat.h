// One include for Catch2 2.13 (Debian) and 3.x (the GPU machine).
#pragma once

// c10's logging defines a one-argument CHECK (a fatal assertion); load it first
// and drop that macro so that CHECK is Catch2's in every test file.
#include <c10/util/Logging.h>
#undef CHECK

#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#else
#include <catch2/catch.hpp>
#endif
