#include "replay/state.h"

#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <new>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

namespace patledger::replay {
namespace {

using schema::Event;

Status Refuse(std::uint64_t seq, std::string what) {
  return Status::Corruption("seq " + std::to_string(seq) + ": " + std::move(what));
}

std::uint32_t FlagsOf(const UserRecord& u) {
  return index::UserFlags::kExists | (u.blocked ? index::UserFlags::kBlocked : 0) |
         (u.admin ? index::UserFlags::kAdmin : 0);
}

std::string Str(const flatbuffers::String* s) { return s ? s->str() : std::string(); }

// Runs State::Prefault, 2 MiB at a time, on a thread of idle priority (SCHED_IDLE: it
// gets a core only when nothing else wants it) from construction until it is done or
// the object is destroyed. On this VM the first touch of fresh memory costs ~3.5 s
// per GiB (docs/PERFORMANCE.md §3); done here it no longer stalls the applying thread.
class IdlePrefault {
 public:
  explicit IdlePrefault(State* state) {
    try {
      thread_ = std::thread([this, state] { Run(state); });
    } catch (const std::system_error&) {
      // No thread: the pages fault in as replay first stores into them.
    }
  }
  ~IdlePrefault() {
    stop_.store(true, std::memory_order_relaxed);
    if (!thread_.joinable()) return;
    // It finishes the step it is in. At idle priority on a machine kept busy by other
    // processes that could take long: back to normal priority for it, where allowed.
    const sched_param normal{};
    (void)pthread_setschedparam(thread_.native_handle(), SCHED_OTHER, &normal);
    thread_.join();
  }
  IdlePrefault(const IdlePrefault&) = delete;
  IdlePrefault& operator=(const IdlePrefault&) = delete;

 private:
  void Run(State* state) {
    pthread_setname_np(pthread_self(), "replay-prefault");  // for top, perf, gdb
    const sched_param idle{};
    // Best effort: at normal priority it still only brings pages in earlier.
    (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
    while (!stop_.load(std::memory_order_relaxed) && state->Prefault(kStep)) {
    }
  }

  static constexpr std::size_t kStep = std::size_t{2} << 20;  // one huge page
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

State::State(std::size_t expected_tokens) : index_(expected_tokens) {
  users_.resize(1);
  tokens_.resize(1);
  if (expected_tokens) tokens_.reserve(expected_tokens + 1);
}

State::~State() = default;

Status State::Apply(const ledger::RecordView& record) {
  std::unique_lock lock(mu_);
  Status s = ApplyLocked(record);
  if (s.ok()) last_seq_.store(record.seq, std::memory_order_release);
  return s;
}

Status State::ApplyBatch(std::span<const ledger::RecordView> records,
                         std::size_t* applied) {
  // Applying is bound by memory latency: the index slot of each token, its owner's
  // entries and, for a revoke, its catalog entry are random accesses into tables
  // larger than the caches. Fetching them a few records ahead overlaps those misses
  // (REFERENCE.md §3; measured here: -15% CPU on the applying thread at 1M tokens).
  // A revoke finds its index slot through its catalog entry, hence two distances.
  constexpr std::size_t kCatalogAhead = 32, kIndexAhead = 16;
  std::unique_lock lock(mu_);
  const std::size_t n = records.size();
  for (std::size_t i = 0; i < std::min(n, kCatalogAhead); ++i) PrefetchLocked(records[i], 0);
  for (std::size_t i = 0; i < std::min(n, kIndexAhead); ++i) PrefetchLocked(records[i], 1);
  std::size_t i = 0;
  Status s;
  for (; i < n; ++i) {
    if (i + kCatalogAhead < n) PrefetchLocked(records[i + kCatalogAhead], 0);
    if (i + kIndexAhead < n) PrefetchLocked(records[i + kIndexAhead], 1);
    s = ApplyLocked(records[i]);
    if (!s.ok()) break;
    last_seq_.store(records[i].seq, std::memory_order_release);
  }
  if (applied) *applied = i;
  return s;
}

void State::PrefetchLocked(const ledger::RecordView& record, int stage) const {
  const schema::Envelope& env = *record.envelope;
  if (env.event_type() == Event::TokenCreated) {
    const auto* e = env.event_as_TokenCreated();
    const std::uint64_t user = e->user_id(), from = e->rotated_from();
    if (stage == 0) {
      if (user < users_.size()) __builtin_prefetch(&users_[user]);
      if (user < tokens_by_user_.size()) __builtin_prefetch(&tokens_by_user_[user]);
      if (from < tokens_.size()) __builtin_prefetch(&tokens_[from]);
    } else {
      index_.PrefetchForWrite(schema::ToDigest(*e->digest()));
      if (user < tokens_by_user_.size()) {
        const std::vector<std::uint64_t>& ids = tokens_by_user_[user];
        __builtin_prefetch(ids.data() + ids.size(), /*rw=*/1);
      }
    }
  } else if (env.event_type() == Event::TokenRevoked) {
    const std::uint64_t id = env.event_as_TokenRevoked()->token_id();
    if (id >= tokens_.size()) return;  // refused when applied
    if (stage == 0) {
      __builtin_prefetch(&tokens_[id]);
    } else {
      index_.PrefetchForWrite(tokens_[id].digest);
    }
  }
}

void State::OnCommitted(const ledger::RecordView& record) {
  Status s = Apply(record);
  if (!s.ok()) {
    std::unique_lock lock(mu_);
    if (health_.ok()) health_ = s;
  }
}

Status State::health() const {
  std::shared_lock lock(mu_);
  return health_;
}

Status State::ApplyLocked(const ledger::RecordView& record) {
  const std::uint64_t seq = record.seq;
  const schema::Envelope& env = *record.envelope;
  if (seq != last_seq_.load(std::memory_order_relaxed) + 1) {
    return Refuse(seq, "applied out of order after seq " +
                           std::to_string(last_seq_.load(std::memory_order_relaxed)));
  }
  if (env.event_type() != Event::LedgerInitialized && !initialized_) {
    return Refuse(seq, "event before LedgerInitialized");
  }
  last_recorded_at_us_ = std::max(last_recorded_at_us_, env.recorded_at_us());

  switch (env.event_type()) {
    case Event::LedgerInitialized: {
      if (initialized_) return Refuse(seq, "second LedgerInitialized");
      const auto* e = env.event_as_LedgerInitialized();
      initialized_ = true;
      key_fingerprint_ = e->key_fingerprint();
      token_prefix_ = Str(e->token_prefix());
      return Status::OK();
    }
    case Event::UserRegistered: {
      const auto* e = env.event_as_UserRegistered();
      const std::uint64_t id = e->user_id();
      if (id > index::UserFlags::kMaxUserId) {
        return Refuse(seq, "user id " + std::to_string(id) + " out of range");
      }
      if (id < users_.size() && users_[id].id != 0) {
        return Refuse(seq, "duplicate user id " + std::to_string(id));
      }
      // As for tokens: ids are dense (assigned from a counter), and users_ is indexed by
      // id, so an id far past the last one (up to kMaxUserId, 2^28) would allocate tens
      // of GB before anything else is checked: refuse it.
      if (id > users_.size() + (1u << 20)) {
        return Refuse(seq, "user id " + std::to_string(id) + " far beyond the last one");
      }
      std::string username = Str(e->username());
      if (user_ids_by_name_.contains(username)) {
        return Refuse(seq, "duplicate username '" + username + "'");
      }
      if (id >= users_.size()) users_.resize(id + 1);
      UserRecord& u = users_[id];
      u.id = id;
      u.username = username;
      u.name = Str(e->name());
      u.email = Str(e->email());
      u.admin = e->admin();
      u.blocked = false;
      u.created_at_us = env.recorded_at_us();
      u.created_seq = seq;
      user_ids_by_name_.emplace(std::move(username), id);
      (void)user_flags_.Set(id, FlagsOf(u));  // id range checked above
      return Status::OK();
    }
    case Event::UserChanged: {
      const auto* e = env.event_as_UserChanged();
      const std::uint64_t id = e->user_id();
      if (id >= users_.size() || users_[id].id == 0) {
        return Refuse(seq, "change of unknown user " + std::to_string(id));
      }
      UserRecord& u = users_[id];
      switch (e->change()) {
        case schema::UserChange::Blocked: u.blocked = true; break;
        case schema::UserChange::Unblocked: u.blocked = false; break;
        case schema::UserChange::AdminGranted: u.admin = true; break;
        case schema::UserChange::AdminRemoved: u.admin = false; break;
        default: return Refuse(seq, "unknown user change");
      }
      (void)user_flags_.Set(id, FlagsOf(u));
      return Status::OK();
    }
    case Event::TokenCreated: {
      const auto* e = env.event_as_TokenCreated();
      const std::uint64_t id = e->token_id();
      const std::uint64_t user = e->user_id();
      if (user >= users_.size() || users_[user].id == 0) {
        return Refuse(seq, "token " + std::to_string(id) + " for unknown user " +
                               std::to_string(user));
      }
      if (HasTokenLocked(id)) {
        return Refuse(seq, "duplicate token id " + std::to_string(id));
      }
      // Ids are dense (assigned from a counter), so a vector indexed by id is the
      // smallest catalog. A wildly sparse id would make it huge: refuse it.
      if (id > tokens_.size() + (1u << 20)) {
        return Refuse(seq, "token id " + std::to_string(id) + " far beyond the last one");
      }
      const std::uint64_t from = e->rotated_from();
      if (from != 0 && !HasTokenLocked(from)) {
        return Refuse(seq, "token " + std::to_string(id) + " rotated from unknown token " +
                               std::to_string(from));
      }
      StoredToken t;
      t.digest = schema::ToDigest(*e->digest());
      t.created_seq = seq;
      t.created_at_us = env.recorded_at_us();
      index::TokenEntry entry{.token_id = id, .user_id = user, .scopes = e->scopes(),
                              .expires_day = e->expires_day(), .revoked = false};
      if (!index_.Insert(t.digest, entry)) {
        return Refuse(seq, "token " + std::to_string(id) + " has the digest of another token");
      }
      if (id >= tokens_.size()) ResizeCatalogLocked(id + 1);
      tokens_[id] = t;
      ++token_count_;
      if (from != 0) {
        rotated_from_[id] = from;
        rotated_to_[from] = id;
      }
      if (user >= tokens_by_user_.size()) tokens_by_user_.resize(user + 1);
      tokens_by_user_[user].push_back(id);
      return Status::OK();
    }
    case Event::TokenRevoked: {
      const auto* e = env.event_as_TokenRevoked();
      const std::uint64_t id = e->token_id();
      if (!HasTokenLocked(id)) {
        return Refuse(seq, "revoke of unknown token " + std::to_string(id));
      }
      StoredToken& t = tokens_[id];
      if (t.revoked_seq != 0) {
        return Refuse(seq, "token " + std::to_string(id) + " revoked again (first at seq " +
                               std::to_string(t.revoked_seq) + ")");
      }
      t.revoked_seq = seq;
      if (!index_.Revoke(t.digest)) {
        return Status::Internal("seq " + std::to_string(seq) + ": token " +
                                std::to_string(id) + " missing from the index");
      }
      return Status::OK();
    }
    default:
      return Refuse(seq, "unknown event type " + schema::EventTypeName(env.event_type()));
  }
}

bool State::initialized() const {
  std::shared_lock lock(mu_);
  return initialized_;
}

std::uint64_t State::key_fingerprint() const {
  std::shared_lock lock(mu_);
  return key_fingerprint_;
}

std::string State::token_prefix() const {
  std::shared_lock lock(mu_);
  return token_prefix_;
}

std::int64_t State::last_recorded_at_us() const {
  std::shared_lock lock(mu_);
  return last_recorded_at_us_;
}

std::optional<UserRecord> State::FindUser(std::uint64_t user_id) const {
  std::shared_lock lock(mu_);
  if (user_id == 0 || user_id >= users_.size() || users_[user_id].id == 0) return std::nullopt;
  return users_[user_id];
}

std::optional<UserRecord> State::FindUserByName(std::string_view username) const {
  std::shared_lock lock(mu_);
  auto it = user_ids_by_name_.find(std::string(username));
  if (it == user_ids_by_name_.end()) return std::nullopt;
  return users_[it->second];
}

std::vector<UserRecord> State::Users() const {
  std::shared_lock lock(mu_);
  std::vector<UserRecord> out;
  for (const UserRecord& u : users_) {
    if (u.id != 0) out.push_back(u);
  }
  return out;
}

TokenMeta State::MetaLocked(std::uint64_t token_id) const {
  const StoredToken& t = tokens_[token_id];
  TokenMeta m;
  m.id = token_id;
  index::TokenEntry entry;
  if (!index_.Lookup(t.digest, &entry)) std::abort();  // Apply put it there, for good
  m.user_id = entry.user_id;
  m.digest = t.digest;
  m.scopes = entry.scopes;
  m.expires_day = entry.expires_day;
  m.created_seq = t.created_seq;
  m.revoked_seq = t.revoked_seq;
  m.created_at_us = t.created_at_us;
  if (auto it = rotated_from_.find(token_id); it != rotated_from_.end()) {
    m.rotated_from = it->second;
  }
  if (auto it = rotated_to_.find(token_id); it != rotated_to_.end()) m.rotated_to = it->second;
  return m;
}

std::optional<TokenMeta> State::FindToken(std::uint64_t token_id) const {
  std::shared_lock lock(mu_);
  if (!HasTokenLocked(token_id)) return std::nullopt;
  return MetaLocked(token_id);
}

std::vector<TokenMeta> State::TokensOfUser(std::uint64_t user_id) const {
  std::shared_lock lock(mu_);
  std::vector<TokenMeta> out;
  if (user_id >= tokens_by_user_.size()) return out;
  const std::vector<std::uint64_t>& ids = tokens_by_user_[user_id];
  out.reserve(ids.size());
  for (std::uint64_t id : ids) out.push_back(MetaLocked(id));
  return out;
}

void State::ForEachToken(const std::function<void(const TokenMeta&)>& visit) const {
  std::shared_lock lock(mu_);
  for (std::uint64_t id = 1; id < tokens_.size(); ++id) {
    if (tokens_[id].created_seq != 0) visit(MetaLocked(id));
  }
}

std::vector<std::uint64_t> State::Family(std::uint64_t token_id) const {
  std::shared_lock lock(mu_);
  std::vector<std::uint64_t> out;
  if (!HasTokenLocked(token_id)) return out;
  std::uint64_t first = token_id;
  // Each link was checked at Apply to point to an earlier token, so these walks end.
  for (auto it = rotated_from_.find(first); it != rotated_from_.end();
       it = rotated_from_.find(first)) {
    first = it->second;
  }
  for (std::uint64_t id = first;;) {
    out.push_back(id);
    auto it = rotated_to_.find(id);
    if (it == rotated_to_.end()) break;
    id = it->second;
  }
  return out;
}

std::size_t State::user_count() const {
  std::shared_lock lock(mu_);
  return user_ids_by_name_.size();
}

std::size_t State::token_count() const {
  std::shared_lock lock(mu_);
  return token_count_;
}

std::uint64_t State::max_user_id() const {
  std::shared_lock lock(mu_);
  return users_.size() - 1;
}

std::uint64_t State::max_token_id() const {
  std::shared_lock lock(mu_);
  return tokens_.size() - 1;
}

std::size_t State::MemoryBytes() const {
  std::shared_lock lock(mu_);
  std::size_t bytes = index_.MemoryBytes() + user_flags_.MemoryBytes() +
                      tokens_.capacity() * sizeof(StoredToken) +
                      (rotated_from_.capacity() + rotated_to_.capacity()) * 17 +
                      users_.capacity() * sizeof(UserRecord) +
                      tokens_by_user_.capacity() * sizeof(std::vector<std::uint64_t>);
  for (const auto& ids : tokens_by_user_) bytes += ids.capacity() * sizeof(std::uint64_t);
  return bytes;
}

Status Replay(const ledger::Ledger& ledger, State* state, const ReplayLimit& limit,
              std::uint64_t* applied) {
  std::uint64_t count = 0;
  bool reached_time = false;
  ledger::ScanOptions options;
  options.to_seq = limit.to_seq;
  state->ReserveForRecords(std::min(ledger.last_seq(), limit.to_seq));
  // The memory the index and the catalog will fill is faulted in on a thread that
  // runs only when a core would otherwise be idle (docs/PERFORMANCE.md §3).
  std::optional<IdlePrefault> prefault(std::in_place, state);
  // The ledger reads and verifies on a second thread while this one applies
  // (Ledger::ScanBatches calls the visitor here, one batch at a time).
  Status s = ledger.ScanBatches(
      options, [&](std::span<const ledger::RecordView> records) -> Status {
        if (reached_time) return Status::OK();
        const auto later = std::find_if(records.begin(), records.end(), [&](const auto& r) {
          return r.envelope->recorded_at_us() > limit.to_time_us;
        });
        // After the first later record, keep scanning: the rest is still verified.
        reached_time = later != records.end();
        std::size_t applied_now = 0;
        Status a = state->ApplyBatch(records.first(later - records.begin()), &applied_now);
        count += applied_now;
        return a;
      });
  prefault.reset();  // stopped before Compact, which would wait for its step
  if (applied) *applied = count;
  if (s.ok()) state->Compact();
  return s;
}

bool State::Prefault(std::size_t bytes) {
  if (index_.Prefault(bytes)) return true;
  std::lock_guard lock(prefault_mu_);  // held through the madvise: see prefault_mu_
  if (prefault_next_ >= prefault_end_) return false;
  const std::size_t n = std::min<std::uintptr_t>(bytes, prefault_end_ - prefault_next_);
  // Missing pages only, zero; pages already there are left as they are, so entries
  // ApplyLocked stores meanwhile are untouched. Fails before Linux 5.14: stop.
  if (madvise(reinterpret_cast<void*>(prefault_next_), n, MADV_POPULATE_WRITE) != 0) {
    prefault_next_ = prefault_end_;
    return false;
  }
  prefault_next_ += n;
  return prefault_next_ < prefault_end_;
}

std::uintptr_t State::CatalogPageAfterLocked(std::size_t entries, bool round_up) const {
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const std::uintptr_t end =
      reinterpret_cast<std::uintptr_t>(tokens_.data()) + entries * sizeof(StoredToken);
  return (end + (round_up ? page - 1 : 0)) & ~(page - 1);
}

void State::ResizeCatalogLocked(std::size_t n) {
  if (n <= tokens_.capacity()) {
    tokens_.resize(n);  // in place: Prefault may go on
    return;
  }
  std::lock_guard lock(prefault_mu_);
  prefault_next_ = prefault_end_ = 0;
  tokens_.resize(n);
}

void State::ReserveForRecords(std::uint64_t records) {
  // A damaged head could claim any count; beyond this a reservation helps no one.
  constexpr std::uint64_t kMaxReserve = std::uint64_t{1} << 26;  // 3.8 GB of address space
  std::unique_lock lock(mu_);
  if (records > kMaxReserve) return;
  try {
    if (records + 1 > tokens_.capacity()) {
      std::lock_guard prefault_lock(prefault_mu_);
      tokens_.reserve(records + 1);
      // Revokes and rotations reach tokens_ at random: on 2 MiB pages a 10M-token
      // catalog (560 MB) needs 280 TLB entries instead of 137k, so those accesses
      // and their prefetches no longer wait for a page walk. A hint only.
      const auto begin = reinterpret_cast<std::uintptr_t>(tokens_.data());
      const std::uintptr_t end = begin + tokens_.capacity() * sizeof(StoredToken);
      const std::uintptr_t huge = std::uintptr_t{2} << 20;
      const std::uintptr_t from = (begin + huge - 1) & ~(huge - 1), to = end & ~(huge - 1);
      if (from < to) madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE);
      // For Prefault: the pages of the entries after those in use, up to as many
      // tokens as the index is sized for below (whole pages of tokens_ only).
      const std::uint64_t entries = std::max<std::uint64_t>(records / 2 + 1, tokens_.size());
      prefault_next_ = CatalogPageAfterLocked(tokens_.size(), /*round_up=*/true);
      prefault_end_ = CatalogPageAfterLocked(entries, /*round_up=*/false);
    }
    // A token makes at most two records (its creation and its revocation), so unless
    // the user records outnumber the live tokens, N records hold at least N/2 tokens:
    // an index sized for N/2 is at most the size it would grow to, and is built once
    // instead of by doublings (each a rehash into fresh pages, with both tables alive).
    index_.Reserve(records / 2);
  } catch (const std::bad_alloc&) {
    // Only an optimization: the tables grow as they always could.
  }
}

void State::Compact() {
  std::unique_lock lock(mu_);
  // Replay grew these a record at a time (capacity up to twice the size); a catalog
  // that lives as long as the process should not keep the slack (~4 B/token at 10M).
  for (auto& ids : tokens_by_user_) ids.shrink_to_fit();
  rotated_from_.rehash(0);
  rotated_to_.rehash(0);
  {
    // Entries Prefault brought in that no token took (fewer tokens than records / 2):
    // their pages go back; tokens_ keeps the capacity, and those pages fault in again,
    // zero, if tokens land there. The part Prefault had not reached yet is untouched.
    std::lock_guard lock(prefault_mu_);
    const std::uintptr_t unused = CatalogPageAfterLocked(tokens_.size(), /*round_up=*/true);
    if (unused < prefault_next_) {
      madvise(reinterpret_cast<void*>(unused), prefault_next_ - unused, MADV_DONTNEED);
    }
    prefault_next_ = prefault_end_ = 0;
  }
  ::malloc_trim(0);  // glibc: return the freed heap pages to the system
}

}  // namespace patledger::replay
