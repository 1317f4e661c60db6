// The ledger on RocksDB: opening and checking "meta", group-committed Append, and
// Scan. The per-record checks live in ledger/record.cc; the format is
// docs/ledger-format.md.
//
// Group commit follows LevelDB's DBImpl::Write: every Append queues a Writer in
// `writers_`; the writer at the front is the leader. The leader takes the writers
// queued behind it (whole transactions, up to kMaxGroupRecords/kMaxGroupBytes),
// releases the mutex, patches and chains their envelopes, writes one WriteBatch
// (the events plus the new head in "meta"), calls the listener, and then, under the
// mutex again, publishes the new head and wakes the next leader. Second stage, while
// the next group writes: the leader makes the head journal durably reach its head
// (JournalAtLeast: one append+sync covers every group published so far), and only
// then completes its group.
//
// Invariants (mu guards everything below it in Impl):
//   1. Only the leader (the front writer) reads or writes the envelopes of queued
//      writers, and it is the only thread that writes to RocksDB or calls the listener.
//   2. last_seq/head_chain describe what is durable in RocksDB: they change only
//      after a successful write, and only the leader changes them.
//   3. Once `error` is set it never clears; every queued and later Append fails with it.

#include "ledger/ledger.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>

#include "common/endian.h"
#include "ledger/damage.h"
#include "ledger/format.h"
#include "ledger/record.h"
#include "ledger/scan_pipeline.h"
#include "ledger/table_check.h"

namespace patledger::ledger {

namespace {

namespace fmt = format;
using Mark = JournaledHead;
using internal::AsBytes;

// A group never exceeds these unless its first transaction alone does.
constexpr std::size_t kMaxGroupRecords = 4096;
constexpr std::size_t kMaxGroupBytes = 1 << 20;

// Indexes into Impl::handles, in the order the column families are opened.
enum : std::size_t { kDefaultCf = 0, kEventsCf = 1, kMetaCf = 2 };

Status FromRocks(const rocksdb::Status& s, const std::string& context) {
  std::string m = context + ": " + s.ToString();
  if (s.IsCorruption()) return Status::Corruption(std::move(m));
  if (s.IsNotFound() || s.IsPathNotFound()) return Status::NotFound(std::move(m));
  if (s.IsInvalidArgument()) return Status::FailedPrecondition(std::move(m));
  return Status::IOError(std::move(m));
}

rocksdb::Slice ToSlice(std::string_view s) { return {s.data(), s.size()}; }

// By default RocksDB holds every open table's whole index block in memory for as long
// as the table is open: 2.5 bytes per token at 10M tokens, growing with the history,
// not with the live tokens. The ledger writes partitioned indexes instead: a small top
// level held with the table, over 4 KiB partitions that are read through the block
// cache like data blocks, so a long history costs the cache's bounded capacity. (With
// cache_index_and_filter_blocks also true the top level would go to the cache too: the
// same memory for these tables, measured, but every table written before this option
// would then reload its whole one-level index on a cache miss, ~15x slower reads.)
rocksdb::BlockBasedTableOptions TableOptions(std::size_t block_cache_bytes) {
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = rocksdb::NewLRUCache(block_cache_bytes);
  t.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
  return t;
}

// The environment a ledger's files go through: the options' (tests' simulated disks)
// or the default.
rocksdb::Env* EnvOf(const Options& options) {
  return options.env != nullptr ? options.env : rocksdb::Env::Default();
}

template <std::size_t N>
rocksdb::Slice ToSlice(const std::array<char, N>& a) {
  return {a.data(), a.size()};
}

std::string EncodeHead(std::uint64_t seq, const ChainHash& chain) {
  const fmt::SeqKey key = fmt::EncodeSeq(seq);
  std::string out(key.begin(), key.end());
  out.append(reinterpret_cast<const char*>(chain.data()), chain.size());
  return out;
}

// One Append call waiting in the queue.
struct Writer {
  explicit Writer(std::vector<std::string>* e) : envelopes(e) {
    for (const std::string& s : *e) bytes += s.size();
  }
  std::vector<std::string>* envelopes;  // the caller's, patched in place by the leader
  std::size_t bytes = 0;
  // Set by the leader that carried this writer, under Impl::mu.
  bool done = false;
  Status status;
  std::uint64_t first_seq = 0;
  std::condition_variable cv;
};

// Releases a RocksDB snapshot when the scan ends.
class SnapshotHolder {
 public:
  explicit SnapshotHolder(rocksdb::DB* db) : db_(db), snapshot_(db->GetSnapshot()) {}
  ~SnapshotHolder() {
    if (snapshot_ != nullptr) db_->ReleaseSnapshot(snapshot_);
  }
  SnapshotHolder(const SnapshotHolder&) = delete;
  SnapshotHolder& operator=(const SnapshotHolder&) = delete;
  const rocksdb::Snapshot* get() const { return snapshot_; }

 private:
  rocksdb::DB* db_;
  const rocksdb::Snapshot* snapshot_;
};

// The head journal (docs/ledger-format.md): after every synced group the leader
// appends the new head — seq and chain hash — to a small append-only file beside
// RocksDB's, and syncs it, before any caller of the group is acknowledged. Every
// later open checks that the ledger still reaches the last head in the journal with
// that chain hash. So records lost to damage that RocksDB's recovery accepts without
// an error — a live WAL cut at a record boundary or with a torn-looking tail, a
// MANIFEST cut at a record boundary — are refused, never silently dropped
// (docs/RELIABILITY.md, F1). The journal is a lower bound: a crash between the WAL
// sync and the journal sync leaves the ledger ahead of it, which is fine (that group
// was never acknowledged).
//
// Files are PATLEDGER-HEAD-<n>, n counting up. A writable open starts a new one
// holding the head it opened with (appended, synced, then the directory synced), and
// only then deletes the older ones; a full one (kHeadJournalMaxBytes) is replaced the
// same way. So at any moment at least one journal holds a head no older than the
// last acknowledged group, whatever a crash leaves of the newest.
//
// A record is 64 bytes: "PLHEAD01", seq (u64 LE), chain(seq) (32 bytes), 8 zero
// bytes, XXH3-64 of the 56 bytes before it (u64 LE). A journal is created full size,
// zeros, and records overwrite it from the start; zero records are not records.
constexpr std::string_view kHeadJournalPrefix = "PATLEDGER-HEAD-";
constexpr std::string_view kHeadRecordMagic = "PLHEAD01";
constexpr std::size_t kHeadRecordBytes = 64;
constexpr std::uint64_t kHeadJournalMaxBytes = 1 << 20;  // 16,384 heads

// The closed-head mark of earlier builds (one text file, written at a clean close):
// still read, so a ledger last closed by one of them keeps that check; a writable
// open replaces it by a journal.
constexpr std::string_view kClosedHeadFile = "PATLEDGER-CLOSED-HEAD";
constexpr std::string_view kClosedHeadHeader = "patledger closed-head v1\n";

std::string ClosedHeadText(std::uint64_t seq, const ChainHash& chain) {
  std::string text(kClosedHeadHeader);
  text += "seq " + std::to_string(seq) + "\nchain " + internal::Hex(chain) + "\n";
  char check[17];
  std::snprintf(check, sizeof check, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(text.data(), text.size())));
  text += "check ";
  text += check;
  text += "\n";
  return text;
}

std::string HeadRecord(std::uint64_t seq, const ChainHash& chain) {
  std::string r(kHeadRecordBytes, '\0');
  std::memcpy(r.data(), kHeadRecordMagic.data(), kHeadRecordMagic.size());
  StoreLe64(r.data() + 8, seq);
  std::memcpy(r.data() + 16, chain.data(), chain.size());
  StoreLe64(r.data() + 56, XXH3_64bits(r.data(), 56));
  return r;
}

std::optional<Mark> ParseHeadRecord(std::string_view r, const std::string& file) {
  if (r.size() != kHeadRecordBytes || !r.starts_with(kHeadRecordMagic) ||
      LoadLe64(r.data() + 56) != XXH3_64bits(r.data(), 56)) {
    return std::nullopt;
  }
  Mark m;
  m.seq = LoadLe64(r.data() + 8);
  std::memcpy(m.chain.data(), r.data() + 16, m.chain.size());
  m.file = file;
  return m;
}

std::string HeadJournalName(std::uint64_t number) {
  char name[48];
  std::snprintf(name, sizeof name, "%s%06llu", std::string(kHeadJournalPrefix).c_str(),
                static_cast<unsigned long long>(number));
  return name;
}

// n of a journal's file name, or nullopt if `name` is not one.
std::optional<std::uint64_t> HeadJournalNumber(std::string_view name) {
  if (!name.starts_with(kHeadJournalPrefix)) return std::nullopt;
  name.remove_prefix(kHeadJournalPrefix.size());
  if (name.empty() || name.size() > 18) return std::nullopt;
  std::uint64_t n = 0;
  for (char c : name) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return n;
}

// The closed-head mark of an earlier build, if there is one: NotFound if there is
// none; Corruption naming the file if it is damaged.
Result<Mark> ReadClosedHead(rocksdb::Env* env, const std::string& dir) {
  const std::string path = dir + "/" + std::string(kClosedHeadFile);
  std::string text;
  rocksdb::Status s = rocksdb::ReadFileToString(env, path, &text);
  if (s.IsNotFound() || s.IsPathNotFound()) return Err(Status::NotFound(path));
  if (!s.ok()) return Err(FromRocks(s, "reading " + path));
  const auto damaged = [&] {
    return Err(
        Status::Corruption(path +
                           " is damaged (it records the last seq at the "
                           "last clean close; delete it to open without that check)"));
  };
  const std::size_t check_at = text.rfind("check ");
  if (!text.starts_with(kClosedHeadHeader) || check_at == std::string::npos) {
    return damaged();
  }
  const std::string body = text.substr(0, check_at);
  unsigned long long seq = 0;
  char chain_hex[65] = {};
  if (std::sscanf(body.c_str() + kClosedHeadHeader.size(),
                  "seq %llu\nchain %64[0-9a-f]\n", &seq, chain_hex) != 2) {
    return damaged();
  }
  Mark m;
  for (std::size_t i = 0; i < m.chain.size(); ++i) {
    unsigned byte = 0;
    if (std::sscanf(chain_hex + 2 * i, "%2x", &byte) != 1) return damaged();
    m.chain[i] = static_cast<std::uint8_t>(byte);
  }
  if (ClosedHeadText(seq, m.chain) != text) return damaged();
  m.seq = seq;
  m.file = std::string(kClosedHeadFile);
  return m;
}

// What the head journals (and a closed-head mark of an earlier build) in `dir` say:
// the highest head any of them holds, or NotFound if there is none. A torn tail (a
// partial or invalid last record, as a crash during an append leaves it) is ignored:
// its group was never acknowledged. A non-empty journal with no valid record at all
// (and not all zeros, as a torn creation can leave it) is refused naming it.
Result<Mark> ReadHeadMarks(rocksdb::Env* env, const std::string& dir,
                           const std::vector<std::string>& names) {
  std::optional<Mark> best;
  for (const std::string& name : names) {
    if (!HeadJournalNumber(name)) continue;
    std::string bytes;
    const std::string path = dir + "/" + name;
    rocksdb::Status s = rocksdb::ReadFileToString(env, path, &bytes);
    if (s.IsNotFound() || s.IsPathNotFound()) continue;  // replaced meanwhile
    if (!s.ok()) return Err(FromRocks(s, "reading " + path));
    std::optional<Mark> last;
    for (std::size_t at = 0; at + kHeadRecordBytes <= bytes.size();
         at += kHeadRecordBytes) {
      auto m = ParseHeadRecord(std::string_view(bytes).substr(at, kHeadRecordBytes), name);
      if (m && (!last || m->seq >= last->seq)) last = m;
    }
    if (!last) {
      if (bytes.find_first_not_of('\0') == std::string::npos) continue;
      return Err(Status::Corruption(
          path + " is damaged: none of its " + std::to_string(bytes.size()) +
          " bytes is a valid head record (it guards against a truncated WAL; move it "
          "aside to open without that check)"));
    }
    if (!best || last->seq > best->seq) best = last;
  }
  auto closed = ReadClosedHead(env, dir);
  if (!closed && closed.error().code() != Status::Code::kNotFound) return closed;
  if (closed && (!best || closed->seq > best->seq)) best = *closed;
  if (!best) return Err(Status::NotFound("no head journal in " + dir));
  return *best;
}

}  // namespace

struct Ledger::Impl {
  Impl(std::string d, const Options& o) : dir(std::move(d)), options(o) {}
  ~Impl() {
    if (db == nullptr) return;
    // At a clean close the memtables go to SST files, so the WAL is empty at rest:
    // every acknowledged event then sits in a checksummed file that the MANIFEST
    // tracks, and the WAL of a stopped ledger holds nothing to lose. (The head
    // journal already holds the last head.) After a failed write nothing more is
    // written.
    if (!options.read_only && error.ok() && !handles.empty()) {
      rocksdb::FlushOptions flush;
      flush.wait = true;
      db->Flush(flush, handles).PermitUncheckedError();  // the WAL still holds it all
    }
    if (journal) journal->Close().PermitUncheckedError();
    for (rocksdb::ColumnFamilyHandle* h : handles)
      db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db->Close().PermitUncheckedError();  // a failed close loses nothing acknowledged
  }

  // Starts head journal number `number` holding head {seq, chain}, synced and its
  // name made durable, then deletes the journals before it (and the closed-head mark
  // of an earlier build). Open calls it, and AppendJournal under journal_mu.
  Status StartJournal(std::uint64_t number, std::uint64_t seq, const ChainHash& chain);
  // Returns once the journal durably holds a head at or after `seq` (appending the
  // newest published head if it does not yet): the second stage of a group commit.
  // Any leader calls it, without mu; journal_mu orders the journal's writers.
  Status JournalAtLeast(std::uint64_t seq);
  // Appends head {seq, chain} to the journal (synced unless options.sync is false),
  // replacing a full journal by a new one. REQUIRES journal_mu.
  Status AppendJournal(std::uint64_t seq, const ChainHash& chain);

  rocksdb::ColumnFamilyHandle* events() const { return handles[kEventsCf]; }
  rocksdb::ColumnFamilyHandle* meta() const { return handles[kMetaCf]; }

  Result<std::pair<std::uint64_t, ChainHash>> ReadHead(
      const rocksdb::ReadOptions& ro) const;

  // What a scan reads: a snapshot, read options bounded by to_seq (checksums
  // verified, the block cache left alone), and the head in meta as of the snapshot.
  struct ScanView {
    explicit ScanView(rocksdb::DB* db) : snapshot(db) {}
    SnapshotHolder snapshot;
    rocksdb::ReadOptions ro;
    fmt::SeqKey upper_key{};
    rocksdb::Slice upper;
    std::uint64_t head_seq = 0;
    ChainHash head_chain{};
  };
  Status OpenScanView(std::uint64_t to_seq, ScanView* v) const {
    v->ro.verify_checksums = true;
    v->ro.fill_cache = false;  // a full scan must not evict the working set
    v->ro.snapshot = v->snapshot.get();
    auto head = ReadHead(v->ro);
    if (!head) return head.error();
    std::tie(v->head_seq, v->head_chain) = *head;
    if (to_seq != UINT64_MAX) {
      v->upper_key = fmt::EncodeSeq(to_seq + 1);
      v->upper = ToSlice(v->upper_key);
      v->ro.iterate_upper_bound = &v->upper;
    }
    return Status::OK();
  }
  Status LoadMeta();
  std::vector<Writer*> TakeGroup();  // REQUIRES: mu held, writers non-empty

  const std::string dir;
  const Options options;
  // The Env RocksDB opens the ledger through: EnvOf(options), whose SSTs are checked
  // before RocksDB parses them (ledger/table_check.h, F7). Declared before db, so it
  // outlives it.
  std::unique_ptr<rocksdb::Env> table_checking_env;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // default, events, meta

  mutable std::mutex mu;
  std::deque<Writer*> writers;  // front = the current leader
  std::uint64_t last_seq = 0;
  ChainHash head_chain{};
  // recorded_at_us of record last_seq: the leader raises any earlier recorded_at_us
  // to it, so recorded_at never decreases along the log (point-in-time replay).
  std::int64_t last_recorded_at_us = INT64_MIN;
  Status error;  // sticky

  // Guarded by mu: the highest seq the journal holds durably, and its sticky error.
  std::uint64_t journaled_seq = 0;
  Status journal_error;

  // The head journal being appended to (writable ledgers only), guarded by
  // journal_mu (taken before mu, never after it).
  std::mutex journal_mu;
  std::unique_ptr<rocksdb::RandomRWFile> journal;
  std::uint64_t journal_number = 0;
  std::uint64_t journal_bytes = 0;
};

Status Ledger::Impl::JournalAtLeast(std::uint64_t seq) {
  std::lock_guard journal_lock(journal_mu);
  std::uint64_t target = 0;
  ChainHash target_chain{};
  {
    std::lock_guard lock(mu);
    if (journaled_seq >= seq) return Status::OK();  // a later group's append covered it
    if (!journal_error.ok()) return journal_error;
    // The newest head published (durable in the WAL): it covers every group waiting.
    target = last_seq;
    target_chain = head_chain;
  }
  const Status s = AppendJournal(target, target_chain);
  std::lock_guard lock(mu);
  if (s.ok()) {
    journaled_seq = std::max(journaled_seq, target);
  } else {
    journal_error = s;
  }
  return s;
}

Status Ledger::Impl::StartJournal(std::uint64_t number, std::uint64_t seq,
                                  const ChainHash& chain) {
  rocksdb::Env* e = EnvOf(options);
  const std::string name = HeadJournalName(number);
  const std::string path = dir + "/" + name;
  // The whole file is written (zeros) before the first head: every later head
  // overwrites bytes already allocated inside the file's size, so its sync needs no
  // metadata update (no file-system journal commit: docs/PERFORMANCE.md §4).
  const std::string record = HeadRecord(seq, chain);
  std::unique_ptr<rocksdb::WritableFile> created;
  rocksdb::Status s = e->NewWritableFile(path, &created, rocksdb::EnvOptions());
  if (s.ok()) s = created->Append(record);
  const std::string zeros(64 << 10, '\0');
  for (std::uint64_t at = record.size(); s.ok() && at < kHeadJournalMaxBytes;
       at += zeros.size()) {
    s = created->Append(rocksdb::Slice(
        zeros.data(), std::min<std::uint64_t>(zeros.size(), kHeadJournalMaxBytes - at)));
  }
  if (s.ok()) s = created->Sync();
  if (s.ok()) s = created->Close();
  std::unique_ptr<rocksdb::RandomRWFile> file;
  if (s.ok()) s = e->NewRandomRWFile(path, &file, rocksdb::EnvOptions());
  std::unique_ptr<rocksdb::Directory> d;
  if (s.ok()) s = e->NewDirectory(dir, &d);
  if (s.ok()) s = d->Fsync();
  if (!s.ok()) return FromRocks(s, "starting the head journal " + path);
  if (journal) journal->Close().PermitUncheckedError();
  journal = std::move(file);
  journal_number = number;
  journal_bytes = record.size();
  {
    std::lock_guard lock(mu);
    journaled_seq = std::max(journaled_seq, seq);
  }
  // The older journals hold older heads only: losing them loses nothing, so their
  // deletion need not be durable, and a failure to delete them is harmless.
  std::vector<std::string> names;
  if (e->GetChildren(dir, &names).ok()) {
    for (const std::string& n : names) {
      const auto k = HeadJournalNumber(n);
      if ((k && *k < number) || n == kClosedHeadFile) {
        e->DeleteFile(dir + "/" + n).PermitUncheckedError();
      }
    }
  }
  return Status::OK();
}

Status Ledger::Impl::AppendJournal(std::uint64_t seq, const ChainHash& chain) {
  if (journal_bytes + kHeadRecordBytes > kHeadJournalMaxBytes) {
    return StartJournal(journal_number + 1, seq, chain);
  }
  rocksdb::Status s = journal->Write(journal_bytes, HeadRecord(seq, chain));
  if (s.ok() && options.sync) s = journal->Sync();
  if (!s.ok()) {
    return FromRocks(s, "appending to the head journal " + dir + "/" +
                            HeadJournalName(journal_number));
  }
  journal_bytes += kHeadRecordBytes;
  return Status::OK();
}

Result<std::pair<std::uint64_t, ChainHash>> Ledger::Impl::ReadHead(
    const rocksdb::ReadOptions& ro) const {
  std::string value;
  rocksdb::Status s = db->Get(ro, meta(), ToSlice(fmt::kHeadKey), &value);
  if (s.IsNotFound()) return Err(Status::Corruption("meta has no head"));
  if (!s.ok()) return Err(FromRocks(s, "reading the head from meta"));
  if (value.size() != fmt::kHeadSize) {
    return Err(Status::Corruption("the head in meta is " + std::to_string(value.size()) +
                                  " bytes, expected " + std::to_string(fmt::kHeadSize)));
  }
  ChainHash chain;
  std::memcpy(chain.data(), value.data() + fmt::kSeqKeySize, chain.size());
  return std::pair{fmt::DecodeSeq(value.data()), chain};
}

// Checks the format version and that the last event is the head; a new ledger
// gets its meta here.
Status Ledger::Impl::LoadMeta() {
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, events()));
  it->SeekToLast();
  if (!it->status().ok()) return FromRocks(it->status(), "reading the last event");
  std::uint64_t last_event = 0;
  if (it->Valid()) {
    if (it->key().size() != fmt::kSeqKeySize) {
      return Status::Corruption("the last key in events is " +
                                std::to_string(it->key().size()) +
                                " bytes, not a sequence number");
    }
    last_event = fmt::DecodeSeq(it->key().data());
  }
  it.reset();

  std::string version;
  rocksdb::Status s = db->Get(ro, meta(), ToSlice(fmt::kFormatVersionKey), &version);
  if (s.IsNotFound()) {
    // A new ledger (or one whose creation stopped before its meta was written).
    if (last_event != 0) {
      return Status::Corruption(
          "meta has no format_version but events holds records up to seq " +
          std::to_string(last_event));
    }
    if (options.read_only || !options.create_if_missing) {
      return Status::Corruption(
          "meta has no format_version (the ledger was never finished; "
          "open it with create_if_missing to finish it)");
    }
    rocksdb::WriteBatch batch;
    const auto v = fmt::EncodeFormatVersion(fmt::kFormatVersion);
    s = batch.Put(meta(), ToSlice(fmt::kFormatVersionKey), ToSlice(v));
    if (s.ok()) s = batch.Put(meta(), ToSlice(fmt::kHeadKey), EncodeHead(0, ChainHash{}));
    rocksdb::WriteOptions wo;
    wo.sync = true;
    if (s.ok()) s = db->Write(wo, &batch);
    if (!s.ok()) return FromRocks(s, "writing the meta of a new ledger");
    version.assign(v.begin(), v.end());
  } else if (!s.ok()) {
    return FromRocks(s, "reading format_version from meta");
  }
  if (version.size() != fmt::kFormatVersionSize) {
    return Status::Corruption("format_version in meta is " +
                              std::to_string(version.size()) + " bytes, expected " +
                              std::to_string(fmt::kFormatVersionSize));
  }
  const std::uint32_t v = fmt::DecodeFormatVersion(version.data());
  if (v != fmt::kFormatVersion) {
    return Status::FailedPrecondition("ledger format version " + std::to_string(v) +
                                      " is not supported (this build reads version " +
                                      std::to_string(fmt::kFormatVersion) + ")");
  }
  auto head = ReadHead(ro);
  if (!head) return head.error();
  if (head->first != last_event) {
    return Status::Corruption("the head in meta is seq " + std::to_string(head->first) +
                              " but the last record in events is seq " +
                              std::to_string(last_event));
  }
  last_seq = head->first;
  head_chain = head->second;
  return Status::OK();
}

std::vector<Writer*> Ledger::Impl::TakeGroup() {
  std::vector<Writer*> group;
  std::size_t records = 0, bytes = 0;
  for (Writer* w : writers) {
    const std::size_t n = w->envelopes->size();
    if (!group.empty() &&
        (records + n > kMaxGroupRecords || bytes + w->bytes > kMaxGroupBytes)) {
      break;
    }
    group.push_back(w);
    records += n;
    bytes += w->bytes;
  }
  return group;
}

Ledger::Ledger(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Ledger::~Ledger() = default;

namespace {

// The names of the files in `dir` (sorted), or empty if it cannot be listed.
std::vector<std::string> Listing(rocksdb::Env* env, const std::string& dir) {
  std::vector<std::string> names;
  if (!env->GetChildren(dir, &names).ok()) names.clear();
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

Result<std::unique_ptr<Ledger>> Ledger::Open(const std::string& dir,
                                             const Options& options) {
  if (!options.read_only) return OpenOnce(dir, options);
  // A read-only open reads the MANIFEST, then lists and replays the WAL files. Beside a
  // running writer, a flush or compaction finishing in between makes it fail ("No such
  // file") or, worse, succeed with a view missing a WAL deleted after its flush (which
  // reads as a gap). So retry until the directory listing is the same before and after
  // the open; once open, the handle keeps its files open and its view is stable.
  rocksdb::Env* env = EnvOf(options);
  Result<std::unique_ptr<Ledger>> opened = Err(Status::Internal("not opened"));
  for (int attempt = 0; attempt < 20; ++attempt) {
    const std::vector<std::string> before = Listing(env, dir);
    opened = OpenOnce(dir, options);
    const bool vanished =
        !opened && opened.error().message().find("No such file") != std::string::npos;
    if (!vanished && Listing(env, dir) == before) return opened;
    std::this_thread::sleep_for(std::chrono::milliseconds(5 << std::min(attempt, 4)));
  }
  return opened;  // still changing after 20 tries (~1.4 s): the last attempt's answer
}

Result<std::unique_ptr<Ledger>> Ledger::OpenOnce(const std::string& dir,
                                                 const Options& options) {
  rocksdb::Env* env = EnvOf(options);
  const rocksdb::Status current = env->FileExists(dir + "/CURRENT");
  if (!current.ok() && !current.IsNotFound()) {
    return Err(FromRocks(current, "cannot open the ledger in " + dir));
  }
  const bool exists = current.ok();
  if (exists && options.error_if_exists) {
    return Err(Status::AlreadyExists("a ledger already exists in " + dir));
  }
  if (!exists && (options.read_only || !options.create_if_missing)) {
    return Err(
        Status::NotFound("no ledger in " + dir +
                         (options.read_only ? "" : " (create_if_missing is false)")));
  }

  auto impl = std::make_unique<Impl>(dir, options);
  impl->table_checking_env = internal::NewTableCheckingEnv(env);
  rocksdb::DBOptions db_options;
  db_options.env = impl->table_checking_env.get();
  const bool may_create = !options.read_only && options.create_if_missing;
  db_options.create_if_missing = may_create;
  db_options.create_missing_column_families = may_create;
  db_options.error_if_exists = options.error_if_exists;
  // REFERENCE.md §2: a flipped bit mid-WAL must refuse to open, not silently truncate
  // the log (kPointInTimeRecovery does); a torn last record after a crash is fine.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  db_options.paranoid_checks = true;
  db_options.track_and_verify_wals_in_manifest = true;
  // Events and meta are flushed together, so the SST files never disagree either.
  db_options.atomic_flush = true;
  db_options.keep_log_file_num = 10;
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.paranoid_file_checks = true;  // re-read every SST file after writing it
  cf_options.table_factory.reset(
      rocksdb::NewBlockBasedTableFactory(TableOptions(options.block_cache_bytes)));

  const std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, cf_options},
      {std::string(fmt::kEventsColumnFamily), cf_options},
      {std::string(fmt::kMetaColumnFamily), cf_options},
  };
  // Read before the database: a writer beside a read-only open appends heads after
  // this open took its view; the heads read first are never ahead of it.
  const std::vector<std::string> names = Listing(env, dir);
  const auto mark = options.check_head_journal
                        ? ReadHeadMarks(env, dir, names)
                        : Result<JournaledHead>(Err(Status::NotFound("not checked")));
  rocksdb::DB* db = nullptr;
  const rocksdb::Status s =
      options.read_only
          ? rocksdb::DB::OpenForReadOnly(db_options, dir, cfs, &impl->handles, &db)
          : rocksdb::DB::Open(db_options, dir, cfs, &impl->handles, &db);
  if (!s.ok()) {
    Status refused = FromRocks(s, "cannot open the ledger in " + dir);
    // RocksDB does not always say which file is damaged (F2): look for it.
    if (s.IsCorruption()) {
      if (const std::string damaged =
              internal::DescribeDamagedFiles(env, dir, s.ToString());
          !damaged.empty()) {
        refused = Status::Corruption(refused.message() + "; damaged: " + damaged);
      }
    }
    return Err(refused);
  }
  impl->db.reset(db);
  if (Status st = impl->LoadMeta(); !st.ok()) {
    return Err(st.WithContext("ledger in " + dir));
  }
  auto ledger = std::unique_ptr<Ledger>(new Ledger(std::move(impl)));
  if (Status st = ledger->CheckHeadMark(mark); !st.ok()) {
    return Err(st.WithContext("ledger in " + dir));
  }
  // Only a writer needs the last record's time (to keep recorded_at non-decreasing);
  // a reader must still open a ledger whose last record is damaged, to report it.
  if (!options.read_only && ledger->impl_->last_seq > 0) {
    auto last = ledger->Read(ledger->impl_->last_seq);
    if (!last) return Err(last.error());
    ledger->impl_->last_recorded_at_us =
        schema::GetEnvelope(last->data())->recorded_at_us();
  }
  if (!options.read_only) {
    std::uint64_t number = 0;
    for (const std::string& n : names) number = std::max(number, HeadJournalNumber(n).value_or(0));
    Impl& d = *ledger->impl_;
    if (Status st = d.StartJournal(number + 1, d.last_seq, d.head_chain); !st.ok()) {
      return Err(st.WithContext("ledger in " + dir));
    }
  }
  return ledger;
}

Status Ledger::CheckHeadMark(const Result<JournaledHead>& mark) const {
  if (!mark) {
    return mark.error().code() == Status::Code::kNotFound ? Status::OK() : mark.error();
  }
  const std::uint64_t seq = mark->seq;
  const std::uint64_t last = impl_->last_seq;
  const std::string where = impl_->dir + "/" + mark->file;
  if (seq > last) {
    return Status::Corruption(
        "the ledger ends at seq " + std::to_string(last) + " but reached seq " +
        std::to_string(seq) + " (" + where + "): acknowledged records seq " +
        std::to_string(last + 1) + ".." + std::to_string(seq) +
        " are missing — a damaged or truncated WAL or MANIFEST");
  }
  ChainHash found = impl_->head_chain;
  if (seq < last) {
    // The chain hash of record `seq` is the prev_chain of record seq + 1.
    auto next = Read(seq + 1);
    if (!next)
      return impl_->options.read_only ? Status::OK() : next.error();  // Scan says
    const auto* prev =
        schema::GetEnvelope(next->data())->sequencing()->prev_chain().bytes();
    for (std::size_t i = 0; i < found.size(); ++i) found[i] = prev->Get(i);
  }
  if (found != mark->chain) {
    return Status::Corruption("the chain hash at seq " + std::to_string(seq) +
                              " differs from the one recorded in " + where +
                              ": the history up to seq " + std::to_string(seq) +
                              " is not the one that was acknowledged");
  }
  return Status::OK();
}

Result<JournaledHead> ReadHeadJournal(const std::string& dir, rocksdb::Env* env) {
  if (env == nullptr) env = rocksdb::Env::Default();
  return ReadHeadMarks(env, dir, Listing(env, dir));
}

Result<std::uint64_t> Ledger::Append(std::vector<std::string> envelopes) {
  Impl& d = *impl_;
  if (d.options.read_only) {
    return Err(
        Status::FailedPrecondition("the ledger in " + d.dir + " is open read-only"));
  }
  if (envelopes.empty() || envelopes.size() > fmt::kMaxTransactionEvents) {
    return Err(Status::InvalidArgument(
        "a transaction holds 1.." + std::to_string(fmt::kMaxTransactionEvents) +
        " events, not " + std::to_string(envelopes.size())));
  }
  for (std::size_t i = 0; i < envelopes.size(); ++i) {
    const schema::Envelope* env = nullptr;
    if (Status s = schema::VerifyEnvelope(AsBytes(envelopes[i]), &env); !s.ok()) {
      return Err(
          Status::InvalidArgument("envelope " + std::to_string(i) + ": " + s.message()));
    }
  }

  Writer w(&envelopes);
  std::unique_lock lock(d.mu);
  if (!d.error.ok()) return Err(d.error);
  d.writers.push_back(&w);
  w.cv.wait(lock,
            [&] { return w.done || (!d.writers.empty() && d.writers.front() == &w); });
  if (w.done) {
    if (!w.status.ok()) return Err(w.status);
    return w.first_seq;
  }

  // This thread leads a group, unless the journal failed since it queued (sticky).
  if (!d.error.ok()) {
    for (Writer* q : d.writers) {
      if (q == &w) continue;
      q->status = d.error;
      q->done = true;
      q->cv.notify_one();  // under mu
    }
    d.writers.clear();
    return Err(d.error);
  }
  const std::vector<Writer*> group = d.TakeGroup();
  std::uint64_t seq = d.last_seq;
  ChainHash chain = d.head_chain;
  std::int64_t recorded_at = d.last_recorded_at_us;
  lock.unlock();

  rocksdb::WriteBatch batch;
  std::vector<ChainHash> chains;  // chain(seq) of each record, for the listener
  rocksdb::Status ws;
  for (Writer* g : group) {
    g->first_seq = seq + 1;
    const auto count = static_cast<std::uint16_t>(g->envelopes->size());
    for (std::uint16_t i = 0; i < count && ws.ok(); ++i) {
      std::string& e = (*g->envelopes)[i];
      schema::Envelope* env = schema::GetMutableEnvelope(e.data());
      // Writers stamp the time before they queue, so concurrent callers can arrive out
      // of order by a few microseconds; never let time run backwards along the log.
      if (env->recorded_at_us() < recorded_at) env->mutate_recorded_at_us(recorded_at);
      recorded_at = env->recorded_at_us();
      schema::Sequencing* sq = env->mutable_sequencing();
      sq->mutate_seq(++seq);
      flatbuffers::Array<std::uint8_t, 32>* prev =
          sq->mutable_prev_chain().mutable_bytes();
      for (std::size_t j = 0; j < chain.size(); ++j) prev->Mutate(j, chain[j]);
      sq->mutate_txn_index(i);
      sq->mutate_txn_count(count);
      chain = NextChain(chain, AsBytes(e));
      chains.push_back(chain);
      const fmt::SeqKey key = fmt::EncodeSeq(seq);
      const auto checksum = fmt::EncodeChecksum(internal::Checksum(AsBytes(e)));
      const rocksdb::Slice key_part = ToSlice(key);
      const rocksdb::Slice value_parts[2] = {ToSlice(e), ToSlice(checksum)};
      ws = batch.Put(d.events(), rocksdb::SliceParts(&key_part, 1),
                     rocksdb::SliceParts(value_parts, 2));
    }
  }
  if (ws.ok()) ws = batch.Put(d.meta(), ToSlice(fmt::kHeadKey), EncodeHead(seq, chain));
  if (ws.ok()) {
    rocksdb::WriteOptions wo;
    wo.sync = d.options.sync;
    ws = d.db->Write(wo, &batch);
  }
  // The group is durable in the WAL. The listener sees it now: the state must match
  // the ledger (even if the head journal fails below, the group stays in the ledger).
  if (ws.ok() && d.options.listener != nullptr) {
    std::size_t k = 0;
    for (Writer* g : group) {
      std::uint64_t s = g->first_seq;
      for (const std::string& e : *g->envelopes) {
        RecordView view;
        view.seq = s++;
        view.envelope_bytes = AsBytes(e);
        view.envelope = schema::GetEnvelope(e.data());
        view.chain = chains[k++];
        d.options.listener->OnCommitted(view);
      }
    }
  }

  lock.lock();
  if (ws.ok()) {
    d.last_seq = seq;
    d.head_chain = chain;
    d.last_recorded_at_us = recorded_at;
  } else {
    d.error = Status::IOError("ledger write failed, no further appends are accepted: " +
                              ws.ToString());
  }
  std::vector<Writer*> followers;
  for (Writer* g : group) {
    d.writers.pop_front();  // == g
    if (g != &w) followers.push_back(g);
  }
  if (!ws.ok()) {
    for (Writer* g : followers) d.writers.push_front(g);  // fail them with the rest
    for (Writer* q : d.writers) {
      q->status = d.error;
      q->done = true;
      q->cv.notify_one();  // under mu: q cannot return (and destroy cv) before we unlock
    }
    d.writers.clear();
    return Err(d.error);
  }
  // The next group may start its WAL write while this one waits for the journal.
  if (!d.writers.empty()) d.writers.front()->cv.notify_one();
  lock.unlock();

  // No one in the group is told before the head journal holds its head (or a later
  // one), synced.
  const Status js = d.JournalAtLeast(seq);
  lock.lock();
  if (!js.ok() && d.error.ok()) {
    d.error = Status::IOError(
        "the ledger's head journal could not be written (the last group is in the "
        "ledger but was not acknowledged); no further appends are accepted: " +
        js.message());
  }
  const Status result = js.ok() ? Status::OK() : d.error;
  for (Writer* g : followers) {
    g->status = result;
    g->done = true;
    g->cv.notify_one();  // under mu
  }
  if (!result.ok()) return Err(result);
  return w.first_seq;
}

Status Ledger::Scan(const ScanOptions& options,
                    const std::function<Status(const RecordView&)>& visit) const {
  const Impl& d = *impl_;
  Impl::ScanView scan_view(d.db.get());
  PATLEDGER_RETURN_IF_ERROR(d.OpenScanView(options.to_seq, &scan_view));
  const rocksdb::ReadOptions& ro = scan_view.ro;
  const std::uint64_t head_seq = scan_view.head_seq;
  [[maybe_unused]] const ChainHash& head_chain = scan_view.head_chain;

  std::uint64_t damaged = 0;
  Status first_damage;
  // Returns true when the scan must stop with `s`.
  auto stop_at = [&](const Status& s) {
    if (damaged++ == 0) first_damage = s;
    if (!options.keep_going) return true;
    if (options.on_damage) options.on_damage(s);
    return false;
  };

  internal::RecordVerifier verifier;
  RecordView view;
  bool past_head = false;
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator(ro, d.events()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const rocksdb::Slice key = it->key();
    if (key.size() != fmt::kSeqKeySize) {
      if (stop_at(verifier.MalformedKey(key.ToStringView()))) return first_damage;
      continue;
    }
    const std::uint64_t seq = fmt::DecodeSeq(key.data());
    if (seq > head_seq) {
      past_head = true;
      if (stop_at(Status::Corruption("seq " + std::to_string(seq) +
                                     ": a record after the head in meta (seq " +
                                     std::to_string(head_seq) + ")"))) {
        return first_damage;
      }
      break;
    }
    if (Status s = verifier.CheckPosition(seq); !s.ok() && stop_at(s))
      return first_damage;
    if (Status s = verifier.CheckRecord(seq, it->value().ToStringView(), &view);
        !s.ok()) {
      if (stop_at(s)) return first_damage;
      continue;
    }
    if (seq >= options.from_seq) {
      if (Status s = visit(view); !s.ok()) return s;
    }
  }
  if (!it->status().ok()) {
    return FromRocks(it->status(), "seq " + std::to_string(verifier.expected_seq()) +
                                       ": reading events");
  }
  if (options.to_seq >= head_seq && !past_head) {
    if (Status s = verifier.CheckEnd(head_seq, head_chain); !s.ok() && stop_at(s)) {
      return first_damage;
    }
  }
  if (damaged == 0) return Status::OK();
  if (damaged == 1) return first_damage;
  return Status::Corruption(first_damage.message() + "; " + std::to_string(damaged - 1) +
                            " more damaged record(s) after it");
}

Status Ledger::ScanBatches(
    const ScanOptions& options,
    const std::function<Status(std::span<const RecordView>)>& visit) const {
  if (options.keep_going) {
    return Status::InvalidArgument("ScanBatches stops at the first damage; use Scan");
  }
  const Impl& d = *impl_;
  Impl::ScanView scan_view(d.db.get());
  PATLEDGER_RETURN_IF_ERROR(d.OpenScanView(options.to_seq, &scan_view));
  const rocksdb::ReadOptions& ro = scan_view.ro;
  const std::uint64_t head_seq = scan_view.head_seq;
  [[maybe_unused]] const ChainHash& head_chain = scan_view.head_chain;

  // The checks are Scan's, in the same order for each record: position, size and
  // checksum here on the reading thread, the rest in `pipeline` (DeferredChecker),
  // the order-free part of it here too while the pipeline's consumer lags.
  internal::RecordVerifier verifier(internal::RecordVerifier::Chain::kDeferred);
  internal::ScanPipeline pipeline(options.from_seq, visit);
  const auto read = [&]() -> Status {
    RecordView view;
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator(ro, d.events()));
    for (it->SeekToFirst(); it->Valid() && !pipeline.stopped(); it->Next()) {
      const rocksdb::Slice key = it->key();
      if (key.size() != fmt::kSeqKeySize) return verifier.MalformedKey(key.ToStringView());
      const std::uint64_t seq = fmt::DecodeSeq(key.data());
      if (seq > head_seq) {
        return Status::Corruption("seq " + std::to_string(seq) +
                                  ": a record after the head in meta (seq " +
                                  std::to_string(head_seq) + ")");
      }
      PATLEDGER_RETURN_IF_ERROR(verifier.CheckPosition(seq));
      const std::string_view copy = pipeline.Stage(it->value().ToStringView());
      PATLEDGER_RETURN_IF_ERROR(verifier.CheckRecord(seq, copy, &view));
      if (pipeline.consumer_behind()) PATLEDGER_RETURN_IF_ERROR(internal::VerifyAndHash(&view));
      pipeline.Commit(view);
    }
    if (pipeline.stopped()) return Status::OK();  // Run returns why
    if (!it->status().ok()) {
      return FromRocks(it->status(), "seq " + std::to_string(verifier.expected_seq()) +
                                         ": reading events");
    }
    return Status::OK();
  };
  // The consumer's error concerns a record before any the reader found damaged: Run
  // returns it first.
  internal::DeferredChecker checked;
  PATLEDGER_RETURN_IF_ERROR(pipeline.Run(read, &checked));
  if (options.to_seq >= head_seq) {
    verifier.AdoptDeferred(checked);
    return verifier.CheckEnd(head_seq, head_chain);
  }
  return Status::OK();
}

Result<std::string> Ledger::Read(std::uint64_t seq) const {
  const Impl& d = *impl_;
  const fmt::SeqKey key = fmt::EncodeSeq(seq);
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  std::string value;
  const rocksdb::Status s = d.db->Get(ro, d.events(), ToSlice(key), &value);
  if (s.IsNotFound()) {
    return Err(
        Status::NotFound("seq " + std::to_string(seq) + ": no such record in " + d.dir));
  }
  if (!s.ok()) return Err(FromRocks(s, "seq " + std::to_string(seq) + ": reading"));
  std::vector<std::uint64_t> aligned;  // unused: a std::string's heap buffer is aligned
  std::span<const std::uint8_t> bytes;
  const schema::Envelope* env = nullptr;
  PATLEDGER_RETURN_ERR_IF_ERROR(
      internal::CheckStoredValue(seq, value, &aligned, &bytes, &env));
  value.resize(bytes.size());
  return value;
}

std::uint64_t Ledger::last_seq() const {
  std::lock_guard lock(impl_->mu);
  return impl_->last_seq;
}

ChainHash Ledger::head_chain() const {
  std::lock_guard lock(impl_->mu);
  return impl_->head_chain;
}

const std::string& Ledger::dir() const { return impl_->dir; }

Ledger::ReadMemory Ledger::read_memory() const {
  ReadMemory m;
  rocksdb::DB& db = *impl_->db;
  // The cache is shared by the column families: ask one for it, every one for tables.
  db.GetIntProperty(impl_->events(), rocksdb::DB::Properties::kBlockCacheCapacity,
                    &m.block_cache_capacity);
  db.GetIntProperty(impl_->events(), rocksdb::DB::Properties::kBlockCacheUsage,
                    &m.block_cache_usage);
  for (rocksdb::ColumnFamilyHandle* h : impl_->handles) {
    std::uint64_t readers = 0;
    if (db.GetIntProperty(h, rocksdb::DB::Properties::kEstimateTableReadersMem, &readers)) {
      m.table_readers += readers;
    }
  }
  return m;
}

Status Ledger::health() const {
  std::lock_guard lock(impl_->mu);
  return impl_->error;
}

}  // namespace patledger::ledger
