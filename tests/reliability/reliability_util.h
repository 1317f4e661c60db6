// tests/reliability/reliability_util.h: what the reliability tests share — the seed and
// the quick/long sizes they run with, percentiles for the figures they print, and a
// digest of the whole replayed state (users, every TokenMeta and what the lock-free
// index answers for it), so two states can be compared for equality in one string.
//
// Environment:
//   PATLEDGER_SEED=N   reproduce a run (every test prints the seed it used)
//   PATLEDGER_LONG=1   the long versions (docs/RELIABILITY.md gives the sizes)
#pragma once

#include <openssl/evp.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "replay/state.h"
#include "service/token_service.h"
#include "tests/temp_dir.h"

namespace patledger::reliability {

inline bool LongRun() {
  const char* v = std::getenv("PATLEDGER_LONG");
  return v != nullptr && *v != '\0' && std::string(v) != "0";
}

// `quick` in CI, `long_value` under PATLEDGER_LONG=1; the variable `env` (if set) wins.
inline std::uint64_t Size(const char* env, std::uint64_t quick,
                          std::uint64_t long_value) {
  if (const char* v = env ? std::getenv(env) : nullptr; v != nullptr && *v != '\0') {
    return std::strtoull(v, nullptr, 10);
  }
  return LongRun() ? long_value : quick;
}

// The seed of this run: PATLEDGER_SEED, or a fresh one. Printed either way.
inline std::uint64_t Seed(const std::string& test) {
  std::uint64_t seed = 0;
  if (const char* v = std::getenv("PATLEDGER_SEED"); v != nullptr && *v != '\0') {
    seed = std::strtoull(v, nullptr, 10);
  } else {
    std::random_device rd;
    seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }
  BOOST_TEST_MESSAGE(test << ": seed " << seed << " (PATLEDGER_SEED=" << seed
                          << " reproduces it)" << (LongRun() ? ", long run" : ""));
  return seed;
}

// A temporary directory in memory (/dev/shm) when there is one, else as TempDir: for
// tests whose durability is simulated (SimDisk) or irrelevant (damage to copies), so
// that thousands of real fsyncs do not dominate their run time.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl =
        (::access("/dev/shm", W_OK) == 0 ? std::string("/dev/shm") : fallback_.path()) +
        "/patledger-rel-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  TempDir fallback_;  // also the parent when /dev/shm is not writable
  std::string path_;
};

// The p-th percentile (0..100) by nearest rank; 0 for no samples.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto rank =
      static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

// `v` with `digits` decimals, for figures in messages (BOOST_TEST_MESSAGE ignores
// stream manipulators).
inline std::string Fixed(double v, int digits = 1) {
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(digits);
  o << v;
  return o.str();
}

inline std::string Hex(const std::uint8_t* p, std::size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    s.push_back(kDigits[p[i] >> 4]);
    s.push_back(kDigits[p[i] & 15]);
  }
  return s;
}

inline std::string Sha256Hex(const std::string& text) {
  std::uint8_t out[32];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), out, &len, EVP_sha256(), nullptr);
  return Hex(out, len);
}

// The whole replayed state as canonical text, one line per fact: the ledger's
// identity and position, every user (with its lock-free flags), and every token with
// all of its TokenMeta and what TokenIndex::Lookup answers for its digest. Equal text
// <=> equal state, as far as anything the service decides with can tell.
inline std::string StateText(const replay::State& s) {
  std::ostringstream o;
  o << "initialized " << s.initialized() << " key " << s.key_fingerprint() << " prefix "
    << s.token_prefix() << " last_seq " << s.last_seq() << " last_at "
    << s.last_recorded_at_us() << " users " << s.user_count() << " tokens "
    << s.token_count() << " max_user " << s.max_user_id() << " max_token "
    << s.max_token_id() << "\n";
  for (const replay::UserRecord& u : s.Users()) {
    o << "user " << u.id << " " << u.username << " name=" << u.name
      << " email=" << u.email << " admin " << u.admin << " blocked " << u.blocked
      << " at " << u.created_at_us << " seq " << u.created_seq << " flags "
      << s.user_flags().Get(u.id) << "\n";
  }
  s.ForEachToken([&](const replay::TokenMeta& t) {
    o << "token " << t.id << " user " << t.user_id << " digest "
      << Hex(t.digest.data(), t.digest.size()) << " scopes " << t.scopes << " expires "
      << t.expires_day << " created_seq " << t.created_seq << " revoked_seq "
      << t.revoked_seq << " from " << t.rotated_from << " to " << t.rotated_to << " at "
      << t.created_at_us;
    index::TokenEntry e;
    if (s.token_index().Lookup(t.digest, &e)) {
      o << " | index " << e.token_id << " " << e.user_id << " " << e.scopes << " "
        << e.expires_day << " " << e.revoked << "\n";
    } else {
      o << " | not in index\n";
    }
  });
  return o.str();
}

inline std::string StateDigest(const replay::State& s) { return Sha256Hex(StateText(s)); }

// StateText plus what the service reads back from the ledger for every token (name,
// description, revocation time and reason): every record is read again.
inline std::string ServiceText(const service::TokenService& svc) {
  std::ostringstream o;
  o << StateText(svc.state());
  for (const replay::UserRecord& u : svc.state().Users()) {
    auto tokens = svc.TokensOfUser(u.id);
    if (!tokens) {
      o << "user " << u.id << " tokens unreadable: " << tokens.error().ToString() << "\n";
      continue;
    }
    for (const service::TokenInfo& t : *tokens) {
      o << "info " << t.meta.id << " name=" << t.name << " description=" << t.description
        << " revoked_at " << t.revoked_at_us << " reason " << t.revoke_reason << "\n";
    }
  }
  return o.str();
}

// The first line where two texts differ, for a failure message.
inline std::string FirstDifference(const std::string& a, const std::string& b) {
  std::istringstream ia(a), ib(b);
  std::string la, lb;
  for (int line = 1;; ++line) {
    const bool ga = static_cast<bool>(std::getline(ia, la));
    const bool gb = static_cast<bool>(std::getline(ib, lb));
    if (!ga && !gb) return "(no difference)";
    if (!ga || !gb || la != lb) {
      return "line " + std::to_string(line) + ":\n  expected: " + (ga ? la : "(end)") +
             "\n  actual:   " + (gb ? lb : "(end)");
    }
  }
}

}  // namespace patledger::reliability
