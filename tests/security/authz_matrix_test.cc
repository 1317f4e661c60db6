// Specification of who may do what (issue 7, point 9): every endpoint of docs/api.md
// against every kind of credential, driven through Handler::Handle without sockets over
// a real ledger. The expected answer of every cell is written in kMatrix below, one row
// per endpoint, one column per credential, so the table reads as the authorization spec.
//
// Each cell runs in a world of its own: a fresh owner (with the token the path names),
// fresh credentials, a fresh user to block or unblock; so a cell that revokes, rotates or
// blocks cannot change the answer of another. Every refused cell must also leave the
// ledger untouched (no event appended).
//
// Then: mass assignment (bodies trying to set user_id, id, revoked, admin...) and
// self-service scope escalation (POST /user/personal_access_tokens asking for more than
// the calling token has).
//
// Where a cell follows GitLab against what docs/api.md first said, a comment names the
// GitLab source (docs/RELIABILITY.md, "Authorization matrix", lists them).

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>
#include <array>
#include <iomanip>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "api/handler.h"
#include "common/clock.h"
#include "service/scopes.h"
#include "service/token_format.h"
#include "service/token_service.h"
#include "tests/test_util.h"

namespace patledger::api {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;
using service::ScopeSet;

constexpr std::int64_t kNoon = 1'795'867'200'000'000LL;        // 2026-11-28T12:00:00Z
constexpr std::int64_t kStart = kNoon - 10 * kMicrosPerDay;    // when the ledger was made

// ---- the columns: kinds of credential ------------------------------------------------

enum Credential {
  kNone,         // no token at all
  kMalformed,    // the owner's token with its last character changed (bad checksum)
  kUnknown,      // well formed, valid checksum, never issued
  kExpired,      // api scope, expired yesterday
  kRevoked,      // api scope, revoked
  kBlocked,      // api scope, its owner is blocked
  kWrongScope,   // the owner's token with read_registry only (implies nothing)
  kOwner,        // the owner's api token (the positive baseline)
  kOther,        // another (non-admin) user's api token
  kAdmin,        // an admin's api token, no Sudo header
  kAdminSudo,    // an admin's api+sudo token, with `Sudo: <owner>`: acts as the owner
  kAdminNoSudo,  // an admin's api token (no sudo scope), with `Sudo: <owner>`
  kCredentials
};

constexpr std::array<std::string_view, kCredentials> kCredentialNames = {
    "none",  "malformed", "unknown", "expired", "revoked",    "blocked",
    "scope", "owner",     "other",   "admin",   "admin+sudo", "admin-sudo"};

// ---- the cells: expected status and which GitLab body ---------------------------------

enum class Body {
  kAny,           // a success: the endpoint's own body
  kUnauthorized,  // {"message":"401 Unauthorized"}
  kExpired,       // {"error":"invalid_token","error_description":"Token is expired..."}
  kRevoked,       // {"error":"invalid_token","error_description":"Token was revoked..."}
  kScope,         // {"error":"insufficient_scope",...}
  kForbidden,     // {"message":"403 Forbidden..."}
  kAccountBlocked,  // {"message":"403 Forbidden - Your account has been blocked."}
};

struct Expect {
  constexpr Expect(int s) : status(s) {}  // NOLINT: a bare status reads best in the table
  constexpr Expect(int s, Body b) : status(s), body(b) {}
  int status;
  Body body = Body::kAny;
};

constexpr Expect kUnauth{401, Body::kUnauthorized};
constexpr Expect kExpiredToken{401, Body::kExpired};
constexpr Expect kRevokedToken{401, Body::kRevoked};
constexpr Expect kScope{403, Body::kScope};
constexpr Expect kForbid{403, Body::kForbidden};
// A valid token whose owner is blocked: GitLab answers 403 "Your account has been
// blocked." (lib/api/api_guard.rb, find_current_user!: `forbidden!(api_access_denied_
// message(user))` unless api_access_allowed?; Gitlab::Auth::UserAccessDeniedReason).
// The handler answered 401 until this table caught it.
constexpr Expect kBlockedOwner{403, Body::kAccountBlocked};

// Placeholders in targets and bodies, replaced per cell:
//   {owner} {owner_name}  the owner user          {token}    the owner's target token
//   {blocked_user}        a blocked user          {missing}  a token id nobody has
//   {fresh}               an unused username      {expires}  a valid expiry date
struct Row {
  std::string_view method;
  std::string_view target;
  std::string_view body;
  std::array<Expect, kCredentials> expect;
};

// clang-format off
//   none     malformed unknown  expired        revoked        blocked
//   scope    owner     other    admin          admin+sudo     admin-sudo
const Row kMatrix[] = {
  // Users.
  {"GET", "/api/v4/user", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  200,     200,     200,           200,           kScope}},
  {"GET", "/api/v4/users/{owner}", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  200,     200,     200,           200,           kScope}},
  {"GET", "/api/v4/users", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  200,     200,     200,           200,           kScope}},
  {"GET", "/api/v4/users?username={owner_name}", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  200,     200,     200,           200,           kScope}},
  {"POST", "/api/v4/users", R"({"username":"{fresh}","name":"N","email":"{fresh}@example.com"})",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  kForbid, kForbid, 201,           kForbid,       kScope}},
  {"POST", "/api/v4/users/{owner}/block", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  kForbid, kForbid, 201,           kForbid,       kScope}},
  {"POST", "/api/v4/users/{blocked_user}/unblock", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  kForbid, kForbid, 201,           kForbid,       kScope}},
  // Personal access tokens: reading.
  {"GET", "/api/v4/personal_access_tokens", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  200,     200,     200,           200,           kScope}},
  {"GET", "/api/v4/personal_access_tokens?user_id={owner}", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  200,     kUnauth, 200,           200,           kScope}},
  {"GET", "/api/v4/personal_access_tokens/{token}", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  200,     kUnauth, 200,           200,           kScope}},
  // Not found or not yours: 404 for admins, 401 for users (GitLab).
  {"GET", "/api/v4/personal_access_tokens/{missing}", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  kUnauth, kUnauth, 404,           kUnauth,       kScope}},
  // /self works with any scope. Under sudo patledger resolves /self against the acting
  // user, who does not own the admin's token: 401 (GitLab presents the admin's token;
  // stricter here, reported, not marked).
  {"GET", "/api/v4/personal_access_tokens/self", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    200,     200,     200,     200,           kUnauth,       kScope}},
  // Revoking.
  {"DELETE", "/api/v4/personal_access_tokens/{token}", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  204,     kUnauth, 204,           204,           kScope}},
  {"DELETE", "/api/v4/personal_access_tokens/self", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    204,     204,     204,     204,           kUnauth,       kScope}},
  // Rotating.
  {"POST", "/api/v4/personal_access_tokens/{token}/rotate", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  200,     kUnauth, 200,           200,           kScope}},
  // scope column: GitLab's self rotation needs `api` (or `self_rotate`, which patledger
  // does not have): lib/api/personal_access_tokens/self_rotation.rb,
  // `allow_access_with_scope :api` / `:self_rotate` (MR 142664, 178111). The handler let
  // any token rotate itself — a leaked read-only token could renew itself for a year —
  // until this table caught it.
  {"POST", "/api/v4/personal_access_tokens/self/rotate", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  200,     200,     200,           kUnauth,       kScope}},
  // Creating.
  {"POST", "/api/v4/users/{owner}/personal_access_tokens",
   R"({"name":"m","scopes":["read_user"],"expires_at":"{expires}"})",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  kForbid, kForbid, 201,           kForbid,       kScope}},
  {"POST", "/api/v4/user/personal_access_tokens",
   R"({"name":"m","scopes":["read_user"],"expires_at":"{expires}"})",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kBlockedOwner,
    kScope,  201,     201,     201,           201,           kScope}},
  // Forward auth (patledger's own endpoint, not GitLab's): Sudo is ignored, a blocked
  // owner is 401.
  {"GET", "/api/v4/auth", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kUnauth,
    200,     200,     200,     200,           200,           200}},
  {"GET", "/api/v4/auth?scope=api", "",
   {kUnauth, kUnauth, kUnauth, kExpiredToken, kRevokedToken, kUnauth,
    kScope,  200,     200,     200,           200,           200}},
  // What the Access tokens page reads without a token, and the page itself: no
  // credential is looked at.
  {"GET", "/api/v4/-/scopes", "",
   {200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200}},
  {"GET", "/api/v4/-/policy", "",
   {200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200}},
  {"GET", "/-/user_settings/personal_access_tokens", "",
   {200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200}},
  // Health: no credential is looked at.
  {"GET", "/-/liveness", "",
   {200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200}},
  {"GET", "/-/readiness", "",
   {200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200}},
};
// clang-format on

// ---- the fixture ---------------------------------------------------------------------

struct Reply {
  int status = 0;
  json::value body;
  std::string raw;
};

void ReplaceAll(std::string* s, std::string_view from, std::string_view to) {
  for (auto at = s->find(from); at != std::string::npos; at = s->find(from, at + to.size())) {
    s->replace(at, from.size(), to);
  }
}

class AuthzFixture {
 public:
  AuthzFixture() : clock_(kStart) {
    options_.data_dir = dir_.path();
    options_.clock = &clock_;
    auto init = service::TokenService::Init(options_);
    BOOST_TEST_REQUIRE(init.has_value(), Why(init));
    root_id_ = init->root_user_id;
    auto opened = service::TokenService::Open(options_);
    BOOST_TEST_REQUIRE(opened.has_value(), Why(opened));
    service_ = std::move(*opened);
    handler_.SetService(service_.get());

    // The credentials that fail before any ownership question, shared by every cell.
    // The expired one is made while the clock still reads kStart, to expire tomorrow.
    const std::uint64_t holder = User("holder", false);
    expired_ = Token(holder, service::kApi, DayOf(kStart) + 1);
    clock_.Set(kNoon);
    revoked_ = Token(holder, service::kApi);
    BOOST_TEST_REQUIRE(
        service_->RevokeToken({}, Id(revoked_), schema::RevokeReason::ByOwner).ok());
    const std::uint64_t blocked = User("blockedowner", false);
    blocked_ = Token(blocked, service::kApi);
    BOOST_TEST_REQUIRE(service_->BlockUser({}, blocked).ok());
    auto unknown = service::GenerateToken(service::kDefaultTokenPrefix);
    BOOST_TEST_REQUIRE(unknown.has_value(), Why(unknown));
    unknown_ = *unknown;
    admin_id_ = User("dora", true);
  }

  // Setup goes through the service directly: it is not what is under test.
  std::uint64_t User(const std::string& name, bool admin) {
    auto u = service_->RegisterUser({}, name, name, name + "@example.com", admin);
    BOOST_TEST_REQUIRE(u.has_value(), Why(u));
    return u->id;
  }

  std::string Token(std::uint64_t user, ScopeSet scopes,
                    std::optional<std::int32_t> expires = std::nullopt) {
    service::CreateTokenRequest req;
    req.user_id = user;
    req.name = "t";
    req.scopes = scopes;
    req.expires_day = expires ? *expires : DayOf(clock_.NowMicros()) + 20;
    auto t = service_->CreateToken({}, req);
    BOOST_TEST_REQUIRE(t.has_value(), Why(t));
    return t->secret;
  }

  std::uint64_t Id(const std::string& token) {
    return service_->Authenticate(token, clock_.NowMicros()).token_id;
  }

  std::uint64_t LastSeq() const { return service_->ledger().last_seq(); }

  Reply Call(std::string_view method, const std::string& target, const std::string& token,
             const std::string& body = "",
             const std::vector<std::pair<std::string, std::string>>& headers = {},
             std::string_view content_type = "application/json") {
    Request req(http::string_to_verb(method), target, 11);
    req.set(http::field::host, "test.local");
    if (!token.empty()) req.set("PRIVATE-TOKEN", token);
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty()) {
      req.set(http::field::content_type, content_type);
      req.body() = body;
      req.prepare_payload();
    }
    Exchange ex;
    ex.client_address = "192.0.2.7";
    Response res = handler_.Handle(req, &ex);
    Reply r;
    r.status = res.result_int();
    r.raw = res.body();
    boost::system::error_code ec;
    if (!r.raw.empty()) r.body = json::parse(r.raw, ec);
    return r;
  }

  // Runs one cell in a world of its own; returns the reply and sets *seq_moved.
  Reply RunCell(const Row& row, Credential cred, int cell, bool* seq_moved) {
    const std::string n = std::to_string(cell);
    const std::uint64_t owner = User("o" + n, false);
    const std::string owner_token = Token(owner, service::kApi);
    const std::string target_token = Token(owner, service::kApi);
    std::string token;
    std::vector<std::pair<std::string, std::string>> headers;
    switch (cred) {
      case kNone: break;
      case kMalformed:
        token = owner_token;
        token.back() = token.back() == 'A' ? 'B' : 'A';
        break;
      case kUnknown: token = unknown_; break;
      case kExpired: token = expired_; break;
      case kRevoked: token = revoked_; break;
      case kBlocked: token = blocked_; break;
      case kWrongScope: token = Token(owner, service::kReadRegistry); break;
      case kOwner: token = owner_token; break;
      case kOther: token = Token(User("x" + n, false), service::kApi); break;
      case kAdmin: token = Token(admin_id_, service::kApi); break;
      case kAdminSudo:
        token = Token(root_id_, service::kApi | service::kSudo);
        headers.emplace_back("Sudo", "o" + n);
        break;
      case kAdminNoSudo:
        token = Token(admin_id_, service::kApi);
        headers.emplace_back("Sudo", "o" + n);
        break;
      case kCredentials: break;
    }
    std::string target(row.target), body(row.body);
    for (std::string* s : {&target, &body}) {
      ReplaceAll(s, "{owner_name}", "o" + n);
      ReplaceAll(s, "{owner}", std::to_string(owner));
      ReplaceAll(s, "{token}", std::to_string(Id(target_token)));
      ReplaceAll(s, "{missing}", "999999");
      ReplaceAll(s, "{fresh}", "n" + n);
      ReplaceAll(s, "{expires}", FormatDate(DayOf(kNoon) + 20));
      if (s->find("{blocked_user}") != std::string::npos) {
        const std::uint64_t b = User("b" + n, false);
        BOOST_TEST_REQUIRE(service_->BlockUser({}, b).ok());
        ReplaceAll(s, "{blocked_user}", std::to_string(b));
      }
    }
    const std::uint64_t before = LastSeq();
    Reply r = Call(row.method, target, token, body, headers);
    *seq_moved = LastSeq() != before;
    return r;
  }

  TempDir dir_;
  ManualClock clock_;
  service::ServiceOptions options_;
  std::unique_ptr<service::TokenService> service_;
  Handler handler_;
  std::uint64_t root_id_ = 0, admin_id_ = 0;
  std::string expired_, revoked_, blocked_, unknown_;
};

// Does `r` carry the body `b` names?
bool BodyIs(const Reply& r, Body b) {
  auto field = [&](std::string_view key) -> std::string {
    if (!r.body.is_object()) return {};
    const json::value* v = r.body.as_object().if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
  };
  switch (b) {
    case Body::kAny: return true;
    case Body::kUnauthorized: return r.raw == R"({"message":"401 Unauthorized"})";
    case Body::kExpired:
      return field("error") == "invalid_token" &&
             field("error_description").starts_with("Token is expired");
    case Body::kRevoked:
      return field("error") == "invalid_token" &&
             field("error_description").starts_with("Token was revoked");
    case Body::kScope: return field("error") == "insufficient_scope";
    case Body::kForbidden: return field("message").starts_with("403 Forbidden");
    case Body::kAccountBlocked:
      return field("message") == "403 Forbidden - Your account has been blocked.";
  }
  return false;
}

std::string RowName(const Row& row) {
  return std::string(row.method) + " " + std::string(row.target);
}

BOOST_FIXTURE_TEST_SUITE(authorization_matrix, AuthzFixture)

BOOST_AUTO_TEST_CASE(every_endpoint_answers_every_credential_as_the_table_says) {
  std::ostringstream table;  // what each cell answered; '!' marks a cell that differs
  table << std::left << std::setw(58) << "endpoint \\ credential";
  for (auto name : kCredentialNames) table << std::setw(11) << name;
  table << "\n";
  int cell = 0, cells = 0, wrong = 0;
  for (const Row& row : kMatrix) {
    table << std::setw(58) << RowName(row).substr(0, 57);
    for (int c = 0; c < kCredentials; ++c) {
      const Credential cred = static_cast<Credential>(c);
      const Expect& want = row.expect[c];
      bool seq_moved = false;
      const Reply r = RunCell(row, cred, ++cell, &seq_moved);
      const bool ok = r.status == want.status && BodyIs(r, want.body) &&
                      (r.status < 400 || !seq_moved);
      ++cells;
      if (!ok) ++wrong;
      table << std::setw(11) << (std::to_string(r.status) + (ok ? "" : "!"));
      BOOST_TEST_CONTEXT(RowName(row) << " as " << kCredentialNames[c]) {
        BOOST_TEST(r.status == want.status, "answered " << r.status << " " << r.raw);
        BOOST_TEST(BodyIs(r, want.body), "body " << r.raw);
        // A refused request changes nothing.
        BOOST_TEST((r.status < 400 || !seq_moved), "a refused request appended an event");
      }
    }
    table << "\n";
  }
  BOOST_TEST_MESSAGE("authorization matrix: " << cells << " cells, " << wrong
                                              << " differ from the table\n"
                                              << table.str());
  BOOST_TEST(cells == static_cast<int>(std::size(kMatrix)) * kCredentials);
}

// ---- mass assignment -------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(create_for_a_user_ignores_user_id_id_revoked_and_token_in_the_body) {
  const std::uint64_t alice = User("alice", false), bob = User("bob", false);
  const std::string admin = Token(admin_id_, service::kApi);
  const std::string planted = unknown_;
  const std::string body =
      R"({"name":"m","scopes":["read_api"],"expires_at":")" + FormatDate(DayOf(kNoon) + 5) +
      R"(","user_id":)" + std::to_string(bob) +
      R"(,"id":1,"revoked":true,"active":false,"token":")" + planted +
      R"(","created_at":"2020-01-01T00:00:00Z","rotated_from":1,"revoke_reason":"by_admin"})";
  // The body as JSON, and user_id again in the query string.
  const std::string target = "/api/v4/users/" + std::to_string(alice) +
                             "/personal_access_tokens?user_id=" + std::to_string(bob);
  Reply r = Call("POST", target, admin, body);
  BOOST_TEST_REQUIRE(r.status == 201, r.raw);
  const json::object& o = r.body.as_object();
  BOOST_TEST(o.at("user_id").to_number<std::uint64_t>() == alice);
  BOOST_TEST(o.at("id").to_number<std::uint64_t>() != 1u);
  BOOST_TEST(o.at("revoked").as_bool() == false);
  BOOST_TEST(o.at("active").as_bool() == true);
  BOOST_TEST(o.at("rotated_from").is_null());
  BOOST_TEST(std::string(o.at("created_at").as_string()).starts_with("2026-11-28"));
  const std::string issued(o.at("token").as_string());
  BOOST_TEST(issued != planted);
  // What the ledger says, not just what the response said.
  const auto auth = service_->Authenticate(issued, kNoon, service::kReadApi);
  BOOST_TEST(auth.ok());
  BOOST_TEST(auth.user_id == alice);
  BOOST_TEST((service_->Authenticate(planted, kNoon).verdict == service::AuthVerdict::kUnknown));
  BOOST_TEST(service_->state().TokensOfUser(bob).empty());
}

BOOST_AUTO_TEST_CASE(self_service_creation_ignores_user_id_in_json_form_and_query) {
  const std::uint64_t alice = User("alice", false), bob = User("bob", false);
  const std::string token = Token(alice, service::kApi);
  const std::string date = FormatDate(DayOf(kNoon) + 5);
  const std::string b = std::to_string(bob);
  const Reply replies[] = {
      Call("POST", "/api/v4/user/personal_access_tokens", token,
           R"({"name":"j","scopes":["read_user"],"expires_at":")" + date + R"(","user_id":)" +
               b + R"(,"revoked":"true","id":"1"})"),
      Call("POST", "/api/v4/user/personal_access_tokens", token,
           "name=f&scopes[]=read_user&expires_at=" + date + "&user_id=" + b +
               "&revoked=true&id=1",
           {}, "application/x-www-form-urlencoded"),
      Call("POST",
           "/api/v4/user/personal_access_tokens?name=q&scopes=read_user&expires_at=" + date +
               "&user_id=" + b + "&revoked=true&id=1",
           token),
  };
  for (const Reply& r : replies) {
    BOOST_TEST_REQUIRE(r.status == 201, r.raw);
    BOOST_TEST(r.body.at("user_id").to_number<std::uint64_t>() == alice);
    BOOST_TEST(r.body.at("revoked").as_bool() == false);
    BOOST_TEST(r.body.at("id").to_number<std::uint64_t>() != 1u);
  }
  BOOST_TEST(service_->state().TokensOfUser(bob).empty());
}

BOOST_AUTO_TEST_CASE(rotation_ignores_owner_scopes_and_name_in_the_body) {
  const std::uint64_t alice = User("alice", false), bob = User("bob", false);
  const std::string token = Token(alice, service::kReadUser | service::kApi);
  const std::uint64_t id = Id(token);
  Reply r = Call("POST", "/api/v4/personal_access_tokens/self/rotate", token,
                 R"({"user_id":)" + std::to_string(bob) +
                     R"(,"scopes":["sudo","api"],"name":"evil","revoked":false,"id":1})");
  BOOST_TEST_REQUIRE(r.status == 200, r.raw);
  BOOST_TEST(r.body.at("user_id").to_number<std::uint64_t>() == alice);
  BOOST_TEST(r.body.at("name").as_string() == "t");
  BOOST_TEST(r.body.at("rotated_from").to_number<std::uint64_t>() == id);
  const auto auth = service_->Authenticate(std::string(r.body.at("token").as_string()), kNoon);
  BOOST_TEST(auth.ok());
  BOOST_TEST(auth.user_id == alice);
  BOOST_TEST((auth.scopes & service::kSudo) == 0u);
  BOOST_TEST((service_->Authenticate(token, kNoon).verdict == service::AuthVerdict::kRevoked));
}

BOOST_AUTO_TEST_CASE(user_creation_ignores_id_is_admin_and_state) {
  const std::string admin = Token(admin_id_, service::kApi);
  Reply r = Call("POST", "/api/v4/users", admin,
                 R"({"username":"mallory","name":"M","email":"m@example.com","id":1,)"
                 R"("is_admin":true,"state":"blocked","created_at":"2020-01-01T00:00:00Z"})");
  BOOST_TEST_REQUIRE(r.status == 201, r.raw);
  BOOST_TEST(r.body.at("id").to_number<std::uint64_t>() != 1u);
  BOOST_TEST(r.body.at("is_admin").as_bool() == false);
  BOOST_TEST(r.body.at("state").as_string() == "active");
  auto user = service_->state().FindUserByName("mallory");
  BOOST_TEST_REQUIRE(user.has_value());
  BOOST_TEST(!user->admin);
  BOOST_TEST(!user->blocked);
}

// ---- self-service scope escalation ------------------------------------------------------

struct Escalation {
  std::string_view who;       // "user", "admin", "root", "root as user", "demoted"
  ScopeSet token_scopes;      // of the calling token
  std::string_view asks;      // the scopes field
  int status;
};

// clang-format off
const Escalation kEscalations[] = {
  // A user's api token: anything api implies, never sudo.
  {"user",         service::kApi,                   R"(["read_user","read_api","write_registry"])", 201},
  {"user",         service::kApi,                   R"(["api"])",                                  201},
  {"user",         service::kApi,                   R"(["sudo"])",                                 403},
  {"user",         service::kApi,                   R"(["api","sudo"])",                           403},
  // Without api the endpoint is closed, whatever is asked.
  {"user",         service::kReadApi,               R"(["read_user"])",                            403},
  {"user",         service::kReadUser | service::kReadApi | service::kWriteRepository,
                                                    R"(["read_user"])",                            403},
  // An admin's api token (no sudo scope) cannot mint sudo either.
  {"admin",        service::kApi,                   R"(["sudo"])",                                 403},
  {"admin",        service::kApi,                   R"(["api"])",                                  201},
  // An admin token with sudo may pass it on, to its own owner only.
  {"root",         service::kApi | service::kSudo,  R"(["sudo"])",                                 201},
  // Under sudo the token is created for the acting (non-admin) user: sudo is refused.
  {"root as user", service::kApi | service::kSudo,  R"(["sudo"])",                                 400},
  // A demoted admin's api+sudo token: sudo no longer counts, so it cannot be granted.
  {"demoted",      service::kApi | service::kSudo,  R"(["sudo"])",                                 403},
  {"demoted",      service::kApi | service::kSudo,  R"(["api"])",                                  201},
};
// clang-format on

BOOST_AUTO_TEST_CASE(self_service_creation_never_grants_more_than_the_calling_token_has) {
  const std::uint64_t alice = User("alice", false);
  const std::uint64_t demoted = User("demoted", true);
  int n = 0;
  for (const Escalation& e : kEscalations) {
    BOOST_TEST_CONTEXT(e.who << " " << service::FormatScopes(e.token_scopes) << " asks "
                             << e.asks) {
      std::string token;
      std::vector<std::pair<std::string, std::string>> headers;
      std::uint64_t acting = alice;
      if (e.who == "user") {
        token = Token(alice, e.token_scopes);
      } else if (e.who == "admin") {
        token = Token(admin_id_, e.token_scopes);
        acting = admin_id_;
      } else if (e.who == "root") {
        token = Token(root_id_, e.token_scopes);
        acting = root_id_;
      } else if (e.who == "root as user") {
        token = Token(root_id_, e.token_scopes);
        headers.emplace_back("Sudo", "alice");
      } else {
        if (!service_->state().FindUser(demoted)->admin) {
          BOOST_TEST_REQUIRE(service_->SetAdmin({}, demoted, true).ok());
        }
        token = Token(demoted, e.token_scopes);
        BOOST_TEST_REQUIRE(service_->SetAdmin({}, demoted, false).ok());
        acting = demoted;
      }
      const std::size_t before = service_->state().TokensOfUser(acting).size();
      Reply r = Call("POST", "/api/v4/user/personal_access_tokens", token,
                     R"({"name":"e)" + std::to_string(++n) + R"(","scopes":)" +
                         std::string(e.asks) + R"(,"expires_at":")" +
                         FormatDate(DayOf(kNoon) + 5) + R"("})",
                     headers);
      BOOST_TEST(r.status == e.status, r.raw);
      const std::size_t after = service_->state().TokensOfUser(acting).size();
      BOOST_TEST(after == before + (r.status == 201 ? 1u : 0u));
      if (r.status == 201) {
        BOOST_TEST(r.body.at("user_id").to_number<std::uint64_t>() == acting);
      }
      if (e.status == 403 && (e.token_scopes & service::kApi) != 0) {
        // The refusal names what was withheld.
        BOOST_TEST(r.raw.find("sudo") != std::string::npos, r.raw);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(a_demoted_admin_cannot_use_sudo_any_more) {
  const std::uint64_t demoted = User("demoted", true);
  User("alice", false);
  const std::string token = Token(demoted, service::kApi | service::kSudo);
  BOOST_TEST(Call("GET", "/api/v4/user", token, "", {{"Sudo", "alice"}}).status == 200);
  BOOST_TEST_REQUIRE(service_->SetAdmin({}, demoted, false).ok());
  Reply r = Call("GET", "/api/v4/user", token, "", {{"Sudo", "alice"}});
  BOOST_TEST(r.status == 403);
  BOOST_TEST(r.raw.find("Must be admin to use sudo") != std::string::npos, r.raw);
  BOOST_TEST(Call("POST", "/api/v4/users", token,
                  R"({"username":"z","name":"z","email":"z@example.com"})")
                 .status == 403);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::api
