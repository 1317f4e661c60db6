// Reliability, point 1 (issue 7): the crash loop. The real `patledger serve` under
// concurrent create / revoke / rotate / auth over HTTP from several client threads is
// killed with SIGKILL at random moments — while serving, and also while it starts
// (replaying the ledger, or before it even listens) — and restarted, over and over.
//
// Each client thread owns its tokens (so no two threads race on one token) and
// records what the server ACKNOWLEDGED (a 2xx received): a created token (its secret),
// a revocation, a rotation (old revoked, new created). An operation without an answer
// (the server died under it) is uncertain: that token is never acted on again, and
// either answer is accepted for it until one shows it revoked. While the loop runs,
// every auth answer is checked against the record; after the last kill a final
// server is asked about every token, stopped with SIGTERM, and the ledger is opened
// read-only with the library: every record verifies (Scan: checksums, no holes in
// the sequence, the chain) and every token answers offline as acknowledged.
//
//   lost         an acknowledged create that no longer authenticates (must be 0)
//   resurrected  an acknowledged revocation that authenticates again (must be 0)
//   recovery     spawn -> /-/readiness 200, p50 / p99
//
// Canaries prove the check can fail: a token never created, recorded as acknowledged,
// must be counted lost; the root token, recorded as revoked, must be counted
// resurrected. PATLEDGER_SEED reproduces the random choices (not the timing);
// PATLEDGER_CRASH_KILLS sets the number of kills (100 in CI, 2000 long).

#include <atomic>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ledger/ledger.h"
#include "service/token_service.h"
#include "tests/reliability/reliability_util.h"
#include "tests/reliability/serve_process.h"
#include "tests/test_util.h"

namespace patledger::reliability {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;
using namespace std::chrono_literals;

// "YYYY-MM-DD", `days` from today (UTC).
std::string DateInDays(int days) {
  return FormatDate(DayOf(SystemClock::Get()->NowMicros()) + days);
}

enum class Known { kActive, kRevoked, kUncertain };

struct Token {
  std::uint64_t id = 0;
  std::string secret;
  Known state = Known::kActive;
};

// What an answer to GET /api/v4/auth says about a token.
enum class Seen { kValid, kRevoked, kUnknown, kNoAnswer, kOther };

Seen FromHttp(const std::optional<api::Response>& r) {
  if (!r) return Seen::kNoAnswer;
  if (r->result_int() == 200) return Seen::kValid;
  if (r->result_int() == 401) {
    return r->body().find("Token was revoked") != std::string::npos ? Seen::kRevoked
                                                                    : Seen::kUnknown;
  }
  if (r->result_int() == 503) return Seen::kNoAnswer;  // replaying: no information
  return Seen::kOther;
}

Seen FromVerdict(service::AuthVerdict v) {
  switch (v) {
    case service::AuthVerdict::kOk:
      return Seen::kValid;
    case service::AuthVerdict::kRevoked:
      return Seen::kRevoked;
    case service::AuthVerdict::kUnknown:
    case service::AuthVerdict::kMalformed:
      return Seen::kUnknown;
    default:
      return Seen::kOther;
  }
}

// Tallies of checks of what was seen against what was acknowledged.
struct Verdicts {
  std::atomic<std::uint64_t> checks{0}, lost{0}, resurrected{0}, unexpected{0};
  std::mutex mu;
  std::vector<std::string> details;  // the first few problems

  void Problem(std::atomic<std::uint64_t>& counter, const std::string& what) {
    counter.fetch_add(1);
    std::lock_guard lock(mu);
    if (details.size() < 10) details.push_back(what);
  }

  // Checks one observation of `t`; may promote an uncertain token to revoked.
  void Check(Token& t, Seen seen, const std::string& where) {
    if (seen == Seen::kNoAnswer) return;
    checks.fetch_add(1);
    const std::string who = where + ": token " + std::to_string(t.id);
    switch (seen) {
      case Seen::kValid:
        if (t.state == Known::kRevoked) Problem(resurrected, who + " revoked but valid");
        break;
      case Seen::kRevoked:
        // Only its owner thread revokes a token, so an active one cannot turn revoked.
        if (t.state == Known::kActive) Problem(unexpected, who + " active but revoked");
        if (t.state == Known::kUncertain) t.state = Known::kRevoked;  // served => durable
        break;
      case Seen::kUnknown:
        Problem(lost, who + " acknowledged but unknown");
        break;
      default:
        Problem(unexpected, who + " unexpected answer");
    }
  }
};

// Where the current server listens; 0 while there is none.
struct Target {
  std::mutex mu;
  std::condition_variable cv;
  std::uint16_t port = 0;
  std::uint64_t generation = 0;
  bool stop = false;

  void Publish(std::uint16_t p) {
    std::lock_guard lock(mu);
    port = p;
    ++generation;
    cv.notify_all();
  }
};

struct Acks {
  std::atomic<std::uint64_t> creates{0}, revokes{0}, rotates{0}, unanswered{0};
};

std::pair<std::uint64_t, std::string> IdAndSecret(const api::Response& r) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body(), ec);
  if (ec || !v.is_object()) return {0, {}};
  const auto* id = v.as_object().if_contains("id");
  const auto* token = v.as_object().if_contains("token");
  if (!id || !id->is_int64() || !token || !token->is_string()) return {0, {}};
  return {static_cast<std::uint64_t>(id->as_int64()), std::string(token->as_string())};
}

// One client thread: mixed writes and auth checks on its own tokens, following the
// server from generation to generation.
void Client(int thread, Target& target, const std::string& root,
            const std::vector<std::uint64_t>& users, std::uint64_t seed, Acks& acks,
            Verdicts& verdicts, std::vector<Token>* tokens) {
  std::mt19937_64 rng(seed);
  std::unique_ptr<HttpClient> c;
  std::uint64_t generation = 0;
  const std::string expires = DateInDays(30);
  for (int n = 0;; ++n) {
    {
      std::unique_lock lock(target.mu);
      target.cv.wait(lock, [&] { return target.stop || target.port != 0; });
      if (target.stop) return;
      if (target.generation != generation) {
        c = std::make_unique<HttpClient>(target.port, 10s);
        generation = target.generation;
      }
    }
    std::vector<std::size_t> active;
    for (std::size_t i = 0; i < tokens->size(); ++i) {
      if ((*tokens)[i].state == Known::kActive) active.push_back(i);
    }
    const int op = static_cast<int>(rng() % 100);
    if (op < 30 || active.size() < 2) {  // create
      const std::string body =
          R"({"name":"c)" + std::to_string(thread) + "-" + std::to_string(n) +
          R"(","scopes":["read_user"],"expires_at":")" + expires + R"("})";
      auto r = c->Call(http::verb::post,
                       "/api/v4/users/" + std::to_string(users[rng() % users.size()]) +
                           "/personal_access_tokens",
                       root, body);
      if (r && r->result_int() == 201) {
        auto [id, secret] = IdAndSecret(*r);
        if (id == 0) {
          verdicts.Problem(verdicts.unexpected, "201 without id/token: " + r->body());
          continue;
        }
        tokens->push_back({id, secret, Known::kActive});
        acks.creates.fetch_add(1);
      } else if (!r || r->result_int() == 503) {
        acks.unanswered.fetch_add(1);  // maybe created; we never learn its secret
      } else {
        verdicts.Problem(
            verdicts.unexpected,
            "create answered " + std::to_string(r->result_int()) + " " + r->body());
      }
    } else if (op < 45) {  // revoke
      Token& t = (*tokens)[active[rng() % active.size()]];
      auto r = c->Call(http::verb::delete_,
                       "/api/v4/personal_access_tokens/" + std::to_string(t.id), root);
      if (r && r->result_int() == 204) {
        t.state = Known::kRevoked;
        acks.revokes.fetch_add(1);
      } else if (!r || r->result_int() == 503) {
        t.state = Known::kUncertain;
        acks.unanswered.fetch_add(1);
      } else {
        verdicts.Problem(verdicts.unexpected,
                         "revoke of " + std::to_string(t.id) + " answered " +
                             std::to_string(r->result_int()) + " " + r->body());
      }
    } else if (op < 60) {  // rotate
      Token& t = (*tokens)[active[rng() % active.size()]];
      auto r = c->Call(
          http::verb::post,
          "/api/v4/personal_access_tokens/" + std::to_string(t.id) + "/rotate", root);
      if (r && r->result_int() == 200) {
        auto [id, secret] = IdAndSecret(*r);
        t.state = Known::kRevoked;
        acks.rotates.fetch_add(1);
        if (id == 0) {
          verdicts.Problem(verdicts.unexpected,
                           "rotate 200 without id/token: " + r->body());
        } else {
          tokens->push_back({id, secret, Known::kActive});
        }
      } else if (!r || r->result_int() == 503) {
        t.state = Known::kUncertain;
        acks.unanswered.fetch_add(1);
      } else {
        verdicts.Problem(verdicts.unexpected,
                         "rotate of " + std::to_string(t.id) + " answered " +
                             std::to_string(r->result_int()) + " " + r->body());
      }
    } else if (!tokens->empty()) {  // auth, of any of its tokens
      Token& t = (*tokens)[rng() % tokens->size()];
      verdicts.Check(t, FromHttp(c->Call(http::verb::get, "/api/v4/auth", t.secret)),
                     "during the loop");
    }
  }
}

struct World {
  std::string data;
  std::string root;
  std::vector<std::uint64_t> users;
};

World MakeWorld(const std::string& data) {
  World w;
  w.data = data;
  service::ServiceOptions o;
  o.data_dir = data;
  auto init = service::TokenService::Init(o);
  BOOST_TEST_REQUIRE(init.has_value(), Why(init));
  w.root = init->root_token.secret;
  auto svc = service::TokenService::Open(o);
  BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
  for (int i = 1; i <= 3; ++i) {
    auto u = (*svc)->RegisterUser({}, "user" + std::to_string(i), "User", "u@example.com",
                                  false);
    BOOST_TEST_REQUIRE(u.has_value(), Why(u));
    w.users.push_back(u->id);
  }
  return w;
}

BOOST_AUTO_TEST_SUITE(crash_loop)

BOOST_AUTO_TEST_CASE(sigkill_at_random_moments_loses_and_resurrects_nothing) {
  const std::uint64_t seed = Seed("crash_loop");
  std::mt19937_64 rng(seed);
  const std::uint64_t kills = Size("PATLEDGER_CRASH_KILLS", 100, 2'000);
  constexpr int kClients = 4;
  TempDir tmp;  // a real disk: the server syncs as it does in production
  const World w = MakeWorld(tmp.Sub("data"));

  Target target;
  Acks acks;
  Verdicts verdicts;
  std::vector<std::vector<Token>> tokens(kClients);
  std::vector<std::thread> clients;
  // Stops and joins the clients however this scope is left (a failed REQUIRE too).
  struct Joiner {
    Target& target;
    std::vector<std::thread>& threads;
    void operator()() {
      {
        std::lock_guard lock(target.mu);
        target.stop = true;
        target.cv.notify_all();
      }
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
    }
    ~Joiner() { (*this)(); }
  } joiner{target, clients};
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back(Client, t, std::ref(target), std::cref(w.root),
                         std::cref(w.users), rng(), std::ref(acks), std::ref(verdicts),
                         &tokens[t]);
  }

  std::vector<double> recovery_ms;
  std::uint64_t startup_kills = 0, killed_before_listening = 0,
                killed_while_replaying = 0, serving_kills = 0;
  const auto t0 = SteadyClock::now();
  for (std::uint64_t k = 0; k < kills; ++k) {
    Server server(w.data);
    if (rng() % 5 == 0) {
      // During start-up: before it listens, while RocksDB opens, while it replays.
      const double typical = recovery_ms.empty() ? 50.0 : Percentile(recovery_ms, 50);
      std::this_thread::sleep_for(std::chrono::microseconds(static_cast<std::int64_t>(
          static_cast<double>(rng() % 1000) / 1000.0 * typical * 1.2 * 1000.0)));
      server.child().Kill();
      const std::string err = server.child().err();
      if (err.find("listening on") == std::string::npos) {
        ++killed_before_listening;
      } else if (err.find("; ready") == std::string::npos) {
        ++killed_while_replaying;
      }
      ++startup_kills;
      continue;
    }
    const bool ready = server.WaitReady(60s);
    BOOST_TEST_REQUIRE(ready, "kill " << k
                                      << ": the server did not become ready; stderr:\n"
                                      << server.child().err());
    recovery_ms.push_back(std::chrono::duration<double, std::milli>(
                              SteadyClock::now() - server.child().started())
                              .count());
    target.Publish(server.port());
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 230));
    target.Publish(0);
    server.child().Kill();
    ++serving_kills;
  }
  joiner();
  const double loop_s = std::chrono::duration<double>(SteadyClock::now() - t0).count();

  // The final server: every token, as recorded.
  std::uint64_t total = 0, uncertain = 0;
  {
    Server server(w.data);
    BOOST_TEST_REQUIRE(server.WaitReady(60s), "final start; stderr:\n"
                                                  << server.child().err());
    HttpClient c(server.port(), 30s);
    for (auto& list : tokens) {
      for (Token& t : list) {
        verdicts.Check(t, FromHttp(c.Call(http::verb::get, "/api/v4/auth", t.secret)),
                       "final server");
        ++total;
        uncertain += t.state == Known::kUncertain;
      }
    }
    // Canaries: the check itself must catch a lost create and a resurrection.
    Verdicts canary;
    Token never_created{999'999, "glpat-" + std::string(36, 'Q'), Known::kActive};
    Token root_as_revoked{1, w.root, Known::kRevoked};
    canary.Check(never_created,
                 FromHttp(c.Call(http::verb::get, "/api/v4/auth", never_created.secret)),
                 "canary");
    canary.Check(
        root_as_revoked,
        FromHttp(c.Call(http::verb::get, "/api/v4/auth", root_as_revoked.secret)),
        "canary");
    BOOST_TEST(canary.lost.load() == 1u);
    BOOST_TEST(canary.resurrected.load() == 1u);

    server.child().Signal(SIGTERM);
    const auto code = server.child().Wait(60s);
    BOOST_TEST((code.has_value() && *code == 0), "final stop; stderr:\n"
                                                     << server.child().err());
  }

  // Offline: the ledger verifies end to end, and every token answers as recorded.
  std::uint64_t records = 0, last_seq = 0;
  {
    ledger::Options o;
    o.read_only = true;
    auto l = ledger::Ledger::Open(w.data + "/ledger", o);
    BOOST_TEST_REQUIRE(l.has_value(), Why(l));
    std::uint64_t expected = 1, holes = 0;
    Status s = (*l)->Scan({}, [&](const ledger::RecordView& r) {
      holes += r.seq != expected;
      expected = r.seq + 1;
      ++records;
      return Status::OK();
    });
    last_seq = (*l)->last_seq();
    BOOST_TEST(s.ok(), s.ToString());
    BOOST_TEST(holes == 0u);
    BOOST_TEST(records == last_seq);
  }
  {
    service::ServiceOptions o;
    o.data_dir = w.data;
    o.read_only = true;
    auto svc = service::TokenService::Open(o);
    BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
    const std::int64_t now = SystemClock::Get()->NowMicros();
    Verdicts canary;  // the offline check catches them too
    Token never_created{999'999, "glpat-" + std::string(36, 'Q'), Known::kActive};
    Token root_as_revoked{1, w.root, Known::kRevoked};
    canary.Check(never_created,
                 FromVerdict((*svc)->Authenticate(never_created.secret, now).verdict),
                 "canary");
    canary.Check(root_as_revoked,
                 FromVerdict((*svc)->Authenticate(root_as_revoked.secret, now).verdict),
                 "canary");
    BOOST_TEST(canary.lost.load() == 1u);
    BOOST_TEST(canary.resurrected.load() == 1u);
    for (auto& list : tokens) {
      for (Token& t : list) {
        verdicts.Check(t, FromVerdict((*svc)->Authenticate(t.secret, now).verdict),
                       "offline read-only replay");
      }
    }
  }

  std::ostringstream problems;
  for (const auto& d : verdicts.details) problems << "\n  " << d;
  BOOST_TEST_MESSAGE("crash_loop: "
                     << kills << " SIGKILLs (" << serving_kills << " while serving, "
                     << startup_kills << " during start-up: " << killed_before_listening
                     << " before it listened, " << killed_while_replaying
                     << " while it opened and replayed the ledger) in " << Fixed(loop_s)
                     << " s; acknowledged: " << acks.creates.load() << " creates, "
                     << acks.revokes.load() << " revokes, " << acks.rotates.load()
                     << " rotations (" << acks.creates + acks.revokes + acks.rotates
                     << " ops), " << acks.unanswered.load() << " unanswered; "
                     << verdicts.checks.load() << " checks of " << total << " tokens ("
                     << uncertain << " uncertain); lost " << verdicts.lost.load()
                     << ", resurrected " << verdicts.resurrected.load() << ", unexpected "
                     << verdicts.unexpected.load() << "; recovery (spawn to ready) p50 "
                     << Fixed(Percentile(recovery_ms, 50)) << " ms, p99 "
                     << Fixed(Percentile(recovery_ms, 99)) << " ms, max "
                     << Fixed(Percentile(recovery_ms, 100)) << " ms; ledger " << records
                     << " records, seq 1.." << last_seq << " without holes, verified");
  BOOST_TEST(verdicts.lost.load() == 0u, problems.str());
  BOOST_TEST(verdicts.resurrected.load() == 0u, problems.str());
  BOOST_TEST(verdicts.unexpected.load() == 0u, problems.str());
  BOOST_TEST(acks.creates.load() > 0u);
  BOOST_TEST(acks.revokes.load() > 0u);
  BOOST_TEST(acks.rotates.load() > 0u);
  BOOST_TEST(serving_kills + startup_kills == kills);
}

// Was finding F3 (docs/RELIABILITY.md): `patledger serve` on an empty data directory
// initialises it (TokenService::Init: key file, RocksDB, genesis). A SIGKILL at any
// moment of that must leave a directory that the next start takes: the key is
// published whole by link(2), the ledger is built under a scratch name and renamed
// into place when complete. Before the fix 15 of 20 kills bricked the directory.
BOOST_AUTO_TEST_CASE(sigkill_during_first_start_initialisation_never_bricks_the_data_dir) {
  const std::uint64_t seed = Seed("crash_loop first start");
  std::mt19937_64 rng(seed);
  const std::uint64_t trials = Size("PATLEDGER_CRASH_INIT_TRIALS", 20, 300);
  TempDir tmp;
  double first_start_ms = 0;
  {
    Server server(tmp.Sub("probe"));
    BOOST_TEST_REQUIRE(server.WaitReady(60s), server.child().err());
    first_start_ms = std::chrono::duration<double, std::milli>(SteadyClock::now() -
                                                               server.child().started())
                         .count();
  }
  std::uint64_t bricked = 0;
  std::string first;
  for (std::uint64_t i = 0; i < trials; ++i) {
    std::string name = "d";
    name += std::to_string(i);  // (built in steps: GCC 12 -Wrestrict false positive)
    const std::string data = tmp.Sub(name);
    {
      Server server(data);
      std::this_thread::sleep_for(std::chrono::microseconds(
          static_cast<std::int64_t>(static_cast<double>(rng() % 1000) * first_start_ms)));
      server.child().Kill();
    }
    Server again(data);
    if (!again.WaitReady(60s)) {
      if (bricked++ == 0) first = again.child().err();
    }
  }
  BOOST_TEST_MESSAGE("crash_loop first start: "
                     << trials << " SIGKILLs during a " << Fixed(first_start_ms)
                     << " ms first start; " << bricked
                     << " left a data directory that no later start accepts");
  BOOST_TEST(bricked == 0u, "e.g.:\n" << first);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::reliability
