#include "schema/event_codec.h"

#include <flatbuffers/flatbuffers.h>

namespace patledger::schema {
namespace {

using flatbuffers::FlatBufferBuilder;

Digest32 MakeDigest32(const Digest& d) {
  return Digest32(flatbuffers::span<const std::uint8_t, 32>(d.data(), d.size()));
}

// Serialises the envelope around an already built event table. Scalars are
// written even when they equal their defaults (ForceDefaults) so that the
// ledger can patch Sequencing in place and every record of one kind has the
// same shape.
template <typename BuildEvent>
std::string Finish(const EventContext& ctx, Event type, BuildEvent&& build_event) {
  FlatBufferBuilder fbb(256);
  fbb.ForceDefaults(true);
  auto event = build_event(fbb);
  auto client = fbb.CreateString(ctx.client_address);
  auto request = fbb.CreateString(ctx.request_id);
  Sequencing sequencing{};
  Actor actor(ctx.actor_user_id, ctx.actor_token_id, ctx.via_sudo);
  EnvelopeBuilder env(fbb);
  env.add_sequencing(&sequencing);
  env.add_recorded_at_us(ctx.recorded_at_us);
  env.add_actor(&actor);
  env.add_client_address(client);
  env.add_request_id(request);
  env.add_event_type(type);
  env.add_event(event.Union());
  fbb.Finish(env.Finish(), EnvelopeIdentifier());
  return std::string(reinterpret_cast<const char*>(fbb.GetBufferPointer()), fbb.GetSize());
}

bool NonEmpty(const flatbuffers::String* s) { return s != nullptr && s->size() > 0; }

Status CheckEvent(const Envelope& env) {
  if (env.sequencing() == nullptr) return Status::Corruption("envelope has no sequencing");
  if (env.actor() == nullptr) return Status::Corruption("envelope has no actor");
  switch (env.event_type()) {
    case Event::LedgerInitialized: {
      const auto* e = env.event_as_LedgerInitialized();
      if (e == nullptr || e->token_prefix() == nullptr) {
        return Status::Corruption("LedgerInitialized without token_prefix");
      }
      return Status::OK();
    }
    case Event::UserRegistered: {
      const auto* e = env.event_as_UserRegistered();
      if (e == nullptr || e->user_id() == 0 || !NonEmpty(e->username())) {
        return Status::Corruption("UserRegistered without user_id or username");
      }
      return Status::OK();
    }
    case Event::UserChanged: {
      const auto* e = env.event_as_UserChanged();
      if (e == nullptr || e->user_id() == 0 || e->change() < UserChange::Blocked ||
          e->change() > UserChange::AdminRemoved) {
        return Status::Corruption("UserChanged with no user_id or an unknown change");
      }
      return Status::OK();
    }
    case Event::TokenCreated: {
      const auto* e = env.event_as_TokenCreated();
      if (e == nullptr || e->token_id() == 0 || e->user_id() == 0 || e->digest() == nullptr ||
          e->name() == nullptr || e->scopes() == 0) {
        return Status::Corruption("TokenCreated missing token_id, user_id, name, scopes or digest");
      }
      return Status::OK();
    }
    case Event::TokenRevoked: {
      const auto* e = env.event_as_TokenRevoked();
      if (e == nullptr || e->token_id() == 0 || e->reason() > RevokeReason::ReportedLeaked) {
        return Status::Corruption("TokenRevoked with no token_id or an unknown reason");
      }
      return Status::OK();
    }
    default:
      return Status::Corruption("unknown event type " + EventTypeName(env.event_type()));
  }
}

}  // namespace

std::string BuildLedgerInitialized(const EventContext& ctx, std::uint64_t key_fingerprint,
                                   std::string_view token_prefix) {
  return Finish(ctx, Event::LedgerInitialized, [&](FlatBufferBuilder& fbb) {
    auto prefix = fbb.CreateString(token_prefix.data(), token_prefix.size());
    return CreateLedgerInitialized(fbb, 1, key_fingerprint, prefix);
  });
}

std::string BuildUserRegistered(const EventContext& ctx, std::uint64_t user_id,
                                std::string_view username, std::string_view name,
                                std::string_view email, bool admin) {
  return Finish(ctx, Event::UserRegistered, [&](FlatBufferBuilder& fbb) {
    auto u = fbb.CreateString(username.data(), username.size());
    auto n = fbb.CreateString(name.data(), name.size());
    auto e = fbb.CreateString(email.data(), email.size());
    return CreateUserRegistered(fbb, user_id, u, n, e, admin);
  });
}

std::string BuildUserChanged(const EventContext& ctx, std::uint64_t user_id,
                             UserChange change) {
  return Finish(ctx, Event::UserChanged, [&](FlatBufferBuilder& fbb) {
    return CreateUserChanged(fbb, user_id, change);
  });
}

std::string BuildTokenCreated(const EventContext& ctx, const TokenCreatedFields& f) {
  return Finish(ctx, Event::TokenCreated, [&](FlatBufferBuilder& fbb) {
    auto name = fbb.CreateString(f.name.data(), f.name.size());
    auto description = fbb.CreateString(f.description.data(), f.description.size());
    Digest32 digest = MakeDigest32(f.digest);
    return CreateTokenCreated(fbb, f.token_id, f.user_id, name, description, f.scopes,
                              f.expires_day, &digest, f.rotated_from);
  });
}

std::string BuildTokenRevoked(const EventContext& ctx, std::uint64_t token_id,
                              RevokeReason reason) {
  return Finish(ctx, Event::TokenRevoked, [&](FlatBufferBuilder& fbb) {
    return CreateTokenRevoked(fbb, token_id, reason);
  });
}

Status VerifyEnvelope(std::span<const std::uint8_t> bytes, const Envelope** out) {
  if (bytes.size() > kMaxEnvelopeBytes) {
    return Status::Corruption("envelope of " + std::to_string(bytes.size()) +
                              " bytes exceeds the limit");
  }
  if (bytes.size() < 8 || !EnvelopeBufferHasIdentifier(bytes.data())) {
    return Status::Corruption("not an envelope (file identifier is not PLEV)");
  }
  flatbuffers::Verifier verifier(bytes.data(), bytes.size(), kVerifierMaxDepth,
                                 kVerifierMaxTables);
  if (!VerifyEnvelopeBuffer(verifier)) {
    return Status::Corruption("FlatBuffers verifier rejected the envelope");
  }
  const Envelope* env = GetEnvelope(bytes.data());
  PATLEDGER_RETURN_IF_ERROR(CheckEvent(*env));
  *out = env;
  return Status::OK();
}

std::string EventTypeName(Event type) {
  const auto v = static_cast<unsigned>(type);
  if (type >= Event::MIN && type <= Event::MAX && v != 0) return EnumNameEvent(type);
  return "Unknown(" + std::to_string(v) + ")";
}

std::string_view RevokeReasonName(RevokeReason reason) {
  if (reason > RevokeReason::MAX) return "unknown";
  static constexpr std::string_view kNames[] = {"unspecified", "by_owner",     "by_admin",
                                                "rotated",     "family_reuse", "reported_leaked"};
  return kNames[static_cast<unsigned>(reason)];
}

std::string_view UserChangeName(UserChange change) {
  static constexpr std::string_view kNames[] = {"invalid", "blocked", "unblocked",
                                                "admin_granted", "admin_removed"};
  if (change > UserChange::MAX) return "unknown";
  return kNames[static_cast<unsigned>(change)];
}

}  // namespace patledger::schema
