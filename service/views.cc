#include "service/views.h"

#include <boost/json/array.hpp>

#include "common/clock.h"
#include "service/scopes.h"

namespace patledger::service {

boost::json::object UserJson(const replay::UserRecord& user) {
  boost::json::object o;
  o["id"] = user.id;
  o["username"] = user.username;
  o["name"] = user.name;
  o["email"] = user.email;
  o["state"] = user.blocked ? "blocked" : "active";
  o["is_admin"] = user.admin;
  o["created_at"] = FormatTimestamp(user.created_at_us);
  return o;
}

bool IsActive(const replay::TokenMeta& meta, std::int64_t now_us) {
  return !meta.revoked() &&
         (meta.expires_day == index::kNoExpiry || DayOf(now_us) < meta.expires_day);
}

boost::json::object TokenJson(const TokenInfo& token, std::int64_t now_us) {
  const replay::TokenMeta& m = token.meta;
  boost::json::object o;
  o["id"] = m.id;
  o["name"] = token.name;
  o["description"] = token.description;
  o["revoked"] = m.revoked();
  o["created_at"] = FormatTimestamp(m.created_at_us);
  boost::json::array scopes;
  for (std::string_view s : ScopeNames(m.scopes)) scopes.emplace_back(s);
  o["scopes"] = std::move(scopes);
  o["user_id"] = m.user_id;
  o["last_used_at"] = nullptr;
  o["active"] = IsActive(m, now_us);
  if (m.expires_day == index::kNoExpiry) {
    o["expires_at"] = nullptr;
  } else {
    o["expires_at"] = FormatDate(m.expires_day);
  }
  if (m.revoked()) {
    o["revoked_at"] = FormatTimestamp(token.revoked_at_us);
    o["revoke_reason"] = token.revoke_reason;
  } else {
    o["revoked_at"] = nullptr;
    o["revoke_reason"] = nullptr;
  }
  o["rotated_from"] = m.rotated_from ? boost::json::value(m.rotated_from) : nullptr;
  o["rotated_to"] = m.rotated_to ? boost::json::value(m.rotated_to) : nullptr;
  return o;
}

boost::json::object CreatedTokenJson(const CreatedToken& created, std::int64_t now_us) {
  boost::json::object o = TokenJson(created.info, now_us);
  o["token"] = created.secret;
  return o;
}

}  // namespace patledger::service
