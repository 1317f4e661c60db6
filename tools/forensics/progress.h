// tools/forensics/progress.h: the progress bar of the forensic commands.
//
// Long scans draw one line on stderr, redrawn in place ("\r") at most ten times a
// second:
//
//   verify [=========>          ]  48% 1,204,000/2,500,000 events  812,000 ev/s  ETA 0:02
//
// only when stderr is a terminal and --quiet was not given (forensics::Run decides;
// the library is told through Io::progress). Progress never writes to stdout, so
// piping a command's output is unaffected. Done() erases the line.
//
// Thread safety: one thread per Progress.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

namespace patledger::forensics {

// The text of one progress line, without "\r": `label`, a bar of `width` cells,
// percent, done/total (thousands separated), events per second and the ETA
// (h:mm:ss or m:ss). `total` 0 means unknown: no bar, percent or ETA.
std::string RenderProgress(const std::string& label, std::uint64_t done,
                           std::uint64_t total, double elapsed_seconds, int width = 20);

// "1,234,567".
std::string Thousands(std::uint64_t n);

class Progress {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // Disabled (every call a no-op) unless `enabled`. `clock` is for tests.
  Progress(std::ostream& err, bool enabled, std::string label, std::uint64_t total,
           Clock clock = {});
  ~Progress();  // Done()
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` events so far; redraws if 100 ms passed since the last draw.
  void Update(std::uint64_t done);
  void set_total(std::uint64_t total) { total_ = total; }
  // Erases the line (once).
  void Done();
  bool enabled() const { return enabled_; }

 private:
  std::chrono::steady_clock::time_point Now() const;

  std::ostream& err_;
  bool enabled_;
  std::string label_;
  std::uint64_t total_;
  Clock clock_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::size_t drawn_width_ = 0;
  bool done_ = false;
};

}  // namespace patledger::forensics
