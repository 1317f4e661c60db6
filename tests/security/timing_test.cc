// Specification of the auth path's timing (issue 7, point 10): looking up a wrong
// digest that shares 31 of its 32 bytes (and its bucket) with a stored one takes the
// same time as looking up any other wrong digest in that bucket.
//
// Digests are HMACs under the instance key, so nobody can pick a token by the prefix of
// its digest; the test works where the comparison happens, index::TokenIndex::Lookup,
// fed crafted digests directly.
//
// Method (dudect, Reparaz et al. 2017): two classes of input, measured interleaved in a
// random order, each sample one call timed with rdtsc (lfence on both sides; steady_clock
// off x86); the first samples are discarded as warm-up; Welch's t between the classes,
// on all samples and on samples cropped at several percentiles of the pooled
// distribution (cropping removes the long tail interrupts and preemption add). A round
// (one such measurement) says "the classes differ" when some crop has |t| above 4.5 AND
// a difference of means of at least half a TSC tick (~0.17 ns; the TSC here advances in
// steps of 2). Several rounds run, and each verdict is a majority, so one noisy round on
// this shared VM decides nothing.
//
// Why the floor: with 10M samples a round resolves hundredths of a tick, and in some
// process states (the case run after the others, the machine busy) near misses showed
// a difference of 0.02-0.10 tick (|t| up to 19), medians equal, the null control clean;
// run alone, or first, nothing. Far below anything observable, far below the smallest
// real leak (a word-wise early exit: 1-3 ticks, |t| 75-108 at 1M samples; memcmp:
// 0.5-1.2 ticks, |t| 29-36), and it is printed every round.
//
// Two controls. The positive one is a deliberately naive index with the same slot
// layout and probe sequence whose key comparison exits at the first differing byte: the
// same harness must catch it (|t| large), or a pass of the real index would prove
// nothing. The null one compares two pools of the same kind of input (random misses):
// it must NOT be flagged, or the harness itself makes differences. (It earned its place:
// with the two classes' inputs in differently aligned arrays, 10M-sample rounds showed
// |t| up to 9 with a sign that changed from round to round; every input now has its own
// cache line in identically laid out pools.)
//
// Quick version (ctest): 5 rounds of 1M samples per case, a few seconds.
// Long version: PATLEDGER_LONG=1 or PATLEDGER_TIMING_LONG=1 (15 rounds of 10M samples).

#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "index/token_index.h"

namespace patledger::index {
namespace {

constexpr double kThreshold = 4.5;      // the dudect paper's bound (dudect.h warns at 10)
// A difference smaller than this (in TSC ticks, ~0.35 ns here; the TSC advances by 2) is
// not called one, however significant: see the header.
constexpr double kMinEffect = 0.5;
constexpr std::size_t kStored = 1000;   // tokens in the index
constexpr std::size_t kPool = 4096;     // inputs per pool, 64 B each: 256 KiB, in L2
constexpr std::size_t kWarmup = 20'000; // samples discarded at the start of a round
// Pooled percentiles at which the samples are also cropped (1.0 = no crop).
constexpr std::array<double, 6> kCrops = {1.0, 0.99, 0.95, 0.90, 0.75, 0.50};

struct Settings {
  int rounds;
  std::size_t samples;  // per round, both classes together
};

bool EnvSet(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::string(v) != "0";
}

Settings GetSettings() {
  if (EnvSet("PATLEDGER_LONG") || EnvSet("PATLEDGER_TIMING_LONG")) return {15, 10'000'000};
  return {5, 1'000'000};
}

inline std::uint64_t Ticks() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_lfence();
  const std::uint64_t t = __rdtsc();
  _mm_lfence();
  return t;
#else
  return static_cast<std::uint64_t>(
      std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

std::uint64_t Word0(const TokenDigest& d) {
  std::uint64_t w;
  std::memcpy(&w, d.data(), sizeof w);
  return w;
}

// ---- the control: the same table, compared naively ---------------------------------

// An early-exit byte comparison, through volatile so the compiler can turn it neither
// into a word compare nor into a call to memcmp (which is itself vectorized).
[[gnu::noinline]] bool NaiveEqual(const std::uint8_t* a, const std::uint8_t* b) {
  const volatile std::uint8_t* va = a;
  const volatile std::uint8_t* vb = b;
  for (int i = 0; i < 32; ++i) {
    if (va[i] != vb[i]) return false;
  }
  return true;
}

// TokenIndex's layout (64-byte slots, bucket = first word & mask, linear probing),
// with NaiveEqual in place of the branch-free 32-byte comparison.
class NaiveIndex {
 public:
  explicit NaiveIndex(std::size_t capacity) : slots_(capacity), mask_(capacity - 1) {}
  void Insert(const TokenDigest& d) {
    std::size_t i = Word0(d) & mask_;
    while (slots_[i].used) i = (i + 1) & mask_;
    std::memcpy(slots_[i].key, d.data(), 32);
    slots_[i].used = true;
  }
  [[gnu::noinline]] bool Lookup(const TokenDigest& d) const {
    for (std::size_t i = Word0(d) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (!s.used) return false;
      if (NaiveEqual(s.key, d.data())) return true;
    }
  }

 private:
  struct alignas(64) Slot {
    std::uint8_t key[32] = {};
    bool used = false;
  };
  std::vector<Slot> slots_;
  std::size_t mask_;
};

// ---- statistics --------------------------------------------------------------------

struct Sample {
  std::uint32_t ticks;
  std::uint8_t cls;
};

struct Welch {
  double t = 0;     // Welch's t, class 0 against class 1
  double diff = 0;  // mean of class 0 minus mean of class 1, in ticks
};

// Welch's t of class 0 against class 1 over the samples with ticks <= limit.
Welch WelchT(const std::vector<Sample>& samples, std::uint32_t limit) {
  double n[2] = {0, 0}, mean[2] = {0, 0}, m2[2] = {0, 0};
  for (const Sample& s : samples) {
    if (s.ticks > limit) continue;
    const int c = s.cls;
    n[c] += 1;
    const double delta = s.ticks - mean[c];
    mean[c] += delta / n[c];
    m2[c] += delta * (s.ticks - mean[c]);
  }
  if (n[0] < 2 || n[1] < 2) return {};
  const double v0 = m2[0] / (n[0] - 1), v1 = m2[1] / (n[1] - 1);
  const double se = std::sqrt(v0 / n[0] + v1 / n[1]);
  const double diff = mean[0] - mean[1];
  if (se == 0) return {diff == 0 ? 0 : 1e9, diff};
  return {diff / se, diff};
}

struct RoundResult {
  std::array<Welch, kCrops.size()> w{};
  double max_abs_t = 0;  // over every crop
  bool differs = false;  // some crop has |t| > kThreshold and |diff| >= kMinEffect
  double median[2] = {0, 0};  // ticks, per class
};

RoundResult Analyse(const std::vector<Sample>& samples) {
  std::vector<std::uint32_t> pooled;
  std::vector<std::uint32_t> per[2];
  pooled.reserve(samples.size());
  for (const Sample& s : samples) {
    pooled.push_back(s.ticks);
    per[s.cls].push_back(s.ticks);
  }
  RoundResult r;
  for (std::size_t k = 0; k < kCrops.size(); ++k) {
    std::uint32_t limit = UINT32_MAX;
    if (kCrops[k] < 1.0) {
      const std::size_t at = static_cast<std::size_t>(kCrops[k] * (pooled.size() - 1));
      std::nth_element(pooled.begin(), pooled.begin() + at, pooled.end());
      limit = pooled[at];
    }
    r.w[k] = WelchT(samples, limit);
    r.max_abs_t = std::max(r.max_abs_t, std::abs(r.w[k].t));
    if (std::abs(r.w[k].t) > kThreshold && std::abs(r.w[k].diff) >= kMinEffect) {
      r.differs = true;
    }
  }
  for (int c = 0; c < 2; ++c) {
    auto mid = per[c].begin() + per[c].size() / 2;
    std::nth_element(per[c].begin(), mid, per[c].end());
    r.median[c] = *mid;
  }
  return r;
}

std::string Describe(const RoundResult& r) {
  std::ostringstream out;
  out.precision(2);
  out << std::fixed << (r.differs ? "DIFFER" : "same") << "  max|t| " << r.max_abs_t
      << "  t(crop 100/99/95/90/75/50%):";
  for (const Welch& w : r.w) out << " " << w.t;
  out << "  mean diff (ticks):";
  for (const Welch& w : r.w) out << " " << w.diff;
  out.precision(0);
  out << "  median " << r.median[0] << " vs " << r.median[1];
  return out.str();
}

// ---- the fixture: a stored digest, its 31-byte near misses, random misses ----------

class TimingFixture {
 public:
  TimingFixture() : rng_(0x5eed'7157'0000'0001ULL), index_(kStored), naive_(index_.capacity()) {
    const std::size_t capacity = index_.capacity();  // the naive copy's too
    std::vector<TokenDigest> stored(kStored);
    for (auto& d : stored) {
      d = Random();
      TokenEntry e;
      e.token_id = 1 + (&d - stored.data());
      BOOST_TEST_REQUIRE(index_.Insert(d, e));
      naive_.Insert(d);
    }
    BOOST_TEST_REQUIRE(index_.capacity() == capacity);  // no growth: same layout
    target_ = stored[0];
    const std::uint64_t mask = index_.capacity() - 1;
    // kNear: the target with only its last byte changed (31 of 32 bytes shared, so
    // the same bucket). kRandom, kRandom2: random digests placed in the target's bucket.
    for (std::size_t i = 0; i < kPool; ++i) {
      pools_[kNear][i].d = target_;
      pools_[kNear][i].d[31] ^= static_cast<std::uint8_t>(1 + rng_() % 255);
      for (int p : {kRandom, kRandom2}) {
        TokenDigest other = Random();
        const std::uint64_t w = (Word0(other) & ~mask) | (Word0(target_) & mask);
        std::memcpy(other.data(), &w, sizeof w);
        pools_[p][i].d = other;
      }
    }
    // Every input must miss, in both indexes (a hit would be a different path).
    TokenEntry e;
    for (const auto& pool : pools_) {
      for (const Input& in : pool) {
        BOOST_TEST_REQUIRE(!index_.Lookup(in.d, &e));
        BOOST_TEST_REQUIRE(!naive_.Lookup(in.d));
      }
    }
  }

  TokenDigest Random() {
    TokenDigest d;
    for (std::size_t i = 0; i < d.size(); i += 8) {
      const std::uint64_t w = rng_();
      std::memcpy(d.data() + i, &w, 8);
    }
    return d;
  }

  // One round: `samples` timed calls of `lookup`, in a random order, each on an input
  // of pool `a` (class 0) or pool `b` (class 1).
  template <typename Lookup>
  RoundResult Round(std::size_t samples, int a, int b, Lookup lookup) {
    const Input* pool[2] = {pools_[a].data(), pools_[b].data()};
    std::vector<std::uint8_t> order(kWarmup + samples);
    for (std::size_t i = 0; i < order.size(); i += 64) {
      std::uint64_t bits = rng_();
      for (std::size_t j = i; j < std::min(order.size(), i + 64); ++j, bits >>= 1) {
        order[j] = bits & 1;
      }
    }
    std::vector<Sample> out;
    out.reserve(samples);
    std::uint64_t sink = 0;
    for (std::size_t i = 0; i < order.size(); ++i) {
      const int cls = order[i];
      // Every input is copied to the same place before the timed call, so the classes
      // differ only in content, never in where the input lives.
      staging_.d = pool[cls][i % kPool].d;
      const TokenDigest& d = staging_.d;
      sink += static_cast<const volatile std::uint8_t*>(d.data())[31];
      const std::uint64_t t0 = Ticks();
      const bool hit = lookup(d);
      const std::uint64_t t1 = Ticks();
      sink += hit;
      if (i >= kWarmup) {
        const std::uint64_t dt = t1 - t0;
        out.push_back({static_cast<std::uint32_t>(std::min<std::uint64_t>(dt, UINT32_MAX)),
                       static_cast<std::uint8_t>(cls)});
      }
    }
    sink_ += sink;
    return Analyse(out);
  }

  RoundResult RealRound(std::size_t samples, int a = kNear, int b = kRandom) {
    TokenEntry e;
    return Round(samples, a, b, [&](const TokenDigest& d) { return index_.Lookup(d, &e); });
  }
  RoundResult NaiveRound(std::size_t samples) {
    return Round(samples, kNear, kRandom,
                 [&](const TokenDigest& d) { return naive_.Lookup(d); });
  }

  std::mt19937_64 rng_;
  TokenIndex index_;
  NaiveIndex naive_;
  TokenDigest target_{};
  // One input per cache line, in identically laid out pools, so that no class differs
  // from another in alignment or line splits.
  struct alignas(64) Input {
    TokenDigest d;
  };
  enum { kNear, kRandom, kRandom2, kPools };
  Input staging_;  // where every timed call reads its input
  std::vector<Input> pools_[kPools] = {std::vector<Input>(kPool), std::vector<Input>(kPool),
                                       std::vector<Input>(kPool)};
  std::uint64_t sink_ = 0;
};

BOOST_FIXTURE_TEST_SUITE(timing, TimingFixture)

// The control: without it a pass below would prove nothing.
BOOST_AUTO_TEST_CASE(a_naive_early_exit_comparison_is_caught_by_the_harness) {
  const Settings s = GetSettings();
  int detected = 0;
  for (int r = 0; r < s.rounds; ++r) {
    const RoundResult res = NaiveRound(s.samples);
    if (res.differs) ++detected;
    BOOST_TEST_MESSAGE("control (naive compare) round " << r + 1 << "/" << s.rounds << ", "
                                                       << s.samples << " samples: "
                                                       << Describe(res));
  }
  BOOST_TEST_MESSAGE("control detected in " << detected << " of " << s.rounds << " rounds");
  BOOST_TEST(detected * 2 > s.rounds, "the harness failed to catch a naive comparison in "
                                          << s.rounds - detected << " of " << s.rounds
                                          << " rounds");
}

// The null control: two pools of the same kind of input (random misses in the
// target's bucket) must not be told apart, or the machine is too noisy for the verdict
// below to mean anything.
BOOST_AUTO_TEST_CASE(two_pools_of_random_misses_are_not_told_apart) {
  const Settings s = GetSettings();
  int passed = 0;
  for (int r = 0; r < s.rounds; ++r) {
    const RoundResult res = RealRound(s.samples, kRandom2, kRandom);
    if (!res.differs) ++passed;
    BOOST_TEST_MESSAGE("null control (random vs random) round "
                       << r + 1 << "/" << s.rounds << ", " << s.samples
                       << " samples: " << Describe(res));
  }
  BOOST_TEST_MESSAGE("null control judged the same in " << passed << " of " << s.rounds
                                                        << " rounds");
  BOOST_TEST(passed * 2 > s.rounds, "the harness told two identical classes apart in "
                                        << s.rounds - passed << " of " << s.rounds
                                        << " rounds: too noisy to judge");
}

BOOST_AUTO_TEST_CASE(lookup_takes_as_long_for_a_31_byte_near_miss_as_for_a_random_miss) {
  const Settings s = GetSettings();
  int passed = 0;
  for (int r = 0; r < s.rounds; ++r) {
    const RoundResult res = RealRound(s.samples);
    if (!res.differs) ++passed;
    BOOST_TEST_MESSAGE("TokenIndex::Lookup round " << r + 1 << "/" << s.rounds << ", "
                                                   << s.samples
                                                   << " samples: " << Describe(res));
  }
  BOOST_TEST_MESSAGE("TokenIndex::Lookup judged the same in " << passed << " of " << s.rounds
                                                              << " rounds");
  BOOST_TEST(passed * 2 > s.rounds, "Lookup time depends on the shared digest prefix in "
                                        << s.rounds - passed << " of " << s.rounds
                                        << " rounds");
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::index
