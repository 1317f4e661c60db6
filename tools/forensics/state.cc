// `patledger state`, `diff` and `stats`: the ledger as it stood at an instant, what
// changed between two, and counts. Each rebuilds replay::State (memory bounded by users
// and tokens) in one streaming pass.

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <map>
#include <ostream>
#include <queue>

#include "common/clock.h"
#include "index/token_index.h"
#include "schema/event_codec.h"
#include "service/scopes.h"
#include "tools/forensics/common.h"
#include "tools/forensics/forensics.h"

namespace patledger::forensics {
namespace {

namespace json = boost::json;
using internal::Validity;

std::string Username(const std::unordered_map<std::uint64_t, replay::UserRecord>& users,
                     std::uint64_t id) {
  auto it = users.find(id);
  return it == users.end() ? std::string("#") + std::to_string(id) : it->second.username;
}

const replay::UserRecord* Owner(
    const std::unordered_map<std::uint64_t, replay::UserRecord>& users,
    std::uint64_t id) {
  auto it = users.find(id);
  return it == users.end() ? nullptr : &it->second;
}

Result<std::string> TokenName(const ledger::Ledger& ledger,
                              const replay::TokenMeta& meta) {
  auto bytes = ledger.Read(meta.created_seq);
  if (!bytes) return Err(bytes.error());
  const auto* e = schema::GetEnvelope(bytes->data())->event_as_TokenCreated();
  if (e == nullptr || e->token_id() != meta.id) {
    return Err(Status::Corruption("seq " + std::to_string(meta.created_seq) +
                                  ": is not the TokenCreated of token " +
                                  std::to_string(meta.id)));
  }
  return e->name() ? e->name()->str() : std::string();
}

// Every token of `state`, optionally only those of one user (a copy: bounded by state).
std::vector<replay::TokenMeta> Tokens(const replay::State& state,
                                      std::optional<std::uint64_t> user) {
  if (user) return state.TokensOfUser(*user);
  std::vector<replay::TokenMeta> all;
  all.reserve(state.token_count());
  state.ForEachToken([&](const replay::TokenMeta& t) { all.push_back(t); });
  return all;
}

Result<std::optional<std::uint64_t>> UserFilter(const replay::State& state,
                                                const std::string& user) {
  if (user.empty()) return std::optional<std::uint64_t>();
  auto u = internal::FindUser(state, user);
  if (!u) return Err(u.error());
  return std::optional<std::uint64_t>(u->id);
}

}  // namespace

// ---- state --------------------------------------------------------------------------

Status ShowState(const StateOptions& options, const Io& io) {
  if (options.at_us.has_value() == options.seq.has_value()) {
    return Status::InvalidArgument("give exactly one of --at and --seq");
  }
  auto opened = internal::OpenLedger(options.source);
  if (!opened) return opened.error();
  const ledger::Ledger& ledger = **opened;
  if (options.seq && *options.seq > ledger.last_seq()) {
    return Status::NotFound("seq " + std::to_string(*options.seq) +
                            " is past the end of the log (seq " +
                            std::to_string(ledger.last_seq()) + ")");
  }
  replay::State state;
  internal::ReplayPoint point;
  PATLEDGER_RETURN_IF_ERROR(
      internal::ReplayTo(ledger, &state, options.at_us.value_or(INT64_MAX),
                         options.seq.value_or(UINT64_MAX), io, "state", {}, &point));
  const std::int64_t at = options.at_us ? *options.at_us : point.at_us;
  auto user = UserFilter(state, options.user);
  if (!user && user.error().IsNotFound()) {
    // Not (yet) a user then: no token of theirs was valid.
    io.err << "patledger: no user '" << options.user << "' in the ledger as of seq "
           << point.seq << "\n";
    user = std::optional<std::uint64_t>(0);
  }
  if (!user) return user.error();
  const auto users = internal::UsersById(state);

  std::uint64_t valid = 0, revoked = 0, expired = 0, blocked = 0;
  internal::Table table({"TOKEN", "NAME", "OWNER", "SCOPES", "EXPIRES", "CREATED (UTC)"});
  for (const replay::TokenMeta& t : Tokens(state, *user)) {
    const Validity v = internal::ValidityAt(t, Owner(users, t.user_id), at);
    if (v == Validity::kRevoked) ++revoked;
    if (v == Validity::kExpired) ++expired;
    if (v == Validity::kOwnerBlocked) ++blocked;
    if (v != Validity::kValid) continue;
    ++valid;
    auto name = TokenName(ledger, t);
    if (!name) return name.error();
    const std::string username = Username(users, t.user_id);
    if (options.json) {
      json::object o;
      o["type"] = "token";
      o["token_id"] = t.id;
      o["name"] = *name;
      o["user_id"] = t.user_id;
      o["username"] = username;
      o["scopes"] = internal::ScopesJson(t.scopes);
      o["expires_at"] = internal::ExpiryJson(t.expires_day);
      o["created_at"] = internal::JsonTime(t.created_at_us);
      o["created_seq"] = t.created_seq;
      o["rotated_from"] =
          t.rotated_from ? json::value(t.rotated_from) : json::value(nullptr);
      internal::PrintJson(io.out, o);
    } else {
      table.Add({std::to_string(t.id), internal::Quote(*name),
                 internal::UserText(t.user_id, username), internal::ScopesText(t.scopes),
                 internal::Expiry(t.expires_day), internal::When(t.created_at_us)});
    }
  }
  if (options.json) {
    json::object o;
    o["type"] = "summary";
    o["at"] = internal::JsonTime(at);
    o["at_us"] = at;
    o["seq"] = point.seq;
    o["valid"] = valid;
    o["revoked"] = revoked;
    o["expired"] = expired;
    o["owner_blocked"] = blocked;
    internal::PrintJson(io.out, o);
    return Status::OK();
  }
  if (!table.empty()) table.Print(io.out);
  io.out << (table.empty() ? "" : "\n") << valid << " token" << (valid == 1 ? "" : "s")
         << " valid at " << internal::When(at)
         << (internal::ShowLocal() ? " (" + internal::LocalHint(at) + ")" : "")
         << ", the ledger as of seq " << point.seq << "; not valid then: " << revoked
         << " revoked, " << expired << " expired, " << blocked << " of blocked owners\n";
  return Status::OK();
}

// ---- diff ---------------------------------------------------------------------------

Status Diff(const DiffOptions& options, const Io& io) {
  if (options.from_us >= options.to_us) {
    return Status::InvalidArgument("--from must be before --to");
  }
  auto opened = internal::OpenLedger(options.source);
  if (!opened) return opened.error();
  const ledger::Ledger& ledger = **opened;
  const bool local = !options.json && internal::ShowLocal();

  replay::State before;  // the state at `from`
  replay::State after;   // the state at `to`
  internal::Names names;
  std::optional<std::uint64_t> user_id;
  if (!options.user.empty()) {
    std::uint64_t id = 0;
    const char* end = options.user.data() + options.user.size();
    auto [ptr, ec] = std::from_chars(options.user.data(), end, id);
    if (ec == std::errc() && ptr == end) user_id = id;
  }
  // Expiries, emitted in time order as the stream passes them: (instant, token) of
  // every token with an expiry day, and when each token was revoked. Both bounded by
  // the number of tokens.
  using Expiry = std::pair<std::int64_t, std::uint64_t>;
  std::priority_queue<Expiry, std::vector<Expiry>, std::greater<>> expiries;
  std::unordered_map<std::uint64_t, std::int64_t> revoked_at;
  std::unordered_map<std::uint64_t, std::int64_t> created_at;
  std::map<std::string, std::uint64_t> counts;

  auto row = [&](std::int64_t at, const std::string& change, const std::string& subject,
                 const std::string& details) {
    std::vector<std::pair<std::string, std::size_t>> cells = {{internal::When(at), 20}};
    if (local) cells.push_back({internal::LocalHint(at), 16});
    cells.insert(cells.end(), {{change, 15}, {subject, 22}, {details, 0}});
    io.out << internal::FixedRow(cells) << "\n";
  };
  auto concerns = [&](std::uint64_t subject_user, std::uint64_t actor) {
    if (options.user.empty()) return true;
    if (!user_id) user_id = names.UserId(options.user);
    return user_id && (subject_user == *user_id || actor == *user_id);
  };
  // Emits the expiries at or before `t` (those in the window).
  auto expire_until = [&](std::int64_t t) -> Status {
    while (!expiries.empty() && expiries.top().first <= t) {
      const auto [at, id] = expiries.top();
      expiries.pop();
      if (at <= options.from_us) continue;
      auto revoked = revoked_at.find(id);
      if (revoked != revoked_at.end() && revoked->second < at) continue;  // revoked first
      if (created_at[id] >= at) continue;
      const std::uint64_t owner = names.OwnerOf(id);
      if (!concerns(owner, 0)) continue;
      auto meta = after.FindToken(id);
      if (!meta) continue;
      auto name = TokenName(ledger, *meta);
      if (!name) return name.error();
      ++counts["expired"];
      if (options.json) {
        json::object o;
        o["type"] = "expired";
        o["at"] = internal::JsonTime(at);
        o["at_us"] = at;
        o["token_id"] = id;
        o["user_id"] = owner;
        o["username"] = names.User(owner);
        o["name"] = *name;
        o["expires_at"] = internal::ExpiryJson(meta->expires_day);
        internal::PrintJson(io.out, o);
      } else {
        row(at, "expired", "token " + std::to_string(id),
            internal::Quote(*name) + " of " + names.User(owner));
      }
    }
    return Status::OK();
  };
  if (!options.json) {
    std::vector<std::pair<std::string, std::size_t>> cells = {{"WHEN (UTC)", 20}};
    if (local) cells.push_back({"LOCAL", 16});
    cells.insert(cells.end(), {{"CHANGE", 15}, {"SUBJECT", 22}, {"DETAILS", 0}});
    io.out << internal::FixedRow(cells) << "\n";
  }

  PATLEDGER_RETURN_IF_ERROR(internal::ReplayTo(
      ledger, &after, options.to_us, UINT64_MAX, io, "diff",
      [&](const ledger::RecordView& r) -> Status {
        const schema::Envelope& env = *r.envelope;
        const std::int64_t at = env.recorded_at_us();
        // Expiries strictly before this record come first.
        PATLEDGER_RETURN_IF_ERROR(expire_until(at - 1));
        names.Observe(env);
        if (const auto* c = env.event_as_TokenCreated()) {
          if (c->expires_day() != index::kNoExpiry) {
            expiries.emplace(static_cast<std::int64_t>(c->expires_day()) * kMicrosPerDay,
                             c->token_id());
          }
          created_at[c->token_id()] = at;
        } else if (const auto* v = env.event_as_TokenRevoked()) {
          revoked_at[v->token_id()] = at;
        }
        if (at <= options.from_us) return before.Apply(r);
        const internal::FlatEvent e = internal::Flatten(r, names);
        const internal::Who who = internal::WhoOf(r.seq, env);
        const std::uint64_t sudoer = who.via_sudo ? names.OwnerOf(who.token_id) : 0;
        const std::string by = internal::ByText(who, names.User(who.user_id),
                                                sudoer ? names.User(sudoer) : "");
        std::string change, subject, details;
        if (e.type == "TokenCreated") {
          if (*e.rotated_from) {
            change = "rotated";
            details = "replaces " + std::to_string(*e.rotated_from) + "; ";
          } else {
            change = "created";
          }
          subject = "token " + std::to_string(*e.token_id);
          details += internal::Quote(*e.token_name) + " of " + names.User(*e.user_id) +
                     ": " + internal::ScopesText(*e.scopes) + "; expires " +
                     internal::Expiry(*e.expires_day);
        } else if (e.type == "TokenRevoked") {
          change = "revoked";
          subject = "token " + std::to_string(*e.token_id);
          details = "of " + names.User(e.user_id.value_or(0)) + "; reason " + *e.reason;
        } else if (e.type == "UserRegistered") {
          change = "user_registered";
          subject = "user " + *e.username;
          details = internal::Quote(*e.name) + (*e.admin ? ", admin" : "");
        } else if (e.type == "UserChanged") {
          change = *e.change == "blocked"         ? "user_blocked"
                   : *e.change == "unblocked"     ? "user_unblocked"
                   : *e.change == "admin_granted" ? "admin_granted"
                                                  : "admin_removed";
          subject = "user " + names.User(*e.user_id);
        } else {
          return Status::OK();
        }
        if (!concerns(e.user_id.value_or(0), who.user_id)) return Status::OK();
        ++counts[change];
        if (options.json) {
          json::object o;
          o["type"] = change;
          for (auto& [k, v] : internal::WhoJson(who, names.User(who.user_id))) o[k] = v;
          if (e.token_id) o["token_id"] = *e.token_id;
          if (e.user_id) {
            o["user_id"] = *e.user_id;
            o["username"] = names.User(*e.user_id);
          }
          if (e.token_name) o["name"] = *e.token_name;
          if (e.scopes) o["scopes"] = internal::ScopesJson(*e.scopes);
          if (e.expires_day) o["expires_at"] = internal::ExpiryJson(*e.expires_day);
          if (e.rotated_from && *e.rotated_from) o["rotated_from"] = *e.rotated_from;
          if (e.reason) o["reason"] = *e.reason;
          internal::PrintJson(io.out, o);
        } else {
          row(at, change, subject, details + (details.empty() ? "" : "; ") + "by " + by);
        }
        return Status::OK();
      },
      nullptr));
  PATLEDGER_RETURN_IF_ERROR(expire_until(options.to_us));

  auto valid_in = [](const replay::State& s, std::int64_t at,
                     std::optional<std::uint64_t> user) {
    const auto us = internal::UsersById(s);
    std::uint64_t n = 0;
    for (const replay::TokenMeta& t : Tokens(s, user)) {
      if (internal::ValidityAt(t, Owner(us, t.user_id), at) == Validity::kValid) ++n;
    }
    return n;
  };
  // A user that does not exist (yet) has no tokens.
  std::optional<std::uint64_t> only;
  if (!options.user.empty()) only = user_id.value_or(0);
  const std::uint64_t valid_from = valid_in(before, options.from_us, only);
  const std::uint64_t valid_to = valid_in(after, options.to_us, only);
  static const char* kKinds[] = {"created",        "rotated",         "revoked",
                                 "expired",        "user_registered", "user_blocked",
                                 "user_unblocked", "admin_granted",   "admin_removed"};
  if (options.json) {
    json::object o;
    o["type"] = "summary";
    o["from"] = internal::JsonTime(options.from_us);
    o["from_us"] = options.from_us;
    o["to"] = internal::JsonTime(options.to_us);
    o["to_us"] = options.to_us;
    for (const char* k : kKinds) o[k] = counts[k];
    o["valid_at_from"] = valid_from;
    o["valid_at_to"] = valid_to;
    internal::PrintJson(io.out, o);
  } else {
    io.out << "\nFrom " << internal::When(options.from_us) << " to "
           << internal::When(options.to_us) << ":";
    bool any = false;
    for (const char* k : kKinds) {
      if (counts[k] == 0) continue;
      io.out << (any ? ", " : " ") << counts[k] << " " << k;
      any = true;
    }
    io.out << (any ? "" : " no change") << ". Valid tokens: " << valid_from << " -> "
           << valid_to << ".\n";
  }
  return Status::OK();
}

// ---- stats --------------------------------------------------------------------------

Status Stats(const StatsOptions& options, const Io& io) {
  auto opened = internal::OpenLedger(options.source);
  if (!opened) return opened.error();
  const ledger::Ledger& ledger = **opened;
  replay::State state;
  std::map<std::string, std::uint64_t> revoked_by_reason;
  std::map<std::string, std::uint64_t> created_by_month;
  internal::ReplayPoint point;
  PATLEDGER_RETURN_IF_ERROR(internal::ReplayTo(
      ledger, &state, options.at_us.value_or(INT64_MAX), UINT64_MAX, io, "stats",
      [&](const ledger::RecordView& r) -> Status {
        if (const auto* e = r.envelope->event_as_TokenRevoked()) {
          ++revoked_by_reason[std::string(schema::RevokeReasonName(e->reason()))];
        } else if (r.envelope->event_as_TokenCreated()) {
          ++created_by_month[FormatDate(DayOf(r.envelope->recorded_at_us()))
                                 .substr(0, 7)];
        }
        return Status::OK();
      },
      &point));
  const std::int64_t now =
      options.now_us.value_or(options.at_us.value_or(SystemClock::Get()->NowMicros()));
  const auto users = internal::UsersById(state);

  std::uint64_t admins = 0, blocked = 0;
  for (const auto& [id, u] : users) {
    admins += u.admin;
    blocked += u.blocked;
  }
  std::map<std::string, std::uint64_t> by_state;
  std::map<std::string, std::uint64_t> active_by_scope, all_by_scope;
  std::map<std::string, std::uint64_t> expiry_by_month;  // active tokens
  std::unordered_map<std::uint64_t, std::uint64_t> active_per_user;
  std::uint64_t tokens = 0;
  state.ForEachToken([&](const replay::TokenMeta& t) {
    ++tokens;
    auto it = users.find(t.user_id);
    const Validity v =
        internal::ValidityAt(t, it == users.end() ? nullptr : &it->second, now);
    ++by_state[std::string(internal::ValidityName(v))];
    for (std::string_view s : service::ScopeNames(t.scopes)) {
      ++all_by_scope[std::string(s)];
      if (v == Validity::kValid) ++active_by_scope[std::string(s)];
    }
    if (v == Validity::kValid) {
      ++active_per_user[t.user_id];
      ++expiry_by_month[t.expires_day == index::kNoExpiry
                            ? std::string("never")
                            : FormatDate(t.expires_day).substr(0, 7)];
    }
  });
  // Users by their number of active tokens.
  std::map<std::string, std::uint64_t> per_user;
  static const std::pair<std::uint64_t, const char*> kBuckets[] = {
      {0, "0"}, {1, "1"}, {2, "2-5"}, {6, "6-10"}, {11, "11+"}};
  std::uint64_t max_per_user = 0, active_total = 0;
  for (const auto& [id, u] : users) {
    const auto it = active_per_user.find(id);
    const std::uint64_t n = it == active_per_user.end() ? 0 : it->second;
    max_per_user = std::max(max_per_user, n);
    active_total += n;
    const char* bucket = "0";
    for (const auto& [low, label] : kBuckets) {
      if (n >= low) bucket = label;
    }
    ++per_user[bucket];
  }

  auto to_json = [](const std::map<std::string, std::uint64_t>& m) {
    json::object o;
    for (const auto& [k, v] : m) o[k] = v;
    return o;
  };
  if (options.json) {
    json::object o;
    o["type"] = "stats";
    o["seq"] = point.seq;
    o["at"] =
        point.seq ? json::value(internal::JsonTime(point.at_us)) : json::value(nullptr);
    o["now"] = internal::JsonTime(now);
    o["users"] = json::object{{"total", users.size()},
                              {"active", users.size() - blocked},
                              {"blocked", blocked},
                              {"admins", admins}};
    json::object t = to_json(by_state);
    t["total"] = tokens;
    o["tokens"] = std::move(t);
    o["revoked_by_reason"] = to_json(revoked_by_reason);
    o["active_by_scope"] = to_json(active_by_scope);
    o["all_by_scope"] = to_json(all_by_scope);
    o["users_by_active_tokens"] = to_json(per_user);
    o["max_active_tokens_per_user"] = max_per_user;
    o["active_expiry_by_month"] = to_json(expiry_by_month);
    o["created_by_month"] = to_json(created_by_month);
    internal::PrintJson(io.out, o);
    return Status::OK();
  }
  auto section = [&](const std::string& title,
                     const std::map<std::string, std::uint64_t>& m,
                     const std::string& key_header) {
    io.out << "\n" << title << "\n";
    internal::Table table({"  " + key_header, "COUNT"});
    for (const auto& [k, v] : m) table.Add({"  " + k, std::to_string(v)});
    if (m.empty()) table.Add({"  (none)", "0"});
    table.Print(io.out);
  };
  io.out << "Ledger as of seq " << point.seq;
  if (point.seq) io.out << " (" << internal::When(point.at_us) << ")";
  io.out << "; states judged at " << internal::When(now) << "\n";
  io.out << "users: " << users.size() << " (" << users.size() - blocked << " active, "
         << blocked << " blocked, " << admins << " administrators)\n";
  io.out << "tokens: " << tokens;
  for (const auto& [k, v] : by_state) io.out << ", " << v << " " << k;
  io.out << "\n";
  section("Revoked, by reason", revoked_by_reason, "REASON");
  section("Active tokens, by scope granted", active_by_scope, "SCOPE");
  section("Users, by number of active tokens", per_user, "ACTIVE TOKENS");
  char mean[32];
  std::snprintf(mean, sizeof mean, "%.2f",
                users.empty() ? 0.0 : static_cast<double>(active_total) / users.size());
  io.out << "  (most: " << max_per_user << "; mean: " << mean << ")\n";
  section("Active tokens, by expiry month", expiry_by_month, "MONTH");
  section("Tokens created, by month", created_by_month, "MONTH");
  return Status::OK();
}

}  // namespace patledger::forensics
