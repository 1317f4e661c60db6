// Specification of api/handler.h: GitLab's personal access token API and forward auth,
// driven through Handler::Handle without sockets over a real ledger.

#include "api/handler.h"

#include <boost/beast/core/detail/base64.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include "service/token_service.h"
#include "tests/test_util.h"

namespace patledger::api {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;

constexpr std::int64_t kNoon = 1'795'867'200'000'000LL;  // 2026-11-28T12:00:00Z

struct Reply {
  int status = 0;
  json::value body;
  Response raw;
  std::string header(std::string_view name) const { return std::string(raw[name]); }
};

class ApiFixture {
 public:
  ApiFixture() : clock_(kNoon) {
    options_.data_dir = dir_.path();
    options_.clock = &clock_;
    auto init = service::TokenService::Init(options_);
    BOOST_TEST_REQUIRE(init.has_value(), Why(init));
    root_ = init->root_token.secret;
    Open();
    // alice: a plain user with an api token; bob: another user.
    alice_id_ = CreateUser("alice", false);
    bob_id_ = CreateUser("bob", false);
    alice_ = CreateTokenVia(root_, "/api/v4/users/" + std::to_string(alice_id_) +
                                       "/personal_access_tokens",
                            R"({"name":"a","scopes":["api"],"expires_at":"2026-12-20"})");
    bob_ = CreateTokenVia(root_, "/api/v4/users/" + std::to_string(bob_id_) +
                                     "/personal_access_tokens",
                          R"({"name":"b","scopes":["read_user"],"expires_at":"2026-12-20"})");
  }

  void Open() {
    handler_ = std::make_unique<Handler>();
    service_.reset();
    auto s = service::TokenService::Open(options_);
    BOOST_TEST_REQUIRE(s.has_value(), Why(s));
    service_ = std::move(*s);
    handler_->SetService(service_.get());
  }

  Reply Call(http::verb method, const std::string& target, const std::string& token = "",
             const std::string& body = "", const std::string& type = "application/json",
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    Request req(method, target, 11);
    req.set(http::field::host, "test.local");
    if (!token.empty()) req.set("PRIVATE-TOKEN", token);
    for (auto& [k, v] : headers) req.set(k, v);
    if (!body.empty()) {
      req.set(http::field::content_type, type);
      req.body() = body;
      req.prepare_payload();
    }
    Exchange ex;
    ex.client_address = "192.0.2.1";
    Reply r;
    r.raw = handler_->Handle(req, &ex);
    r.status = r.raw.result_int();
    if (!r.raw.body().empty()) {
      boost::system::error_code ec;
      r.body = json::parse(r.raw.body(), ec);
      BOOST_TEST(!ec, "response is not JSON: " << r.raw.body());
    }
    last_exchange_ = ex;
    return r;
  }

  Reply Get(const std::string& t, const std::string& token) {
    return Call(http::verb::get, t, token);
  }
  Reply Post(const std::string& t, const std::string& token, const std::string& body = "") {
    return Call(http::verb::post, t, token, body);
  }

  std::uint64_t CreateUser(const std::string& name, bool admin) {
    Reply r = Post("/api/v4/users", root_,
                   R"({"username":")" + name + R"(","name":")" + name + R"(","email":")" +
                       name + R"(@example.com","password":"ignored","admin":)" +
                       (admin ? "true" : "false") + "}");
    BOOST_TEST_REQUIRE(r.status == 201, r.raw.body());
    return r.body.at("id").to_number<std::uint64_t>();
  }

  std::string CreateTokenVia(const std::string& token, const std::string& target,
                             const std::string& body) {
    Reply r = Post(target, token, body);
    BOOST_TEST_REQUIRE(r.status == 201, r.raw.body());
    return std::string(r.body.at("token").as_string());
  }

  std::uint64_t IdOf(const std::string& token) {
    return service_->Authenticate(token, clock_.NowMicros()).token_id;
  }

  TempDir dir_;
  ManualClock clock_;
  service::ServiceOptions options_;
  std::unique_ptr<service::TokenService> service_;
  std::unique_ptr<Handler> handler_;
  std::string root_, alice_, bob_;
  std::uint64_t alice_id_ = 0, bob_id_ = 0;
  Exchange last_exchange_;
};

BOOST_FIXTURE_TEST_SUITE(api_handler, ApiFixture)

BOOST_AUTO_TEST_CASE(every_way_of_presenting_a_token_is_accepted) {
  BOOST_TEST(Get("/api/v4/user?private_token=" + alice_, "").status == 200);
  BOOST_TEST(Get("/api/v4/user", alice_).status == 200);
  BOOST_TEST(Call(http::verb::get, "/api/v4/user", "", "", "", {{"private-token", alice_}})
                 .status == 200);
  BOOST_TEST(Call(http::verb::get, "/api/v4/user", "", "", "",
                  {{"Authorization", "Bearer " + alice_}})
                 .status == 200);
  std::string basic = "anyone:" + alice_;
  std::string enc(boost::beast::detail::base64::encoded_size(basic.size()), '\0');
  enc.resize(boost::beast::detail::base64::encode(enc.data(), basic.data(), basic.size()));
  Reply r = Call(http::verb::get, "/api/v4/user", "", "", "", {{"Authorization", "Basic " + enc}});
  BOOST_TEST(r.status == 200);
  BOOST_TEST(r.body.at("username").as_string() == "alice");
  BOOST_TEST(last_exchange_.user_id == alice_id_);
}

BOOST_AUTO_TEST_CASE(unpadded_basic_credentials_decode_in_full) {
  // Bug (found by fuzz/token_parse_fuzz): PresentedToken sized the Basic buffer with
  // Beast's decoded_size(n) = n / 4 * 3, which is short when unpadded base64 (n % 4 of
  // 2 or 3) ends in a partial group: decode wrote up to 2 bytes past the string (ASan:
  // heap-buffer-overflow, from an unauthenticated header) and the password lost them.
  for (const std::string user : {"anyone", "anyone1", "anyone12"}) {
    const std::string basic = user + ":" + alice_;
    std::string enc(boost::beast::detail::base64::encoded_size(basic.size()), '\0');
    enc.resize(boost::beast::detail::base64::encode(enc.data(), basic.data(), basic.size()));
    while (enc.ends_with('=')) enc.pop_back();
    Reply r =
        Call(http::verb::get, "/api/v4/user", "", "", "", {{"Authorization", "Basic " + enc}});
    BOOST_TEST(r.status == 200, user << " (" << enc.size() % 4 << " characters over)");
    BOOST_TEST(last_exchange_.user_id == alice_id_);
  }
  // No colon ("ABCD"), and a lone trailing character: no credential, and no overrun.
  for (const std::string enc : {"QUJDRA", "Q"}) {
    BOOST_TEST(
        Call(http::verb::get, "/api/v4/user", "", "", "", {{"Authorization", "Basic " + enc}})
            .status == 401);
  }
}

BOOST_AUTO_TEST_CASE(missing_and_unknown_tokens_get_gitlabs_401) {
  for (const std::string& t : {std::string(), std::string("glpat-nonsense"),
                               std::string("glpat-") + std::string(36, 'A')}) {
    Reply r = Get("/api/v4/user", t);
    BOOST_TEST(r.status == 401);
    BOOST_TEST(json::serialize(r.body) == R"({"message":"401 Unauthorized"})");
  }
}

BOOST_AUTO_TEST_CASE(expired_and_revoked_tokens_get_invalid_token_with_www_authenticate) {
  clock_.Set(std::int64_t{*ParseDate("2026-12-20")} * kMicrosPerDay);
  Reply expired = Get("/api/v4/user", alice_);
  BOOST_TEST(expired.status == 401);
  BOOST_TEST(expired.body.at("error").as_string() == "invalid_token");
  BOOST_TEST(std::string(expired.body.at("error_description").as_string()).starts_with(
      "Token is expired"));
  BOOST_TEST(expired.header("WWW-Authenticate").find("invalid_token") != std::string::npos);
  clock_.Set(kNoon);
  BOOST_TEST(Call(http::verb::delete_, "/api/v4/personal_access_tokens/self", alice_).status ==
             204);
  Reply revoked = Get("/api/v4/user", alice_);
  BOOST_TEST(revoked.status == 401);
  BOOST_TEST(std::string(revoked.body.at("error_description").as_string()).starts_with(
      "Token was revoked"));
}

BOOST_AUTO_TEST_CASE(missing_scope_is_403_naming_the_scope) {
  Reply r = Get("/api/v4/personal_access_tokens", bob_);  // read_user only
  BOOST_TEST(r.status == 403);
  BOOST_TEST(r.body.at("error").as_string() == "insufficient_scope");
  BOOST_TEST(r.body.at("scope").as_string() == "read_api");
}

BOOST_AUTO_TEST_CASE(forward_auth_answers_with_user_headers_or_gitlab_errors) {
  Reply ok = Get("/api/v4/auth?scope=read_repository", alice_);  // api implies it
  BOOST_TEST(ok.status == 200);
  BOOST_TEST(ok.header("X-Auth-User-Id") == std::to_string(alice_id_));
  BOOST_TEST(ok.header("X-Auth-Username") == "alice");
  BOOST_TEST(ok.header("X-Auth-Token-Id") == std::to_string(IdOf(alice_)));
  BOOST_TEST(ok.header("X-Auth-Scopes").find("api") != std::string::npos);
  // nginx auth_request passes the original URI; the token may be in its query.
  Reply via_uri = Call(http::verb::get, "/api/v4/auth", "", "", "",
                       {{"X-Original-URI", "/app/x?a=1&private_token=" + bob_},
                        {"X-Required-Scope", "read_user"}});
  BOOST_TEST(via_uri.status == 200);
  BOOST_TEST(via_uri.header("X-Auth-Username") == "bob");
  BOOST_TEST(Get("/api/v4/auth?scope=api", bob_).status == 403);
  BOOST_TEST(Get("/api/v4/auth", "").status == 401);
  BOOST_TEST(Get("/api/v4/auth?scope=nonsense", bob_).status == 400);
}

BOOST_AUTO_TEST_CASE(create_for_user_is_admin_only_and_validates_every_field) {
  const std::string target = "/api/v4/users/" + std::to_string(bob_id_) + "/personal_access_tokens";
  BOOST_TEST(Post(target, alice_, R"({"name":"x","scopes":["api"]})").status == 403);
  struct Case {
    std::string body;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"scopes":["api"]})", "name is missing"},
           {R"({"name":"x"})", "scopes is missing"},
           {R"({"name":"x","scopes":["api","bogus"]})", "bogus"},
           {R"({"name":"x","scopes":["api"],"expires_at":"tomorrow"})", "expires_at"},
           {R"({"name":"x","scopes":["api"],"expires_at":"2030-01-01"})",
            "Expiration date must be before"},
           {R"({"name":"x","scopes":["api"],"expires_at":"2020-01-01"})", "after today"},
           {R"({"name":")" + std::string(256, 'n') + R"(","scopes":["api"]})", "255"},
           {R"({"name":"x","scopes":["sudo"]})", "administrators"},
           {R"({"name": )", "malformed JSON"},
       }) {
    Reply r = Post(target, root_, c.body);
    BOOST_TEST(r.status == 400, c.says);
    BOOST_TEST(r.raw.body().find(c.says) != std::string::npos, r.raw.body());
  }
}

BOOST_AUTO_TEST_CASE(form_and_query_parameters_work_like_json) {
  const std::string target = "/api/v4/users/" + std::to_string(bob_id_) + "/personal_access_tokens";
  Reply form = Call(http::verb::post, target, root_,
                    "name=form+token&scopes[]=read_user&scopes[]=read_registry&expires_at=2026-12-24",
                    "application/x-www-form-urlencoded");
  BOOST_TEST_REQUIRE(form.status == 201, form.raw.body());
  BOOST_TEST(form.body.at("name").as_string() == "form token");
  BOOST_TEST(form.body.at("scopes").as_array().size() == 2u);
  Reply query = Post(target + "?name=q&scopes=api&expires_at=2026-12-24", root_);
  BOOST_TEST(query.status == 201, query.raw.body());
}

BOOST_AUTO_TEST_CASE(created_token_json_has_gitlabs_fields_and_the_token_once) {
  Reply r = Post("/api/v4/user/personal_access_tokens", alice_,
                 R"({"name":"mine","description":"d","scopes":["read_api"],"expires_at":"2026-12-24"})");
  BOOST_TEST_REQUIRE(r.status == 201, r.raw.body());
  const json::object& o = r.body.as_object();
  for (const char* key : {"id", "name", "description", "revoked", "created_at", "scopes",
                          "user_id", "last_used_at", "active", "expires_at", "token"}) {
    BOOST_TEST(o.contains(key), key);
  }
  BOOST_TEST(o.at("expires_at").as_string() == "2026-12-24");
  BOOST_TEST(o.at("created_at").as_string() == "2026-11-28T12:00:00.000Z");
  BOOST_TEST(o.at("active").as_bool());
  const std::string id = std::to_string(o.at("id").to_number<std::uint64_t>());
  Reply again = Get("/api/v4/personal_access_tokens/" + id, alice_);
  BOOST_TEST(again.status == 200);
  BOOST_TEST(!again.body.as_object().contains("token"));
}

BOOST_AUTO_TEST_CASE(self_service_creation_cannot_escalate_scopes) {
  Reply r = Post("/api/v4/user/personal_access_tokens", bob_,
                 R"({"name":"x","scopes":["read_user"]})");
  BOOST_TEST(r.status == 403);  // needs api
  Reply esc = Post("/api/v4/user/personal_access_tokens", alice_,
                   R"({"name":"x","scopes":["sudo"],"expires_at":"2026-12-24"})");
  BOOST_TEST(esc.status == 403, esc.raw.body());
  // Mass assignment: user_id, id and revoked in the body are ignored.
  Reply mass = Post("/api/v4/user/personal_access_tokens", alice_,
                    R"({"name":"m","scopes":["api"],"expires_at":"2026-12-24","user_id":1,"id":1,"revoked":true})");
  BOOST_TEST_REQUIRE(mass.status == 201, mass.raw.body());
  BOOST_TEST(mass.body.at("user_id").to_number<std::uint64_t>() == alice_id_);
  BOOST_TEST(mass.body.at("revoked").as_bool() == false);
  BOOST_TEST(mass.body.at("id").to_number<std::uint64_t>() != 1u);
}

BOOST_AUTO_TEST_CASE(users_see_only_their_tokens_admins_see_all) {
  const std::string bob_token = std::to_string(IdOf(bob_));
  BOOST_TEST(Get("/api/v4/personal_access_tokens/" + bob_token, alice_).status == 401);
  BOOST_TEST(Call(http::verb::delete_, "/api/v4/personal_access_tokens/" + bob_token, alice_)
                 .status == 401);
  BOOST_TEST(Get("/api/v4/personal_access_tokens/999", root_).status == 404);
  Reply mine = Get("/api/v4/personal_access_tokens", alice_);
  BOOST_TEST_REQUIRE(mine.status == 200);
  for (const auto& t : mine.body.as_array()) {
    BOOST_TEST(t.at("user_id").to_number<std::uint64_t>() == alice_id_);
  }
  BOOST_TEST(Get("/api/v4/personal_access_tokens?user_id=" + std::to_string(bob_id_), alice_)
                 .status == 401);
  Reply all = Get("/api/v4/personal_access_tokens", root_);
  BOOST_TEST(all.body.as_array().size() == 3u);  // root's, alice's, bob's
}

BOOST_AUTO_TEST_CASE(list_filters_and_pagination_follow_gitlab) {
  const std::string target = "/api/v4/users/" + std::to_string(bob_id_) + "/personal_access_tokens";
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(1'000'000);
    CreateTokenVia(root_, target,
                   R"({"name":"batch )" + std::to_string(i) +
                       R"(","scopes":["read_user"],"expires_at":"2026-12-0)" +
                       std::to_string(i + 1) + R"("})");
  }
  Reply p1 = Get("/api/v4/personal_access_tokens?search=BATCH&per_page=2&sort=name_asc", root_);
  BOOST_TEST_REQUIRE(p1.status == 200, p1.raw.body());
  BOOST_TEST(p1.body.as_array().size() == 2u);
  BOOST_TEST(p1.body.at(0).at("name").as_string() == "batch 0");
  BOOST_TEST(p1.header("X-Total") == "5");
  BOOST_TEST(p1.header("X-Total-Pages") == "3");
  BOOST_TEST(p1.header("X-Next-Page") == "2");
  BOOST_TEST(p1.header("X-Prev-Page") == "");
  BOOST_TEST(p1.header("Link").find("rel=\"next\"") != std::string::npos);
  BOOST_TEST(p1.header("Link").find("<http://test.local/api/v4/personal_access_tokens?") !=
             std::string::npos);
  // Found by the HTTP handler fuzzer: the Link header echoed the Host header and the
  // filters, so a token put there came back. Now neither can carry one.
  for (const auto& host : {std::string("x @") + root_, root_}) {
    Reply leak = Call(http::verb::get,
                      "/api/v4/personal_access_tokens?per_page=1&search=batch&note=" + root_,
                      root_, "", "", {{"Host", host}});
    BOOST_TEST_REQUIRE(leak.status == 200, leak.raw.body());
    BOOST_TEST(leak.header("Link").find("rel=\"next\"") != std::string::npos);
    BOOST_TEST(leak.header("Link").find(root_) == std::string::npos);
  }
  Reply p3 = Get("/api/v4/personal_access_tokens?search=batch&per_page=2&page=3&sort=name_asc",
                 root_);
  BOOST_TEST(p3.body.as_array().size() == 1u);
  BOOST_TEST(p3.header("X-Prev-Page") == "2");
  BOOST_TEST(Get("/api/v4/personal_access_tokens?expires_before=2026-12-02", root_)
                 .body.as_array()
                 .size() == 2u);
  BOOST_TEST(Get("/api/v4/personal_access_tokens?created_after=2026-11-28T12:00:03Z", root_)
                 .body.as_array()
                 .size() == 3u);
  Call(http::verb::delete_, "/api/v4/personal_access_tokens/" + std::to_string(IdOf(bob_)),
       root_);
  BOOST_TEST(Get("/api/v4/personal_access_tokens?revoked=true", root_).body.as_array().size() ==
             1u);
  BOOST_TEST(Get("/api/v4/personal_access_tokens?state=inactive", root_).body.as_array().size() ==
             1u);
  BOOST_TEST(Get("/api/v4/personal_access_tokens?sort=sideways", root_).status == 400);
  BOOST_TEST(Get("/api/v4/personal_access_tokens?last_used_after=2026-01-01", root_)
                 .body.as_array()
                 .empty());
}

BOOST_AUTO_TEST_CASE(rotation_returns_a_new_token_and_reuse_revokes_the_family) {
  const std::string id = std::to_string(IdOf(alice_));
  Reply r = Post("/api/v4/personal_access_tokens/" + id + "/rotate", root_);
  BOOST_TEST_REQUIRE(r.status == 200, r.raw.body());
  const std::string fresh(r.body.at("token").as_string());
  BOOST_TEST(Get("/api/v4/user", fresh).status == 200);
  BOOST_TEST(Get("/api/v4/user", alice_).status == 401);
  Reply reuse = Post("/api/v4/personal_access_tokens/" + id + "/rotate", root_);
  BOOST_TEST(reuse.status == 401);
  BOOST_TEST(Get("/api/v4/user", fresh).status == 401);
  // Self rotation needs api (as GitLab's): a read-only token cannot renew itself.
  Reply readonly = Post("/api/v4/personal_access_tokens/self/rotate", bob_);
  BOOST_TEST(readonly.status == 403);
  BOOST_TEST(Get("/api/v4/user", bob_).status == 200);
  // Self rotation with an explicit expiry.
  Reply self = Post("/api/v4/personal_access_tokens/self/rotate", root_,
                    R"({"expires_at":"2026-12-10"})");
  BOOST_TEST_REQUIRE(self.status == 200, self.raw.body());
  BOOST_TEST(self.body.at("expires_at").as_string() == "2026-12-10");
}

BOOST_AUTO_TEST_CASE(sudo_needs_an_admin_token_with_the_sudo_scope) {
  Reply as_alice = Call(http::verb::get, "/api/v4/user", root_, "", "", {{"Sudo", "alice"}});
  BOOST_TEST(as_alice.status == 200);
  BOOST_TEST(as_alice.body.at("username").as_string() == "alice");
  Reply by_id = Get("/api/v4/user?sudo=" + std::to_string(bob_id_), root_);
  BOOST_TEST(by_id.body.at("username").as_string() == "bob");
  Reply not_admin = Call(http::verb::get, "/api/v4/user", alice_, "", "", {{"Sudo", "bob"}});
  BOOST_TEST(not_admin.status == 403);
  BOOST_TEST(not_admin.raw.body().find("Must be admin to use sudo") != std::string::npos);
  Reply missing = Call(http::verb::get, "/api/v4/user", root_, "", "", {{"Sudo", "nobody"}});
  BOOST_TEST(missing.status == 404);
  BOOST_TEST(missing.raw.body().find("User with ID or username 'nobody' Not Found") !=
             std::string::npos);
  // An admin token without the sudo scope.
  const std::string plain_admin = CreateTokenVia(
      root_, "/api/v4/user/personal_access_tokens",
      R"({"name":"nosudo","scopes":["api"],"expires_at":"2026-12-24"})");
  Reply no_scope = Call(http::verb::get, "/api/v4/user", plain_admin, "", "", {{"Sudo", "bob"}});
  BOOST_TEST(no_scope.status == 403);
  BOOST_TEST(no_scope.body.at("scope").as_string() == "sudo");
}

BOOST_AUTO_TEST_CASE(blocking_a_user_stops_their_tokens_at_once) {
  const std::string id = std::to_string(alice_id_);
  BOOST_TEST(Post("/api/v4/users/" + id + "/block", alice_).status == 403);
  BOOST_TEST(Post("/api/v4/users/" + id + "/block", root_).status == 201);
  Reply blocked = Get("/api/v4/user", alice_);
  BOOST_TEST(blocked.status == 403);  // GitLab: "Your account has been blocked."
  BOOST_TEST(blocked.raw.body().find("blocked") != std::string::npos);
  BOOST_TEST(Get("/api/v4/auth", alice_).status == 401);
  BOOST_TEST(Get("/api/v4/users/" + id, root_).body.at("state").as_string() == "blocked");
  BOOST_TEST(Post("/api/v4/users/" + id + "/unblock", root_).status == 201);
  BOOST_TEST(Get("/api/v4/user", alice_).status == 200);
}

BOOST_AUTO_TEST_CASE(users_endpoints_follow_gitlab) {
  BOOST_TEST(Post("/api/v4/users", alice_, R"({"username":"x","name":"x","email":"x@x"})")
                 .status == 403);
  BOOST_TEST(Post("/api/v4/users", root_, R"({"username":"alice","name":"x","email":"x@x"})")
                 .status == 409);
  BOOST_TEST(Post("/api/v4/users", root_, R"({"name":"x","email":"x@x"})").status == 400);
  Reply by_name = Get("/api/v4/users?username=bob", alice_);
  BOOST_TEST_REQUIRE(by_name.body.as_array().size() == 1u);
  BOOST_TEST(!by_name.body.at(0).as_object().contains("email"));  // not alice's to see
  BOOST_TEST(Get("/api/v4/users/" + std::to_string(alice_id_), alice_)
                 .body.as_object()
                 .contains("email"));
  BOOST_TEST(Get("/api/v4/users/9999", alice_).status == 404);
}

BOOST_AUTO_TEST_CASE(unknown_routes_and_wrong_methods) {
  BOOST_TEST(Get("/api/v4/nothing", root_).status == 404);
  BOOST_TEST(Get("/elsewhere", root_).status == 404);
  BOOST_TEST(Call(http::verb::put, "/api/v4/user", root_).status == 405);
  BOOST_TEST(Call(http::verb::patch, "/api/v4/personal_access_tokens/1", root_).status == 405);
}

BOOST_AUTO_TEST_CASE(readiness_waits_for_the_service_liveness_does_not) {
  Handler fresh;
  Request req(http::verb::get, "/-/readiness", 11);
  BOOST_TEST(fresh.Handle(req, nullptr).result_int() == 503);
  req.target("/-/liveness");
  BOOST_TEST(fresh.Handle(req, nullptr).result_int() == 200);
  req.target("/api/v4/user");
  BOOST_TEST(fresh.Handle(req, nullptr).result_int() == 503);
  fresh.SetService(service_.get());
  req.target("/-/readiness");
  BOOST_TEST(fresh.Handle(req, nullptr).result_int() == 200);
}

BOOST_AUTO_TEST_CASE(state_survives_a_restart) {
  const std::string id = std::to_string(IdOf(bob_));
  BOOST_TEST(Call(http::verb::delete_, "/api/v4/personal_access_tokens/" + id, root_).status ==
             204);
  Open();
  BOOST_TEST(Get("/api/v4/user", bob_).status == 401);
  BOOST_TEST(Get("/api/v4/user", alice_).status == 200);
}

// The server answers what Handler::MayWrite calls read-only on its I/O threads, which
// must never wait for a sync (api/server.h, F6): every route by GET and HEAD, and forward
// auth by POST, with every kind of credential, leaves the ledger as it was.
BOOST_AUTO_TEST_CASE(what_may_write_calls_read_only_never_appends) {
  const std::string user = std::to_string(alice_id_);
  const std::string token_id = std::to_string(IdOf(alice_));
  const std::vector<std::string> paths = {
      "/api/v4/user", "/api/v4/user/personal_access_tokens", "/api/v4/users",
      "/api/v4/users?username=alice", "/api/v4/users/" + user,
      "/api/v4/users/" + user + "/block", "/api/v4/users/" + user + "/unblock",
      "/api/v4/users/" + user + "/personal_access_tokens", "/api/v4/personal_access_tokens",
      "/api/v4/personal_access_tokens/self", "/api/v4/personal_access_tokens/self/rotate",
      "/api/v4/personal_access_tokens/" + token_id,
      "/api/v4/personal_access_tokens/" + token_id + "/rotate", "/api/v4/auth?scope=api",
      "/api/v4/auth", "/api/v4/-/scopes", "/api/v4/-/policy", "/-/readiness", "/-/liveness",
      "/", "/-/web/app.js"};
  const std::uint64_t before = service_->ledger().last_seq();
  for (http::verb method : {http::verb::get, http::verb::head, http::verb::post}) {
    for (const std::string& path : paths) {
      for (const std::string& token : {root_, alice_, bob_, std::string()}) {
        Request req(method, path, 11);
        req.set(http::field::host, "test.local");
        if (!token.empty()) req.set("PRIVATE-TOKEN", token);
        if (method == http::verb::post && !path.starts_with("/api/v4/auth")) {
          BOOST_TEST(Handler::MayWrite(req), path);
          continue;  // a write: not answered here
        }
        BOOST_TEST(!Handler::MayWrite(req), req.method_string() << " " << path);
        handler_->Handle(req, nullptr);
        BOOST_TEST_REQUIRE(service_->ledger().last_seq() == before,
                           req.method_string() << " " << path << " appended");
      }
    }
  }
  BOOST_TEST(Handler::MayWrite(
      Request(http::verb::delete_, "/api/v4/personal_access_tokens/" + token_id, 11)));
  // The check can fail: a request MayWrite sends to the pool does append.
  Request block(http::verb::post, "/api/v4/users/" + user + "/block", 11);
  block.set("PRIVATE-TOKEN", root_);
  BOOST_TEST(Handler::MayWrite(block));
  BOOST_TEST(handler_->Handle(block, nullptr).result_int() == 201);
  BOOST_TEST(service_->ledger().last_seq() > before);
}

BOOST_AUTO_TEST_CASE(filtered_target_never_contains_a_token) {
  const std::string t = "/api/v4/user?a=1&private_token=" + alice_ + "&x=" + bob_;
  const std::string f = FilteredTarget(t);
  BOOST_TEST(f.find(alice_.substr(6)) == std::string::npos);
  BOOST_TEST(f.find(bob_.substr(6)) == std::string::npos);
  BOOST_TEST(f.find("private_token=[FILTERED]") != std::string::npos);
  BOOST_TEST(f.find("a=1") != std::string::npos);
  BOOST_TEST(FilteredTarget("/api/v4/personal_access_tokens/12") ==
             "/api/v4/personal_access_tokens/12");
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::api
