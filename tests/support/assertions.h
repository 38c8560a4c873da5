// Catch2 assertions for kiln::Error.
#pragma once

#include <catch2/catch.hpp>

#include "kiln/util/error.h"

// Asserts that `expression` throws kiln::Error with code `expected` and a
// message containing `fragment`.
#define REQUIRE_KILN_ERROR_MENTIONS(expression, expected, fragment)             \
  do {                                                                           \
    try {                                                                        \
      expression;                                                                \
      FAIL("no kiln::Error was thrown");                                        \
    } catch (const kiln::Error& error) {                                         \
      INFO(error.what());                                                        \
      REQUIRE(error.code_name() == kiln::code_name(expected));                   \
      REQUIRE(std::string(error.what()).find(fragment) != std::string::npos);    \
    }                                                                            \
  } while (false)

// Asserts that `expression` throws kiln::Error with code `expected`.
#define REQUIRE_KILN_ERROR(expression, expected) REQUIRE_KILN_ERROR_MENTIONS(expression, expected, "")
