// Building and checking ledger event envelopes (schema/events.fbs).
//
// Writers (the service) build a complete Envelope here, with its Sequencing
// struct left zero; the ledger fills Sequencing in place when it commits the
// record (see ledger/ledger.h). Readers call VerifyEnvelope before touching
// any field: it runs the FlatBuffers Verifier with tight limits and checks the
// invariants the schema cannot express.
//
// Thread safety: all functions are pure.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"
#include "schema/events_generated.h"

namespace patledger::schema {

using Digest = std::array<std::uint8_t, 32>;

// Who did it, when, from where. Copied into the envelope of every event of one
// request.
struct EventContext {
  std::int64_t recorded_at_us = 0;
  std::uint64_t actor_user_id = 0;
  std::uint64_t actor_token_id = 0;
  bool via_sudo = false;
  std::string client_address;  // "" when unknown
  std::string request_id;      // "" when unknown
};

struct TokenCreatedFields {
  std::uint64_t token_id = 0;
  std::uint64_t user_id = 0;
  std::string_view name;
  std::string_view description;
  std::uint32_t scopes = 0;
  std::int32_t expires_day = INT32_MAX;  // INT32_MAX: no expiry
  Digest digest{};
  std::uint64_t rotated_from = 0;
};

// Each returns the envelope bytes, ready for Ledger::Append.
std::string BuildLedgerInitialized(const EventContext& ctx, std::uint64_t key_fingerprint,
                                   std::string_view token_prefix);
std::string BuildUserRegistered(const EventContext& ctx, std::uint64_t user_id,
                                std::string_view username, std::string_view name,
                                std::string_view email, bool admin);
std::string BuildUserChanged(const EventContext& ctx, std::uint64_t user_id, UserChange change);
std::string BuildTokenCreated(const EventContext& ctx, const TokenCreatedFields& f);
std::string BuildTokenRevoked(const EventContext& ctx, std::uint64_t token_id,
                              RevokeReason reason);

// Limits for the Verifier: our events are flat (envelope -> event -> strings).
inline constexpr unsigned kVerifierMaxDepth = 8;
inline constexpr unsigned kVerifierMaxTables = 64;
inline constexpr std::size_t kMaxEnvelopeBytes = 64 * 1024;

// OK if `bytes` is a well-formed Envelope with identifier "PLEV", a known
// event type with every required field, and enum values in range. On
// success `*out` points into `bytes` (valid while they are). Corruption
// otherwise, saying what is wrong (the caller adds the position).
Status VerifyEnvelope(std::span<const std::uint8_t> bytes, const Envelope** out);

// "TokenCreated", "TokenRevoked", ... ("Unknown(7)" for an unknown value).
std::string EventTypeName(Event type);
std::string_view RevokeReasonName(RevokeReason reason);
std::string_view UserChangeName(UserChange change);

inline Digest ToDigest(const Digest32& d) {
  Digest out;
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = d.bytes()->Get(i);
  return out;
}

}  // namespace patledger::schema
