// service/views.h: the JSON shapes of users and tokens, as GitLab's API v4 writes
// them (../docs/architecture.md, "Edges"). Shared by the HTTP API and the CLI's
// --json so both speak the same shape. Never includes a token secret except the
// `token` field that CreatedTokenJson adds for a creation or rotation response.
//
// Thread safety: pure functions.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>

#include "replay/state.h"
#include "service/token_service.h"

namespace patledger::service {

// id, username, name, email, state ("active" | "blocked"), is_admin, created_at.
boost::json::object UserJson(const replay::UserRecord& user);

// id, name, description, revoked, created_at, scopes, user_id, last_used_at (null: not
// recorded), active (not revoked and not expired at `now_us`), expires_at (date or
// null), plus patledger's revoked_at, revoke_reason and rotated_from / rotated_to.
boost::json::object TokenJson(const TokenInfo& token, std::int64_t now_us);

// TokenJson plus "token": the plaintext secret. Only for the response that creates it.
boost::json::object CreatedTokenJson(const CreatedToken& created, std::int64_t now_us);

// Active = not revoked and not expired at `now_us`.
bool IsActive(const replay::TokenMeta& meta, std::int64_t now_us);

}  // namespace patledger::service
