// ledger/scan_pipeline.h (internal to ledger/): the two threads of
// Ledger::ScanBatches.
//
// A reading thread (started here) stages each stored value into a batch (a copy,
// 8-byte aligned, that outlives RocksDB's iterator position), checks its position,
// size and checksum on the copy (RecordVerifier, Chain::kDeferred) and commits the
// records that pass. Full batches go through a bounded queue to the calling thread,
// which runs the DeferredChecker over each batch in order — the FlatBuffers verifier,
// the transaction position and the chain — and then calls the visitor with the
// records that passed. The reading thread carries RocksDB's iteration, which alone
// takes most of a core, so the checks that read the envelope sit with the visitor;
// while the consumer lags, the reader does their order-free part (the verifier and
// each record's own SHA-256) itself, so the two threads balance whichever is slower
// (docs/PERFORMANCE.md §3). The visitor runs on the
// caller's thread, so what it builds is allocated there (docs/PERFORMANCE.md §6: a
// second thread's malloc arena kept ~6 MB of a 10M-token replay's state); the reading
// thread's allocations are all transient.
//
// Errors: the consumer stops at its first error (a deferred check's, or the visitor's
// error, or an exception from the visitor, which Run rethrows once the reader has
// stopped). Every record it receives precedes any damage the reader found later, so
// its error is the one a serial scan would have returned first; Run returns it, and
// the reader's own damage only if the consumer had none.
//
// Thread safety: Stage, Commit and stopped are called by the reading function only
// (on the reading thread). The visitor runs on the thread that called Run, one call
// at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "ledger/ledger.h"
#include "ledger/record.h"

namespace patledger::ledger::internal {

class ScanPipeline {
 public:
  using Visitor = std::function<Status(std::span<const RecordView>)>;

  // Records below `from_seq` are chain-checked, not visited.
  ScanPipeline(std::uint64_t from_seq, const Visitor& visit);
  ScanPipeline(const ScanPipeline&) = delete;
  ScanPipeline& operator=(const ScanPipeline&) = delete;

  // Runs `read` on a new thread — it Stage()s and Commit()s every record, and returns
  // the damage it found (OK if none) — while this thread runs the deferred checks and
  // visits. Returns once both are done: the consumer's first error, else `read`'s; on
  // OK, leaves in *checked the DeferredChecker that checked every committed record.
  // Rethrows an exception from the visitor or from `read`. Call once.
  Status Run(const std::function<Status()>& read, DeferredChecker* checked);

  // For `read`: copies `value` into the current batch and returns the copy (8-byte
  // aligned, as FlatBuffers needs). It stays valid until the next Stage; once
  // Commit()ed, until the consumer is done with its batch.
  std::string_view Stage(std::string_view value);
  // For `read`: the record last staged passed the reader's checks; `view` (seq and
  // envelope_bytes) points into the copy.
  void Commit(const RecordView& view);
  // For `read`: true once the consumer has stopped with an error: reading further is
  // wasted.
  bool stopped() const { return stopped_.load(std::memory_order_relaxed); }
  // For `read`: true while the consumer lags (several full batches wait for it). The
  // reader then does the order-free part of the deferred checks itself
  // (VerifyAndHash), which slows it and speeds the consumer until they match.
  bool consumer_behind() const {
    return queued_.load(std::memory_order_relaxed) >= kBehindBatches;
  }

 private:
  static constexpr std::size_t kBehindBatches = 4;  // of 64 (scan_pipeline.cc)

  // Records of one hand-over: views into `arena` (never reallocated while it holds
  // committed records).
  struct Batch {
    std::vector<std::uint64_t> arena;  // uint64_t: 8-byte aligned
    std::size_t used = 0;              // bytes of arena in use
    std::vector<RecordView> records;
  };

  void Read(const std::function<Status()>& read);  // the reading thread
  void Consume();                      // the calling thread, until the reader ends
  Status ConsumeBatch(Batch* batch);   // deferred checks + visit
  void Hand(std::unique_ptr<Batch> batch);  // reader: to the queue; takes a free one

  const std::uint64_t from_seq_;
  const Visitor& visit_;
  DeferredChecker checker_;  // the consumer's

  std::unique_ptr<Batch> filling_;  // the reader's
  std::size_t staged_at_ = 0;       // offset of the last Stage()d copy in filling_
  std::size_t staged_size_ = 0;

  std::mutex mu_;
  std::condition_variable work_;    // consumer waits: a full batch, or the end
  std::condition_variable room_;    // reader waits: a free batch
  std::deque<std::unique_ptr<Batch>> full_;  // handed over, in order
  std::vector<std::unique_ptr<Batch>> free_;
  bool end_ = false;                // no more batches will come
  // The consumer's first error or the visitor's exception (the calling thread's).
  Status error_;
  std::exception_ptr exception_;
  // The reader's damage or exception: written by the reading thread, read after the
  // join.
  Status damage_;
  std::exception_ptr read_exception_;
  std::atomic<bool> stopped_{false};
  std::atomic<std::size_t> queued_{0};  // full_.size(), for consumer_behind (a hint)
};

}  // namespace patledger::ledger::internal
