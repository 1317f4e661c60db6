// Time for patledger: an injectable clock and the date/timestamp formats we use.
//
// All instants are UTC microseconds since the Unix epoch (int64). Token expiry
// is a calendar date, stored as days since 1970-01-01; a token whose expiry
// day is D stops working at 00:00:00 UTC on D (the seed: "at midnight UTC").
//
// Thread safety: SystemClock is stateless; ManualClock may be read from any
// thread while one thread sets it (the value is an atomic).
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace patledger {

inline constexpr std::int64_t kMicrosPerDay = 86'400'000'000LL;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::int64_t NowMicros() const = 0;
};

class SystemClock final : public Clock {
 public:
  std::int64_t NowMicros() const override;
  static const SystemClock* Get();
};

// A clock tests set by hand (expiry at the midnight boundary, say).
class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::int64_t now_micros) : now_(now_micros) {}
  std::int64_t NowMicros() const override { return now_.load(std::memory_order_relaxed); }
  void Set(std::int64_t now_micros) { now_.store(now_micros, std::memory_order_relaxed); }
  void Advance(std::int64_t micros) { now_.fetch_add(micros, std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> now_;
};

// Day number (days since 1970-01-01) of the UTC date that contains `micros`.
std::int32_t DayOf(std::int64_t micros);

// "2026-11-28" <-> day number. Parse refuses anything but a real YYYY-MM-DD date.
std::optional<std::int32_t> ParseDate(std::string_view text);
std::string FormatDate(std::int32_t day);

// ISO 8601 UTC with milliseconds, as GitLab writes: "2026-11-28T04:48:37.123Z".
std::string FormatTimestamp(std::int64_t micros);
// Accepts "YYYY-MM-DD", "YYYY-MM-DDTHH:MM[:SS[.fff...]]" followed by "Z",
// "+HH:MM" or nothing (UTC), or "@<unix seconds>".
std::optional<std::int64_t> ParseTimestamp(std::string_view text);

}  // namespace patledger
