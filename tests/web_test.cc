// Specification of the Access tokens page as api/handler.h serves it (issue 5): the
// embedded files of web/ (web/assets.h) at /, /-/user_settings/personal_access_tokens
// and /-/web/<file>, with a strict Content-Security-Policy, and the two public JSON
// endpoints the page reads, /api/v4/-/scopes and /api/v4/-/policy. Driven through
// Handler::Handle without sockets (as api_test.cc); the page itself is exercised in a
// real browser by tests/browser/tokens_page.test.mjs.

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>
#include <regex>
#include <string>

#include "api/handler.h"
#include "service/scopes.h"
#include "service/token_service.h"
#include "tests/test_util.h"
#include "web/assets.h"

namespace patledger::api {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;

constexpr std::int64_t kNoon = 1'795'867'200'000'000LL;  // 2026-11-28T12:00:00Z
constexpr std::string_view kCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

class WebFixture {
 public:
  WebFixture() : clock_(kNoon) {
    options_.data_dir = dir_.path();
    options_.clock = &clock_;
    auto init = service::TokenService::Init(options_);
    BOOST_TEST_REQUIRE(init.has_value(), Why(init));
    root_ = init->root_token.secret;
    auto s = service::TokenService::Open(options_);
    BOOST_TEST_REQUIRE(s.has_value(), Why(s));
    service_ = std::move(*s);
    handler_.SetService(service_.get());
  }

  Response Call(http::verb method, const std::string& target,
                const std::string& token = "", const std::string& body = "") {
    Request req(method, target, 11);
    req.set(http::field::host, "test.local");
    if (!token.empty()) req.set("PRIVATE-TOKEN", token);
    if (!body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
      req.prepare_payload();
    }
    return handler_.Handle(req, nullptr);
  }
  Response Get(const std::string& target) { return Call(http::verb::get, target); }

  TempDir dir_;
  ManualClock clock_;
  service::ServiceOptions options_;
  std::unique_ptr<service::TokenService> service_;
  Handler handler_;
  std::string root_;
};

std::string Header(const Response& r, std::string_view name) {
  return std::string(r[name]);
}

// The headers every file of the page carries.
void CheckPageHeaders(const Response& r, std::string_view type, std::string_view cache) {
  BOOST_TEST(r.result_int() == 200);
  BOOST_TEST(Header(r, "Content-Type") == type);
  BOOST_TEST(Header(r, "Content-Security-Policy") == kCsp);
  BOOST_TEST(Header(r, "X-Content-Type-Options") == "nosniff");
  BOOST_TEST(Header(r, "Referrer-Policy") == "no-referrer");
  BOOST_TEST(Header(r, "Cache-Control") == cache);
  BOOST_TEST(Header(r, "Content-Length") == std::to_string(r.body().size()));
  BOOST_TEST(Header(r, "Set-Cookie").empty());
}

BOOST_FIXTURE_TEST_SUITE(web_page, WebFixture)

BOOST_AUTO_TEST_CASE(the_page_is_served_at_both_addresses_with_a_strict_policy) {
  const web::Asset* index = web::FindAsset("index.html");
  BOOST_TEST_REQUIRE(index != nullptr);
  for (const char* target : {"/", "/-/user_settings/personal_access_tokens",
                             "/?from=menu", "/-/web/index.html"}) {
    BOOST_TEST_CONTEXT(target) {
      const Response r = Get(target);
      CheckPageHeaders(r, "text/html; charset=utf-8", "no-store");
      BOOST_TEST(r.body() == index->body);
    }
  }
}

BOOST_AUTO_TEST_CASE(the_script_and_the_style_sheet_are_served_with_their_types) {
  const Response js = Get("/-/web/app.js");
  CheckPageHeaders(js, "text/javascript; charset=utf-8", "no-cache");
  BOOST_TEST(js.body() == web::FindAsset("app.js")->body);
  const Response css = Get("/-/web/style.css");
  CheckPageHeaders(css, "text/css; charset=utf-8", "no-cache");
  BOOST_TEST(css.body() == web::FindAsset("style.css")->body);
}

// What the CSP allows is what the page needs: its own script and style sheet, no inline
// script or style, nothing from another origin.
BOOST_AUTO_TEST_CASE(the_page_needs_nothing_the_policy_forbids) {
  const std::string html(web::FindAsset("index.html")->body);
  BOOST_TEST(html.find(R"(<script type="module" src="/-/web/app.js"></script>)") !=
             std::string::npos);
  BOOST_TEST(html.find(R"(<link rel="stylesheet" href="/-/web/style.css">)") !=
             std::string::npos);
  const std::regex inline_script(R"(<script(?![^>]*\ssrc=)[^>]*>)");
  BOOST_TEST(!std::regex_search(html, inline_script));
  BOOST_TEST(html.find("<style") == std::string::npos);
  BOOST_TEST(html.find(" style=") == std::string::npos);
  BOOST_TEST(
      !std::regex_search(html, std::regex(R"(\son[a-z]+\s*=)")));  // no onclick=...
  for (const char* file : {"index.html", "app.js", "style.css"}) {
    const std::string body(web::FindAsset(file)->body);
    BOOST_TEST_CONTEXT(file) {
      BOOST_TEST(body.find("http://") == std::string::npos);
      BOOST_TEST(body.find("https://") == std::string::npos);
      BOOST_TEST(body.find("//cdn") == std::string::npos);
    }
  }
}

BOOST_AUTO_TEST_CASE(the_page_is_served_while_the_ledger_is_replayed) {
  Handler fresh;  // no service yet: the API answers 503
  Request req(http::verb::get, "/", 11);
  BOOST_TEST(fresh.Handle(req, nullptr).result_int() == 200);
  req.target("/-/web/app.js");
  BOOST_TEST(fresh.Handle(req, nullptr).result_int() == 200);
  req.target("/api/v4/-/scopes");
  BOOST_TEST(fresh.Handle(req, nullptr).result_int() == 503);
}

BOOST_AUTO_TEST_CASE(head_answers_like_get_and_other_methods_are_refused) {
  const Response head = Call(http::verb::head, "/");
  CheckPageHeaders(head, "text/html; charset=utf-8", "no-store");
  for (http::verb m : {http::verb::post, http::verb::put, http::verb::delete_}) {
    for (const char* target : {"/", "/-/web/app.js"}) {
      const Response r = Call(m, target, root_, R"({"a":1})");
      BOOST_TEST(r.result_int() == 405);
      BOOST_TEST(Header(r, "Allow") == "GET, HEAD");
    }
  }
}

BOOST_AUTO_TEST_CASE(unknown_files_are_not_found) {
  for (const char* target :
       {"/-/web/", "/-/web/nope.js", "/-/web/../api/v4/user", "/-/web/%61pp.js",
        "/-/web/app.js/", "/-/web/web_assets.cc", "/index.html",
        "/-/user_settings/personal_access_tokens/x"}) {
    BOOST_TEST_CONTEXT(target) {
      const Response r = Get(target);
      BOOST_TEST(r.result_int() == 404);
      BOOST_TEST(Header(r, "Content-Type") == "application/json");
    }
  }
  BOOST_TEST(web::FindAsset("") == nullptr);
  BOOST_TEST(web::FindAsset("APP.JS") == nullptr);
}

BOOST_AUTO_TEST_CASE(scopes_lists_the_scope_table_without_a_token) {
  const Response r = Get("/api/v4/-/scopes");
  BOOST_TEST(r.result_int() == 200);
  BOOST_TEST(Header(r, "Content-Type") == "application/json");
  const json::array scopes = json::parse(r.body()).as_array();
  BOOST_TEST_REQUIRE(scopes.size() == service::kScopeTable.size());
  for (std::size_t i = 0; i < scopes.size(); ++i) {
    BOOST_TEST(scopes[i].at("name").as_string() == service::kScopeTable[i].name);
    BOOST_TEST(scopes[i].at("description").as_string() ==
               service::kScopeTable[i].description);
  }
  BOOST_TEST(Call(http::verb::post, "/api/v4/-/scopes").result_int() == 405);
  BOOST_TEST(Get("/api/v4/-/nope").result_int() == 404);
}

// The date picker's bounds are exactly what token creation accepts.
BOOST_AUTO_TEST_CASE(policy_gives_the_date_picker_the_bounds_creation_enforces) {
  const Response r = Get("/api/v4/-/policy");
  BOOST_TEST(r.result_int() == 200);
  const json::object p = json::parse(r.body()).as_object();
  BOOST_TEST(p.at("require_expiry").as_bool() == true);
  BOOST_TEST(p.at("max_lifetime_days").to_number<int>() == 365);
  BOOST_TEST(p.at("today").as_string() == "2026-11-28");
  BOOST_TEST(p.at("min_expires_at").as_string() == "2026-11-29");
  BOOST_TEST(p.at("max_expires_at").as_string() == "2027-11-28");

  auto create = [&](std::string_view expires) {
    return Call(http::verb::post, "/api/v4/user/personal_access_tokens", root_,
                R"({"name":"t","scopes":["api"],"expires_at":")" + std::string(expires) +
                    R"("})")
        .result_int();
  };
  BOOST_TEST(create("2026-11-28") == 400);
  BOOST_TEST(create("2026-11-29") == 201);
  BOOST_TEST(create("2027-11-28") == 201);
  BOOST_TEST(create("2027-11-29") == 400);
}

BOOST_AUTO_TEST_CASE(the_api_is_otherwise_unchanged) {
  BOOST_TEST(Get("/api/v4/user").result_int() == 401);
  BOOST_TEST(Get("/elsewhere").result_int() == 404);
  BOOST_TEST(Get("/-/liveness").result_int() == 200);
  const Response user = Call(http::verb::get, "/api/v4/user", root_);
  BOOST_TEST(user.result_int() == 200);
  BOOST_TEST(Header(user, "Content-Security-Policy").empty());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::api
