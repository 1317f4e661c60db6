// Specification: abuse (issue 7, point 11). Many wrong tokens from one client get it
// throttled — 429 after the threshold — while other clients are unaffected; oversized
// bodies and headers are refused fast; hundreds of idle or slow connections do not stop
// legitimate requests.
//
// Three layers:
//   * throttle_table: api::AuthThrottle alone, with an injected clock — threshold,
//     window, ban expiry, bounded memory, /64 keying for IPv6, concurrency — and the
//     trusted-proxy parsing (ClientIp, ParseIpRange).
//   * throttle_handler: through Handler::Handle (no sockets) — what a banned client gets
//     (429, Retry-After, the body), what is counted and what is not, forwarded clients.
//   * abuse_over_http: the real `patledger serve` (tests/reliability/serve_process.h's
//     Child) with its defaults (GitLab's 30 failures in 180 s -> 1 h), clients bound to
//     different loopback addresses (127.0.0.2, 127.0.0.3: every 127/8 address is local on
//     Linux); oversized requests; idle and slow-loris connections against a server with
//     short timeouts. Figures are printed (BOOST_TEST_MESSAGE); times are reported,
//     never asserted.

#include "api/throttle.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "api/handler.h"
#include "common/clock.h"
#include "service/token_service.h"
#include "tests/reliability/reliability_util.h"
#include "tests/reliability/serve_process.h"
#include "tests/test_util.h"

namespace patledger::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using reliability::Child;
using reliability::Fixed;
using reliability::HttpClient;
using reliability::Percentile;
using SteadyClock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::int64_t kSecond = 1'000'000;
constexpr std::int64_t kStart = 1000 * kSecond;  // any monotonic origin

IpBytes Ip(std::string_view text) {
  auto ip = ParseIp(text);
  BOOST_TEST_REQUIRE(ip.has_value(), text);
  return *ip;
}

std::string Text(const std::optional<IpBytes>& ip) { return ip ? FormatIp(*ip) : "none"; }

double MillisSince(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

// ---- the table ---------------------------------------------------------------------

struct TableFixture {
  explicit TableFixture(std::uint32_t threshold = 5, std::size_t capacity = 1024)
      : clock(kStart) {
    AuthThrottleOptions o;
    o.threshold = threshold;
    o.window_seconds = 60;
    o.ban_seconds = 600;
    o.capacity = capacity;
    o.clock = &clock;
    throttle = std::make_unique<AuthThrottle>(o);
  }
  // Records `n` failures from `ip` one second apart; the number that started a ban.
  int Fail(const IpBytes& ip, int n) {
    int bans = 0;
    for (int i = 0; i < n; ++i) {
      bans += throttle->RecordFailure(ip, clock.NowMicros());
      clock.Advance(kSecond);
    }
    return bans;
  }
  std::int64_t Banned(const IpBytes& ip) { return throttle->BannedFor(ip, clock.NowMicros()); }

  ManualClock clock;
  std::unique_ptr<AuthThrottle> throttle;
};

BOOST_AUTO_TEST_SUITE(throttle_table)

BOOST_AUTO_TEST_CASE(threshold_failures_within_the_window_start_a_ban) {
  TableFixture f(5);
  const IpBytes a = Ip("198.51.100.7"), b = Ip("198.51.100.8");
  BOOST_TEST(f.Fail(a, 4) == 0);
  BOOST_TEST(f.Banned(a) == 0);
  BOOST_TEST(!f.throttle->AnyBan(f.clock.NowMicros()));  // the one-load fast path
  BOOST_TEST(f.Fail(a, 1) == 1);                         // the 5th starts the ban
  BOOST_TEST(f.Banned(a) > 0);
  BOOST_TEST(f.Banned(a) <= 600 * kSecond);
  BOOST_TEST(f.Banned(b) == 0);  // another address is untouched
  BOOST_TEST(f.throttle->stats().bans == 1u);
}

BOOST_AUTO_TEST_CASE(failures_spread_wider_than_the_window_never_ban) {
  TableFixture f(5);
  const IpBytes a = Ip("198.51.100.7");
  for (int round = 0; round < 10; ++round) {
    BOOST_TEST(f.Fail(a, 4) == 0);
    f.clock.Advance(60 * kSecond);  // the window (from the first failure) has passed
  }
  BOOST_TEST(f.Banned(a) == 0);
  BOOST_TEST(f.throttle->stats().failures == 40u);
}

BOOST_AUTO_TEST_CASE(a_ban_ends_after_its_duration_and_counting_starts_afresh) {
  TableFixture f(5);
  const IpBytes a = Ip("2001:db8::1");
  f.Fail(a, 5);
  const std::int64_t left = f.Banned(a);
  BOOST_TEST(left == 600 * kSecond - kSecond);  // the 5th failure was 1 s ago
  f.clock.Advance(left - 1);
  BOOST_TEST(f.Banned(a) == 1);
  f.clock.Advance(1);
  BOOST_TEST(f.Banned(a) == 0);
  BOOST_TEST(f.Fail(a, 4) == 0);  // a fresh window: 4 more are not enough
  BOOST_TEST(f.Fail(a, 1) == 1);
}

BOOST_AUTO_TEST_CASE(threshold_zero_is_off) {
  TableFixture f(0);
  const IpBytes a = Ip("198.51.100.7");
  BOOST_TEST(f.Fail(a, 1000) == 0);
  BOOST_TEST(f.Banned(a) == 0);
  BOOST_TEST(f.throttle->stats().memory_bytes == 0u);
  BOOST_TEST(!f.throttle->KeyFor("198.51.100.7", "", "").has_value());
}

BOOST_AUTO_TEST_CASE(memory_is_bounded_and_a_ban_outlives_a_flood_of_new_addresses) {
  TableFixture f(3, 4096);
  const auto before = f.throttle->stats();
  const IpBytes victim = Ip("203.0.113.9");
  f.Fail(victim, 3);
  BOOST_TEST_REQUIRE(f.Banned(victim) > 0);
  // A million other addresses, each failing once: the table does not grow; unbanned
  // entries are forgotten first, so the ban stays.
  for (std::uint32_t i = 0; i < 1'000'000; ++i) {
    IpBytes ip{};
    ip[0] = 0x20;
    ip[1] = 0x01;
    ip[2] = 0x0d;
    ip[3] = 0xb8;
    std::memcpy(ip.data() + 4, &i, sizeof i);  // distinct /64s
    f.throttle->RecordFailure(ip, f.clock.NowMicros());
  }
  const auto after = f.throttle->stats();
  BOOST_TEST_MESSAGE("throttle table: " << after.slots << " slots, " << after.memory_bytes
                                        << " bytes, unchanged after 1,000,000 addresses ("
                                        << after.evictions << " evictions)");
  BOOST_TEST(after.memory_bytes == before.memory_bytes);
  BOOST_TEST(after.slots == 4096u);
  BOOST_TEST(after.evictions >= 1'000'000u - 4096u);
  BOOST_TEST(f.Banned(victim) > 0);
}

BOOST_AUTO_TEST_CASE(ipv6_is_counted_per_64_ipv4_per_address) {
  TableFixture f(4);
  // Two hosts of one /64 share a count; KeyFor reduces IPv6 to its /64.
  auto k1 = f.throttle->KeyFor("2001:db8:1:2::a", "", "");
  auto k2 = f.throttle->KeyFor("2001:db8:1:2:ffff::b", "", "");
  auto k3 = f.throttle->KeyFor("2001:db8:1:3::a", "", "");
  BOOST_TEST_REQUIRE((k1 && k2 && k3));
  BOOST_TEST((*k1 == *k2));
  BOOST_TEST((*k1 != *k3));
  f.Fail(*k1, 2);
  f.Fail(*k2, 2);
  BOOST_TEST(f.Banned(*k1) > 0);
  BOOST_TEST(f.Banned(*k3) == 0);
  auto v4a = f.throttle->KeyFor("198.51.100.7", "", "");
  auto v4b = f.throttle->KeyFor("198.51.100.8", "", "");
  BOOST_TEST((*v4a != *v4b));
  // An IPv4 client on an IPv6 socket is the same client.
  BOOST_TEST((*f.throttle->KeyFor("::ffff:198.51.100.7", "", "") == *v4a));
}

BOOST_AUTO_TEST_CASE(exempt_and_unknown_addresses_are_never_counted) {
  TableFixture f(1);
  BOOST_TEST(!f.throttle->KeyFor("127.0.0.1", "", "").has_value());  // default exempt
  BOOST_TEST(!f.throttle->KeyFor("::1", "", "").has_value());
  BOOST_TEST(f.throttle->KeyFor("127.0.0.2", "", "").has_value());  // not exempt
  BOOST_TEST(!f.throttle->KeyFor("", "", "").has_value());
  BOOST_TEST(!f.throttle->KeyFor("not an address", "", "").has_value());
}

BOOST_AUTO_TEST_CASE(concurrent_failures_from_one_address_start_exactly_one_ban) {
  TableFixture f(30);
  const IpBytes a = Ip("198.51.100.7");
  std::atomic<int> bans{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        bans += f.throttle->RecordFailure(a, f.clock.NowMicros());
        (void)f.throttle->BannedFor(Ip("198.51.100.8"), f.clock.NowMicros());
      }
    });
  }
  for (auto& t : threads) t.join();
  BOOST_TEST(bans.load() == 1);
  BOOST_TEST(f.Banned(a) > 0);
}

BOOST_AUTO_TEST_CASE(address_ranges_parse_and_match) {
  auto r8 = ParseIpRange("10.1.2.3/8");
  BOOST_TEST_REQUIRE(r8.has_value());
  BOOST_TEST(FormatIpRange(*r8) == "10.0.0.0/8");
  BOOST_TEST(r8->Contains(Ip("10.200.0.1")));
  BOOST_TEST(!r8->Contains(Ip("11.0.0.1")));
  auto one = ParseIpRange("192.0.2.1");
  BOOST_TEST(FormatIpRange(*one) == "192.0.2.1");
  BOOST_TEST(one->Contains(Ip("::ffff:192.0.2.1")));
  BOOST_TEST(!one->Contains(Ip("192.0.2.2")));
  auto v6 = ParseIpRange("2001:db8::/32");
  BOOST_TEST(v6->Contains(Ip("2001:db8:ffff::1")));
  BOOST_TEST(!v6->Contains(Ip("2001:db9::1")));
  BOOST_TEST(FormatIpRange(*ParseIpRange("::1")) == "::1");
  for (const char* bad : {"", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "host",
                          "1.2.3.4.5", "10.0.0.0/-1"}) {
    BOOST_TEST(!ParseIpRange(bad).has_value(), bad);
  }
}

BOOST_AUTO_TEST_CASE(forwarded_headers_are_believed_only_from_trusted_proxies) {
  const std::vector<IpRange> trusted = {*ParseIpRange("127.0.0.1"),
                                        *ParseIpRange("10.0.0.0/8")};
  auto client = [&](std::string_view peer, std::string_view xff, std::string_view real) {
    return Text(ClientIp(peer, xff, real, trusted));
  };
  // An untrusted peer's headers are ignored: it could name anyone.
  BOOST_TEST(client("198.51.100.7", "203.0.113.1", "203.0.113.2") == "198.51.100.7");
  // A trusted proxy: the entry it appended (the rightmost).
  BOOST_TEST(client("127.0.0.1", "203.0.113.1", "") == "203.0.113.1");
  // The client may have sent its own X-Forwarded-For: only the proxy's entry counts.
  BOOST_TEST(client("127.0.0.1", "6.6.6.6, 203.0.113.1", "") == "203.0.113.1");
  // A chain of trusted proxies is walked past.
  BOOST_TEST(client("127.0.0.1", "6.6.6.6, 203.0.113.1, 10.0.0.5", "") == "203.0.113.1");
  // Every entry trusted: the leftmost.
  BOOST_TEST(client("127.0.0.1", "10.0.0.9, 10.0.0.5", "") == "10.0.0.9");
  // Garbage stops the walk at the last address a trusted proxy vouched for.
  BOOST_TEST(client("127.0.0.1", "203.0.113.1, bogus", "") == "127.0.0.1");
  BOOST_TEST(client("127.0.0.1", "203.0.113.1, bogus, 10.0.0.5", "") == "10.0.0.5");
  // X-Real-IP when there is no X-Forwarded-For; IPv6 in brackets; multiple headers.
  BOOST_TEST(client("127.0.0.1", "", "203.0.113.3") == "203.0.113.3");
  BOOST_TEST(client("127.0.0.1", "", "junk") == "127.0.0.1");
  BOOST_TEST(client("127.0.0.1", "[2001:db8::7]", "") == "2001:db8::7");
  BOOST_TEST(client("127.0.0.1", "203.0.113.1,203.0.113.4", "") == "203.0.113.4");
  BOOST_TEST(client("::ffff:127.0.0.1", "203.0.113.1", "") == "203.0.113.1");
  BOOST_TEST(client("", "203.0.113.1", "") == "none");
}

BOOST_AUTO_TEST_SUITE_END()

// ---- through the handler -------------------------------------------------------------

constexpr std::int64_t kNoon = 1'795'867'200'000'000LL;  // 2026-11-28T12:00:00Z

class HandlerFixture {
 public:
  HandlerFixture() : service_clock_(kNoon), throttle_clock_(kStart) {
    options_.data_dir = dir_.path();
    options_.clock = &service_clock_;
    auto init = service::TokenService::Init(options_);
    BOOST_TEST_REQUIRE(init.has_value(), Why(init));
    root_ = init->root_token.secret;
    auto s = service::TokenService::Open(options_);
    BOOST_TEST_REQUIRE(s.has_value(), Why(s));
    service_ = std::move(*s);
    HandlerOptions ho;
    ho.throttle.threshold = 5;
    ho.throttle.window_seconds = 60;
    ho.throttle.ban_seconds = 600;
    ho.throttle.trusted_proxies = {*ParseIpRange("10.0.0.1")};
    ho.throttle.clock = &throttle_clock_;
    handler_ = std::make_unique<Handler>(ho);
    handler_->SetService(service_.get());
    // A read_user-only token of root's: a real token that fails a scope check.
    auto narrow = Create("narrow", service::kReadUser, 30);
    BOOST_TEST_REQUIRE(narrow.has_value(), Why(narrow));
    narrow_ = narrow->secret;
  }

  Result<service::CreatedToken> Create(const std::string& name, service::ScopeSet scopes,
                                       int days) {
    service::CreateTokenRequest r;
    r.user_id = 1;
    r.name = name;
    r.scopes = scopes;
    r.expires_day = DayOf(service_clock_.NowMicros()) + days;
    return service_->CreateToken({}, r);
  }

  Response Call(const std::string& from, const std::string& target, const std::string& token,
                std::vector<std::pair<std::string, std::string>> headers = {}) {
    Request req(http::verb::get, target, 11);
    req.set(http::field::host, "test.local");
    if (!token.empty()) req.set("PRIVATE-TOKEN", token);
    for (auto& [k, v] : headers) req.insert(k, v);
    Exchange ex;
    ex.client_address = from;
    return handler_->Handle(req, &ex);
  }
  int Status(const std::string& from, const std::string& token,
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    return Call(from, "/api/v4/user", token, std::move(headers)).result_int();
  }

  TempDir dir_;
  ManualClock service_clock_, throttle_clock_;
  service::ServiceOptions options_;
  std::unique_ptr<service::TokenService> service_;
  std::unique_ptr<Handler> handler_;
  std::string root_, narrow_;
  const std::string wrong_ = "glpat-" + std::string(36, 'x');
};

BOOST_FIXTURE_TEST_SUITE(throttle_handler, HandlerFixture)

BOOST_AUTO_TEST_CASE(a_banned_client_gets_429_even_with_a_valid_token_others_do_not) {
  for (int i = 0; i < 5; ++i) BOOST_TEST(Status("198.51.100.7", wrong_) == 401);
  Response r = Call("198.51.100.7", "/api/v4/user", root_);
  BOOST_TEST(r.result_int() == 429);
  BOOST_TEST(r[http::field::retry_after] == "600");
  BOOST_TEST(r[http::field::content_type] == "application/json");
  BOOST_TEST(r.body() ==
             R"({"message":"429 Too Many Requests - Too many failed authentication )"
             R"(attempts from this address. Try again later."})");
  BOOST_TEST(Call("198.51.100.7", "/api/v4/auth", root_).result_int() == 429);
  BOOST_TEST(Status("198.51.100.8", root_) == 200);
  // Requests without a token are not refused (nor counted): liveness, the public reads.
  BOOST_TEST(Call("198.51.100.7", "/api/v4/-/scopes", "").result_int() == 200);
  BOOST_TEST(Status("198.51.100.7", "") == 401);
  throttle_clock_.Advance(599 * kSecond + 1);
  BOOST_TEST(Call("198.51.100.7", "/api/v4/user", root_)[http::field::retry_after] == "1");
  throttle_clock_.Advance(kSecond);
  BOOST_TEST(Status("198.51.100.7", root_) == 200);
}

BOOST_AUTO_TEST_CASE(only_bad_tokens_count_and_a_success_does_not_reset_the_count) {
  const std::string from = "198.51.100.7";
  for (int i = 0; i < 20; ++i) BOOST_TEST(Status(from, "") == 401);  // no token: not counted
  for (int i = 0; i < 20; ++i) {
    // A real token lacking the scope: 403, not counted.
    BOOST_TEST(Call(from, "/api/v4/personal_access_tokens", narrow_).result_int() == 403);
  }
  BOOST_TEST(Status(from, wrong_) == 401);
  BOOST_TEST(Status(from, "garbage") == 401);  // malformed counts
  BOOST_TEST(Status(from, root_) == 200);      // does not reset
  BOOST_TEST(Status(from, wrong_) == 401);
  BOOST_TEST(Status(from, wrong_) == 401);
  BOOST_TEST(Status(from, root_) == 200);
  BOOST_TEST(Status(from, wrong_) == 401);  // the 5th failure
  BOOST_TEST(Status(from, root_) == 429);
}

BOOST_AUTO_TEST_CASE(revoked_and_expired_tokens_count_as_failures) {
  auto revoked = Create("r", service::kApi, 30);
  auto expired = Create("e", service::kApi, 1);
  BOOST_TEST_REQUIRE((revoked.has_value() && expired.has_value()));
  BOOST_TEST(service_->RevokeToken({}, revoked->info.meta.id, schema::RevokeReason::ByAdmin).ok());
  service_clock_.Advance(kMicrosPerDay);
  for (int i = 0; i < 3; ++i) BOOST_TEST(Status("198.51.100.7", revoked->secret) == 401);
  for (int i = 0; i < 2; ++i) BOOST_TEST(Status("198.51.100.7", expired->secret) == 401);
  BOOST_TEST(Status("198.51.100.7", root_) == 429);
}

BOOST_AUTO_TEST_CASE(forward_auth_through_a_trusted_gateway_counts_the_original_client) {
  const std::string gateway = "10.0.0.1";
  auto through = [&](const std::string& client, const std::string& token) {
    return Call(gateway, "/api/v4/auth", token, {{"X-Forwarded-For", client}}).result_int();
  };
  for (int i = 0; i < 5; ++i) BOOST_TEST(through("203.0.113.1", wrong_) == 401);
  BOOST_TEST(through("203.0.113.1", root_) == 429);
  BOOST_TEST(through("203.0.113.2", root_) == 200);  // another client, same gateway
  BOOST_TEST(Call(gateway, "/api/v4/auth", root_).result_int() == 200);  // the gateway itself
  // An untrusted peer cannot shift its failures onto someone else's address.
  for (int i = 0; i < 5; ++i) {
    BOOST_TEST(Call("198.51.100.9", "/api/v4/auth", wrong_, {{"X-Forwarded-For", "203.0.113.3"}})
                   .result_int() == 401);
  }
  BOOST_TEST(through("203.0.113.3", root_) == 200);
  BOOST_TEST(Status("198.51.100.9", root_) == 429);
}

BOOST_AUTO_TEST_SUITE_END()

// ---- over HTTP against the real server -----------------------------------------------

// `patledger serve` on a free port with `extra` options, ready to answer.
class Serve {
 public:
  Serve(const std::string& data, std::vector<std::string> extra) {
    std::vector<std::string> args = {reliability::PatledgerBinary(), "serve", "--data", data,
                                     "--listen", "127.0.0.1:0", "--threads", "2",
                                     "--access-log", "/dev/null"};
    args.insert(args.end(), extra.begin(), extra.end());
    child_ = std::make_unique<Child>(args);
    const std::string marker = "listening on http://127.0.0.1:";
    BOOST_TEST_REQUIRE(child_->WaitForErr(marker, 30s), child_->err());
    const std::string err = child_->err();
    port_ = static_cast<std::uint16_t>(std::stoul(err.substr(err.find(marker) + marker.size())));
    HttpClient probe(port_, 5s);
    const auto deadline = SteadyClock::now() + 30s;
    while (SteadyClock::now() < deadline) {
      auto r = probe.Call(http::verb::get, "/-/readiness", {});
      if (r && r->result_int() == 200) return;
      std::this_thread::sleep_for(5ms);
    }
    BOOST_FAIL("server not ready: " << child_->err());
  }
  std::uint16_t port() const { return port_; }
  Child& child() { return *child_; }

 private:
  std::unique_ptr<Child> child_;
  std::uint16_t port_ = 0;
};

// A raw TCP connection to the server from a chosen local address (127.0.0.x), with a
// receive timeout, for requests HttpClient cannot make: from another source address,
// too large, or never finished.
class Conn {
 public:
  Conn(std::uint16_t port, const std::string& from) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    ::inet_pton(AF_INET, from.c_str(), &local.sin_addr);
    sockaddr_in remote{};
    remote.sin_family = AF_INET;
    remote.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ok_ = fd_ >= 0 &&
          ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) == 0 &&
          ::connect(fd_, reinterpret_cast<sockaddr*>(&remote), sizeof remote) == 0;
  }
  ~Conn() {
    if (fd_ >= 0) ::close(fd_);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  bool ok() const { return ok_; }
  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  // The next response; nullopt on timeout, close or reset.
  std::optional<Response> Read() {
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    for (;;) {
      if (buffer_.size() > 0) {
        beast::error_code ec;
        buffer_.consume(parser.put(buffer_.data(), ec));
        if (parser.is_done()) return parser.release();
        if (ec && ec != http::error::need_more) return std::nullopt;
      }
      auto room = buffer_.prepare(64 * 1024);
      const ssize_t n = ::recv(fd_, room.data(), room.size(), 0);
      if (n <= 0) return std::nullopt;
      buffer_.commit(static_cast<std::size_t>(n));
    }
  }
  std::optional<Response> Get(const std::string& target, const std::string& token) {
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: t\r\n";
    if (!token.empty()) req += "PRIVATE-TOKEN: " + token + "\r\n";
    req += "\r\n";
    if (!Send(req)) return std::nullopt;
    return Read();
  }
  // True if the server has closed (or reset) the connection: a read sees EOF or an
  // error at once, without waiting.
  bool ClosedByServer() {
    char c;
    const ssize_t n = ::recv(fd_, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  bool ok_ = false;
  beast::flat_buffer buffer_;
};

int StatusOf(const std::optional<Response>& r) { return r ? r->result_int() : 0; }

// Reads a connection's response on another thread while this one keeps sending.
class Answer {
 public:
  explicit Answer(Conn& c)
      : reader_([this, &c] {
          response_ = c.Read();
          at_ = SteadyClock::now();
          done_.store(true, std::memory_order_release);
        }) {}
  ~Answer() {
    if (reader_.joinable()) reader_.join();
  }
  bool done() const { return done_.load(std::memory_order_acquire); }
  const std::optional<Response>& Wait() {
    reader_.join();
    return response_;
  }
  // Milliseconds from `t0` to the response's arrival. REQUIRES: Wait() returned.
  double ms(SteadyClock::time_point t0) const {
    return std::chrono::duration<double, std::milli>(at_ - t0).count();
  }

 private:
  std::optional<Response> response_;
  SteadyClock::time_point at_;
  std::atomic<bool> done_{false};
  std::thread reader_;  // last: starts after the members it writes exist
};

struct HttpFixture {
  HttpFixture() {
    service::ServiceOptions o;
    o.data_dir = dir.path() + "/data";
    auto init = service::TokenService::Init(o);
    BOOST_TEST_REQUIRE(init.has_value(), Why(init));
    root = init->root_token.secret;
  }
  TempDir dir;
  std::string root;
};

BOOST_FIXTURE_TEST_SUITE(abuse_over_http, HttpFixture)

BOOST_AUTO_TEST_CASE(wrong_tokens_from_one_client_ban_it_while_others_keep_working) {
  Serve server(dir.path() + "/data", {});  // the defaults: 30 in 180 s -> 3600 s
  BOOST_TEST(server.child().err().find("ban: 30 failures within 180 s") != std::string::npos);
  Conn a(server.port(), "127.0.0.2"), b(server.port(), "127.0.0.3");
  BOOST_TEST_REQUIRE((a.ok() && b.ok()));
  const std::string wrong = "glpat-" + std::string(36, 'x');
  int first_429 = 0, b_ok = 0, b_requests = 0;
  std::string retry_after;
  for (int i = 1; i <= 40; ++i) {
    auto r = a.Get("/api/v4/user", wrong);
    const int status = StatusOf(r);
    if (status == 429 && first_429 == 0) {
      first_429 = i;
      retry_after = std::string((*r)[http::field::retry_after]);
    }
    BOOST_TEST((status == (first_429 ? 429 : 401)), "request " << i << ": " << status);
    ++b_requests;
    b_ok += StatusOf(b.Get("/api/v4/user", root)) == 200;
  }
  const int a_valid = StatusOf(a.Get("/api/v4/user", root));
  const int a_forward = StatusOf(a.Get("/api/v4/auth", root));
  Conn a2(server.port(), "127.0.0.2");  // a new connection from A: still banned
  const int a_new_conn = StatusOf(a2.Get("/api/v4/user", root));
  const int a_liveness = StatusOf(a2.Get("/-/liveness", ""));
  BOOST_TEST_MESSAGE("abuse: client A (127.0.0.2) got 429 from wrong token #"
                     << first_429 << " on (Retry-After " << retry_after << " s); A's valid token: "
                     << a_valid << ", forward auth " << a_forward << ", on a new connection "
                     << a_new_conn << "; client B (127.0.0.3): " << b_ok << "/" << b_requests
                     << " valid requests answered 200");
  BOOST_TEST(first_429 == 31);  // 30 failures counted, the next request refused
  BOOST_TEST(retry_after == "3600");
  BOOST_TEST(a_valid == 429);
  BOOST_TEST(a_forward == 429);
  BOOST_TEST(a_new_conn == 429);
  BOOST_TEST(a_liveness == 200);
  BOOST_TEST(b_ok == b_requests);

  // Through a gateway on 127.0.0.1 (a trusted proxy by default): keyed on the client it
  // names, so one client's ban does not block the gateway's other clients.
  Conn gw(server.port(), "127.0.0.1");
  auto via = [&](const std::string& client, const std::string& token) {
    std::string req = "GET /api/v4/auth HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: " + client +
                      "\r\nPRIVATE-TOKEN: " + token + "\r\n\r\n";
    return gw.Send(req) ? StatusOf(gw.Read()) : 0;
  };
  int gw_first_429 = 0;
  for (int i = 1; i <= 31; ++i) {
    if (via("198.51.100.7", wrong) == 429 && gw_first_429 == 0) gw_first_429 = i;
  }
  const int other_client = via("198.51.100.8", root);
  const int banned_client = via("198.51.100.7", root);
  BOOST_TEST_MESSAGE("abuse: through the gateway 127.0.0.1, client 198.51.100.7 got 429 from #"
                     << gw_first_429 << "; its valid token " << banned_client
                     << "; client 198.51.100.8 " << other_client);
  BOOST_TEST(gw_first_429 == 31);
  BOOST_TEST(banned_client == 429);
  BOOST_TEST(other_client == 200);
}

BOOST_AUTO_TEST_CASE(oversized_bodies_and_headers_are_refused_fast) {
  Serve server(dir.path() + "/data", {});
  std::vector<std::string> lines;
  {  // Content-Length far over the 64 KiB limit: refused on the header alone.
    Conn c(server.port(), "127.0.0.1");
    const auto t0 = SteadyClock::now();
    c.Send("POST /api/v4/user/personal_access_tokens HTTP/1.1\r\nHost: t\r\n"
           "Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n");
    const int status = StatusOf(c.Read());
    lines.push_back("declared 100 MiB body: " + std::to_string(status) + " in " +
                    Fixed(MillisSince(t0), 2) + " ms (no body byte sent)");
    BOOST_TEST(status == 413);
  }
  {  // A chunked body that never ends: refused once it passes the limit.
    Conn c(server.port(), "127.0.0.1");
    const auto t0 = SteadyClock::now();
    c.Send("POST /api/v4/user/personal_access_tokens HTTP/1.1\r\nHost: t\r\n"
           "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    const std::string chunk = "2000\r\n" + std::string(0x2000, 'a') + "\r\n";
    std::size_t sent = 0;
    Answer answer(c);
    while (sent < (64u << 20) && !answer.done() && c.Send(chunk)) sent += 0x2000;
    const std::optional<Response>& r = answer.Wait();
    lines.push_back("endless chunked body: " + std::to_string(StatusOf(r)) + " in " +
                    Fixed(answer.ms(t0), 2) + " ms; the client had written " +
                    std::to_string(sent / 1024) + " KiB by then (kernel buffers included)");
    BOOST_TEST(StatusOf(r) == 413);
    BOOST_TEST(sent < (64u << 20));  // the server stopped it long before 64 MiB
  }
  {  // A 32 KiB header over the 16 KiB limit.
    Conn c(server.port(), "127.0.0.1");
    const auto t0 = SteadyClock::now();
    c.Send("GET /api/v4/user HTTP/1.1\r\nHost: t\r\nX-Pad: " + std::string(32 * 1024, 'p') +
           "\r\n\r\n");
    const int status = StatusOf(c.Read());
    lines.push_back("32 KiB header: " + std::to_string(status) + " in " +
                    Fixed(MillisSince(t0), 2) + " ms");
    BOOST_TEST(status == 431);
  }
  {  // Header lines that never end (no blank line), 1 KB each, up to 1 MiB.
    Conn c(server.port(), "127.0.0.1");
    const auto t0 = SteadyClock::now();
    c.Send("GET /api/v4/user HTTP/1.1\r\nHost: t\r\n");
    std::size_t sent = 0;
    Answer answer(c);
    const std::string line = "X-More: " + std::string(1000, 'm') + "\r\n";
    while (sent < (1u << 20) && !answer.done() && c.Send(line)) sent += line.size();
    const std::optional<Response>& r = answer.Wait();
    lines.push_back("endless header lines: " + std::to_string(StatusOf(r)) + " in " +
                    Fixed(answer.ms(t0), 2) + " ms (the client had queued " +
                    std::to_string(sent / 1024) + " KiB, most of it in kernel buffers)");
    BOOST_TEST(StatusOf(r) == 431);
  }
  // The server is fine afterwards.
  HttpClient ok(server.port());
  BOOST_TEST(StatusOf(ok.Call(http::verb::get, "/api/v4/user", root)) == 200);
  for (const auto& l : lines) BOOST_TEST_MESSAGE("oversized: " << l);
}

BOOST_AUTO_TEST_CASE(idle_and_slow_connections_do_not_stop_legitimate_requests) {
  // Short timeouts so the test sees them act; a cap the test can reach.
  const int kIdle = static_cast<int>(reliability::Size("PATLEDGER_ABUSE_IDLE", 300, 3000));
  const int kSlow = static_cast<int>(reliability::Size("PATLEDGER_ABUSE_SLOW", 200, 2000));
  const int kReadTimeout = reliability::LongRun() ? 20 : 5;
  const int kCap = kIdle + kSlow + 100, kMore = 150;
  Serve server(dir.path() + "/data",
               {"--read-timeout", std::to_string(kReadTimeout), "--idle-timeout", "5",
                "--max-connections", std::to_string(kCap)});
  const auto t_open = SteadyClock::now();
  std::vector<std::unique_ptr<Conn>> idle, slow;
  for (int i = 0; i < kIdle; ++i) idle.push_back(std::make_unique<Conn>(server.port(), "127.0.0.4"));
  for (int i = 0; i < kSlow; ++i) {
    slow.push_back(std::make_unique<Conn>(server.port(), "127.0.0.5"));
    slow.back()->Send("GET /api/v4/user HTTP/1.1\r\nHost: t\r\nX-Slow: ");
  }
  // Slow loris: one more header byte per connection every second.
  std::atomic<bool> stop{false};
  std::thread loris([&] {
    while (!stop.load()) {
      for (auto& c : slow) c->Send("a");
      for (int i = 0; i < 10 && !stop.load(); ++i) std::this_thread::sleep_for(100ms);
    }
  });

  // Legitimate requests, each on a new connection (the costliest case), while they hang on.
  std::vector<double> ms;
  int ok = 0;
  const int kLegit = static_cast<int>(reliability::Size("PATLEDGER_ABUSE_LEGIT", 200, 2000));
  for (int i = 0; i < kLegit; ++i) {
    Conn c(server.port(), "127.0.0.1");
    const auto t0 = SteadyClock::now();
    ok += StatusOf(c.Get("/api/v4/user", root)) == 200;
    ms.push_back(MillisSince(t0));
  }
  BOOST_TEST_MESSAGE("slow: with " << kIdle << " idle and " << kSlow
                                   << " slow-loris connections open, " << ok << "/" << kLegit
                                   << " legitimate requests answered 200, latency p50 "
                                   << Fixed(Percentile(ms, 50), 2) << " ms, p99 "
                                   << Fixed(Percentile(ms, 99), 2) << " ms, max "
                                   << Fixed(Percentile(ms, 100), 2) << " ms");
  BOOST_TEST(ok == kLegit);

  // Past the cap: the extra connections are closed as soon as they are accepted.
  std::vector<std::unique_ptr<Conn>> more;
  for (int i = 0; i < kMore; ++i) more.push_back(std::make_unique<Conn>(server.port(), "127.0.0.6"));
  std::this_thread::sleep_for(300ms);
  int refused = 0;
  for (auto& c : more) refused += c->ClosedByServer();
  // Then a legitimate client retries until it is served: the read timeout frees slots.
  const auto t_retry = SteadyClock::now();
  int attempts = 0;
  bool served = false;
  while (!served && MillisSince(t_retry) < 4 * kReadTimeout * 1000) {
    ++attempts;
    Conn c(server.port(), "127.0.0.1");
    served = StatusOf(c.Get("/api/v4/user", root)) == 200;
    if (!served) std::this_thread::sleep_for(100ms);
  }
  const double recovered_ms = MillisSince(t_retry);
  BOOST_TEST_MESSAGE("slow: " << kIdle + kSlow << " open + " << kMore << " more against a cap of "
                              << kCap << ": " << refused << " closed at once; a legitimate "
                              << "client was served after " << attempts << " attempt(s), "
                              << Fixed(recovered_ms, 0) << " ms");
  BOOST_TEST(refused >= kIdle + kSlow + kMore - kCap);
  BOOST_TEST(served);

  // Every idle and slow-loris connection is closed by the server within the read
  // timeout (plus the 250 ms deadline tick), the slow ones despite their trickle.
  const auto deadline = SteadyClock::now() + std::chrono::seconds(kReadTimeout) + 5s;
  auto all_closed = [](std::vector<std::unique_ptr<Conn>>& v) {
    int n = 0;
    for (auto& c : v) n += c->ClosedByServer();
    return n;
  };
  int idle_closed = 0, slow_closed = 0;
  while (SteadyClock::now() < deadline) {
    idle_closed = all_closed(idle);
    slow_closed = all_closed(slow);
    if (idle_closed == kIdle && slow_closed == kSlow) break;
    std::this_thread::sleep_for(100ms);
  }
  const double closed_after = MillisSince(t_open);
  stop = true;
  loris.join();
  BOOST_TEST_MESSAGE("slow: the server closed " << idle_closed << "/" << kIdle << " idle and "
                                                << slow_closed << "/" << kSlow
                                                << " slow-loris connections within "
                                                << Fixed(closed_after, 0) << " ms of opening "
                                                << "(--read-timeout " << kReadTimeout << " s)");
  BOOST_TEST(idle_closed == kIdle);
  BOOST_TEST(slow_closed == kSlow);
  HttpClient after(server.port());
  BOOST_TEST(StatusOf(after.Call(http::verb::get, "/api/v4/user", root)) == 200);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::api
