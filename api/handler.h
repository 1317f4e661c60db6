// api/handler.h: the HTTP API of patledger as a plain function — request in,
// response out — so tests call it without sockets (api/server.h does the I/O).
//
// Routes (docs/api.md): GitLab's API v4 for users and personal access tokens, the
// forward-auth endpoint GET /api/v4/auth for gateways, /-/liveness, /-/readiness, and
// the Access tokens page (web/) with the two public reads it needs (/api/v4/-/scopes,
// /api/v4/-/policy).
// Error statuses and bodies are GitLab's (REFERENCE.md §1); the mapping from Status
// to HTTP is in exactly one place (handler.cc, ErrorResponse).
//
// Readiness: a Handler starts without a service (the server listens while the ledger
// is replayed); until SetService is called every API route answers 503 and
// /-/readiness 503; /-/liveness always answers 200.
//
// Failed authentication (api/throttle.h): a client address that presented
// `throttle.threshold` bad tokens within the window gets 429 with Retry-After, for every
// request presenting a token, until its ban ends. Exchange::client_address is the
// address; X-Forwarded-For / X-Real-IP are believed only from trusted proxies.
//
// Thread safety: Handle may be called from any number of threads at once.
// SetService may be called once, from any thread.
#pragma once

#include <atomic>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "api/throttle.h"
#include "service/token_service.h"

namespace patledger::api {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

// Per-request facts from the transport in, and facts for the access log out.
struct Exchange {
  // In.
  std::string client_address;  // "" if unknown
  std::int64_t now_us = 0;     // 0 = the service clock's now
  // Out: who the request authenticated as (0 = nobody), for the access log.
  std::uint64_t user_id = 0;
  std::uint64_t token_id = 0;
};

struct HandlerOptions {
  // Realm in WWW-Authenticate headers.
  std::string realm = "patledger";
  // The failed-authentication ban; threshold 0 turns it off.
  AuthThrottleOptions throttle;
};

class Handler {
 public:
  explicit Handler(HandlerOptions options = {});
  Handler(const Handler&) = delete;
  Handler& operator=(const Handler&) = delete;

  // Makes the API available (readiness turns 200). `service` is not owned and must
  // outlive every Handle call.
  void SetService(service::TokenService* service);
  bool ready() const { return service_.load(std::memory_order_acquire) != nullptr; }

  // Answers one request. Never throws; keep-alive and version follow the request.
  Response Handle(const Request& request, Exchange* exchange) const;

  // Whether answering `request` may append to the ledger, and so wait for synced
  // writes: true unless it is a GET or HEAD (no route writes on them, and a token's last
  // use is not recorded) or forward auth by any method (gateways that pass the client's
  // method on send POST; it only reads). The server handles those on its I/O threads
  // and the others on its writer pool (api/server.h). When unsure, true: that is slower,
  // never wrong.
  static bool MayWrite(const Request& request);

  // The failed-authentication ban's table (for its statistics, and tests).
  const AuthThrottle& throttle() const { return *throttle_; }

 private:
  HandlerOptions options_;
  std::unique_ptr<AuthThrottle> throttle_;  // written by Handle: not const through it
  std::atomic<service::TokenService*> service_{nullptr};
};

// The request target with the value of every `private_token` query parameter replaced
// by [FILTERED], for logs. Never returns a token.
std::string FilteredTarget(std::string_view target);

}  // namespace patledger::api
