#include "tools/forensics/generator.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <set>
#include <tuple>
#include <vector>

#include "common/clock.h"
#include "index/token_index.h"
#include "ledger/format.h"
#include "ledger/ledger.h"
#include "schema/event_codec.h"
#include "service/scopes.h"
#include "service/token_format.h"
#include "service/token_key.h"
#include "tools/forensics/common.h"

namespace patledger::forensics {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using service::ScopeSet;

// ---- deterministic randomness ---------------------------------------------------------

std::uint64_t SplitMix(std::uint64_t* x) {
  std::uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// xoshiro256** (Blackman and Vigna), seeded through SplitMix64: the same sequence on
// every platform and compiler.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) {
    for (auto& w : s_) w = SplitMix(&seed);
  }
  std::uint64_t Next() {
    const std::uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, n), without modulo bias. REQUIRES: n > 0.
  std::uint64_t Below(std::uint64_t n) {
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    std::uint64_t v;
    do v = Next();
    while (v >= limit);
    return v % n;
  }
  std::int64_t Between(std::int64_t lo, std::int64_t hi) {  // inclusive
    return lo + static_cast<std::int64_t>(Below(static_cast<std::uint64_t>(hi - lo) + 1));
  }
  double Real() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  bool Chance(double p) { return Real() < p; }

 private:
  static std::uint64_t Rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

std::string Base62(std::uint32_t v, std::size_t digits) {
  std::string out(digits, '0');
  for (std::size_t i = digits; i-- > 0;) {
    out[i] = service::kTokenAlphabet[v % 62];
    v /= 62;
  }
  return out;
}

// ---- the generator's own model --------------------------------------------------------

struct GUser {
  std::uint64_t id = 0;
  std::string username;
  bool admin = false;
  bool blocked = false;
  std::string address;
  // The user's tokens, oldest first, except those known to be dead (revoked, or
  // expired: simulated time only moves forward), which LiveTokenOf drops.
  std::vector<std::uint64_t> tokens;
  std::vector<std::uint64_t> sudo_tokens;  // the same, only those with api and sudo
};

struct GToken {
  std::uint64_t id = 0;
  std::uint64_t user = 0;
  std::string name, description;
  ScopeSet scopes = 0;
  std::int32_t expires_day = 0;
  bool revoked = false;
  std::string reason;
  std::uint64_t rotated_from = 0, rotated_to = 0;
};

struct Acting {
  schema::EventContext ctx;
};

constexpr const char* kFirstNames[] = {"alice",   "bob",   "carol",  "dave",   "erin",
                                       "frank",   "grace", "heidi",  "ivan",   "judy",
                                       "mallory", "niaj",  "olivia", "peggy",  "rupert",
                                       "sybil",   "trent", "victor", "walter", "yolanda"};
constexpr const char* kTokenNames[] = {
    "ci",        "deploy",  "laptop", "backup",        "renovate", "grafana",
    "terraform", "release", "mirror", "registry-pull", "k8s",      "scripts"};
constexpr const char* kDescriptions[] = {"",
                                         "",
                                         "",
                                         "nightly pipeline",
                                         "local development",
                                         "read-only automation",
                                         "temporary, remove soon"};

class Generator {
 public:
  Generator(const GeneratorOptions& o, ledger::Ledger* ledger,
            const service::TokenKey& key, std::ostream* truth, std::int64_t t0)
      : o_(o),
        ledger_(ledger),
        key_(key),
        truth_(truth),
        rng_(o.seed),
        clock_(t0),
        t0_(t0),
        end_(t0 + static_cast<std::int64_t>(o.days) * kMicrosPerDay) {
    users_.resize(1);
    tokens_.resize(1);
  }

  Status Run() {
    PATLEDGER_RETURN_IF_ERROR(Init());
    std::uint64_t users_left = o_.users;
    while (users_left > 0 || created_ < o_.tokens) {
      // The next step, spread so that the run ends near the last day.
      const double expected_left = static_cast<double>(users_left) +
                                   static_cast<double>(o_.tokens - created_) * 1.8 + 1;
      const std::int64_t left =
          std::max<std::int64_t>(end_ - clock_.NowMicros(), kMicrosPerDay / 24);
      const double mean = static_cast<double>(left) / expected_left;
      clock_.Advance(1 + static_cast<std::int64_t>(mean * (0.1 + 1.8 * rng_.Real())));
      PATLEDGER_RETURN_IF_ERROR(Step(&users_left));
    }
    return Status::OK();
  }

  std::uint64_t users() const { return users_.size() - 1; }
  std::uint64_t tokens() const { return tokens_.size() - 1; }
  std::int64_t last_us() const { return last_us_; }
  const std::vector<GToken>& all_tokens() const { return tokens_; }
  const std::vector<GUser>& all_users() const { return users_; }

 private:
  // ---- one request ------------------------------------------------------------------

  Status Step(std::uint64_t* users_left) {
    const std::int32_t today = DayOf(clock_.NowMicros());
    double w_register = 0, w_create = 0, w_rotate = 0, w_revoke = 0, w_block = 0,
           w_unblock = 0, w_grant = 0, w_remove = 0, w_reuse = 0;
    if (*users_left > 0) {
      w_register =
          40.0 * static_cast<double>(*users_left) / static_cast<double>(o_.users) +
          (users_.size() <= 2 ? 1000 : 0);
    }
    const bool tokens_left = created_ < o_.tokens;
    if (tokens_left) w_create = 40;
    if (tokens_left && !live_.empty()) w_rotate = 18;
    if (!live_.empty()) w_revoke = 14;
    if (users_.size() > 2) w_block = 2, w_grant = 1;
    if (blocked_count_ > 0) w_unblock = 4;
    if (admin_count_ > 1) w_remove = 0.7;
    if (!rotated_away_.empty()) w_reuse = 0.8;
    const double weights[] = {w_register, w_create, w_rotate, w_revoke, w_block,
                              w_unblock,  w_grant,  w_remove, w_reuse};
    double total = 0;
    for (double w : weights) total += w;
    double pick = rng_.Real() * total;
    std::size_t action = 0;
    for (; action + 1 < std::size(weights); ++action) {
      if (pick < weights[action]) break;
      pick -= weights[action];
    }
    switch (action) {
      case 0:
        --*users_left;
        return Register();
      case 1:
        return Create(today);
      case 2:
        return Rotate(today);
      case 3:
        return Revoke();
      case 4:
        return Block(true);
      case 5:
        return Block(false);
      case 6:
        return SetAdmin(true);
      case 7:
        return SetAdmin(false);
      default:
        return Reuse();
    }
  }

  Status Init() {
    schema::EventContext ctx = Context(Cli());
    GUser root;
    root.id = 1;
    root.username = "root";
    root.admin = true;
    root.address = "10.0.0.1";
    users_.push_back(root);
    ++admin_count_;
    AddAdmin(1);
    GToken t;
    t.id = 1;
    t.user = 1;
    t.name = "root";
    t.description = "made by patledger init";
    t.scopes = service::kApi | service::kSudo;
    t.expires_day = DayOf(ctx.recorded_at_us) + 365;
    std::vector<std::string> events;
    events.push_back(schema::BuildLedgerInitialized(ctx, key_.Fingerprint(), "glpat-"));
    events.push_back(schema::BuildUserRegistered(ctx, 1, "root", "Administrator",
                                                 "root@localhost", true));
    events.push_back(schema::BuildTokenCreated(ctx, Fields(t)));
    auto seq = Append(std::move(events));
    if (!seq) return seq.error();
    char fp[24];
    std::snprintf(fp, sizeof fp, "%016llx",
                  static_cast<unsigned long long>(key_.Fingerprint()));
    Truth(*seq, ctx,
          {{"op", "init"}, {"key_fingerprint", fp}, {"token_prefix", "glpat-"}});
    Truth(*seq + 1, ctx, UserTruth(root));
    AddToken(t, *seq + 2, ctx);
    return Status::OK();
  }

  Status Register() {
    GUser u;
    u.id = users_.size();
    const std::size_t n = std::size(kFirstNames);
    u.username = std::string(kFirstNames[(u.id - 2) % n]);
    if (u.id - 2 >= n) u.username += std::to_string((u.id - 2) / n + 1);
    u.admin = rng_.Chance(0.05);
    u.address = "10." + std::to_string(1 + u.id / 250) + "." +
                std::to_string(u.id % 250) + "." + std::to_string(10 + rng_.Below(200));
    std::string name = u.username;
    name[0] = static_cast<char>(name[0] - 'a' + 'A');
    const Acting a = rng_.Chance(0.7) ? AsAdmin(0, false) : Cli();
    schema::EventContext ctx = Context(a);
    auto seq = Append({schema::BuildUserRegistered(
        ctx, u.id, u.username, name, u.username + "@example.com", u.admin)});
    if (!seq) return seq.error();
    admin_count_ += u.admin;
    if (u.admin) AddAdmin(u.id);
    users_.push_back(u);
    Truth(*seq, ctx, UserTruth(u));
    return Status::OK();
  }

  Status Create(std::int32_t today) {
    // Later users get tokens too, but root fewer.
    std::uint64_t owner =
        PickUser([](const GUser& u) { return !u.blocked; }, /*with_root=*/false);
    if (owner == 0 || rng_.Chance(0.05)) owner = 1;
    GUser& u = users_[owner];
    GToken t;
    t.id = tokens_.size();
    t.user = owner;
    t.name = kTokenNames[rng_.Below(std::size(kTokenNames))];
    t.description = kDescriptions[rng_.Below(std::size(kDescriptions))];
    t.scopes = PickScopes(u.admin);
    static constexpr int kLifetimes[] = {7, 30, 30, 60, 90, 90, 90, 180, 365};
    t.expires_day = today + kLifetimes[rng_.Below(std::size(kLifetimes))];
    const Acting a = ActorFor(owner);
    schema::EventContext ctx = Context(a);
    auto seq = Append({schema::BuildTokenCreated(ctx, Fields(t))});
    if (!seq) return seq.error();
    AddToken(t, *seq, ctx);
    return Status::OK();
  }

  Status Rotate(std::int32_t today) {
    const std::uint64_t id = live_[rng_.Below(live_.size())];
    GToken old = tokens_[id];
    const GUser& owner = users_[old.user];
    if (owner.blocked) return Status::OK();  // the service refuses: nothing happens
    if (old.expires_day <= today) return Status::OK();  // nobody rotates a dead token
    ScopeSet scopes = old.scopes;
    if (!owner.admin) scopes &= ~service::kSudo;
    if (scopes == 0) return Status::OK();
    GToken t;
    t.id = tokens_.size();
    t.user = old.user;
    t.name = old.name;
    t.description = old.description;
    t.scopes = scopes;
    static constexpr int kLifetimes[] = {7, 7, 30, 90};
    t.expires_day = today + kLifetimes[rng_.Below(std::size(kLifetimes))];
    t.rotated_from = id;
    // Owners rotate their own tokens, often with the token itself (self/rotate).
    Acting a = ActorFor(old.user);
    if (rng_.Chance(0.5)) {
      a.ctx.actor_user_id = old.user;
      a.ctx.actor_token_id = id;
      a.ctx.via_sudo = false;
      a.ctx.client_address = owner.address;
      a.ctx.request_id = RequestId();
    }
    schema::EventContext ctx = Context(a);
    std::vector<std::string> events;
    events.push_back(schema::BuildTokenRevoked(ctx, id, schema::RevokeReason::Rotated));
    events.push_back(schema::BuildTokenCreated(ctx, Fields(t)));
    auto seq = Append(std::move(events));
    if (!seq) return seq.error();
    MarkRevoked(id, "rotated", *seq, ctx);
    tokens_[id].rotated_to = t.id;
    rotated_away_.push_back(id);
    AddToken(t, *seq + 1, ctx);
    return Status::OK();
  }

  Status Revoke() {
    const std::uint64_t id = live_[rng_.Below(live_.size())];
    const GToken& t = tokens_[id];
    if (id == 1) return Status::OK();  // nobody revokes the root token here
    const double r = rng_.Real();
    schema::RevokeReason reason;
    Acting a;
    if (r < 0.45 && !users_[t.user].blocked) {
      reason = schema::RevokeReason::ByOwner;
      a = ActorFor(t.user);
      if (a.ctx.actor_user_id != t.user || a.ctx.via_sudo) {
        reason = schema::RevokeReason::ByAdmin;
      }
    } else if (r < 0.75) {
      reason = schema::RevokeReason::ByAdmin;
      a = AsAdmin(t.user, false);
      if (a.ctx.actor_user_id == 0) a = Cli();
    } else {
      reason = schema::RevokeReason::ReportedLeaked;  // an operator at the CLI
      a = Cli();
    }
    schema::EventContext ctx = Context(a);
    auto seq = Append({schema::BuildTokenRevoked(ctx, id, reason)});
    if (!seq) return seq.error();
    MarkRevoked(id, std::string(schema::RevokeReasonName(reason)), *seq, ctx);
    return Status::OK();
  }

  // Someone presents a rotated-away token for rotation: the service revokes every
  // active token of its family (family_reuse) in one transaction.
  Status Reuse() {
    const std::size_t pick = rng_.Below(rotated_away_.size());
    const std::uint64_t id = rotated_away_[pick];
    rotated_away_[pick] = rotated_away_.back();
    rotated_away_.pop_back();
    std::uint64_t first = id;
    while (tokens_[first].rotated_from) first = tokens_[first].rotated_from;
    std::vector<std::uint64_t> victims;
    for (std::uint64_t m = first; m != 0; m = tokens_[m].rotated_to) {
      if (!tokens_[m].revoked && m != id) victims.push_back(m);
    }
    if (victims.empty()) return Status::OK();
    Acting a;
    a.ctx.actor_user_id = tokens_[id].user;
    a.ctx.actor_token_id = id;
    a.ctx.client_address =
        "203.0.113." + std::to_string(1 + rng_.Below(250));  // elsewhere
    a.ctx.request_id = RequestId();
    schema::EventContext ctx = Context(a);
    std::vector<std::string> events;
    for (std::uint64_t m : victims) {
      events.push_back(
          schema::BuildTokenRevoked(ctx, m, schema::RevokeReason::FamilyReuse));
    }
    auto seq = Append(std::move(events));
    if (!seq) return seq.error();
    for (std::size_t i = 0; i < victims.size(); ++i) {
      MarkRevoked(victims[i], "family_reuse", *seq + i, ctx);
    }
    return Status::OK();
  }

  Status Block(bool block) {
    const std::uint64_t id =
        PickUser([block](const GUser& u) { return u.blocked != block; }, false,
                 block ? nullptr : &blocked_);
    if (id == 0) return Status::OK();
    const Acting a = rng_.Chance(0.6) ? AsAdmin(0, false) : Cli();
    schema::EventContext ctx = Context(a);
    auto seq = Append({schema::BuildUserChanged(
        ctx, id, block ? schema::UserChange::Blocked : schema::UserChange::Unblocked)});
    if (!seq) return seq.error();
    users_[id].blocked = block;
    const auto at = std::lower_bound(blocked_.begin(), blocked_.end(), id);
    if (block) blocked_.insert(at, id);
    else blocked_.erase(at);
    blocked_count_ += block ? 1 : -1;
    Truth(*seq, ctx, {{"op", block ? "block" : "unblock"}, {"user_id", id}});
    return Status::OK();
  }

  Status SetAdmin(bool grant) {
    const std::uint64_t id = PickUser(
        [grant](const GUser& u) { return u.admin != grant && !u.blocked; }, false,
        grant ? nullptr : &admins_);
    if (id == 0) return Status::OK();
    const Acting a = AsAdmin(0, false);
    schema::EventContext ctx = Context(a);
    auto seq = Append({schema::BuildUserChanged(
        ctx, id,
        grant ? schema::UserChange::AdminGranted : schema::UserChange::AdminRemoved)});
    if (!seq) return seq.error();
    users_[id].admin = grant;
    if (!grant) sudo_holders_.erase(id);
    else if (!users_[id].sudo_tokens.empty()) sudo_holders_.insert(id);
    admin_count_ += grant ? 1 : -1;
    if (grant)
      AddAdmin(id);
    else
      RemoveAdmin(id);
    Truth(*seq, ctx, {{"op", grant ? "admin_grant" : "admin_remove"}, {"user_id", id}});
    return Status::OK();
  }

  // A random user (never root unless `with_root`) for whom `pred` holds, or 0. Random
  // probes first, then a scan: constant time while most users qualify.
  // `among`, when given, lists (ascending) every user for whom `pred` may hold, so the
  // scan visits only those: the same pick, without a pass over every user.
  template <typename Pred>
  std::uint64_t PickUser(Pred pred, bool with_root,
                         const std::vector<std::uint64_t>* among = nullptr) {
    const std::uint64_t lo = with_root ? 1 : 2, n = users_.size();
    if (n <= lo) return 0;
    for (int probe = 0; probe < 32; ++probe) {
      const std::uint64_t id = lo + rng_.Below(n - lo);
      if (pred(users_[id])) return id;
    }
    std::vector<std::uint64_t> candidates;
    if (among != nullptr) {
      for (std::uint64_t id : *among) {
        if (id >= lo && id < n && pred(users_[id])) candidates.push_back(id);
      }
    } else {
      for (std::uint64_t id = lo; id < n; ++id) {
        if (pred(users_[id])) candidates.push_back(id);
      }
    }
    return candidates.empty() ? 0 : candidates[rng_.Below(candidates.size())];
  }

  // ---- actors -------------------------------------------------------------------------

  Acting Cli() { return Acting{}; }

  // The newest live token of `user` (not revoked, not expired) that grants `need`
  // (the API's writes need api; acting through sudo needs sudo too), or 0.
  // Dead tokens met on the way are dropped from the user's list (they can never be
  // live again), so the walk stays short however many tokens the user ever had.
  std::uint64_t LiveTokenOf(std::uint64_t user, ScopeSet need = service::kApi) {
    const std::int32_t today = DayOf(clock_.NowMicros());
    // A token granting api and sudo is in the shorter sudo list too, newest last.
    constexpr ScopeSet kApiSudo = service::kApi | service::kSudo;
    auto& ids = (need & kApiSudo) == kApiSudo && (need & ~kApiSudo) == 0
                    ? users_[user].sudo_tokens
                    : users_[user].tokens;
    auto dead = [&](std::uint64_t id) {
      return tokens_[id].revoked || tokens_[id].expires_day <= today;
    };
    std::uint64_t found = 0;
    bool saw_dead = false;
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
      const GToken& t = tokens_[*it];
      if (dead(t.id)) {
        saw_dead = true;
      } else if ((t.scopes & need) == need) {
        found = t.id;
        break;
      }
    }
    if (saw_dead) std::erase_if(ids, dead);
    return found;
  }

  // An administrator acting over the API with one of their tokens, through sudo as
  // `for_user` when `sudo` (and they hold a sudo token); the CLI when no
  // administrator has a live api token.
  Acting AsAdmin(std::uint64_t for_user, bool sudo) {
    sudo = sudo && for_user != 0;
    const ScopeSet need = sudo ? service::kApi | service::kSudo : service::kApi;
    std::uint64_t admin = 0, token = 0;
    // A few random administrators first; all of them only when those have no token.
    const std::vector<std::uint64_t>& ids = admins_;
    for (int probe = 0; probe < 8 && token == 0 && !ids.empty(); ++probe) {
      admin = ids[rng_.Below(ids.size())];
      if (!users_[admin].blocked) token = LiveTokenOf(admin, need);
    }
    if (token == 0) {
      std::vector<std::pair<std::uint64_t, std::uint64_t>> admins;  // user, token
      if (sudo) {
        // Only administrators holding a possibly live sudo token can qualify: the same
        // list, ascending, as scanning every administrator. Those with none are dropped.
        for (auto it = sudo_holders_.begin(); it != sudo_holders_.end();) {
          const std::uint64_t id = *it;
          const std::uint64_t t = LiveTokenOf(id, need);
          it = t == 0 ? sudo_holders_.erase(it) : std::next(it);
          if (t != 0 && !users_[id].blocked) admins.emplace_back(id, t);
        }
      } else {
        for (std::uint64_t id : ids) {
          if (users_[id].blocked) continue;
          if (const std::uint64_t t = LiveTokenOf(id, need)) admins.emplace_back(id, t);
        }
      }
      if (admins.empty()) return sudo ? AsAdmin(for_user, false) : Cli();
      std::tie(admin, token) = admins[rng_.Below(admins.size())];
    }
    Acting a;
    a.ctx.actor_user_id = sudo ? for_user : admin;
    a.ctx.actor_token_id = token;
    a.ctx.via_sudo = sudo;
    a.ctx.client_address = users_[admin].address;
    a.ctx.request_id = RequestId();
    return a;
  }

  // Who creates (or rotates) a token of `owner`: the owner with a token of theirs,
  // an administrator (a quarter of the time through sudo), or the CLI.
  Acting ActorFor(std::uint64_t owner) {
    const double r = rng_.Real();
    if (r < 0.55) {
      if (const std::uint64_t t = LiveTokenOf(owner)) {
        Acting a;
        a.ctx.actor_user_id = owner;
        a.ctx.actor_token_id = t;
        a.ctx.client_address = rng_.Chance(0.9)
                                   ? users_[owner].address
                                   : "192.168." + std::to_string(rng_.Below(255)) + "." +
                                         std::to_string(1 + rng_.Below(254));
        a.ctx.request_id = RequestId();
        return a;
      }
    }
    if (r < 0.9) return AsAdmin(owner, rng_.Chance(0.25));
    return Cli();
  }

  std::string RequestId() {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%016llx%016llx",
                  static_cast<unsigned long long>(rng_.Next()),
                  static_cast<unsigned long long>(rng_.Next()));
    return std::string(buf, 8) + "-" + std::string(buf + 8, 4) + "-" +
           std::string(buf + 12, 4) + "-" + std::string(buf + 16, 4) + "-" +
           std::string(buf + 20, 12);
  }

  schema::EventContext Context(const Acting& a) const {
    schema::EventContext ctx = a.ctx;
    ctx.recorded_at_us = clock_.NowMicros();
    return ctx;
  }

  ScopeSet PickScopes(bool admin) {
    using namespace service;
    const double r = rng_.Real();
    if (r < 0.30) return kApi;
    if (r < 0.45) return kReadApi;
    if (r < 0.55) return kReadRepository;
    if (r < 0.65) return kReadRepository | kWriteRepository;
    if (r < 0.73) return kReadRegistry;
    if (r < 0.78) return kReadRegistry | kWriteRegistry;
    if (r < 0.85) return kReadUser;
    if (r < 0.92) return kApi | kReadUser;
    return admin ? kApi | kSudo : kApi;
  }

  // ---- bookkeeping --------------------------------------------------------------------

  // admins_ stays sorted, so a random index picks what it would from a std::set (the
  // ledger stays the same) without copying the set on every pick.
  void AddAdmin(std::uint64_t id) {
    const auto at = std::lower_bound(admins_.begin(), admins_.end(), id);
    if (at == admins_.end() || *at != id) admins_.insert(at, id);
  }
  void RemoveAdmin(std::uint64_t id) {
    const auto at = std::lower_bound(admins_.begin(), admins_.end(), id);
    if (at != admins_.end() && *at == id) admins_.erase(at);
  }

  schema::TokenCreatedFields Fields(const GToken& t) {
    schema::TokenCreatedFields f;
    f.token_id = t.id;
    f.user_id = t.user;
    f.name = t.name;
    f.description = t.description;
    f.scopes = t.scopes;
    f.expires_day = t.expires_day;
    f.digest = key_.Digest(GeneratedToken(o_.seed, t.id));
    f.rotated_from = t.rotated_from;
    return f;
  }

  void AddToken(const GToken& t, std::uint64_t seq, const schema::EventContext& ctx) {
    tokens_.push_back(t);
    users_[t.user].tokens.push_back(t.id);
    if ((t.scopes & (service::kApi | service::kSudo)) == (service::kApi | service::kSudo)) {
      users_[t.user].sudo_tokens.push_back(t.id);
      if (users_[t.user].admin) sudo_holders_.insert(t.user);
    }
    if (live_pos_.size() <= t.id) live_pos_.resize(t.id + 1, kNotLive);
    live_pos_[t.id] = live_.size();
    live_.push_back(t.id);
    ++created_;
    Truth(seq, ctx,
          {{"op", "create"},
           {"token_id", t.id},
           {"user_id", t.user},
           {"name", t.name},
           {"description", t.description},
           {"scopes", t.scopes},
           {"expires_day", t.expires_day},
           {"rotated_from", t.rotated_from}});
  }

  void MarkRevoked(std::uint64_t id, const std::string& reason, std::uint64_t seq,
                   const schema::EventContext& ctx) {
    tokens_[id].revoked = true;
    tokens_[id].reason = reason;
    const std::size_t at = live_pos_[id];
    if (at != kNotLive) {
      live_pos_[live_.back()] = at;
      live_[at] = live_.back();
      live_.pop_back();
      live_pos_[id] = kNotLive;
    }
    Truth(seq, ctx, {{"op", "revoke"}, {"token_id", id}, {"reason", reason}});
  }

  json::object UserTruth(const GUser& u) {
    return {
        {"op", "user"}, {"user_id", u.id}, {"username", u.username}, {"admin", u.admin}};
  }

  void Truth(std::uint64_t seq, const schema::EventContext& ctx, json::object o) {
    last_us_ = ctx.recorded_at_us;
    if (truth_ == nullptr) return;
    json::object line;
    line["seq"] = seq;
    line["at_us"] = ctx.recorded_at_us;
    for (auto& [k, v] : o) line[k] = v;
    if (o.at("op") != "init") {
      line["actor_user_id"] = ctx.actor_user_id;
      line["actor_token_id"] = ctx.actor_token_id;
      line["via_sudo"] = ctx.via_sudo;
      line["client_address"] = ctx.client_address;
      line["request_id"] = ctx.request_id;
    }
    *truth_ << json::serialize(line) << "\n";
  }

  // One request's events. With --batch 1 (the default) they are one Ledger::Append,
  // as the service writes them. With --batch N, the events of up to N requests are
  // buffered and appended as ONE transaction (fewer, larger writes: for big benchmark
  // ledgers); the generator is the only writer, so the seq each event will get is
  // known in advance and returned at once.
  Result<std::uint64_t> Append(std::vector<std::string> events) {
    if (o_.batch <= 1) return ledger_->Append(std::move(events));
    if (pending_.size() + events.size() > ledger::format::kMaxTransactionEvents) {
      PATLEDGER_RETURN_ERR_IF_ERROR(Flush());
    }
    const std::uint64_t seq = appended_seq_ + pending_.size() + 1;
    for (std::string& e : events) pending_.push_back(std::move(e));
    if (++pending_requests_ >= o_.batch) PATLEDGER_RETURN_ERR_IF_ERROR(Flush());
    return seq;
  }

 public:
  // Appends what --batch buffered. REQUIRES: called once more after the last request.
  Status Flush() {
    if (pending_.empty()) return Status::OK();
    const std::uint64_t count = pending_.size();
    auto first = ledger_->Append(std::move(pending_));
    pending_.clear();
    pending_requests_ = 0;
    if (!first) return first.error();
    if (*first != appended_seq_ + 1) {
      return Status::Internal("generator: the ledger gave seq " + std::to_string(*first) +
                              ", expected " + std::to_string(appended_seq_ + 1));
    }
    appended_seq_ += count;
    return Status::OK();
  }

 private:

  const GeneratorOptions& o_;
  ledger::Ledger* ledger_;
  const service::TokenKey& key_;
  std::ostream* truth_;
  Rng rng_;
  ManualClock clock_;
  std::int64_t t0_, end_;
  std::int64_t last_us_ = 0;
  std::vector<GUser> users_;    // index = id; [0] unused
  std::vector<GToken> tokens_;  // index = id; [0] unused
  static constexpr std::size_t kNotLive = SIZE_MAX;
  std::vector<std::uint64_t> live_;          // not revoked
  std::vector<std::size_t> live_pos_;        // by token id: index in live_, or kNotLive
  std::vector<std::uint64_t> admins_;        // administrators' ids, ascending
  std::vector<std::uint64_t> blocked_;       // blocked users' ids, ascending
  // Administrators who may hold a live token with scopes api and sudo (a superset:
  // AsAdmin drops those found without one).
  std::set<std::uint64_t> sudo_holders_;
  std::vector<std::uint64_t> rotated_away_;  // candidates for reuse
  std::uint64_t created_ = 0;
  std::vector<std::string> pending_;  // --batch: events not yet appended
  std::uint64_t pending_requests_ = 0;
  std::uint64_t appended_seq_ = 0;    // --batch: the last seq appended (a new ledger)
  int blocked_count_ = 0;
  int admin_count_ = 0;
};

Status WriteKeyFile(const std::string& path, const std::array<std::uint8_t, 32>& key) {
  std::string text(service::TokenKey::kFileHeader);
  text += internal::Hex(key) + "\n";
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    return errno == EEXIST ? Status::AlreadyExists(path + " already exists")
                           : Status::IOError("cannot create " + path);
  }
  const bool ok =
      ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
      ::fsync(fd) == 0;
  ::close(fd);
  return ok ? Status::OK() : Status::IOError("cannot write " + path);
}

Status SyncTree(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ::fsync(fd);
    ::close(fd);
  }
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  return ec ? Status::IOError("cannot list " + dir.string()) : Status::OK();
}

}  // namespace

std::string GeneratedToken(std::uint64_t seed, std::uint64_t token_id,
                           std::string_view prefix) {
  std::uint64_t x = seed ^ 0x5eed5eed5eed5eedull;
  Rng rng(SplitMix(&x) ^ (token_id * 0x9e3779b97f4a7c15ull));
  std::string token(prefix);
  for (std::size_t i = 0; i < service::kTokenRandomLength; ++i) {
    token += service::kTokenAlphabet[rng.Below(62)];
  }
  return token +
         Base62(XXH32(token.data(), token.size(), 0), service::kTokenChecksumLength);
}

std::array<std::uint8_t, 32> DerivedKey(std::uint64_t seed) {
  const std::string text =
      "patledger generate: TEST-ONLY instance key for seed " + std::to_string(seed);
  std::array<std::uint8_t, 32> key;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), key.data());
  return key;
}

Result<GeneratorResult> Generate(const GeneratorOptions& o) {
  if (o.data.empty()) return Err(Status::InvalidArgument("--data is required"));
  if (o.tokens < 1)
    return Err(Status::InvalidArgument("--tokens must be at least 1 (root's)"));
  if (o.days < 1) return Err(Status::InvalidArgument("--days must be at least 1"));
  if (o.batch < 1) return Err(Status::InvalidArgument("--batch must be at least 1"));
  const auto start_day = ParseDate(o.start);
  if (!start_day)
    return Err(Status::InvalidArgument("--start '" + o.start + "' is not a date"));
  const fs::path data(o.data);
  const fs::path ledger_dir = data / "ledger";
  const fs::path key_path = data / "token.key";
  std::error_code ec;
  if (fs::exists(ledger_dir, ec) || fs::exists(key_path, ec)) {
    return Err(Status::AlreadyExists(o.data + " already holds a ledger or a key"));
  }
  fs::create_directories(data, ec);
  if (ec) return Err(Status::IOError("cannot create " + o.data + ": " + ec.message()));

  GeneratorResult result;
  if (o.key_file.empty()) {
    PATLEDGER_RETURN_ERR_IF_ERROR(WriteKeyFile(key_path.string(), DerivedKey(o.seed)));
    result.derived_key = true;
  } else {
    auto loaded = service::TokenKey::Load(o.key_file);  // checks format and mode
    if (!loaded) return Err(loaded.error());
    if (!fs::copy_file(o.key_file, key_path, ec)) {
      return Err(Status::IOError("cannot copy the key to " + key_path.string()));
    }
    fs::permissions(key_path, fs::perms::owner_read | fs::perms::owner_write, ec);
  }
  auto key = service::TokenKey::Load(key_path.string());
  if (!key) return Err(key.error());

  std::ofstream truth;
  if (!o.truth_file.empty()) {
    truth.open(o.truth_file, std::ios::trunc);
    if (!truth) return Err(Status::IOError("cannot write " + o.truth_file));
  }
  ledger::Options lo;
  lo.create_if_missing = true;
  lo.error_if_exists = true;
  lo.sync = false;  // a generator: the files are synced once at the end
  auto ledger = ledger::Ledger::Open(ledger_dir.string(), lo);
  if (!ledger) return Err(ledger.error());

  const std::int64_t t0 = static_cast<std::int64_t>(*start_day) * kMicrosPerDay +
                          8 * 3600 * std::int64_t{1'000'000};
  Generator g(o, ledger->get(), *key, o.truth_file.empty() ? nullptr : &truth, t0);
  PATLEDGER_RETURN_ERR_IF_ERROR(g.Run());
  PATLEDGER_RETURN_ERR_IF_ERROR(g.Flush());
  result.last_seq = (*ledger)->last_seq();
  result.head_chain = (*ledger)->head_chain();
  result.users = g.users();
  result.tokens = g.tokens();
  result.first_us = t0;
  result.last_us = g.last_us();
  ledger->reset();
  PATLEDGER_RETURN_ERR_IF_ERROR(SyncTree(ledger_dir));

  if (truth.is_open()) {
    json::object end{{"op", "end"},
                     {"last_seq", result.last_seq},
                     {"head_chain", internal::Hex(result.head_chain)},
                     {"users", result.users},
                     {"tokens", result.tokens},
                     {"seed", o.seed},
                     {"first_us", result.first_us},
                     {"last_us", result.last_us}};
    truth << json::serialize(end) << "\n";
    truth.close();
    if (!truth) return Err(Status::IOError("cannot write " + o.truth_file));
  }

  if (!o.leaks_file.empty()) {
    // A sample secret-scanner report: a few real tokens of various fates, and noise.
    const std::int32_t last_day = DayOf(result.last_us);
    const auto& tokens = g.all_tokens();
    const auto& users = g.all_users();
    auto find = [&](auto pred) -> std::uint64_t {
      for (std::size_t i = tokens.size(); i-- > 1;) {
        if (pred(tokens[i])) return tokens[i].id;
      }
      return 0;
    };
    auto is_live = [&](const GToken& t) {
      return !t.revoked && t.expires_day > last_day && !users[t.user].blocked &&
             t.id != 1;
    };
    auto depth = [&](const GToken& t) {  // position in its rotation family, from 1
      std::size_t n = 1;
      for (std::uint64_t m = t.rotated_from; m != 0; m = tokens[m].rotated_from) ++n;
      return n;
    };
    // The live token with the longest history (the most to investigate).
    std::uint64_t live = 0;
    std::size_t best = 0;
    for (std::size_t i = 1; i < tokens.size(); ++i) {
      if (is_live(tokens[i]) && depth(tokens[i]) > best) {
        best = depth(tokens[i]);
        live = tokens[i].id;
      }
    }
    const std::uint64_t leaked =
        find([](const GToken& t) { return t.revoked && t.reason == "reported_leaked"; });
    // A rotated-away token whose family is still alive, or any rotated-away one.
    std::uint64_t rotated = find([&](const GToken& t) {
      if (t.reason != "rotated") return false;
      std::uint64_t m = t.id;
      while (tokens[m].rotated_to) m = tokens[m].rotated_to;
      return is_live(tokens[m]);
    });
    if (rotated == 0)
      rotated = find([](const GToken& t) { return t.reason == "rotated"; });
    const std::uint64_t expired =
        find([&](const GToken& t) { return !t.revoked && t.expires_day <= last_day; });
    std::ofstream leaks(o.leaks_file, std::ios::trunc);
    if (!leaks) return Err(Status::IOError("cannot write " + o.leaks_file));
    leaks
        << "# patledger generate --seed " << o.seed
        << ": sample secret-scanner findings. TEST ONLY: plaintext tokens of a generated "
           "ledger.\n";
    for (std::uint64_t id : {live, leaked, rotated, expired}) {
      if (id != 0) leaks << GeneratedToken(o.seed, id) << "\n";
    }
    leaks << GeneratedToken(o.seed, result.tokens + 1000)
          << "\n";  // well formed, unknown
    std::string typo = GeneratedToken(o.seed, live ? live : 1);
    typo[10] = typo[10] == 'a' ? 'b' : 'a';  // one character mistyped
    leaks << typo << "\n";
    leaks << "ghp_" << std::string(GeneratedToken(o.seed ^ 1, 7).substr(6, 36)) << "\n";
    leaks << "AKIAIOSFODNN7EXAMPLE\n";
    if (!leaks) return Err(Status::IOError("cannot write " + o.leaks_file));
    ::chmod(o.leaks_file.c_str(), 0600);
  }
  return result;
}

Status GenerateCommand(const GeneratorOptions& options, const Io& io) {
  if (options.key_file.empty()) {
    io.err << "WARNING: TEST ONLY. The instance key of this ledger is derived from the "
              "seed,\n"
              "and so is every token: anyone who knows the seed can compute them. Never "
              "use a\n"
              "generated ledger, or its key, for anything real.\n"
           << std::flush;
  }
  auto r = Generate(options);
  if (!r) return r.error();
  io.out << "Generated " << options.data << ": " << r->users << " users, " << r->tokens
         << " tokens, records 1.." << r->last_seq << ", " << internal::When(r->first_us)
         << " .. " << internal::When(r->last_us) << ".\n"
         << "head: seq " << r->last_seq << "  chain " << internal::Hex(r->head_chain)
         << "\n";
  if (!options.truth_file.empty())
    io.out << "Ground truth: " << options.truth_file << "\n";
  if (!options.leaks_file.empty()) {
    io.out << "Sample scanner findings (TEST ONLY, plaintext tokens): "
           << options.leaks_file << "\n";
  }
  return Status::OK();
}

}  // namespace patledger::forensics
