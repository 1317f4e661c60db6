// ledger/scan_pipeline.h (internal to ledger/): the second thread of
// Ledger::ScanBatches.
//
// The reading thread stages each stored value into a batch (a copy, 8-byte aligned,
// that outlives RocksDB's iterator position), runs every check but the chain on the
// copy (RecordVerifier, Chain::kDeferred) and commits the records that pass. Full
// batches go through a bounded queue to one consumer thread, which runs the
// ChainChecker over each batch in order and then calls the visitor with the records
// whose chain matched. The chain is the only check that needs the records strictly
// in order and it hashes every byte, so it sits with the visitor: the two threads
// then carry comparable work (docs/PERFORMANCE.md, replay).
//
// Errors: the consumer stops at its first error (a chain mismatch, or the visitor's
// error, or an exception from the visitor, which Finish rethrows). Every record it
// receives precedes any damage the reader found later, so its error is the one a
// serial scan would have returned first; Finish returns it, and the reader's own
// damage only if the consumer had none.
//
// Thread safety: Stage, Commit, stopped and Finish are called by the reading thread
// only. The visitor runs on the consumer thread, one call at a time; Finish returns
// after its last call (so what it wrote is visible to the reader afterwards).
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
#include <thread>
#include <vector>

#include "common/status.h"
#include "ledger/ledger.h"
#include "ledger/record.h"

namespace patledger::ledger::internal {

class ScanPipeline {
 public:
  using Visitor = std::function<Status(std::span<const RecordView>)>;

  // Starts the consumer. Records below `from_seq` are chain-checked, not visited.
  ScanPipeline(std::uint64_t from_seq, const Visitor& visit);
  ~ScanPipeline();  // Finish()es if the reader did not.
  ScanPipeline(const ScanPipeline&) = delete;
  ScanPipeline& operator=(const ScanPipeline&) = delete;

  // Copies `value` into the current batch and returns the copy (8-byte aligned, as
  // FlatBuffers needs). It stays valid until the next Stage; once Commit()ed, until
  // the consumer is done with its batch.
  std::string_view Stage(std::string_view value);
  // The record last staged passed the reader's checks; `view` points into the copy.
  void Commit(const RecordView& view);
  // True once the consumer has stopped with an error: reading further is wasted.
  bool stopped() const { return stopped_.load(std::memory_order_relaxed); }
  // No more records: hands over the last batch, waits for the consumer to finish and
  // joins it. Returns its first error (OK if none) and, on OK, leaves in *chain the
  // ChainChecker that checked every committed record. Rethrows a visitor exception.
  Status Finish(ChainChecker* chain);

 private:
  // Records of one hand-over: views into `arena` (never reallocated while it holds
  // committed records).
  struct Batch {
    std::vector<std::uint64_t> arena;  // uint64_t: 8-byte aligned
    std::size_t used = 0;              // bytes of arena in use
    std::vector<RecordView> records;
  };

  void Consume();                      // the consumer thread
  Status ConsumeBatch(Batch* batch);   // chain + visit, on the consumer thread
  void Hand(std::unique_ptr<Batch> batch);  // reader: to the queue; takes a free one

  const std::uint64_t from_seq_;
  const Visitor& visit_;
  ChainChecker chain_;  // the consumer's; read by Finish after the join

  std::unique_ptr<Batch> filling_;  // the reader's
  std::size_t staged_at_ = 0;       // offset of the last Stage()d copy in filling_
  std::size_t staged_size_ = 0;

  std::mutex mu_;
  std::condition_variable work_;    // consumer waits: a full batch, or the end
  std::condition_variable room_;    // reader waits: a free batch
  std::deque<std::unique_ptr<Batch>> full_;  // handed over, in order
  std::vector<std::unique_ptr<Batch>> free_;
  bool end_ = false;                // no more batches will come
  // The consumer's first error or the visitor's exception: written by the consumer,
  // read by Finish after the join.
  Status error_;
  std::exception_ptr exception_;
  std::atomic<bool> stopped_{false};
  bool finished_ = false;           // reader: Finish ran
  std::thread consumer_;            // last: started after everything above exists
};

}  // namespace patledger::ledger::internal
