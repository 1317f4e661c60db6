// index_bench: TokenIndex lookups vs the hash tables a user would otherwise pick, on the
// same digests and the same query stream, in one process (issue 6, benchmark 1).
//
// Peers: std::unordered_map under std::shared_mutex, tbb::concurrent_hash_map,
// libcuckoo's cuckoohash_map, and absl::flat_hash_map with no lock at all (not
// thread-safe for writes: the upper bound for a read-only table). Every table maps the
// 32-byte digest to the same 32-byte TokenEntry and hashes with the digest's first 8
// bytes (digests are HMAC outputs: uniform), so they differ only in their structure.
//
// usage: index_bench [--tokens 1000000,10000000] [--threads 1,2] [--reps 5]
//                    [--lookups 4000000] [--smoke]
#include <absl/container/flat_hash_map.h>
#include <tbb/concurrent_hash_map.h>

#include <atomic>
#include <cctype>
#include <cstring>
#include <functional>
#include <iostream>
#include <libcuckoo/cuckoohash_map.hh>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <sstream>
#include <unordered_map>

#include "bench/bench_util.h"
#include "index/token_index.h"

namespace patledger::bench {
namespace {

using index::TokenEntry;
using index::TokenIndex;
using Clock = std::chrono::steady_clock;

struct DigestHash {
  std::size_t operator()(const Digest& d) const {
    std::uint64_t h;
    std::memcpy(&h, d.data(), 8);
    return h;
  }
};

struct TbbCompare {
  static std::size_t hash(const Digest& d) { return DigestHash()(d); }
  static bool equal(const Digest& a, const Digest& b) { return a == b; }
};

TokenEntry EntryFor(std::uint64_t n) {
  return TokenEntry{.token_id = n + 1, .user_id = n % 1000 + 1, .scopes = 2,
                    .expires_day = 30000, .revoked = false};
}

// One table under test: build it, then look up (any number of threads).
class Table {
 public:
  virtual ~Table() = default;
  virtual std::string name() const = 0;
  virtual void Insert(const Digest& d, const TokenEntry& e) = 0;
  virtual bool Lookup(const Digest& d, TokenEntry* out) const = 0;
};

class Ours final : public Table {
 public:
  explicit Ours(std::size_t n) : index_(n) {}
  std::string name() const override { return "patledger TokenIndex"; }
  void Insert(const Digest& d, const TokenEntry& e) override { (void)index_.Insert(d, e); }
  bool Lookup(const Digest& d, TokenEntry* out) const override { return index_.Lookup(d, out); }
  TokenIndex& index() { return index_; }

 private:
  TokenIndex index_;
};

class LockedStd final : public Table {
 public:
  explicit LockedStd(std::size_t n) { map_.reserve(n); }
  std::string name() const override { return "std::unordered_map + shared_mutex"; }
  void Insert(const Digest& d, const TokenEntry& e) override {
    std::unique_lock lock(mu_);
    map_.emplace(d, e);
  }
  bool Lookup(const Digest& d, TokenEntry* out) const override {
    std::shared_lock lock(mu_);
    auto it = map_.find(d);
    if (it == map_.end()) return false;
    *out = it->second;
    return true;
  }

 private:
  mutable std::shared_mutex mu_;
  std::unordered_map<Digest, TokenEntry, DigestHash> map_;
};

class Tbb final : public Table {
 public:
  explicit Tbb(std::size_t n) : map_(n) {}
  std::string name() const override { return "tbb::concurrent_hash_map"; }
  void Insert(const Digest& d, const TokenEntry& e) override { map_.insert({d, e}); }
  bool Lookup(const Digest& d, TokenEntry* out) const override {
    Map::const_accessor a;
    if (!map_.find(a, d)) return false;
    *out = a->second;
    return true;
  }

 private:
  using Map = tbb::concurrent_hash_map<Digest, TokenEntry, TbbCompare>;
  Map map_;
};

class Cuckoo final : public Table {
 public:
  explicit Cuckoo(std::size_t n) : map_(n) {}
  std::string name() const override { return "libcuckoo cuckoohash_map"; }
  void Insert(const Digest& d, const TokenEntry& e) override { map_.insert(d, e); }
  bool Lookup(const Digest& d, TokenEntry* out) const override { return map_.find(d, *out); }

 private:
  libcuckoo::cuckoohash_map<Digest, TokenEntry, DigestHash> map_;
};

class Absl final : public Table {
 public:
  explicit Absl(std::size_t n) { map_.reserve(n); }
  std::string name() const override { return "absl::flat_hash_map (no lock)"; }
  void Insert(const Digest& d, const TokenEntry& e) override { map_.emplace(d, e); }
  bool Lookup(const Digest& d, TokenEntry* out) const override {
    auto it = map_.find(d);
    if (it == map_.end()) return false;
    *out = it->second;
    return true;
  }

 private:
  absl::flat_hash_map<Digest, TokenEntry, DigestHash> map_;
};

// The query stream: digests of token numbers; with `miss_percent`, that share of them
// were never inserted (numbers >= tokens).
std::vector<Digest> Queries(std::size_t tokens, std::size_t count, int miss_percent,
                            std::uint64_t seed) {
  std::vector<Digest> q(count);
  std::uint64_t r = seed;
  for (auto& d : q) {
    r = SplitMix(r);
    const bool miss = static_cast<int>(r % 100) < miss_percent;
    r = SplitMix(r);
    d = MakeDigest(miss ? tokens + r % tokens : r % tokens);
  }
  return q;
}

// Aggregate lookups per second of `threads` threads over `queries` (split evenly).
// Devirtualized per concrete type so the call costs what a direct call would.
template <typename T>
double RunLookups(const T& table, const std::vector<Digest>& queries, int threads) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<std::uint64_t> found{0};
  std::vector<std::thread> pool;
  const std::size_t per = queries.size() / threads;
  Clock::time_point start;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      std::uint64_t hits = 0;
      TokenEntry e;
      const Digest* q = queries.data() + t * per;
      for (std::size_t i = 0; i < per; ++i) hits += table.T::Lookup(q[i], &e);
      found.fetch_add(hits);
    });
  }
  while (ready.load() < threads) {
  }
  start = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto& th : pool) th.join();
  const double s = Seconds(Clock::now() - start);
  if (found.load() == 0) std::cerr << "index_bench: no hits?\n";
  return static_cast<double>(per * threads) / s;
}

std::vector<std::size_t> ParseList(const std::string& s) {
  std::vector<std::size_t> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoull(item));
  return out;
}

struct Row {
  std::string table;
  std::size_t tokens;
  int threads;
  std::string mix;
  double mops;
  double ours_mops;
};

template <typename T>
void Measure(T& table, std::size_t tokens, const std::vector<std::size_t>& thread_counts,
             int reps, const std::vector<Digest>& hits, const std::vector<Digest>& mixed,
             std::map<std::string, double>* figures, std::vector<Row>* rows) {
  for (std::size_t threads : thread_counts) {
    for (const auto& [mix, q] : {std::pair{"all hit", &hits}, std::pair{"90/10", &mixed}}) {
      std::vector<double> runs;
      for (int r = 0; r < reps; ++r) runs.push_back(RunLookups(table, *q, threads) / 1e6);
      const double m = Median(runs);
      const std::string key = std::to_string(tokens) + "/" + std::to_string(threads) + "/" + mix;
      if (table.name() == "patledger TokenIndex") (*figures)[key] = m;
      rows->push_back({table.name(), tokens, static_cast<int>(threads), mix, m,
                       (*figures)[key]});
      std::fprintf(stderr, "  %-36s %9zu tokens %d thr %-7s %7.2f M/s\n",
                   table.name().c_str(), tokens, static_cast<int>(threads), mix, m);
    }
  }
}

template <typename T>
void Bench(std::size_t tokens, const std::vector<std::size_t>& threads, int reps,
           const std::vector<Digest>& hits, const std::vector<Digest>& mixed,
           std::map<std::string, double>* figures, std::vector<Row>* rows) {
  auto table = std::make_unique<T>(tokens);
  const auto t0 = Clock::now();
  for (std::size_t n = 0; n < tokens; ++n) table->Insert(MakeDigest(n), EntryFor(n));
  std::fprintf(stderr, "%s: %zu inserts in %.2f s\n", table->name().c_str(), tokens,
               Seconds(Clock::now() - t0));
  Measure(*table, tokens, threads, reps, hits, mixed, figures, rows);
}

// Lookups on one thread while another inserts new tokens and revokes old ones
// continuously, vs the same reader alone (the index's concurrent-writer target).
// `writes_per_second` 0: the writer runs flat out (millions of inserts a second, far
// beyond anything the ledger can commit: the table grows past the L3 cache during the
// run); otherwise it is paced to that rate, e.g. the durable-append ceiling measured by
// append_bench (tens of thousands of creates a second), which is the most the service
// can ever feed the index. The table is rebuilt for every rep, so alone and with-writer
// runs start from the same table.
void WriterBench(std::size_t tokens, int reps, const std::vector<Digest>& hits,
                 double writes_per_second) {
  std::vector<double> alone, with_writer;
  std::uint64_t writes = 0;
  double write_seconds = 0;
  for (int r = 0; r < reps; ++r) {
    Ours ours(tokens);
    for (std::size_t n = 0; n < tokens; ++n) ours.Insert(MakeDigest(n), EntryFor(n));
    alone.push_back(RunLookups(ours, hits, 1) / 1e6);
    std::atomic<bool> stop{false};
    std::uint64_t w = 0;
    std::thread writer([&] {
      std::size_t next = tokens * 4;  // never collides with the query stream's numbers
      std::size_t revoke = 0;
      const auto start = Clock::now();
      while (!stop.load(std::memory_order_relaxed)) {
        if (writes_per_second > 0) {
          const double due = static_cast<double>(w) / writes_per_second;
          if (Seconds(Clock::now() - start) < due) continue;  // paced, spinning
        }
        (void)ours.index().Insert(MakeDigest(next), EntryFor(next));
        ++next;
        (void)ours.index().Revoke(MakeDigest(revoke++ % tokens));
        w += 2;
      }
    });
    const auto t0 = Clock::now();
    with_writer.push_back(RunLookups(ours, hits, 1) / 1e6);
    write_seconds += Seconds(Clock::now() - t0);
    stop.store(true);
    writer.join();
    writes += w;
  }
  const double a = Median(alone), b = Median(with_writer);
  const std::string pace =
      writes_per_second > 0 ? std::to_string(static_cast<long long>(writes_per_second)) +
                                  " writes/s"
                            : std::string("flat out");
  std::printf("\n## Lookups with a concurrent writer (%zu tokens, 1 reader + 1 writer, %s)\n\n",
              tokens, pace.c_str());
  std::printf("| reader alone M/s | reader with writer M/s | ratio | writer ops/s |\n");
  std::printf("|---:|---:|---:|---:|\n");
  std::printf("| %.2f | %.2f | %.2fx | %.0f |\n\n", a, b, b / a, writes / write_seconds);
  PrintResult("index", writes_per_second > 0 ? "reader_with_paced_writer" : "reader_with_writer",
              "tokens=" + std::to_string(tokens) + " threads=1 writer_ops_per_s=" +
                  std::to_string(static_cast<long long>(writes / write_seconds)),
              b, a, "M/s", true);
}

}  // namespace
}  // namespace patledger::bench

int main(int argc, char** argv) {
  using namespace patledger::bench;
  std::vector<std::size_t> tokens = {1'000'000, 10'000'000};
  std::vector<std::size_t> threads = {1, 2};
  int reps = 5;
  std::size_t lookups = 4'000'000;
  double writer_rate = 100'000;  // ~3x the durable-append ceiling (append_bench)
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "index_bench: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--tokens") tokens = ParseList(next());
    else if (a == "--threads") threads = ParseList(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--lookups") lookups = std::stoull(next());
    else if (a == "--writer-rate") writer_rate = std::stod(next());
    else if (a == "--smoke") { tokens = {20'000}; reps = 1; lookups = 100'000; }
    else {
      std::cerr << "usage: index_bench [--tokens N,N] [--threads 1,2] [--reps R] "
                   "[--lookups M] [--writer-rate W] [--smoke]\n"
                   "  --writer-rate W  the paced writer's inserts+revokes per second "
                   "(default 100000)\n";
      return a == "--help" ? 0 : 2;
    }
  }
  std::printf("# index_bench\n\nmachine: %s\ndate: %s\nreps %d (median), %zu lookups per run\n\n",
              MachineLine().c_str(), UtcNow().c_str(), reps, lookups);
  std::map<std::string, double> figures;
  std::vector<Row> rows;
  for (std::size_t n : tokens) {
    const auto hits = Queries(n, lookups, 0, 1);
    const auto mixed = Queries(n, lookups, 10, 2);
    Bench<Ours>(n, threads, reps, hits, mixed, &figures, &rows);
    Bench<Absl>(n, threads, reps, hits, mixed, &figures, &rows);
    Bench<Cuckoo>(n, threads, reps, hits, mixed, &figures, &rows);
    Bench<Tbb>(n, threads, reps, hits, mixed, &figures, &rows);
    Bench<LockedStd>(n, threads, reps, hits, mixed, &figures, &rows);
  }
  std::printf("| table | tokens | threads | mix | M lookups/s | ours / this |\n");
  std::printf("|---|---:|---:|---|---:|---:|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %zu | %d | %s | %.2f | %.2fx |\n", r.table.c_str(), r.tokens,
                r.threads, r.mix.c_str(), r.mops, r.ours_mops / r.mops);
  }
  std::printf("\n");
  for (const Row& r : rows) {
    std::string slug;
    for (char c : r.table) slug += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
    const std::string params = "table=" + slug + " tokens=" + std::to_string(r.tokens) +
                               " threads=" + std::to_string(r.threads) +
                               " mix=" + (r.mix == "all hit" ? "all_hit" : "90_10");
    // ratio = ours / this table (ours is the first table of every size).
    PrintResult("index", "lookups", params, r.ours_mops,
                r.table == "patledger TokenIndex" ? 0 : r.mops, "M/s", true);
  }
  for (std::size_t n : tokens) {
    const auto queries = Queries(n, lookups, 0, 3);
    WriterBench(n, reps, queries, 0);
    WriterBench(n, reps, queries, writer_rate);
  }
  return 0;
}
