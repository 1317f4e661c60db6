// Specification of service/ and replay/: the rules of personal access tokens over a
// real ledger in a temporary directory. Concurrent cases count violations on worker
// threads and assert on the main thread; nothing asserts on timing.

#include "service/token_service.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "ledger/ledger.h"
#include "service/token_format.h"
#include "tests/test_util.h"

namespace patledger::service {

// Boost.Test prints values of failed comparisons.
std::ostream& operator<<(std::ostream& o, AuthVerdict v) { return o << AuthVerdictName(v); }
std::ostream& operator<<(std::ostream& o, TokenShape s) { return o << TokenShapeName(s); }

namespace {

namespace fs = std::filesystem;

// 2026-11-28T12:00:00Z
constexpr std::int64_t kNoon = 1'795'867'200'000'000LL;

ScopeSet Scopes(std::string_view list) { return ParseScopeList(list).value(); }

class ServiceFixture {
 public:
  ServiceFixture() : clock_(kNoon) {
    options_.data_dir = dir_.path();
    options_.clock = &clock_;
    auto init = TokenService::Init(options_);
    BOOST_TEST_REQUIRE(init.has_value(), Why(init));
    root_token_ = init->root_token.secret;
    Reopen();
  }

  void Reopen() {
    service_.reset();
    auto s = TokenService::Open(options_);
    BOOST_TEST_REQUIRE(s.has_value(), Why(s));
    service_ = std::move(*s);
  }

  std::unique_ptr<TokenService> OpenAt(std::int64_t at_us) {
    ServiceOptions o = options_;
    o.read_only = true;
    o.replay_to.to_time_us = at_us;
    auto s = TokenService::Open(o);
    BOOST_TEST_REQUIRE(s.has_value(), Why(s));
    return std::move(*s);
  }

  std::uint64_t AddUser(const std::string& name, bool admin = false) {
    auto u = service_->RegisterUser(Actor{}, name, name, name + "@example.com", admin);
    BOOST_TEST_REQUIRE(u.has_value(), Why(u));
    return u->id;
  }

  CreatedToken Create(std::uint64_t user, std::string_view scopes,
                      std::optional<std::int32_t> expires = std::nullopt) {
    CreateTokenRequest r;
    r.user_id = user;
    r.name = "t";
    r.scopes = Scopes(scopes);
    r.expires_day = expires.value_or(Today() + 30);
    auto c = service_->CreateToken(Actor{}, r);
    BOOST_TEST_REQUIRE(c.has_value(), Why(c));
    return std::move(*c);
  }

  AuthVerdict Auth(std::string_view token, std::string_view scope = "") {
    return service_->Authenticate(token, clock_.NowMicros(), scope.empty() ? 0 : Scopes(scope))
        .verdict;
  }

  std::int32_t Today() const { return DayOf(clock_.NowMicros()); }

  TempDir dir_;
  ManualClock clock_;
  ServiceOptions options_;
  std::string root_token_;
  std::unique_ptr<TokenService> service_;
};

std::string ReadAll(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

BOOST_FIXTURE_TEST_SUITE(token_service, ServiceFixture)

BOOST_AUTO_TEST_CASE(init_makes_root_admin_with_an_api_and_sudo_token) {
  BOOST_TEST(Auth(root_token_, "api") == AuthVerdict::kOk);
  BOOST_TEST(Auth(root_token_, "sudo") == AuthVerdict::kOk);
  auto root = service_->FindUser("root");
  BOOST_TEST_REQUIRE(root.has_value());
  BOOST_TEST(root->admin);
  BOOST_TEST(TokenService::Init(options_).error().code() == Status::Code::kAlreadyExists);
}

BOOST_AUTO_TEST_CASE(created_token_authenticates_and_survives_restart) {
  const auto alice = AddUser("alice");
  const auto t = Create(alice, "read_api");
  BOOST_TEST(CheckTokenShape(t.secret, "glpat-") == TokenShape::kOk);
  BOOST_TEST(Auth(t.secret, "read_user") == AuthVerdict::kOk);  // read_api implies it
  BOOST_TEST(Auth(t.secret, "api") == AuthVerdict::kInsufficientScope);
  Reopen();
  auto r = service_->Authenticate(t.secret, clock_.NowMicros(), Scopes("read_api"));
  BOOST_TEST(r.ok());
  BOOST_TEST(r.user_id == alice);
  BOOST_TEST(r.token_id == t.info.meta.id);
}

BOOST_AUTO_TEST_CASE(insufficient_scope_names_the_missing_scope) {
  const auto t = Create(AddUser("bob"), "read_user");
  auto r = service_->Authenticate(t.secret, clock_.NowMicros(), Scopes("read_registry"));
  BOOST_TEST(r.verdict == AuthVerdict::kInsufficientScope);
  BOOST_TEST(FormatScopes(r.missing) == "read_registry");
}

BOOST_AUTO_TEST_CASE(revoked_token_fails_with_reason_revoked_even_after_restart) {
  const auto t = Create(AddUser("carol"), "api");
  Status s = service_->RevokeToken(Actor{}, t.info.meta.id, schema::RevokeReason::ByOwner);
  BOOST_TEST_REQUIRE(s.ok(), s.ToString());
  BOOST_TEST(Auth(t.secret) == AuthVerdict::kRevoked);
  BOOST_TEST(service_->RevokeToken(Actor{}, t.info.meta.id, schema::RevokeReason::ByOwner)
                 .code() == Status::Code::kFailedPrecondition);
  Reopen();
  BOOST_TEST(Auth(t.secret) == AuthVerdict::kRevoked);
  auto info = service_->GetToken(t.info.meta.id);
  BOOST_TEST_REQUIRE(info.has_value());
  BOOST_TEST(info->revoke_reason == "by_owner");
}

BOOST_AUTO_TEST_CASE(token_expires_exactly_at_midnight_utc_of_its_expiry_date) {
  const std::int32_t tomorrow = Today() + 1;
  const auto t = Create(AddUser("dave"), "api", tomorrow);
  const std::int64_t midnight = std::int64_t{tomorrow} * kMicrosPerDay;
  clock_.Set(midnight - 1);
  BOOST_TEST(Auth(t.secret) == AuthVerdict::kOk);
  clock_.Set(midnight);
  BOOST_TEST(Auth(t.secret) == AuthVerdict::kExpired);
}

BOOST_AUTO_TEST_CASE(expiry_in_the_past_today_or_beyond_the_lifetime_is_refused) {
  const auto user = AddUser("erin");
  CreateTokenRequest r;
  r.user_id = user;
  r.name = "x";
  r.scopes = Scopes("api");
  for (std::int32_t day : {Today() - 1, Today(), Today() + 366}) {
    r.expires_day = day;
    auto c = service_->CreateToken(Actor{}, r);
    BOOST_TEST(!c.has_value(), "day offset " << day - Today());
    if (!c) BOOST_TEST(c.error().code() == Status::Code::kInvalidArgument);
  }
  r.expires_day = Today() + 365;
  BOOST_TEST(service_->CreateToken(Actor{}, r).has_value());
  r.expires_day.reset();  // expiry required: defaults to the longest lifetime allowed
  auto c = service_->CreateToken(Actor{}, r);
  BOOST_TEST_REQUIRE(c.has_value());
  BOOST_TEST(c->info.meta.expires_day == Today() + 365);
}

BOOST_AUTO_TEST_CASE(every_refusal_says_what_is_wrong) {
  const auto user = AddUser("frank");
  CreateTokenRequest r;
  r.user_id = user;
  r.scopes = Scopes("api");
  auto c = service_->CreateToken(Actor{}, r);
  BOOST_TEST(c.error().message().find("name") != std::string::npos);
  r.name = std::string(256, 'n');
  BOOST_TEST(service_->CreateToken(Actor{}, r).error().message().find("255") !=
             std::string::npos);
  r.name = "ok";
  r.description = std::string(256, 'd');
  BOOST_TEST(service_->CreateToken(Actor{}, r).error().message().find("description") !=
             std::string::npos);
  r.description.clear();
  r.scopes = 0;
  BOOST_TEST(service_->CreateToken(Actor{}, r).error().message().find("scope") !=
             std::string::npos);
  r.scopes = Scopes("sudo");
  BOOST_TEST(service_->CreateToken(Actor{}, r).error().message().find("administrator") !=
             std::string::npos);
  auto bad = ParseScopeList("api,write_everything");
  BOOST_TEST_REQUIRE(!bad.has_value());
  BOOST_TEST(bad.error().message().find("read_registry") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_token_pasted_into_a_name_or_description_is_refused_unechoed) {
  // A secret pasted by mistake must never reach the ledger (and so any log or tool).
  const auto user = AddUser("paste");
  const std::string secret = Create(user, "api").secret;
  const std::uint64_t seq = service_->ledger().last_seq();
  for (const std::string& text :
       {secret, "see " + secret + " here", secret.substr(6),  // without its prefix
        secret.substr(0, secret.size() - 3)}) {
    CreateTokenRequest r;
    r.user_id = user;
    r.name = "ok";
    r.description = text;
    r.scopes = Scopes("api");
    auto c = service_->CreateToken(Actor{}, r);
    BOOST_TEST_REQUIRE(!c.has_value());
    BOOST_TEST(c.error().message().find("token") != std::string::npos);
    BOOST_TEST(c.error().message().find(secret.substr(6, 30)) == std::string::npos);
    BOOST_TEST(c.error().message().find("description") != std::string::npos);
    r.description.clear();
    r.name = text;
    BOOST_TEST(!service_->CreateToken(Actor{}, r).has_value());
  }
  BOOST_TEST(!service_->RegisterUser(Actor{}, "x", secret, "x@example.com", false).has_value());
  BOOST_TEST(service_->ledger().last_seq() == seq);  // nothing was written
  // Ordinary text, even with a long word, is fine.
  CreateTokenRequest ok;
  ok.user_id = user;
  ok.name = "deploy key for glpat-rotation-service v2";
  ok.description = "Supercalifragilisticexpialidocious, commit "
                   "3f1c2a9d8e7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d";
  ok.scopes = Scopes("api");
  BOOST_TEST(service_->CreateToken(Actor{}, ok).has_value());
}

BOOST_AUTO_TEST_CASE(sudo_scope_works_only_while_the_owner_is_an_admin) {
  const auto admin = AddUser("ops", /*admin=*/true);
  const auto t = Create(admin, "sudo,read_user");
  BOOST_TEST(Auth(t.secret, "sudo") == AuthVerdict::kOk);
  BOOST_TEST_REQUIRE(service_->SetAdmin(Actor{}, admin, false).ok());
  BOOST_TEST(Auth(t.secret, "sudo") == AuthVerdict::kInsufficientScope);
  BOOST_TEST(Auth(t.secret, "read_user") == AuthVerdict::kOk);
}

BOOST_AUTO_TEST_CASE(blocking_the_owner_stops_the_token_and_unblocking_restores_it) {
  const auto user = AddUser("gina");
  const auto t = Create(user, "api");
  BOOST_TEST_REQUIRE(service_->BlockUser(Actor{}, user).ok());
  BOOST_TEST(Auth(t.secret) == AuthVerdict::kOwnerBlocked);
  Reopen();
  BOOST_TEST(Auth(t.secret) == AuthVerdict::kOwnerBlocked);
  BOOST_TEST_REQUIRE(service_->UnblockUser(Actor{}, user).ok());
  BOOST_TEST(Auth(t.secret) == AuthVerdict::kOk);
}

BOOST_AUTO_TEST_CASE(usernames_are_unique_and_validated) {
  AddUser("hank");
  auto dup = service_->RegisterUser(Actor{}, "hank", "H", "h@x", false);
  BOOST_TEST(dup.error().code() == Status::Code::kAlreadyExists);
  BOOST_TEST(!service_->RegisterUser(Actor{}, "", "H", "h@x", false).has_value());
  BOOST_TEST(!service_->RegisterUser(Actor{}, "a b", "H", "h@x", false).has_value());
  BOOST_TEST(!service_->RegisterUser(Actor{}, "123", "H", "h@x", false).has_value());
  BOOST_TEST(!service_->RegisterUser(Actor{}, "ivy", "I", "no-at-sign", false).has_value());
}

BOOST_AUTO_TEST_CASE(malformed_tokens_are_refused_by_shape_before_any_lookup) {
  // A lookup could only answer "unknown"; "malformed" proves the shape check decided.
  const auto t = Create(AddUser("jack"), "api");
  std::string bad_checksum = t.secret;
  bad_checksum.back() = bad_checksum.back() == 'a' ? 'b' : 'a';
  for (const std::string& s :
       {std::string(), std::string("glpat-"), std::string("ghp_") + t.secret.substr(6),
        t.secret + "x", t.secret.substr(0, t.secret.size() - 1), bad_checksum,
        std::string("glpat-") + std::string(36, '!')}) {
    BOOST_TEST((Auth(s) == AuthVerdict::kMalformed), "case of length " << s.size());
  }
}

BOOST_AUTO_TEST_CASE(well_formed_token_that_was_never_issued_is_unknown) {
  auto fake = GenerateToken("glpat-");
  BOOST_TEST_REQUIRE(fake.has_value());
  BOOST_TEST(Auth(*fake) == AuthVerdict::kUnknown);
}

BOOST_AUTO_TEST_CASE(batch_gives_every_token_exactly_the_verdict_authenticate_gives) {
  // Every verdict, in groups of kAuthBatch and a partial last group, at two instants
  // and for several required scope sets.
  const auto admin = AddUser("kate", /*admin=*/true);
  const auto blocked = AddUser("leo");
  const auto plain = AddUser("mia");
  std::vector<std::string> tokens = {root_token_};
  tokens.push_back(Create(admin, "sudo,read_user").secret);
  tokens.push_back(Create(plain, "read_api").secret);
  const auto demoted = AddUser("nia", /*admin=*/true);
  tokens.push_back(Create(demoted, "sudo").secret);  // then the owner is no admin
  tokens.push_back(Create(plain, "api", Today() + 1).secret);  // expires tomorrow
  tokens.push_back(Create(blocked, "api").secret);
  const auto revoked = Create(plain, "api");
  tokens.push_back(revoked.secret);
  BOOST_TEST_REQUIRE(
      service_->RevokeToken(Actor{}, revoked.info.meta.id, schema::RevokeReason::ByOwner).ok());
  BOOST_TEST_REQUIRE(service_->BlockUser(Actor{}, blocked).ok());
  BOOST_TEST_REQUIRE(service_->SetAdmin(Actor{}, demoted, false).ok());
  tokens.push_back(GenerateToken("glpat-").value());  // unknown
  std::string bad = tokens[1];
  bad.back() = bad.back() == 'a' ? 'b' : 'a';
  tokens.push_back(bad);  // malformed
  tokens.push_back("");
  const std::size_t kinds = tokens.size();
  for (std::size_t i = 0; tokens.size() < 2 * TokenService::kAuthBatch + 5; ++i) {
    tokens.push_back(tokens[i % kinds]);
  }
  const std::vector<std::string_view> views(tokens.begin(), tokens.end());
  for (const std::int64_t now : {clock_.NowMicros(), clock_.NowMicros() + 2 * kMicrosPerDay}) {
    for (const ScopeSet required : {ScopeSet{0}, Scopes("api"), Scopes("read_user"),
                                    Scopes("sudo"), Scopes("read_api,sudo")}) {
      std::vector<AuthResult> batch(views.size());
      service_->AuthenticateBatch(views, now, required, batch);
      for (std::size_t i = 0; i < views.size(); ++i) {
        const AuthResult one = service_->Authenticate(views[i], now, required);
        BOOST_TEST_CONTEXT("token " << i << " (kind " << i % kinds << "), required "
                                    << required << ", now " << now) {
          BOOST_TEST((batch[i].verdict == one.verdict));
          BOOST_TEST(batch[i].user_id == one.user_id);
          BOOST_TEST(batch[i].token_id == one.token_id);
          BOOST_TEST(batch[i].scopes == one.scopes);
          BOOST_TEST(batch[i].missing == one.missing);
        }
      }
    }
  }
  // The mix really covers every verdict.
  std::set<AuthVerdict> seen;
  for (std::string_view t : views) {
    for (const ScopeSet required : {ScopeSet{0}, Scopes("sudo")}) {
      seen.insert(service_->Authenticate(t, clock_.NowMicros() + 2 * kMicrosPerDay, required)
                      .verdict);
    }
  }
  BOOST_TEST(seen.size() == 7u);
}

BOOST_AUTO_TEST_CASE(rotation_is_one_transaction_and_links_old_to_new) {
  const auto t = Create(AddUser("kate"), "api,read_user");
  const std::uint64_t before = service_->ledger().last_seq();
  auto r = service_->RotateToken(Actor{}, t.info.meta.id, std::nullopt);
  BOOST_TEST_REQUIRE(r.has_value(), Why(r));
  BOOST_TEST(service_->ledger().last_seq() == before + 2);
  BOOST_TEST(Auth(t.secret) == AuthVerdict::kRevoked);
  BOOST_TEST(Auth(r->secret, "api") == AuthVerdict::kOk);
  BOOST_TEST(r->info.meta.rotated_from == t.info.meta.id);
  BOOST_TEST(r->info.meta.expires_day == Today() + 7);
  BOOST_TEST(r->info.meta.scopes == t.info.meta.scopes);
  // Both events carry the same transaction (txn_count 2), revoke first.
  for (std::uint64_t seq = before + 1; seq <= before + 2; ++seq) {
    auto bytes = service_->ledger().Read(seq);
    BOOST_TEST_REQUIRE(bytes.has_value());
    const auto* env = schema::GetEnvelope(bytes->data());
    BOOST_TEST(env->sequencing()->txn_count() == 2);
    BOOST_TEST(env->sequencing()->txn_index() == seq - before - 1);
  }
  auto old = service_->GetToken(t.info.meta.id);
  BOOST_TEST(old->revoke_reason == "rotated");
  BOOST_TEST(old->meta.rotated_to == r->info.meta.id);
}

BOOST_AUTO_TEST_CASE(rotating_a_revoked_token_revokes_the_whole_family) {
  const auto t1 = Create(AddUser("leo"), "api");
  auto t2 = service_->RotateToken(Actor{}, t1.info.meta.id, std::nullopt);
  BOOST_TEST_REQUIRE(t2.has_value());
  auto t3 = service_->RotateToken(Actor{}, t2->info.meta.id, std::nullopt);
  BOOST_TEST_REQUIRE(t3.has_value());
  BOOST_TEST(Auth(t3->secret) == AuthVerdict::kOk);
  // t1's secret leaked and someone rotates it: reuse.
  auto reuse = service_->RotateToken(Actor{}, t1.info.meta.id, std::nullopt);
  BOOST_TEST_REQUIRE(!reuse.has_value());
  BOOST_TEST(reuse.error().code() == Status::Code::kUnauthenticated);
  BOOST_TEST(Auth(t3->secret) == AuthVerdict::kRevoked);
  BOOST_TEST(service_->GetToken(t3->info.meta.id)->revoke_reason == "family_reuse");
  BOOST_TEST(service_->state().Family(t3->info.meta.id).size() == 3u);
}

BOOST_AUTO_TEST_CASE(state_at_a_past_instant_answers_for_that_instant) {
  const std::int64_t before_anything = clock_.NowMicros() - 1;
  clock_.Advance(60'000'000);
  const auto t = Create(AddUser("mia"), "api");
  clock_.Advance(60'000'000);
  const std::int64_t before_revoke = clock_.NowMicros();
  clock_.Advance(60'000'000);
  BOOST_TEST_REQUIRE(
      service_->RevokeToken(Actor{}, t.info.meta.id, schema::RevokeReason::ByAdmin).ok());
  auto then = OpenAt(before_revoke);
  BOOST_TEST(then->Authenticate(t.secret, before_revoke).ok());
  auto before_create = OpenAt(t.info.meta.created_at_us - 1);
  BOOST_TEST((before_create->Authenticate(t.secret, before_revoke).verdict ==
              AuthVerdict::kUnknown));
  BOOST_TEST((Auth(t.secret) == AuthVerdict::kRevoked));
  ServiceOptions o = options_;
  o.read_only = true;
  o.replay_to.to_time_us = before_anything;
  BOOST_TEST(TokenService::Open(o).error().code() == Status::Code::kNotFound);
}

BOOST_AUTO_TEST_CASE(plaintext_tokens_appear_in_no_file_under_the_data_directory) {
  std::vector<std::string> secrets = {root_token_};
  const auto user = AddUser("nora");
  for (int i = 0; i < 20; ++i) secrets.push_back(Create(user, "api").secret);
  auto rotated = service_->RotateToken(Actor{}, 2, std::nullopt);
  BOOST_TEST_REQUIRE(rotated.has_value());
  secrets.push_back(rotated->secret);
  service_.reset();  // flush everything RocksDB would write
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir_.path())) {
    if (!entry.is_regular_file()) continue;
    ++files;
    const std::string content = ReadAll(entry.path());
    for (const std::string& secret : secrets) {
      // The random part alone must not appear either (e.g. without its prefix).
      BOOST_TEST(content.find(secret.substr(6, 30)) == std::string::npos,
                 "a token's secret part is in " << entry.path());
    }
  }
  BOOST_TEST(files > 3);
}

BOOST_AUTO_TEST_CASE(key_file_is_readable_by_its_owner_only) {
  struct stat st {};
  BOOST_TEST_REQUIRE(::stat((fs::path(dir_.path()) / "token.key").c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600);
}

BOOST_AUTO_TEST_CASE(a_foreign_key_file_is_refused_at_open) {
  TempDir other;
  ServiceOptions o;
  o.data_dir = other.path();
  BOOST_TEST_REQUIRE(TokenService::Init(o).has_value());
  service_.reset();
  ServiceOptions mixed = options_;
  mixed.key_path = (fs::path(other.path()) / "token.key").string();
  auto s = TokenService::Open(mixed);
  BOOST_TEST_REQUIRE(!s.has_value());
  BOOST_TEST(s.error().message().find("does not belong") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(revoked_token_fails_on_every_thread_after_revoke_returns) {
  const auto user = AddUser("olga");
  std::vector<CreatedToken> tokens;
  for (int i = 0; i < 8; ++i) tokens.push_back(Create(user, "api"));
  // revoked_upto = k: tokens[0..k) are revoked and their Revoke calls have returned.
  std::atomic<int> revoked_upto{0};
  std::atomic<bool> stop{false};
  std::atomic<long> violations{0}, checks{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        const int k = revoked_upto.load();  // seq_cst: ordered after Revoke's return
        for (int i = 0; i < k; ++i) {
          if (service_->Authenticate(tokens[i].secret, clock_.NowMicros()).ok()) ++violations;
          ++checks;
        }
      }
    });
  }
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    Status s = service_->RevokeToken(Actor{}, tokens[i].info.meta.id,
                                     schema::RevokeReason::ByAdmin);
    BOOST_TEST_REQUIRE(s.ok(), s.ToString());
    revoked_upto.store(i + 1);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stop.store(true);
  for (auto& t : readers) t.join();
  BOOST_TEST(violations.load() == 0);
  BOOST_TEST(checks.load() > 0);
}

BOOST_AUTO_TEST_CASE(concurrent_creates_and_revokes_keep_state_equal_to_a_fresh_replay) {
  const auto user = AddUser("pia");
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        CreateTokenRequest r;
        r.user_id = user;
        r.name = "c";
        r.name += std::to_string(t);  // (GCC 12 -Wrestrict false positive on "c" + s)
        r.scopes = 2;
        r.expires_day = Today() + 10;
        auto c = service_->CreateToken(Actor{}, r);
        if (!c) { ++failures; continue; }
        if (i % 3 == 0 &&
            !service_->RevokeToken(Actor{}, c->info.meta.id, schema::RevokeReason::ByOwner)
                 .ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  BOOST_TEST(failures.load() == 0);
  BOOST_TEST(service_->state().health().ok());
  const std::size_t live_tokens = service_->state().token_count();
  std::vector<replay::TokenMeta> live;
  service_->state().ForEachToken([&](const replay::TokenMeta& m) { live.push_back(m); });
  Reopen();
  std::vector<replay::TokenMeta> replayed;
  service_->state().ForEachToken([&](const replay::TokenMeta& m) { replayed.push_back(m); });
  BOOST_TEST(live_tokens == 1u + 8 * 25);
  BOOST_TEST_REQUIRE(live.size() == replayed.size());
  for (std::size_t i = 0; i < live.size(); ++i) {
    BOOST_TEST(live[i].id == replayed[i].id);
    BOOST_TEST(live[i].revoked_seq == replayed[i].revoked_seq);
    BOOST_TEST(live[i].created_seq == replayed[i].created_seq);
    BOOST_TEST((live[i].digest == replayed[i].digest));
  }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(find_user, ServiceFixture)

BOOST_AUTO_TEST_CASE(an_unknown_user_that_may_be_a_token_is_not_echoed) {
  // Bug (found by fuzz/http_handler_fuzz): FindUser's NotFound message echoed the
  // identifier, so a token sent in the Sudo header (or ?sudo=) came back in the 404.
  for (const std::string& pasted : {root_token_, root_token_.substr(6), "x " + root_token_}) {
    auto r = service_->FindUser(pasted);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().IsNotFound());
    BOOST_TEST(r.error().message().find(root_token_.substr(6, 20)) == std::string::npos);
  }
  auto plain = service_->FindUser("nobody");
  BOOST_TEST_REQUIRE(!plain.has_value());
  BOOST_TEST(plain.error().message() == "User with ID or username 'nobody' Not Found");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(replay_state)

BOOST_AUTO_TEST_CASE(a_user_id_far_beyond_the_last_one_is_refused_without_allocating) {
  // Bug (found by fuzz/event_decode_fuzz): State refused user ids above kMaxUserId
  // (2^28 - 1) but resized its id-indexed user table for any id up to it, so a single
  // UserRegistered with a huge id made replay — every open, verify and forensic tool —
  // allocate ~30 GB. Token ids already had the "far beyond the last one" rule.
  TempDir dir;
  ledger::Options options;
  options.create_if_missing = true;
  auto ledger = ledger::Ledger::Open(dir.Sub("ledger"), options);
  BOOST_TEST_REQUIRE(ledger.has_value(), Why(ledger));
  schema::EventContext ctx;
  ctx.recorded_at_us = kNoon;
  auto user = [&](std::uint64_t id, const std::string& name) {
    return schema::BuildUserRegistered(ctx, id, name, name, name + "@example.com", false);
  };
  BOOST_TEST_REQUIRE(
      (*ledger)->Append({schema::BuildLedgerInitialized(ctx, 1, "glpat-"), user(1, "root")})
          .has_value());
  BOOST_TEST_REQUIRE((*ledger)->Append({user(index::UserFlags::kMaxUserId, "far")}).has_value());

  replay::State state;
  const Status s = replay::Replay(**ledger, &state);
  BOOST_TEST(s.IsCorruption(), s.ToString());
  BOOST_TEST(s.message().find("seq 3: user id 268435455 far beyond the last one") !=
                 std::string::npos,
             s.message());
  BOOST_TEST(state.user_count() == 1u);
  BOOST_TEST(state.MemoryBytes() < 64u << 20, state.MemoryBytes());
}

// Resident bytes of this process (/proc/self/statm).
std::uint64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

// Replay runs Prefault on a thread of its own; here it runs to the end on this one.
BOOST_AUTO_TEST_CASE(prefault_brings_in_the_index_and_half_the_reserve_and_compact_returns_the_unused) {
  replay::State state;
  state.ReserveForRecords(2000000);  // catalog reserved for 2M; index sized for 1M tokens
  const std::uint64_t index_bytes = state.token_index().MemoryBytes();
  const std::uint64_t catalog_bytes = 1000000 * 56;  // what Prefault brings in of it
  BOOST_TEST_REQUIRE(index_bytes >= 64u << 20, index_bytes);
  const std::uint64_t before = ResidentBytes();
  int steps = 0;
  while (state.Prefault(std::size_t{2} << 20)) ++steps;
  const std::uint64_t prefaulted = ResidentBytes();
  BOOST_TEST(steps >= int((index_bytes + catalog_bytes) >> 21) - 1, steps);
  BOOST_TEST(!state.Prefault(std::size_t{2} << 20));  // done: stays done
  BOOST_TEST(prefaulted - before >= (index_bytes + catalog_bytes) / 10 * 9,
             before << " -> " << prefaulted);
  BOOST_TEST(prefaulted - before <= index_bytes + catalog_bytes + (8u << 20),
             "no more than half the reserve: " << before << " -> " << prefaulted);
  BOOST_TEST(state.token_index().size() == 0u);
  BOOST_TEST(state.token_count() == 0u);
  // No token took those entries: Compact gives their pages back (the index stays).
  state.Compact();
  const std::uint64_t compacted = ResidentBytes();
  BOOST_TEST(prefaulted - compacted >= catalog_bytes / 10 * 9,
             prefaulted << " -> " << compacted);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::service
