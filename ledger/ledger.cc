// The ledger on RocksDB: opening and checking "meta", group-committed Append, and
// Scan. The per-record checks live in ledger/record.cc; the format is
// docs/ledger-format.md.
//
// Group commit follows LevelDB's DBImpl::Write: every Append queues a Writer in
// `writers_`; the writer at the front is the leader. The leader takes the writers
// queued behind it (whole transactions, up to kMaxGroupRecords/kMaxGroupBytes),
// releases the mutex, patches and chains their envelopes, writes one WriteBatch
// (the events plus the new head in "meta"), calls the listener, and then, under the
// mutex again, publishes the new head, completes the group and wakes the next leader.
//
// Invariants (mu guards everything below it in Impl):
//   1. Only the leader (the front writer) reads or writes the envelopes of queued
//      writers, and it is the only thread that writes to RocksDB or calls the listener.
//   2. last_seq/head_chain describe what is durable in RocksDB: they change only
//      after a successful write, and only the leader changes them.
//   3. Once `error` is set it never clears; every queued and later Append fails with it.

#include "ledger/ledger.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "ledger/format.h"
#include "ledger/record.h"
#include "ledger/scan_pipeline.h"

namespace patledger::ledger {
namespace {

namespace fmt = format;
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

// The closed-head mark (docs/ledger-format.md): at every clean close a writer records
// the seq and chain hash of its last record in a small file beside RocksDB's, synced,
// after flushing the memtables. Every later open checks that the ledger still reaches
// that record with that chain hash: records lost to damage that RocksDB's recovery
// accepts without an error (a truncated WAL or MANIFEST cut at a record boundary) are
// then refused, not silently dropped (docs/RELIABILITY.md, F1). The mark is a lower
// bound: records appended after the last clean close are not covered by it.
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

// Writes the mark as a new file and renames it into place (env: the tests' simulated
// disks see it like any other file).
Status WriteClosedHead(rocksdb::Env* env, const std::string& dir, std::uint64_t seq,
                       const ChainHash& chain) {
  const std::string path = dir + "/" + std::string(kClosedHeadFile);
  const std::string partial = path + ".partial";
  rocksdb::Status s = rocksdb::WriteStringToFile(env, ClosedHeadText(seq, chain), partial,
                                                 /*should_sync=*/true);
  if (s.ok()) s = env->RenameFile(partial, path);
  std::unique_ptr<rocksdb::Directory> d;
  if (s.ok()) s = env->NewDirectory(dir, &d);
  if (s.ok()) s = d->Fsync();
  if (!s.ok()) return FromRocks(s, "writing " + path);
  return Status::OK();
}

// The mark, if there is one: {seq, chain}; NotFound if there is none; Corruption
// naming the file if it is damaged.
Result<std::pair<std::uint64_t, ChainHash>> ReadClosedHead(rocksdb::Env* env,
                                                           const std::string& dir) {
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
  ChainHash chain{};
  for (std::size_t i = 0; i < chain.size(); ++i) {
    unsigned byte = 0;
    if (std::sscanf(chain_hex + 2 * i, "%2x", &byte) != 1) return damaged();
    chain[i] = static_cast<std::uint8_t>(byte);
  }
  if (ClosedHeadText(seq, chain) != text) return damaged();
  return std::pair{static_cast<std::uint64_t>(seq), chain};
}

}  // namespace

struct Ledger::Impl {
  Impl(std::string d, const Options& o) : dir(std::move(d)), options(o) {}
  ~Impl() {
    if (db == nullptr) return;
    // At a clean close the memtables go to SST files, so the WAL is empty at rest:
    // every acknowledged event then sits in a checksummed file that the MANIFEST
    // tracks, and damage to the WAL of a stopped ledger (a truncation, which
    // tail-tolerant WAL recovery cannot tell from a torn write) loses nothing
    // (docs/RELIABILITY.md, F1). After a failed write nothing more is written.
    if (!options.read_only && error.ok() && !handles.empty()) {
      rocksdb::FlushOptions flush;
      flush.wait = true;
      // On failure the WAL still holds it all, and the old mark is still a lower bound.
      if (db->Flush(flush, handles).ok()) {
        rocksdb::Env* env =
            options.env != nullptr ? options.env : rocksdb::Env::Default();
        (void)WriteClosedHead(env, dir, last_seq, head_chain);
      }
    }
    for (rocksdb::ColumnFamilyHandle* h : handles)
      db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db->Close().PermitUncheckedError();  // a failed close loses nothing acknowledged
  }

  rocksdb::ColumnFamilyHandle* events() const { return handles[kEventsCf]; }
  rocksdb::ColumnFamilyHandle* meta() const { return handles[kMetaCf]; }

  Result<std::pair<std::uint64_t, ChainHash>> ReadHead(
      const rocksdb::ReadOptions& ro) const;
  Status LoadMeta();
  std::vector<Writer*> TakeGroup();  // REQUIRES: mu held, writers non-empty

  const std::string dir;
  const Options options;
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
};

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
  rocksdb::Env* env = options.env != nullptr ? options.env : rocksdb::Env::Default();
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
  rocksdb::Env* env = options.env != nullptr ? options.env : rocksdb::Env::Default();
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

  rocksdb::DBOptions db_options;
  db_options.env = env;
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

  const std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, cf_options},
      {std::string(fmt::kEventsColumnFamily), cf_options},
      {std::string(fmt::kMetaColumnFamily), cf_options},
  };
  // Read before the database: a writer beside a read-only open may close (and write a
  // newer mark) after this open took its view; the mark read first is never ahead.
  const auto mark = ReadClosedHead(env, dir);
  auto impl = std::make_unique<Impl>(dir, options);
  rocksdb::DB* db = nullptr;
  const rocksdb::Status s =
      options.read_only
          ? rocksdb::DB::OpenForReadOnly(db_options, dir, cfs, &impl->handles, &db)
          : rocksdb::DB::Open(db_options, dir, cfs, &impl->handles, &db);
  if (!s.ok()) return Err(FromRocks(s, "cannot open the ledger in " + dir));
  impl->db.reset(db);
  if (Status st = impl->LoadMeta(); !st.ok()) {
    return Err(st.WithContext("ledger in " + dir));
  }
  auto ledger = std::unique_ptr<Ledger>(new Ledger(std::move(impl)));
  if (Status st = ledger->CheckClosedHead(mark); !st.ok()) {
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
  return ledger;
}

Status Ledger::CheckClosedHead(
    const Result<std::pair<std::uint64_t, ChainHash>>& mark) const {
  if (!mark) {
    return mark.error().code() == Status::Code::kNotFound ? Status::OK() : mark.error();
  }
  const auto [seq, chain] = *mark;
  const std::uint64_t last = impl_->last_seq;
  if (seq > last) {
    return Status::Corruption("the ledger ends at seq " + std::to_string(last) +
                              " but was closed at seq " + std::to_string(seq) + " (" +
                              std::string(kClosedHeadFile) + "): records seq " +
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
  if (found != chain) {
    return Status::Corruption("the chain hash at seq " + std::to_string(seq) +
                              " differs from the one recorded at the last clean close (" +
                              std::string(kClosedHeadFile) + "): the history up to seq " +
                              std::to_string(seq) + " is not the one that was closed");
  }
  return Status::OK();
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
  w.cv.wait(lock, [&] { return w.done || d.writers.front() == &w; });
  if (w.done) {
    if (!w.status.ok()) return Err(w.status);
    return w.first_seq;
  }

  // This thread leads a group.
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
  for (Writer* g : group) {
    d.writers.pop_front();  // == g
    if (g == &w) continue;
    g->status = d.error;
    g->done = true;
    g->cv.notify_one();  // under mu: g cannot return (and destroy cv) before we unlock
  }
  if (!d.error.ok()) {
    for (Writer* q : d.writers) {
      q->status = d.error;
      q->done = true;
      q->cv.notify_one();
    }
    d.writers.clear();
    return Err(d.error);
  }
  if (!d.writers.empty()) d.writers.front()->cv.notify_one();
  return w.first_seq;
}

Status Ledger::Scan(const ScanOptions& options,
                    const std::function<Status(const RecordView&)>& visit) const {
  const Impl& d = *impl_;
  const SnapshotHolder snapshot(d.db.get());
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.fill_cache = false;  // a full scan must not evict the working set
  ro.snapshot = snapshot.get();
  auto head = d.ReadHead(ro);
  if (!head) return head.error();
  const auto [head_seq, head_chain] = *head;

  fmt::SeqKey upper_key{};
  rocksdb::Slice upper;
  if (options.to_seq != UINT64_MAX) {
    upper_key = fmt::EncodeSeq(options.to_seq + 1);
    upper = ToSlice(upper_key);
    ro.iterate_upper_bound = &upper;
  }

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
  const SnapshotHolder snapshot(d.db.get());
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.fill_cache = false;  // a full scan must not evict the working set
  ro.snapshot = snapshot.get();
  auto head = d.ReadHead(ro);
  if (!head) return head.error();
  const auto [head_seq, head_chain] = *head;

  fmt::SeqKey upper_key{};
  rocksdb::Slice upper;
  if (options.to_seq != UINT64_MAX) {
    upper_key = fmt::EncodeSeq(options.to_seq + 1);
    upper = ToSlice(upper_key);
    ro.iterate_upper_bound = &upper;
  }

  // The checks are Scan's, in the same order; the chain runs in `pipeline`.
  internal::RecordVerifier verifier(internal::RecordVerifier::Chain::kDeferred);
  internal::ScanPipeline pipeline(options.from_seq, visit);
  const Status damage = [&]() -> Status {
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
      pipeline.Commit(view);
    }
    if (pipeline.stopped()) return Status::OK();  // Finish returns why
    if (!it->status().ok()) {
      return FromRocks(it->status(), "seq " + std::to_string(verifier.expected_seq()) +
                                         ": reading events");
    }
    return Status::OK();
  }();
  // The pipeline's error concerns a record before any the reader found damaged.
  internal::ChainChecker chain;
  PATLEDGER_RETURN_IF_ERROR(pipeline.Finish(&chain));
  PATLEDGER_RETURN_IF_ERROR(damage);
  if (options.to_seq >= head_seq) {
    verifier.AdoptChain(chain);
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

Status Ledger::health() const {
  std::lock_guard lock(impl_->mu);
  return impl_->error;
}

}  // namespace patledger::ledger
