// bench/bench_util.h: what every patledger benchmark shares — timing, medians, the
// machine description, and digests that look like HMAC outputs.
//
// Benchmarks are programs, never tests: they print figures and ratios against a peer
// measured in the same run; they assert nothing about speed.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace patledger::bench {

using Digest = std::array<std::uint8_t, 32>;

inline std::uint64_t SplitMix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Token n's digest: uniformly random-looking 32 bytes, distinct for distinct n.
inline Digest MakeDigest(std::uint64_t n) {
  Digest d;
  std::uint64_t w[4] = {SplitMix(n), SplitMix(n ^ 0xA5A5A5A5ULL), SplitMix(n + 7),
                        SplitMix(n * 3 + 1)};
  static_assert(sizeof(w) == 32);
  __builtin_memcpy(d.data(), w, 32);
  return d;
}

// Keeps `v` (and the work that made it) from being optimized away.
template <typename T>
inline void DoNotOptimize(const T& v) {
  asm volatile("" : : "m"(v) : "memory");
}

inline double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0 : (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2);
}

inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * v.size()));
  return v[i];
}

// "Intel(R) Xeon(R) ... | 2 cores | Linux 6.x" for the top of every report.
inline std::string MachineLine() {
  std::string model = "unknown CPU";
  std::ifstream cpu("/proc/cpuinfo");
  for (std::string line; std::getline(cpu, line);) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  std::string kernel;
  std::ifstream k("/proc/sys/kernel/osrelease");
  std::getline(k, kernel);
  return model + " | " + std::to_string(std::thread::hardware_concurrency()) +
         " hardware threads | Linux " + kernel;
}

// The date and time now, UTC, as "2026-11-29T03:10:12Z".
inline std::string UtcNow() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The header every benchmark prints first: name, machine, date, and the run's
// parameters ("reps 5 (median) | tokens 10000000 | ...").
inline void PrintHeader(const std::string& bench, const std::string& params) {
  std::printf("# %s\n\nmachine: %s\ndate: %s\n%s\n\n", bench.c_str(),
              MachineLine().c_str(), UtcNow().c_str(), params.c_str());
  std::fflush(stdout);
}

// One machine-readable line per figure, for bench/run_all.sh:
//   RESULT bench=auth name=valid tokens=10000000 threads=1 ours=212 peer=1650
//          ratio=0.128 unit=ns better=lower
// `params` is "key=value ..." (no spaces inside values); ratio = ours / peer; a
// figure without a peer has peer=NA ratio=NA.
inline void PrintResult(const std::string& bench, const std::string& name,
                        const std::string& params, double ours, double peer,
                        const std::string& unit, bool higher_is_better) {
  char figures[160];
  if (peer > 0) {
    std::snprintf(figures, sizeof figures, "ours=%.6g peer=%.6g ratio=%.4g", ours, peer,
                  ours / peer);
  } else {
    std::snprintf(figures, sizeof figures, "ours=%.6g peer=NA ratio=NA", ours);
  }
  std::printf("RESULT bench=%s name=%s %s%s%s unit=%s better=%s\n", bench.c_str(),
              name.c_str(), params.c_str(), params.empty() ? "" : " ", figures,
              unit.c_str(), higher_is_better ? "higher" : "lower");
  std::fflush(stdout);
}

// VmRSS or VmHWM ("VmRSS:", "VmHWM:") of process `pid` ("self"), bytes; 0 if unknown.
inline std::size_t StatusBytes(const std::string& field, const std::string& pid = "self") {
  std::ifstream f("/proc/" + pid + "/status");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind(field, 0) == 0) return std::stoull(line.substr(field.size())) * 1024;
  }
  return 0;
}

// Resident set size of this process, bytes.
inline std::size_t RssBytes() {
  std::ifstream f("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * 4096;
}

}  // namespace patledger::bench
