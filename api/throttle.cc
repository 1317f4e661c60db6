#include "api/throttle.h"

#include <algorithm>
#include <bit>
#include <boost/asio/ip/address.hpp>
#include <charconv>
#include <chrono>
#include <cstring>
#include <random>

namespace patledger::api {
namespace {

constexpr std::int64_t kMicrosPerSecond = 1'000'000;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool IsV4Mapped(const IpBytes& ip) {
  static constexpr std::uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(ip.data(), kPrefix, sizeof kPrefix) == 0;
}

// splitmix64's finalizer: every input bit moves every output bit.
std::uint64_t Mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

// ---- addresses ---------------------------------------------------------------------

std::optional<IpBytes> ParseIp(std::string_view text) {
  text = Trim(text);
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  if (text.empty() || text.size() > 64) return std::nullopt;
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(std::string(text), ec);
  if (ec) return std::nullopt;
  if (address.is_v4()) return boost::asio::ip::make_address_v6(
                                  boost::asio::ip::v4_mapped, address.to_v4())
                           .to_bytes();
  return address.to_v6().to_bytes();
}

std::string FormatIp(const IpBytes& ip) {
  const boost::asio::ip::address_v6 v6(ip);
  if (v6.is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_string();
  }
  return v6.to_string();
}

bool IpRange::Contains(const IpBytes& ip) const {
  const int full = prefix / 8;
  if (std::memcmp(ip.data(), network.data(), static_cast<std::size_t>(full)) != 0) {
    return false;
  }
  const int rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
  return (ip[full] & mask) == (network[full] & mask);
}

std::optional<IpRange> ParseIpRange(std::string_view text) {
  text = Trim(text);
  const auto slash = text.find('/');
  auto ip = ParseIp(text.substr(0, slash));
  if (!ip) return std::nullopt;
  IpRange range;
  range.network = *ip;
  const bool v4 = IsV4Mapped(*ip) && text.substr(0, slash).find(':') == std::string_view::npos;
  if (slash != std::string_view::npos) {
    const std::string_view bits = text.substr(slash + 1);
    int n = -1;
    auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), n);
    if (ec != std::errc() || end != bits.data() + bits.size() || n < 0 || n > (v4 ? 32 : 128)) {
      return std::nullopt;
    }
    range.prefix = v4 ? 96 + n : n;
  }
  // Clear the host bits, so "10.1.2.3/8" means 10.0.0.0/8.
  for (int i = range.prefix; i < 128; ++i) {
    range.network[i / 8] &= static_cast<std::uint8_t>(~(0x80 >> (i % 8)));
  }
  return range;
}

std::string FormatIpRange(const IpRange& range) {
  const bool v4 = IsV4Mapped(range.network) && range.prefix >= 96;
  const int bits = v4 ? range.prefix - 96 : range.prefix;
  std::string text = FormatIp(range.network);
  if (bits != (v4 ? 32 : 128)) {
    text.push_back('/');  // (not "/" + ...: GCC 12 -Wrestrict false positive)
    text.append(std::to_string(bits));
  }
  return text;
}

bool InAny(const IpBytes& ip, const std::vector<IpRange>& ranges) {
  return std::any_of(ranges.begin(), ranges.end(),
                     [&](const IpRange& r) { return r.Contains(ip); });
}

std::vector<IpRange> LoopbackRanges() {
  return {*ParseIpRange("127.0.0.1"), *ParseIpRange("::1")};
}

std::optional<IpBytes> ClientIp(std::string_view peer, std::string_view forwarded_for,
                                std::string_view real_ip,
                                const std::vector<IpRange>& trusted) {
  auto client = ParseIp(peer);
  if (!client || !InAny(*client, trusted)) return client;
  forwarded_for = Trim(forwarded_for);
  if (forwarded_for.empty()) {
    if (auto real = ParseIp(real_ip)) return real;
    return client;
  }
  // Right to left: each entry was appended by the proxy to its right, so it can be
  // believed only as long as that proxy is trusted.
  while (!forwarded_for.empty()) {
    const auto comma = forwarded_for.rfind(',');
    const std::string_view entry =
        comma == std::string_view::npos ? forwarded_for : forwarded_for.substr(comma + 1);
    forwarded_for = comma == std::string_view::npos ? std::string_view()
                                                    : forwarded_for.substr(0, comma);
    auto hop = ParseIp(entry);
    if (!hop) break;  // garbage: keep the last address a trusted proxy vouched for
    client = hop;
    if (!InAny(*hop, trusted)) break;
  }
  return client;
}

// ---- the table ---------------------------------------------------------------------

struct AuthThrottle::Slot {
  std::atomic<std::uint64_t> key{0};          // Hash(ip); 0: empty
  std::atomic<std::int64_t> banned_until{0};  // monotonic us; <= now: not banned
  // Under the bucket's stripe mutex only.
  std::int64_t window_start = 0;
  std::int64_t last_failure = 0;
  std::uint32_t failures = 0;
};

AuthThrottle::AuthThrottle(AuthThrottleOptions options) : options_(std::move(options)) {
  if (!enabled()) return;
  const std::size_t buckets =
      std::bit_ceil(std::max<std::size_t>(1, (options_.capacity + kWays - 1) / kWays));
  bucket_mask_ = buckets - 1;
  slots_ = std::make_unique<Slot[]>(buckets * kWays);
  stripes_ = std::make_unique<std::mutex[]>(kStripes);
  std::random_device rd;
  seed0_ = (std::uint64_t{rd()} << 32) ^ rd();
  seed1_ = (std::uint64_t{rd()} << 32) ^ rd();
}

AuthThrottle::~AuthThrottle() = default;

std::int64_t AuthThrottle::NowMicros() const {
  if (options_.clock != nullptr) return options_.clock->NowMicros();
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::uint64_t AuthThrottle::Hash(const IpBytes& ip) const {
  std::uint64_t lo, hi;
  std::memcpy(&lo, ip.data(), 8);
  std::memcpy(&hi, ip.data() + 8, 8);
  const std::uint64_t h = Mix(Mix(lo ^ seed0_) ^ hi ^ seed1_);
  return h == 0 ? 1 : h;  // 0 marks an empty way
}

std::optional<IpBytes> AuthThrottle::KeyFor(std::string_view peer,
                                            std::string_view forwarded_for,
                                            std::string_view real_ip) const {
  if (!enabled()) return std::nullopt;
  auto ip = ClientIp(peer, forwarded_for, real_ip, options_.trusted_proxies);
  if (!ip || InAny(*ip, options_.exempt)) return std::nullopt;
  if (!IsV4Mapped(*ip)) std::fill(ip->begin() + 8, ip->end(), 0);  // the /64
  return ip;
}

std::int64_t AuthThrottle::BannedFor(const IpBytes& ip, std::int64_t now_us) const {
  if (!enabled() || !AnyBan(now_us)) return 0;
  const std::uint64_t key = Hash(ip);
  const Slot* bucket = &slots_[(key & bucket_mask_) * kWays];
  for (std::size_t w = 0; w < kWays; ++w) {
    const Slot& s = bucket[w];
    // Acquire: pairs with the writer's release of key / banned_until (invariant 3).
    if (s.key.load(std::memory_order_acquire) != key) continue;
    const std::int64_t until = s.banned_until.load(std::memory_order_acquire);
    if (s.key.load(std::memory_order_acquire) != key) continue;  // reused meanwhile
    return until > now_us ? until - now_us : 0;
  }
  return 0;
}

bool AuthThrottle::RecordFailure(const IpBytes& ip, std::int64_t now_us) {
  if (!enabled()) return false;
  failures_.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t key = Hash(ip);
  const std::size_t b = key & bucket_mask_;
  Slot* bucket = &slots_[b * kWays];
  const std::int64_t window = options_.window_seconds * kMicrosPerSecond;
  std::lock_guard lock(stripes_[b % kStripes]);

  Slot* slot = nullptr;
  for (std::size_t w = 0; w < kWays && slot == nullptr; ++w) {
    if (bucket[w].key.load(std::memory_order_relaxed) == key) slot = &bucket[w];
  }
  if (slot != nullptr) {
    if (slot->banned_until.load(std::memory_order_relaxed) > now_us) return false;
    if (now_us - slot->window_start >= window) {  // a new window
      slot->window_start = now_us;
      slot->failures = 0;
    }
  } else {
    // Empty way first; else the unbanned way idle longest; else the ban ending first.
    auto rank = [&](const Slot& s) {
      if (s.key.load(std::memory_order_relaxed) == 0) return std::pair<int, std::int64_t>(0, 0);
      const std::int64_t until = s.banned_until.load(std::memory_order_relaxed);
      return until > now_us ? std::pair<int, std::int64_t>(2, until)
                            : std::pair<int, std::int64_t>(1, s.last_failure);
    };
    slot = &bucket[0];
    for (std::size_t w = 1; w < kWays; ++w) {
      if (rank(bucket[w]) < rank(*slot)) slot = &bucket[w];
    }
    if (slot->key.load(std::memory_order_relaxed) != 0) {
      evictions_.fetch_add(1, std::memory_order_relaxed);
    }
    slot->banned_until.store(0, std::memory_order_relaxed);
    slot->key.store(key, std::memory_order_release);  // after banned_until = 0
    slot->window_start = now_us;
    slot->failures = 0;
  }
  slot->last_failure = now_us;
  if (++slot->failures < options_.threshold) return false;

  const std::int64_t until = now_us + options_.ban_seconds * kMicrosPerSecond;
  slot->failures = 0;
  slot->window_start = now_us;
  slot->banned_until.store(until, std::memory_order_release);  // after the key
  std::int64_t horizon = ban_horizon_us_.load(std::memory_order_relaxed);
  while (horizon < until && !ban_horizon_us_.compare_exchange_weak(
                                horizon, until, std::memory_order_release,
                                std::memory_order_relaxed)) {
  }
  bans_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

AuthThrottle::Stats AuthThrottle::stats() const {
  Stats s;
  s.failures = failures_.load(std::memory_order_relaxed);
  s.bans = bans_.load(std::memory_order_relaxed);
  s.evictions = evictions_.load(std::memory_order_relaxed);
  if (enabled()) {
    s.slots = (bucket_mask_ + 1) * kWays;
    s.memory_bytes = s.slots * sizeof(Slot) + kStripes * sizeof(std::mutex);
  }
  return s;
}

}  // namespace patledger::api
