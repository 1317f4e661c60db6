// `patledger history`: the whole life of one token's rotation family, or of one user.
//
// The state is rebuilt once (replay::State, memory bounded by users and tokens); the
// details of each token of the answer (name, actor, address, request id, revocation)
// are read from the ledger by sequence number, as TokenService::GetToken does.

#include <charconv>
#include <fstream>
#include <ostream>

#include "common/clock.h"
#include "schema/event_codec.h"
#include "service/token_format.h"
#include "service/token_key.h"
#include "tools/forensics/common.h"
#include "tools/forensics/forensics.h"

namespace patledger::forensics {
namespace {

namespace json = boost::json;
using internal::Who;

struct Life {
  replay::TokenMeta meta;
  std::string name, description;
  Who created;
  std::optional<Who> revoked;
  std::string reason;
};

Result<Life> ReadLife(const ledger::Ledger& ledger, const replay::TokenMeta& meta) {
  Life life;
  life.meta = meta;
  std::string bytes;
  auto created = internal::ReadWho(ledger, meta.created_seq, &bytes);
  if (!created) return Err(created.error());
  life.created = *created;
  const auto* tc = schema::GetEnvelope(bytes.data())->event_as_TokenCreated();
  if (tc == nullptr || tc->token_id() != meta.id) {
    return Err(Status::Corruption("seq " + std::to_string(meta.created_seq) +
                                  ": is not the TokenCreated of token " +
                                  std::to_string(meta.id)));
  }
  life.name = tc->name() ? tc->name()->str() : "";
  life.description = tc->description() ? tc->description()->str() : "";
  if (meta.revoked()) {
    auto revoked = internal::ReadWho(ledger, meta.revoked_seq, &bytes);
    if (!revoked) return Err(revoked.error());
    const auto* tr = schema::GetEnvelope(bytes.data())->event_as_TokenRevoked();
    if (tr == nullptr || tr->token_id() != meta.id) {
      return Err(Status::Corruption("seq " + std::to_string(meta.revoked_seq) +
                                    ": is not the TokenRevoked of token " +
                                    std::to_string(meta.id)));
    }
    life.revoked = *revoked;
    life.reason = std::string(schema::RevokeReasonName(tr->reason()));
  }
  return life;
}

class Output {
 public:
  Output(const Io& io, bool json, const replay::State& state, std::int64_t now)
      : io_(io),
        json_(json),
        state_(state),
        now_(now),
        users_(internal::UsersById(state)) {}

  std::string Username(std::uint64_t id) const {
    auto it = users_.find(id);
    return it == users_.end() ? std::string("#") + std::to_string(id)
                              : it->second.username;
  }

  // For sudo: the username of the administrator whose token acted.
  std::string TokenOwner(const Who& w) const {
    if (!w.via_sudo) return "";
    auto t = state_.FindToken(w.token_id);
    return t ? Username(t->user_id) : "";
  }

  std::string StateNow(const replay::TokenMeta& m) const {
    auto it = users_.find(m.user_id);
    return std::string(internal::ValidityName(
        internal::ValidityAt(m, it == users_.end() ? nullptr : &it->second, now_)));
  }

  void Token(const Life& l, std::size_t position) {
    const replay::TokenMeta& m = l.meta;
    if (json_) {
      json::object o;
      o["type"] = "token";
      o["token_id"] = m.id;
      o["family_position"] = position;
      o["user_id"] = m.user_id;
      o["username"] = Username(m.user_id);
      o["name"] = l.name;
      o["description"] = l.description;
      o["scopes"] = internal::ScopesJson(m.scopes);
      o["expires_at"] = internal::ExpiryJson(m.expires_day);
      o["rotated_from"] =
          m.rotated_from ? json::value(m.rotated_from) : json::value(nullptr);
      o["rotated_to"] = m.rotated_to ? json::value(m.rotated_to) : json::value(nullptr);
      o["created"] = internal::WhoJson(l.created, Username(l.created.user_id));
      if (l.revoked) {
        json::object r = internal::WhoJson(*l.revoked, Username(l.revoked->user_id));
        r["reason"] = l.reason;
        o["revoked"] = std::move(r);
      } else {
        o["revoked"] = nullptr;
      }
      o["state_now"] = StateNow(m);
      internal::PrintJson(io_.out, o);
      return;
    }
    table_.Add(
        Row(std::to_string(m.id), "created", l.created,
            Quote(l.name) + " " + internal::ScopesText(m.scopes) + "; expires " +
                internal::Expiry(m.expires_day) +
                (m.rotated_from ? "; replaces " + std::to_string(m.rotated_from) : "")));
    if (l.revoked) {
      table_.Add(Row(std::to_string(m.id), "revoked", *l.revoked, "reason " + l.reason));
    }
  }

  void UserChange(const Who& who, const std::string& change) {
    if (json_) {
      json::object o;
      o["type"] = "user_change";
      o["change"] = change;
      for (auto& [k, v] : internal::WhoJson(who, Username(who.user_id))) o[k] = v;
      internal::PrintJson(io_.out, o);
      return;
    }
    table_.Add(Row("-", change, who, ""));
  }

  void Flush() {
    if (!json_ && !table_.empty()) table_.Print(io_.out);
  }

  bool json() const { return json_; }
  const Io& io() const { return io_; }
  std::int64_t now() const { return now_; }

 private:
  static std::string Quote(const std::string& s) { return internal::Quote(s); }

  std::vector<std::string> Row(const std::string& token, const std::string& event,
                               const Who& w, const std::string& details) const {
    std::vector<std::string> row = {token, event, internal::When(w.at_us)};
    if (internal::ShowLocal()) row.push_back(internal::LocalHint(w.at_us));
    row.insert(row.end(), {std::to_string(w.seq),
                           internal::ByText(w, Username(w.user_id), TokenOwner(w)),
                           w.client_address.empty() ? "-" : w.client_address,
                           w.request_id.empty() ? "-" : w.request_id, details});
    return row;
  }

  static std::vector<std::string> Headers() {
    std::vector<std::string> h = {"TOKEN", "EVENT", "WHEN (UTC)"};
    if (internal::ShowLocal()) h.push_back("LOCAL");
    h.insert(h.end(), {"SEQ", "BY", "FROM", "REQUEST", "DETAILS"});
    return h;
  }

  const Io& io_;
  bool json_;
  const replay::State& state_;
  std::int64_t now_;
  std::unordered_map<std::uint64_t, replay::UserRecord> users_;
  internal::Table table_{Headers()};
};

Result<std::string> ReadTokenValue(const std::string& from, std::istream& in) {
  std::string line;
  if (from == "-") {
    std::getline(in, line);
  } else {
    std::ifstream file(from);
    if (!file) return Err(Status::NotFound("cannot read " + from));
    std::getline(file, line);
  }
  const auto first = line.find_first_not_of(" \t\r\n");
  const auto last = line.find_last_not_of(" \t\r\n");
  if (first == std::string::npos) {
    return Err(
        Status::InvalidArgument("no token given (expected it on the first line of " +
                                std::string(from == "-" ? "stdin" : from) + ")"));
  }
  return line.substr(first, last - first + 1);
}

Status TokenHistory(const ledger::Ledger& ledger, const replay::State& state,
                    std::uint64_t token_id, Output& out) {
  auto asked = state.FindToken(token_id);
  if (!asked)
    return Status::NotFound("no token " + std::to_string(token_id) + " in the ledger");
  const std::vector<std::uint64_t> family = state.Family(token_id);
  const std::string owner = out.Username(asked->user_id);
  if (out.json()) {
    json::object o;
    o["type"] = "family";
    o["token_id"] = token_id;
    json::array ids;
    for (std::uint64_t id : family) ids.push_back(id);
    o["tokens"] = std::move(ids);
    o["user_id"] = asked->user_id;
    o["username"] = owner;
    o["now"] = internal::JsonTime(out.now());
    internal::PrintJson(out.io().out, o);
  } else {
    std::string chain;
    for (std::uint64_t id : family)
      chain += (chain.empty() ? "" : " -> ") + std::to_string(id);
    out.io().out << "Token " << token_id << " of "
                 << internal::UserText(asked->user_id, owner) << ": rotation family of "
                 << family.size() << " token" << (family.size() == 1 ? "" : "s") << ": "
                 << chain << "\n\n";
  }
  std::size_t position = 0;
  std::vector<std::string> now_lines;
  for (std::uint64_t id : family) {
    auto meta = state.FindToken(id);
    if (!meta)
      return Status::Internal("family member " + std::to_string(id) + " missing");
    auto life = ReadLife(ledger, *meta);
    if (!life) return life.error();
    out.Token(*life, ++position);
    now_lines.push_back("token " + std::to_string(id) + ": " + out.StateNow(*meta));
  }
  out.Flush();
  if (!out.json()) {
    out.io().out << "\nNow (" << internal::When(out.now()) << "):";
    for (const std::string& l : now_lines) out.io().out << " " << l << ";";
    out.io().out << "\n";
  }
  return Status::OK();
}

}  // namespace

Status History(const HistoryOptions& options, const Io& io) {
  const int selectors =
      (options.token_id != 0) + !options.token_value_from.empty() + !options.user.empty();
  if (selectors != 1) {
    return Status::InvalidArgument(
        "give exactly one of --token-id, --token-value and --user");
  }
  std::optional<service::TokenKey> key;
  std::string token;
  if (!options.token_value_from.empty()) {
    auto value = ReadTokenValue(options.token_value_from, io.in);
    if (!value) return value.error();
    token = std::move(*value);
    auto loaded = service::TokenKey::Load(internal::KeyPath(options.source));
    if (!loaded) return loaded.error();
    key.emplace(std::move(*loaded));
  }
  auto opened = internal::OpenLedger(options.source);
  if (!opened) return opened.error();
  const ledger::Ledger& ledger = **opened;

  // For --user: the user's changes, collected as the log streams by.
  std::optional<std::uint64_t> user_id;
  if (!options.user.empty()) {
    std::uint64_t id = 0;
    const char* end = options.user.data() + options.user.size();
    auto [ptr, ec] = std::from_chars(options.user.data(), end, id);
    if (ec == std::errc() && ptr == end) user_id = id;
  }
  std::vector<std::pair<Who, std::string>> changes;  // of one user: output-sized
  replay::State state;
  // With --now, the ledger as it stood then.
  PATLEDGER_RETURN_IF_ERROR(internal::ReplayTo(
      ledger, &state, options.now_us.value_or(INT64_MAX), UINT64_MAX, io, "history",
      [&](const ledger::RecordView& r) -> Status {
        if (options.user.empty()) return Status::OK();
        const schema::Envelope& env = *r.envelope;
        if (const auto* e = env.event_as_UserRegistered()) {
          if (!user_id && e->username() && e->username()->str() == options.user) {
            user_id = e->user_id();
          }
        } else if (const auto* c = env.event_as_UserChanged()) {
          if (user_id && c->user_id() == *user_id) {
            changes.emplace_back(internal::WhoOf(r.seq, env),
                                 std::string(schema::UserChangeName(c->change())));
          }
        }
        return Status::OK();
      },
      nullptr));
  const std::int64_t now = options.now_us.value_or(SystemClock::Get()->NowMicros());
  Output out(io, options.json, state, now);

  if (options.token_id != 0) return TokenHistory(ledger, state, options.token_id, out);

  if (key) {
    if (key->Fingerprint() != state.key_fingerprint()) {
      return Status::FailedPrecondition(
          "the key file " + internal::KeyPath(options.source) +
          " does not belong to this ledger (fingerprint mismatch)");
    }
    const service::TokenShape shape =
        service::CheckTokenShape(token, state.token_prefix());
    if (shape != service::TokenShape::kOk) {
      return Status::InvalidArgument(
          "the token given is not a token of this ledger's format (" +
          std::string(service::TokenShapeName(shape)) + ")");
    }
    index::TokenEntry entry;
    if (!state.token_index().Lookup(key->Digest(token), &entry)) {
      return Status::NotFound("the token given is well formed but not in this ledger");
    }
    return TokenHistory(ledger, state, entry.token_id, out);
  }

  // --user
  auto user = internal::FindUser(state, options.user);
  if (!user) return user.error();
  std::string bytes;
  auto registered = internal::ReadWho(ledger, user->created_seq, &bytes);
  if (!registered) return registered.error();
  const std::vector<replay::TokenMeta> tokens = state.TokensOfUser(user->id);
  if (options.json) {
    json::object o;
    o["type"] = "user";
    o["user_id"] = user->id;
    o["username"] = user->username;
    o["name"] = user->name;
    o["email"] = user->email;
    o["admin"] = user->admin;
    o["blocked"] = user->blocked;
    o["registered"] = internal::WhoJson(*registered, out.Username(registered->user_id));
    o["tokens"] = tokens.size();
    o["now"] = internal::JsonTime(now);
    internal::PrintJson(io.out, o);
  } else {
    io.out << "User " << internal::UserText(user->id, user->username) << " "
           << internal::Quote(user->name) << " <" << user->email << ">"
           << (user->admin ? ", administrator" : "") << (user->blocked ? ", BLOCKED" : "")
           << "; " << tokens.size() << " token" << (tokens.size() == 1 ? "" : "s")
           << "\n\n";
  }
  out.UserChange(*registered, "registered");
  for (const auto& [who, change] : changes) out.UserChange(who, change);
  std::size_t position = 0;
  for (const replay::TokenMeta& meta : tokens) {
    auto life = ReadLife(ledger, meta);
    if (!life) return life.error();
    // The position in the token's own rotation family.
    const auto family = state.Family(meta.id);
    position = 0;
    for (std::size_t i = 0; i < family.size(); ++i) {
      if (family[i] == meta.id) position = i + 1;
    }
    out.Token(*life, position);
  }
  out.Flush();
  return Status::OK();
}

}  // namespace patledger::forensics
