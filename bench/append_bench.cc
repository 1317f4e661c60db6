// append_bench: durable token creation — TokenService::CreateToken end to end (checks,
// CSPRNG token, HMAC, TokenCreated envelope, synced group-commit Ledger::Append, index
// insert) — from 1, 8 and 32 concurrent callers, vs raw RocksDB synced puts
// (WriteOptions::sync = true) of the same value size from the same number of threads,
// into a separate fresh DB on the same filesystem, in the same run (issue 6).
//
// Raw puts from many threads are group-committed too, by RocksDB's own write thread;
// ours are batched by the ledger's leader/follower group commit. Each case runs for
// --seconds; every repetition uses fresh directories (ledger and DB), removed after.
// Latency is per call (CreateToken / Put), p50 and p99 over all calls of a run; the
// table shows the medians over the repetitions.
//
// usage: append_bench [--callers 1,8,32] [--seconds S] [--reps R] [--dir DIR]
//                     [--smoke] [--help]
#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include "bench/bench_util.h"
#include "common/clock.h"
#include "service/token_service.h"

namespace patledger::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Run {
  double per_second = 0;
  double p50_us = 0, p99_us = 0;
  std::uint64_t calls = 0, errors = 0;
};

// Runs `call(thread)` from `threads` threads for `seconds`; per-call latencies.
template <typename F>
Run Drive(int threads, double seconds, F call) {
  std::vector<std::vector<double>> lat(threads);
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<std::uint64_t> errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      lat[t].reserve(1 << 16);
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      while (!stop.load(std::memory_order_relaxed)) {
        const auto t0 = Clock::now();
        const bool ok = call(t);
        lat[t].push_back(Seconds(Clock::now() - t0) * 1e6);
        if (!ok) errors.fetch_add(1);
      }
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  const auto start = Clock::now();
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop.store(true);
  for (auto& th : pool) th.join();
  const double elapsed = Seconds(Clock::now() - start);
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  Run r;
  r.calls = all.size();
  r.errors = errors.load();
  r.per_second = static_cast<double>(all.size()) / elapsed;
  r.p50_us = Percentile(all, 0.50);
  r.p99_us = Percentile(all, 0.99);
  return r;
}

// Ours: CreateToken on a fresh ledger (`patledger init` then create) by `threads`
// callers. *value_bytes = the size of one TokenCreated record's value.
Run Ours(const std::string& dir, int threads, double seconds, std::size_t* value_bytes) {
  service::ServiceOptions so;
  so.data_dir = dir;
  auto init = service::TokenService::Init(so);
  if (!init) {
    std::cerr << "append_bench: init: " << init.error().ToString() << "\n";
    std::exit(1);
  }
  std::fill(init->root_token.secret.begin(), init->root_token.secret.end(), '\0');
  auto svc = service::TokenService::Open(so);
  if (!svc) {
    std::cerr << "append_bench: " << svc.error().ToString() << "\n";
    std::exit(1);
  }
  service::TokenService& s = **svc;
  service::Actor actor;  // the local operator, as the CLI creates tokens
  actor.request_id = "3f2c1e9a-5b7d-4c1a-9e8f-0a1b2c3d4e5f";  // an API request's size
  actor.client_address = "10.1.2.3";
  service::CreateTokenRequest req;
  req.user_id = 1;
  req.name = "ci";
  req.description = "nightly pipeline";
  req.scopes = service::kApi;
  req.expires_day = DayOf(SystemClock::Get()->NowMicros()) + 30;
  Run r = Drive(threads, seconds, [&](int) {
    auto created = s.CreateToken(actor, req);
    if (!created) return false;
    std::fill(created->secret.begin(), created->secret.end(), '\0');
    return true;
  });
  auto rec = s.ledger().Read(s.ledger().last_seq());
  *value_bytes = rec ? rec->size() + 8 : 200;  // envelope + 8-byte checksum
  return r;
}

// Peer: synced Puts of `value_bytes` into a fresh RocksDB, default options.
Run Raw(const std::string& dir, int threads, double seconds, std::size_t value_bytes) {
  rocksdb::Options o;
  o.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status st = rocksdb::DB::Open(o, dir, &raw);
  if (!st.ok()) {
    std::cerr << "append_bench: rocksdb: " << st.ToString() << "\n";
    std::exit(1);
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  std::vector<std::uint64_t> next(threads, 0);
  std::string value(value_bytes, 'v');
  for (std::size_t i = 0; i < value.size(); ++i) value[i] = static_cast<char>(SplitMix(i));
  Run r = Drive(threads, seconds, [&](int t) {
    const std::uint64_t n = (static_cast<std::uint64_t>(t) << 48) | next[t]++;
    char key[8];
    for (int i = 0; i < 8; ++i) key[i] = static_cast<char>(n >> (56 - 8 * i));
    return db->Put(wo, rocksdb::Slice(key, 8), value).ok();
  });
  return r;
}

std::vector<int> ParseList(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoi(item));
  return out;
}

}  // namespace
}  // namespace patledger::bench

int main(int argc, char** argv) {
  using namespace patledger::bench;
  std::vector<int> callers = {1, 8, 32};
  double seconds = 5;
  int reps = 5;
  std::string root = "/tmp/patledger-bench";
  const char* usage =
      "usage: append_bench [--callers 1,8,32] [--seconds S] [--reps R] [--dir DIR]\n"
      "                    [--smoke] [--help]\n"
      "  --callers N,N  concurrent callers per case (default 1,8,32)\n"
      "  --seconds S    duration of each run (default 5)\n"
      "  --reps R       repetitions, median reported (default 5)\n"
      "  --dir DIR      where the fresh ledgers and DBs are made (default "
      "/tmp/patledger-bench)\n"
      "  --smoke        a tiny run (1 and 4 callers, 0.2 s, 1 rep)\n";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "append_bench: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--callers") callers = ParseList(next());
    else if (a == "--seconds") seconds = std::stod(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--dir") root = next();
    else if (a == "--smoke") {
      callers = {1, 4};
      seconds = 0.2;
      reps = 1;
    } else {
      std::cerr << usage;
      return a == "--help" ? 0 : 2;
    }
  }
  namespace fs = std::filesystem;
  const std::string base = root + "/append-" + std::to_string(::getpid());
  std::error_code ec;
  fs::create_directories(base, ec);
  if (ec) {
    std::cerr << "append_bench: cannot create " << base << ": " << ec.message() << "\n";
    return 1;
  }
  char params[256];
  std::snprintf(params, sizeof params,
                "dir: %s (fresh ledger / DB per run)\n%.1f s per run, reps %d (median); "
                "ours = TokenService::CreateToken (synced group commit); peer = RocksDB "
                "Put, WriteOptions::sync = true, same value size",
                base.c_str(), seconds, reps);
  PrintHeader("append_bench", params);
  std::printf("| callers | ours creates/s | raw puts/s | ours / raw | ours p50 ms | ours "
              "p99 ms | raw p50 ms | raw p99 ms |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::fflush(stdout);
  std::vector<std::string> lines;
  std::size_t value_bytes = 0;
  for (int c : callers) {
    std::vector<double> o, r, o50, o99, r50, r99;
    std::uint64_t errors = 0;
    for (int rep = 0; rep < reps; ++rep) {
      const std::string d = base + "/run";
      fs::remove_all(d, ec);
      const Run a = Ours(d + "/ours", c, seconds, &value_bytes);
      const Run b = Raw(d + "/raw", c, seconds, value_bytes);
      fs::remove_all(d, ec);
      errors += a.errors + b.errors;
      o.push_back(a.per_second);
      r.push_back(b.per_second);
      o50.push_back(a.p50_us);
      o99.push_back(a.p99_us);
      r50.push_back(b.p50_us);
      r99.push_back(b.p99_us);
      std::fprintf(stderr, "  %d callers rep %d: ours %.0f/s, raw %.0f/s\n", c, rep,
                   a.per_second, b.per_second);
    }
    if (errors) std::fprintf(stderr, "append_bench: %llu calls failed\n",
                             static_cast<unsigned long long>(errors));
    std::printf("| %d | %.0f | %.0f | %.2fx | %.2f | %.2f | %.2f | %.2f |\n", c, Median(o),
                Median(r), Median(o) / Median(r), Median(o50) / 1e3, Median(o99) / 1e3,
                Median(r50) / 1e3, Median(r99) / 1e3);
    std::fflush(stdout);
    const std::string p =
        "callers=" + std::to_string(c) + " value_bytes=" + std::to_string(value_bytes);
    lines.push_back(p + "|per_second|" + std::to_string(Median(o)) + "|" +
                    std::to_string(Median(r)));
    lines.push_back(p + "|p50_ms|" + std::to_string(Median(o50) / 1e3) + "|" +
                    std::to_string(Median(r50) / 1e3));
    lines.push_back(p + "|p99_ms|" + std::to_string(Median(o99) / 1e3) + "|" +
                    std::to_string(Median(r99) / 1e3));
  }
  fs::remove_all(base, ec);
  std::printf("\nvalue size %zu bytes; target: ours >= 1.0x raw at 32 callers\n\n",
              value_bytes);
  for (const std::string& line : lines) {
    std::stringstream in(line);
    std::string p, name, o, r;
    std::getline(in, p, '|');
    std::getline(in, name, '|');
    std::getline(in, o, '|');
    std::getline(in, r, '|');
    PrintResult("append", name, p, std::stod(o), std::stod(r),
                name == "per_second" ? "ops/s" : "ms", name == "per_second");
  }
  return 0;
}
