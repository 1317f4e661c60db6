// tests/test_util.h: small helpers shared by the test files.
#pragma once

#include <string>

#include "common/status.h"
#include "tests/temp_dir.h"

namespace patledger {

// The message for BOOST_TEST(r.has_value(), Why(r)). Boost.Test evaluates the message
// even when the check passes, so `r.error()` there would read an empty expected.
template <typename T>
std::string Why(const Result<T>& r) {
  return r.has_value() ? std::string("ok") : r.error().ToString();
}

}  // namespace patledger
