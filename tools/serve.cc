#include "tools/serve.h"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/program_options.hpp>
#include <charconv>
#include <chrono>
#include <csignal>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "api/handler.h"
#include "api/server.h"
#include "api/throttle.h"
#include "common/clock.h"
#include "service/token_service.h"
#include "tools/cli.h"

namespace patledger::tools {
namespace {

namespace po = boost::program_options;

constexpr int kUsage = 2;
constexpr char kSynopsis[] =
    "serve [--data DIR] [--listen HOST:PORT] [--threads N] [--writer-threads N] "
    "[--max-connections N] [--read-timeout S] [--idle-timeout S] [--key-file F] "
    "[--access-log FILE|-] "
    "[--auth-fail-threshold N] [--auth-fail-window S] [--auth-ban S] "
    "[--trusted-proxy ADDR[/BITS]]... [--auth-fail-exempt ADDR[/BITS]]...";

// TEST ONLY (hidden options --test-clock-start T and --test-clock-speed X, not in
// --help): the service's clock starts at T and runs X times as fast as real time, so
// a soak test of seconds sees tokens expire at midnight UTC (tests/reliability/
// soak_test.cc). It is monotonic, but every instant it gives is recorded in the ledger
// as real: never run a production ledger with it. The clock's origin is taken before
// the server listens, so a test that notes when it spawned the process and when it saw
// "listening on" can bound the server's time from both sides.
class ScaledClock final : public Clock {
 public:
  ScaledClock(std::int64_t start_us, double speed)
      : start_us_(start_us), speed_(speed), origin_(std::chrono::steady_clock::now()) {}
  std::int64_t NowMicros() const override {
    const auto real = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::steady_clock::now() - origin_)
                          .count();
    return start_us_ + static_cast<std::int64_t>(static_cast<double>(real) * speed_);
  }

 private:
  std::int64_t start_us_;
  double speed_;
  std::chrono::steady_clock::time_point origin_;
};

// --trusted-proxy / --auth-fail-exempt values; "none" alone means an empty list.
std::optional<std::vector<api::IpRange>> ParseRanges(const std::vector<std::string>& texts,
                                                     std::string* bad) {
  std::vector<api::IpRange> out;
  if (texts.size() == 1 && texts[0] == "none") return out;
  for (const std::string& t : texts) {
    auto range = api::ParseIpRange(t);
    if (!range) {
      *bad = "'" + t + "' is not an address or ADDR/BITS";
      return std::nullopt;
    }
    out.push_back(*range);
  }
  return out;
}

std::string FormatRanges(const std::vector<api::IpRange>& ranges) {
  std::string out;
  for (const auto& r : ranges) out += (out.empty() ? "" : ", ") + api::FormatIpRange(r);
  return out.empty() ? "none" : out;
}

struct Listen {
  std::string host;
  std::uint16_t port = 0;
};

// "HOST:PORT" or "[IPv6]:PORT".
std::optional<Listen> ParseListen(const std::string& text) {
  Listen l;
  std::string_view port;
  if (!text.empty() && text[0] == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    l.host = text.substr(1, close - 1);
    port = std::string_view(text).substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    l.host = text.substr(0, colon);
    if (l.host.find(':') != std::string::npos) return std::nullopt;  // IPv6 needs [ ]
    port = std::string_view(text).substr(colon + 1);
  }
  if (l.host.empty() || port.empty()) return std::nullopt;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), l.port);
  if (ec != std::errc() || ptr != port.data() + port.size()) return std::nullopt;
  return l;
}

std::string Url(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// Writes one message in one call, so it does not interleave with access-log lines
// written to the same stream by the server's threads.
void Say(std::ostream& err, const std::string& message) {
  err.write(message.data(), static_cast<std::streamsize>(message.size()));
  err.flush();
}

int Fail(std::ostream& err, const Status& s) {
  Say(err, "patledger: " + s.ToString() + "\n");
  return ExitCodeFor(s);
}

// Initialises the ledger if there is none, exactly as `patledger init` does: the
// root token alone on `out`, the explanation on `err`. Not OK only for a real failure.
Status InitIfMissing(const service::ServiceOptions& o, std::ostream& out, std::ostream& err) {
  auto r = service::TokenService::Init(o);
  if (!r) {
    return r.error().code() == Status::Code::kAlreadyExists ? Status::OK() : r.error();
  }
  const auto& meta = r->root_token.info.meta;
  std::ostringstream m;
  m << "Initialised a new ledger in " << o.data_dir << ".\n"
    << "Administrator: root (user id " << r->root_user_id << ").\n"
    << "Root token: id " << meta.id << ", scopes api, sudo, expires "
    << (meta.expires_day == index::kNoExpiry ? std::string("never")
                                             : FormatDate(meta.expires_day))
    << ".\nIt is printed once, on stdout: store it now; it cannot be shown again.\n";
  Say(err, m.str());
  out << r->root_token.secret << "\n" << std::flush;
  return Status::OK();
}

}  // namespace

int Serve(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  std::string data = "./data", key_file, listen_text = "127.0.0.1:8080", access_log = "-";
  int threads = 0;
  int writer_threads = 0;
  const api::ServerOptions server_defaults;
  const api::AuthThrottleOptions throttle_defaults;
  std::size_t max_connections = server_defaults.max_connections;
  std::int64_t read_timeout = server_defaults.read_timeout.count();
  std::int64_t idle_timeout = server_defaults.idle_timeout.count();
  std::uint32_t fail_threshold = api::kGitLabThreshold;
  std::int64_t fail_window = throttle_defaults.window_seconds;
  std::int64_t ban = throttle_defaults.ban_seconds;
  std::vector<std::string> trusted_texts = {"127.0.0.1", "::1"};
  std::vector<std::string> exempt_texts = {"127.0.0.1", "::1"};
  std::string test_clock_start;
  double test_clock_speed = 0;
  po::options_description opts("serve options");
  opts.add_options()("help,h", "show this help")(
      "data", po::value(&data)->default_value("./data"),
      "data directory (initialised if it holds no ledger)")(
      "key-file", po::value(&key_file),
      "instance key file (default <data>/token.key, mode 0600)")(
      "listen", po::value(&listen_text)->default_value("127.0.0.1:8080"),
      "HOST:PORT or [IPv6]:PORT to listen on (port 0: any free port)")(
      "threads", po::value(&threads)->default_value(0), "I/O threads (0: one per core)")(
      "writer-threads", po::value(&writer_threads)->default_value(0),
      "threads for the requests that may write to the ledger (all but GET, HEAD and "
      "forward auth): they wait for the synced writes there, not on an I/O thread, so "
      "a slow disk does not hold up authentications (0: twice --threads, at least 4)")(
      "max-connections", po::value(&max_connections)->default_value(max_connections),
      "open connections beyond this are closed at once")(
      "access-log", po::value(&access_log)->default_value("-"),
      "access log file (appended), or - for stderr")(
      "read-timeout", po::value(&read_timeout)->default_value(read_timeout),
      "seconds a request may take from its first byte to its last (slow clients are "
      "closed), and a new connection may stay silent")(
      "idle-timeout", po::value(&idle_timeout)->default_value(idle_timeout),
      "seconds a keep-alive connection may stay idle between requests")(
      "auth-fail-threshold", po::value(&fail_threshold)->default_value(fail_threshold),
      "failed authentications (bad, revoked or expired token) from one address within "
      "--auth-fail-window that ban it: 429 to every request presenting a token; "
      "0: off (docs/api.md)")(
      "auth-fail-window", po::value(&fail_window)->default_value(fail_window),
      "seconds within which failures are counted")(
      "auth-ban", po::value(&ban)->default_value(ban), "seconds a ban lasts")(
      "trusted-proxy",
      po::value(&trusted_texts)->multitoken()->default_value(trusted_texts, "127.0.0.1 ::1"),
      "proxies (ADDR or ADDR/BITS, repeatable; 'none') whose X-Forwarded-For / X-Real-IP "
      "name the client: set it to your gateway's address")(
      "auth-fail-exempt",
      po::value(&exempt_texts)->multitoken()->default_value(exempt_texts, "127.0.0.1 ::1"),
      "client addresses never counted nor banned (ADDR or ADDR/BITS, repeatable; 'none')");
  po::options_description hidden("test-only options");
  hidden.add_options()("test-clock-start", po::value(&test_clock_start))(
      "test-clock-speed", po::value(&test_clock_speed));
  po::options_description all;
  all.add(opts).add(hidden);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).run(), vm);
    if (vm.count("help")) {
      out << "usage: patledger " << kSynopsis << "\n\n" << opts;
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    err << "patledger: " << e.what() << "\nusage: patledger " << kSynopsis << "\n";
    return kUsage;
  }
  const auto listen = ParseListen(listen_text);
  std::string bad;
  if (!listen) bad = "--listen '" + listen_text + "' is not HOST:PORT or [IPv6]:PORT";
  if (threads < 0) bad = "--threads must be 0 (one per core) or more";
  if (writer_threads < 0) bad = "--writer-threads must be 0 (the default) or more";
  if (max_connections == 0) bad = "--max-connections must be at least 1";
  if (read_timeout < 1 || idle_timeout < 1) bad = "timeouts must be at least 1 second";
  if (fail_threshold > 0 && (fail_window < 1 || ban < 1)) {
    bad = "--auth-fail-window and --auth-ban must be at least 1 second";
  }
  std::string range_error;
  auto trusted = ParseRanges(trusted_texts, &range_error);
  if (!trusted) bad = "--trusted-proxy " + range_error;
  auto exempt = ParseRanges(exempt_texts, &range_error);
  if (!exempt) bad = "--auth-fail-exempt " + range_error;
  std::unique_ptr<ScaledClock> test_clock;
  if (test_clock_speed != 0 || !test_clock_start.empty()) {
    auto start = test_clock_start.empty()
                     ? std::optional<std::int64_t>(SystemClock::Get()->NowMicros())
                     : ParseTimestamp(test_clock_start);
    if (!start || !(test_clock_speed > 0)) {
      bad = "--test-clock-start needs a timestamp and --test-clock-speed a positive factor";
    } else {
      test_clock = std::make_unique<ScaledClock>(*start, test_clock_speed);
    }
  }
  if (!bad.empty()) {
    err << "patledger: " << bad << "\nusage: patledger " << kSynopsis << "\n";
    return kUsage;
  }

  // Signals first, so a SIGTERM from here on stops the server instead of killing it.
  // A closed log pipe must not kill an auth service: writes then just fail.
  std::signal(SIGPIPE, SIG_IGN);
  boost::asio::io_context signal_ioc(1);
  boost::asio::signal_set signals(signal_ioc, SIGINT, SIGTERM);

  service::ServiceOptions so;
  so.data_dir = data;
  so.key_path = key_file;
  if (test_clock) so.clock = test_clock.get();
  if (Status s = InitIfMissing(so, out, err); !s.ok()) return Fail(err, s);

  std::ofstream log_file;
  if (access_log != "-") {
    log_file.open(access_log, std::ios::app);
    if (!log_file) return Fail(err, Status::IOError("cannot open access log " + access_log));
  }
  api::ServerOptions options;
  options.host = listen->host;
  options.port = listen->port;
  options.threads = threads;
  options.writer_threads = writer_threads;
  options.max_connections = max_connections;
  options.read_timeout = std::chrono::seconds(read_timeout);
  options.idle_timeout = std::chrono::seconds(idle_timeout);
  options.access_log = access_log == "-" ? &err : &log_file;

  api::HandlerOptions handler_options;
  handler_options.throttle.threshold = fail_threshold;
  handler_options.throttle.window_seconds = fail_window;
  handler_options.throttle.ban_seconds = ban;
  handler_options.throttle.trusted_proxies = *trusted;
  handler_options.throttle.exempt = *exempt;
  api::Handler handler(handler_options);
  api::Server server(options, handler);
  if (Status s = server.Start(); !s.ok()) return Fail(err, s);
  if (test_clock) {
    Say(err, "patledger: TEST CLOCK: the service's time starts at " +
                 FormatTimestamp(test_clock->NowMicros()) + " and runs " +
                 std::to_string(test_clock_speed) + "x real time\n");
  }
  Say(err, fail_threshold == 0
               ? std::string("patledger: failed-authentication ban off\n")
               : "patledger: failed-authentication ban: " + std::to_string(fail_threshold) +
                     " failures within " + std::to_string(fail_window) +
                     " s from one address -> 429 for " + std::to_string(ban) +
                     " s (trusted proxies: " + FormatRanges(*trusted) +
                     "; exempt: " + FormatRanges(*exempt) + ")\n");
  Say(err, "patledger: listening on " + Url(listen->host, server.port()) + "\n");

  std::atomic<bool> signalled{false};
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;  // cancelled: the server stopped for another reason
    signalled.store(true);
    server.Stop();
  });
  std::thread signal_thread([&] { signal_ioc.run(); });
  std::thread server_thread([&] { server.Run(); });

  // Replay while /-/liveness already answers (and readiness says 503).
  const auto t0 = std::chrono::steady_clock::now();
  auto opened = service::TokenService::Open(so);
  std::unique_ptr<service::TokenService> svc;
  int code = 0;
  if (!opened) {
    code = Fail(err, opened.error());
    server.Stop();
  } else {
    svc = std::move(*opened);
    const auto ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - t0)
                        .count();
    std::ostringstream m;
    m.precision(1);
    m << "patledger: replayed " << svc->ledger().last_seq() << " events in " << std::fixed
      << ms << " ms; ready\n";
    Say(err, m.str());
    handler.SetService(svc.get());
  }

  server_thread.join();  // returns after Stop, once in-flight requests are done
  signal_ioc.stop();  // the pending wait is dropped with `signals`
  signal_thread.join();
  svc.reset();  // no Handle call is left: close the ledger cleanly
  if (code == 0 && signalled.load()) Say(err, "patledger: stopped\n");
  return code;
}

}  // namespace patledger::tools
