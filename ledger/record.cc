// OpenSSL 3 deprecates the low-level SHA256_Init/Update/Final; NextChain uses them
// because they cost ~40% less than an EVP context per record (REFERENCE.md §3).
#define OPENSSL_SUPPRESS_DEPRECATED
#include "ledger/record.h"

#include <openssl/sha.h>
#include <xxhash.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "ledger/format.h"

namespace patledger::ledger {

ChainHash NextChain(const ChainHash& prev, std::span<const std::uint8_t> envelope) {
  // Every record of every replay passes here: the low-level API (see the top).
  SHA256_CTX c;
  ChainHash out;
  SHA256_Init(&c);
  SHA256_Update(&c, prev.data(), prev.size());
  SHA256_Update(&c, envelope.data(), envelope.size());
  SHA256_Final(out.data(), &c);
  return out;
}

namespace internal {

std::uint64_t Checksum(std::span<const std::uint8_t> envelope) {
  return XXH3_64bits_withSeed(envelope.data(), envelope.size(), format::kChecksumSeed);
}

std::string Hex(std::span<const std::uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

namespace {

ChainHash StoredPrevChain(const schema::Envelope& env) {
  const auto* stored = env.sequencing()->prev_chain().bytes();
  ChainHash prev;
  for (std::size_t i = 0; i < prev.size(); ++i) prev[i] = stored->Get(i);
  return prev;
}

std::string Hex64(std::uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out = "0x0000000000000000";
  for (int i = 17; i >= 2; --i, v >>= 4) out[i] = kDigits[v & 15];
  return out;
}

}  // namespace

Status ChainChecker::CheckHashed(RecordView* view) {
  const std::uint64_t seq = view->seq;
  const ChainHash prev = StoredPrevChain(*view->envelope);
  if (known_ && prev != chain_) {
    known_ = false;
    return Status::Corruption("seq " + std::to_string(seq) + ": chain mismatch (prev_chain " +
                              Hex(prev) + ", but chain(" + std::to_string(seq - 1) +
                              ") is " + Hex(chain_) +
                              "; this record or the one before was altered)");
  }
  chain_ = view->chain;
  known_ = true;
  return Status::OK();
}

void RecordVerifier::Resync(std::uint64_t seq) {
  // The record after `seq` is judged on its own.
  expected_seq_ = seq + 1;
  checks_.Forget();
}

Status RecordVerifier::Damaged(std::uint64_t seq, std::string what) {
  Resync(seq);
  return Status::Corruption("seq " + std::to_string(seq) + ": " + what);
}

Status RecordVerifier::CheckPosition(std::uint64_t seq) {
  if (seq == expected_seq_) return Status::OK();
  const std::uint64_t expected = expected_seq_;
  Status s = Damaged(expected, "gap (expected " + std::to_string(expected) + " found " +
                                   std::to_string(seq) + ")");
  expected_seq_ = seq;
  return s;
}

Status RecordVerifier::MalformedKey(std::string_view key) {
  const std::uint64_t seq = expected_seq_;
  Status s = Damaged(seq, "malformed key of " + std::to_string(key.size()) + " bytes (" +
                              Hex(AsBytes(key)) + "), expected " +
                              std::to_string(format::kSeqKeySize));
  expected_seq_ = seq;  // the key was not a record: still waiting for `seq`
  return s;
}

Status CheckChecksum(std::uint64_t seq, std::string_view value,
                     std::vector<std::uint64_t>* aligned,
                     std::span<const std::uint8_t>* bytes_out) {
  // Built only on failure: every record of every replay passes here.
  const auto at = [seq] { return "seq " + std::to_string(seq) + ": "; };
  if (value.size() <= format::kChecksumSize) {
    return Status::Corruption(at() + "truncated value (" + std::to_string(value.size()) +
                              " bytes; a record is an envelope and an " +
                              std::to_string(format::kChecksumSize) + "-byte checksum)");
  }
  std::span<const std::uint8_t> bytes =
      AsBytes(value.substr(0, value.size() - format::kChecksumSize));
  const std::uint64_t stored = format::DecodeChecksum(value.data() + bytes.size());
  const std::uint64_t computed = Checksum(bytes);
  if (stored != computed) {
    return Status::Corruption(at() + "checksum mismatch (stored " + Hex64(stored) +
                              ", computed " + Hex64(computed) + ")");
  }
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(std::uint64_t) != 0) {
    aligned->resize((bytes.size() + 7) / 8);
    std::memcpy(aligned->data(), bytes.data(), bytes.size());
    bytes = {reinterpret_cast<const std::uint8_t*>(aligned->data()), bytes.size()};
  }
  *bytes_out = bytes;
  return Status::OK();
}

Status CheckEnvelope(std::uint64_t seq, std::span<const std::uint8_t> bytes,
                     const schema::Envelope** envelope) {
  const auto at = [seq] { return "seq " + std::to_string(seq) + ": "; };
  const schema::Envelope* env = nullptr;
  if (Status s = schema::VerifyEnvelope(bytes, &env); !s.ok()) {
    return Status::Corruption(at() + "envelope does not verify: " + s.message());
  }
  if (env->sequencing()->seq() != seq) {
    return Status::Corruption(at() + "key is seq " + std::to_string(seq) +
                              " but Sequencing.seq is " +
                              std::to_string(env->sequencing()->seq()));
  }
  *envelope = env;
  return Status::OK();
}

Status CheckStoredValue(std::uint64_t seq, std::string_view value,
                        std::vector<std::uint64_t>* aligned,
                        std::span<const std::uint8_t>* bytes_out,
                        const schema::Envelope** envelope) {
  std::span<const std::uint8_t> bytes;
  PATLEDGER_RETURN_IF_ERROR(CheckChecksum(seq, value, aligned, &bytes));
  PATLEDGER_RETURN_IF_ERROR(CheckEnvelope(seq, bytes, envelope));
  *bytes_out = bytes;
  return Status::OK();
}

Status TxnChecker::Check(std::uint64_t seq, const schema::Sequencing& sq) {
  const std::uint16_t index = sq.txn_index(), count = sq.txn_count();
  if (count == 0 || index >= count) {
    Forget();
    return Status::Corruption("seq " + std::to_string(seq) +
                              ": bad transaction position (txn_index " +
                              std::to_string(index) + ", txn_count " +
                              std::to_string(count) + ")");
  }
  if (prev_count_ != 0) {
    const bool prev_open = prev_index_ + 1 < prev_count_;
    const std::uint16_t want_index = prev_open ? prev_index_ + 1 : 0;
    if (index != want_index || (prev_open && count != prev_count_)) {
      std::string want = prev_open ? "txn_index " + std::to_string(want_index) + " of " +
                                         std::to_string(prev_count_)
                                   : "txn_index 0 (a new transaction)";
      Forget();
      return Status::Corruption("seq " + std::to_string(seq) +
                                ": transaction broken (expected " + want +
                                ", found txn_index " + std::to_string(index) + " of " +
                                std::to_string(count) + ")");
    }
  }
  prev_index_ = index;
  prev_count_ = count;
  return Status::OK();
}

std::string TxnChecker::Incomplete() const {
  if (prev_count_ == 0 || prev_index_ + 1 == prev_count_) return "";
  return "txn_index " + std::to_string(prev_index_) + " of " + std::to_string(prev_count_);
}

Status VerifyAndHash(RecordView* view) {
  const schema::Envelope* env = nullptr;
  PATLEDGER_RETURN_IF_ERROR(CheckEnvelope(view->seq, view->envelope_bytes, &env));
  view->envelope = env;
  view->chain = NextChain(StoredPrevChain(*env), view->envelope_bytes);
  return Status::OK();
}

Status DeferredChecker::Check(RecordView* view) {
  // Scan's order: the envelope's checks, the transaction, then the chain.
  if (view->envelope == nullptr) PATLEDGER_RETURN_IF_ERROR(VerifyAndHash(view));
  PATLEDGER_RETURN_IF_ERROR(txn_.Check(view->seq, *view->envelope->sequencing()));
  return chain_.CheckHashed(view);
}

Status RecordVerifier::CheckRecord(std::uint64_t seq, std::string_view value,
                                   RecordView* view) {
  if (chain_mode_ == Chain::kDeferred &&
      reinterpret_cast<std::uintptr_t>(value.data()) % alignof(std::uint64_t) != 0) {
    // The caller's bug (ScanPipeline::Stage aligns): the bytes would not outlive this
    // call.
    return Status::Internal("seq " + std::to_string(seq) +
                            ": a deferred check needs an 8-byte aligned value");
  }
  std::span<const std::uint8_t> bytes;
  if (Status s = CheckChecksum(seq, value, &aligned_, &bytes); !s.ok()) {
    Resync(seq);
    return s;
  }
  view->seq = seq;
  view->envelope_bytes = bytes;
  view->envelope = nullptr;  // checks_.Check fills it, here or in the caller
  if (chain_mode_ == Chain::kInline) {
    if (Status s = checks_.Check(view); !s.ok()) {
      Resync(seq);
      return s;
    }
  }
  expected_seq_ = seq + 1;
  return Status::OK();
}

Status RecordVerifier::CheckEnd(std::uint64_t head_seq,
                                const ChainHash& head_chain) const {
  const std::uint64_t last = expected_seq_ - 1;
  if (last < head_seq) {
    return Status::Corruption("seq " + std::to_string(expected_seq_) +
                              ": missing (the log ends at seq " + std::to_string(last) +
                              " but the head in meta is seq " + std::to_string(head_seq) +
                              ")");
  }
  const ChainChecker& chain = checks_.chain_;
  if (!chain.known()) return Status::OK();  // the last record was damaged: reported
  if (chain.chain() != head_chain) {
    return Status::Corruption("seq " + std::to_string(last) + ": chain(" +
                              std::to_string(last) + ") is " + Hex(chain.chain()) +
                              " but the head in meta says " + Hex(head_chain));
  }
  if (const std::string missing = checks_.txn_.Incomplete(); !missing.empty()) {
    return Status::Corruption("seq " + std::to_string(last) +
                              ": the last transaction is incomplete (" + missing + ")");
  }
  return Status::OK();
}

}  // namespace internal
}  // namespace patledger::ledger
