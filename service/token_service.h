// service/token_service.h: the rules of personal access tokens, over the ledger.
//
// TokenService is what the CLI and the HTTP API call. It validates a request
// against the current State, builds the events, appends them to the Ledger (one
// atomic, synced append per request) and returns only after the ledger's listener —
// the State — has applied them. It never stores or logs a token: the plaintext
// exists only in the CreatedToken returned by Init/CreateToken/RotateToken.
//
// The data directory holds the ledger (RocksDB) and, by default, the instance key
// file `token.key` (mode 0600) from which token digests are computed:
// digest = HMAC-SHA256(key, token). The ledger records the key's fingerprint, so
// opening with another key fails instead of silently authenticating nothing.
//
// Thread safety: every method may be called from any number of threads. Token
// creation runs concurrently up to the ledger's group commit; user changes and
// revocations are serialized where a uniqueness or "not already revoked" rule must
// hold between the check and the append. Authenticate is lock-free and never
// touches the ledger.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "ledger/ledger.h"
#include "replay/state.h"
#include "service/scopes.h"
#include "service/token_key.h"

namespace patledger::service {

struct Policy {
  bool require_expiry = true;       // a token must have an expiry date
  int max_lifetime_days = 365;      // expiry at most this many days after today (0: none)
  std::string token_prefix = "glpat-";  // used by Init; afterwards the ledger's wins
};

struct ServiceOptions {
  std::string data_dir = "./data";
  std::string key_path;  // "" = <data_dir>/token.key
  Policy policy;
  const Clock* clock = SystemClock::Get();
  bool read_only = false;          // tools: no lock, no writes
  replay::ReplayLimit replay_to;   // read_only only: state as of this point
  std::size_t expected_tokens = 0; // sizes the index up front
  rocksdb::Env* env = nullptr;     // tests: fault injection
};

// Who is acting and from where; copied into the envelope of every event written.
struct Actor {
  std::uint64_t user_id = 0;   // 0: the local operator (CLI)
  std::uint64_t token_id = 0;  // the token that authenticated the request, 0 for the CLI
  bool via_sudo = false;
  std::string client_address;
  std::string request_id;
};

// A token with what the ledger knows about it (no secret).
struct TokenInfo {
  replay::TokenMeta meta;
  std::string name;
  std::string description;
  std::int64_t revoked_at_us = 0;  // 0 if not revoked
  std::string revoke_reason;        // "" if not revoked
};

struct CreatedToken {
  TokenInfo info;
  std::string secret;  // the plaintext token; show it once, never store or log it
};

struct CreateTokenRequest {
  std::uint64_t user_id = 0;
  std::string name;
  std::string description;
  ScopeSet scopes = 0;
  std::optional<std::int32_t> expires_day;  // days since epoch; nullopt = none asked
};

enum class AuthVerdict {
  kOk,
  kMalformed,          // not our token format (checked without any lookup)
  kUnknown,            // well formed, but no such token
  kExpired,
  kRevoked,
  kOwnerBlocked,
  kInsufficientScope,
};
std::string_view AuthVerdictName(AuthVerdict v);  // "ok", "malformed", ..., "insufficient_scope"

struct AuthResult {
  AuthVerdict verdict = AuthVerdict::kMalformed;
  std::uint64_t user_id = 0;   // set unless malformed/unknown
  std::uint64_t token_id = 0;  // set unless malformed/unknown
  ScopeSet scopes = 0;         // effective scopes (with implications) when known
  ScopeSet missing = 0;        // for kInsufficientScope: the scopes that were needed
  bool ok() const { return verdict == AuthVerdict::kOk; }
};

struct InitResult {
  std::uint64_t root_user_id = 0;
  CreatedToken root_token;
};

class TokenService {
 public:
  // Creates a new ledger and key in options.data_dir, registers admin user `root`
  // and a root token (scopes api and sudo, expiring after the maximum lifetime).
  // kAlreadyExists if a ledger or key is there; nothing is left half made.
  static Result<InitResult> Init(const ServiceOptions& options);

  // Opens an existing ledger: loads the key, replays and verifies every record.
  static Result<std::unique_ptr<TokenService>> Open(const ServiceOptions& options);
  ~TokenService();

  // The hot path: format check, digest, index lookup, revocation, expiry (at
  // `now_us`), owner state and scope. Lock-free; never reads the ledger.
  AuthResult Authenticate(std::string_view token, std::int64_t now_us,
                          ScopeSet required = 0) const;
  // results[i] = Authenticate(tokens[i], now_us, required) for every i, the same
  // verdicts, with the index accesses of up to kAuthBatch tokens overlapped: every
  // token of a group is checked and digested, then every index slot of the group is
  // prefetched, then looked up, so the group waits for main memory about once instead
  // of once per token. For callers that hold several requests at once (docs/PERFORMANCE.md
  // section 2). REQUIRES: results.size() >= tokens.size().
  static constexpr std::size_t kAuthBatch = 16;
  void AuthenticateBatch(std::span<const std::string_view> tokens, std::int64_t now_us,
                         ScopeSet required, std::span<AuthResult> results) const;

  // Users.
  Result<replay::UserRecord> RegisterUser(const Actor& actor, std::string_view username,
                                          std::string_view name, std::string_view email,
                                          bool admin);
  Status BlockUser(const Actor& actor, std::uint64_t user_id);
  Status UnblockUser(const Actor& actor, std::uint64_t user_id);
  Status SetAdmin(const Actor& actor, std::uint64_t user_id, bool admin);
  // A user by decimal id or by username.
  Result<replay::UserRecord> FindUser(std::string_view id_or_username) const;

  // Tokens.
  Result<CreatedToken> CreateToken(const Actor& actor, const CreateTokenRequest& request);
  Status RevokeToken(const Actor& actor, std::uint64_t token_id, schema::RevokeReason reason);
  // Revokes `token_id` and creates its successor (same name, description, scopes;
  // expiry `expires_day` or the policy default) in ONE append. Rotating a token that is
  // already revoked is treated as reuse of a leaked secret: every active token of its
  // family is revoked (reason family_reuse) and kUnauthenticated is returned.
  Result<CreatedToken> RotateToken(const Actor& actor, std::uint64_t token_id,
                                   std::optional<std::int32_t> expires_day);
  Result<TokenInfo> GetToken(std::uint64_t token_id) const;
  // Every token of the user, oldest first; an error if a record cannot be read.
  Result<std::vector<TokenInfo>> TokensOfUser(std::uint64_t user_id) const;

  const replay::State& state() const { return *state_; }
  const ledger::Ledger& ledger() const { return *ledger_; }
  const Policy& policy() const { return policy_; }
  const Clock& clock() const { return *clock_; }
  // The first day a new token may not expire on or after (today + max lifetime + 1),
  // or nullopt when the lifetime is unlimited.
  std::optional<std::int32_t> MaxExpiryDay() const;

 private:
  TokenService(const ServiceOptions& options, TokenKey key);
  // The verdict for a token the index knows (everything after the lookup).
  AuthResult Judge(const index::TokenEntry& entry, std::int64_t now_us,
                   ScopeSet required) const;
  Status CheckExpiry(std::optional<std::int32_t>* expires_day) const;
  schema::EventContext Context(const Actor& actor) const;
  Result<TokenInfo> Describe(const replay::TokenMeta& meta) const;
  // Claims `token_id` for revocation by this caller (false if revoked or being revoked).
  bool ClaimRevocation(std::uint64_t token_id);
  void ReleaseRevocation(std::uint64_t token_id);

  Policy policy_;
  const Clock* clock_;
  TokenKey key_;
  std::string prefix_;
  std::unique_ptr<replay::State> state_;  // before ledger_: the ledger's listener
  std::unique_ptr<ledger::Ledger> ledger_;
  std::atomic<std::uint64_t> next_token_id_{1};
  std::mutex users_mu_;  // held across check + append of user events
  std::mutex revoking_mu_;
  std::unordered_set<std::uint64_t> revoking_;  // guarded by revoking_mu_
};

}  // namespace patledger::service
