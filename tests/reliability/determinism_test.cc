// Reliability, point 5 (issue 7): replay is deterministic. The state the service holds
// live (built by the ledger's listener as each group commits, under concurrent
// writers), the state after a restart (replayed from the ledger), and the state
// rebuilt read-only at the same point (as the tools rebuild it, by seq and by time)
// are identical, compared by a digest of the whole state (StateText: every user with
// its flags, every TokenMeta, and what the lock-free index answers for each digest).

#include <boost/test/unit_test.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "service/token_service.h"
#include "tests/reliability/reliability_util.h"
#include "tests/reliability/sim_disk.h"
#include "tests/test_util.h"

namespace patledger::reliability {
namespace {

constexpr std::int64_t kNoon = 1'795'867'200'000'000LL;  // 2026-11-28T12:00:00Z
constexpr std::int64_t kHour = 3'600'000'000LL;

// A point of the history: the live state when every writer had returned.
struct Checkpoint {
  std::uint64_t seq = 0;
  std::int64_t time_us = 0;  // the clock during the phase that ended here
  std::string text;          // StateText of the live state
};

// Mixed writes from one thread: creates, revokes, rotations (some of a revoked token:
// a family revocation), users registered, blocked, unblocked, promoted. Refusals
// (already revoked, being revoked, blocked owner...) are part of the game; any other
// error is counted.
void Writer(service::TokenService& svc, int thread, int ops, std::uint64_t seed,
            std::atomic<int>* unexpected, std::string* first_unexpected) {
  std::mt19937_64 rng(seed);
  service::Actor root{1, 1, false, "192.0.2.1", "t" + std::to_string(thread)};
  auto note = [&](const Status& s) {
    using C = Status::Code;
    if (s.ok() || s.code() == C::kFailedPrecondition || s.code() == C::kUnauthenticated ||
        s.code() == C::kNotFound || s.code() == C::kAlreadyExists) {
      return;
    }
    if (unexpected->fetch_add(1) == 0) *first_unexpected = s.ToString();
  };
  auto random_token = [&]() -> std::uint64_t {
    const std::uint64_t max = svc.state().max_token_id();
    return max == 0 ? 1 : 1 + rng() % max;
  };
  auto random_user = [&]() -> std::uint64_t {
    const std::uint64_t max = svc.state().max_user_id();
    return max <= 1 ? 1 : 2 + rng() % (max - 1);  // never root
  };
  for (int i = 0; i < ops; ++i) {
    const int op = static_cast<int>(rng() % 100);
    if (op < 45) {
      service::CreateTokenRequest req;
      req.user_id = random_user();
      req.name = "t" + std::to_string(thread) + "-" + std::to_string(i);
      req.scopes = (rng() % 2 ? service::kApi : service::kReadApi) | service::kReadUser;
      if (rng() % 3 == 0)
        req.expires_day = DayOf(svc.clock().NowMicros()) + 1 + rng() % 300;
      auto t = svc.CreateToken(root, req);
      note(t ? Status::OK() : t.error());
    } else if (op < 60) {
      note(svc.RevokeToken(root, random_token(), schema::RevokeReason::ByAdmin));
    } else if (op < 75) {
      auto t = svc.RotateToken(root, random_token(), std::nullopt);
      note(t ? Status::OK() : t.error());
    } else if (op < 82) {
      const std::string name =
          "u" + std::to_string(thread) + "x" + std::to_string(rng() % 1'000'000);
      auto u = svc.RegisterUser(root, name, name, name + "@example.com", rng() % 5 == 0);
      note(u ? Status::OK() : u.error());
    } else if (op < 90) {
      note(svc.BlockUser(root, random_user()));
    } else if (op < 97) {
      note(svc.UnblockUser(root, random_user()));
    } else {
      note(svc.SetAdmin(root, random_user(), rng() % 2 == 0));
    }
  }
}

BOOST_AUTO_TEST_SUITE(determinism)

BOOST_AUTO_TEST_CASE(live_restarted_and_read_only_rebuilt_states_are_identical) {
  const std::uint64_t seed = Seed("determinism");
  std::mt19937_64 rng(seed);
  ScratchDir tmp;
  ManualClock clock(kNoon);
  service::ServiceOptions o;
  o.data_dir = tmp.Sub("data");
  o.clock = &clock;
  o.env = NoPreallocationFs::Env();
  {
    auto init = service::TokenService::Init(o);
    BOOST_TEST_REQUIRE(init.has_value(), Why(init));
  }
  const int phases = static_cast<int>(Size("PATLEDGER_DETERMINISM_PHASES", 8, 40));
  const int ops = static_cast<int>(Size("PATLEDGER_DETERMINISM_OPS", 400, 5'000));
  constexpr int kThreads = 4;

  std::vector<Checkpoint> checkpoints;
  std::string live_service_text;
  std::atomic<int> unexpected{0};
  std::string first_unexpected;
  {
    auto svc = service::TokenService::Open(o);
    BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
    checkpoints.push_back(
        {(*svc)->state().last_seq(), kNoon, StateText((*svc)->state())});
    for (int phase = 1; phase <= phases; ++phase) {
      clock.Set(kNoon + phase * kHour);  // one instant per phase: time limits are exact
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back(Writer, std::ref(**svc), t, ops, rng(), &unexpected,
                             &first_unexpected);
      }
      for (auto& th : threads) th.join();
      BOOST_TEST_REQUIRE((*svc)->state().health().ok(),
                         (*svc)->state().health().ToString());
      checkpoints.push_back(
          {(*svc)->state().last_seq(), clock.NowMicros(), StateText((*svc)->state())});
    }
    live_service_text = ServiceText(**svc);
  }
  BOOST_TEST(unexpected.load() == 0, first_unexpected);
  const Checkpoint& last = checkpoints.back();
  BOOST_TEST_MESSAGE("determinism: " << phases << " phases of " << kThreads << " x "
                                     << ops << " concurrent writes, " << last.seq
                                     << " events, " << checkpoints.size()
                                     << " checkpoints");

  // After a restart (writable open, as `patledger serve`).
  {
    auto svc = service::TokenService::Open(o);
    BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
    const std::string text = StateText((*svc)->state());
    BOOST_TEST(text == last.text, FirstDifference(last.text, text));
    const std::string service_text = ServiceText(**svc);
    BOOST_TEST(service_text == live_service_text,
               FirstDifference(live_service_text, service_text));
    BOOST_TEST_MESSAGE("determinism: live " << StateDigest((*svc)->state()).substr(0, 16)
                                            << " = after restart, at seq " << last.seq);
  }

  // Read-only, at every checkpoint, by seq and by time.
  int matched = 0;
  for (const Checkpoint& cp : checkpoints) {
    for (bool by_time : {false, true}) {
      service::ServiceOptions ro = o;
      ro.read_only = true;
      if (by_time) {
        ro.replay_to.to_time_us = cp.time_us;
      } else {
        ro.replay_to.to_seq = cp.seq;
      }
      auto svc = service::TokenService::Open(ro);
      BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
      const std::string text = StateText((*svc)->state());
      BOOST_TEST(text == cp.text, (by_time ? "by time" : "by seq")
                                      << " at seq " << cp.seq << ": "
                                      << FirstDifference(cp.text, text));
      matched += text == cp.text;
    }
    BOOST_TEST_MESSAGE("  seq " << cp.seq << ": " << Sha256Hex(cp.text).substr(0, 16)
                                << " live = read-only by seq = read-only by time");
  }
  BOOST_TEST_MESSAGE("determinism: "
                     << matched << " of " << 2 * checkpoints.size()
                     << " read-only rebuilds identical to the live state");

  // The comparison can fail: one record less is a different state.
  service::ServiceOptions ro = o;
  ro.read_only = true;
  ro.replay_to.to_seq = last.seq - 1;
  auto shorter = service::TokenService::Open(ro);
  BOOST_TEST_REQUIRE(shorter.has_value(), Why(shorter));
  BOOST_TEST(StateText((*shorter)->state()) != last.text);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::reliability
