// ledger/ledger.h: the append-only, hash-chained event log on RocksDB — the only
// source of truth of patledger. The byte format is docs/ledger-format.md; its
// constants live in ledger/format.h.
//
// A Ledger is a RocksDB database with two column families:
//   "events": key = big-endian u64 sequence number (from 1, no gaps),
//             value = envelope bytes || XXH3_64(envelope bytes, seed 0) as 8 LE bytes.
//   "meta":   format version and the chain head (seq + chain hash), written in the
//             same atomic WriteBatch as the events they describe.
// chain(0) = 32 zero bytes; chain(n) = SHA-256(chain(n-1) || envelope bytes of n).
// Every envelope carries prev_chain = chain(n-1) in its Sequencing struct, which the
// ledger fills in at commit (writers leave Sequencing zero).
//
// Durability: Append returns only after the WriteBatch holding its events was written
// with WriteOptions::sync = true, and the new head (seq, chain hash) was appended to
// the head journal and synced (a file beside RocksDB's that every open checks the
// ledger against, so a WAL cut short after a crash is refused, not accepted). Concurrent Appends are group-committed: the first
// waiting caller (the leader) writes the events of every caller queued behind it in
// one synced write. If a write fails, the ledger enters a sticky error state: every
// later Append fails with the same error (nothing after a failed write is
// acknowledged); reads keep working.
//
// Listener: after a group is durable and before any of its callers is woken, the
// leader calls Listener::OnCommitted for each record in sequence order. So when
// Append returns, the listener (the in-memory state) has seen the caller's events,
// and listener calls are serialized: it has exactly one writer at a time.
//
// Thread safety: Append may be called from any number of threads. Scan and the
// accessors may run concurrently with Append. A read-only Ledger (Options::read_only)
// takes no lock on the directory, so tools may open the directory of a running
// server; it sees the log as of the moment it was opened.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "schema/event_codec.h"

namespace rocksdb {
class Env;
}

namespace patledger::ledger {

using ChainHash = std::array<std::uint8_t, 32>;


// One verified record, valid only during the callback it is passed to.
struct RecordView {
  std::uint64_t seq = 0;
  std::span<const std::uint8_t> envelope_bytes;  // exactly the checksummed bytes
  const schema::Envelope* envelope = nullptr;     // verified, points into envelope_bytes
  ChainHash chain{};                              // chain(seq), after this record
};

class Listener {
 public:
  virtual ~Listener() = default;
  // Called once per committed record, in sequence order, by one thread at a time.
  virtual void OnCommitted(const RecordView& record) = 0;
};

struct Options {
  bool create_if_missing = false;  // make an empty ledger if the directory has none
  bool error_if_exists = false;    // fail with kAlreadyExists if a ledger is there
  bool read_only = false;          // no lock, no writes; Append fails
  // Only for tests proving that the durability tests can fail (the sync=false
  // control run). A serving ledger always syncs.
  bool sync = true;
  // RocksDB environment, e.g. a fault-injecting one in tests; nullptr = default.
  rocksdb::Env* env = nullptr;
  Listener* listener = nullptr;  // not owned; must outlive the Ledger
  // Refuse to open a ledger that no longer reaches the last head in its head journal
  // (docs/ledger-format.md). false only for a tool that reports it itself
  // (forensics verify, with ReadHeadJournal).
  bool check_head_journal = true;
  // RocksDB's block cache: the data blocks reads bring in and the index partitions of
  // the tables (so the memory a long history costs stays bounded; docs/PERFORMANCE.md
  // §6). Scans never fill it.
  std::size_t block_cache_bytes = kDefaultBlockCacheBytes;
  static constexpr std::size_t kDefaultBlockCacheBytes = 8 << 20;
};

// The last head the head journal of `dir` recorded (docs/ledger-format.md): every
// acknowledged group's seq and chain hash, synced before it was acknowledged. `file`
// names the journal it came from (or PATLEDGER-CLOSED-HEAD, an earlier build's mark).
struct JournaledHead {
  std::uint64_t seq = 0;
  ChainHash chain{};
  std::string file;
};
// kNotFound if `dir` has no journal; kCorruption naming the file if a journal has no
// valid record. env: nullptr = the default.
Result<JournaledHead> ReadHeadJournal(const std::string& dir, rocksdb::Env* env = nullptr);

// How Scan treats a damaged record.
struct ScanOptions {
  std::uint64_t from_seq = 1;  // records before it are verified but not visited
  std::uint64_t to_seq = UINT64_MAX;
  // false: stop at the first damaged record and return its error.
  // true: report it to on_damage and keep going (verify/log tools); the chain is
  // re-synchronised from the next record's prev_chain; Scan then returns OK only if
  // nothing was damaged.
  bool keep_going = false;
  std::function<void(const Status&)> on_damage;
};

class Ledger {
 public:
  // Opens (or creates) the ledger in `dir`. Does not read the events; call Scan to
  // replay them. Corruption/IOError say what is wrong; a missing ledger is kNotFound.
  // A read-only open beside a running writer retries until it gets a stable view.
  static Result<std::unique_ptr<Ledger>> Open(const std::string& dir, const Options& options);
  ~Ledger();  // REQUIRES: no Append in progress.
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Visits every record from options.from_seq to the head in order, verifying each:
  // checksum, FlatBuffers Verifier, seq key == Sequencing.seq == expected (no gap),
  // the transaction position (whole transactions), prev_chain == chain so far; at
  // the end, that the last record's chain equals the chain head in "meta" and that
  // the last transaction is whole. Errors are kCorruption and begin "seq N: ". A
  // visitor error stops the scan and is returned as is. Records appended during a
  // Scan may or may not be visited.
  Status Scan(const ScanOptions& options,
              const std::function<Status(const RecordView&)>& visit) const;

  // Like Scan with keep_going false — the same checks, the same records visited in
  // the same order, the same result for any ledger and visitor — but on two threads:
  // a second thread reads each record and checks its position, size and checksum;
  // the calling thread runs the other checks (the second thread takes their order-
  // free part, the Verifier and each record's hash, while the calling thread lags)
  // and calls `visit` with runs of consecutive verified records (valid only during
  // the call), one call at a time. For replay, where reading and applying then
  // overlap. kInvalidArgument if options.keep_going.
  Status ScanBatches(const ScanOptions& options,
                     const std::function<Status(std::span<const RecordView>)>& visit) const;

  // Reads one record: verifies its checksum, the FlatBuffers Verifier and that it is
  // record `seq` (the chain is verified by Scan). Returns the envelope bytes.
  // kNotFound if there is no such record.
  // (Damage is kCorruption "seq N: ..."; the bytes are a fresh heap copy, so
  // schema::GetEnvelope(result->data()) reads aligned memory.)
  Result<std::string> Read(std::uint64_t seq) const;

  // Appends `envelopes` (built by schema/event_codec.h, Sequencing zero) as ONE
  // transaction: all become durable together or none do. Returns the sequence
  // number of the first; the rest follow contiguously. REQUIRES: 1..65535 envelopes.
  // kInvalidArgument if an envelope does not verify; kIOError if the write failed
  // (the ledger is then in the sticky error state); kFailedPrecondition if read-only.
  Result<std::uint64_t> Append(std::vector<std::string> envelopes);

  // The last committed sequence number (0 if empty) and chain(last_seq).
  std::uint64_t last_seq() const;
  ChainHash head_chain() const;
  const std::string& dir() const;
  // OK, or the sticky error that makes every Append fail.
  Status health() const;

  // What RocksDB holds in memory to read the ledger: the block cache (capacity and
  // current use, index partitions included) and the open tables' memory outside it.
  struct ReadMemory {
    std::uint64_t block_cache_capacity = 0;
    std::uint64_t block_cache_usage = 0;
    std::uint64_t table_readers = 0;
  };
  ReadMemory read_memory() const;

 private:
  struct Impl;
  explicit Ledger(std::unique_ptr<Impl> impl);
  // Checks the last head recorded in the head journal (ledger.cc), as read before
  // the database was opened: the ledger must still reach it.
  Status CheckHeadMark(const Result<JournaledHead>& mark) const;
  static Result<std::unique_ptr<Ledger>> OpenOnce(const std::string& dir,
                                                  const Options& options);
  std::unique_ptr<Impl> impl_;
};

// SHA-256(prev || envelope): the chain step, exposed for independent readers/tests.
ChainHash NextChain(const ChainHash& prev, std::span<const std::uint8_t> envelope);

}  // namespace patledger::ledger
