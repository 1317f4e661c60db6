// fuzz/event_decode_fuzz.cc: event decoding and record verification (schema/, ledger/
// record.h) and the replay of verified records into a State (replay/).
//
// Input: a sequence of chunks, each
//
//   u8 flags | u16 length, little-endian | `length` bytes
//
// (a last chunk cut short takes what is left). Each chunk is one stored value, offered
// to a ledger::internal::RecordVerifier as the next record, exactly as Ledger::Scan
// does; every record that verifies is applied to a replay::State, as Replay does.
//   flags & kFixUp           the bytes are an envelope: if it verifies, the harness
//                            stamps Sequencing.seq and prev_chain as Ledger::Append
//                            would (and txn_count 1 if it is 0, as the codec leaves
//                            it), so a mutated envelope still reaches the chain and
//                            replay checks, and appends its checksum.
//   flags & kAddChecksum     (without kFixUp) append the right checksum to the bytes;
//                            otherwise the last 8 bytes are the stored checksum.
//   flags & kGap             the record claims a sequence number after a gap.
//   flags & kMalformedKey    a malformed key is reported before the record.
// Before the chunks, the whole input is also given to schema::VerifyEnvelope.
//
// Invariants checked beyond "no crash": a record the verifier accepts has a verified
// envelope whose every field can be read (ASan checks the reads), and its chain is
// SHA-256(prev_chain || envelope).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "ledger/format.h"
#include "ledger/ledger.h"
#include "ledger/record.h"
#include "replay/state.h"
#include "schema/event_codec.h"

namespace {

using namespace patledger;
namespace fmt = ledger::format;

constexpr std::uint8_t kFixUp = 1;
constexpr std::uint8_t kAddChecksum = 2;
constexpr std::uint8_t kGap = 4;
constexpr std::uint8_t kMalformedKey = 8;
constexpr std::size_t kMaxChunks = 64;

volatile std::uint64_t g_sink;  // keeps the reads below from being optimised away

void Touch(const flatbuffers::String* s) {
  if (s == nullptr) return;
  std::uint64_t h = s->size();
  for (char c : s->string_view()) h = h * 31 + static_cast<unsigned char>(c);
  g_sink = g_sink + h;
}

// Reads every field of a verified envelope, as replay, the views and the tools do.
void TouchEnvelope(const schema::Envelope& env) {
  std::uint64_t h = static_cast<std::uint64_t>(env.recorded_at_us());
  const schema::Sequencing* sq = env.sequencing();
  h += sq->seq() + sq->txn_index() + sq->txn_count() + schema::ToDigest(sq->prev_chain())[31];
  const schema::Actor* actor = env.actor();
  h += actor->user_id() + actor->token_id() + actor->via_sudo();
  Touch(env.client_address());
  Touch(env.request_id());
  h += schema::EventTypeName(env.event_type()).size();
  switch (env.event_type()) {
    case schema::Event::LedgerInitialized: {
      const auto* e = env.event_as_LedgerInitialized();
      h += e->format_version() + e->key_fingerprint();
      Touch(e->token_prefix());
      break;
    }
    case schema::Event::UserRegistered: {
      const auto* e = env.event_as_UserRegistered();
      h += e->user_id() + e->admin();
      Touch(e->username());
      Touch(e->name());
      Touch(e->email());
      break;
    }
    case schema::Event::UserChanged: {
      const auto* e = env.event_as_UserChanged();
      h += e->user_id() + schema::UserChangeName(e->change()).size();
      break;
    }
    case schema::Event::TokenCreated: {
      const auto* e = env.event_as_TokenCreated();
      h += e->token_id() + e->user_id() + e->scopes() + e->rotated_from() +
           static_cast<std::uint32_t>(e->expires_day()) + schema::ToDigest(*e->digest())[0];
      Touch(e->name());
      Touch(e->description());
      break;
    }
    case schema::Event::TokenRevoked: {
      const auto* e = env.event_as_TokenRevoked();
      h += e->token_id() + schema::RevokeReasonName(e->reason()).size();
      break;
    }
    default:
      patledger::fuzz::Die("VerifyEnvelope accepted an unknown event type");
  }
  g_sink = g_sink + h;
}

// `bytes` copied into 8-byte-aligned storage (FlatBuffers reads scalars in place).
std::span<const std::uint8_t> Aligned(std::span<const std::uint8_t> bytes,
                                      std::vector<std::uint64_t>* storage) {
  storage->assign((bytes.size() + 7) / 8, 0);
  if (!bytes.empty()) std::memcpy(storage->data(), bytes.data(), bytes.size());
  return {reinterpret_cast<const std::uint8_t*>(storage->data()), bytes.size()};
}

void AppendChecksum(std::string* value, std::size_t envelope_size) {
  const auto sum = fmt::EncodeChecksum(ledger::internal::Checksum(
      {reinterpret_cast<const std::uint8_t*>(value->data()), envelope_size}));
  value->append(sum.data(), sum.size());
}

// Reads what the State now holds, as the service and the tools do.
void TouchState(const replay::State& state) {
  std::uint64_t h = state.user_count() + state.token_count() + state.max_user_id() +
                    state.max_token_id() + state.MemoryBytes() + state.last_seq() +
                    state.key_fingerprint() + state.token_prefix().size() +
                    static_cast<std::uint64_t>(state.last_recorded_at_us());
  for (const replay::UserRecord& u : state.Users()) {
    h += u.id + state.TokensOfUser(u.id).size() + state.user_flags().Get(u.id);
    if (!state.FindUserByName(u.username)) patledger::fuzz::Die("user lost by name");
  }
  state.ForEachToken([&](const replay::TokenMeta& t) {
    h += state.Family(t.id).size();
    index::TokenEntry entry;
    if (!state.token_index().Lookup(t.digest, &entry) || entry.token_id != t.id) {
      patledger::fuzz::Die("a replayed token is missing from the index");
    }
  });
  g_sink = g_sink + h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::uint64_t> storage;
  {
    const schema::Envelope* env = nullptr;
    if (schema::VerifyEnvelope(Aligned({data, size}, &storage), &env).ok()) {
      TouchEnvelope(*env);
    }
  }

  ledger::internal::RecordVerifier verifier;
  std::optional<replay::State> state;  // made on the first verified record (it is big)
  ledger::ChainHash chain{};  // chain(last verified record), for kFixUp
  std::uint64_t last_seq = 0;
  std::size_t pos = 0;
  for (std::size_t chunk = 0; chunk < kMaxChunks && pos < size; ++chunk) {
    const std::uint8_t flags = data[pos++];
    std::size_t length = 0;
    if (pos + 2 <= size) length = data[pos] | (std::size_t{data[pos + 1]} << 8);
    pos = std::min(pos + 2, size);
    length = std::min(length, size - pos);
    std::string value(reinterpret_cast<const char*>(data + pos), length);
    pos += length;

    std::uint64_t seq = verifier.expected_seq();
    if (flags & kMalformedKey) {
      const std::string key = value.substr(0, value.size() % fmt::kSeqKeySize);
      if (verifier.MalformedKey(key).ok()) patledger::fuzz::Die("malformed key accepted");
    }
    if (flags & kGap) seq += 1 + length % 3;
    if (flags & kFixUp) {
      const schema::Envelope* env = nullptr;
      if (schema::VerifyEnvelope(ledger::internal::AsBytes(value), &env).ok()) {
        schema::Sequencing* sq = schema::GetMutableEnvelope(value.data())->mutable_sequencing();
        sq->mutate_seq(seq);
        if (sq->txn_count() == 0) sq->mutate_txn_count(1);  // as built: one of one
        for (std::size_t j = 0; j < chain.size(); ++j) {
          sq->mutable_prev_chain().mutable_bytes()->Mutate(j, chain[j]);
        }
      }
      AppendChecksum(&value, value.size());
    } else if (flags & kAddChecksum) {
      AppendChecksum(&value, value.size());
    }

    const bool expected = seq == verifier.expected_seq();
    if (verifier.CheckPosition(seq).ok() != expected) {
      patledger::fuzz::Die("CheckPosition disagrees with expected_seq()");
    }
    ledger::RecordView view;
    const Status s = verifier.CheckRecord(seq, value, &view);
    if (!s.ok()) {
      if (!s.IsCorruption() || !s.message().starts_with("seq ")) {
        patledger::fuzz::Die("verifier error is not 'Corruption: seq N: ...': " +
                             std::string(CodeName(s.code())));
      }
      continue;
    }
    if (view.seq != seq || view.envelope == nullptr ||
        view.envelope_bytes.size() + fmt::kChecksumSize != value.size()) {
      patledger::fuzz::Die("verified record view is inconsistent");
    }
    TouchEnvelope(*view.envelope);
    ledger::ChainHash prev;
    for (std::size_t j = 0; j < prev.size(); ++j) {
      prev[j] = view.envelope->sequencing()->prev_chain().bytes()->Get(j);
    }
    if (ledger::NextChain(prev, view.envelope_bytes) != view.chain) {
      patledger::fuzz::Die("view.chain is not SHA-256(prev_chain || envelope)");
    }
    chain = view.chain;
    last_seq = seq;
    if (!state) state.emplace();
    (void)state->Apply(view);  // a refusal is an answer, not a failure
  }
  (void)verifier.CheckEnd(last_seq, chain);
  if (state) TouchState(*state);
  return 0;
}
