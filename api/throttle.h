// api/throttle.h: the failed-authentication ban (docs/api.md, "Throttling failed
// authentication"). After `threshold` failed authentications from one client address
// within `window`, every request from that address that presents a token is refused
// with 429 for `ban` — GitLab's "failed authentication ban" (30 failures in 3 minutes
// from one IP -> banned for 1 hour; docs.gitlab.com/rate_limits/abuse_bans/).
//
// What counts as a failure: a presented token that is malformed, unknown, revoked or
// expired. Not a request without a token, not a valid token lacking a scope, not a
// blocked owner's token (those are real tokens, not guesses). A success does not reset
// the count (GitLab's does): otherwise one valid token of the attacker's own, presented
// every 29th request, would allow guessing forever — and the success path stays
// read-only.
//
// Which address: the TCP peer, unless the peer is a trusted proxy (ClientIp below);
// IPv6 addresses are keyed by their /64 (one host usually owns a whole /64). Exempt
// ranges (default 127.0.0.1 and ::1, GitLab's ip_whitelist default) are never counted
// nor banned; neither is a request whose address is unknown.
//
// Memory is bounded: `capacity` addresses at most, in a fixed table allocated once,
// 4-way set associative, indexed by a keyed hash (a random seed per process, so an
// attacker cannot aim many addresses at one set):
//
//   buckets_[h & mask] = | way 0 | way 1 | way 2 | way 3 |     each way one Slot:
//   Slot = { key (hash|1, 0 = empty), banned_until, window_start, failures, last_failure }
//
// A new address takes an empty way, else the unbanned way whose last failure is the
// oldest, else the way whose ban ends first (counted in stats().evictions). So an
// attacker spreading failures over more than `capacity` addresses pushes older entries
// out — a forgotten ban is lifted early — but never grows the table. The window is
// fixed, starting at an address's first failure: `threshold - 1` failures per window
// are never banned; a ban ends `ban` after the failure that started it.
//
// Thread safety: every method may be called from any thread at once.
//   1. BannedFor never writes shared memory and takes no lock. When no ban is in force
//      anywhere it is one atomic load (ban_horizon_us_, the latest end of any ban);
//      otherwise it reads the 4 ways of one bucket, validating each way's key around
//      its banned_until read (a seqlock with the key as version), so a way reused
//      concurrently is skipped, never misread.
//   2. RecordFailure takes the stripe mutex of its bucket (256 stripes): failures from
//      different addresses rarely contend, and only failures ever write.
//   3. A writer reusing a way stores banned_until = 0 before the new key (release);
//      a ban stores banned_until (release) after the key. So a reader that sees key k
//      (acquire) and then k again after reading banned_until saw k's own value.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"

namespace patledger::api {

// An IP address as 16 bytes: IPv6, or IPv4 as the mapped ::ffff:a.b.c.d.
using IpBytes = std::array<std::uint8_t, 16>;

// "1.2.3.4", "::1", "[::1]", "fe80::1%eth0", "::ffff:1.2.3.4"; nullopt otherwise.
std::optional<IpBytes> ParseIp(std::string_view text);
std::string FormatIp(const IpBytes& ip);  // IPv4 in dotted form

// An address range: "10.0.0.0/8", "2001:db8::/32", or one address ("127.0.0.1").
struct IpRange {
  IpBytes network{};
  int prefix = 128;  // in bits of the 16-byte form (an IPv4 /8 is 104)
  bool Contains(const IpBytes& ip) const;
};
std::optional<IpRange> ParseIpRange(std::string_view text);
std::string FormatIpRange(const IpRange& range);
bool InAny(const IpBytes& ip, const std::vector<IpRange>& ranges);

// 127.0.0.1 and ::1: the default trusted proxies and the default exempt addresses.
std::vector<IpRange> LoopbackRanges();

// The client a request is from. `peer` is the TCP peer's address text. Only when the
// peer is in `trusted` are the proxy's headers believed: X-Forwarded-For is walked from
// its right end (the entry the nearest proxy appended) past every address that is
// itself trusted, and the first one that is not is the client; if every entry is
// trusted, the leftmost. Without X-Forwarded-For, X-Real-IP. An entry that is not an
// address stops the walk: the last address vouched for (a trusted proxy) is used.
// nullopt only if `peer` itself is not an address.
std::optional<IpBytes> ClientIp(std::string_view peer, std::string_view forwarded_for,
                                std::string_view real_ip,
                                const std::vector<IpRange>& trusted);

// GitLab's failed-authentication ban: 30 failures in 3 minutes from one IP.
inline constexpr std::uint32_t kGitLabThreshold = 30;

struct AuthThrottleOptions {
  // Failures that start a ban; 0: no throttling. Off by default here (the Handler is a
  // plain function that tests call with many bad tokens); `patledger serve` turns it on
  // with kGitLabThreshold.
  std::uint32_t threshold = 0;
  std::int64_t window_seconds = 180;    // counted within this window (GitLab: 3 min)
  std::int64_t ban_seconds = 3600;      // how long a ban lasts (GitLab: 1 hour)
  std::vector<IpRange> trusted_proxies = LoopbackRanges();
  std::vector<IpRange> exempt = LoopbackRanges();
  std::size_t capacity = 32768;         // addresses remembered (rounded up to 4 x 2^k)
  // Monotonic time source; nullptr: std::chrono::steady_clock. Tests inject one.
  const Clock* clock = nullptr;
};

class AuthThrottle {
 public:
  explicit AuthThrottle(AuthThrottleOptions options);
  ~AuthThrottle();
  AuthThrottle(const AuthThrottle&) = delete;
  AuthThrottle& operator=(const AuthThrottle&) = delete;

  bool enabled() const { return options_.threshold > 0; }
  const AuthThrottleOptions& options() const { return options_; }

  // Now, in microseconds of the throttle's monotonic clock.
  std::int64_t NowMicros() const;

  // False when no ban can be in force at `now` (the one-load fast path): then
  // BannedFor would answer 0 for every address.
  bool AnyBan(std::int64_t now_us) const {
    return now_us < ban_horizon_us_.load(std::memory_order_acquire);
  }

  // The address to count a request against (ClientIp with this throttle's trusted
  // proxies, IPv6 reduced to its /64); nullopt if throttling is off, the address is
  // unknown or exempt.
  std::optional<IpBytes> KeyFor(std::string_view peer, std::string_view forwarded_for,
                                std::string_view real_ip) const;

  // Microseconds until `ip`'s ban ends; 0 if it is not banned. Lock-free, read-only.
  std::int64_t BannedFor(const IpBytes& ip, std::int64_t now_us) const;

  // Counts one failed authentication from `ip`. True if it started a ban.
  bool RecordFailure(const IpBytes& ip, std::int64_t now_us);

  struct Stats {
    std::uint64_t failures = 0;      // failures recorded
    std::uint64_t bans = 0;          // bans started
    std::uint64_t evictions = 0;     // addresses forgotten to make room
    std::size_t slots = 0;           // capacity of the table (addresses)
    std::size_t memory_bytes = 0;    // the whole table, allocated once
  };
  Stats stats() const;

 private:
  struct Slot;
  static constexpr std::size_t kWays = 4;
  static constexpr std::size_t kStripes = 256;

  std::uint64_t Hash(const IpBytes& ip) const;

  AuthThrottleOptions options_;
  std::size_t bucket_mask_ = 0;
  std::unique_ptr<Slot[]> slots_;  // (bucket_mask_ + 1) * kWays
  std::unique_ptr<std::mutex[]> stripes_;
  std::uint64_t seed0_ = 0, seed1_ = 0;
  // The latest end of any ban ever started (monotonic us). Written only when a ban
  // starts (CAS to the max, release); read by every request (acquire).
  std::atomic<std::int64_t> ban_horizon_us_{0};
  // Statistics only: relaxed.
  std::atomic<std::uint64_t> failures_{0}, bans_{0}, evictions_{0};
};

}  // namespace patledger::api
