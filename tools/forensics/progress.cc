#include "tools/forensics/progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>

namespace patledger::forensics {

std::string Thousands(std::uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  const std::size_t lead = digits.size() % 3;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && i >= lead && (i - lead) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

namespace {

std::string Duration(double seconds) {
  if (!(seconds >= 0) || seconds > 99 * 3600.0) return "--:--";
  const auto s = static_cast<std::uint64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%llu:%02llu:%02llu",
                  static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>(s / 60 % 60),
                  static_cast<unsigned long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llu:%02llu", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  }
  return buf;
}

}  // namespace

std::string RenderProgress(const std::string& label, std::uint64_t done,
                           std::uint64_t total, double elapsed_seconds, int width) {
  const double rate =
      elapsed_seconds > 0 ? static_cast<double>(done) / elapsed_seconds : 0;
  std::string line = label + " ";
  if (total > 0) {
    const double fraction =
        std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
    const int full = static_cast<int>(fraction * width);
    line += '[';
    for (int i = 0; i < width; ++i) {
      line += i < full ? '=' : (i == full ? '>' : ' ');
    }
    line += "] ";
    char pct[8];
    std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(fraction * 100));
    line += pct;
    line += ' ';
    line += Thousands(done);
    line += '/';
    line += Thousands(total);
    line += " events";
  } else {
    line += Thousands(done) + " events";
  }
  line += "  ";
  line += Thousands(static_cast<std::uint64_t>(rate));
  line += " ev/s";
  if (total > 0) {
    const double left = done >= total ? 0.0
                        : rate > 0    ? static_cast<double>(total - done) / rate
                                      : -1.0;
    line += "  ETA ";
    line += Duration(left);
  }
  return line;
}

Progress::Progress(std::ostream& err, bool enabled, std::string label,
                   std::uint64_t total, Clock clock)
    : err_(err),
      enabled_(enabled),
      label_(std::move(label)),
      total_(total),
      clock_(std::move(clock)) {
  start_ = Now();
  last_draw_ = start_;
}

Progress::~Progress() { Done(); }

std::chrono::steady_clock::time_point Progress::Now() const {
  return clock_ ? clock_() : std::chrono::steady_clock::now();
}

void Progress::Update(std::uint64_t done) {
  if (!enabled_ || done_) return;
  const auto now = Now();
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::string line = RenderProgress(label_, done, total_, elapsed);
  const std::size_t width = line.size();
  if (width < drawn_width_) line.append(drawn_width_ - width, ' ');
  drawn_width_ = width;
  err_ << '\r' << line << std::flush;
}

void Progress::Done() {
  if (!enabled_ || done_) return;
  done_ = true;
  if (drawn_width_ > 0)
    err_ << '\r' << std::string(drawn_width_, ' ') << '\r' << std::flush;
}

}  // namespace patledger::forensics
