// auth_bench: TokenService::Authenticate end to end, in process — token string in,
// verdict out (shape check, HMAC, index lookup, revocation, expiry, owner, scope) —
// on a real TokenService opened on a generated ledger of N tokens (issue 6).
//
// The service is opened the way `patledger serve` opens it (TokenService::Open:
// replay of every record, index sized by growth), read-only so the cached ledger is
// never written. Calls run on one thread over a large sample of tokens in random order,
// so lookups miss the caches as in production; each call is timed in thread CPU time
// (see ThreadCpuSeconds). "now" is the real clock, as for
// `patledger serve` (the generated ledger ends near today: bench_ledger.h).
//
// Cases: valid tokens (verdict ok), well-formed tokens the ledger never had (unknown:
// HMAC + a lookup that misses), and malformed ones (one character changed: the
// checksum rejects them before any HMAC or lookup). Also the valid tokens through
// TokenService::AuthenticateBatch in groups of 16 (shape and HMAC of the group first,
// slots prefetched, then the lookups: the misses overlap); no peer for that line.
// Breakdown of the valid case: shape check alone, HMAC alone (TokenKey::Digest,
// precomputed pads), index lookup alone (precomputed digests, same order).
// Peer, measured on the same tokens in the same run: the same steps with the HMAC done
// the straightforward way, OpenSSL 3's one-shot HMAC(EVP_sha256(), ...), which fetches
// the algorithm and builds a context on every call.
// Apart from auth: "describe", what a token listing pays per token (TokenService::
// GetToken, one Ledger::Read through the ledger's bounded block cache) against a bare
// RocksDB Get of the same record with RocksDB's default options.
//
// usage: auth_bench [--tokens N] [--users U] [--seed S] [--sample M] [--reps R]
//                   [--ledger-dir DIR] [--smoke] [--help]
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <rocksdb/db.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <span>
#include <string_view>
#include <type_traits>

#include "bench/bench_ledger.h"
#include "bench/bench_util.h"
#include "common/clock.h"
#include "ledger/format.h"
#include "service/token_format.h"
#include "service/token_key.h"
#include "service/token_service.h"

namespace patledger::bench {
namespace {

using Clock = std::chrono::steady_clock;
using service::AuthVerdict;

// Tokens stored back to back at a fixed stride (no per-token heap allocation: the
// token bytes are read sequentially, like a request buffer that is already in cache).
class TokenSet {
 public:
  static constexpr std::size_t kStride = 48;
  void Add(std::string_view t) {
    if (t.size() >= kStride) std::abort();
    const std::size_t at = bytes_.size();
    bytes_.resize(at + kStride, '\0');
    std::memcpy(bytes_.data() + at, t.data(), t.size());
    sizes_.push_back(static_cast<std::uint8_t>(t.size()));
  }
  std::size_t size() const { return sizes_.size(); }
  std::string_view operator[](std::size_t i) const {
    return {bytes_.data() + i * kStride, sizes_[i]};
  }
  void Wipe() { std::fill(bytes_.begin(), bytes_.end(), '\0'); }

 private:
  std::string bytes_;
  std::vector<std::uint8_t> sizes_;
};

// The peer: Authenticate's steps with OpenSSL's one-shot HMAC() instead of the
// precomputed pads.
struct PeerAuth {
  const service::TokenService* svc;
  std::array<std::uint8_t, 32> key;
  std::string prefix;

  AuthVerdict Authenticate(std::string_view token, std::int64_t now_us) const {
    if (service::CheckTokenShape(token, prefix) != service::TokenShape::kOk) {
      return AuthVerdict::kMalformed;
    }
    index::TokenDigest digest;
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest.data(),
         &len);
    index::TokenEntry e;
    if (!svc->state().token_index().Lookup(digest, &e)) return AuthVerdict::kUnknown;
    const std::uint32_t flags = svc->state().user_flags().Get(e.user_id);
    if (e.revoked) return AuthVerdict::kRevoked;
    if (e.expires_day != index::kNoExpiry && DayOf(now_us) >= e.expires_day) {
      return AuthVerdict::kExpired;
    }
    if ((flags & index::UserFlags::kExists) == 0) return AuthVerdict::kUnknown;
    if ((flags & index::UserFlags::kBlocked) != 0) return AuthVerdict::kOwnerBlocked;
    return AuthVerdict::kOk;
  }
};

// This thread's CPU time. Calls are timed with it, not with the wall clock: on the
// shared 2-vCPU machine other jobs deschedule this thread (load 5-10 during some
// runs), which wall time counts and CPU time does not; on an idle machine they agree.
double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// ns (thread CPU time) per call of `f(i)` over i in [0, n), and the sum of what the
// calls returned (the verdicts as expected).
template <typename F>
double TimeCalls(std::size_t n, F f, std::size_t* matched) {
  std::size_t ok = 0;
  const double t0 = ThreadCpuSeconds();
  for (std::size_t i = 0; i < n; ++i) ok += f(i);
  const double s = ThreadCpuSeconds() - t0;
  *matched = ok;
  return s * 1e9 / static_cast<double>(n);
}

struct Figure {
  std::string name, what;
  double ours = 0, peer = 0;
  std::size_t calls = 0, matched = 0;
};

// --write-tokens: `count` distinct tokens of the ledger valid now by the real clock
// (as `patledger serve` will judge them), one per line, to a new file of mode 0600.
// TEST ONLY secrets of a generated ledger; for bench/http_bench.sh. Never printed.
int WriteTokens(const LedgerSpec& spec, const std::string& ledger_root,
                const std::string& path, std::size_t count) {
  const std::string dir = EnsureLedger(ledger_root, spec);
  const LedgerSpec r = Resolved(spec);
  service::ServiceOptions so;
  so.data_dir = dir;
  so.read_only = true;
  auto opened = service::TokenService::Open(so);
  if (!opened) {
    std::cerr << "auth_bench: " << opened.error().ToString() << "\n";
    return 1;
  }
  const service::TokenService& svc = **opened;
  const std::int64_t now = SystemClock::Get()->NowMicros();
  const std::uint64_t max_id = svc.state().max_token_id();
  const std::string prefix = svc.state().token_prefix();
  std::vector<std::uint64_t> ids;
  std::uint64_t rng = 777;
  for (std::uint64_t tried = 0; ids.size() < count && tried < 4 * max_id; ++tried) {
    rng = SplitMix(rng);
    const std::uint64_t id = 1 + rng % max_id;
    if (std::find(ids.end() - std::min<std::size_t>(ids.size(), 64), ids.end(), id) !=
        ids.end()) {
      continue;
    }
    if (svc.Authenticate(forensics::GeneratedToken(r.seed, id, prefix), now).ok()) {
      ids.push_back(id);
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::shuffle(ids.begin(), ids.end(), std::mt19937_64(1));
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::cerr << "auth_bench: cannot create " << path << "\n";
    return 1;
  }
  std::string text;
  for (std::uint64_t id : ids) text += forensics::GeneratedToken(r.seed, id, prefix) + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  std::fill(text.begin(), text.end(), '\0');
  std::fprintf(stderr, "auth_bench: wrote %zu tokens valid now to %s\n", ids.size(),
               path.c_str());
  return ok && !ids.empty() ? 0 : 1;
}

int Run(const LedgerSpec& spec, const std::string& ledger_root, std::size_t sample,
        int reps) {
  const std::string dir = EnsureLedger(ledger_root, spec);
  const LedgerSpec r = Resolved(spec);

  service::ServiceOptions so;
  so.data_dir = dir;
  so.read_only = true;  // same replay and hot path; never writes the cached ledger
  const auto t0 = Clock::now();
  auto opened = service::TokenService::Open(so);
  if (!opened) {
    std::cerr << "auth_bench: " << opened.error().ToString() << "\n";
    return 1;
  }
  const double open_s = Seconds(Clock::now() - t0);
  const service::TokenService& svc = **opened;
  const std::int64_t now = SystemClock::Get()->NowMicros();
  const std::uint64_t max_id = svc.state().max_token_id();
  const std::string prefix = svc.state().token_prefix();

  // The samples. Valid: random token ids whose verdict is ok (revoked, expired and
  // blocked-owner tokens are skipped); unknown: ids past the last one; malformed: a
  // valid token with one character changed.
  // Ids are visited in a random permutation, so the sample holds distinct tokens.
  TokenSet valid, unknown, malformed;
  std::vector<std::uint64_t> valid_ids;
  std::vector<std::uint32_t> ids(max_id);
  for (std::uint32_t i = 0; i < max_id; ++i) ids[i] = i + 1;
  std::shuffle(ids.begin(), ids.end(), std::mt19937_64(12345));
  std::uint64_t tried = 0;
  for (; tried < ids.size() && valid.size() < sample; ++tried) {
    const std::string t = forensics::GeneratedToken(r.seed, ids[tried], prefix);
    if (svc.Authenticate(t, now).ok()) {
      valid.Add(t);
      valid_ids.push_back(ids[tried]);
    }
  }
  std::vector<std::uint32_t>().swap(ids);
  if (valid.size() == 0) {
    std::cerr << "auth_bench: no valid token found in the ledger\n";
    return 1;
  }
  const std::size_t n = valid.size();
  for (std::size_t i = 0; i < n; ++i) {
    unknown.Add(forensics::GeneratedToken(r.seed, max_id + 1 + i, prefix));
    std::string t(valid[i]);
    char& c = t[prefix.size() + 5];
    c = c == 'a' ? 'b' : 'a';
    malformed.Add(t);
  }
  auto key = service::TokenKey::Load(dir + "/token.key");
  if (!key) {
    std::cerr << "auth_bench: " << key.error().ToString() << "\n";
    return 1;
  }
  PeerAuth peer{&svc, forensics::DerivedKey(r.seed), prefix};
  std::vector<index::TokenDigest> digests(n);
  for (std::size_t i = 0; i < n; ++i) digests[i] = key->Digest(valid[i]);

  char params[768];
  std::snprintf(params, sizeof params,
                "ledger: %s\ntokens %llu (ids 1..%llu), users %llu, events %llu; opened "
                "(replayed) in %.2f s; index %.0f MB\nsample %zu tokens per case in "
                "random order (distinct; %llu ids tried for the valid ones), 1 thread, reps %d "
                "(median)",
                dir.c_str(), static_cast<unsigned long long>(svc.state().token_count()),
                static_cast<unsigned long long>(max_id),
                static_cast<unsigned long long>(svc.state().user_count()),
                static_cast<unsigned long long>(svc.ledger().last_seq()), open_s,
                svc.state().token_index().MemoryBytes() / 1e6, n,
                static_cast<unsigned long long>(tried), reps);
  PrintHeader("auth_bench", params);

  std::vector<Figure> figures;
  auto measure_n = [&](const std::string& name, const std::string& what,
                       std::size_t calls, auto ours_fn, auto peer_fn) {
    std::vector<double> o, p;
    std::size_t matched = 0, pm = 0;
    for (int rep = 0; rep < reps; ++rep) {
      o.push_back(TimeCalls(calls, ours_fn, &matched));
      if constexpr (!std::is_same_v<decltype(peer_fn), std::nullptr_t>) {
        p.push_back(TimeCalls(calls, peer_fn, &pm));
      }
    }
    figures.push_back({name, what, Median(o), p.empty() ? 0 : Median(p), calls, matched});
    std::fprintf(stderr, "  %-22s %8.1f ns\n", name.c_str(), Median(o));
  };
  auto measure = [&](const std::string& name, const std::string& what, auto ours_fn,
                     auto peer_fn) { measure_n(name, what, n, ours_fn, peer_fn); };
  const auto& s = svc;
  measure(
      "valid", "Authenticate, valid tokens (verdict ok)",
      [&](std::size_t i) { return s.Authenticate(valid[i], now).ok(); },
      [&](std::size_t i) { return peer.Authenticate(valid[i], now) == AuthVerdict::kOk; });
  // The batch API (not what the HTTP server calls: it authenticates one request at a
  // time): groups of kAuthBatch consecutive tokens, results checked the same way.
  constexpr std::size_t kBatch = service::TokenService::kAuthBatch;
  measure(
      "valid_batch", "AuthenticateBatch, valid tokens, groups of 16 (lookups overlapped)",
      [&](std::size_t i) -> std::size_t {
        if (i % kBatch != 0) return 0;
        const std::size_t m = std::min(kBatch, n - i);
        std::array<std::string_view, kBatch> batch;
        std::array<service::AuthResult, kBatch> results;
        for (std::size_t j = 0; j < m; ++j) batch[j] = valid[i + j];
        s.AuthenticateBatch(std::span(batch.data(), m), now, 0,
                            std::span(results.data(), m));
        std::size_t ok = 0;
        for (std::size_t j = 0; j < m; ++j) ok += results[j].ok();
        return ok;
      },
      nullptr);
  measure(
      "unknown", "Authenticate, well-formed unknown tokens",
      [&](std::size_t i) {
        return s.Authenticate(unknown[i], now).verdict == AuthVerdict::kUnknown;
      },
      [&](std::size_t i) {
        return peer.Authenticate(unknown[i], now) == AuthVerdict::kUnknown;
      });
  measure(
      "malformed", "Authenticate, malformed (one character changed)",
      [&](std::size_t i) {
        return s.Authenticate(malformed[i], now).verdict == AuthVerdict::kMalformed;
      },
      [&](std::size_t i) {
        return peer.Authenticate(malformed[i], now) == AuthVerdict::kMalformed;
      });
  measure(
      "shape", "breakdown: CheckTokenShape alone",
      [&](std::size_t i) {
        return service::CheckTokenShape(valid[i], prefix) == service::TokenShape::kOk;
      },
      nullptr);
  measure(
      "hmac", "breakdown: HMAC alone (ours: precomputed pads; peer: one-shot HMAC())",
      [&](std::size_t i) {
        const index::TokenDigest d = key->Digest(valid[i]);
        DoNotOptimize(d);
        return true;
      },
      [&](std::size_t i) {
        unsigned char md[32];
        unsigned int len = 0;
        HMAC(EVP_sha256(), peer.key.data(), 32,
             reinterpret_cast<const unsigned char*>(valid[i].data()), valid[i].size(), md,
             &len);
        DoNotOptimize(md);
        return len == 32;
      });
  measure(
      "lookup", "breakdown: TokenIndex::Lookup alone (precomputed digests)",
      [&](std::size_t i) {
        index::TokenEntry e;
        return s.state().token_index().Lookup(digests[i], &e);
      },
      nullptr);

  // The same lookups one at a time: each address depends on the previous result (ids
  // are < 2^62, so `carry` is always 0), so no two misses overlap — the latency a
  // single request sees, where "lookup" above lets the CPU overlap independent misses.
  std::size_t carry = 0;
  measure(
      "lookup_serial", "breakdown: Lookup alone, one at a time (no overlap of misses)",
      [&](std::size_t i) {
        index::TokenEntry e{};
        const bool found = s.state().token_index().Lookup(digests[(i + carry) % n], &e);
        carry = static_cast<std::size_t>(e.token_id >> 62);
        return found;
      },
      nullptr);

  // Not the auth path: what a token listing pays per token (GET /personal_access_tokens
  // describes each token from its TokenCreated record: TokenService::GetToken, one
  // Ledger::Read, its checks and the decoding). Peer: a bare RocksDB Get of the same
  // record from the same files, opened read-only with RocksDB's default options (on
  // tables with a one-level index these hold every table's whole index in memory).
  const std::size_t described = std::min<std::size_t>(n, 100000);
  std::vector<std::string> created_keys(described);
  for (std::size_t i = 0; i < described; ++i) {
    const auto meta = svc.state().FindToken(valid_ids[i]);
    if (!meta) {
      std::cerr << "auth_bench: token " << valid_ids[i] << " not in the catalog\n";
      return 1;
    }
    const ledger::format::SeqKey key = ledger::format::EncodeSeq(meta->created_seq);
    created_keys[i].assign(key.data(), key.size());
  }
  BareLedger bare(dir, "auth_bench");
  rocksdb::ReadOptions bare_ro;
  bare_ro.verify_checksums = true;
  std::string bare_value;
  measure_n(
      "describe", "GetToken: a token's record read from the ledger (one Ledger::Read)",
      described,
      [&](std::size_t i) {
        const auto info = s.GetToken(valid_ids[i]);
        return info.has_value() && !info->name.empty();
      },
      [&](std::size_t i) {
        return bare.db().Get(bare_ro, bare.events(), created_keys[i], &bare_value).ok() &&
               !bare_value.empty();
      });

  std::printf("| case | ours ns/call | peer ns/call | ours / peer | calls | verdicts as "
              "expected |\n|---|---:|---:|---:|---:|---:|\n");
  for (const Figure& f : figures) {
    if (f.peer > 0) {
      std::printf("| %s | %.1f | %.1f | %.2fx | %zu | %zu |\n", f.what.c_str(), f.ours,
                  f.peer, f.ours / f.peer, f.calls, f.matched);
    } else {
      std::printf("| %s | %.1f | - | - | %zu | %zu |\n", f.what.c_str(), f.ours, f.calls,
                  f.matched);
    }
  }
  std::printf("\npeer = the same steps with OpenSSL one-shot HMAC(EVP_sha256(), ...); "
              "for describe, a bare RocksDB Get; target: valid <= 250 ns\n\n");
  for (const Figure& f : figures) {
    if (f.matched != f.calls) {
      std::fprintf(stderr, "auth_bench: %s: %zu of %zu verdicts unexpected\n",
                   f.name.c_str(), f.calls - f.matched, f.calls);
    }
    PrintResult("auth", f.name,
                "tokens=" + std::to_string(r.tokens) + " threads=1 sample=" +
                    std::to_string(f.calls),
                f.ours, f.peer, "ns", false);
  }
  valid.Wipe();
  unknown.Wipe();
  malformed.Wipe();
  return 0;
}

}  // namespace
}  // namespace patledger::bench

int main(int argc, char** argv) {
  using namespace patledger::bench;
  LedgerSpec spec;
  spec.tokens = 10'000'000;
  std::size_t sample = 1'000'000;
  int reps = 5;
  std::string ledger_root = "/tmp/patledger-bench";
  std::string write_tokens;
  std::size_t count = 5000;
  const char* usage =
      "usage: auth_bench [--tokens N] [--users U] [--seed S] [--sample M] [--reps R]\n"
      "                  [--ledger-dir DIR] [--smoke] [--help]\n"
      "  --tokens N      tokens in the generated ledger (default 10000000)\n"
      "  --users U       users (default tokens/50)\n"
      "  --seed S        generator seed (default 42)\n"
      "  --sample M      tokens per case, random order (default 1000000)\n"
      "  --reps R        repetitions, median reported (default 5)\n"
      "  --ledger-dir D  where generated ledgers are cached (default "
      "/tmp/patledger-bench)\n"
      "  --smoke         a tiny run (20k tokens, 1 rep) in a second or so\n"
      "  --write-tokens F [--count N]  instead of measuring: write N (default 5000)\n"
      "                  tokens valid now (real clock) to the new file F, mode 0600\n"
      "                  (TEST-ONLY secrets, for http_bench.sh; never printed)\n";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "auth_bench: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--tokens") spec.tokens = std::stoull(next());
    else if (a == "--users") spec.users = std::stoull(next());
    else if (a == "--seed") spec.seed = std::stoull(next());
    else if (a == "--sample") sample = std::stoull(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--ledger-dir") ledger_root = next();
    else if (a == "--write-tokens") write_tokens = next();
    else if (a == "--count") count = std::stoull(next());
    else if (a == "--smoke") {
      spec.tokens = 20'000;
      sample = 20'000;
      reps = 1;
    } else {
      std::cerr << usage;
      return a == "--help" ? 0 : 2;
    }
  }
  if (!write_tokens.empty()) return WriteTokens(spec, ledger_root, write_tokens, count);
  return Run(spec, ledger_root, sample, reps);
}
