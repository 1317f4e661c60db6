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
#include "common/clock.h"
#include "service/token_service.h"
#include "tools/cli.h"

namespace patledger::tools {
namespace {

namespace po = boost::program_options;

constexpr int kUsage = 2;
constexpr char kSynopsis[] =
    "serve [--data DIR] [--listen HOST:PORT] [--threads N] [--max-connections N] "
    "[--key-file F] [--access-log FILE|-]";

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
  std::size_t max_connections = api::ServerOptions().max_connections;
  po::options_description opts("serve options");
  opts.add_options()("help,h", "show this help")(
      "data", po::value(&data)->default_value("./data"),
      "data directory (initialised if it holds no ledger)")(
      "key-file", po::value(&key_file),
      "instance key file (default <data>/token.key, mode 0600)")(
      "listen", po::value(&listen_text)->default_value("127.0.0.1:8080"),
      "HOST:PORT or [IPv6]:PORT to listen on (port 0: any free port)")(
      "threads", po::value(&threads)->default_value(0), "I/O threads (0: one per core)")(
      "max-connections", po::value(&max_connections)->default_value(max_connections),
      "open connections beyond this are closed at once")(
      "access-log", po::value(&access_log)->default_value("-"),
      "access log file (appended), or - for stderr");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(opts).run(), vm);
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
  if (max_connections == 0) bad = "--max-connections must be at least 1";
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
  options.max_connections = max_connections;
  options.access_log = access_log == "-" ? &err : &log_file;

  api::Handler handler;
  api::Server server(options, handler);
  if (Status s = server.Start(); !s.ok()) return Fail(err, s);
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
