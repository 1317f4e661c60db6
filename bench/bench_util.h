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

// Resident set size of this process, bytes.
inline std::size_t RssBytes() {
  std::ifstream f("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * 4096;
}

}  // namespace patledger::bench
