// fuzz/http_handler_fuzz.cc: api::Handler::Handle (api/handler.h) — routing, query,
// JSON and form parameters, credentials in every place GitLab accepts them, sudo, and
// the service rules behind them — against a TokenService on a real ledger.
//
// Input: an HTTP/1.1 request as sent on the wire ("POST /api/v4/users?x=1 HTTP/1.1",
// header lines, a blank line, the body). The header is parsed with Beast's parser;
// everything after the blank line is the body, whatever Content-Length says (so a
// mutated body is never cut off). Before parsing, the markers @TOKEN0@ .. @TOKEN7@
// anywhere in the input become the tokens of the fixture below, @BASIC0@ .. @BASIC7@
// become "Basic <base64 of user:token>", and @EXPIRES@ the date 30 days from today, so
// the corpus reaches authenticated routes, and creates tokens, without ever holding a
// token.
//
// Fixture, made once in LLVMFuzzerInitialize under a scratch directory (/dev/shm when
// available): `patledger init` state plus
//   @TOKEN0@  root (admin): api, sudo           @TOKEN4@  bob: api (bob is blocked)
//   @TOKEN1@  alice: api                        @TOKEN5@  alice: api, revoked
//   @TOKEN2@  alice: read_user                  @TOKEN6@  carol (admin): api
//   @TOKEN3@  alice: read_api, write_repository @TOKEN7@  carol: read_registry
// Requests write to the ledger (users, tokens, revocations). To keep runs bounded and
// inputs close to reproducible, the ledger is restored from its pristine copy after
// 32 inputs that wrote, or as soon as a fixture token's verdict changed (revoked,
// rotated, owner blocked): a crash found after a write reproduces from the crash input
// alone in the common case; docs/RELIABILITY.md (section 7) says how to replay the rest.
//
// Properties checked besides "no crash": no request gets a 500 (Handle answers 500
// only for an exception or an internal error, and this ledger has no I/O errors), and
// no response echoes a fixture token in its body or a header. Nothing is printed.

#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "api/handler.h"
#include "common/clock.h"
#include "fuzz/fuzz_util.h"
#include "service/token_service.h"

namespace {

using namespace patledger;
using patledger::fuzz::Die;
namespace http = boost::beast::http;

constexpr std::size_t kMaxInput = 64 * 1024;
constexpr int kWritesBeforeReset = 32;

struct Fixture {
  std::string root;      // scratch directory
  std::string pristine;  // data dir as made by Initialize
  std::string live;      // the copy requests run against
  std::vector<std::string> tokens;  // @TOKENi@ -> secret; never printed
  std::vector<service::AuthVerdict> verdicts;  // each token's verdict when pristine
  std::unique_ptr<service::TokenService> service;
  std::unique_ptr<api::Handler> handler;
  int writes_since_reset = 0;
};

Fixture* g = nullptr;

service::ServiceOptions Options(const std::string& data_dir) {
  service::ServiceOptions o;
  o.data_dir = data_dir;
  return o;
}

template <typename T>
T Must(Result<T> r, const char* what) {
  if (!r) Die(std::string(what) + ": " + r.error().ToString());
  return std::move(*r);
}

void MustOk(const Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.ToString());
}

// Builds the fixture ledger in g->pristine and records the tokens.
void MakePristine() {
  auto init = Must(service::TokenService::Init(Options(g->pristine)), "init");
  g->tokens.push_back(std::move(init.root_token.secret));
  auto svc = Must(service::TokenService::Open(Options(g->pristine)), "open");
  const service::Actor op;  // the local operator, as the CLI
  const auto alice = Must(svc->RegisterUser(op, "alice", "Alice", "alice@example.com", false),
                          "register alice");
  const auto bob = Must(svc->RegisterUser(op, "bob", "Bob", "bob@example.com", false),
                        "register bob");
  const auto carol = Must(svc->RegisterUser(op, "carol", "Carol", "carol@example.com", true), "register carol");
  auto create = [&](std::uint64_t user, service::ScopeSet scopes, const char* name) {
    service::CreateTokenRequest req;
    req.user_id = user;
    req.name = name;
    req.description = "fuzz fixture";
    req.scopes = scopes;
    auto t = Must(svc->CreateToken(op, req), "create token");
    g->tokens.push_back(std::move(t.secret));
    return t.info.meta.id;
  };
  create(alice.id, service::kApi, "alice-api");
  create(alice.id, service::kReadUser, "alice-read-user");
  create(alice.id, service::kReadApi | service::kWriteRepository, "alice-repo");
  create(bob.id, service::kApi, "bob-api");
  const std::uint64_t revoked = create(alice.id, service::kApi, "alice-revoked");
  create(carol.id, service::kApi, "carol-api");
  create(carol.id, service::kReadRegistry, "carol-registry");
  MustOk(svc->RevokeToken(op, revoked, schema::RevokeReason::ByOwner), "revoke");
  MustOk(svc->BlockUser(op, bob.id), "block bob");
  for (const std::string& t : g->tokens) {
    g->verdicts.push_back(svc->Authenticate(t, svc->clock().NowMicros()).verdict);
  }
}

// (Re)starts the service on a fresh copy of the pristine data directory.
void Reset() {
  g->handler.reset();
  g->service.reset();
  patledger::fuzz::CopyTree(g->pristine, g->live);
  g->service = Must(service::TokenService::Open(Options(g->live)), "reopen");
  g->handler = std::make_unique<api::Handler>();
  g->handler->SetService(g->service.get());
  g->writes_since_reset = 0;
}

bool TokenStateChanged() {
  const std::int64_t now = g->service->clock().NowMicros();
  for (std::size_t i = 0; i < g->tokens.size(); ++i) {
    if (g->service->Authenticate(g->tokens[i], now).verdict != g->verdicts[i]) return true;
  }
  return false;
}

std::string Base64(std::string_view in) {
  std::string out(boost::beast::detail::base64::encoded_size(in.size()), '\0');
  out.resize(boost::beast::detail::base64::encode(out.data(), in.data(), in.size()));
  return out;
}

// The input with its markers replaced: @TOKENi@ by fixture token i, @BASICi@ by
// "Basic " + base64("user:" + token i), @EXPIRES@ by the date 30 days from today.
std::string Substitute(std::string_view in) {
  std::string out;
  out.reserve(in.size() + 64);
  const auto digit = [&](std::size_t at) -> int {
    if (at >= in.size() || in[at] < '0' || in[at] > '9') return -1;
    const int i = in[at] - '0';
    return static_cast<std::size_t>(i) < g->tokens.size() ? i : -1;
  };
  for (std::size_t i = 0; i < in.size();) {
    const std::string_view rest = in.substr(i);
    if (rest.starts_with("@TOKEN") && digit(i + 6) >= 0 && rest.substr(7, 1) == "@") {
      out += g->tokens[static_cast<std::size_t>(digit(i + 6))];
      i += 8;
    } else if (rest.starts_with("@BASIC") && digit(i + 6) >= 0 && rest.substr(7, 1) == "@") {
      out += "Basic " + Base64("user:" + g->tokens[static_cast<std::size_t>(digit(i + 6))]);
      i += 8;
    } else if (rest.starts_with("@EXPIRES@")) {
      out += FormatDate(DayOf(g->service->clock().NowMicros()) + 30);
      i += 9;
    } else {
      out += in[i++];
    }
  }
  return out;
}

bool Echoes(std::string_view text) {
  for (const std::string& t : g->tokens) {
    if (text.find(t) != std::string_view::npos) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g = new Fixture;
  g->root = patledger::fuzz::MakeScratchDir("http");
  g->pristine = g->root + "/pristine";
  g->live = g->root + "/live";
  MakePristine();
  Reset();
  std::atexit([] { patledger::fuzz::RemoveTree(g->root); });  // not after a crash
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > kMaxInput) return -1;  // keep such inputs out of the corpus
  std::string text = Substitute({reinterpret_cast<const char*>(data), size});
  std::size_t end = text.find("\r\n\r\n");
  if (end == std::string::npos) {
    text += "\r\n\r\n";
    end = text.size() - 4;
  }
  const std::string_view header(text.data(), end + 4);
  const std::string_view body = std::string_view(text).substr(end + 4);

  http::request_parser<http::empty_body> parser;
  parser.header_limit(16 * 1024);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(header.data(), header.size()), ec);
  if (ec || !parser.is_header_done()) return 0;
  api::Request req;
  req.base() = parser.get().base();
  req.body() = std::string(body);

  const std::uint64_t seq_before = g->service->ledger().last_seq();
  api::Exchange exchange;
  exchange.client_address = "192.0.2.1";
  const api::Response res = g->handler->Handle(req, &exchange);
  if (res.result() == http::status::internal_server_error) {
    Die("Handle answered 500");
  }
  if (Echoes(res.body())) Die("a response body holds a fixture token");
  for (const auto& field : res) {
    if (Echoes(field.value())) Die("a response header holds a fixture token");
  }

  if (g->service->ledger().last_seq() != seq_before &&
      (++g->writes_since_reset >= kWritesBeforeReset || TokenStateChanged())) {
    Reset();
  }
  return 0;
}
