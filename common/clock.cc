#include "common/clock.h"

#include <chrono>
#include <cstdio>

namespace patledger {
namespace {

namespace chr = std::chrono;

bool ParseFixed(std::string_view s, std::size_t pos, std::size_t len, int* out) {
  if (pos + len > s.size()) return false;
  int v = 0;
  for (std::size_t i = pos; i < pos + len; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

// Floor division, so instants before 1970 land on the right day.
std::int64_t FloorDiv(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

std::int64_t SystemClock::NowMicros() const {
  return chr::duration_cast<chr::microseconds>(chr::system_clock::now().time_since_epoch())
      .count();
}

const SystemClock* SystemClock::Get() {
  static const SystemClock clock;
  return &clock;
}

std::int32_t DayOf(std::int64_t micros) {
  return static_cast<std::int32_t>(FloorDiv(micros, kMicrosPerDay));
}

std::optional<std::int32_t> ParseDate(std::string_view text) {
  int y, m, d;
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return std::nullopt;
  if (!ParseFixed(text, 0, 4, &y) || !ParseFixed(text, 5, 2, &m) ||
      !ParseFixed(text, 8, 2, &d)) {
    return std::nullopt;
  }
  chr::year_month_day ymd{chr::year{y}, chr::month{static_cast<unsigned>(m)},
                          chr::day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return std::nullopt;
  return static_cast<std::int32_t>(chr::sys_days{ymd}.time_since_epoch().count());
}

std::string FormatDate(std::int32_t day) {
  chr::year_month_day ymd{chr::sys_days{chr::days{day}}};
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
  return buf;
}

std::string FormatTimestamp(std::int64_t micros) {
  const std::int32_t day = DayOf(micros);
  const std::int64_t in_day = micros - static_cast<std::int64_t>(day) * kMicrosPerDay;
  const std::int64_t secs = in_day / 1'000'000;
  const int millis = static_cast<int>((in_day % 1'000'000) / 1000);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%sT%02d:%02d:%02d.%03dZ", FormatDate(day).c_str(),
                static_cast<int>(secs / 3600), static_cast<int>(secs / 60 % 60),
                static_cast<int>(secs % 60), millis);
  return buf;
}

std::optional<std::int64_t> ParseTimestamp(std::string_view text) {
  if (!text.empty() && text[0] == '@') {
    std::int64_t v = 0;
    bool neg = text.size() > 1 && text[1] == '-';
    std::size_t i = neg ? 2 : 1;
    if (i >= text.size() || text.size() - i > 12) return std::nullopt;
    for (; i < text.size(); ++i) {
      if (text[i] < '0' || text[i] > '9') return std::nullopt;
      v = v * 10 + (text[i] - '0');
    }
    return (neg ? -v : v) * 1'000'000;
  }
  auto day = ParseDate(text.substr(0, 10));
  if (!day) return std::nullopt;
  std::int64_t micros = static_cast<std::int64_t>(*day) * kMicrosPerDay;
  std::string_view rest = text.substr(10);
  if (rest.empty()) return micros;
  if (rest[0] != 'T' && rest[0] != ' ') return std::nullopt;
  int hh, mm, ss = 0;
  if (!ParseFixed(rest, 1, 2, &hh) || rest.size() < 6 || rest[3] != ':' ||
      !ParseFixed(rest, 4, 2, &mm) || hh > 23 || mm > 59) {
    return std::nullopt;
  }
  std::size_t pos = 6;
  if (pos < rest.size() && rest[pos] == ':') {
    if (!ParseFixed(rest, pos + 1, 2, &ss) || ss > 60) return std::nullopt;
    pos += 3;
  }
  std::int64_t frac = 0;
  if (pos < rest.size() && rest[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < rest.size() && rest[pos] >= '0' && rest[pos] <= '9') {
      if (digits < 6) frac = frac * 10 + (rest[pos] - '0'), ++digits;
      ++pos;
    }
    if (digits == 0) return std::nullopt;
    while (digits++ < 6) frac *= 10;
  }
  std::int64_t offset_secs = 0;
  std::string_view zone = rest.substr(pos);
  if (zone == "Z" || zone.empty()) {
  } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':') {
    int oh, om;
    if (!ParseFixed(zone, 1, 2, &oh) || !ParseFixed(zone, 4, 2, &om)) return std::nullopt;
    offset_secs = (oh * 3600 + om * 60) * (zone[0] == '+' ? 1 : -1);
  } else {
    return std::nullopt;
  }
  micros += ((hh * 3600 + mm * 60 + ss) - offset_secs) * 1'000'000LL + frac;
  return micros;
}

}  // namespace patledger
