#include "api/handler.h"

#include <algorithm>
#include <cctype>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <cmath>

#include "api/request.h"
#include "common/clock.h"
#include "service/scopes.h"
#include "service/token_format.h"
#include "service/views.h"
#include "web/assets.h"

namespace patledger::api {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;
using service::AuthVerdict;
using service::ScopeSet;

constexpr std::string_view kApi = "/api/v4";
constexpr int kDefaultPerPage = 20;
constexpr int kMaxPerPage = 100;

// ---- responses ---------------------------------------------------------------------

Response Make(const Request& req, http::status status) {
  Response res(status, req.version());
  res.keep_alive(req.keep_alive());
  return res;
}

Response Json(const Request& req, http::status status, const json::value& body) {
  Response res = Make(req, status);
  res.set(http::field::content_type, "application/json");
  res.body() = json::serialize(body);
  res.prepare_payload();
  return res;
}

Response Message(const Request& req, http::status status, std::string message) {
  return Json(req, status, json::object{{"message", std::move(message)}});
}

Response Unauthorized(const Request& req) {
  return Message(req, http::status::unauthorized, "401 Unauthorized");
}

Response InvalidToken(const Request& req, const HandlerOptions& o, std::string_view what) {
  Response res = Json(req, http::status::unauthorized,
                      json::object{{"error", "invalid_token"}, {"error_description", what}});
  res.set(http::field::www_authenticate,
          "Bearer realm=\"" + o.realm + "\", error=\"invalid_token\", error_description=\"" +
              std::string(what) + "\"");
  return res;
}

Response InsufficientScope(const Request& req, const HandlerOptions& o, ScopeSet needed) {
  const std::string scope = service::FormatScopes(needed);
  Response res = Json(
      req, http::status::forbidden,
      json::object{{"error", "insufficient_scope"},
                   {"error_description",
                    "The request requires higher privileges than provided by the access token."},
                   {"scope", scope}});
  res.set(http::field::www_authenticate,
          "Bearer realm=\"" + o.realm +
              "\", error=\"insufficient_scope\", error_description=\"The request requires "
              "higher privileges than provided by the access token.\", scope=\"" +
              scope + "\"");
  return res;
}

// GitLab's API answers a rate limit with 429, Retry-After and {"message": ...}; its
// failed-authentication ban (403, no headers) names the reason. We send the 429 with
// the reason, so a client can tell a ban from a bad token and knows when to retry.
Response TooManyFailures(const Request& req, std::int64_t micros_left) {
  Response res = Message(req, http::status::too_many_requests,
                         "429 Too Many Requests - Too many failed authentication attempts "
                         "from this address. Try again later.");
  const std::int64_t seconds = std::max<std::int64_t>(1, (micros_left + 999'999) / 1'000'000);
  res.set(http::field::retry_after, std::to_string(seconds));
  res.prepare_payload();
  return res;
}

// A presented token that is not a token of ours, or no longer valid: what the
// failed-authentication ban counts. (A valid token lacking a scope, or a blocked
// owner's token, is a real token: not a guess.)
bool IsFailedAuthentication(AuthVerdict v) {
  return v == AuthVerdict::kMalformed || v == AuthVerdict::kUnknown ||
         v == AuthVerdict::kExpired || v == AuthVerdict::kRevoked;
}

// Every value of a header that may be sent several times, joined by commas (RFC 9110).
std::string JoinedHeader(const Request& req, std::string_view name) {
  std::string out;
  for (auto [it, end] = req.equal_range(name); it != end; ++it) {
    if (!out.empty()) out.push_back(',');
    out.append(it->value());
  }
  return out;
}

constexpr std::string_view kExpired =
    "Token is expired. You can either do re-authorization or token refresh.";
constexpr std::string_view kRevoked =
    "Token was revoked. You have to re-authorize from the user.";

// The one place a Status becomes an HTTP status.
Response ErrorResponse(const Request& req, const Status& s) {
  using C = Status::Code;
  switch (s.code()) {
    case C::kInvalidArgument:
      return Message(req, http::status::bad_request, "400 Bad request - " + s.message());
    case C::kNotFound:
      return Message(req, http::status::not_found, "404 " + s.message());
    case C::kAlreadyExists:
      return Message(req, http::status::conflict, s.message());
    case C::kFailedPrecondition:
      return Message(req, http::status::bad_request, "400 Bad request - " + s.message());
    case C::kPermissionDenied:
      return Message(req, http::status::forbidden, "403 Forbidden - " + s.message());
    case C::kUnauthenticated:
      return Unauthorized(req);
    case C::kIOError:
      // Nothing was acknowledged; the client may retry once storage recovers.
      return Message(req, http::status::service_unavailable,
                     "503 Service Unavailable - the ledger could not record the change");
    case C::kCorruption:
    case C::kInternal:
    case C::kOk:
      break;
  }
  return Message(req, http::status::internal_server_error, "500 Internal Server Error");
}

Response MissingParam(const Request& req, std::string_view name) {
  return Json(req, http::status::bad_request,
              json::object{{"error", std::string(name) + " is missing"}});
}

Response BadParam(const Request& req, std::string_view name, std::string_view why) {
  return Json(req, http::status::bad_request,
              json::object{{"error", std::string(name) + " " + std::string(why)}});
}

// ---- small parsers -----------------------------------------------------------------

std::optional<std::uint64_t> ParseId(std::string_view s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v == 0) return std::nullopt;
  return v;
}

std::optional<bool> ParseBool(std::string_view s) {
  if (s == "true" || s == "1") return true;
  if (s == "false" || s == "0") return false;
  return std::nullopt;
}

std::vector<std::string_view> Split(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    const auto slash = path.find('/');
    parts.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return parts;
}

// ---- the authenticated caller ------------------------------------------------------

struct Caller {
  replay::UserRecord user;      // the acting user (the sudo target under sudo)
  std::uint64_t token_user_id;  // the token's owner
  std::uint64_t token_id = 0;
  ScopeSet scopes = 0;          // effective scopes of the token
  bool via_sudo = false;
  bool admin() const { return user.admin; }
};

class Context {
 public:
  Context(const Request& req, const HandlerOptions& options, service::TokenService& svc,
          AuthThrottle& throttle, ParsedRequest parsed, Exchange* exchange)
      : req(req), options(options), svc(svc), throttle(throttle),
        params(std::move(parsed.params)), path(std::move(parsed.path)), exchange(exchange) {
    now = exchange->now_us ? exchange->now_us : svc.clock().NowMicros();
  }

  // For a request that presents a token, before it is looked at: 429 if the client is
  // banned, so a banned client learns nothing, not even which guess would have worked.
  // When no ban is in force anywhere this is a clock read and one atomic load.
  std::optional<Response> RefuseIfBanned() {
    if (!throttle.enabled()) return std::nullopt;
    throttle_now_ = throttle.NowMicros();
    if (!throttle.AnyBan(throttle_now_)) return std::nullopt;
    const auto key = ThrottleKey();
    if (!key) return std::nullopt;
    if (const std::int64_t left = throttle.BannedFor(*key, throttle_now_); left > 0) {
      return TooManyFailures(req, left);
    }
    return std::nullopt;
  }

  // After authenticating: counts a failed authentication against the client. Only
  // failures write to the throttle's table.
  void CountVerdict(AuthVerdict verdict) {
    if (!throttle.enabled() || !IsFailedAuthentication(verdict)) return;
    if (const auto key = ThrottleKey()) throttle.RecordFailure(*key, throttle_now_);
  }

  // Authenticates the request for `required` (effective scopes, with implications).
  // On failure returns the response to send.
  std::optional<Response> Authenticate(ScopeSet required) {
    const std::string token = PresentedToken(req, params, /*include_original_uri=*/false);
    if (token.empty()) return Unauthorized(req);
    if (auto refused = RefuseIfBanned()) return refused;
    const service::AuthResult r = svc.Authenticate(token, now, required);
    CountVerdict(r.verdict);
    exchange->user_id = r.user_id;
    exchange->token_id = r.token_id;
    switch (r.verdict) {
      case AuthVerdict::kOk: break;
      case AuthVerdict::kMalformed:
      case AuthVerdict::kUnknown:
        return Unauthorized(req);
      case AuthVerdict::kOwnerBlocked:  // GitLab: lib/api/api_guard.rb
        return Message(req, http::status::forbidden,
                       "403 Forbidden - Your account has been blocked.");
      case AuthVerdict::kExpired: return InvalidToken(req, options, kExpired);
      case AuthVerdict::kRevoked: return InvalidToken(req, options, kRevoked);
      case AuthVerdict::kInsufficientScope: return InsufficientScope(req, options, r.missing);
    }
    auto owner = svc.state().FindUser(r.user_id);
    if (!owner) return Unauthorized(req);
    caller.user = *owner;
    caller.token_user_id = r.user_id;
    caller.token_id = r.token_id;
    caller.scopes = r.scopes;

    std::optional<std::string_view> sudo;
    if (auto h = req.find("Sudo"); h != req.end()) sudo = h->value();
    if (!sudo) sudo = params.Get("sudo");
    if (sudo) {
      if (!owner->admin) {
        return Message(req, http::status::forbidden, "403 Forbidden - Must be admin to use sudo");
      }
      if ((r.scopes & service::kSudo) == 0) {
        return InsufficientScope(req, options, service::kSudo);
      }
      auto target = svc.FindUser(*sudo);
      if (!target) return ErrorResponse(req, target.error());
      caller.user = *target;
      caller.via_sudo = true;
      exchange->user_id = target->id;
    }
    return std::nullopt;
  }

  service::Actor Actor() const {
    service::Actor a;
    a.user_id = caller.user.id;
    a.token_id = caller.token_id;
    a.via_sudo = caller.via_sudo;
    a.client_address = exchange->client_address;
    if (auto h = req.find("X-Request-Id"); h != req.end()) {
      // Recorded in the ledger: mask anything that may be a token's secret.
      a.request_id = FilteredTarget(h->value().substr(0, 128));
    }
    return a;
  }

  const Request& req;
  const HandlerOptions& options;
  service::TokenService& svc;
  AuthThrottle& throttle;
  Params params;
  std::string path;
  Exchange* exchange;
  std::int64_t now = 0;
  Caller caller;

 private:
  // The client address the throttle counts against, worked out once per request.
  std::optional<IpBytes> ThrottleKey() {
    if (!throttle_key_known_) {
      throttle_key_ = throttle.KeyFor(exchange->client_address,
                                      JoinedHeader(req, "X-Forwarded-For"),
                                      JoinedHeader(req, "X-Real-IP"));
      throttle_key_known_ = true;
    }
    return throttle_key_;
  }

  std::int64_t throttle_now_ = 0;  // the throttle's clock, read by RefuseIfBanned
  std::optional<IpBytes> throttle_key_;
  bool throttle_key_known_ = false;
};

// ---- endpoints ---------------------------------------------------------------------

// GET /api/v4/auth: forward auth for gateways. The hot path.
Response ForwardAuth(Context& c) {
  const std::string token = PresentedToken(c.req, c.params, /*include_original_uri=*/true);
  if (token.empty()) return Unauthorized(c.req);
  if (auto refused = c.RefuseIfBanned()) return std::move(*refused);
  ScopeSet required = 0;
  std::string_view scope_text;
  if (auto s = c.params.Get("scope")) {
    scope_text = *s;
  } else if (auto h = c.req.find("X-Required-Scope"); h != c.req.end()) {
    scope_text = h->value();
  }
  if (!scope_text.empty()) {
    auto mask = service::ParseScopeList(scope_text);
    if (!mask) return ErrorResponse(c.req, mask.error());
    required = *mask;
  }
  const service::AuthResult r = c.svc.Authenticate(token, c.now, required);
  c.CountVerdict(r.verdict);
  c.exchange->user_id = r.user_id;
  c.exchange->token_id = r.token_id;
  switch (r.verdict) {
    case AuthVerdict::kOk: break;
    case AuthVerdict::kExpired: return InvalidToken(c.req, c.options, kExpired);
    case AuthVerdict::kRevoked: return InvalidToken(c.req, c.options, kRevoked);
    case AuthVerdict::kInsufficientScope:
      return InsufficientScope(c.req, c.options, r.missing);
    default: return Unauthorized(c.req);
  }
  Response res = Make(c.req, http::status::ok);
  res.set("X-Auth-User-Id", std::to_string(r.user_id));
  if (auto user = c.svc.state().FindUser(r.user_id)) res.set("X-Auth-Username", user->username);
  res.set("X-Auth-Token-Id", std::to_string(r.token_id));
  std::string scopes;
  for (std::string_view s : service::ScopeNames(r.scopes)) {
    if (!scopes.empty()) scopes.push_back(',');
    scopes.append(s);
  }
  res.set("X-Auth-Scopes", scopes);
  res.prepare_payload();
  return res;
}

json::object UserView(const Context& c, const replay::UserRecord& u) {
  json::object o = service::UserJson(u);
  // Like GitLab: e-mail and admin flag only for admins and for oneself.
  if (!c.caller.admin() && c.caller.user.id != u.id) {
    o.erase("email");
    o.erase("is_admin");
  }
  return o;
}

Response Users(Context& c, const std::vector<std::string_view>& parts) {
  // parts: ["users", ...]
  if (parts.size() == 1) {
    if (c.req.method() == http::verb::get) {
      if (auto r = c.Authenticate(service::kReadUser)) return std::move(*r);
      json::array out;
      if (auto name = c.params.Get("username")) {
        if (auto u = c.svc.state().FindUserByName(*name)) out.push_back(UserView(c, *u));
      } else {
        for (const auto& u : c.svc.state().Users()) out.push_back(UserView(c, u));
      }
      return Json(c.req, http::status::ok, out);
    }
    if (c.req.method() == http::verb::post) {
      if (auto r = c.Authenticate(service::kApi)) return std::move(*r);
      if (!c.caller.admin()) return Message(c.req, http::status::forbidden, "403 Forbidden");
      for (const char* field : {"username", "name", "email"}) {
        if (!c.params.Has(field)) return MissingParam(c.req, field);
      }
      bool admin = false;
      if (auto a = c.params.Get("admin")) {
        auto b = ParseBool(*a);
        if (!b) return BadParam(c.req, "admin", "is invalid");
        admin = *b;
      }
      // password, reset_password, skip_confirmation...: accepted and ignored.
      auto user = c.svc.RegisterUser(c.Actor(), *c.params.Get("username"),
                                     *c.params.Get("name"), *c.params.Get("email"), admin);
      if (!user) return ErrorResponse(c.req, user.error());
      return Json(c.req, http::status::created, UserView(c, *user));
    }
    return Message(c.req, http::status::method_not_allowed, "405 Method Not Allowed");
  }
  auto id = ParseId(parts[1]);
  if (!id) return Message(c.req, http::status::not_found, "404 User Not Found");
  if (parts.size() == 2) {
    if (c.req.method() != http::verb::get) {
      return Message(c.req, http::status::method_not_allowed, "405 Method Not Allowed");
    }
    if (auto r = c.Authenticate(service::kReadUser)) return std::move(*r);
    auto user = c.svc.state().FindUser(*id);
    if (!user) return Message(c.req, http::status::not_found, "404 User Not Found");
    return Json(c.req, http::status::ok, UserView(c, *user));
  }
  if (parts.size() == 3 && (parts[2] == "block" || parts[2] == "unblock")) {
    if (c.req.method() != http::verb::post) {
      return Message(c.req, http::status::method_not_allowed, "405 Method Not Allowed");
    }
    if (auto r = c.Authenticate(service::kApi)) return std::move(*r);
    if (!c.caller.admin()) return Message(c.req, http::status::forbidden, "403 Forbidden");
    if (!c.svc.state().FindUser(*id)) {
      return Message(c.req, http::status::not_found, "404 User Not Found");
    }
    if (parts[2] == "block" && *id == c.caller.user.id) {
      return Message(c.req, http::status::forbidden, "403 Forbidden - You cannot block yourself");
    }
    Status s = parts[2] == "block" ? c.svc.BlockUser(c.Actor(), *id)
                                   : c.svc.UnblockUser(c.Actor(), *id);
    if (!s.ok()) return ErrorResponse(c.req, s);
    return Json(c.req, http::status::created, json::value(true));
  }
  return Message(c.req, http::status::not_found, "404 Not Found");
}

// Scopes from `scopes` (array or comma list); error response if missing or invalid.
std::variant<ScopeSet, Response> ScopesParam(Context& c) {
  std::vector<std::string> names;
  for (const std::string& v : c.params.All("scopes")) {
    std::string_view rest = v;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      names.emplace_back(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
  }
  if (names.empty()) return MissingParam(c.req, "scopes");
  auto mask = service::ParseScopes(names);
  if (!mask) return BadParam(c.req, "scopes", "does not have a valid value: " +
                                                  mask.error().message());
  return *mask;
}

// expires_at: "YYYY-MM-DD" (or absent / empty / null).
std::variant<std::optional<std::int32_t>, Response> ExpiresParam(Context& c) {
  auto v = c.params.Get("expires_at");
  if (!v || v->empty()) return std::optional<std::int32_t>();
  auto day = ParseDate(*v);
  if (!day) return BadParam(c.req, "expires_at", "is invalid (expected YYYY-MM-DD)");
  return std::optional<std::int32_t>(*day);
}

Response CreateTokenFor(Context& c, std::uint64_t user_id, std::optional<ScopeSet> limit) {
  if (!c.params.Has("name")) return MissingParam(c.req, "name");
  auto scopes = ScopesParam(c);
  if (auto* r = std::get_if<Response>(&scopes)) return std::move(*r);
  auto expires = ExpiresParam(c);
  if (auto* r = std::get_if<Response>(&expires)) return std::move(*r);
  service::CreateTokenRequest request;
  request.user_id = user_id;
  request.name = std::string(*c.params.Get("name"));
  request.description = std::string(c.params.Get("description").value_or(""));
  request.scopes = std::get<ScopeSet>(scopes);
  request.expires_day = std::get<std::optional<std::int32_t>>(expires);
  if (limit && (request.scopes & ~*limit) != 0) {
    return Message(c.req, http::status::forbidden,
                   "403 Forbidden - a token cannot grant scopes its creator's token lacks: " +
                       service::FormatScopes(request.scopes & ~*limit));
  }
  auto created = c.svc.CreateToken(c.Actor(), request);
  if (!created) return ErrorResponse(c.req, created.error());
  return Json(c.req, http::status::created, service::CreatedTokenJson(*created, c.now));
}

// May the caller see / manage `meta`? Admins: any; users: their own.
bool MayManage(const Context& c, const replay::TokenMeta& meta) {
  return c.caller.admin() || meta.user_id == c.caller.user.id;
}

// Not found or not yours: 401 for users, 404 for admins (GitLab).
Response NoSuchToken(const Context& c) {
  return c.caller.admin() ? Message(c.req, http::status::not_found, "404 Not found")
                          : Unauthorized(c.req);
}

struct ListQuery {
  std::optional<std::uint64_t> user_id;
  std::optional<bool> active;   // state=active|inactive
  std::optional<bool> revoked;
  std::string search;
  std::int64_t created_after = INT64_MIN, created_before = INT64_MAX;
  std::int32_t expires_after = INT32_MIN, expires_before = INT32_MAX;
  bool last_used_filter = false;
  std::string sort = "id_desc";
  int page = 1, per_page = kDefaultPerPage;
};

std::variant<ListQuery, Response> ParseListQuery(Context& c) {
  ListQuery q;
  const Params& p = c.params;
  if (auto v = p.Get("user_id")) {
    q.user_id = ParseId(*v);
    if (!q.user_id) return BadParam(c.req, "user_id", "is invalid");
  }
  if (auto v = p.Get("state")) {
    if (*v == "active") q.active = true;
    else if (*v == "inactive") q.active = false;
    else return BadParam(c.req, "state", "does not have a valid value (active, inactive)");
  }
  if (auto v = p.Get("revoked")) {
    q.revoked = ParseBool(*v);
    if (!q.revoked) return BadParam(c.req, "revoked", "is invalid");
  }
  if (auto v = p.Get("search")) q.search = std::string(*v);
  for (auto [name, out] : {std::pair{"created_after", &q.created_after},
                           std::pair{"created_before", &q.created_before}}) {
    if (auto v = p.Get(name)) {
      auto t = ParseTimestamp(*v);
      if (!t) return BadParam(c.req, name, "is invalid (expected ISO 8601)");
      *out = *t;
    }
  }
  for (auto [name, out] : {std::pair{"expires_after", &q.expires_after},
                           std::pair{"expires_before", &q.expires_before}}) {
    if (auto v = p.Get(name)) {
      auto d = ParseDate(*v);
      if (!d) return BadParam(c.req, name, "is invalid (expected YYYY-MM-DD)");
      *out = *d;
    }
  }
  for (const char* name : {"last_used_after", "last_used_before"}) {
    if (auto v = p.Get(name)) {
      if (!ParseTimestamp(*v)) return BadParam(c.req, name, "is invalid (expected ISO 8601)");
      q.last_used_filter = true;  // last use is not recorded yet: nothing matches
    }
  }
  if (auto v = p.Get("sort")) {
    static constexpr std::string_view kSorts[] = {
        "created_asc", "created_desc", "expires_asc", "expires_desc", "last_used_asc",
        "last_used_desc", "name_asc", "name_desc", "id_asc", "id_desc"};
    if (std::find(std::begin(kSorts), std::end(kSorts), *v) == std::end(kSorts)) {
      return BadParam(c.req, "sort", "does not have a valid value");
    }
    q.sort = std::string(*v);
  }
  for (auto [name, out, max] : {std::tuple{"page", &q.page, 1'000'000'000},
                                std::tuple{"per_page", &q.per_page, kMaxPerPage}}) {
    if (auto v = p.Get(name)) {
      int n = 0;
      auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
      if (ec != std::errc() || ptr != v->data() + v->size() || n < 1) {
        return BadParam(c.req, name, "is invalid");
      }
      *out = std::min(n, max);
    }
  }
  return q;
}

std::string PageLink(const Context& c, int page, int per_page, std::string_view rel) {
  // The Host header is the client's text: only a plausible host[:port] is echoed (the
  // HTTP handler fuzzer put a token there, and it came back in this header).
  std::string host(c.req[http::field::host]);
  const bool plausible =
      !host.empty() && host.size() <= 255 && std::all_of(host.begin(), host.end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' ||
               ch == ':' || ch == '[' || ch == ']';
      });
  if (!plausible) host = "localhost";
  std::string query;
  // Keep the caller's filters, replace page/per_page. Values are re-encoded minimally.
  const std::string_view target = c.req.target();
  const auto qpos = target.find('?');
  if (qpos != std::string_view::npos) {
    std::string_view rest = target.substr(qpos + 1);
    while (!rest.empty()) {
      const auto amp = rest.find('&');
      std::string_view pair = rest.substr(0, amp);
      rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
      if (pair.starts_with("page=") || pair.starts_with("per_page=") ||
          pair.starts_with("private_token=") || pair.empty()) {
        continue;
      }
      query.append(pair).push_back('&');
    }
  }
  query += "page=" + std::to_string(page) + "&per_page=" + std::to_string(per_page);
  // Whatever the client sent (host, filters) is masked where it looks like a token.
  std::string link = "<http://";
  link += host;
  link += kApi;
  link += "/personal_access_tokens?";
  link += query;
  return FilteredTarget(link) + ">; rel=\"" + std::string(rel) + "\"";
}

Response ListTokens(Context& c) {
  auto parsed = ParseListQuery(c);
  if (auto* r = std::get_if<Response>(&parsed)) return std::move(*r);
  ListQuery q = std::get<ListQuery>(parsed);
  if (!c.caller.admin()) {
    if (q.user_id && *q.user_id != c.caller.user.id) return Unauthorized(c.req);
    q.user_id = c.caller.user.id;
  }
  std::vector<replay::TokenMeta> metas;
  auto keep = [&](const replay::TokenMeta& m) {
    if (q.user_id && m.user_id != *q.user_id) return;
    if (q.revoked && m.revoked() != *q.revoked) return;
    if (q.active && service::IsActive(m, c.now) != *q.active) return;
    if (m.created_at_us < q.created_after || m.created_at_us > q.created_before) return;
    if (q.expires_after != INT32_MIN || q.expires_before != INT32_MAX) {
      if (m.expires_day == index::kNoExpiry) return;
      if (m.expires_day < q.expires_after || m.expires_day > q.expires_before) return;
    }
    if (q.last_used_filter) return;
    metas.push_back(m);
  };
  if (q.user_id) {
    for (const auto& m : c.svc.state().TokensOfUser(*q.user_id)) keep(m);
  } else {
    c.svc.state().ForEachToken(keep);
  }
  // Names are in the ledger: read them only when a filter or the order needs them.
  const bool need_names = !q.search.empty() || q.sort.starts_with("name_");
  std::vector<service::TokenInfo> named;
  if (need_names) {
    std::string needle = q.search;
    std::transform(needle.begin(), needle.end(), needle.begin(), ::tolower);
    for (const auto& m : metas) {
      auto info = c.svc.GetToken(m.id);
      if (!info) return ErrorResponse(c.req, info.error());
      std::string name = info->name;
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      if (!needle.empty() && name.find(needle) == std::string::npos) continue;
      named.push_back(std::move(*info));
    }
    metas.clear();
    for (const auto& t : named) metas.push_back(t.meta);
  }
  auto by = [&](auto key, bool asc) {
    std::stable_sort(metas.begin(), metas.end(), [&](const auto& a, const auto& b) {
      return asc ? key(a) < key(b) : key(b) < key(a);
    });
  };
  const std::string& s = q.sort;
  if (s.starts_with("created_")) {
    by([](const replay::TokenMeta& m) { return std::pair(m.created_at_us, m.id); },
       s.ends_with("_asc"));
  } else if (s.starts_with("id_") || s.starts_with("last_used_")) {
    // last_used_at is not recorded yet (all null): fall back to id order.
    by([](const replay::TokenMeta& m) { return m.id; }, s.ends_with("_asc"));
  } else if (s.starts_with("expires_")) {
    by([](const replay::TokenMeta& m) { return std::pair(m.expires_day, m.id); },
       s.ends_with("_asc"));
  } else if (s.starts_with("name_")) {
    std::unordered_map<std::uint64_t, std::string> names;
    for (const auto& t : named) names[t.meta.id] = t.name;
    by([&](const replay::TokenMeta& m) { return std::pair(names[m.id], m.id); },
       s.ends_with("_asc"));
  }

  const std::size_t total = metas.size();
  const int per_page = q.per_page;
  const int total_pages = std::max<int>(1, static_cast<int>((total + per_page - 1) / per_page));
  const std::size_t first = std::size_t(q.page - 1) * per_page;
  json::array out;
  for (std::size_t i = first; i < total && i < first + per_page; ++i) {
    auto info = c.svc.GetToken(metas[i].id);
    if (!info) return ErrorResponse(c.req, info.error());
    out.push_back(service::TokenJson(*info, c.now));
  }
  Response res = Json(c.req, http::status::ok, out);
  res.set("X-Total", std::to_string(total));
  res.set("X-Total-Pages", std::to_string(total_pages));
  res.set("X-Page", std::to_string(q.page));
  res.set("X-Per-Page", std::to_string(per_page));
  res.set("X-Next-Page", q.page < total_pages ? std::to_string(q.page + 1) : "");
  res.set("X-Prev-Page", q.page > 1 && q.page <= total_pages ? std::to_string(q.page - 1) : "");
  std::string link;
  if (q.page > 1 && q.page <= total_pages) link += PageLink(c, q.page - 1, per_page, "prev") + ", ";
  if (q.page < total_pages) link += PageLink(c, q.page + 1, per_page, "next") + ", ";
  link += PageLink(c, 1, per_page, "first") + ", " + PageLink(c, total_pages, per_page, "last");
  res.set(http::field::link, link);
  return res;
}

Response PersonalAccessTokens(Context& c, const std::vector<std::string_view>& parts) {
  // parts: ["personal_access_tokens", ...]
  const http::verb method = c.req.method();
  if (parts.size() == 1) {
    if (method != http::verb::get) {
      return Message(c.req, http::status::method_not_allowed, "405 Method Not Allowed");
    }
    if (auto r = c.Authenticate(service::kReadApi)) return std::move(*r);
    return ListTokens(c);
  }
  const bool self = parts[1] == "self";
  std::optional<std::uint64_t> id = self ? std::nullopt : ParseId(parts[1]);
  if (!self && !id) return Message(c.req, http::status::not_found, "404 Not found");
  const bool rotate = parts.size() == 3 && parts[2] == "rotate";
  if (parts.size() > 3 || (parts.size() == 3 && !rotate)) {
    return Message(c.req, http::status::not_found, "404 Not Found");
  }
  const bool allowed = rotate ? method == http::verb::post
                              : (method == http::verb::get || method == http::verb::delete_);
  if (!allowed) return Message(c.req, http::status::method_not_allowed, "405 Method Not Allowed");
  // Reading needs read_api; revoking or rotating needs api — except on /self, where a
  // token may always look at or revoke itself. Rotating oneself still needs api (as
  // GitLab's self_rotation): a leaked read-only token must not renew itself.
  const ScopeSet required =
      rotate ? service::kApi
             : (self ? 0 : (method == http::verb::get ? service::kReadApi : service::kApi));
  if (auto r = c.Authenticate(required)) return std::move(*r);
  if (self) id = c.caller.token_id;
  auto meta = c.svc.state().FindToken(*id);
  if (!meta || !MayManage(c, *meta)) return NoSuchToken(c);

  if (method == http::verb::get) {
    auto info = c.svc.GetToken(*id);
    if (!info) return ErrorResponse(c.req, info.error());
    return Json(c.req, http::status::ok, service::TokenJson(*info, c.now));
  }
  if (method == http::verb::delete_) {
    const auto reason = meta->user_id == c.caller.user.id ? schema::RevokeReason::ByOwner
                                                          : schema::RevokeReason::ByAdmin;
    Status s = c.svc.RevokeToken(c.Actor(), *id, reason);
    if (!s.ok()) return ErrorResponse(c.req, s);
    Response res = Make(c.req, http::status::no_content);
    res.prepare_payload();
    return res;
  }
  auto expires = ExpiresParam(c);
  if (auto* r = std::get_if<Response>(&expires)) return std::move(*r);
  auto created =
      c.svc.RotateToken(c.Actor(), *id, std::get<std::optional<std::int32_t>>(expires));
  if (!created) {
    if (created.error().code() == Status::Code::kUnauthenticated) return Unauthorized(c.req);
    return ErrorResponse(c.req, created.error());
  }
  return Json(c.req, http::status::ok, service::CreatedTokenJson(*created, c.now));
}

// ---- the Access tokens page (web/) and what it reads without a token --------------

// Served with every file of the page: nothing but this origin's own files may run,
// load or be framed (no inline script or style, no form posts, no CDN).
constexpr std::string_view kPageCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

// GET/HEAD of /, /-/user_settings/personal_access_tokens (index.html) and /-/web/<file>.
Response WebPage(const Request& req, std::string_view path) {
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    Response res =
        Message(req, http::status::method_not_allowed, "405 Method Not Allowed");
    res.set(http::field::allow, "GET, HEAD");
    return res;
  }
  constexpr std::string_view kFiles = "/-/web/";
  const std::string_view name = path.starts_with(kFiles) ? path.substr(kFiles.size())
                                                         : std::string_view("index.html");
  const web::Asset* asset = web::FindAsset(name);
  if (asset == nullptr) return Message(req, http::status::not_found, "404 Not Found");
  Response res = Make(req, http::status::ok);
  res.set(http::field::content_type, asset->content_type);
  res.set("Content-Security-Policy", kPageCsp);
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Referrer-Policy", "no-referrer");
  res.set(http::field::cache_control, name == "index.html" ? "no-store" : "no-cache");
  res.body() = std::string(asset->body);  // HEAD: the transport sends only the length
  res.prepare_payload();
  return res;
}

// GET /api/v4/-/scopes: every scope with its description, in table order (the page's
// checkboxes). GET /api/v4/-/policy: the expiry rules the page's date picker follows.
// Neither is secret, so neither needs a token.
Response PagePublicInfo(Context& c, std::string_view what) {
  if (what == "scopes") {
    json::array out;
    for (const service::ScopeInfo& s : service::kScopeTable) {
      out.push_back(json::object{{"name", s.name}, {"description", s.description}});
    }
    return Json(c.req, http::status::ok, out);
  }
  const service::Policy& p = c.svc.policy();
  const std::int32_t today = DayOf(c.svc.clock().NowMicros());
  const auto limit = c.svc.MaxExpiryDay();  // first day not allowed
  return Json(c.req, http::status::ok,
              json::object{{"require_expiry", p.require_expiry},
                           {"max_lifetime_days", p.max_lifetime_days},
                           {"today", FormatDate(today)},
                           {"min_expires_at", FormatDate(today + 1)},
                           {"max_expires_at", limit ? json::value(FormatDate(*limit - 1))
                                                    : json::value(nullptr)}});
}

Response Route(Context& c) {
  const std::string_view path = c.path;
  if (!path.starts_with(kApi) || (path.size() > kApi.size() && path[kApi.size()] != '/')) {
    return Message(c.req, http::status::not_found, "404 Not Found");
  }
  const std::vector<std::string_view> parts = Split(path.substr(kApi.size()));
  if (parts.empty()) return Message(c.req, http::status::not_found, "404 Not Found");
  const http::verb method = c.req.method();
  if (parts[0] == "auth" && parts.size() == 1) {
    if (method != http::verb::get && method != http::verb::head &&
        method != http::verb::post) {
      return Message(c.req, http::status::method_not_allowed, "405 Method Not Allowed");
    }
    return ForwardAuth(c);
  }
  if (parts[0] == "-" && parts.size() == 2 &&
      (parts[1] == "scopes" || parts[1] == "policy")) {
    if (method != http::verb::get && method != http::verb::head) {
      return Message(c.req, http::status::method_not_allowed, "405 Method Not Allowed");
    }
    return PagePublicInfo(c, parts[1]);
  }
  if (parts[0] == "user") {
    if (parts.size() == 1) {
      if (method != http::verb::get) {
        return Message(c.req, http::status::method_not_allowed, "405 Method Not Allowed");
      }
      if (auto r = c.Authenticate(service::kReadUser)) return std::move(*r);
      return Json(c.req, http::status::ok, UserView(c, c.caller.user));
    }
    if (parts.size() == 2 && parts[1] == "personal_access_tokens") {
      if (method != http::verb::post) {
        return Message(c.req, http::status::method_not_allowed, "405 Method Not Allowed");
      }
      if (auto r = c.Authenticate(service::kApi)) return std::move(*r);
      // No escalation: only scopes the calling token already has (sudo needs admin).
      return CreateTokenFor(c, c.caller.user.id, c.caller.scopes);
    }
  }
  if (parts[0] == "users") {
    if (parts.size() == 3 && parts[2] == "personal_access_tokens") {
      if (method != http::verb::post) {
        return Message(c.req, http::status::method_not_allowed, "405 Method Not Allowed");
      }
      if (auto r = c.Authenticate(service::kApi)) return std::move(*r);
      if (!c.caller.admin()) return Message(c.req, http::status::forbidden, "403 Forbidden");
      auto id = ParseId(parts[1]);
      if (!id || !c.svc.state().FindUser(*id)) {
        return Message(c.req, http::status::not_found, "404 User Not Found");
      }
      return CreateTokenFor(c, *id, std::nullopt);
    }
    return Users(c, parts);
  }
  if (parts[0] == "personal_access_tokens") return PersonalAccessTokens(c, parts);
  return Message(c.req, http::status::not_found, "404 Not Found");
}

}  // namespace

Handler::Handler(HandlerOptions options)
    : options_(std::move(options)),
      throttle_(std::make_unique<AuthThrottle>(options_.throttle)) {}

void Handler::SetService(service::TokenService* service) {
  service_.store(service, std::memory_order_release);
}

Response Handler::Handle(const Request& request, Exchange* exchange) const {
  Exchange scratch;
  if (exchange == nullptr) exchange = &scratch;
  try {
    const std::string_view target = request.target();
    const std::string_view path = target.substr(0, target.find('?'));
    if (path == "/-/liveness" || path == "/livez") {
      return Json(request, http::status::ok, json::object{{"status", "ok"}});
    }
    // The Access tokens page: static files, served even while the ledger is replayed.
    if (path == "/" || path == "/-/user_settings/personal_access_tokens" ||
        path.starts_with("/-/web/")) {
      return WebPage(request, path);
    }
    service::TokenService* svc = service_.load(std::memory_order_acquire);
    if (path == "/-/readiness" || path == "/readyz") {
      if (svc == nullptr) {
        return Message(request, http::status::service_unavailable,
                       "503 Service Unavailable - replaying the ledger");
      }
      // After a failed write the ledger refuses every append until restarted: not ready
      // (reads still work), so a supervisor or load balancer can act on it.
      if (!svc->ledger().health().ok()) {
        return Message(request, http::status::service_unavailable,
                       "503 Service Unavailable - the ledger cannot record changes; "
                       "restart to recover");
      }
      return Json(request, http::status::ok, json::object{{"status", "ok"}});
    }
    if (svc == nullptr) {
      Response res = Message(request, http::status::service_unavailable,
                             "503 Service Unavailable - replaying the ledger");
      res.set(http::field::retry_after, "1");
      return res;
    }
    auto parsed = ParseRequest(request);
    if (!parsed) return ErrorResponse(request, parsed.error());
    Context c(request, options_, *svc, *throttle_, std::move(*parsed), exchange);
    return Route(c);
  } catch (const std::exception&) {
    // No request may crash the server; the detail may hold input, so it is not echoed.
    return Message(request, http::status::internal_server_error, "500 Internal Server Error");
  }
}

bool Handler::MayWrite(const Request& request) {
  const http::verb method = request.method();
  if (method == http::verb::get || method == http::verb::head) return false;
  // Route's "auth" under kApi, spelled plainly; other spellings (//auth) count as writes.
  constexpr std::string_view kForwardAuth = "/api/v4/auth";
  const std::string_view target = request.target();
  return target.substr(0, target.find('?')) != kForwardAuth;
}

std::string FilteredTarget(std::string_view target) {
  std::string out;
  out.reserve(target.size());
  const auto q = target.find('?');
  out.append(target.substr(0, q));
  if (q != std::string_view::npos) {
    out.push_back('?');
    std::string_view rest = target.substr(q + 1);
    bool first = true;
    while (true) {
      const auto amp = rest.find('&');
      std::string_view pair = rest.substr(0, amp);
      if (!first) out.push_back('&');
      first = false;
      const auto eq = pair.find('=');
      std::string key(pair.substr(0, eq));
      for (char& ch : key) ch = ch == '-' ? '_' : static_cast<char>(std::tolower(ch));
      if (eq != std::string_view::npos &&
          (key == "private_token" || key == "token" || key == "access_token")) {
        key.assign(pair.substr(0, eq));
        out.append(key).append("=[FILTERED]");
      } else {
        out.append(pair);
      }
      if (amp == std::string_view::npos) break;
      rest.remove_prefix(amp + 1);
    }
  }
  // Anything else that may hold a token's secret part, wherever it is: every run of
  // 30 or more base62 characters (a token's body is 36, its random part 30; a
  // mistyped or truncated token still holds most of it). Nothing of ours is that long.
  auto base62 = [](char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
  };
  std::size_t run = 0;
  for (std::size_t i = 0; i <= out.size(); ++i) {
    if (i < out.size() && base62(out[i])) {
      ++run;
      continue;
    }
    if (run >= service::kTokenRandomLength) {
      out.replace(i - run, run, "[FILTERED]");
      i = i - run + 10;
    }
    run = 0;
  }
  return out;
}

}  // namespace patledger::api
