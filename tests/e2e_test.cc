// End-to-end specification of the HTTP API (issue 3, "End-to-end"): the real
// `patledger serve` binary, started as a child process on a free port in a fresh data
// directory, driven over HTTP/1.1 keep-alive by a small synchronous Boost.Beast client
// exactly as a GitLab API client would; then stopped with SIGTERM, restarted on the same
// directory, and checked state by state: nothing the first run acknowledged is lost or
// changed by the restart.
//
// No assertion depends on timing: every wait is a poll with a generous deadline that
// only bounds how long a broken server can hang the test.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/handler.h"
#include "tests/test_util.h"

extern char** environ;

namespace patledger::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

const std::string kBinary = std::string(PATLEDGER_TEST_BINARY_DIR) + "/tools/patledger";

// Bodies from REFERENCE.md §1, byte for byte.
constexpr std::string_view kUnauthorized = R"({"message":"401 Unauthorized"})";
constexpr std::string_view kRevokedBody =
    R"({"error":"invalid_token","error_description":"Token was revoked. You have to )"
    R"(re-authorize from the user."})";

// ---- the child process --------------------------------------------------------------

// A child process with its stdout and stderr collected by reader threads (as in
// server_test.cc, but forked with PR_SET_PDEATHSIG). Killed with SIGKILL if still
// running when destroyed, or when this process dies, so a failed REQUIRE or a crash
// never leaves a server behind.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec. If this test process dies without
      // running the destructor (a crash), the server dies with it.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      ::execve(argv[0], argv.data(), environ);
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    if (pid_ < 0) {
      ::close(out[0]);
      ::close(err[0]);
      throw std::runtime_error("cannot run " + args[0]);
    }
    out_reader_ = std::thread([this, fd = out[0]] { Drain(fd, &out_); });
    err_reader_ = std::thread([this, fd = err[0]] { Drain(fd, &err_); });
  }
  ~Child() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
    }
    if (out_reader_.joinable()) out_reader_.join();
    if (err_reader_.joinable()) err_reader_.join();
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  std::string out() const {
    std::lock_guard<std::mutex> lock(mu_);
    return out_;
  }
  std::string err() const {
    std::lock_guard<std::mutex> lock(mu_);
    return err_;
  }

  // Waits until stderr contains `text`; false after `timeout` or if the child exited.
  bool WaitForErr(std::string_view text, std::chrono::milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (SteadyClock::now() < deadline) {
      if (err().find(text) != std::string::npos) return true;
      if (Poll()) return err().find(text) != std::string::npos;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  // The exit code once the child exited; nullopt if it is still running after
  // `timeout` or was killed by a signal.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (!Poll() && SteadyClock::now() < deadline) std::this_thread::sleep_for(20ms);
    if (!exited_) return std::nullopt;
    if (out_reader_.joinable()) out_reader_.join();  // the pipes are at EOF now
    if (err_reader_.joinable()) err_reader_.join();
    if (!WIFEXITED(status_)) return std::nullopt;
    return WEXITSTATUS(status_);
  }

  void Signal(int sig) { ::kill(pid_, sig); }

 private:
  bool Poll() {
    if (exited_) return true;
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
    return exited_;
  }

  void Drain(int fd, std::string* into) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      std::lock_guard<std::mutex> lock(mu_);
      into->append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
  }

  pid_t pid_ = -1;
  int status_ = 0;
  bool exited_ = false;
  mutable std::mutex mu_;
  std::string out_, err_;
  std::thread out_reader_, err_reader_;
};

// ---- a synchronous keep-alive HTTP client -------------------------------------------

// One connection, reused for every request while the server keeps it alive (a new one
// is opened only after a response without keep-alive). Every read has a deadline, so
// a broken server fails the test instead of hanging it.
class HttpClient {
 public:
  explicit HttpClient(std::uint16_t port) : port_(port), socket_(ioc_) {}

  // Sends `req` (Host, and Content-Length for a body, are filled in) and reads the
  // response; nullopt on a connection error or timeout (error() says which).
  std::optional<Response> Do(Request req) {
    req.set(http::field::host, "127.0.0.1:" + std::to_string(port_));
    req.keep_alive(true);
    req.prepare_payload();
    try {
      if (!socket_.is_open()) {
        socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
        buffer_.clear();
        ++connections_;
      }
      http::write(socket_, req);
    } catch (const std::exception& e) {
      error_ = std::string("send failed: ") + e.what();
      Close();
      return std::nullopt;
    }
    auto res = Read(30s);
    if (!res || !res->keep_alive()) Close();
    return res;
  }

  std::optional<Response> Get(const std::string& target, std::string_view token = {}) {
    return Do(Make(http::verb::get, target, token));
  }
  std::optional<Response> Delete(const std::string& target, std::string_view token) {
    return Do(Make(http::verb::delete_, target, token));
  }
  std::optional<Response> Post(const std::string& target, std::string_view token) {
    return Do(Make(http::verb::post, target, token));
  }
  std::optional<Response> PostJson(const std::string& target, std::string_view token,
                                   const json::value& body) {
    Request req = Make(http::verb::post, target, token);
    req.set(http::field::content_type, "application/json");
    req.body() = json::serialize(body);
    return Do(std::move(req));
  }
  std::optional<Response> PostForm(const std::string& target, std::string_view token,
                                   std::string body) {
    Request req = Make(http::verb::post, target, token);
    req.set(http::field::content_type, "application/x-www-form-urlencoded");
    req.body() = std::move(body);
    return Do(std::move(req));
  }

  static Request Make(http::verb method, const std::string& target,
                      std::string_view token) {
    Request req(method, target, 11);
    if (!token.empty()) req.set("PRIVATE-TOKEN", token);
    return req;
  }

  const std::string& error() const { return error_; }
  int connections() const { return connections_; }

 private:
  std::optional<Response> Read(std::chrono::milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.body_limit(1 << 24);
    for (;;) {
      if (buffer_.size() > 0) {
        beast::error_code ec;
        const std::size_t n = parser.put(buffer_.data(), ec);
        buffer_.consume(n);
        if (ec && ec != http::error::need_more) {
          error_ = "bad response: " + ec.message();
          return std::nullopt;
        }
        if (parser.is_done()) return parser.release();
        if (!ec && n > 0) continue;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - SteadyClock::now());
      pollfd pfd{socket_.native_handle(), POLLIN, 0};
      if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
        error_ = "timed out waiting for a response";
        return std::nullopt;
      }
      beast::error_code ec;
      const std::size_t n = socket_.read_some(buffer_.prepare(64 * 1024), ec);
      if (ec) {
        error_ = "connection closed: " + ec.message();
        return std::nullopt;
      }
      buffer_.commit(n);
    }
  }

  void Close() {
    beast::error_code ignored;
    socket_.close(ignored);
    buffer_.clear();
  }

  std::uint16_t port_;
  asio::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::string error_;
  int connections_ = 0;
};

// The message for a REQUIRE on a response: its status (and body), or why there is none.
std::string Why(const std::optional<Response>& r, const HttpClient& c) {
  return r ? "status " + std::to_string(r->result_int()) + " " + r->body() : c.error();
}

// The body as JSON; null if it does not parse.
json::value Body(const Response& r) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body(), ec);
  return ec ? json::value() : v;
}

std::string Header(const Response& r, std::string_view name) {
  return std::string(r[name]);
}

// A non-negative integer field of an object; 0 if absent or of another kind.
std::uint64_t UIntField(const json::value& v, std::string_view key) {
  if (!v.is_object()) return 0;
  const json::value* f = v.as_object().if_contains(key);
  if (f && f->is_int64() && f->as_int64() >= 0)
    return static_cast<std::uint64_t>(f->as_int64());
  return f && f->is_uint64() ? f->as_uint64() : 0;
}

std::uint64_t IdOf(const json::value& v) { return UIntField(v, "id"); }

std::string StringField(const json::value& v, std::string_view key) {
  if (!v.is_object()) return {};
  const json::value* f = v.as_object().if_contains(key);
  return f && f->is_string() ? std::string(f->as_string()) : std::string();
}

// The ids of a JSON array of objects, in order.
std::vector<std::uint64_t> Ids(const json::value& v) {
  std::vector<std::uint64_t> ids;
  if (v.is_array()) {
    for (const auto& e : v.as_array()) ids.push_back(IdOf(e));
  }
  return ids;
}

// "YYYY-MM-DD", `days` from today (UTC).
std::string DateInDays(int days) {
  using namespace std::chrono;
  const year_month_day d{floor<std::chrono::days>(system_clock::now()) +
                         std::chrono::days{days}};
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u", static_cast<int>(d.year()),
                static_cast<unsigned>(d.month()), static_cast<unsigned>(d.day()));
  return buf;
}

// The target of the Link entry with rel=`rel` ("" if none), with the scheme and host
// (which must be `origin`) removed, so that it can be requested as it is.
std::string LinkTarget(const std::string& link, std::string_view rel,
                       const std::string& origin) {
  const std::string needle = "; rel=\"" + std::string(rel) + "\"";
  const auto at = link.find(needle);
  if (at == std::string::npos) return {};
  const auto open = link.rfind('<', at);
  if (open == std::string::npos || link[at - 1] != '>') return {};
  const std::string url = link.substr(open + 1, at - 1 - open - 1);
  if (!url.starts_with(origin)) return "(not under " + origin + ") " + url;
  return url.substr(origin.size());
}

// ---- the server under test ---------------------------------------------------------

// `patledger serve` on a free port of 127.0.0.1 over `data`, access log in `log`.
class ServeProcess {
 public:
  ServeProcess(const std::string& data, const std::string& log)
      : child_({kBinary, "serve", "--data", data, "--listen", "127.0.0.1:0", "--threads",
                "2", "--access-log", log}) {}

  // Waits for "listening on http://127.0.0.1:PORT" and then for /-/readiness to answer
  // 200. False (with the reason in the stderr) if either does not happen in time.
  bool WaitReady() {
    if (!child_.WaitForErr("listening on http://127.0.0.1:", 60s)) return false;
    const std::string err = child_.err();
    const std::string marker = "listening on http://127.0.0.1:";
    port_ = static_cast<std::uint16_t>(
        std::stoul(err.substr(err.find(marker) + marker.size())));
    const auto deadline = SteadyClock::now() + 60s;
    while (SteadyClock::now() < deadline) {
      HttpClient probe(port_);
      auto r = probe.Get("/-/readiness");
      if (r && r->result_int() == 200) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  std::uint16_t port() const { return port_; }
  Child& child() { return child_; }

 private:
  Child child_;
  std::uint16_t port_ = 0;
};

// ---- the scenario ------------------------------------------------------------------

constexpr std::string_view kApi = "/api/v4";

std::string Api(std::string_view path) { return std::string(kApi) + std::string(path); }
std::string Api(std::string_view path, std::uint64_t id, std::string_view rest = {}) {
  return std::string(kApi) + std::string(path) + std::to_string(id) + std::string(rest);
}

// Everything the first run created, and what the second must find.
struct World {
  std::string root;
  std::uint64_t alice = 0, bob = 0, carol = 0;
  // alice's tokens by role: id and secret.
  struct Token {
    std::uint64_t id = 0;
    std::string secret;
  };
  Token ci, deploy, query, rotated_old, rotated_new, family_old, family_new, bob_token,
      carol_token;
  std::vector<Token> bulk;
  std::string all_tokens_json;  // GET /personal_access_tokens?per_page=100, as root
  std::string users_json;       // GET /users, as root
};

// Creates a user as root; its id (0 on failure, with the check failed).
std::uint64_t CreateUser(HttpClient& c, const std::string& root, const std::string& name,
                         bool form) {
  const std::string email = name + "@example.com";
  auto r =
      form ? c.PostForm(Api("/users"), root,
                        "username=" + name + "&name=" + name + "+Example&email=" + name +
                            "%40example.com&password=ignored-by-design")
           : c.PostJson(Api("/users"), root,
                        json::object{{"username", name},
                                     {"name", name + " Example"},
                                     {"email", email},
                                     {"skip_confirmation", true}});
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  BOOST_TEST(r->result_int() == 201u, r->body());
  const json::value v = Body(*r);
  BOOST_TEST(StringField(v, "username") == name);
  BOOST_TEST(StringField(v, "name") == name + " Example");
  BOOST_TEST(StringField(v, "email") == email);
  BOOST_TEST(StringField(v, "state") == "active");
  return IdOf(v);
}

// Checks a 201 create-token response and returns the token.
World::Token CreatedToken(const std::optional<Response>& r, const HttpClient& c,
                          std::uint64_t user, const std::string& name,
                          const std::vector<std::string>& scopes) {
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  BOOST_TEST_REQUIRE(r->result_int() == 201u, r->body());
  const json::value v = Body(*r);
  BOOST_TEST_REQUIRE(v.is_object(), r->body());
  const json::object& o = v.as_object();
  BOOST_TEST(StringField(v, "name") == name);
  BOOST_TEST(UIntField(v, "user_id") == user);
  std::vector<std::string> got;
  if (const auto* s = o.if_contains("scopes"); s && s->is_array()) {
    for (const auto& e : s->as_array())
      got.emplace_back(e.is_string() ? e.as_string() : "?");
  }
  BOOST_TEST(got == scopes, boost::test_tools::per_element());
  BOOST_TEST((o.contains("revoked") && o.at("revoked") == json::value(false)));
  BOOST_TEST((o.contains("active") && o.at("active") == json::value(true)));
  World::Token t{IdOf(v), StringField(v, "token")};
  BOOST_TEST(t.secret.starts_with("glpat-"));
  BOOST_TEST(t.secret.size() == 42u);
  return t;
}

// Expects `token` to be refused on GET /user with 401 and `body`.
void ExpectRefused(HttpClient& c, const std::string& token, std::string_view body,
                   const std::string& what) {
  BOOST_TEST_CONTEXT(what) {
    auto r = c.Get(Api("/user"), token);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 401u);
    BOOST_TEST(r->body() == body);
    if (body == kRevokedBody) {
      BOOST_TEST(Header(*r, "WWW-Authenticate").find("error=\"invalid_token\"") !=
                     std::string::npos,
                 Header(*r, "WWW-Authenticate"));
    }
    // Forward auth says the same.
    auto a = c.Get(Api("/auth"), token);
    BOOST_TEST_REQUIRE(a.has_value(), Why(a, c));
    BOOST_TEST(a->result_int() == 401u);
    BOOST_TEST(a->body() == body);
  }
}

// Expects `token` to be refused because its owner is blocked: GitLab's 403 on the API,
// a plain 401 from forward auth.
void ExpectBlocked(HttpClient& c, const std::string& token, const std::string& what) {
  BOOST_TEST_CONTEXT(what) {
    auto r = c.Get(Api("/user"), token);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 403u);
    BOOST_TEST(r->body() == R"({"message":"403 Forbidden - Your account has been blocked."})");
    auto a = c.Get(Api("/auth"), token);
    BOOST_TEST_REQUIRE(a.has_value(), Why(a, c));
    BOOST_TEST(a->result_int() == 401u);
    BOOST_TEST(a->body() == kUnauthorized);
  }
}

// Expects `token` to authenticate as `username`.
void ExpectAccepted(HttpClient& c, const std::string& token, const std::string& username,
                    const std::string& what) {
  BOOST_TEST_CONTEXT(what) {
    auto r = c.Get(Api("/user"), token);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 200u, r->body());
    BOOST_TEST(StringField(Body(*r), "username") == username, r->body());
    auto a = c.Get(Api("/auth"), token);
    BOOST_TEST_REQUIRE(a.has_value(), Why(a, c));
    BOOST_TEST(a->result_int() == 200u, a->body());
    BOOST_TEST(Header(*a, "X-Auth-Username") == username);
  }
}

std::string UserState(HttpClient& c, const std::string& root, std::uint64_t id) {
  auto r = c.Get(Api("/users/", id), root);
  if (!r || r->result_int() != 200) return "(" + Why(r, c) + ")";
  return StringField(Body(*r), "state");
}

// GET /personal_access_tokens/:id as root, as JSON (null if not 200).
json::value TokenAsRoot(HttpClient& c, const std::string& root, std::uint64_t id) {
  auto r = c.Get(Api("/personal_access_tokens/", id), root);
  if (!r || r->result_int() != 200) return json::value();
  return Body(*r);
}

bool Revoked(const json::value& token) {
  return token.is_object() && token.as_object().contains("revoked") &&
         token.as_object().at("revoked") == json::value(true);
}

// ---- phase 1: a fresh server -------------------------------------------------------

void CreateUsersAndTokens(HttpClient& c, World& w) {
  w.alice = CreateUser(c, w.root, "alice", /*form=*/false);
  w.bob = CreateUser(c, w.root, "bob", /*form=*/true);
  w.carol = CreateUser(c, w.root, "carol", /*form=*/false);
  BOOST_TEST_REQUIRE(w.alice != 0u);
  BOOST_TEST_REQUIRE(w.bob != 0u);
  BOOST_TEST_REQUIRE(w.carol != 0u);
  {  // a duplicate username is refused
    auto r =
        c.PostJson(Api("/users"), w.root,
                   json::object{{"username", "alice"}, {"name", "A"}, {"email", "a@x"}});
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 409u, r->body());
  }

  const std::string expires = DateInDays(30);
  const std::string tokens = "/users/";
  // JSON body, scopes as an array, with an expiry.
  w.ci = CreatedToken(c.PostJson(Api(tokens, w.alice, "/personal_access_tokens"), w.root,
                                 json::object{{"name", "ci"},
                                              {"description", "the CI pipeline"},
                                              {"scopes", json::array{"api"}},
                                              {"expires_at", expires}}),
                      c, w.alice, "ci", {"api"});
  BOOST_TEST(StringField(TokenAsRoot(c, w.root, w.ci.id), "expires_at") == expires);
  BOOST_TEST(StringField(TokenAsRoot(c, w.root, w.ci.id), "description") ==
             "the CI pipeline");
  // Form body, `scopes[]=a&scopes[]=b` as GitLab clients send it.
  w.deploy = CreatedToken(
      c.PostForm(
          Api(tokens, w.alice, "/personal_access_tokens"), w.root,
          "name=deploy+key&scopes%5B%5D=read_api&scopes[]=read_repository&expires_at=" +
              expires),
      c, w.alice, "deploy key", {"read_api", "read_repository"});
  // Parameters in the query string, no body, no expiry (the policy's maximum applies).
  w.query = CreatedToken(
      c.PostForm(Api(tokens, w.alice,
                     "/personal_access_tokens?name=from-query&scopes[]=read_user"),
                 w.root, ""),
      c, w.alice, "from-query", {"read_user"});
  BOOST_TEST(!StringField(TokenAsRoot(c, w.root, w.query.id), "expires_at").empty());
  // Form body, scopes as a comma list.
  w.rotated_old =
      CreatedToken(c.PostForm(Api(tokens, w.alice, "/personal_access_tokens"), w.root,
                              "name=rotate-me&scopes=read_api,read_user"),
                   c, w.alice, "rotate-me", {"read_user", "read_api"});
  w.family_old = CreatedToken(
      c.PostJson(Api(tokens, w.alice, "/personal_access_tokens"), w.root,
                 json::object{{"name", "family"}, {"scopes", json::array{"api"}}}),
      c, w.alice, "family", {"api"});  // rotating oneself needs api
  for (int i = 1; i <= 5; ++i) {
    const std::string name = "bulk-" + std::to_string(i);
    w.bulk.push_back(
        CreatedToken(c.PostForm(Api(tokens, w.alice, "/personal_access_tokens"), w.root,
                                "name=" + name + "&scopes[]=read_user"),
                     c, w.alice, name, {"read_user"}));
  }
  w.bob_token = CreatedToken(
      c.PostJson(Api(tokens, w.bob, "/personal_access_tokens"), w.root,
                 json::object{{"name", "bob"}, {"scopes", json::array{"api"}}}),
      c, w.bob, "bob", {"api"});
  w.carol_token = CreatedToken(
      c.PostJson(Api(tokens, w.carol, "/personal_access_tokens"), w.root,
                 json::object{{"name", "carol"}, {"scopes", json::array{"read_user"}}}),
      c, w.carol, "carol", {"read_user"});

  {  // validation: an unknown scope is a 400 naming the field, and creates nothing
    auto r =
        c.PostJson(Api(tokens, w.alice, "/personal_access_tokens"), w.root,
                   json::object{{"name", "bad"}, {"scopes", json::array{"root_of_all"}}});
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 400u, r->body());
    BOOST_TEST(r->body().find("scopes") != std::string::npos, r->body());
  }
  {  // a non-admin cannot create tokens for others
    auto r = c.PostJson(Api(tokens, w.bob, "/personal_access_tokens"), w.ci.secret,
                        json::object{{"name", "x"}, {"scopes", json::array{"api"}}});
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 403u, r->body());
  }
  ExpectAccepted(c, w.ci.secret, "alice", "alice's new ci token");
}

void ListFilterAndPaginate(HttpClient& c, const World& w, std::uint16_t port) {
  const std::string user = "user_id=" + std::to_string(w.alice);
  // All of alice's tokens, newest first (the default order), on one page.
  auto all = c.Get(Api("/personal_access_tokens?") + user + "&per_page=100", w.root);
  BOOST_TEST_REQUIRE(all.has_value(), Why(all, c));
  BOOST_TEST_REQUIRE(all->result_int() == 200u, all->body());
  const std::vector<std::uint64_t> ids = Ids(Body(*all));
  BOOST_TEST(ids.size() == 12u);
  BOOST_TEST(Header(*all, "X-Total") == "12");
  BOOST_TEST(std::is_sorted(ids.rbegin(), ids.rend()));            // id_desc
  BOOST_TEST(all->body().find("\"token\"") == std::string::npos);  // never a secret

  // Pagination, 5 per page, following the Link header's rel="next" as a client does.
  const std::string origin = "http://127.0.0.1:" + std::to_string(port);
  std::string target = Api("/personal_access_tokens?") + user + "&per_page=5";
  std::vector<std::uint64_t> paged;
  for (int page = 1; page <= 3; ++page) {
    BOOST_TEST_CONTEXT("page " << page << " at " << target) {
      auto r = c.Get(target, w.root);
      BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
      BOOST_TEST_REQUIRE(r->result_int() == 200u, r->body());
      const auto on_page = Ids(Body(*r));
      paged.insert(paged.end(), on_page.begin(), on_page.end());
      BOOST_TEST(on_page.size() == (page < 3 ? 5u : 2u));
      BOOST_TEST(Header(*r, "X-Total") == "12");
      BOOST_TEST(Header(*r, "X-Total-Pages") == "3");
      BOOST_TEST(Header(*r, "X-Page") == std::to_string(page));
      BOOST_TEST(Header(*r, "X-Per-Page") == "5");
      BOOST_TEST(Header(*r, "X-Next-Page") == (page < 3 ? std::to_string(page + 1) : ""));
      BOOST_TEST(Header(*r, "X-Prev-Page") == (page > 1 ? std::to_string(page - 1) : ""));
      const std::string link = Header(*r, "Link");
      const std::string first = LinkTarget(link, "first", origin);
      const std::string last = LinkTarget(link, "last", origin);
      BOOST_TEST(first.find("page=1&per_page=5") != std::string::npos, link);
      BOOST_TEST(last.find("page=3&per_page=5") != std::string::npos, link);
      BOOST_TEST(last.find(user) != std::string::npos, link);  // filters are kept
      BOOST_TEST(LinkTarget(link, "prev", origin).empty() == (page == 1), link);
      const std::string next = LinkTarget(link, "next", origin);
      BOOST_TEST(next.empty() == (page == 3), link);
      if (page < 3) {
        BOOST_TEST_REQUIRE(next.starts_with(Api("/personal_access_tokens?")), link);
        BOOST_TEST(next.find("page=" + std::to_string(page + 1) + "&per_page=5") !=
                       std::string::npos,
                   link);
        target = next;
      }
    }
  }
  BOOST_TEST(paged == ids, boost::test_tools::per_element());  // no gap, no repeat

  // A page past the end: empty, with the totals.
  auto beyond =
      c.Get(Api("/personal_access_tokens?") + user + "&per_page=5&page=4", w.root);
  BOOST_TEST_REQUIRE(beyond.has_value(), Why(beyond, c));
  BOOST_TEST(beyond->result_int() == 200u);
  BOOST_TEST(beyond->body() == "[]");
  BOOST_TEST(Header(*beyond, "X-Total") == "12");
  BOOST_TEST(Header(*beyond, "X-Next-Page") == "");

  // Filters.
  auto ids_of = [&](const std::string& query) {
    auto r =
        c.Get(Api("/personal_access_tokens?") + user + "&per_page=100&" + query, w.root);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 200u, query << ": " << r->body());
    const auto got = Ids(Body(*r));
    BOOST_TEST(Header(*r, "X-Total") == std::to_string(got.size()), query);
    return std::set<std::uint64_t>(got.begin(), got.end());
  };
  std::set<std::uint64_t> bulk;
  for (const auto& t : w.bulk) bulk.insert(t.id);
  BOOST_TEST((ids_of("search=BULK") == bulk));  // case-insensitive substring
  const std::set<std::uint64_t> revoked = {w.deploy.id, w.rotated_old.id, w.family_old.id,
                                           w.family_new.id};
  BOOST_TEST((ids_of("revoked=true") == revoked));
  BOOST_TEST((ids_of("state=inactive") == revoked));
  std::set<std::uint64_t> active(ids.begin(), ids.end());
  for (auto id : revoked) active.erase(id);
  BOOST_TEST((ids_of("state=active") == active));
  BOOST_TEST((ids_of("revoked=false&search=bulk") == bulk));
  const std::string soon = DateInDays(31);
  // Within 31 days: ci and deploy (30 days) and the family's successor (rotated without
  // expires_at: today + 7 days, as GitLab); the others have 60 days or the maximum.
  BOOST_TEST((ids_of("expires_before=" + soon) ==
              std::set<std::uint64_t>{w.ci.id, w.deploy.id, w.family_new.id}));
  BOOST_TEST((ids_of("expires_after=" + soon + "&expires_before=" + DateInDays(61)) ==
              std::set<std::uint64_t>{w.rotated_new.id}));
  BOOST_TEST(ids_of("created_after=2999-01-01T00:00:00Z").empty());
  BOOST_TEST(ids_of("created_before=2000-01-01T00:00:00Z").empty());

  // Sorting by name.
  auto sorted = c.Get(
      Api("/personal_access_tokens?") + user + "&search=bulk&sort=name_desc", w.root);
  BOOST_TEST_REQUIRE(sorted.has_value(), Why(sorted, c));
  std::vector<std::uint64_t> want;
  for (auto it = w.bulk.rbegin(); it != w.bulk.rend(); ++it) want.push_back(it->id);
  BOOST_TEST(Ids(Body(*sorted)) == want, boost::test_tools::per_element());

  // A non-admin sees only its own tokens, whatever user_id it asks for.
  auto own = c.Get(Api("/personal_access_tokens?per_page=100"), w.ci.secret);
  BOOST_TEST_REQUIRE(own.has_value(), Why(own, c));
  BOOST_TEST(own->result_int() == 200u);
  BOOST_TEST(Ids(Body(*own)) == ids, boost::test_tools::per_element());
  auto other =
      c.Get(Api("/personal_access_tokens?user_id=") + std::to_string(w.bob), w.ci.secret);
  BOOST_TEST_REQUIRE(other.has_value(), Why(other, c));
  BOOST_TEST(other->result_int() == 401u);

  // A bad filter is a 400 naming it.
  auto bad = c.Get(Api("/personal_access_tokens?state=sleepy"), w.root);
  BOOST_TEST_REQUIRE(bad.has_value(), Why(bad, c));
  BOOST_TEST(bad->result_int() == 400u);
  BOOST_TEST(bad->body().find("state") != std::string::npos, bad->body());
}

void SelfRotateRevoke(HttpClient& c, World& w) {
  {  // GET /personal_access_tokens/self: the presented token, without its secret
    auto r = c.Get(Api("/personal_access_tokens/self"), w.deploy.secret);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 200u, r->body());
    const json::value v = Body(*r);
    BOOST_TEST(IdOf(v) == w.deploy.id);
    BOOST_TEST(StringField(v, "name") == "deploy key");
    BOOST_TEST(r->body().find("\"token\"") == std::string::npos);
    BOOST_TEST(r->body().find(w.deploy.secret) == std::string::npos);
  }
  {  // rotate (admin, by id, JSON body with a new expiry): old 401 revoked, new 200
    const std::string expires = DateInDays(60);
    auto r = c.PostJson(Api("/personal_access_tokens/", w.rotated_old.id, "/rotate"),
                        w.root, json::object{{"expires_at", expires}});
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST_REQUIRE(r->result_int() == 200u, r->body());
    const json::value v = Body(*r);
    w.rotated_new = {IdOf(v), StringField(v, "token")};
    BOOST_TEST(w.rotated_new.id > w.rotated_old.id);
    BOOST_TEST(UIntField(v, "rotated_from") == w.rotated_old.id);
    BOOST_TEST(w.rotated_new.secret != w.rotated_old.secret);
    BOOST_TEST(StringField(v, "name") == "rotate-me");
    BOOST_TEST(StringField(v, "expires_at") == expires);
    ExpectRefused(c, w.rotated_old.secret, kRevokedBody, "the token rotated away");
    ExpectAccepted(c, w.rotated_new.secret, "alice", "its successor");
    BOOST_TEST(Revoked(TokenAsRoot(c, w.root, w.rotated_old.id)));
  }
  {  // rotate /self with the token itself (form, no body fields)
    const std::string week = DateInDays(7);  // GitLab's rotate default; read on both
    auto r =
        c.PostForm(Api("/personal_access_tokens/self/rotate"), w.family_old.secret, "");
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST_REQUIRE(r->result_int() == 200u, r->body());
    const json::value v = Body(*r);
    w.family_new = {IdOf(v), StringField(v, "token")};
    const std::string expires = StringField(v, "expires_at");  // sides of a midnight
    BOOST_TEST((expires == week || expires == DateInDays(7)), expires);
    ExpectAccepted(c, w.family_new.secret, "alice", "the family's successor");
    // Reuse detection: rotating the already revoked predecessor again answers 401 and
    // revokes the whole family, the successor included.
    auto again =
        c.Post(Api("/personal_access_tokens/", w.family_old.id, "/rotate"), w.root);
    BOOST_TEST_REQUIRE(again.has_value(), Why(again, c));
    BOOST_TEST(again->result_int() == 401u, again->body());
    ExpectRefused(c, w.family_new.secret, kRevokedBody,
                  "the family's successor after reuse");
    ExpectRefused(c, w.family_old.secret, kRevokedBody, "the family's predecessor");
  }
  {  // revoke (DELETE by id): 204 without a body, then 401 with the revoked body
    auto r = c.Delete(Api("/personal_access_tokens/", w.deploy.id), w.root);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 204u, r->body());
    BOOST_TEST(r->body().empty());
    ExpectRefused(c, w.deploy.secret, kRevokedBody, "the revoked deploy token");
    const json::value v = TokenAsRoot(c, w.root, w.deploy.id);
    BOOST_TEST(Revoked(v), json::serialize(v));
    BOOST_TEST(v.is_object());
    BOOST_TEST((v.is_object() && v.as_object().contains("active") &&
                v.as_object().at("active") == json::value(false)));
    // Revoking it again is a 400 and changes nothing; the others are untouched.
    auto again = c.Delete(Api("/personal_access_tokens/", w.deploy.id), w.root);
    BOOST_TEST_REQUIRE(again.has_value(), Why(again, c));
    BOOST_TEST(again->result_int() == 400u, again->body());
    BOOST_TEST(TokenAsRoot(c, w.root, w.deploy.id) == v);
    ExpectAccepted(c, w.ci.secret, "alice", "ci after deploy's revocation");
  }
}

void BlockAndUnblock(HttpClient& c, World& w) {
  ExpectAccepted(c, w.bob_token.secret, "bob", "bob before the block");
  auto block = c.Post(Api("/users/", w.bob, "/block"), w.root);
  BOOST_TEST_REQUIRE(block.has_value(), Why(block, c));
  BOOST_TEST(block->result_int() == 201u, block->body());
  BOOST_TEST(UserState(c, w.root, w.bob) == "blocked");
  ExpectBlocked(c, w.bob_token.secret, "bob while blocked");
  auto unblock = c.Post(Api("/users/", w.bob, "/unblock"), w.root);
  BOOST_TEST_REQUIRE(unblock.has_value(), Why(unblock, c));
  BOOST_TEST(unblock->result_int() == 201u, unblock->body());
  BOOST_TEST(UserState(c, w.root, w.bob) == "active");
  ExpectAccepted(c, w.bob_token.secret, "bob", "bob after the unblock");

  // carol stays blocked (across the restart).
  auto carol = c.Post(Api("/users/", w.carol, "/block"), w.root);
  BOOST_TEST_REQUIRE(carol.has_value(), Why(carol, c));
  BOOST_TEST(carol->result_int() == 201u, carol->body());
  ExpectBlocked(c, w.carol_token.secret, "carol while blocked");
  // A non-admin cannot block anyone.
  auto not_admin = c.Post(Api("/users/", w.bob, "/block"), w.ci.secret);
  BOOST_TEST_REQUIRE(not_admin.has_value(), Why(not_admin, c));
  BOOST_TEST(not_admin->result_int() == 403u, not_admin->body());
  BOOST_TEST(UserState(c, w.root, w.bob) == "active");
}

void ForwardAuth(HttpClient& c, const World& w) {
  auto auth = [&](const std::string& target,
                  std::vector<std::pair<std::string, std::string>> headers) {
    Request req = HttpClient::Make(http::verb::get, target, {});
    for (const auto& [k, v] : headers) req.set(k, v);
    return c.Do(std::move(req));
  };
  {  // ?scope= satisfied: 200 with the identity headers, no body
    auto r = c.Get(Api("/auth?scope=api"), w.ci.secret);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 200u, r->body());
    BOOST_TEST(Header(*r, "X-Auth-User-Id") == std::to_string(w.alice));
    BOOST_TEST(Header(*r, "X-Auth-Username") == "alice");
    BOOST_TEST(Header(*r, "X-Auth-Token-Id") == std::to_string(w.ci.id));
    // The effective scopes, implications included (a gateway can test any of them).
    const std::string scopes = "," + Header(*r, "X-Auth-Scopes") + ",";
    BOOST_TEST(scopes.find(",api,") != std::string::npos, scopes);
    BOOST_TEST(scopes.find(",read_api,") != std::string::npos, scopes);
    BOOST_TEST(scopes.find(",sudo,") == std::string::npos, scopes);
  }
  {  // an implied scope: api covers read_repository
    auto r = c.Get(Api("/auth?scope=read_repository"), w.ci.secret);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 200u, r->body());
  }
  {  // ?scope= not satisfied: 403 insufficient_scope naming the scope
    auto r = c.Get(Api("/auth?scope=api"), w.rotated_new.secret);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 403u, r->body());
    const json::value v = Body(*r);
    BOOST_TEST(StringField(v, "error") == "insufficient_scope", r->body());
    BOOST_TEST(StringField(v, "scope") == "api", r->body());
    BOOST_TEST(Header(*r, "WWW-Authenticate").find("insufficient_scope") !=
               std::string::npos);
  }
  {  // the scope as a header, as a gateway sends it
    auto ok =
        auth(Api("/auth"), {{"PRIVATE-TOKEN", w.ci.secret}, {"X-Required-Scope", "api"}});
    BOOST_TEST_REQUIRE(ok.has_value(), Why(ok, c));
    BOOST_TEST(ok->result_int() == 200u);
    auto no = auth(Api("/auth"),
                   {{"PRIVATE-TOKEN", w.query.secret}, {"X-Required-Scope", "read_api"}});
    BOOST_TEST_REQUIRE(no.has_value(), Why(no, c));
    BOOST_TEST(no->result_int() == 403u);
  }
  {  // every channel: Bearer, Basic, private_token, and nginx's X-Original-URI
    auto bearer = auth(Api("/auth"), {{"Authorization", "Bearer " + w.ci.secret}});
    BOOST_TEST_REQUIRE(bearer.has_value(), Why(bearer, c));
    BOOST_TEST(bearer->result_int() == 200u);
    const std::string user_pass = "whoever:" + w.ci.secret;
    std::string basic(beast::detail::base64::encoded_size(user_pass.size()), '\0');
    basic.resize(
        beast::detail::base64::encode(basic.data(), user_pass.data(), user_pass.size()));
    auto b = auth(Api("/auth"), {{"Authorization", "Basic " + basic}});
    BOOST_TEST_REQUIRE(b.has_value(), Why(b, c));
    BOOST_TEST(b->result_int() == 200u);
    auto param = c.Get(Api("/auth?scope=api&private_token=") + w.ci.secret);
    BOOST_TEST_REQUIRE(param.has_value(), Why(param, c));
    BOOST_TEST(param->result_int() == 200u);
    auto original = auth(
        Api("/auth"), {{"X-Original-URI", "/app/page?x=1&private_token=" + w.ci.secret}});
    BOOST_TEST_REQUIRE(original.has_value(), Why(original, c));
    BOOST_TEST(original->result_int() == 200u);
    BOOST_TEST(Header(*original, "X-Auth-Username") == "alice");
  }
  {  // no token, an unknown well-formed one, a malformed one: 401
    for (const std::string& token :
         {std::string(), "glpat-" + std::string(36, 'A'), std::string("not-a-token")}) {
      auto r = c.Get(Api("/auth"), token);
      BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
      BOOST_TEST(r->result_int() == 401u, token.size());
      BOOST_TEST(r->body() == kUnauthorized);
    }
  }
  {  // an unknown scope is the caller's mistake: 400
    auto r = c.Get(Api("/auth?scope=everything"), w.ci.secret);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 400u, r->body());
  }
}

// Snapshots of what must survive the restart.
void Snapshot(HttpClient& c, World& w) {
  auto tokens = c.Get(Api("/personal_access_tokens?per_page=100"), w.root);
  BOOST_TEST_REQUIRE(tokens.has_value(), Why(tokens, c));
  BOOST_TEST_REQUIRE(tokens->result_int() == 200u);
  // root's token + alice's 12 + bob's + carol's: all on this one page.
  BOOST_TEST(Header(*tokens, "X-Total") == "15");
  BOOST_TEST(Ids(Body(*tokens)).size() == 15u);
  w.all_tokens_json = tokens->body();
  auto users = c.Get(Api("/users"), w.root);
  BOOST_TEST_REQUIRE(users.has_value(), Why(users, c));
  BOOST_TEST_REQUIRE(users->result_int() == 200u);
  w.users_json = users->body();
}

// ---- phase 2: the same directory, a new process ------------------------------------

void EveryStateSurvived(HttpClient& c, const World& w) {
  ExpectAccepted(c, w.root, "root", "the root token");
  auto tokens = c.Get(Api("/personal_access_tokens?per_page=100"), w.root);
  BOOST_TEST_REQUIRE(tokens.has_value(), Why(tokens, c));
  BOOST_TEST(tokens->result_int() == 200u);
  BOOST_TEST(tokens->body() == w.all_tokens_json);  // every field of every token
  auto users = c.Get(Api("/users"), w.root);
  BOOST_TEST_REQUIRE(users.has_value(), Why(users, c));
  BOOST_TEST(users->body() == w.users_json);

  ExpectRefused(c, w.deploy.secret, kRevokedBody, "revoked stays revoked");
  ExpectRefused(c, w.rotated_old.secret, kRevokedBody, "rotated-away stays revoked");
  ExpectAccepted(c, w.rotated_new.secret, "alice", "the rotation's successor");
  ExpectRefused(c, w.family_old.secret, kRevokedBody, "the reused family's predecessor");
  ExpectRefused(c, w.family_new.secret, kRevokedBody, "the reused family's successor");
  ExpectAccepted(c, w.ci.secret, "alice", "ci");
  ExpectAccepted(c, w.query.secret, "alice", "from-query");
  for (const auto& t : w.bulk)
    ExpectAccepted(c, t.secret, "alice", "bulk " + std::to_string(t.id));
  ExpectAccepted(c, w.bob_token.secret, "bob", "bob, unblocked before the restart");
  ExpectBlocked(c, w.carol_token.secret, "carol, blocked before the restart");
  BOOST_TEST(UserState(c, w.root, w.bob) == "active");
  BOOST_TEST(UserState(c, w.root, w.carol) == "blocked");
  {  // scopes survive too
    auto r = c.Get(Api("/auth?scope=api"), w.rotated_new.secret);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
    BOOST_TEST(r->result_int() == 403u);
  }

  // The restarted server writes: ids continue after the last one, nothing is reused.
  auto r = c.PostJson(Api("/users/", w.carol, "/unblock"), w.root, json::object{});
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  BOOST_TEST(r->result_int() == 201u, r->body());
  ExpectAccepted(c, w.carol_token.secret, "carol", "carol unblocked after the restart");
  auto created = CreatedToken(
      c.PostJson(
          Api("/users/", w.alice, "/personal_access_tokens"), w.root,
          json::object{{"name", "after-restart"}, {"scopes", json::array{"read_user"}}}),
      c, w.alice, "after-restart", {"read_user"});
  const std::vector<std::uint64_t> before = Ids(json::parse(w.all_tokens_json));
  BOOST_TEST(created.id > before.front(), created.id << " after " << before.front());
  ExpectAccepted(c, created.secret, "alice", "a token created after the restart");
}

// Stops the server with SIGTERM and checks that it exited with status 0.
void StopCleanly(ServeProcess& server, const std::string& what) {
  const auto t0 = SteadyClock::now();
  server.child().Signal(SIGTERM);
  const auto code = server.child().Wait(60s);
  // For the log only (no assertion on timing): a stop that waits for shutdown_grace
  // shows here.
  BOOST_TEST_MESSAGE(what << ": SIGTERM to exit took "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(
                                 SteadyClock::now() - t0)
                                 .count()
                          << " ms");
  BOOST_TEST_REQUIRE(code.has_value(),
                     what << ": still running, or killed by a signal; stderr:\n"
                          << server.child().err());
  BOOST_TEST(*code == 0, what << " exited " << *code << "; stderr:\n"
                              << server.child().err());
  BOOST_TEST(server.child().err().find("patledger: stopped") != std::string::npos,
             server.child().err());
}

BOOST_AUTO_TEST_SUITE(e2e)

BOOST_AUTO_TEST_CASE(the_api_over_http_and_every_state_survives_a_restart) {
  TempDir dir;
  const std::string data = dir.Sub("data");
  const std::string log = dir.Sub("access.log");
  World w;

  BOOST_TEST_MESSAGE("first run: a fresh ledger");
  {
    ServeProcess server(data, log);
    BOOST_TEST_REQUIRE(server.WaitReady(), "not ready; stderr:\n"
                                               << server.child().err());
    const std::string out = server.child().out();  // printed before "listening"
    w.root = out.substr(0, out.find('\n'));
    BOOST_TEST_REQUIRE(out == w.root + "\n", "stdout is not the root token alone");
    BOOST_TEST_REQUIRE(w.root.starts_with("glpat-"));

    HttpClient c(server.port());
    BOOST_TEST_CONTEXT("create users and tokens") { CreateUsersAndTokens(c, w); }
    BOOST_TEST_CONTEXT("self, rotate, revoke") { SelfRotateRevoke(c, w); }
    BOOST_TEST_CONTEXT("list, filter, paginate") {
      ListFilterAndPaginate(c, w, server.port());
    }
    BOOST_TEST_CONTEXT("block and unblock") { BlockAndUnblock(c, w); }
    BOOST_TEST_CONTEXT("forward auth") { ForwardAuth(c, w); }
    BOOST_TEST_CONTEXT("snapshot") { Snapshot(c, w); }
    // Keep-alive: the whole run used one connection.
    BOOST_TEST(c.connections() == 1);
    StopCleanly(server, "first run");
  }

  BOOST_TEST_MESSAGE("second run: the same directory");
  {
    ServeProcess server(data, log);
    BOOST_TEST_REQUIRE(server.WaitReady(), "not ready; stderr:\n"
                                               << server.child().err());
    BOOST_TEST(server.child().out().empty(),
               "a token was printed again (" << server.child().out().size() << " bytes)");
    BOOST_TEST(server.child().err().find("Initialised") == std::string::npos);
    BOOST_TEST(server.child().err().find("replayed ") != std::string::npos,
               server.child().err());
    HttpClient c(server.port());
    BOOST_TEST_CONTEXT("after the restart") { EveryStateSurvived(c, w); }
    StopCleanly(server, "second run");
  }

  // No secret ever reached the access log.
  std::ifstream log_file(log);
  std::stringstream access;
  access << log_file.rdbuf();
  BOOST_TEST(access.str().find(" POST /api/v4/users ") != std::string::npos);
  std::vector<std::string> secrets = {w.root,
                                      w.ci.secret,
                                      w.deploy.secret,
                                      w.query.secret,
                                      w.rotated_old.secret,
                                      w.rotated_new.secret,
                                      w.family_old.secret,
                                      w.family_new.secret,
                                      w.bob_token.secret,
                                      w.carol_token.secret};
  for (const auto& t : w.bulk) secrets.push_back(t.secret);
  for (const auto& s : secrets) {
    BOOST_TEST((s.empty() || access.str().find(s) == std::string::npos),
               "a token is in the access log");
  }
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::api
