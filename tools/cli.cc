#include "tools/cli.h"

#include <boost/json/serialize.hpp>
#include <boost/program_options.hpp>
#include <charconv>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "common/clock.h"
#include "service/scopes.h"
#include "service/token_service.h"
#include "service/views.h"
#include "tools/forensics/forensics.h"
#include "tools/serve.h"

namespace patledger::tools {
namespace po = boost::program_options;

int ExitCodeFor(const Status& status) {
  using C = Status::Code;
  switch (status.code()) {
    case C::kOk: return 0;
    case C::kUnauthenticated: return 1;
    case C::kInvalidArgument: return 2;
    case C::kNotFound: return 3;
    case C::kAlreadyExists:
    case C::kFailedPrecondition: return 4;
    case C::kCorruption: return 5;
    case C::kIOError: return 6;
    case C::kPermissionDenied: return 7;
    case C::kInternal: return 70;
  }
  return 70;
}

namespace {

constexpr int kUsage = 2;

const char kTopUsage[] =
    "patledger: personal access tokens on an event-sourced ledger\n"
    "\n"
    "usage: patledger <command> [options]   (every command takes --data DIR, default ./data)\n"
    "\n"
    "  serve [--listen HOST:PORT] [--threads N]\n"
    "                               run the HTTP API (initialises the ledger if there is none)\n"
    "  init [--if-missing]          create the ledger and key, print the root token once\n"
    "  user add USERNAME --name N --email E [--admin]\n"
    "  user block|unblock USER      USER is a username or an id\n"
    "  user admin USER --grant|--remove\n"
    "  user list [--json]\n"
    "  token create --user U --name N --scopes S[,S] [--expires YYYY-MM-DD]\n"
    "               [--description D] [--json]        prints the new token once\n"
    "  token revoke ID [--reason by_admin|by_owner|reported_leaked]\n"
    "  token rotate ID [--expires YYYY-MM-DD] [--json] prints the new token once\n"
    "  token list [--user U] [--json]    token show ID [--json]\n"
    "  auth TOKEN|- [--scope S] [--at TIMESTAMP]  exit 0 if valid; '-' reads stdin\n"
    "\n"
    "audit and forensics (read-only, beside a running server too; docs/forensics.md):\n"
    "  verify [--expect SEQ[:CHAIN]]  every record, the chain, the log's consistency\n"
    "  log [--since T] [--until T] [--user U] [--token-id N] [--type T] [--follow]\n"
    "  export [--format jsonl|csv]    the whole event stream, flat\n"
    "  history --token-id N | --token-value - | --user U\n"
    "  state --at T | --seq N [--user U]   the tokens valid at that instant\n"
    "  diff --from T1 --to T2         what changed between two instants\n"
    "  triage FILE|- [--at T]         which leaked candidates are ours, whose, live\n"
    "  stats [--at T]                 counts by state, scope, user and expiry month\n"
    "  backup --to DIR [--with-key]   restore --from DIR --to DIR\n"
    "  generate --data DIR --users N --tokens M --seed S [--days D]   (test ledgers)\n"
    "\n"
    "`patledger <command> --help` describes a command's options.\n";

// What every subcommand shares.
struct Common {
  std::string data = "./data";
  std::string key_file;
  bool json = false;
};

po::options_description CommonOptions(Common* c, bool with_json) {
  po::options_description d("common options");
  d.add_options()("help,h", "show this help")(
      "data", po::value(&c->data)->default_value("./data"), "data directory")(
      "key-file", po::value(&c->key_file),
      "instance key file (default <data>/token.key, mode 0600)");
  if (with_json) d.add_options()("json", po::bool_switch(&c->json), "print JSON");
  return d;
}

class Command {
 public:
  Command(std::ostream& out, std::ostream& err, std::istream& in)
      : out_(out), err_(err), in_(in) {}

  // Parses `args`; returns false (after printing help or an error) when the command
  // should not run, with *exit set.
  bool Parse(const std::vector<std::string>& args, const po::options_description& opts,
             const po::positional_options_description& positional, const char* synopsis,
             int* exit) {
    po::variables_map vm;
    try {
      po::store(po::command_line_parser(args).options(opts).positional(positional).run(), vm);
      if (vm.count("help")) {
        out_ << "usage: patledger " << synopsis << "\n\n" << opts;
        *exit = 0;
        return false;
      }
      po::notify(vm);
    } catch (const po::error& e) {
      err_ << "patledger: " << e.what() << "\nusage: patledger " << synopsis << "\n";
      *exit = kUsage;
      return false;
    }
    vm_ = std::move(vm);
    return true;
  }

  bool Has(const char* name) const { return vm_.count(name) > 0 && !vm_[name].defaulted(); }

  int Fail(const Status& s) {
    std::string message = s.ToString();
    if (s.code() == Status::Code::kIOError && message.find("lock") != std::string::npos) {
      message += " (is `patledger serve` running on this directory? stop it, or use the "
                 "HTTP API)";
    }
    err_ << "patledger: " << message << "\n";
    return ExitCodeFor(s);
  }

  Result<std::unique_ptr<service::TokenService>> OpenService(const Common& c,
                                                             bool read_only = false) {
    service::ServiceOptions o;
    o.data_dir = c.data;
    o.key_path = c.key_file;
    o.read_only = read_only;
    return service::TokenService::Open(o);
  }

  std::ostream& out_;
  std::ostream& err_;
  std::istream& in_;
  po::variables_map vm_;
};

std::int64_t Now() { return SystemClock::Get()->NowMicros(); }

Result<std::int32_t> ParseExpiry(const std::string& text) {
  auto day = ParseDate(text);
  if (!day) {
    return Err(Status::InvalidArgument("--expires '" + text + "' is not a YYYY-MM-DD date"));
  }
  return *day;
}

Result<std::uint64_t> ParseId(const std::string& text, const char* what) {
  std::uint64_t id = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || ptr != text.data() + text.size() || id == 0) {
    return Err(Status::InvalidArgument(std::string(what) + " '" + text +
                                       "' is not a positive integer"));
  }
  return id;
}

// ---- init -------------------------------------------------------------------------

int Init(const std::vector<std::string>& args, Command& cmd) {
  Common c;
  service::Policy policy;
  bool if_missing = false;
  auto opts = CommonOptions(&c, false);
  opts.add_options()("if-missing", po::bool_switch(&if_missing),
                     "succeed quietly (printing no token) if a ledger already exists")(
      "token-prefix", po::value(&policy.token_prefix)->default_value("glpat-"),
                     "prefix of every token of this ledger")(
      "max-lifetime-days", po::value(&policy.max_lifetime_days)->default_value(365),
      "maximum token lifetime in days (0: unlimited)");
  int exit = 0;
  if (!cmd.Parse(args, opts, {}, "init [--data DIR] [--key-file F] [--if-missing]", &exit)) {
    return exit;
  }
  service::ServiceOptions o;
  o.data_dir = c.data;
  o.key_path = c.key_file;
  o.policy = policy;
  auto r = service::TokenService::Init(o);
  if (!r && if_missing && r.error().code() == Status::Code::kAlreadyExists) {
    cmd.err_ << "patledger: a ledger already exists in " << c.data
             << "; its root token was printed when it was made.\n";
    return 0;
  }
  if (!r) return cmd.Fail(r.error());
  const auto& meta = r->root_token.info.meta;
  cmd.err_ << "Initialised a new ledger in " << c.data << ".\n"
           << "Administrator: root (user id " << r->root_user_id << ").\n"
           << "Root token: id " << meta.id << ", scopes api, sudo, expires "
           << (meta.expires_day == index::kNoExpiry ? std::string("never")
                                                    : FormatDate(meta.expires_day))
           << ".\nIt is printed once, on stdout: store it now; it cannot be shown again.\n";
  cmd.out_ << r->root_token.secret << "\n";
  return 0;
}

// ---- user -------------------------------------------------------------------------

void PrintUsers(std::ostream& out, const std::vector<replay::UserRecord>& users) {
  out << std::left << std::setw(6) << "ID" << std::setw(20) << "USERNAME" << std::setw(9)
      << "STATE" << std::setw(7) << "ADMIN" << "CREATED\n";
  for (const auto& u : users) {
    out << std::setw(6) << u.id << std::setw(20) << u.username << std::setw(9)
        << (u.blocked ? "blocked" : "active") << std::setw(7) << (u.admin ? "yes" : "no")
        << FormatTimestamp(u.created_at_us) << "\n";
  }
}

int User(const std::vector<std::string>& args, Command& cmd) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    cmd.out_ << "usage: patledger user add|block|unblock|admin|list ... (--help on each)\n";
    return args.empty() ? kUsage : 0;
  }
  const std::string verb = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  Common c;
  service::Actor actor;  // the local operator
  int exit = 0;
  if (verb == "add") {
    std::string username, name, email;
    bool admin = false;
    auto opts = CommonOptions(&c, true);
    opts.add_options()("username", po::value(&username)->required(), "unique username")(
        "name", po::value(&name)->required(), "display name")(
        "email", po::value(&email)->required(), "e-mail address")(
        "admin", po::bool_switch(&admin), "make the user an administrator");
    po::positional_options_description pos;
    pos.add("username", 1);
    if (!cmd.Parse(rest, opts, pos, "user add USERNAME --name N --email E [--admin]", &exit)) {
      return exit;
    }
    auto svc = cmd.OpenService(c);
    if (!svc) return cmd.Fail(svc.error());
    auto user = (*svc)->RegisterUser(actor, username, name, email, admin);
    if (!user) return cmd.Fail(user.error());
    if (c.json) {
      cmd.out_ << boost::json::serialize(service::UserJson(*user)) << "\n";
    } else {
      cmd.out_ << "Registered user " << user->username << " (id " << user->id << ")"
               << (user->admin ? " as an administrator" : "") << ".\n";
    }
    return 0;
  }
  if (verb == "block" || verb == "unblock" || verb == "admin") {
    std::string who;
    bool grant = false, remove = false;
    auto opts = CommonOptions(&c, false);
    opts.add_options()("user", po::value(&who)->required(), "username or id");
    if (verb == "admin") {
      opts.add_options()("grant", po::bool_switch(&grant), "make an administrator")(
          "remove", po::bool_switch(&remove), "remove administrator rights");
    }
    po::positional_options_description pos;
    pos.add("user", 1);
    const std::string synopsis =
        "user " + verb + " USER" + (verb == "admin" ? " --grant|--remove" : "");
    if (!cmd.Parse(rest, opts, pos, synopsis.c_str(), &exit)) return exit;
    if (verb == "admin" && grant == remove) {
      cmd.err_ << "patledger: give exactly one of --grant and --remove\n";
      return kUsage;
    }
    auto svc = cmd.OpenService(c);
    if (!svc) return cmd.Fail(svc.error());
    auto user = (*svc)->FindUser(who);
    if (!user) return cmd.Fail(user.error());
    Status s = verb == "block"     ? (*svc)->BlockUser(actor, user->id)
               : verb == "unblock" ? (*svc)->UnblockUser(actor, user->id)
                                   : (*svc)->SetAdmin(actor, user->id, grant);
    if (!s.ok()) return cmd.Fail(s);
    cmd.out_ << "User " << user->username << " (id " << user->id << "): "
             << (verb == "admin" ? (grant ? "administrator" : "not an administrator")
                                 : (verb == "block" ? "blocked" : "active"))
             << ".\n";
    return 0;
  }
  if (verb == "list") {
    auto opts = CommonOptions(&c, true);
    if (!cmd.Parse(rest, opts, {}, "user list [--json]", &exit)) return exit;
    auto svc = cmd.OpenService(c, /*read_only=*/true);
    if (!svc) return cmd.Fail(svc.error());
    auto users = (*svc)->state().Users();
    if (c.json) {
      for (const auto& u : users) cmd.out_ << boost::json::serialize(service::UserJson(u)) << "\n";
    } else {
      PrintUsers(cmd.out_, users);
    }
    return 0;
  }
  cmd.err_ << "patledger: unknown command 'user " << verb << "'\n" << kTopUsage;
  return kUsage;
}

// ---- token ------------------------------------------------------------------------

void PrintTokens(std::ostream& out, const std::vector<service::TokenInfo>& tokens,
                 std::int64_t now) {
  out << std::left << std::setw(6) << "ID" << std::setw(6) << "USER" << std::setw(20)
      << "NAME" << std::setw(10) << "STATE" << std::setw(12) << "EXPIRES" << "SCOPES\n";
  for (const auto& t : tokens) {
    const auto& m = t.meta;
    const char* state = m.revoked() ? "revoked"
                        : service::IsActive(m, now) ? "active"
                                                    : "expired";
    std::string name = t.name.size() > 19 ? t.name.substr(0, 18) + "~" : t.name;
    out << std::setw(6) << m.id << std::setw(6) << m.user_id << std::setw(20) << name
        << std::setw(10) << state << std::setw(12)
        << (m.expires_day == index::kNoExpiry ? std::string("never")
                                              : FormatDate(m.expires_day))
        << service::FormatScopes(m.scopes) << "\n";
  }
}

void PrintToken(std::ostream& out, const service::TokenInfo& t, std::int64_t now) {
  const auto& m = t.meta;
  out << "id:           " << m.id << "\n"
      << "name:         " << t.name << "\n"
      << "description:  " << t.description << "\n"
      << "user id:      " << m.user_id << "\n"
      << "scopes:       " << service::FormatScopes(m.scopes) << "\n"
      << "created at:   " << FormatTimestamp(m.created_at_us) << "\n"
      << "expires:      "
      << (m.expires_day == index::kNoExpiry ? std::string("never") : FormatDate(m.expires_day))
      << "\n"
      << "state:        "
      << (m.revoked() ? "revoked" : service::IsActive(m, now) ? "active" : "expired") << "\n";
  if (m.revoked()) {
    out << "revoked at:   " << FormatTimestamp(t.revoked_at_us) << " (" << t.revoke_reason
        << ")\n";
  }
  if (m.rotated_from) out << "rotated from: " << m.rotated_from << "\n";
  if (m.rotated_to) out << "rotated to:   " << m.rotated_to << "\n";
}

int PrintCreated(Command& cmd, const Common& c, const service::CreatedToken& created,
                 const char* what) {
  if (c.json) {
    cmd.out_ << boost::json::serialize(service::CreatedTokenJson(created, Now())) << "\n";
  } else {
    cmd.out_ << created.secret << "\n";
  }
  const auto& m = created.info.meta;
  cmd.err_ << what << " token " << m.id << " for user " << m.user_id << " (scopes "
           << service::FormatScopes(m.scopes) << ", expires "
           << (m.expires_day == index::kNoExpiry ? std::string("never")
                                                 : FormatDate(m.expires_day))
           << "). It is shown once: store it now.\n";
  return 0;
}

int Token(const std::vector<std::string>& args, Command& cmd) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    cmd.out_ << "usage: patledger token create|revoke|rotate|list|show ... (--help on each)\n";
    return args.empty() ? kUsage : 0;
  }
  const std::string verb = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  Common c;
  service::Actor actor;
  int exit = 0;
  if (verb == "create") {
    std::string who, name, description, scopes, expires;
    auto opts = CommonOptions(&c, true);
    opts.add_options()("user", po::value(&who)->required(), "owner: username or id")(
        "name", po::value(&name)->required(), "token name (1..255 characters)")(
        "description", po::value(&description), "up to 255 characters")(
        "scopes", po::value(&scopes)->required(), "comma-separated, e.g. api,read_user")(
        "expires", po::value(&expires), "expiry date YYYY-MM-DD (stops at 00:00 UTC)");
    if (!cmd.Parse(rest, opts, {},
                   "token create --user U --name N --scopes S[,S] [--expires DATE]", &exit)) {
      return exit;
    }
    service::CreateTokenRequest req;
    req.name = name;
    req.description = description;
    auto mask = service::ParseScopeList(scopes);
    if (!mask) return cmd.Fail(mask.error());
    req.scopes = *mask;
    if (!expires.empty()) {
      auto day = ParseExpiry(expires);
      if (!day) return cmd.Fail(day.error());
      req.expires_day = *day;
    }
    auto svc = cmd.OpenService(c);
    if (!svc) return cmd.Fail(svc.error());
    auto user = (*svc)->FindUser(who);
    if (!user) return cmd.Fail(user.error());
    req.user_id = user->id;
    auto created = (*svc)->CreateToken(actor, req);
    if (!created) return cmd.Fail(created.error());
    return PrintCreated(cmd, c, *created, "Created");
  }
  if (verb == "revoke" || verb == "rotate" || verb == "show") {
    std::string id_text, reason_text = "by_admin", expires;
    auto opts = CommonOptions(&c, verb != "revoke");
    opts.add_options()("id", po::value(&id_text)->required(), "token id");
    if (verb == "revoke") {
      opts.add_options()("reason", po::value(&reason_text)->default_value("by_admin"),
                         "by_admin, by_owner or reported_leaked");
    }
    if (verb == "rotate") {
      opts.add_options()("expires", po::value(&expires),
                         "expiry of the new token (default: in 7 days)");
    }
    po::positional_options_description pos;
    pos.add("id", 1);
    const std::string synopsis = "token " + verb + " ID";
    if (!cmd.Parse(rest, opts, pos, synopsis.c_str(), &exit)) return exit;
    auto id = ParseId(id_text, "token id");
    if (!id) return cmd.Fail(id.error());
    auto svc = cmd.OpenService(c, /*read_only=*/verb == "show");
    if (!svc) return cmd.Fail(svc.error());
    if (verb == "show") {
      auto info = (*svc)->GetToken(*id);
      if (!info) return cmd.Fail(info.error());
      if (c.json) {
        cmd.out_ << boost::json::serialize(service::TokenJson(*info, Now())) << "\n";
      } else {
        PrintToken(cmd.out_, *info, Now());
      }
      return 0;
    }
    if (verb == "revoke") {
      static const std::map<std::string, schema::RevokeReason> kReasons = {
          {"by_admin", schema::RevokeReason::ByAdmin},
          {"by_owner", schema::RevokeReason::ByOwner},
          {"reported_leaked", schema::RevokeReason::ReportedLeaked}};
      auto it = kReasons.find(reason_text);
      if (it == kReasons.end()) {
        return cmd.Fail(Status::InvalidArgument(
            "--reason must be by_admin, by_owner or reported_leaked"));
      }
      Status s = (*svc)->RevokeToken(actor, *id, it->second);
      if (!s.ok()) return cmd.Fail(s);
      cmd.out_ << "Revoked token " << *id << ".\n";
      return 0;
    }
    std::optional<std::int32_t> day;
    if (!expires.empty()) {
      auto d = ParseExpiry(expires);
      if (!d) return cmd.Fail(d.error());
      day = *d;
    }
    auto created = (*svc)->RotateToken(actor, *id, day);
    if (!created) return cmd.Fail(created.error());
    return PrintCreated(cmd, c, *created, "Rotated; new");
  }
  if (verb == "list") {
    std::string who;
    auto opts = CommonOptions(&c, true);
    opts.add_options()("user", po::value(&who), "only this user's tokens");
    if (!cmd.Parse(rest, opts, {}, "token list [--user U] [--json]", &exit)) return exit;
    auto svc = cmd.OpenService(c, /*read_only=*/true);
    if (!svc) return cmd.Fail(svc.error());
    std::vector<replay::UserRecord> users;
    if (!who.empty()) {
      auto user = (*svc)->FindUser(who);
      if (!user) return cmd.Fail(user.error());
      users.push_back(*user);
    } else {
      users = (*svc)->state().Users();
    }
    std::vector<service::TokenInfo> tokens;
    for (const auto& u : users) {
      auto mine = (*svc)->TokensOfUser(u.id);
      if (!mine) return cmd.Fail(mine.error());
      tokens.insert(tokens.end(), mine->begin(), mine->end());
    }
    std::sort(tokens.begin(), tokens.end(),
              [](const auto& a, const auto& b) { return a.meta.id < b.meta.id; });
    if (c.json) {
      for (const auto& t : tokens) {
        cmd.out_ << boost::json::serialize(service::TokenJson(t, Now())) << "\n";
      }
    } else {
      PrintTokens(cmd.out_, tokens, Now());
    }
    return 0;
  }
  cmd.err_ << "patledger: unknown command 'token " << verb << "'\n" << kTopUsage;
  return kUsage;
}

// ---- auth -------------------------------------------------------------------------

int Auth(const std::vector<std::string>& args, Command& cmd) {
  Common c;
  std::string token, scope, at;
  auto opts = CommonOptions(&c, true);
  opts.add_options()("token", po::value(&token)->required(),
                     "the token, or '-' to read it from stdin")(
      "scope", po::value(&scope), "a scope the token must grant")(
      "at", po::value(&at), "answer for this instant (ISO 8601, date, or @unix)");
  po::positional_options_description pos;
  pos.add("token", 1);
  int exit = 0;
  if (!cmd.Parse(args, opts, pos, "auth TOKEN|- [--scope S] [--at TIMESTAMP]", &exit)) {
    return exit;
  }
  if (token == "-") {
    std::getline(cmd.in_, token);
    while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  }
  service::ScopeSet required = 0;
  if (!scope.empty()) {
    auto mask = service::ParseScopeList(scope);
    if (!mask) return cmd.Fail(mask.error());
    required = *mask;
  }
  service::ServiceOptions o;
  o.data_dir = c.data;
  o.key_path = c.key_file;
  o.read_only = true;
  std::int64_t when = Now();
  if (!at.empty()) {
    auto t = ParseTimestamp(at);
    if (!t) {
      return cmd.Fail(Status::InvalidArgument(
          "--at '" + at + "' is not a timestamp (YYYY-MM-DD[THH:MM[:SS]][Z|+HH:MM] or @unix)"));
    }
    when = *t;
    o.replay_to.to_time_us = when;  // the ledger as it stood then
  }
  auto svc = service::TokenService::Open(o);
  if (!svc && !at.empty() && svc.error().code() == Status::Code::kNotFound &&
      std::filesystem::exists(std::filesystem::path(c.data) / "ledger")) {
    // Before the ledger existed no token did.
    cmd.err_ << "patledger: token not valid: unknown (the ledger was created after --at)\n";
    return 1;
  }
  if (!svc) return cmd.Fail(svc.error());
  const service::AuthResult r = (*svc)->Authenticate(token, when, required);
  if (c.json) {
    boost::json::object j;
    j["valid"] = r.ok();
    j["reason"] = service::AuthVerdictName(r.verdict);
    if (r.token_id) {
      j["user_id"] = r.user_id;
      j["token_id"] = r.token_id;
    }
    if (r.missing) j["missing_scopes"] = service::FormatScopes(r.missing);
    cmd.out_ << boost::json::serialize(j) << "\n";
  }
  if (r.ok()) {
    if (!c.json) {
      auto user = (*svc)->state().FindUser(r.user_id);
      cmd.out_ << "valid: user " << (user ? user->username : "?") << " (id " << r.user_id
               << "), token " << r.token_id << ", scopes " << service::FormatScopes(r.scopes)
               << "\n";
    }
    return 0;
  }
  cmd.err_ << "patledger: token not valid: " << service::AuthVerdictName(r.verdict);
  if (r.verdict == service::AuthVerdict::kInsufficientScope) {
    cmd.err_ << " (needs " << service::FormatScopes(r.missing) << ")";
  }
  if (r.token_id) cmd.err_ << " [token id " << r.token_id << "]";
  cmd.err_ << "\n";
  return 1;
}

}  // namespace

int RunCli(int argc, const char* const* argv, std::istream& in, std::ostream& out,
           std::ostream& err) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    err << kTopUsage;
    return kUsage;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  Command cmd(out, err, in);
  try {
    if (command == "help" || command == "--help" || command == "-h") {
      out << kTopUsage;
      return 0;
    }
    if (command == "serve") return Serve(args, out, err);
    if (command == "init") return Init(args, cmd);
    if (command == "user") return User(args, cmd);
    if (command == "token") return Token(args, cmd);
    if (command == "auth") return Auth(args, cmd);
    if (command == "verify" || command == "log" || command == "export" ||
        command == "history" || command == "state" || command == "diff" ||
        command == "triage" || command == "stats" || command == "backup" ||
        command == "restore" || command == "generate") {
      return forensics::Run(command, args, in, out, err);
    }
  } catch (const std::exception& e) {
    err << "patledger: internal error: " << e.what() << "\n";
    return 70;
  }
  err << "patledger: unknown command '" << command << "'\n\n" << kTopUsage;
  return kUsage;
}

}  // namespace patledger::tools
