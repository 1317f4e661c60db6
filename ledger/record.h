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
// "seq N: ..." otherwise. It is CheckChecksum, then CheckEnvelope.
Status CheckStoredValue(std::uint64_t seq, std::string_view value,
                        std::vector<std::uint64_t>* aligned,
                        std::span<const std::uint8_t>* bytes,
                        const schema::Envelope** envelope);
// The first half: the size and the checksum; *bytes as above.
Status CheckChecksum(std::uint64_t seq, std::string_view value,
                     std::vector<std::uint64_t>* aligned,
                     std::span<const std::uint8_t>* bytes);
// The second half, on checksummed `bytes` (8-byte aligned): the FlatBuffers verifier
// and Sequencing.seq.
Status CheckEnvelope(std::uint64_t seq, std::span<const std::uint8_t> bytes,
                     const schema::Envelope** envelope);

// The transaction position (docs/ledger-format.md): a record's txn_index continues
// the previous record's transaction, or starts a new one after a complete one.
class TxnChecker {
 public:
  // Checks the Sequencing of the record at `seq` against the previous record's; on
  // OK it becomes the previous. Corruption "seq N: ..." otherwise (then Forget()).
  Status Check(std::uint64_t seq, const schema::Sequencing& sequencing);
  // The next record's position will be trusted (after damage).
  void Forget() { prev_count_ = 0; }
  // "" if the last record checked ends its transaction (or nothing is known), else
  // what is missing, for CheckEnd.
  std::string Incomplete() const;

 private:
  std::uint16_t prev_index_ = 0;
  std::uint16_t prev_count_ = 1;  // 0 = unknown; 1 with index 0: before seq 1
};

// The chain part of the checks (docs/ledger-format.md, "The chain"): each record's
// prev_chain must equal the chain so far, which then becomes SHA-256(chain ||
// envelope). Records are given in sequence order from seq 1 (chain(0), 32 zero
// bytes), or after Forget() from any record, whose prev_chain is then trusted.
// Split from RecordVerifier so that the hashing, the costliest check, can run on
// another thread than the reading (Ledger::ScanBatches, with DeferredChecker), and
// the hash itself, which needs no other record, on either (VerifyAndHash).
class ChainChecker {
 public:
  // Checks *view (whose other checks passed, and whose view->chain already holds
  // SHA-256(its prev_chain || its envelope): VerifyAndHash) against the chain so far:
  // the comparison, which is the part that needs the records in order. On OK
  // view->chain is chain(view->seq) and the chain advances. Corruption "seq N: chain
  // mismatch (...)" otherwise, and the chain is then unknown.
  Status CheckHashed(RecordView* view);
  // The next record's prev_chain will be trusted (after damage).
  void Forget() { known_ = false; }
  bool known() const { return known_; }
  // chain(seq) of the last record checked, if known().
  const ChainHash& chain() const { return chain_; }

 private:
  ChainHash chain_{};
  bool known_ = true;
};

// The part of the deferred checks that needs no other record, on a checksummed
// *view (seq and envelope_bytes set): CheckEnvelope, then the record's own hash.
// On OK fills view->envelope and sets view->chain = SHA-256(prev_chain || envelope),
// which is chain(seq) if the chain holds up to it. Any thread.
Status VerifyAndHash(RecordView* view);

// The checks of a checksummed record that read its envelope, for records given in
// order: CheckEnvelope, the transaction position and the chain. A RecordVerifier
// runs them itself (Chain::kInline, Scan) or leaves them to its caller
// (Chain::kDeferred): Ledger::ScanBatches's applying thread, where the reading thread
// may have done the order-free part (VerifyAndHash) of some records already, to
// balance the two threads (docs/PERFORMANCE.md §3).
class DeferredChecker {
 public:
  // *view has seq and envelope_bytes (checksummed) set, and envelope either null or,
  // with chain, filled by VerifyAndHash; on OK fills envelope and chain. Corruption
  // "seq N: ..." otherwise (in Scan's order of checks whichever thread found it);
  // after it, nothing more may be checked.
  Status Check(RecordView* view);
  // The next record's transaction position and prev_chain will be trusted (after
  // damage).
  void Forget() {
    txn_.Forget();
    chain_.Forget();
  }

 private:
  friend class RecordVerifier;  // CheckEnd
  TxnChecker txn_;
  ChainChecker chain_;
};

// Checks the records of the "events" column family in key order, starting from
// seq 1 with chain(0). For each record the caller first calls CheckPosition with
// its seq, then CheckRecord with its value. Every error is kCorruption and begins
// "seq N: ". After an error the verifier re-synchronises, so a caller may carry on
// (ScanOptions::keep_going): the next record's seq is taken as found, and the next
// intact record's prev_chain and transaction position are trusted.
class RecordVerifier {
 public:
  // kInline: CheckRecord runs every check (Scan). kDeferred: CheckRecord checks only
  // the size and the checksum and fills view->seq and view->envelope_bytes; the caller
  // runs a DeferredChecker over the records it accepted, in order, and gives it to
  // AdoptDeferred before CheckEnd (ScanBatches). In that mode `value` must be 8-byte
  // aligned (the bytes are not copied) and a verifier stops at its first error.
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

  // Chain::kDeferred: takes the state of the DeferredChecker that checked every record
  // this verifier accepted.
  void AdoptDeferred(const DeferredChecker& checked) { checks_ = checked; }

 private:
  void Resync(std::uint64_t seq);
  Status Damaged(std::uint64_t seq, std::string what);

  const Chain chain_mode_;
  std::uint64_t expected_seq_ = 1;
  // The transaction position and chain(expected_seq_ - 1), if known (after damage,
  // not until the next intact record). With Chain::kDeferred, only after
  // AdoptDeferred.
  DeferredChecker checks_;
  std::vector<std::uint64_t> aligned_;  // see CheckStoredValue
};

}  // namespace patledger::ledger::internal
