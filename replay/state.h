// replay/state.h: the in-memory state that replaying the ledger produces.
//
// State is a deterministic function of the ledger's records: Apply() each record in
// sequence order (at start-up through Replay(), and then live as the ledger's
// Listener) and you get the same State. It holds
//   - the hot path: index::TokenIndex (digest -> token) and index::UserFlags,
//     lock-free for readers (see index/token_index.h);
//   - the catalog: users in full, and per token only what the rules need (owner,
//     scopes, expiry, revocation, rotation links, and the sequence numbers of its
//     TokenCreated / TokenRevoked records). Names, descriptions, addresses and
//     actors stay in the ledger; callers read them with Ledger::Read(seq). This keeps
//     the catalog near 80 bytes per token (the whole process near 200 at 10M).
//
// Apply refuses (kCorruption, "seq N: ...") a record that contradicts the state: an
// event before LedgerInitialized or a second one, a duplicate user id / username /
// token id / digest, a token for an unknown user, a revoke of an unknown or already
// revoked token, a change of an unknown user. patledger never writes such records, so
// each one means the ledger was tampered with or a bug; it is never skipped.
//
// Thread safety: Apply, ApplyBatch and OnCommitted REQUIRE one thread at a time: the
// ledger's commit leader, or Replay's thread (the visitor of Ledger::ScanBatches)
// before anyone reads. Readers may call every
// const method concurrently with Apply: the index and user flags are lock-free; the
// catalog accessors take a shared lock and return copies.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <absl/container/flat_hash_map.h>

#include "common/status.h"
#include "index/token_index.h"
#include "index/user_flags.h"
#include "ledger/ledger.h"

namespace patledger::replay {

struct UserRecord {
  std::uint64_t id = 0;
  std::string username;
  std::string name;
  std::string email;
  bool admin = false;
  bool blocked = false;
  std::int64_t created_at_us = 0;
  std::uint64_t created_seq = 0;
};

struct TokenMeta {
  std::uint64_t id = 0;
  std::uint64_t user_id = 0;
  index::TokenDigest digest{};
  std::uint32_t scopes = 0;                    // as granted; see service/scopes.h
  std::int32_t expires_day = index::kNoExpiry;  // days since epoch, or kNoExpiry
  std::uint64_t created_seq = 0;               // seq of its TokenCreated record
  std::uint64_t revoked_seq = 0;               // seq of its TokenRevoked record, or 0
  std::uint64_t rotated_from = 0;              // token it replaced, or 0
  std::uint64_t rotated_to = 0;                // token that replaced it, or 0
  std::int64_t created_at_us = 0;
  bool revoked() const { return revoked_seq != 0; }
};

class State final : public ledger::Listener {
 public:
  // `expected_tokens` sizes the index up front (0: grow as needed).
  explicit State(std::size_t expected_tokens = 0);
  ~State() override;

  // Applies one verified record. REQUIRES: records in sequence order, no gaps.
  Status Apply(const ledger::RecordView& record);
  // Applies consecutive verified records in order, as Apply does one by one, under
  // one lock and with the memory of records a few ahead prefetched (replay). Stops
  // at the first refusal; *applied (optional) receives how many were applied.
  Status ApplyBatch(std::span<const ledger::RecordView> records, std::size_t* applied);
  // Listener: applies a record the ledger just committed. A refusal here means the
  // service appended something inconsistent (a bug); it is kept in health().
  void OnCommitted(const ledger::RecordView& record) override;

  // Replay calls it with the ledger's record count, before applying: reserves the
  // per-token catalog table for that many tokens (an upper bound; address space only:
  // a page becomes resident when a token first lands on it) so that it never moves,
  // and sizes the index for half as many (a lower bound unless user records outnumber
  // live tokens; see state.cc) so that it grows rarely or never. Best effort: a failed
  // reservation is ignored.
  void ReserveForRecords(std::uint64_t records);
  // Any thread, alongside everything else (Replay runs it on a thread of idle
  // priority): faults in the next `bytes` of the memory replay is about to fill — the
  // index table (TokenIndex::Prefault), then the catalog entries ReserveForRecords
  // reserved for half the records, as many tokens as the index is sized for — without
  // changing it. False once there is nothing left to do. Never takes mu_.
  bool Prefault(std::size_t bytes);
  // Gives back the slack that growing one record at a time left in the catalog's
  // containers, and pages Prefault brought in for entries no token took (Replay calls
  // it at the end). Takes the lock.
  void Compact();

  // OK, or the first refusal seen by OnCommitted.
  Status health() const;

  // Hot path (lock-free).
  const index::TokenIndex& token_index() const { return index_; }
  const index::UserFlags& user_flags() const { return user_flags_; }

  // Catalog (shared lock; copies).
  bool initialized() const;
  std::uint64_t key_fingerprint() const;
  std::string token_prefix() const;
  std::uint64_t last_seq() const { return last_seq_.load(std::memory_order_acquire); }
  std::int64_t last_recorded_at_us() const;
  std::optional<UserRecord> FindUser(std::uint64_t user_id) const;
  std::optional<UserRecord> FindUserByName(std::string_view username) const;
  std::vector<UserRecord> Users() const;
  std::optional<TokenMeta> FindToken(std::uint64_t token_id) const;
  std::vector<TokenMeta> TokensOfUser(std::uint64_t user_id) const;
  // Every token, by id; `visit` runs under the shared lock and must not call State.
  void ForEachToken(const std::function<void(const TokenMeta&)>& visit) const;
  // The rotation family of `token_id`: from the original token to the newest, in order.
  std::vector<std::uint64_t> Family(std::uint64_t token_id) const;
  std::size_t user_count() const;
  std::size_t token_count() const;
  // The largest ids in use (new ids are larger).
  std::uint64_t max_user_id() const;
  std::uint64_t max_token_id() const;
  std::size_t MemoryBytes() const;

 private:
  // What the catalog keeps per token beside the index's 64-byte slot: 56 bytes, so a
  // 10M-token process stays near 200 bytes per token (docs/PERFORMANCE.md, memory).
  // The id is the position in tokens_; the owner, scopes and expiry live only in the
  // index slot (found by the digest); rotation links, rare, in maps of their own.
  // created_seq == 0: no token with this id.
  struct StoredToken {
    index::TokenDigest digest{};
    std::int64_t created_at_us = 0;
    std::uint64_t created_seq = 0;
    std::uint64_t revoked_seq = 0;
  };
  static_assert(sizeof(StoredToken) == 56, "see docs/PERFORMANCE.md, memory");

  Status ApplyLocked(const ledger::RecordView& record);
  // Hints the CPU to fetch what applying `record` will touch. `stage` 0 (32 records
  // ahead): catalog entries (the owner's, a revoked or rotated token's); stage 1 (16
  // ahead): the index slot — for a revoke found through its catalog entry — and the
  // end of the owner's token list. REQUIRES: mu_ held.
  void PrefetchLocked(const ledger::RecordView& record, int stage) const;
  // REQUIRES: mu_ held.
  bool HasTokenLocked(std::uint64_t token_id) const {
    return token_id != 0 && token_id < tokens_.size() && tokens_[token_id].created_seq != 0;
  }
  TokenMeta MetaLocked(std::uint64_t token_id) const;  // REQUIRES: HasTokenLocked
  // tokens_.resize(n), telling Prefault first if tokens_ moves. REQUIRES: mu_ held.
  void ResizeCatalogLocked(std::size_t n);
  // The address of the end of the first `entries` entries of tokens_, rounded to a
  // page boundary (up or down). REQUIRES: mu_ held.
  std::uintptr_t CatalogPageAfterLocked(std::size_t entries, bool round_up) const;

  index::TokenIndex index_;
  index::UserFlags user_flags_;

  mutable std::shared_mutex mu_;  // guards everything below
  bool initialized_ = false;
  std::uint64_t key_fingerprint_ = 0;
  std::string token_prefix_;
  std::int64_t last_recorded_at_us_ = 0;
  std::vector<UserRecord> users_;     // index = user id; [0] unused
  std::unordered_map<std::string, std::uint64_t> user_ids_by_name_;
  std::vector<StoredToken> tokens_;   // index = token id (dense in practice); [0] unused
  absl::flat_hash_map<std::uint64_t, std::uint64_t> rotated_from_;  // new id -> old id
  absl::flat_hash_map<std::uint64_t, std::uint64_t> rotated_to_;    // old id -> new id
  std::size_t token_count_ = 0;
  std::vector<std::vector<std::uint64_t>> tokens_by_user_;  // index = user id
  Status health_;

  std::atomic<std::uint64_t> last_seq_{0};

  // Prefault's part of the catalog: the bytes of tokens_'s storage still to fault in.
  // Whoever moves tokens_ (ResizeCatalogLocked, ReserveForRecords) takes this lock, so
  // a Prefault step never runs on storage that was freed.
  std::mutex prefault_mu_;
  std::uintptr_t prefault_next_ = 0;  // guarded by prefault_mu_
  std::uintptr_t prefault_end_ = 0;   // guarded by prefault_mu_
};

// Where a replay stops.
struct ReplayLimit {
  std::uint64_t to_seq = UINT64_MAX;  // last record applied
  // Apply records recorded at or before this instant (UTC µs); stop at the first one
  // recorded later (the ledger makes recorded_at non-decreasing in seq order).
  std::int64_t to_time_us = INT64_MAX;
};

// Verifies and applies every record of `ledger` within `limit` to `state` (a fresh
// State). Errors name the sequence number. `applied` (optional) receives the count.
// Three threads: a second one (Ledger::ScanBatches) reads and verifies, the caller's
// checks the chain and applies, and a third, of idle priority, runs State::Prefault;
// `state` is complete when Replay returns.
Status Replay(const ledger::Ledger& ledger, State* state, const ReplayLimit& limit = {},
              std::uint64_t* applied = nullptr);

}  // namespace patledger::replay
