#include "ledger/scan_pipeline.h"

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <thread>

namespace patledger::ledger::internal {
namespace {

// A batch holds up to kBatchRecords records or kBatchBytes of copies (a record larger
// than that gets a batch of its own). With ~300-byte records a batch is ~150 KB, so
// the one being filled stays in the 2 MiB L2 of the reading core.
constexpr std::size_t kBatchRecords = 512;
constexpr std::size_t kBatchBytes = 256 << 10;
// Batches in existence: one filling, the rest queued or being consumed. The threads'
// speeds decide the throughput; the depth lets the reader run ahead (~40 ms of
// records) through the consumer's stalls — a fault on a fresh 2 MiB page costs ~7 ms
// on this VM — instead of stopping with it (16 batches: 1-2 s slower of ~20 at 10M
// tokens, docs/PERFORMANCE.md §3). At most 16 MiB, and only while a scan runs.
constexpr std::size_t kBatches = 64;
static_assert(kBatchBytes % sizeof(std::uint64_t) == 0 && kBatches >= 2,
              "one batch fills while another is consumed");

}  // namespace

ScanPipeline::ScanPipeline(std::uint64_t from_seq, const Visitor& visit)
    : from_seq_(from_seq), visit_(visit) {
  free_.reserve(kBatches);  // never grows: Consume's push_back cannot throw
  for (std::size_t i = 0; i < kBatches; ++i) {
    auto b = std::make_unique<Batch>();
    b->arena.resize(kBatchBytes / sizeof(std::uint64_t));
    b->records.reserve(kBatchRecords);
    free_.push_back(std::move(b));
  }
  filling_ = std::move(free_.back());
  free_.pop_back();
}

Status ScanPipeline::Run(const std::function<Status()>& read, DeferredChecker* checked) {
  std::thread reader([this, &read] {
    pthread_setname_np(pthread_self(), "ledger-read");  // for top, perf, gdb
    Read(read);
  });
  Consume();  // keeps the visitor's exceptions in exception_: never throws
  reader.join();
  if (exception_) std::rethrow_exception(exception_);
  if (!error_.ok()) return error_;
  if (read_exception_) std::rethrow_exception(read_exception_);
  *checked = checker_;
  return damage_;
}

void ScanPipeline::Read(const std::function<Status()>& read) {
  try {
    damage_ = read();
  } catch (...) {
    read_exception_ = std::current_exception();
  }
  {
    std::lock_guard lock(mu_);
    if (!filling_->records.empty()) full_.push_back(std::move(filling_));
    end_ = true;
  }
  work_.notify_one();
}

std::string_view ScanPipeline::Stage(std::string_view value) {
  const std::size_t size = (value.size() + 7) & ~std::size_t{7};
  Batch* b = filling_.get();
  if (b->records.size() == kBatchRecords ||
      (b->used + size > b->arena.size() * sizeof(std::uint64_t) && !b->records.empty())) {
    Hand(std::move(filling_));
    b = filling_.get();
  }
  if (b->used + size > b->arena.size() * sizeof(std::uint64_t)) {
    b->arena.resize(size / sizeof(std::uint64_t));  // empty: no view points into it
  }
  char* at = reinterpret_cast<char*>(b->arena.data()) + b->used;
  std::memcpy(at, value.data(), value.size());
  staged_at_ = b->used;
  staged_size_ = size;
  return {at, value.size()};
}

void ScanPipeline::Commit(const RecordView& view) {
  Batch* b = filling_.get();
  b->used = staged_at_ + staged_size_;
  b->records.push_back(view);
}

void ScanPipeline::Hand(std::unique_ptr<Batch> batch) {
  std::unique_lock lock(mu_);
  if (!batch->records.empty()) {
    full_.push_back(std::move(batch));
    queued_.store(full_.size(), std::memory_order_relaxed);
    work_.notify_one();
  } else {
    free_.push_back(std::move(batch));
  }
  room_.wait(lock, [&] { return !free_.empty(); });
  filling_ = std::move(free_.back());
  free_.pop_back();
}

void ScanPipeline::Consume() {
  bool failed = false;
  for (;;) {
    std::unique_ptr<Batch> batch;
    {
      std::unique_lock lock(mu_);
      work_.wait(lock, [&] { return end_ || !full_.empty(); });
      if (full_.empty()) return;  // end_
      batch = std::move(full_.front());
      full_.pop_front();
      queued_.store(full_.size(), std::memory_order_relaxed);
    }
    // After the first error nothing is checked or visited; the batches still go back
    // to the reader until it notices stopped().
    if (!failed) {
      try {
        error_ = ConsumeBatch(batch.get());  // error_: read by Finish after the join
      } catch (...) {
        exception_ = std::current_exception();
      }
      failed = !error_.ok() || exception_;
      if (failed) stopped_.store(true, std::memory_order_relaxed);  // a hint only
    }
    batch->records.clear();
    batch->used = 0;
    {
      std::lock_guard lock(mu_);
      free_.push_back(std::move(batch));
    }
    room_.notify_one();
  }
}

Status ScanPipeline::ConsumeBatch(Batch* batch) {
  std::span<RecordView> records(batch->records);
  std::size_t checked = 0;
  Status check_error;
  for (; checked < records.size(); ++checked) {
    check_error = checker_.Check(&records[checked]);
    if (!check_error.ok()) break;
  }
  // Records before from_seq are verified but not visited; seqs increase.
  const auto first = std::partition_point(
      records.begin(), records.begin() + checked,
      [&](const RecordView& r) { return r.seq < from_seq_; });
  if (first != records.begin() + checked) {
    PATLEDGER_RETURN_IF_ERROR(
        visit_(std::span<const RecordView>(&*first, records.begin() + checked - first)));
  }
  return check_error;
}

}  // namespace patledger::ledger::internal
