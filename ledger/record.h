// ledger/record.h (internal to ledger/): the checksum of a stored record and the
// stateful check of consecutive records that Ledger::Scan runs. Nothing here knows
// about RocksDB; the format is docs/ledger-format.md.
//
// Thread safety: Checksum and Hex are pure; a RecordVerifier is used by one thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "ledger/ledger.h"

namespace patledger::ledger::internal {

// XXH3_64bits_withSeed(envelope, size, format::kChecksumSeed).
std::uint64_t Checksum(std::span<const std::uint8_t> envelope);

// Lower-case hex of `bytes`.
std::string Hex(std::span<const std::uint8_t> bytes);

inline std::span<const std::uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// Checks one stored value on its own, as the record at `seq`: its size, checksum,
// FlatBuffers verifier and Sequencing.seq. On OK, *envelope and *bytes describe the
// envelope (in `value`, or copied into *aligned when `value` is not 8-byte aligned:
// FlatBuffers reads scalars in place and Sequencing is 8-aligned). Corruption
// "seq N: ..." otherwise.
Status CheckStoredValue(std::uint64_t seq, std::string_view value,
                        std::vector<std::uint64_t>* aligned,
                        std::span<const std::uint8_t>* bytes,
                        const schema::Envelope** envelope);

// The chain part of the checks (docs/ledger-format.md, "The chain"): each record's
// prev_chain must equal the chain so far, which then becomes SHA-256(chain ||
// envelope). Records are given in sequence order from seq 1 (chain(0), 32 zero
// bytes), or after Forget() from any record, whose prev_chain is then trusted.
// Split from RecordVerifier so that the hashing, the costliest check, can run on
// another thread than the rest (Ledger::ScanBatches).
class ChainChecker {
 public:
  // Checks *view (whose other checks passed) against the chain so far; on OK sets
  // view->chain = chain(view->seq) and advances. Corruption "seq N: chain mismatch
  // (...)" otherwise, and the chain is then unknown.
  Status Check(RecordView* view);
  // The next record's prev_chain will be trusted (after damage).
  void Forget() { known_ = false; }
  bool known() const { return known_; }
  // chain(seq) of the last record checked, if known().
  const ChainHash& chain() const { return chain_; }

 private:
  ChainHash chain_{};
  bool known_ = true;
};

// Checks the records of the "events" column family in key order, starting from
// seq 1 with chain(0). For each record the caller first calls CheckPosition with
// its seq, then CheckRecord with its value. Every error is kCorruption and begins
// "seq N: ". After an error the verifier re-synchronises, so a caller may carry on
// (ScanOptions::keep_going): the next record's seq is taken as found, and the next
// intact record's prev_chain and transaction position are trusted.
class RecordVerifier {
 public:
  // kInline: CheckRecord also runs the ChainChecker (Scan). kDeferred: it does not;
  // the caller runs a ChainChecker over the records it accepted, in order, and gives
  // its result to AdoptChain before CheckEnd (ScanBatches). view->chain is then
  // filled in by that ChainChecker.
  enum class Chain { kInline, kDeferred };
  explicit RecordVerifier(Chain chain = Chain::kInline) : chain_mode_(chain) {}
  RecordVerifier(const RecordVerifier&) = delete;
  RecordVerifier& operator=(const RecordVerifier&) = delete;

  // The seq the next record should have.
  std::uint64_t expected_seq() const { return expected_seq_; }

  // A gap: `seq` is not expected_seq(). Afterwards expected_seq() == seq.
  Status CheckPosition(std::uint64_t seq);

  // A key that is not kSeqKeySize bytes. The record is skipped.
  Status MalformedKey(std::string_view key);

  // Checks the value stored under `seq` (== expected_seq()): CheckStoredValue, then
  // the transaction position and prev_chain. On OK
  // fills *view (valid until the next call) and advances. On error, skips the record.
  Status CheckRecord(std::uint64_t seq, std::string_view value, RecordView* view);

  // After the last record up to the head: the log must end at head_seq with
  // chain(head_seq) == head_chain and a complete last transaction.
  Status CheckEnd(std::uint64_t head_seq, const ChainHash& head_chain) const;

  // Chain::kDeferred: takes the state of the ChainChecker that checked every record
  // this verifier accepted.
  void AdoptChain(const ChainChecker& checked) { chain_ = checked; }

 private:
  void Resync(std::uint64_t seq);
  Status Damaged(std::uint64_t seq, std::string what);

  const Chain chain_mode_;
  std::uint64_t expected_seq_ = 1;
  // chain(expected_seq_ - 1), if known (after damage, not until the next intact
  // record). With Chain::kDeferred, only after AdoptChain.
  ChainChecker chain_;
  // Sequencing of the previous intact record (txn_count 0 = unknown).
  std::uint16_t prev_txn_index_ = 0;
  std::uint16_t prev_txn_count_ = 1;
  std::vector<std::uint64_t> aligned_;  // see CheckStoredValue
};

}  // namespace patledger::ledger::internal
