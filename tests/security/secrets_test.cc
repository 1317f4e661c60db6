// Specification: secrets never leak (issue 7, point 8).
//
// Canary tokens — real tokens whose strings the test knows — are created through every
// channel that makes one (the CLI's `token create` and `token rotate`, plain and --json;
// HTTP create for a user, self-service create, rotate, self rotate) and then presented
// to the real `patledger serve` through every channel that carries one (private_token in
// the query or the body, PRIVATE-TOKEN, Bearer, Basic, X-Original-URI), also where they
// fail: revoked and expired canaries, malformed near misses, a canary in the Sudo header,
// in a scopes value, in a name, in a search filter, in X-Request-Id, in the path, under a
// mistyped parameter name, in requests refused as too large or unparsable. The server's
// stdout, stderr and access log go to files. Then the read-only tools run (token
// list/show, --json, user list, auth). Finally every file under the data directory, every
// log and every tool output is searched for every canary, both the whole string and its
// 30-character random part (which a near miss shares): 0 hits. The only places allowed to
// hold a canary are the outputs whose purpose is to hand that one canary over once (the
// create/rotate output that made it), and those must hold it (proof that the search
// finds what it looks for).

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/handler.h"
#include "common/clock.h"
#include "service/token_format.h"
#include "service/token_service.h"
#include "tests/test_util.h"

extern char** environ;

namespace patledger {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;
using api::Request;
using api::Response;

const std::string kBinary = std::string(PATLEDGER_TEST_BINARY_DIR) + "/tools/patledger";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// "YYYY-MM-DD", `days` from today (UTC).
std::string DateInDays(int days) {
  return FormatDate(DayOf(SystemClock::Get()->NowMicros()) + days);
}

std::string Base64(const std::string& s) {
  std::string out(beast::detail::base64::encoded_size(s.size()), '\0');
  out.resize(beast::detail::base64::encode(out.data(), s.data(), s.size()));
  return out;
}

// ---- child processes with their output in files -----------------------------------

// Starts `args` with stdin from `in` ("" = /dev/null) and stdout/stderr into files.
// The child dies with this process (PR_SET_PDEATHSIG), so a failed test leaves no server.
pid_t Spawn(const std::vector<std::string>& args, const std::string& in,
            const std::string& out, const std::string& err) {
  const int fd_in = ::open(in.empty() ? "/dev/null" : in.c_str(), O_RDONLY | O_CLOEXEC);
  const int fd_out = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const int fd_err = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd_in < 0 || fd_out < 0 || fd_err < 0) throw std::runtime_error("cannot open " + out);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(fd_in, 0);
    ::dup2(fd_out, 1);
    ::dup2(fd_err, 2);
    ::execve(argv[0], argv.data(), environ);
    ::_exit(127);
  }
  ::close(fd_in);
  ::close(fd_out);
  ::close(fd_err);
  if (pid < 0) throw std::runtime_error("fork failed");
  return pid;
}

// The exit code, or nullopt (after SIGKILL) if it did not exit within `timeout`.
std::optional<int> WaitExit(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (SteadyClock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return std::nullopt;
    }
    std::this_thread::sleep_for(10ms);
  }
  if (!WIFEXITED(status)) return std::nullopt;
  return WEXITSTATUS(status);
}

// ---- a one-shot HTTP client ---------------------------------------------------------

// One connection per request (Connection: close); every read has a deadline. nullopt
// when the server closed or refused the request without a parsable answer.
std::optional<Response> Send(std::uint16_t port, Request req, std::string* raw_out = nullptr) {
  req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
  req.keep_alive(false);
  req.prepare_payload();
  try {
    asio::io_context ioc;
    tcp::socket socket(ioc);
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    if (raw_out != nullptr) {
      asio::write(socket, asio::buffer(*raw_out));  // bytes as given, not `req`
    } else {
      http::write(socket, req);
    }
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.body_limit(1 << 24);
    beast::flat_buffer buffer;
    const auto deadline = SteadyClock::now() + 30s;
    for (;;) {
      if (buffer.size() > 0) {
        beast::error_code ec;
        const std::size_t n = parser.put(buffer.data(), ec);
        buffer.consume(n);
        if (ec && ec != http::error::need_more) return std::nullopt;
        if (parser.is_done()) return parser.release();
        if (!ec && n > 0) continue;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - SteadyClock::now());
      pollfd pfd{socket.native_handle(), POLLIN, 0};
      if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
        return std::nullopt;
      }
      beast::error_code ec;
      const std::size_t n = socket.read_some(buffer.prepare(64 * 1024), ec);
      if (ec) return std::nullopt;
      buffer.commit(n);
    }
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// ---- canaries -----------------------------------------------------------------------

struct Canary {
  std::string origin;  // how it was made, e.g. "cli token create --json"
  std::string token;
  std::uint64_t id = 0;
  enum State { kValid, kRevoked, kExpired } state = kValid;
  // The 30 random characters after the prefix: what a near miss still carries.
  std::string random() const {
    return token.substr(service::kDefaultTokenPrefix.size(), service::kTokenRandomLength);
  }
};

// One place searched: a file, and the one canary (if any) it exists to hand over.
struct Place {
  std::string path;
  std::string allowed;  // a token this output's purpose is to show once, else ""
};

class SecretsFixture {
 public:
  SecretsFixture()
      : data_(work_.Sub("data")), out_(work_.Sub("out")), inputs_(work_.Sub("inputs")) {
    fs::create_directories(out_);
    fs::create_directories(inputs_);
    ::signal(SIGPIPE, SIG_IGN);  // the server may close on a request it refuses
  }

  // Runs the CLI; stdout and stderr become places to search. `shows` is the token the
  // command exists to print once (searched for everything else).
  int Tool(const std::vector<std::string>& args, const std::string& stdin_text = "",
           std::string* stdout_text = nullptr) {
    const std::string name = out_ + "/tool" + std::to_string(++tools_);
    std::string in;
    if (!stdin_text.empty()) {
      in = inputs_ + "/stdin" + std::to_string(tools_);  // our input: not searched
      WriteFile(in, stdin_text);
    }
    std::vector<std::string> argv = {kBinary};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--data");
    argv.push_back(data_);
    const pid_t pid = Spawn(argv, in, name + ".out", name + ".err");
    const auto code = WaitExit(pid, 120s);
    places_.push_back({name + ".out", ""});
    places_.push_back({name + ".err", ""});
    if (stdout_text != nullptr) *stdout_text = ReadFile(name + ".out");
    return code.value_or(-1);
  }

  // `token create|rotate`: the new token from its stdout (plain or --json), which is
  // then the one canary that output may hold.
  Canary Made(const std::vector<std::string>& args, const std::string& origin) {
    std::string out;
    const int code = Tool(args, "", &out);
    BOOST_TEST_REQUIRE(code == 0, origin << " exited " << code << ": "
                                         << ReadFile(places_.back().path));
    Canary c;
    c.origin = origin;
    if (std::find(args.begin(), args.end(), "--json") != args.end()) {
      const json::value v = json::parse(out);
      c.token = std::string(v.at("token").as_string());
      c.id = v.at("id").to_number<std::uint64_t>();
    } else {
      c.token = out.substr(0, out.find('\n'));
      // The id from the message on stderr: "Created token 7 for user 2 ...".
      const std::string err = ReadFile(places_.back().path);
      const auto at = err.find(" token ");
      if (at != std::string::npos) c.id = std::stoull(err.substr(at + 7));
    }
    places_[places_.size() - 2].allowed = c.token;
    return c;
  }

  void StartServer() {
    access_log_ = out_ + "/access.log";
    server_ = Spawn({kBinary, "serve", "--data", data_, "--listen", "127.0.0.1:0", "--threads",
                     "2", "--access-log", access_log_},
                    "", out_ + "/serve.out", out_ + "/serve.err");
    places_.push_back({out_ + "/serve.out", ""});
    places_.push_back({out_ + "/serve.err", ""});
    places_.push_back({access_log_, ""});
    const std::string marker = "listening on http://127.0.0.1:";
    const auto deadline = SteadyClock::now() + 60s;
    while (SteadyClock::now() < deadline) {
      const std::string err = ReadFile(out_ + "/serve.err");
      if (auto at = err.find(marker); at != std::string::npos && port_ == 0) {
        port_ = static_cast<std::uint16_t>(std::stoul(err.substr(at + marker.size())));
      }
      if (port_ != 0) {
        auto r = Send(port_, Request(http::verb::get, "/-/readiness", 11));
        if (r && r->result_int() == 200) return;
      }
      std::this_thread::sleep_for(50ms);
    }
    BOOST_FAIL("patledger serve did not become ready: " << ReadFile(out_ + "/serve.err"));
  }

  void StopServer() {
    ::kill(server_, SIGTERM);
    const auto code = WaitExit(server_, 60s);
    BOOST_TEST(code.has_value(), "serve did not exit on SIGTERM");
    server_ = -1;
  }

  ~SecretsFixture() {
    if (server_ > 0) {
      ::kill(server_, SIGKILL);
      ::waitpid(server_, nullptr, 0);
    }
  }

  // One request; the status (0 if no answer). Counted per channel for the report.
  int Http(const std::string& channel, http::verb method, const std::string& target,
           const std::vector<std::pair<std::string, std::string>>& headers = {},
           const std::string& body = "", const std::string& type = "application/json") {
    Request req(method, target, 11);
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty()) {
      req.set(http::field::content_type, type);
      req.body() = body;
    }
    auto r = Send(port_, std::move(req));
    ++requests_[channel];
    last_body_ = r ? r->body() : "";
    return r ? r->result_int() : 0;
  }

  json::value HttpJson(http::verb method, const std::string& target, const std::string& token,
                       const std::string& body,
                       const std::string& type = "application/json") {
    Request req(method, target, 11);
    req.set("PRIVATE-TOKEN", token);
    if (!body.empty()) {
      req.set(http::field::content_type, type);
      req.body() = body;
    }
    auto r = Send(port_, std::move(req));
    BOOST_TEST_REQUIRE(r.has_value(), "no answer to " << target);
    BOOST_TEST_REQUIRE(r->result_int() / 100 == 2, target << ": " << r->result_int());
    return json::parse(r->body());
  }

  Canary FromJson(const json::value& v, const std::string& origin) {
    Canary c;
    c.origin = origin;
    c.token = std::string(v.at("token").as_string());
    c.id = v.at("id").to_number<std::uint64_t>();
    return c;
  }

  TempDir work_;
  std::string data_, out_, inputs_, access_log_;
  pid_t server_ = -1;
  std::uint16_t port_ = 0;
  int tools_ = 0;
  std::vector<Place> places_;
  std::map<std::string, int> requests_;  // per channel
  std::string last_body_;
};

BOOST_FIXTURE_TEST_SUITE(secrets, SecretsFixture)

BOOST_AUTO_TEST_CASE(no_canary_reaches_a_file_a_log_or_a_tool_output) {
  std::vector<Canary> canaries;
  canaries.reserve(64);  // `add` hands out references
  auto add = [&](Canary c) -> Canary& {
    canaries.push_back(std::move(c));
    return canaries.back();
  };

  // ---- made in-process, ten days ago: the root token and a canary that has expired.
  std::uint64_t alice = 0;
  {
    ManualClock past(SystemClock::Get()->NowMicros() - 10 * kMicrosPerDay);
    service::ServiceOptions o;
    o.data_dir = data_;
    o.clock = &past;
    auto init = service::TokenService::Init(o);
    BOOST_TEST_REQUIRE(init.has_value(), Why(init));
    add({"init (root)", init->root_token.secret, init->root_token.info.meta.id});
    auto svc = service::TokenService::Open(o);
    BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
    auto user = (*svc)->RegisterUser({}, "alice", "Alice", "alice@example.com", false);
    BOOST_TEST_REQUIRE(user.has_value(), Why(user));
    alice = user->id;
    service::CreateTokenRequest req;
    req.user_id = alice;
    req.name = "soon gone";
    req.scopes = service::kApi;
    req.expires_day = DayOf(past.NowMicros()) + 1;
    auto expired = (*svc)->CreateToken({}, req);
    BOOST_TEST_REQUIRE(expired.has_value(), Why(expired));
    add({"service create, expired", expired->secret, expired->info.meta.id, Canary::kExpired});
  }
  const std::string root = canaries[0].token;
  const std::string in30 = DateInDays(30);

  // ---- the CLI: create and rotate, plain and --json.
  add(Made({"token", "create", "--user", "alice", "--name", "cli", "--scopes", "api",
            "--expires", in30},
           "cli token create"));
  Canary& cli_json = add(Made({"token", "create", "--user", "alice", "--name", "cli-json",
                               "--scopes", "api,read_user", "--json"},
                              "cli token create --json"));
  const std::uint64_t cli_json_id = cli_json.id;
  cli_json.state = Canary::kRevoked;  // rotated just below
  add(Made({"token", "rotate", std::to_string(cli_json_id)}, "cli token rotate"));
  Canary& cli_json2 = add(Made({"token", "create", "--user", "root", "--name", "cli-json2",
                                "--scopes", "read_api", "--json"},
                               "cli token create --json (root)"));
  const std::uint64_t cli_json2_id = cli_json2.id;
  cli_json2.state = Canary::kRevoked;
  add(Made({"token", "rotate", std::to_string(cli_json2_id), "--json"},
           "cli token rotate --json"));

  // ---- the server: HTTP create, rotate, self create, self rotate, revoke.
  StartServer();
  const std::string users_pat = "/api/v4/users/" + std::to_string(alice) + "/personal_access_tokens";
  Canary& h1 = add(FromJson(
      HttpJson(http::verb::post, users_pat, root,
               R"({"name":"http","scopes":["api"],"expires_at":")" + in30 + R"("})"),
      "http POST /users/:id/personal_access_tokens (json)"));
  h1.state = Canary::kRevoked;
  const std::uint64_t h1_id = h1.id;
  add(FromJson(HttpJson(http::verb::post,
                        "/api/v4/personal_access_tokens/" + std::to_string(h1_id) + "/rotate",
                        root, ""),
               "http POST /personal_access_tokens/:id/rotate"));
  const std::string cli_token = canaries[2].token;  // "cli token create": alice, api
  Canary& h3 = add(FromJson(HttpJson(http::verb::post, "/api/v4/user/personal_access_tokens",
                                     cli_token,
                                     "name=self&scopes[]=api&expires_at=" + in30,
                                     "application/x-www-form-urlencoded"),
                            "http POST /user/personal_access_tokens (form)"));
  h3.state = Canary::kRevoked;
  const std::string h3_token = h3.token;
  add(FromJson(
      HttpJson(http::verb::post, "/api/v4/personal_access_tokens/self/rotate", h3_token, ""),
      "http POST /personal_access_tokens/self/rotate"));
  Canary& h5 = add(FromJson(
      HttpJson(http::verb::post, users_pat + "?name=form&scopes=read_user&expires_at=" + in30,
               root, ""),
      "http POST /users/:id/personal_access_tokens (query), then DELETEd"));
  h5.state = Canary::kRevoked;
  BOOST_TEST(Http("revoke", http::verb::delete_,
                  "/api/v4/personal_access_tokens/" + std::to_string(h5.id),
                  {{"PRIVATE-TOKEN", root}}) == 204);

  // ---- every canary through every channel that carries a token.
  int answered_ok = 0, valid_uses = 0;
  for (const Canary& c : canaries) {
    const std::string& t = c.token;
    const int want = c.state == Canary::kValid ? 200 : 401;
    const std::vector<std::pair<std::string, int>> statuses = {
        {"private_token query", Http("private_token query", http::verb::get,
                                     "/api/v4/user?private_token=" + t)},
        {"private_token body", Http("private_token body", http::verb::post,
                                    "/api/v4/auth", {}, "private_token=" + t,
                                    "application/x-www-form-urlencoded")},
        {"private_token json body", Http("private_token json body", http::verb::post,
                                         "/api/v4/auth", {},
                                         R"({"private_token":")" + t + R"("})")},
        {"PRIVATE-TOKEN", Http("PRIVATE-TOKEN", http::verb::get, "/api/v4/user",
                               {{"PRIVATE-TOKEN", t}})},
        {"Bearer", Http("Bearer", http::verb::get, "/api/v4/personal_access_tokens/self",
                        {{"Authorization", "Bearer " + t}})},
        {"Basic", Http("Basic", http::verb::get, "/api/v4/user",
                       {{"Authorization", "Basic " + Base64("anyone:" + t)}})},
        {"X-Original-URI", Http("X-Original-URI", http::verb::get, "/api/v4/auth",
                                {{"X-Original-URI", "/app/x?a=1&private_token=" + t}})},
        {"auth query", Http("auth query", http::verb::get,
                            "/api/v4/auth?scope=read_user&private_token=" + t)},
    };
    for (const auto& [channel, status] : statuses) {
      BOOST_TEST(status == want, c.origin << " via " << channel << ": " << status);
      if (status == want) ++answered_ok;
      if (want == 200) ++valid_uses;
    }
    // Presented where no token belongs: in the path, under a mistyped parameter name,
    // in the Sudo header and parameter, in a search filter, as X-Request-Id on a read.
    Http("path", http::verb::get, "/api/v4/personal_access_tokens/" + t, {{"PRIVATE-TOKEN", root}});
    Http("mistyped key", http::verb::get, "/api/v4/user?private-token=" + t);
    Http("Sudo header", http::verb::get, "/api/v4/user",
         {{"PRIVATE-TOKEN", root}, {"Sudo", t}});
    Http("sudo param", http::verb::get, "/api/v4/user?sudo=" + t, {{"PRIVATE-TOKEN", root}});
    Http("search filter", http::verb::get, "/api/v4/personal_access_tokens?search=" + t,
         {{"PRIVATE-TOKEN", root}});
    Http("X-Request-Id (read)", http::verb::get, "/api/v4/user",
         {{"PRIVATE-TOKEN", root}, {"X-Request-Id", t}});
    // In bodies of requests that fail: scopes, name.
    Http("scopes value", http::verb::post, users_pat, {{"PRIVATE-TOKEN", root}},
         R"({"name":"x","scopes":[")" + t + R"("]})");
    Http("scopes value (form)", http::verb::post, users_pat, {{"PRIVATE-TOKEN", root}},
         "name=x&scopes=" + t, "application/x-www-form-urlencoded");
    Http("name, bad scopes", http::verb::post, users_pat, {{"PRIVATE-TOKEN", root}},
         R"({"name":")" + t + R"(","scopes":["nope"]})");
    Http("name, no auth", http::verb::post, "/api/v4/user/personal_access_tokens", {},
         R"({"name":")" + t + R"(","scopes":["api"]})");
    Http("name too long", http::verb::post, users_pat, {{"PRIVATE-TOKEN", root}},
         R"({"name":")" + std::string(250, 'n') + t + R"(","scopes":["api"]})");
    // Refused before the handler, or by the router.
    Http("unknown route", http::verb::get, "/api/v4/nothing?private_token=" + t);
    Http("wrong method", http::verb::put, "/api/v4/user?private_token=" + t);
    Http("413 body", http::verb::post, "/api/v4/user/personal_access_tokens?private_token=" + t,
         {}, std::string(70 * 1024, 'x'), "text/plain");
    Http("431 headers", http::verb::get, "/api/v4/user?private_token=" + t,
         {{"X-Padding", std::string(20 * 1024, 'p')}});
    std::string broken = "GET /api/v4/user?private_token=" + t +
                         " HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n";
    Send(port_, Request(http::verb::get, "/", 11), &broken);
    ++requests_["unparsable request"];

    // Malformed near misses: the last character changed (a bad checksum), and one
    // checksum character dropped (35 characters after the prefix). Both still carry
    // the 30 random characters, and with them the whole token.
    std::string changed = t;
    changed.back() = changed.back() == 'A' ? 'B' : 'A';
    std::string dropped = t;
    dropped.erase(dropped.size() - 3, 1);
    for (const std::string& near : {changed, dropped}) {
      BOOST_TEST(Http("near miss: private_token query", http::verb::get,
                      "/api/v4/user?private_token=" + near) == 401);
      BOOST_TEST(Http("near miss: PRIVATE-TOKEN", http::verb::get, "/api/v4/user",
                      {{"PRIVATE-TOKEN", near}}) == 401);
      BOOST_TEST(Http("near miss: Bearer", http::verb::get, "/api/v4/user",
                      {{"Authorization", "Bearer " + near}}) == 401);
      BOOST_TEST(Http("near miss: X-Original-URI", http::verb::get, "/api/v4/auth",
                      {{"X-Original-URI", "/app?private_token=" + near}}) == 401);
      Http("near miss: mistyped key", http::verb::get, "/api/v4/user?private-token=" + near);
      Http("near miss: path", http::verb::get, "/api/v4/personal_access_tokens/" + near,
           {{"PRIVATE-TOKEN", root}});
      Http("near miss: X-Request-Id", http::verb::get, "/api/v4/user",
           {{"PRIVATE-TOKEN", root}, {"X-Request-Id", near}});
    }
  }
  // X-Request-Id on a request that changes the ledger (recorded in the event's context).
  Http("X-Request-Id (write)", http::verb::post, users_pat,
       {{"PRIVATE-TOKEN", root}, {"X-Request-Id", canaries[2].token}},
       R"({"name":"rid","scopes":["read_user"],"expires_at":")" + in30 + R"("})");
  BOOST_TEST_MESSAGE("canaries: " << canaries.size() << "; uses that answered as expected: "
                                  << answered_ok << " (" << valid_uses
                                  << " authenticated with a valid canary)");

  // ---- the read-only tools, beside the running server.
  BOOST_TEST(Tool({"token", "list"}) == 0);
  BOOST_TEST(Tool({"token", "list", "--json"}) == 0);
  BOOST_TEST(Tool({"token", "list", "--user", "alice", "--json"}) == 0);
  BOOST_TEST(Tool({"user", "list"}) == 0);
  BOOST_TEST(Tool({"user", "list", "--json"}) == 0);
  for (const Canary& c : canaries) {
    if (c.id != 0) {
      BOOST_TEST(Tool({"token", "show", std::to_string(c.id)}) == 0);
      BOOST_TEST(Tool({"token", "show", std::to_string(c.id), "--json"}) == 0);
    }
    const int want = c.state == Canary::kValid ? 0 : 1;
    BOOST_TEST(Tool({"auth", c.token}) == want, c.origin);
    BOOST_TEST(Tool({"auth", c.token, "--json", "--scope", "read_user"}) == want, c.origin);
    BOOST_TEST(Tool({"auth", "-", "--json"}, c.token + "\n") == want, c.origin);
    std::string near = c.token;
    near.back() = near.back() == 'A' ? 'B' : 'A';
    BOOST_TEST(Tool({"auth", near}) == 1);
    BOOST_TEST(Tool({"auth", near.substr(0, near.size() - 1), "--json"}) == 1);
  }
  StopServer();
  // And a writer afterwards (its messages too).
  BOOST_TEST(Tool({"token", "revoke", std::to_string(canaries[2].id)}) == 0);

  // ---- search every place for every canary.
  std::size_t files = 0, bytes = 0, log_lines = 0, filtered = 0;
  std::vector<std::string> hits;
  auto search = [&](const std::string& path, const std::string& allowed) {
    const std::string text = ReadFile(path);
    ++files;
    bytes += text.size();
    for (const Canary& c : canaries) {
      for (const std::string& needle : {c.token, c.random()}) {
        const bool found = text.find(needle) != std::string::npos;
        if (c.token == allowed) {
          // The output that hands this canary over must hold it: the search works.
          BOOST_TEST(found, path << " should show " << c.origin);
        } else if (found) {
          // Where, with the bytes before it (printable ones only), the canary masked.
          const std::size_t at = text.find(needle);
          std::string before = text.substr(at > 48 ? at - 48 : 0, std::min<std::size_t>(at, 48));
          for (char& ch : before) {
            if (ch < 0x20 || ch > 0x7e) ch = '.';
          }
          std::size_t times = 0;
          for (auto p = at; p != std::string::npos; p = text.find(needle, p + 1)) ++times;
          hits.push_back(path + ": " + c.origin +
                         (needle == c.token ? " (whole token)" : " (random part)") + " x" +
                         std::to_string(times) + ", first after \"" + before + "\"");
        }
      }
    }
  };
  for (const auto& entry : fs::recursive_directory_iterator(data_)) {
    if (entry.is_regular_file()) search(entry.path().string(), "");
  }
  const std::size_t data_files = files;
  for (const Place& p : places_) search(p.path, p.allowed);
  {
    std::istringstream log(ReadFile(access_log_));
    for (std::string line; std::getline(log, line);) {
      ++log_lines;
      if (line.find("private_token=[FILTERED]") != std::string::npos) ++filtered;
    }
  }
  int requests = 0;
  std::ostringstream channels;
  for (const auto& [channel, n] : requests_) {
    requests += n;
    channels << "\n  " << channel << ": " << n;
  }
  std::ostringstream report;
  report << "secrets: " << canaries.size() << " canaries, " << requests
         << " requests over " << requests_.size() << " channels; searched " << files
         << " files (" << data_files << " under the data directory, " << places_.size()
         << " logs and tool outputs), " << bytes << " bytes, " << log_lines
         << " access-log lines (" << filtered << " with private_token=[FILTERED]): "
         << hits.size() << " hits";
  for (const auto& h : hits) report << "\n  HIT " << h;
  report << "\nrequests per channel:" << channels.str();
  BOOST_TEST_MESSAGE(report.str());

  BOOST_TEST(hits.empty(), hits.size() << " places hold a canary (see the HIT lines)");
  BOOST_TEST(data_files >= 3u);  // the ledger's files and the key were searched
  // Every request but the ones refused before their header was read is logged; each
  // canary went through private_token in a query at least 5 times.
  BOOST_TEST(log_lines >= static_cast<std::size_t>(requests) - 2 * canaries.size());
  BOOST_TEST(filtered >= 5 * canaries.size());
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger
