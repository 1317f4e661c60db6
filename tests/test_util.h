// tests/test_util.h: small helpers shared by the test files.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <system_error>
#include <thread>

#include "common/status.h"
#include "tests/temp_dir.h"

namespace patledger {

// The message for BOOST_TEST(r.has_value(), Why(r)). Boost.Test evaluates the message
// even when the check passes, so `r.error()` there would read an empty expected.
template <typename T>
std::string Why(const Result<T>& r) {
  return r.has_value() ? std::string("ok") : r.error().ToString();
}

// Copies the directory tree `from` to `to` (which must not exist) as it is at one
// moment, for a crash image of a ledger that is still open: RocksDB's background work
// may delete an obsolete file in the middle of a copy ("No such file"), so a copy that
// fails is thrown away and taken again (up to ~5 s). Returns the last error.
inline std::error_code CopyTreeOfLiveLedger(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (int attempt = 0; attempt < 50; ++attempt) {
    ec.clear();
    fs::copy(from, to, fs::copy_options::recursive, ec);
    if (!ec) return ec;
    std::error_code ignored;
    fs::remove_all(to, ignored);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return ec;
}

}  // namespace patledger
