// Specification of ledger/: the append-only, hash-chained event log on RocksDB.
// Damage tests rewrite real stored values through a raw RocksDB handle and assert
// exactly which seq is reported. Concurrent cases count violations on worker
// threads (Boost.Test assertions are not thread-safe) and assert on the main thread;
// none asserts on timing.

#include "ledger/ledger.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ledger/damage.h"
#include "ledger/format.h"
#include "ledger/record.h"
#include "ledger/table_check.h"
#include "ledger/wal_file.h"
#include "tests/test_util.h"

extern char** environ;

namespace patledger::ledger {
namespace {

namespace fmt = format;

// ---------------------------------------------------------------------------
// Helpers

// The tag of the thread building and appending events (0 = the test's thread);
// events carry it as actor.user_id so a listener can tell whose record it sees.
thread_local std::uint64_t tls_tag = 0;

schema::EventContext Context(std::uint64_t tag) {
  schema::EventContext ctx;
  ctx.recorded_at_us = 1'764'288'000'000'000 + static_cast<std::int64_t>(tag);
  ctx.actor_user_id = tag;
  ctx.request_id = "req-" + std::to_string(tag);
  return ctx;
}

// A small valid event whose token_id identifies it.
std::string Revoked(std::uint64_t token_id, std::uint64_t tag = 0) {
  return schema::BuildTokenRevoked(Context(tag), token_id, schema::RevokeReason::ByOwner);
}

std::span<const std::uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// SHA-256 straight from OpenSSL, independent of ledger::NextChain.
ChainHash Sha256(std::string_view data) {
  ChainHash out;
  unsigned int len = 0;
  BOOST_REQUIRE(
      EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) == 1);
  return out;
}

std::string ChainString(const ChainHash& c) {
  return std::string(reinterpret_cast<const char*>(c.data()), c.size());
}

std::uint64_t TokenId(const RecordView& r) {
  return r.envelope->event_as_TokenRevoked()->token_id();
}

std::vector<std::uint64_t> Range(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> out;
  for (std::uint64_t s = first; s <= last; ++s) out.push_back(s);
  return out;
}

std::vector<std::uint64_t> Without(std::vector<std::uint64_t> v,
                                   const std::set<std::uint64_t>& drop) {
  std::erase_if(v, [&](std::uint64_t s) { return drop.contains(s); });
  return v;
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// "seq 42: ..." -> 42; 0 if the message does not start that way.
std::uint64_t SeqOf(const std::string& message) {
  if (!StartsWith(message, "seq ")) return 0;
  return std::strtoull(message.c_str() + 4, nullptr, 10);
}

std::string Seal(std::string envelope) {
  const auto sum =
      fmt::EncodeChecksum(XXH3_64bits_withSeed(envelope.data(), envelope.size(), 0));
  envelope.append(sum.data(), sum.size());
  return envelope;
}

struct ScanResult {
  Status status;
  std::vector<std::uint64_t> visited;
  std::vector<std::string> damage;  // what on_damage received
};

// A temporary ledger and short verbs over it. Raw* open the directory with plain
// RocksDB (the Ledger must be closed) to read or damage stored values.
struct LedgerFixture {
  TempDir tmp;
  std::string dir = tmp.path() + "/ledger";
  Options options;
  std::unique_ptr<Ledger> ledger;

  LedgerFixture() {
    options.create_if_missing = true;
    Open();
  }

  void Open() {
    auto opened = Ledger::Open(dir, options);
    BOOST_REQUIRE_MESSAGE(opened.has_value(), Why(opened));
    ledger = std::move(*opened);
  }
  void Close() { ledger.reset(); }
  void Reopen() {
    Close();
    Open();
  }

  // Appends `count` single-event transactions with token ids first_token, ...
  void AppendMany(std::uint64_t count, std::uint64_t first_token = 1) {
    for (std::uint64_t i = 0; i < count; ++i) {
      auto seq = ledger->Append({Revoked(first_token + i)});
      BOOST_REQUIRE_MESSAGE(seq.has_value(), Why(seq));
    }
  }

  ScanResult ScanAll(ScanOptions scan = {}) const {
    ScanResult r;
    if (scan.keep_going) {
      scan.on_damage = [&r](const Status& s) { r.damage.push_back(s.message()); };
    }
    r.status = ledger->Scan(scan, [&r](const RecordView& v) {
      r.visited.push_back(v.seq);
      return Status::OK();
    });
    if (!scan.keep_going) {
      // ScanBatches promises Scan's result and visits exactly (ledger.h): every scan
      // of every test here holds it to that.
      ScanResult b = ScanAllInBatches(scan);
      BOOST_TEST(b.status.ToString() == r.status.ToString());
      BOOST_TEST(b.visited == r.visited, boost::test_tools::per_element());
    }
    return r;
  }

  ScanResult ScanAllInBatches(const ScanOptions& scan = {}) const {
    ScanResult r;
    r.status = ledger->ScanBatches(scan, [&r](std::span<const RecordView> run) {
      for (const RecordView& v : run) r.visited.push_back(v.seq);
      return Status::OK();
    });
    return r;
  }

  template <typename F>
  void WithRaw(F f) {
    Close();
    rocksdb::DBOptions db_options;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {rocksdb::kDefaultColumnFamilyName, {}},
        {std::string(fmt::kEventsColumnFamily), {}},
        {std::string(fmt::kMetaColumnFamily), {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(db_options, dir, cfs, &handles, &db);
    BOOST_REQUIRE_MESSAGE(s.ok(), s.ToString());
    f(*db, handles[1], handles[2]);
    for (auto* h : handles) BOOST_REQUIRE(db->DestroyColumnFamilyHandle(h).ok());
    BOOST_REQUIRE(db->Close().ok());
    delete db;
  }

  std::string RawGet(std::uint64_t seq) {
    std::string value;
    WithRaw([&](rocksdb::DB& db, auto* events, auto*) {
      const auto key = fmt::EncodeSeq(seq);
      rocksdb::Status s =
          db.Get({}, events, rocksdb::Slice(key.data(), key.size()), &value);
      BOOST_REQUIRE_MESSAGE(s.ok(), s.ToString());
    });
    return value;
  }
  void RawPut(std::uint64_t seq, const std::string& value) {
    WithRaw([&](rocksdb::DB& db, auto* events, auto*) {
      const auto key = fmt::EncodeSeq(seq);
      BOOST_REQUIRE(
          db.Put({}, events, rocksdb::Slice(key.data(), key.size()), value).ok());
    });
  }
  void RawDelete(std::uint64_t seq) {
    WithRaw([&](rocksdb::DB& db, auto* events, auto*) {
      const auto key = fmt::EncodeSeq(seq);
      BOOST_REQUIRE(db.Delete({}, events, rocksdb::Slice(key.data(), key.size())).ok());
    });
  }
  void RawPutMeta(std::string_view key, const std::string& value) {
    WithRaw([&](rocksdb::DB& db, auto*, auto* meta) {
      BOOST_REQUIRE(db.Put({}, meta, rocksdb::Slice(key.data(), key.size()), value).ok());
    });
  }

  // The head journals in the directory, sorted by name.
  std::vector<std::string> HeadJournals() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const std::string n = e.path().filename().string();
      if (StartsWith(n, "PATLEDGER-HEAD-")) names.push_back(n);
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  // A crash image: copies the directory of the open ledger to `to` (as a crash leaves
  // it: the events since the open only in the live WAL), closes the ledger, and
  // returns the path of the copy's non-empty WAL.
  std::string CrashImageWal(const std::string& to) {
    BOOST_REQUIRE(!CopyTreeOfLiveLedger(dir, to));
    Close();
    std::string wal;
    for (const auto& e : std::filesystem::directory_iterator(to)) {
      if (e.path().extension() == ".log" && e.file_size() > 0) wal = e.path().string();
    }
    BOOST_REQUIRE(!wal.empty());
    return wal;
  }
  void RemoveHeadJournals() {
    for (const std::string& n : HeadJournals()) std::filesystem::remove(dir + "/" + n);
  }

  // Damage verbs. Each leaves the ledger closed; call Open() to look.
  void FlipByte(std::uint64_t seq) {
    std::string v = RawGet(seq);
    v[v.size() / 2] ^= 0x40;
    RawPut(seq, v);
  }
  // Re-stores the record after `change` edited its envelope in place, with a valid
  // checksum.
  template <typename F>
  void Reseal(std::uint64_t seq, F change) {
    std::string v = RawGet(seq);
    std::string env = v.substr(0, v.size() - fmt::kChecksumSize);
    change(schema::GetMutableEnvelope(env.data()));
    RawPut(seq, Seal(env));
  }
  // Re-stores the record with a different prev_chain and a valid checksum.
  void Rechain(std::uint64_t seq) {
    Reseal(seq, [](schema::Envelope* env) {
      auto* bytes = env->mutable_sequencing()->mutable_prev_chain().mutable_bytes();
      bytes->Mutate(0, bytes->Get(0) ^ 0xff);
    });
  }
  // Re-stores the record with another transaction position and a valid checksum.
  void SetTxnPosition(std::uint64_t seq, std::uint16_t index, std::uint16_t count) {
    Reseal(seq, [&](schema::Envelope* env) {
      env->mutable_sequencing()->mutate_txn_index(index);
      env->mutable_sequencing()->mutate_txn_count(count);
    });
  }
  // Changes the event's content and re-seals it with a valid checksum.
  void AlterTokenId(std::uint64_t seq) {
    Reseal(seq, [](schema::Envelope* env) {
      auto* e = static_cast<schema::TokenRevoked*>(env->mutable_event());
      BOOST_REQUIRE(e->mutate_token_id(e->token_id() + 1000));
    });
  }
};

// ---------------------------------------------------------------------------
// A FileSystem whose WAL writes fail on demand (for the sticky error state).

class FailingWal : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FailingWal(std::unique_ptr<rocksdb::FSWritableFile> f, const std::atomic<bool>* fail)
      : FSWritableFileOwnerWrapper(std::move(f)), fail_(fail) {}
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                           rocksdb::IODebugContext* dbg) override {
    if (fail_->load()) return rocksdb::IOStatus::IOError("injected WAL append failure");
    return target()->Append(data, o, dbg);
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    if (fail_->load()) return rocksdb::IOStatus::IOError("injected WAL append failure");
    return target()->Append(data, o, info, dbg);
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& o,
                         rocksdb::IODebugContext* dbg) override {
    if (fail_->load()) return rocksdb::IOStatus::IOError("injected WAL sync failure");
    return target()->Sync(o, dbg);
  }

 private:
  const std::atomic<bool>* fail_;
};

class FailingFs : public rocksdb::FileSystemWrapper {
 public:
  FailingFs() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "FailingFs"; }
  rocksdb::IOStatus NewWritableFile(const std::string& name,
                                    const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* file,
                                    rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewWritableFile(name, o, file, dbg);
    if (s.ok() && name.ends_with(".log")) {
      *file = std::make_unique<FailingWal>(std::move(*file), &fail_wal);
    }
    return s;
  }
  std::atomic<bool> fail_wal{false};
};

// ---------------------------------------------------------------------------
// A listener recording what it sees. The ledger promises one caller at a time, so
// the plain members are not synchronised; ThreadSanitizer checks that promise.

class RecordingListener : public Listener {
 public:
  explicit RecordingListener(std::size_t max_seq)
      : token_at_(max_seq + 1), times_(max_seq + 1) {}

  void OnCommitted(const RecordView& r) override {
    if (r.seq != last_seq_ + 1) ++out_of_order_;
    if (r.chain != NextChain(chain_, r.envelope_bytes)) ++bad_chain_;
    last_seq_ = r.seq;
    chain_ = r.chain;
    if (r.envelope->actor()->user_id() != tls_tag) ++carried_for_others_;
    if (r.seq >= token_at_.size()) {
      ++out_of_range_;
      return;
    }
    times_[r.seq].fetch_add(1, std::memory_order_relaxed);
    token_at_[r.seq].store(TokenId(r), std::memory_order_release);
  }

  // The token id the listener saw at `seq`, 0 if none yet.
  std::uint64_t TokenAt(std::uint64_t seq) const {
    return token_at_[seq].load(std::memory_order_acquire);
  }
  std::uint64_t TimesSeen(std::uint64_t seq) const { return times_[seq].load(); }

  // Read only after every Append has returned.
  std::uint64_t out_of_order_ = 0, bad_chain_ = 0, out_of_range_ = 0;
  std::uint64_t carried_for_others_ = 0;  // records delivered on another thread's Append
  std::uint64_t last_seq_ = 0;
  ChainHash chain_{};

 private:
  std::vector<std::atomic<std::uint64_t>> token_at_;
  std::vector<std::atomic<std::uint64_t>> times_;
};

// What one appending thread observed.
struct Appended {
  std::uint64_t first_seq;
  std::uint64_t count;
  std::uint64_t first_token;
};

// ---------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(ledger_append, LedgerFixture)

BOOST_AUTO_TEST_CASE(appended_events_survive_reopen_with_their_seqs_and_chain) {
  AppendMany(10, 101);
  const ChainHash head = ledger->head_chain();
  Reopen();
  BOOST_TEST(ledger->last_seq() == 10u);
  BOOST_TEST(ChainString(ledger->head_chain()) == ChainString(head));

  // Recompute the chain with plain SHA-256 over the stored envelope bytes.
  ChainHash chain{};
  std::vector<std::uint64_t> tokens;
  Status s = ledger->Scan({}, [&](const RecordView& r) {
    const auto* sq = r.envelope->sequencing();
    BOOST_TEST(sq->seq() == r.seq);
    BOOST_TEST(ChainString(schema::ToDigest(sq->prev_chain())) == ChainString(chain));
    chain = Sha256(ChainString(chain) +
                   std::string(reinterpret_cast<const char*>(r.envelope_bytes.data()),
                               r.envelope_bytes.size()));
    BOOST_TEST(ChainString(r.chain) == ChainString(chain));
    tokens.push_back(TokenId(r));
    return Status::OK();
  });
  BOOST_TEST(s.ok(), s.ToString());
  BOOST_TEST(tokens == Range(101, 110), boost::test_tools::per_element());
  BOOST_TEST(ChainString(chain) == ChainString(ledger->head_chain()));
}

BOOST_AUTO_TEST_CASE(empty_ledger_has_seq_zero_and_zero_chain_and_scans_clean) {
  BOOST_TEST(ledger->last_seq() == 0u);
  BOOST_TEST(ChainString(ledger->head_chain()) == std::string(32, '\0'));
  Reopen();
  ScanResult r = ScanAll();
  BOOST_TEST(r.status.ok(), r.status.ToString());
  BOOST_TEST(r.visited.empty());
}

BOOST_AUTO_TEST_CASE(transaction_gets_contiguous_seqs_and_its_position_in_each_event) {
  AppendMany(1);
  auto first = ledger->Append({Revoked(21), Revoked(22), Revoked(23)});
  BOOST_REQUIRE_MESSAGE(first.has_value(), Why(first));
  BOOST_TEST(*first == 2u);
  BOOST_TEST(ledger->last_seq() == 4u);
  Reopen();
  std::vector<std::tuple<std::uint64_t, unsigned, unsigned, std::uint64_t>> seen;
  Status s = ledger->Scan({}, [&](const RecordView& r) {
    const auto* sq = r.envelope->sequencing();
    seen.emplace_back(sq->seq(), sq->txn_index(), sq->txn_count(), TokenId(r));
    return Status::OK();
  });
  BOOST_TEST(s.ok(), s.ToString());
  using T = std::tuple<std::uint64_t, unsigned, unsigned, std::uint64_t>;
  const std::vector<T> want = {T{1, 0, 1, 1}, T{2, 0, 3, 21}, T{3, 1, 3, 22},
                               T{4, 2, 3, 23}};
  BOOST_TEST((seen == want));
}

BOOST_AUTO_TEST_CASE(stored_bytes_follow_the_documented_format) {
  // An independent reader of docs/ledger-format.md: plain RocksDB, XXH3, SHA-256.
  AppendMany(3, 7);
  WithRaw([&](rocksdb::DB& db, auto* events, auto* meta) {
    std::string version, head;
    BOOST_REQUIRE(db.Get({}, meta, "format_version", &version).ok());
    BOOST_TEST(version == std::string("\x00\x00\x00\x01", 4));
    std::unique_ptr<rocksdb::Iterator> it(db.NewIterator({}, events));
    std::string chain(32, '\0');
    std::uint64_t n = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      ++n;
      const std::string key = it->key().ToString(), value = it->value().ToString();
      BOOST_TEST(key == std::string("\0\0\0\0\0\0\0", 7) + static_cast<char>(n));
      BOOST_REQUIRE(value.size() > 8);
      const std::string env = value.substr(0, value.size() - 8);
      std::uint64_t stored = 0;
      for (int i = 7; i >= 0; --i)
        stored = (stored << 8) | static_cast<std::uint8_t>(value[env.size() + i]);
      BOOST_TEST(stored == XXH3_64bits(env.data(), env.size()));
      const schema::Envelope* e = nullptr;
      Status s = schema::VerifyEnvelope(Bytes(env), &e);
      BOOST_REQUIRE_MESSAGE(s.ok(), s.ToString());
      BOOST_TEST(e->sequencing()->seq() == n);
      BOOST_TEST(ChainString(schema::ToDigest(e->sequencing()->prev_chain())) == chain);
      chain = ChainString(Sha256(chain + env));
    }
    BOOST_TEST(it->status().ok());
    BOOST_TEST(n == 3u);
    BOOST_REQUIRE(db.Get({}, meta, "head", &head).ok());
    BOOST_TEST(head == std::string("\0\0\0\0\0\0\0\x03", 8) + chain);
  });
}

BOOST_AUTO_TEST_CASE(read_returns_the_stored_envelope_of_one_seq) {
  AppendMany(3, 30);
  Reopen();
  auto bytes = ledger->Read(2);
  BOOST_REQUIRE_MESSAGE(bytes.has_value(), Why(bytes));
  const schema::Envelope* env = nullptr;
  Status s = schema::VerifyEnvelope(Bytes(*bytes), &env);
  BOOST_REQUIRE_MESSAGE(s.ok(), s.ToString());
  BOOST_TEST(env->sequencing()->seq() == 2u);
  BOOST_TEST(env->event_as_TokenRevoked()->token_id() == 31u);
  for (std::uint64_t missing : {std::uint64_t{0}, std::uint64_t{4}}) {
    auto none = ledger->Read(missing);
    BOOST_TEST((!none.has_value() && none.error().IsNotFound()), Why(none));
  }
}

BOOST_AUTO_TEST_CASE(recorded_at_never_decreases_along_the_log_even_across_reopen) {
  // Writers stamp the time before queueing, so they can arrive out of order.
  auto at = [](std::int64_t us, std::uint64_t token) {
    schema::EventContext ctx;
    ctx.recorded_at_us = us;
    return schema::BuildTokenRevoked(ctx, token, schema::RevokeReason::ByOwner);
  };
  BOOST_TEST_REQUIRE(ledger->Append({at(1'000, 1), at(900, 2)}).has_value());
  Reopen();
  BOOST_TEST_REQUIRE(ledger->Append({at(950, 3), at(2'000, 4)}).has_value());
  std::vector<std::int64_t> stamps;
  Status s = ledger->Scan({}, [&](const RecordView& r) {
    stamps.push_back(r.envelope->recorded_at_us());
    return Status::OK();
  });
  BOOST_TEST_REQUIRE(s.ok(), s.ToString());
  const std::vector<std::int64_t> expected = {1'000, 1'000, 1'000, 2'000};
  BOOST_TEST(stamps == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(invalid_envelopes_are_rejected_and_nothing_is_written) {
  AppendMany(2);
  auto garbage = ledger->Append({std::string(64, 'x')});
  BOOST_REQUIRE(!garbage.has_value());
  BOOST_TEST((garbage.error().code() == Status::Code::kInvalidArgument), Why(garbage));
  auto mixed = ledger->Append({Revoked(5), "PLEV but not a buffer"});
  BOOST_REQUIRE(!mixed.has_value());
  BOOST_TEST((mixed.error().code() == Status::Code::kInvalidArgument), Why(mixed));
  BOOST_TEST(mixed.error().message().find("envelope 1") != std::string::npos, Why(mixed));
  auto empty = ledger->Append({});
  BOOST_TEST(
      (!empty.has_value() && empty.error().code() == Status::Code::kInvalidArgument));
  BOOST_TEST(ledger->last_seq() == 2u);
  BOOST_TEST(ledger->health().ok());
  Reopen();
  BOOST_TEST(ScanAll().visited == Range(1, 2), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(concurrent_appends_are_gap_free_chained_and_group_committed) {
  constexpr int kThreads = 16, kPerThread = 100;
  // Every fourth transaction has three events: transactions must stay whole.
  constexpr std::uint64_t kMaxSeq = kThreads * kPerThread * 3;
  RecordingListener listener(kMaxSeq);
  options.listener = &listener;
  Reopen();

  std::vector<std::vector<Appended>> done(kThreads);
  std::atomic<std::uint64_t> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      tls_tag = static_cast<std::uint64_t>(t) + 1;
      for (int i = 0; i < kPerThread; ++i) {
        const std::uint64_t token =
            tls_tag * 1'000'000 + static_cast<std::uint64_t>(i) * 10 + 1;
        const std::uint64_t n = i % 4 == 3 ? 3 : 1;
        std::vector<std::string> events;
        for (std::uint64_t k = 0; k < n; ++k)
          events.push_back(Revoked(token + k, tls_tag));
        auto seq = ledger->Append(std::move(events));
        if (!seq) {
          failures.fetch_add(1);
          return;
        }
        done[t].push_back({*seq, n, token});
      }
    });
  }
  for (auto& th : threads) th.join();
  BOOST_REQUIRE(failures.load() == 0u);

  // The returned seqs tile 1..last_seq exactly, each transaction contiguous.
  std::map<std::uint64_t, Appended> by_seq;
  for (const auto& v : done) {
    for (const Appended& a : v) by_seq.emplace(a.first_seq, a);
  }
  std::uint64_t next = 1;
  for (const auto& [seq, a] : by_seq) {
    BOOST_TEST(seq == next);
    next = seq + a.count;
  }
  BOOST_TEST(ledger->last_seq() == next - 1);

  // At least one synced write carried another thread's transaction.
  BOOST_TEST(listener.carried_for_others_ > 0u);

  // Stored: the chain verifies and every record is where its Append said.
  Reopen();
  std::uint64_t mismatches = 0, visited = 0;
  Status s = ledger->Scan({}, [&](const RecordView& r) {
    ++visited;
    auto it = std::prev(by_seq.upper_bound(r.seq));
    const Appended& a = it->second;
    const auto* sq = r.envelope->sequencing();
    if (TokenId(r) != a.first_token + (r.seq - a.first_seq) ||
        sq->txn_count() != a.count || sq->txn_index() != r.seq - a.first_seq) {
      ++mismatches;
    }
    return Status::OK();
  });
  BOOST_TEST(s.ok(), s.ToString());
  BOOST_TEST(visited == next - 1);
  BOOST_TEST(mismatches == 0u);
}

BOOST_AUTO_TEST_CASE(listener_sees_every_record_once_in_order_before_append_returns) {
  constexpr int kThreads = 8, kPerThread = 50;
  constexpr std::uint64_t kMaxSeq = kThreads * kPerThread * 2;
  RecordingListener listener(kMaxSeq);
  options.listener = &listener;
  Reopen();

  std::atomic<std::uint64_t> unseen_at_return{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      tls_tag = static_cast<std::uint64_t>(t) + 1;
      for (int i = 0; i < kPerThread; ++i) {
        const std::uint64_t token =
            tls_tag * 1'000'000 + static_cast<std::uint64_t>(i) * 10 + 1;
        const std::uint64_t n = i % 2 + 1;
        std::vector<std::string> events;
        for (std::uint64_t k = 0; k < n; ++k)
          events.push_back(Revoked(token + k, tls_tag));
        auto seq = ledger->Append(std::move(events));
        if (!seq) {
          failures.fetch_add(1);
          return;
        }
        for (std::uint64_t k = 0; k < n; ++k) {
          if (listener.TokenAt(*seq + k) != token + k) unseen_at_return.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  BOOST_REQUIRE(failures.load() == 0u);
  const std::uint64_t last = ledger->last_seq();
  BOOST_TEST(last == static_cast<std::uint64_t>(kThreads * kPerThread * 3 / 2));
  BOOST_TEST(unseen_at_return.load() == 0u);
  BOOST_TEST(listener.out_of_order_ == 0u);
  BOOST_TEST(listener.bad_chain_ == 0u);
  BOOST_TEST(listener.out_of_range_ == 0u);
  BOOST_TEST(listener.last_seq_ == last);
  BOOST_TEST(ChainString(listener.chain_) == ChainString(ledger->head_chain()));
  std::uint64_t not_once = 0;
  for (std::uint64_t s = 1; s <= last; ++s) not_once += listener.TimesSeen(s) != 1;
  BOOST_TEST(not_once == 0u);
}

BOOST_AUTO_TEST_CASE(
    failed_write_fails_every_later_append_and_acknowledges_only_the_durable) {
  auto fs = std::make_shared<FailingFs>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
  options.env = env.get();
  Reopen();

  constexpr int kThreads = 8;
  std::vector<std::vector<Appended>> done(kThreads);
  std::vector<Status> last_error(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      tls_tag = static_cast<std::uint64_t>(t) + 1;
      // Bounded, so that a ledger that never sees the failure fails the test
      // instead of hanging it.
      for (std::uint64_t i = 0; i < 20'000; ++i) {
        const std::uint64_t token = tls_tag * 1'000'000 + i + 1;
        auto seq = ledger->Append({Revoked(token, tls_tag)});
        if (!seq) {
          last_error[t] = seq.error();
          return;
        }
        done[t].push_back({*seq, 1, token});
      }
    });
  }
  while (ledger->last_seq() < 200 && ledger->health().ok()) std::this_thread::yield();
  fs->fail_wal.store(true);
  for (auto& th : threads) th.join();

  const Status health = ledger->health();
  BOOST_TEST((health.code() == Status::Code::kIOError), health.ToString());
  BOOST_TEST(health.message().find("injected") != std::string::npos, health.ToString());
  for (const Status& e : last_error) BOOST_TEST(e.ToString() == health.ToString());

  // Acknowledged = exactly 1..last_seq(): nothing acknowledged after the failure,
  // and the head did not move for the failed group.
  std::set<std::uint64_t> acked;
  for (const auto& v : done) {
    for (const Appended& a : v) acked.insert(a.first_seq);
  }
  const std::uint64_t last = ledger->last_seq();
  BOOST_TEST(acked.size() == last);
  BOOST_TEST((!acked.empty() && *acked.begin() == 1u && *acked.rbegin() == last));

  // Sticky: the storage is fine again, the ledger still refuses.
  fs->fail_wal.store(false);
  auto again = ledger->Append({Revoked(99)});
  BOOST_REQUIRE(!again.has_value());
  BOOST_TEST(again.error().ToString() == health.ToString());
  BOOST_TEST(ledger->last_seq() == last);
  // Reads keep working.
  ScanResult r = ScanAll();
  BOOST_TEST(r.status.ok(), r.status.ToString());
  BOOST_TEST(r.visited == Range(1, last), boost::test_tools::per_element());

  fs->fail_wal.store(true);  // keep RocksDB from writing the failed batch at close
  Close();
  options.env = nullptr;
  Open();
  BOOST_TEST(ledger->last_seq() >= last);
  r = ScanAll();
  BOOST_TEST(r.status.ok(), r.status.ToString());
}

BOOST_AUTO_TEST_CASE(read_only_ledger_refuses_append) {
  AppendMany(1);
  Close();
  options.read_only = true;
  Open();
  auto seq = ledger->Append({Revoked(2)});
  BOOST_REQUIRE(!seq.has_value());
  BOOST_TEST((seq.error().code() == Status::Code::kFailedPrecondition), Why(seq));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(ledger_damage, LedgerFixture)

BOOST_AUTO_TEST_CASE(flipped_byte_in_a_stored_event_stops_scan_at_that_seq) {
  AppendMany(10);
  FlipByte(6);
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(r.status.IsCorruption(), r.status.ToString());
  BOOST_TEST(StartsWith(r.status.message(), "seq 6: checksum mismatch (stored 0x"),
             r.status.ToString());
  BOOST_TEST(r.visited == Range(1, 5), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(read_of_a_damaged_record_is_corruption_naming_its_seq) {
  AppendMany(3);
  FlipByte(2);
  Open();
  auto bytes = ledger->Read(2);
  BOOST_REQUIRE(!bytes.has_value());
  BOOST_TEST(bytes.error().IsCorruption(), Why(bytes));
  BOOST_TEST(StartsWith(bytes.error().message(), "seq 2: checksum mismatch"), Why(bytes));
  BOOST_TEST(ledger->Read(3).has_value());
}

BOOST_AUTO_TEST_CASE(damage_before_from_seq_is_still_reported) {
  AppendMany(10);
  FlipByte(2);
  Open();
  ScanOptions scan;
  scan.from_seq = 5;
  ScanResult r = ScanAll(scan);
  BOOST_TEST(StartsWith(r.status.message(), "seq 2: checksum mismatch"),
             r.status.ToString());
  BOOST_TEST(r.visited.empty());
}

BOOST_AUTO_TEST_CASE(record_rechained_with_a_valid_checksum_is_a_chain_mismatch) {
  AppendMany(10);
  Rechain(4);
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(StartsWith(r.status.message(), "seq 4: chain mismatch"),
             r.status.ToString());
  BOOST_TEST(r.visited == Range(1, 3), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(altered_event_with_a_valid_checksum_breaks_the_next_records_chain) {
  AppendMany(10);
  AlterTokenId(4);
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(StartsWith(r.status.message(), "seq 5: chain mismatch"),
             r.status.ToString());
  BOOST_TEST(r.visited == Range(1, 4), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(deleted_middle_record_is_a_gap) {
  AppendMany(10);
  RawDelete(5);
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(r.status.message() == "seq 5: gap (expected 5 found 6)",
             r.status.ToString());
  BOOST_TEST(r.visited == Range(1, 4), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(record_stored_under_the_wrong_key_is_a_seq_mismatch) {
  AppendMany(5);
  RawPut(3, RawGet(4));
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(r.status.message() == "seq 3: key is seq 3 but Sequencing.seq is 4",
             r.status.ToString());
}

BOOST_AUTO_TEST_CASE(truncated_value_is_reported) {
  AppendMany(5);
  RawPut(2, std::string("\x01\x02\x03", 3));
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(StartsWith(r.status.message(), "seq 2: truncated value (3 bytes"),
             r.status.ToString());
}

BOOST_AUTO_TEST_CASE(envelope_that_fails_the_verifier_is_reported) {
  AppendMany(5);
  std::string v = RawGet(3);
  std::string env = v.substr(0, v.size() - fmt::kChecksumSize);
  env[0] = static_cast<char>(0x7f);  // root offset points past the buffer
  RawPut(3, Seal(env));
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(StartsWith(r.status.message(), "seq 3: envelope does not verify"),
             r.status.ToString());
}

// The transaction position is checked before the chain (ledger-format.md), by both
// scans (ScanBatches on its applying thread): ScanAll holds them to the same result.
BOOST_AUTO_TEST_CASE(record_outside_its_transaction_is_reported) {
  AppendMany(6);  // six transactions of one event each
  SetTxnPosition(3, 1, 2);
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(r.status.message() ==
                 "seq 3: transaction broken (expected txn_index 0 (a new transaction), "
                 "found txn_index 1 of 2)",
             r.status.ToString());
  BOOST_TEST(r.visited == Range(1, 2), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(transaction_cut_short_is_reported_at_the_next_record) {
  AppendMany(6);
  SetTxnPosition(4, 0, 3);  // opens a transaction of three; seq 5 starts another
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(r.status.message() ==
                 "seq 5: transaction broken (expected txn_index 1 of 3, found txn_index 0 "
                 "of 1)",
             r.status.ToString());
  BOOST_TEST(r.visited == Range(1, 4), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(impossible_transaction_position_is_reported) {
  AppendMany(6);
  SetTxnPosition(2, 2, 2);
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(r.status.message() == "seq 2: bad transaction position (txn_index 2, txn_count 2)",
             r.status.ToString());
  BOOST_TEST(r.visited == Range(1, 1), boost::test_tools::per_element());
}

// ScanBatches's reader does the order-free part of the deferred checks
// (VerifyAndHash) for the records it reads while the consumer lags; the consumer
// does it for the rest. Whoever did it, the verdict and the chain must be the same:
// here every record, none, and every other one, on intact records and on three
// kinds of damage (in memory: the deferred checks come after the checksum).
BOOST_AUTO_TEST_CASE(deferred_checks_agree_whichever_thread_verified_and_hashed) {
  AppendMany(12);
  std::vector<std::string> intact;  // envelopes, seq 1..; std::string's heap is aligned
  WithRaw([&](rocksdb::DB& db, auto* events, auto*) {
    std::unique_ptr<rocksdb::Iterator> it(db.NewIterator({}, events));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string v = it->value().ToString();
      intact.push_back(v.substr(0, v.size() - fmt::kChecksumSize));
    }
  });
  BOOST_REQUIRE(intact.size() >= 12u);
  // Runs the checks as the pipeline would; returns the first error, or the hex of
  // the last record's chain.
  const auto run = [](std::vector<std::string> envs, const std::function<bool(int)>& early) {
    internal::DeferredChecker checker;
    std::string last;
    for (std::size_t i = 0; i < envs.size(); ++i) {
      RecordView v;
      v.seq = i + 1;
      v.envelope_bytes = {reinterpret_cast<const std::uint8_t*>(envs[i].data()), envs[i].size()};
      if (early(int(i))) {
        if (Status s = internal::VerifyAndHash(&v); !s.ok()) return s.message();
      }
      if (Status s = checker.Check(&v); !s.ok()) return s.message();
      last = internal::Hex(v.chain);
    }
    return last;
  };
  const auto mutable_sq = [](std::string& env) {
    return schema::GetMutableEnvelope(env.data())->mutable_sequencing();
  };
  std::vector<std::pair<std::vector<std::string>, std::string>> cases;
  cases.emplace_back(intact, "");
  cases.emplace_back(intact, "seq 5: chain mismatch");
  mutable_sq(cases.back().first[4])->mutable_prev_chain().mutable_bytes()->Mutate(0, 1);
  cases.emplace_back(intact, "seq 7: transaction broken");
  mutable_sq(cases.back().first[6])->mutate_txn_index(1);
  mutable_sq(cases.back().first[6])->mutate_txn_count(2);
  cases.emplace_back(intact, "seq 3: envelope does not verify");
  cases.back().first[2][0] = static_cast<char>(0x7f);
  for (const auto& [envs, expected] : cases) {
    const std::string none = run(envs, [](int) { return false; });
    if (expected.empty()) {
      BOOST_TEST(none.size() == 64u, none);  // a chain hash
    } else {
      BOOST_TEST(StartsWith(none, expected), none);
    }
    BOOST_TEST(run(envs, [](int) { return true; }) == none);
    BOOST_TEST(run(envs, [](int i) { return i % 2 == 0; }) == none);
    BOOST_TEST(run(envs, [](int i) { return i % 2 == 1; }) == none);
  }
}

BOOST_AUTO_TEST_CASE(keep_going_reports_every_damaged_seq_and_visits_the_rest) {
  AppendMany(15);
  FlipByte(3);
  Rechain(7);
  RawDelete(10);
  Open();
  ScanOptions scan;
  scan.keep_going = true;
  ScanResult r = ScanAll(scan);
  std::vector<std::uint64_t> damaged;
  for (const std::string& m : r.damage) damaged.push_back(SeqOf(m));
  BOOST_TEST(damaged == (std::vector<std::uint64_t>{3, 7, 10}),
             boost::test_tools::per_element());
  BOOST_REQUIRE(r.damage.size() == 3u);
  BOOST_TEST(StartsWith(r.damage.at(0), "seq 3: checksum mismatch"), r.damage.at(0));
  BOOST_TEST(StartsWith(r.damage.at(1), "seq 7: chain mismatch"), r.damage.at(1));
  BOOST_TEST(r.damage.at(2) == "seq 10: gap (expected 10 found 11)");
  BOOST_TEST(r.status.IsCorruption(), r.status.ToString());
  BOOST_TEST(StartsWith(r.status.message(), "seq 3: "), r.status.ToString());
  BOOST_TEST(r.visited == Without(Range(1, 15), {3, 7, 10}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(scan_range_visits_only_from_seq_to_to_seq) {
  AppendMany(10);
  ScanOptions scan;
  scan.from_seq = 3;
  scan.to_seq = 5;
  ScanResult r = ScanAll(scan);
  BOOST_TEST(r.status.ok(), r.status.ToString());
  BOOST_TEST(r.visited == Range(3, 5), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(head_chain_in_meta_that_differs_from_the_log_is_reported) {
  AppendMany(4);
  std::string head(fmt::kHeadSize, '\x55');
  const auto seq = fmt::EncodeSeq(4);
  head.replace(0, seq.size(), seq.data(), seq.size());
  RawPutMeta(fmt::kHeadKey, head);
  // The head journal catches it at open...
  auto refused = Ledger::Open(dir, options);
  BOOST_REQUIRE(!refused.has_value());
  BOOST_TEST(refused.error().IsCorruption(), Why(refused));
  BOOST_TEST(refused.error().message().find("the chain hash at seq 4 differs") !=
                 std::string::npos,
             Why(refused));
  BOOST_TEST(refused.error().message().find("PATLEDGER-HEAD-") != std::string::npos,
             Why(refused));
  // ...and without it (moved aside), the scan does.
  RemoveHeadJournals();
  Open();
  ScanResult r = ScanAll();
  BOOST_TEST(StartsWith(r.status.message(), "seq 4: chain(4) is "), r.status.ToString());
}

BOOST_AUTO_TEST_CASE(records_lost_below_the_journaled_head_fail_open_naming_the_seqs) {
  AppendMany(6);
  Close();  // the head journal: seq 6
  RawDelete(6);
  RawDelete(5);
  // The head in meta cut back too, as a truncated WAL or MANIFEST leaves it.
  std::string head(fmt::kHeadSize, '\0');
  const auto seq = fmt::EncodeSeq(4);
  head.replace(0, seq.size(), seq.data(), seq.size());
  RawPutMeta(fmt::kHeadKey, head);
  auto opened = Ledger::Open(dir, options);
  BOOST_REQUIRE(!opened.has_value());
  BOOST_TEST(opened.error().IsCorruption(), Why(opened));
  BOOST_TEST(opened.error().message().find("ends at seq 4 but reached seq 6") !=
                 std::string::npos,
             Why(opened));
  BOOST_TEST(opened.error().message().find("records seq 5..6 are missing") !=
                 std::string::npos,
             Why(opened));
}

// The head journal's format, read here independently of ledger.cc
// (docs/ledger-format.md): 64-byte records "PLHEAD01", seq LE, chain, 8 zero bytes,
// XXH3-64 of the 56 bytes before it LE.
BOOST_AUTO_TEST_CASE(every_append_is_in_the_head_journal_when_it_returns) {
  AppendMany(3);
  const std::vector<std::string> journals = HeadJournals();
  BOOST_REQUIRE(journals.size() == 1u);
  BOOST_TEST(journals[0] == "PATLEDGER-HEAD-000001");
  std::ifstream in(dir + "/" + journals[0], std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  BOOST_REQUIRE(bytes.size() == 1u << 20);  // made full size, zeros
  // The head at open (seq 0), then 3 appends; zeros after them.
  BOOST_TEST(bytes.find_first_not_of('\0', 4 * 64) == std::string::npos);
  for (std::uint64_t i = 0; i < 4; ++i) {
    const std::string r = bytes.substr(i * 64, 64);
    BOOST_TEST(r.substr(0, 8) == "PLHEAD01");
    std::uint64_t seq = 0, check = 0;
    for (int b = 7; b >= 0; --b) {
      seq = (seq << 8) | static_cast<std::uint8_t>(r[8 + b]);
      check = (check << 8) | static_cast<std::uint8_t>(r[56 + b]);
    }
    BOOST_TEST(seq == i);
    BOOST_TEST(check == XXH3_64bits(r.data(), 56));
    BOOST_TEST(r.substr(48, 8) == std::string(8, '\0'));
  }
  BOOST_TEST(bytes.substr(3 * 64 + 16, 32) == ChainString(ledger->head_chain()));
}

// F1 (docs/RELIABILITY.md): after a crash, the events since the last clean close are
// only in the live WAL; a WAL cut short there looks like a torn tail, which RocksDB's
// recovery drops without an error. The head journal makes that a refusal.
BOOST_AUTO_TEST_CASE(a_live_wal_cut_short_after_a_crash_fails_open_naming_the_seqs) {
  AppendMany(5);
  const std::string crashed = tmp.path() + "/crashed";
  const std::string wal = CrashImageWal(crashed);
  std::filesystem::resize_file(wal, std::filesystem::file_size(wal) - 20);  // torn
  auto refused = Ledger::Open(crashed, options);
  BOOST_REQUIRE(!refused.has_value());
  BOOST_TEST(refused.error().IsCorruption(), Why(refused));
  BOOST_TEST(refused.error().message().find("ends at seq 4 but reached seq 5") !=
                 std::string::npos,
             Why(refused));
  BOOST_TEST(refused.error().message().find("PATLEDGER-HEAD-000001") != std::string::npos,
             Why(refused));
  // The control: without the journal RocksDB opens it, one acknowledged record short.
  for (const auto& e : std::filesystem::directory_iterator(crashed)) {
    if (StartsWith(e.path().filename().string(), "PATLEDGER-HEAD-"))
      std::filesystem::remove(e.path());
  }
  auto accepted = Ledger::Open(crashed, options);
  BOOST_REQUIRE_MESSAGE(accepted.has_value(), Why(accepted));
  BOOST_TEST((*accepted)->last_seq() == 4u);
}

// F2 (docs/RELIABILITY.md): RocksDB refuses a flipped bit in the live WAL with a bare
// "checksum mismatch"; the ledger then walks the WAL itself and names the file and the
// offset of the damaged record.
BOOST_AUTO_TEST_CASE(a_damaged_live_wal_is_refused_naming_the_file_and_offset) {
  AppendMany(5);
  const std::string crashed = tmp.path() + "/crashed";
  const std::string wal_path = CrashImageWal(crashed);
  std::string wal;
  {
    std::ifstream in(wal_path, std::ios::binary);
    wal.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  // The walk accepts RocksDB's own WAL...
  BOOST_TEST(!internal::FirstBadWalRecord(wal).has_value(),
             internal::FirstBadWalRecord(wal).value_or(""));
  // ...and finds a flipped payload byte, and a cut.
  std::string flipped = wal;
  flipped[wal.size() / 3] ^= 0x10;
  const auto bad = internal::FirstBadWalRecord(flipped);
  BOOST_REQUIRE(bad.has_value());
  BOOST_TEST(bad->find("checksum mismatch") != std::string::npos, *bad);
  const auto cut = internal::FirstBadWalRecord(std::string_view(wal).substr(0, wal.size() - 3));
  BOOST_REQUIRE(cut.has_value());
  BOOST_TEST(cut->find("cut short") != std::string::npos, *cut);

  {
    std::ofstream out(wal_path, std::ios::binary | std::ios::trunc);
    out << flipped;
  }
  auto refused = Ledger::Open(crashed, options);
  BOOST_REQUIRE(!refused.has_value());
  BOOST_TEST(refused.error().IsCorruption(), Why(refused));
  const std::string name = std::filesystem::path(wal_path).filename().string();
  BOOST_TEST(refused.error().message().find("damaged: " + name + ": record at offset ") !=
                 std::string::npos,
             Why(refused));
}

// RocksDB names some damaged tables by number only, in an error about the MANIFEST
// ("Missing table properties on file 23 ... in file .../MANIFEST-000028"): the
// description names the table file.
BOOST_AUTO_TEST_CASE(a_table_rocksdb_names_by_number_is_named_as_its_file) {
  AppendMany(3);
  Close();  // flushed: the events are in an SST file
  std::string sst;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".sst") sst = e.path().filename().string();
  }
  BOOST_REQUIRE(!sst.empty());
  const std::uint64_t number = std::strtoull(sst.c_str(), nullptr, 10);
  const std::string refusal = "Corruption: Missing table properties on file " +
                              std::to_string(number) +
                              " with known unique ID in file " + dir + "/MANIFEST-000028";
  const std::string described =
      internal::DescribeDamagedFiles(rocksdb::Env::Default(), dir, refusal);
  BOOST_TEST(StartsWith(described, sst + ": RocksDB could not read it"), described);
  // Without such a mention, and nothing damaged, it falls back to the MANIFEST.
  const std::string fallback = internal::DescribeDamagedFiles(rocksdb::Env::Default(), dir);
  BOOST_TEST(StartsWith(fallback, "MANIFEST-"), fallback);
}

// F7 (docs/RELIABILITY.md): RocksDB 7.8 parses a table's properties block before it
// verifies its checksum, and one flipped bit there (the top bit of the block's restart
// count) aborted the process inside DB::Open. Every single-bit flip in the last bytes
// of each table — the footer, the metaindex block, the end of the properties block —
// is opened in a child process (an abort cannot be survived in this one): each is
// refused naming the table, or opens with every record intact; none aborts.
BOOST_AUTO_TEST_CASE(no_bit_flip_in_a_tables_meta_blocks_aborts_the_open) {
#if defined(__SANITIZE_THREAD__)
  BOOST_TEST_MESSAGE("skipped under ThreadSanitizer: the child of a multi-threaded "
                     "fork starts threads (RocksDB's table loaders), which TSan forbids");
  return;
#endif
  AppendMany(40);
  const std::uint64_t last = ledger->last_seq();
  Close();  // flushed: every record is in an SST file
  Options read_only = options;
  read_only.read_only = true;
  std::map<std::string, int> outcomes;
  std::vector<std::string> failures;
  std::vector<std::string> tables;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".sst") tables.push_back(e.path().filename().string());
  }
  BOOST_REQUIRE(!tables.empty());
  for (const std::string& table : tables) {
    const std::string path = dir + "/" + table;
    std::string bytes;
    {
      std::ifstream in(path, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    BOOST_TEST(!internal::TableFileDamage(*rocksdb::FileSystem::Default(), path).has_value());
    const std::size_t from = bytes.size() > 160 ? bytes.size() - 160 : 0;
    for (std::size_t at = from; at < bytes.size(); ++at) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string damaged = bytes;
        damaged[at] = static_cast<char>(damaged[at] ^ (1 << bit));
        std::ofstream(path, std::ios::binary | std::ios::trunc) << damaged;
        const pid_t child = ::fork();
        BOOST_REQUIRE(child >= 0);
        if (child == 0) {  // RocksDB's own abort must kill the child, not longjmp
          for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) ::signal(sig, SIG_DFL);
          ::alarm(60);
          auto opened = Ledger::Open(dir, read_only);
          if (!opened) {
            _exit(opened.error().message().find(table) != std::string::npos ? 10 : 11);
          }
          std::uint64_t visited = 0;
          const Status s = (*opened)->Scan({}, [&](const RecordView&) {
            ++visited;
            return Status::OK();
          });
          _exit(s.ok() && visited == last ? 0 : 12);
        }
        int status = 0;
        BOOST_REQUIRE(::waitpid(child, &status, 0) == child);
        const std::string outcome =
            WIFSIGNALED(status)              ? "killed by signal " + std::to_string(WTERMSIG(status))
            : WEXITSTATUS(status) == 0  ? "harmless"
            : WEXITSTATUS(status) == 10 ? "refused naming the table"
            : WEXITSTATUS(status) == 11 ? "refused without naming the table"
            : WEXITSTATUS(status) == 12 ? "opened with different records"
                                        : "exit " + std::to_string(WEXITSTATUS(status));
        ++outcomes[outcome];
        if (outcome != "harmless" && outcome != "refused naming the table") {
          failures.push_back(table + " offset " + std::to_string(at) + " bit " +
                             std::to_string(bit) + ": " + outcome);
        }
      }
    }
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }
  std::ostringstream summary;
  for (const auto& [what, n] : outcomes) summary << " " << what << ": " << n << ";";
  BOOST_TEST_MESSAGE("bit flips in the last 160 bytes of " << tables.size()
                                                           << " tables:" << summary.str());
  BOOST_TEST(failures.empty(), failures.size() << " flips neither refused nor harmless, e.g. "
                                               << (failures.empty() ? "" : failures.front()));
  BOOST_TEST(outcomes["refused naming the table"] > 0);
  BOOST_TEST(Ledger::Open(dir, read_only).has_value());  // every table restored
}

// The table check computes each checksum RocksDB can write (table/format.cc): it
// accepts RocksDB's own tables written with each, and a table whose footer names a
// different checksum type is refused.
BOOST_AUTO_TEST_CASE(the_table_check_verifies_every_checksum_type_rocksdb_writes) {
  const std::vector<std::pair<rocksdb::ChecksumType, std::string>> types = {
      {rocksdb::kCRC32c, "crc32c"},
      {rocksdb::kxxHash, "xxhash"},
      {rocksdb::kxxHash64, "xxhash64"},
      {rocksdb::kXXH3, "xxh3"}};
  for (const auto& [type, name] : types) {
    BOOST_TEST_CONTEXT(name) {
      rocksdb::BlockBasedTableOptions table;
      table.checksum = type;
      table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));  // one more meta block
      rocksdb::Options o;
      o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
      rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), o);
      const std::string path = tmp.path() + "/" + name + ".sst";
      BOOST_REQUIRE(writer.Open(path).ok());
      for (int i = 0; i < 500; ++i) {
        char key[16];
        std::snprintf(key, sizeof key, "key%06d", i);
        BOOST_REQUIRE(writer.Put(key, std::string(40, static_cast<char>('a' + i % 26))).ok());
      }
      BOOST_REQUIRE(writer.Finish().ok());
      auto& fs = *rocksdb::FileSystem::Default();
      const auto damage = internal::TableFileDamage(fs, path);
      BOOST_TEST(!damage.has_value(), damage.value_or(""));
      std::string bytes;
      {
        std::ifstream in(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      }
      for (const auto& [other, other_name] : types) {
        if (other == type) continue;
        std::string relabeled = bytes;
        relabeled[relabeled.size() - 53] = static_cast<char>(other);  // the footer's first byte
        std::ofstream(path, std::ios::binary | std::ios::trunc) << relabeled;
        const auto bad = internal::TableFileDamage(fs, path);
        BOOST_TEST((bad.has_value() && bad->find("checksum mismatch") != std::string::npos),
                   other_name << ": " << bad.value_or("accepted"));
      }
      bytes[bytes.size() - 53] = 0;  // kNoChecksum: RocksDB would verify nothing
      std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
      const auto none = internal::TableFileDamage(fs, path);
      BOOST_TEST((none.has_value() && none->find("checksum type 0") != std::string::npos),
                 none.value_or("accepted"));
    }
  }
}

// Memory (docs/PERFORMANCE.md §6): RocksDB's default holds every open table's whole
// index block for as long as the table is open, so what reading costs grows with the
// history. The ledger writes partitioned indexes, read through its bounded block
// cache: after reading records all over the tables through a small cache, what the
// tables hold outside it is a fraction of their index bytes, and the cache keeps to
// its capacity. (RocksDB's default table options fail both checks.)
BOOST_AUTO_TEST_CASE(tables_index_partitions_live_in_the_bounded_block_cache) {
  options.block_cache_bytes = 64 << 10;
  std::uint64_t token = 1;
  for (int table = 0; table < 4; ++table) {
    std::vector<std::string> events;
    for (int i = 0; i < 20000; ++i) events.push_back(Revoked(token++));
    BOOST_REQUIRE(ledger->Append(std::move(events)).has_value());
    Reopen();  // a clean close flushes: one more table
  }
  const std::uint64_t last = ledger->last_seq();
  for (std::uint64_t seq = 1; seq <= last; seq += 7) {
    const auto record = ledger->Read(seq);
    BOOST_REQUIRE_MESSAGE(record.has_value(), Why(record));
  }
  const Ledger::ReadMemory memory = ledger->read_memory();

  // What the tables' indexes weigh, from their properties.
  rocksdb::TablePropertiesCollection tables;
  WithRaw([&](rocksdb::DB& db, auto* events, auto*) {
    BOOST_REQUIRE(db.GetPropertiesOfAllTables(events, &tables).ok());
  });
  std::uint64_t index_bytes = 0;
  for (const auto& [file, props] : tables) {
    BOOST_TEST_CONTEXT(file) {
      BOOST_TEST(props->index_partitions >= 1u);  // written with a partitioned index
    }
    index_bytes += props->index_size;
  }

  BOOST_TEST_MESSAGE(tables.size() << " tables, " << index_bytes << " bytes of index; "
                                    << memory.table_readers << " held outside the cache, "
                                    << memory.block_cache_usage << " in it");
  BOOST_TEST(tables.size() >= 2u);
  BOOST_TEST(index_bytes > 40000u);  // enough for the comparison to mean something
  BOOST_TEST(memory.block_cache_capacity == 64u << 10);
  BOOST_TEST(memory.block_cache_usage <= memory.block_cache_capacity);
  BOOST_TEST(memory.table_readers * 4 < index_bytes,
             memory.table_readers << " bytes held by the tables outside the cache, "
                                  << index_bytes << " bytes of index");
}

BOOST_AUTO_TEST_CASE(crc32c_matches_the_standard_check_value) {
  BOOST_TEST(internal::Crc32c(0, "123456789") == 0xe3069283u);
  BOOST_TEST(internal::Crc32c(internal::Crc32c(0, "1234"), "56789") == 0xe3069283u);
}

BOOST_AUTO_TEST_CASE(a_torn_journal_tail_is_ignored_and_a_journal_of_garbage_refused) {
  AppendMany(2);
  Close();
  const std::string journal = dir + "/" + HeadJournals().at(0);
  {  // a crash during the next append: the open's head and two appends, then this
    std::fstream out(journal, std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(3 * 64);
    out << "PLHEAD01 torn in the middle";
  }
  Open();
  BOOST_TEST(ledger->last_seq() == 2u);
  Close();
  {  // every byte garbage: damage, not a torn write
    std::ofstream out(dir + "/" + HeadJournals().back(), std::ios::binary);
    out << std::string(128, 'x');
  }
  auto refused = Ledger::Open(dir, options);
  BOOST_REQUIRE(!refused.has_value());
  BOOST_TEST(refused.error().IsCorruption(), Why(refused));
  BOOST_TEST(refused.error().message().find(HeadJournals().back() + " is damaged") !=
                 std::string::npos,
             Why(refused));
  {  // all zeros: a creation torn by a crash, ignored (no check)
    std::ofstream out(dir + "/" + HeadJournals().back(), std::ios::binary);
    out << std::string(128, '\0');
  }
  Open();
  BOOST_TEST(ledger->last_seq() == 2u);
}

BOOST_AUTO_TEST_CASE(each_writable_open_starts_a_new_journal_and_deletes_the_old) {
  AppendMany(2);
  Reopen();
  Reopen();
  const std::vector<std::string> journals = HeadJournals();
  BOOST_REQUIRE(journals.size() == 1u);
  BOOST_TEST(journals[0] == "PATLEDGER-HEAD-000003");
  BOOST_TEST(std::filesystem::file_size(dir + "/" + journals[0]) == 1u << 20);
  // A read-only open reads it and writes nothing.
  Close();
  Options ro = options;
  ro.read_only = true;
  auto reader = Ledger::Open(dir, ro);
  BOOST_REQUIRE_MESSAGE(reader.has_value(), Why(reader));
  BOOST_TEST(HeadJournals() == journals, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(missing_last_record_fails_open_naming_both_seqs) {
  AppendMany(10);
  RawDelete(10);
  auto opened = Ledger::Open(dir, options);
  BOOST_REQUIRE(!opened.has_value());
  const Status& s = opened.error();
  BOOST_TEST(s.IsCorruption(), s.ToString());
  BOOST_TEST(s.message().find("seq 10") != std::string::npos, s.ToString());
  BOOST_TEST(s.message().find("seq 9") != std::string::npos, s.ToString());
}

// ScanBatches runs the chain on the calling thread, a few batches behind its reading
// thread; these cases span several batches (a batch is at most 512 records).

BOOST_AUTO_TEST_CASE(batched_scan_reports_an_early_chain_mismatch_before_later_damage) {
  // The reading thread finds the checksum damage at 1700 first in time; the chain
  // thread then finds 1200, which a serial scan reports: that one must win.
  AppendMany(2000);
  Rechain(1200);
  FlipByte(1700);
  Open();
  ScanResult r = ScanAllInBatches();
  BOOST_TEST(StartsWith(r.status.message(), "seq 1200: chain mismatch"),
             r.status.ToString());
  BOOST_TEST(r.visited == Range(1, 1199), boost::test_tools::per_element());
  BOOST_TEST(ScanAll().visited == Range(1, 1199), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(batched_scan_gives_each_record_its_chain_in_order) {
  AppendMany(1500);
  std::vector<std::uint64_t> serial_seqs, batched_seqs;
  std::vector<ChainHash> serial, batched;
  Status s = ledger->Scan({}, [&](const RecordView& v) {
    serial_seqs.push_back(v.seq);
    serial.push_back(v.chain);
    return Status::OK();
  });
  BOOST_TEST_REQUIRE(s.ok(), s.ToString());
  std::size_t runs = 0;
  s = ledger->ScanBatches({}, [&](std::span<const RecordView> run) {
    ++runs;
    for (const RecordView& v : run) {
      batched_seqs.push_back(v.seq);
      batched.push_back(v.chain);
    }
    return Status::OK();
  });
  BOOST_TEST_REQUIRE(s.ok(), s.ToString());
  BOOST_TEST(runs >= 3u);  // it did split the log
  BOOST_TEST(batched_seqs == serial_seqs, boost::test_tools::per_element());
  BOOST_TEST((batched == serial));
  BOOST_TEST((batched.back() == ledger->head_chain()));
}

BOOST_AUTO_TEST_CASE(batched_scan_stops_at_the_visitors_error_and_returns_it) {
  AppendMany(1500);
  std::uint64_t last = 0;
  const Status s = ledger->ScanBatches({}, [&](std::span<const RecordView> run) {
    for (const RecordView& v : run) {
      if (v.seq == 700) return Status::Internal("stop at 700");
      last = v.seq;
    }
    return Status::OK();
  });
  BOOST_TEST(s.message() == "stop at 700", s.ToString());
  BOOST_TEST(last == 699u);
}

BOOST_AUTO_TEST_CASE(batched_scan_rethrows_the_visitors_exception_on_the_caller) {
  AppendMany(1000);
  BOOST_CHECK_THROW(
      (void)ledger->ScanBatches({}, [](std::span<const RecordView> run) -> Status {
        if (run.back().seq > 600) throw std::runtime_error("visitor failed");
        return Status::OK();
      }),
      std::runtime_error);
}

BOOST_AUTO_TEST_CASE(batched_scan_refuses_keep_going) {
  AppendMany(3);
  ScanOptions scan;
  scan.keep_going = true;
  const Status s = ledger->ScanBatches(scan, [](std::span<const RecordView>) {
    return Status::OK();
  });
  BOOST_TEST((s.code() == Status::Code::kInvalidArgument), s.ToString());
}

BOOST_AUTO_TEST_CASE(unknown_format_version_fails_open_naming_it) {
  AppendMany(1);
  RawPutMeta(fmt::kFormatVersionKey, std::string("\x00\x00\x00\x07", 4));
  auto opened = Ledger::Open(dir, options);
  BOOST_REQUIRE(!opened.has_value());
  BOOST_TEST((opened.error().code() == Status::Code::kFailedPrecondition), Why(opened));
  BOOST_TEST(opened.error().message().find("version 7") != std::string::npos,
             Why(opened));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------

BOOST_FIXTURE_TEST_SUITE(ledger_open, LedgerFixture)

BOOST_AUTO_TEST_CASE(opening_a_missing_ledger_is_not_found) {
  for (bool read_only : {false, true}) {
    Options o;
    o.read_only = read_only;
    auto opened = Ledger::Open(tmp.path() + "/nothing-here", o);
    BOOST_REQUIRE(!opened.has_value());
    BOOST_TEST(opened.error().IsNotFound(), Why(opened));
    BOOST_TEST(opened.error().message().find("nothing-here") != std::string::npos);
  }
  BOOST_TEST(!std::filesystem::exists(tmp.path() + "/nothing-here"));
}

BOOST_AUTO_TEST_CASE(error_if_exists_on_an_existing_ledger_is_already_exists) {
  Close();
  Options o;
  o.create_if_missing = true;
  o.error_if_exists = true;
  auto opened = Ledger::Open(dir, o);
  BOOST_REQUIRE(!opened.has_value());
  BOOST_TEST((opened.error().code() == Status::Code::kAlreadyExists), Why(opened));
}

BOOST_AUTO_TEST_CASE(read_only_open_works_while_a_writer_is_open) {
  AppendMany(5);
  Options ro;
  ro.read_only = true;
  auto reader = Ledger::Open(dir, ro);
  BOOST_REQUIRE_MESSAGE(reader.has_value(), Why(reader));
  BOOST_TEST((*reader)->last_seq() == 5u);
  AppendMany(3, 100);  // the writer keeps working
  BOOST_TEST(ledger->last_seq() == 8u);
  std::vector<std::uint64_t> seen;
  Status s = (*reader)->Scan({}, [&](const RecordView& r) {
    seen.push_back(r.seq);
    return Status::OK();
  });
  BOOST_TEST(s.ok(), s.ToString());
  BOOST_TEST(seen == Range(1, 5), boost::test_tools::per_element());  // as of its open
}

BOOST_AUTO_TEST_CASE(second_writer_on_the_same_dir_is_refused) {
  auto second = Ledger::Open(dir, options);
  BOOST_REQUIRE(!second.has_value());
  BOOST_TEST((second.error().code() == Status::Code::kIOError), Why(second));
  AppendMany(1);  // the first is unaffected
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// kill -9: a child process appends in a loop and reports each acknowledged seq on
// a pipe; the parent kills it and checks that every acknowledged seq survived.
//
// The child re-executes this test binary (fork + exec) rather than running on in
// the forked copy: earlier test cases leave RocksDB's background threads in this
// process, and a forked child that inherits their locks but not the threads can
// hang. Between fork and exec the child calls only async-signal-safe functions.

constexpr const char* kChildDirEnv = "PATLEDGER_LEDGER_TEST_CHILD_DIR";
constexpr const char* kChildFdEnv = "PATLEDGER_LEDGER_TEST_CHILD_FD";

bool ReadFull(int fd, void* buf, std::size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

BOOST_AUTO_TEST_SUITE(ledger_crash)

BOOST_AUTO_TEST_CASE(kill_9_loses_no_acknowledged_append) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/ledger";
  int fds[2];
  BOOST_REQUIRE(::pipe(fds) == 0);

  // Everything the child needs is built before fork.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  env_strings.push_back(std::string(kChildDirEnv) + "=" + dir);
  env_strings.push_back(std::string(kChildFdEnv) + "=" + std::to_string(fds[1]));
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe",
              run = "--run_test=ledger_crash_child/append_until_killed",
              log = "--log_level=nothing", report = "--report_level=no";
  char* argv[] = {exe.data(), run.data(), log.data(), report.data(), nullptr};

  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    ::execve(exe.c_str(), argv, envp.data());
    ::_exit(127);
  }
  ::close(fds[1]);

  std::uint64_t max_acked = 0, acked = 0;
  std::uint64_t seq = 0;
  while (acked < 200 && ReadFull(fds[0], &seq, sizeof seq)) {
    ++acked;
    max_acked = std::max(max_acked, seq);
  }
  ::kill(pid, SIGKILL);
  // Seqs already in the pipe were acknowledged before the kill.
  while (ReadFull(fds[0], &seq, sizeof seq)) {
    ++acked;
    max_acked = std::max(max_acked, seq);
  }
  ::close(fds[0]);
  int wstatus = 0;
  BOOST_REQUIRE(::waitpid(pid, &wstatus, 0) == pid);
  BOOST_TEST_MESSAGE("child acknowledged " << acked << " transactions, up to seq "
                                           << max_acked);
  BOOST_TEST(acked >= 200u);
  BOOST_TEST((WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL));

  auto opened = Ledger::Open(dir, Options{});
  BOOST_REQUIRE_MESSAGE(opened.has_value(), Why(opened));
  BOOST_TEST((*opened)->last_seq() >= max_acked);
  std::uint64_t visited = 0;
  Status s = (*opened)->Scan({}, [&](const RecordView&) {
    ++visited;
    return Status::OK();
  });
  BOOST_TEST(s.ok(), s.ToString());
  BOOST_TEST(visited == (*opened)->last_seq());
}

BOOST_AUTO_TEST_SUITE_END()

// Runs only when kill_9_loses_no_acknowledged_append executes it in a child process.
BOOST_AUTO_TEST_SUITE(ledger_crash_child, *boost::unit_test::disabled())

BOOST_AUTO_TEST_CASE(append_until_killed) {
  const char* dir = std::getenv(kChildDirEnv);
  const char* fd_text = std::getenv(kChildFdEnv);
  BOOST_REQUIRE_MESSAGE(dir != nullptr && fd_text != nullptr,
                        "run only by ledger_crash/kill_9_loses_no_acknowledged_append");
  const int fd = std::atoi(fd_text);
  Options o;
  o.create_if_missing = true;
  auto opened = Ledger::Open(dir, o);
  BOOST_REQUIRE_MESSAGE(opened.has_value(), Why(opened));
  Ledger& ledger = **opened;
  for (std::uint64_t i = 0; i < 1'000'000; ++i) {
    // Transactions of 1..3 events, so a torn tail could split one.
    std::vector<std::string> events;
    for (std::uint64_t k = 0; k <= i % 3; ++k) events.push_back(Revoked(i * 4 + k + 1));
    const std::uint64_t n = events.size();
    auto seq = ledger.Append(std::move(events));
    BOOST_REQUIRE_MESSAGE(seq.has_value(), Why(seq));
    const std::uint64_t last = *seq + n - 1;
    if (::write(fd, &last, sizeof last) != sizeof last) return;  // the parent went away
  }
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::ledger
