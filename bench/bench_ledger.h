// bench/bench_ledger.h: the ledgers the benchmarks run on — made by the forensic
// generator (tools/forensics/generator.h) and cached on disk, so a second run reuses
// them instead of generating 10M tokens again.
//
// A ledger is named by what determines it:
// <root>/gen-t<tokens>-u<users>-s<seed>-<start>-<layout>.
// It is complete only when its marker file `bench-complete` exists; it is generated
// elsewhere and renamed into place with its marker (see EnsureLedger).
//
// Generated ledgers and their keys are TEST ONLY: the key is derived from the seed, so
// anyone knowing the seed can compute every token. The plaintext of token `id` is
// forensics::GeneratedToken(seed, id); the benchmarks compute the tokens they present
// and never print them.
#pragma once

#include <rocksdb/db.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "ledger/format.h"
#include "tools/forensics/generator.h"

namespace patledger::bench {

struct LedgerSpec {
  std::uint64_t tokens = 1'000'000;
  // 0: tokens / 50 (at least 20). The generator registers users with a weight that
  // falls as they register, so with many users per token it keeps stepping (mostly
  // revoking) long after the last token, for simulated years; at 50 tokens per user
  // registration is done well before the tokens are.
  std::uint64_t users = 0;
  std::uint64_t seed = 42;
  std::string start;        // "": DefaultStart()
};

// 180 simulated days ending near today: the 1st of the month 180 days ago. Tokens
// created in the last simulated weeks are then still valid by the real clock (which
// `patledger serve` uses), and a cached ledger is reused for a month.
inline std::string DefaultStart() {
  const std::time_t t = std::time(nullptr) - 180 * 86400;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-01", tm.tm_year + 1900, tm.tm_mon + 1);
  return buf;
}

inline LedgerSpec Resolved(LedgerSpec spec) {
  if (spec.users == 0) spec.users = std::max<std::uint64_t>(20, spec.tokens / 50);
  if (spec.start.empty()) spec.start = DefaultStart();
  return spec;
}

// How the ledger lays out its files, part of the cached ledger's name: changed when
// the ledger writes its tables differently, so that no benchmark measures files an
// older build wrote. i2: tables with a partitioned (two-level) index.
inline constexpr const char* kLedgerLayout = "i2";

inline std::string LedgerDataDir(const std::string& root, const LedgerSpec& s) {
  const LedgerSpec r = Resolved(s);
  return root + "/gen-t" + std::to_string(r.tokens) + "-u" + std::to_string(r.users) +
         "-s" + std::to_string(r.seed) + "-" + r.start + "-" + kLedgerLayout;
}

// The data directory (ledger + token.key) of the ledger `spec`, generated now (with
// the generator's --batch 10000: 10k requests per transaction) unless cached. Exits
// the program with a message if generation fails.
//
// Several benchmarks may ask for the same ledger at once (ctest runs the smoke tests
// in parallel), so each generates into its own `<dir>.partial-<pid>` and renames it
// into place complete with its marker; a loser of that race discards its copy and
// uses the winner's.
inline std::string EnsureLedger(const std::string& root, const LedgerSpec& spec) {
  namespace fs = std::filesystem;
  const LedgerSpec r = Resolved(spec);
  const std::string dir = LedgerDataDir(root, r);
  const fs::path marker = fs::path(dir) / "bench-complete";
  std::error_code ec;
  if (fs::exists(marker, ec)) return dir;
  fs::create_directories(root, ec);
  const std::string tmp = dir + ".partial-" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  std::fprintf(stderr,
               "generating %llu tokens, %llu users, seed %llu, from %s into %s "
               "(once; cached)...\n",
               static_cast<unsigned long long>(r.tokens),
               static_cast<unsigned long long>(r.users),
               static_cast<unsigned long long>(r.seed), r.start.c_str(), dir.c_str());
  forensics::GeneratorOptions o;
  o.data = tmp;
  o.tokens = r.tokens;
  o.users = r.users;
  o.seed = r.seed;
  o.start = r.start;
  o.batch = 10'000;
  const auto t0 = std::chrono::steady_clock::now();
  auto g = forensics::Generate(o);
  if (!g) {
    std::fprintf(stderr, "bench: generating %s failed: %s\n", dir.c_str(),
                 g.error().ToString().c_str());
    fs::remove_all(tmp, ec);
    std::exit(1);
  }
  const double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  {
    std::ofstream m(fs::path(tmp) / "bench-complete");
    m << "tokens " << g->tokens << "\nusers " << g->users << "\nevents " << g->last_seq
      << "\ngenerate_seconds " << s << "\n";
  }
  fs::rename(tmp, dir, ec);
  if (ec && !fs::exists(marker)) {
    // Not a complete copy from a concurrent run: a generation interrupted before
    // this scheme. Replace it.
    fs::remove_all(dir, ec);
    fs::rename(tmp, dir, ec);
  }
  if (ec) {
    // Another process renamed its copy into place first: use that one.
    fs::remove_all(tmp, ec);
    if (!fs::exists(marker)) {
      std::fprintf(stderr, "bench: cannot move the generated ledger into %s\n",
                   dir.c_str());
      std::exit(1);
    }
  }
  std::fprintf(stderr, "generated %llu events in %.1f s\n",
               static_cast<unsigned long long>(g->last_seq), s);
  return dir;
}

// The peers' view of a generated ledger: RocksDB itself, opened read-only on the
// ledger's files with RocksDB's default options (none of the ledger's code or table
// options). Exits the program with a message naming `program` if the open fails.
class BareLedger {
 public:
  BareLedger(const std::string& data_dir, const char* program) {
    rocksdb::DB* db = nullptr;
    const rocksdb::Status s = rocksdb::DB::OpenForReadOnly(
        rocksdb::DBOptions(), data_dir + "/ledger",
        {{rocksdb::kDefaultColumnFamilyName, {}},
         {std::string(ledger::format::kEventsColumnFamily), {}},
         {std::string(ledger::format::kMetaColumnFamily), {}}},
        &handles_, &db);
    if (!s.ok()) {
      std::cerr << program << ": bare RocksDB open: " << s.ToString() << "\n";
      std::exit(1);
    }
    db_.reset(db);
  }
  ~BareLedger() {
    for (rocksdb::ColumnFamilyHandle* h : handles_) db_->DestroyColumnFamilyHandle(h);
  }
  BareLedger(const BareLedger&) = delete;
  BareLedger& operator=(const BareLedger&) = delete;

  rocksdb::DB& db() { return *db_; }
  rocksdb::ColumnFamilyHandle* events() const { return handles_[1]; }

 private:
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace patledger::bench
