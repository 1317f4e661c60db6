// Specification of the HTTP transport (api/server.h): a real Server on a free port,
// over a real TokenService, driven by a small blocking Beast client; then the real
// `patledger serve` binary, started, stopped with SIGTERM and restarted.

#include "api/server.h"

#include <fcntl.h>
#include <poll.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/handler.h"
#include "service/token_service.h"
#include "tests/test_util.h"

extern char** environ;

namespace patledger::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// ---- a blocking HTTP client with timeouts -------------------------------------------

class Client {
 public:
  explicit Client(std::uint16_t port) : socket_(ioc_) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }

  void Send(std::string_view raw) { asio::write(socket_, asio::buffer(raw)); }
  void Send(const Request& req) { http::write(socket_, req); }

  // One response, or nullopt if the connection closed or `timeout` passed first
  // (error() says which).
  std::optional<Response> Read(std::chrono::milliseconds timeout = 10s) {
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
      if (!Fill(deadline)) return std::nullopt;
    }
  }

  // Sends a GET and reads its response.
  std::optional<Response> Get(std::string target, std::string_view token = {}) {
    Request req(http::verb::get, target, 11);
    req.set(http::field::host, "localhost");
    if (!token.empty()) req.set("PRIVATE-TOKEN", token);
    Send(req);
    return Read();
  }

  // True if the server closes the connection within `timeout` (any data it sends
  // first is discarded); false if it is still open then.
  bool ClosedWithin(std::chrono::milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (Fill(deadline)) buffer_.clear();
    return closed_;
  }

  const std::string& error() const { return error_; }

 private:
  bool Fill(SteadyClock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    pollfd pfd{socket_.native_handle(), POLLIN, 0};
    if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
      error_ = "timed out";
      return false;
    }
    beast::error_code ec;
    const std::size_t n = socket_.read_some(buffer_.prepare(64 * 1024), ec);
    if (ec) {
      error_ = "closed: " + ec.message();
      closed_ = true;
      return false;
    }
    buffer_.commit(n);
    return true;
  }

  asio::io_context ioc_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::string error_;
  bool closed_ = false;
};

std::string Why(const std::optional<Response>& r, const Client& c) {
  return r ? "status " + std::to_string(r->result_int()) : c.error();
}

// ---- a server over a real service ----------------------------------------------------

class ServerFixture {
 public:
  // env: the ledger's RocksDB environment (nullptr: the default); it must outlive us.
  explicit ServerFixture(rocksdb::Env* env = nullptr) {
    service::ServiceOptions o;
    o.data_dir = dir_.Sub("data");
    o.env = env;
    auto init = service::TokenService::Init(o);
    BOOST_TEST_REQUIRE(init.has_value(), Why(init));
    root_token_ = init->root_token.secret;
    root_user_id_ = init->root_user_id;
    root_token_id_ = init->root_token.info.meta.id;
    auto opened = service::TokenService::Open(o);
    BOOST_TEST_REQUIRE(opened.has_value(), Why(opened));
    service_ = std::move(*opened);
  }
  ~ServerFixture() { StopServer(); }

  // Starts a server on a free port, on two threads unless o.threads says otherwise,
  // logging to log_.
  void StartServer(ServerOptions o = {}, bool ready = true) {
    if (ready) handler_.SetService(service_.get());
    o.port = 0;
    if (o.threads == 0) o.threads = 2;
    o.access_log = &log_;
    server_ = std::make_unique<Server>(o, handler_);
    Status s = server_->Start();
    BOOST_TEST_REQUIRE(s.ok(), s.ToString());
    BOOST_TEST_REQUIRE(server_->port() != 0);
    runner_ = std::thread([this] { server_->Run(); });
  }

  // Stops the server and waits for Run to return; log_ may be read afterwards.
  void StopServer() {
    if (!server_) return;
    server_->Stop();
    if (runner_.joinable()) runner_.join();
  }

  std::uint16_t port() const { return server_->port(); }

  TempDir dir_;
  std::string root_token_;
  std::uint64_t root_user_id_ = 0;
  std::uint64_t root_token_id_ = 0;
  std::unique_ptr<service::TokenService> service_;
  Handler handler_;
  std::ostringstream log_;  // written by the server's threads; read after StopServer
  std::unique_ptr<Server> server_;
  std::thread runner_;
};

std::string RawRequest(std::string_view method, std::string_view target,
                       std::string_view extra_headers = {}) {
  std::string r;
  r.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: localhost\r\n");
  r.append(extra_headers);
  r.append("\r\n");
  return r;
}

BOOST_FIXTURE_TEST_SUITE(server, ServerFixture)

BOOST_AUTO_TEST_CASE(liveness_answers_200_with_our_server_header) {
  StartServer();
  Client c(port());
  auto r = c.Get("/-/liveness");
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  BOOST_TEST(r->result_int() == 200u);
  BOOST_TEST((*r)[http::field::server] == "patledger");
  BOOST_TEST(r->has_content_length());
  BOOST_TEST(!(*r)[http::field::date].empty());
  BOOST_TEST(r->keep_alive());
}

BOOST_AUTO_TEST_CASE(readiness_is_503_until_the_service_is_set_then_200) {
  StartServer({}, /*ready=*/false);
  Client c(port());
  auto before = c.Get("/-/readiness");
  BOOST_TEST_REQUIRE(before.has_value(), Why(before, c));
  BOOST_TEST(before->result_int() == 503u);
  auto live = c.Get("/-/liveness");
  BOOST_TEST_REQUIRE(live.has_value(), Why(live, c));
  BOOST_TEST(live->result_int() == 200u);

  handler_.SetService(service_.get());
  auto after = c.Get("/-/readiness");
  BOOST_TEST_REQUIRE(after.has_value(), Why(after, c));
  BOOST_TEST(after->result_int() == 200u);
}

BOOST_AUTO_TEST_CASE(keep_alive_serves_100_requests_on_one_connection) {
  StartServer();
  Client c(port());
  for (int i = 0; i < 100; ++i) {
    auto r = c.Get("/api/v4/user", root_token_);
    BOOST_TEST_REQUIRE(r.has_value(), "request " << i << ": " << Why(r, c));
    BOOST_TEST_REQUIRE(r->result_int() == 200u);
    BOOST_TEST_REQUIRE(r->body().find("\"root\"") != std::string::npos);
  }
  BOOST_TEST(server_->connections() == 1u);
}

BOOST_AUTO_TEST_CASE(pipelined_requests_are_answered_in_order) {
  StartServer();
  Client c(port());
  std::string batch;
  for (int i = 0; i < 10; ++i) {
    batch += RawRequest("GET", i % 2 ? "/-/liveness" : "/no/such/route");
  }
  c.Send(batch);
  for (int i = 0; i < 10; ++i) {
    auto r = c.Read();
    BOOST_TEST_REQUIRE(r.has_value(), "response " << i << ": " << Why(r, c));
    BOOST_TEST(r->result_int() == (i % 2 ? 200u : 404u));
  }
}

BOOST_AUTO_TEST_CASE(a_body_over_64_KiB_gets_413_and_the_connection_is_closed) {
  StartServer();
  Client c(port());
  const std::string body(65 * 1024, 'x');
  c.Send(RawRequest("POST", "/api/v4/users",
                    "Content-Type: application/json\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n") +
         body);
  auto r = c.Read();
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  BOOST_TEST(r->result_int() == 413u);
  BOOST_TEST(r->body() == R"({"message":"413 Payload Too Large"})");
  BOOST_TEST(!r->keep_alive());
  BOOST_TEST(c.ClosedWithin(5s));
}

BOOST_AUTO_TEST_CASE(a_chunked_body_over_the_limit_gets_413_too) {
  StartServer();
  Client c(port());
  std::string chunks;
  const std::string chunk(8 * 1024, 'x');
  for (int i = 0; i < 9; ++i) chunks += "2000\r\n" + chunk + "\r\n";
  chunks += "0\r\n\r\n";
  c.Send(RawRequest("POST", "/api/v4/users", "Transfer-Encoding: chunked\r\n") + chunks);
  auto r = c.Read();
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  BOOST_TEST(r->result_int() == 413u);
  BOOST_TEST(c.ClosedWithin(5s));
}

BOOST_AUTO_TEST_CASE(headers_over_16_KiB_get_431_and_the_connection_is_closed) {
  StartServer();
  Client c(port());
  c.Send(RawRequest("GET", "/-/liveness", "X-Filler: " + std::string(17 * 1024, 'a') + "\r\n"));
  auto r = c.Read();
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  BOOST_TEST(r->result_int() == 431u);
  BOOST_TEST(r->body() == R"({"message":"431 Request Header Fields Too Large"})");
  BOOST_TEST(c.ClosedWithin(5s));
}

BOOST_AUTO_TEST_CASE(a_malformed_request_line_gets_400_and_the_connection_is_closed) {
  StartServer();
  Client c(port());
  c.Send("NOT A REQUEST\r\n\r\n");
  auto r = c.Read();
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  BOOST_TEST(r->result_int() == 400u);
  BOOST_TEST(r->body() == R"({"message":"400 Bad Request"})");
  BOOST_TEST(c.ClosedWithin(5s));
}

BOOST_AUTO_TEST_CASE(expect_100_continue_is_answered_before_the_body) {
  StartServer();
  Client c(port());
  const std::string body =
      R"({"username":"alice","name":"Alice","email":"alice@example.com"})";
  c.Send(RawRequest("POST", "/api/v4/users",
                    "PRIVATE-TOKEN: " + root_token_ +
                        "\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
                        "Content-Length: " +
                        std::to_string(body.size()) + "\r\n"));
  auto interim = c.Read();
  BOOST_TEST_REQUIRE(interim.has_value(), Why(interim, c));
  BOOST_TEST(interim->result_int() == 100u);
  c.Send(body);
  auto r = c.Read();
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  BOOST_TEST(r->result_int() == 201u, r->body());
  BOOST_TEST(r->body().find("\"alice\"") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(an_idle_keep_alive_connection_is_closed_after_idle_timeout) {
  ServerOptions o;
  o.idle_timeout = 1s;
  StartServer(o);
  Client c(port());
  auto r = c.Get("/-/liveness");
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  const auto t0 = SteadyClock::now();
  BOOST_TEST(c.ClosedWithin(5s));
  BOOST_TEST((SteadyClock::now() - t0 >= 900ms));  // by the timeout, not at once
}

BOOST_AUTO_TEST_CASE(a_request_trickling_in_is_closed_after_read_timeout) {
  ServerOptions o;
  o.read_timeout = 1s;
  StartServer(o);
  Client c(port());
  c.Send("GET /-/liveness HTTP/1.1\r\nHost: loc");  // and never the rest (slowloris)
  BOOST_TEST(c.ClosedWithin(5s));
}

BOOST_AUTO_TEST_CASE(connections_beyond_max_connections_are_closed_at_accept) {
  ServerOptions o;
  o.max_connections = 4;
  StartServer(o);
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<Client>(port()));
    auto r = clients.back()->Get("/-/liveness");  // so the server has accepted it
    BOOST_TEST_REQUIRE(r.has_value(), "client " << i << ": " << Why(r, *clients.back()));
  }
  Client fifth(port());  // the kernel completes the handshake; the server closes it
  BOOST_TEST(fifth.ClosedWithin(5s));

  // A slot frees when a connection closes.
  clients.pop_back();
  bool served = false;
  for (int attempt = 0; attempt < 50 && !served; ++attempt) {
    try {
      Client again(port());
      served = again.Get("/-/liveness").has_value();
    } catch (const std::exception&) {  // reset by the server: not freed yet
    }
    if (!served) std::this_thread::sleep_for(100ms);
  }
  BOOST_TEST(served);
}

BOOST_AUTO_TEST_CASE(stop_lets_an_in_flight_request_finish_and_closes_idle_ones) {
  StartServer();
  Client idle(port());
  BOOST_TEST_REQUIRE(idle.Get("/-/liveness").has_value(), idle.error());
  Client busy(port());
  busy.Send("GET /api/v4/user HTTP/1.1\r\nHost: localhost\r\n");  // half a request
  std::this_thread::sleep_for(200ms);  // let the server read it: the request is in flight

  server_->Stop();
  BOOST_TEST(idle.ClosedWithin(5s));
  busy.Send("PRIVATE-TOKEN: " + root_token_ + "\r\n\r\n");
  auto r = busy.Read();
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, busy));
  BOOST_TEST(r->result_int() == 200u);
  BOOST_TEST(!r->keep_alive());  // Connection: close, as the server is stopping
  BOOST_TEST(busy.ClosedWithin(5s));
  runner_.join();  // Run returns once every connection is done

  bool refused = false;
  try {
    Client late(server_->port());
  } catch (const std::exception&) {
    refused = true;
  }
  BOOST_TEST(refused);
}

BOOST_AUTO_TEST_CASE(the_access_log_filters_the_private_token_and_names_the_caller) {
  StartServer();
  Client c(port());
  Request req(http::verb::get, "/api/v4/user?private_token=" + root_token_, 11);
  req.set(http::field::host, "localhost");
  req.set("X-Request-Id", "test-42");
  c.Send(req);
  auto r = c.Read();
  BOOST_TEST_REQUIRE(r.has_value(), Why(r, c));
  BOOST_TEST(r->result_int() == 200u);
  auto anonymous = c.Get("/-/liveness");
  BOOST_TEST_REQUIRE(anonymous.has_value(), Why(anonymous, c));
  c.Send("NOT A REQUEST\r\n\r\n");
  BOOST_TEST(c.ClosedWithin(5s));
  StopServer();

  const std::string log = log_.str();
  BOOST_TEST(log.find(root_token_) == std::string::npos);
  BOOST_TEST(log.find(" 127.0.0.1 GET /api/v4/user?private_token=[FILTERED] 200 ") !=
                 std::string::npos,
             log);
  BOOST_TEST(log.find("ms user=" + std::to_string(root_user_id_) + " token=" +
                      std::to_string(root_token_id_) + " req=test-42\n") != std::string::npos,
             log);
  BOOST_TEST(log.find(" GET /-/liveness 200 ") != std::string::npos, log);
  BOOST_TEST(log.find("ms user=- token=- req=-\n") != std::string::npos, log);
  BOOST_TEST(log.find(" - - 400 ") != std::string::npos, log);
  // One line per request, each starting with a timestamp.
  std::istringstream lines(log);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    ++count;
    BOOST_TEST(line.size() > 25u);
    BOOST_TEST(line.substr(10, 1) == "T");
    BOOST_TEST(line.substr(23, 2) == "Z ");
  }
  BOOST_TEST(count == 3);
}

BOOST_AUTO_TEST_CASE(start_fails_cleanly_on_a_port_in_use) {
  StartServer();
  ServerOptions o;
  o.port = port();
  Server second(o, handler_);
  Status s = second.Start();
  BOOST_TEST(!s.ok());
  BOOST_TEST(s.code() == Status::Code::kIOError);
  BOOST_TEST(s.message().find(std::to_string(port())) != std::string::npos, s.ToString());
}

BOOST_AUTO_TEST_SUITE_END()

// ---- a disk that holds a write (F6: writes wait in the writer pool, not on a worker) --

// The default file system, except that after Hold() every sync of a write-ahead log —
// the synced write of a ledger append — waits until Release(): a disk exactly as slow
// as the test wants, with no clock involved.
class HeldSyncFs : public rocksdb::FileSystemWrapper {
 public:
  HeldSyncFs() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "HeldSyncFs"; }

  void Hold() {
    std::lock_guard lock(mu_);
    hold_ = true;
  }
  void Release() {
    std::lock_guard lock(mu_);
    hold_ = false;
    cv_.notify_all();
  }
  // True once a WAL sync is waiting; false if none began within `timeout`.
  bool WaitUntilHolding(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return holding_ > 0; });
  }
  bool holding() const {
    std::lock_guard lock(mu_);
    return holding_ > 0;
  }

  rocksdb::IOStatus NewWritableFile(const std::string& fname,
                                    const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    auto s = target()->NewWritableFile(fname, o, result, dbg);
    if (s.ok() && fname.ends_with(".log"))
      *result = std::make_unique<Wal>(this, std::move(*result));
    return s;
  }

 private:
  class Wal : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    Wal(HeldSyncFs* fs, std::unique_ptr<rocksdb::FSWritableFile> f)
        : FSWritableFileOwnerWrapper(std::move(f)), fs_(fs) {}
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& o,
                           rocksdb::IODebugContext* dbg) override {
      fs_->WaitWhileHeld();
      return target()->Sync(o, dbg);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o,
                            rocksdb::IODebugContext* dbg) override {
      fs_->WaitWhileHeld();
      return target()->Fsync(o, dbg);
    }

   private:
    HeldSyncFs* fs_;
  };

  void WaitWhileHeld() {
    std::unique_lock lock(mu_);
    if (!hold_) return;
    ++holding_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !hold_; });
    --holding_;
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool hold_ = false;
  int holding_ = 0;  // syncs waiting in WaitWhileHeld
};

struct HeldDisk {
  std::shared_ptr<HeldSyncFs> disk = std::make_shared<HeldSyncFs>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(disk);
};

// A ServerFixture whose ledger is on a HeldSyncFs (a base, so it outlives the service).
class HeldDiskFixture : public HeldDisk, public ServerFixture {
 public:
  HeldDiskFixture() : ServerFixture(env.get()) {}
  // A test that stops half-way must not leave a write held: StopServer waits for it.
  ~HeldDiskFixture() { disk->Release(); }

  // Holds the disk and sends, as root, a request that writes (creates the user
  // alice); returns once its append waits for its WAL sync.
  void SendHeldWrite(Client& c) {
    disk->Hold();
    const std::string body =
        R"({"username":"alice","name":"Alice","email":"alice@example.com"})";
    c.Send(RawRequest("POST", "/api/v4/users",
                      "PRIVATE-TOKEN: " + root_token_ +
                          "\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n") +
           body);
    BOOST_TEST_REQUIRE(disk->WaitUntilHolding(10s),
                       "the write never reached its WAL sync");
  }
};

BOOST_FIXTURE_TEST_SUITE(server_held_disk, HeldDiskFixture)

// F6 (docs/RELIABILITY.md): a write used to wait for its syncs on its worker thread, and
// every other connection of that worker with it. One worker, two connections: the
// disk is released only once the authentications have been answered, so they cannot
// be waiting behind the write. With one writer thread, which the write holds, a
// forward auth by POST is answered only if it, too, stays on the worker.
BOOST_AUTO_TEST_CASE(auth_is_answered_while_a_write_on_its_thread_waits_for_the_disk) {
  ServerOptions o;
  o.threads = 1;
  o.writer_threads = 1;
  StartServer(o);
  Client writer(port());
  Client reader(port());
  auto before = reader.Get("/api/v4/auth?scope=api", root_token_);
  BOOST_TEST_REQUIRE(before.has_value(), Why(before, reader));
  BOOST_TEST_REQUIRE(before->result_int() == 200u);

  SendHeldWrite(writer);

  auto auth = reader.Get("/api/v4/auth?scope=api", root_token_);
  BOOST_TEST_REQUIRE(
      auth.has_value(),
      "no answer while a write waits on the same thread: " << Why(auth, reader));
  BOOST_TEST(auth->result_int() == 200u);
  auto self = reader.Get("/api/v4/personal_access_tokens/self", root_token_);
  BOOST_TEST_REQUIRE(self.has_value(), Why(self, reader));
  BOOST_TEST(self->result_int() == 200u);
  BOOST_TEST(self->body().find("\"id\":" + std::to_string(root_token_id_) + ",") !=
             std::string::npos);
  reader.Send(RawRequest("POST", "/api/v4/auth?scope=api",
                         "PRIVATE-TOKEN: " + root_token_ + "\r\nContent-Length: 0\r\n"));
  auto posted = reader.Read();
  BOOST_TEST_REQUIRE(posted.has_value(), Why(posted, reader));
  BOOST_TEST(posted->result_int() == 200u);
  BOOST_TEST(disk->holding());  // the write is still waiting: the reads went first

  disk->Release();
  auto created = writer.Read();
  BOOST_TEST_REQUIRE(created.has_value(), Why(created, writer));
  BOOST_TEST(created->result_int() == 201u, created->body());
  BOOST_TEST(created->body().find("\"alice\"") != std::string::npos);
  BOOST_TEST(created->keep_alive());
  // The connection goes on as before, on its worker.
  auto after = writer.Get("/api/v4/users?username=alice", root_token_);
  BOOST_TEST_REQUIRE(after.has_value(), Why(after, writer));
  BOOST_TEST(after->body().find("\"alice\"") != std::string::npos);

  // The access log names the caller of the write, as the pool thread found it.
  StopServer();
  const std::string log = log_.str();
  BOOST_TEST(log.find(" POST /api/v4/users 201 ") != std::string::npos, log);
  BOOST_TEST(log.find("ms user=" + std::to_string(root_user_id_) + " token=" +
                      std::to_string(root_token_id_) + " req=-\n") != std::string::npos,
             log);
}

// The read timeout is for slow clients; a write waiting on our disk keeps its
// connection, and its answer (a token's secret is shown once) is delivered.
BOOST_AUTO_TEST_CASE(a_write_waiting_past_the_read_timeout_is_still_answered) {
  ServerOptions o;
  o.threads = 1;
  o.read_timeout = 1s;
  StartServer(o);
  Client writer(port());
  SendHeldWrite(writer);
  std::this_thread::sleep_for(2s);  // past the deadline, and several ticks
  disk->Release();
  auto created = writer.Read();
  BOOST_TEST_REQUIRE(created.has_value(), Why(created, writer));
  BOOST_TEST(created->result_int() == 201u, created->body());
}

// Stop closes idle connections at once and lets a write waiting in the pool finish:
// its answer carries Connection: close, and Run returns after it.
BOOST_AUTO_TEST_CASE(stop_lets_a_write_waiting_on_the_disk_finish) {
  ServerOptions o;
  o.threads = 1;
  StartServer(o);
  Client idle(port());
  BOOST_TEST_REQUIRE(idle.Get("/-/liveness").has_value(), idle.error());
  Client writer(port());
  SendHeldWrite(writer);

  server_->Stop();
  BOOST_TEST(idle.ClosedWithin(5s));
  disk->Release();
  auto created = writer.Read();
  BOOST_TEST_REQUIRE(created.has_value(), Why(created, writer));
  BOOST_TEST(created->result_int() == 201u, created->body());
  BOOST_TEST(!created->keep_alive());
  BOOST_TEST(writer.ClosedWithin(5s));
  runner_.join();
}

// When Stop's grace runs out while a write still waits on the disk, its connection is
// closed, but the session lives until the write returns (the pool reads its request);
// then Run returns, and the write is in the ledger.
BOOST_AUTO_TEST_CASE(when_the_grace_ends_a_waiting_write_loses_its_socket_not_its_write) {
  ServerOptions o;
  o.threads = 1;
  o.shutdown_grace = 1s;
  StartServer(o);
  Client writer(port());
  SendHeldWrite(writer);

  server_->Stop();
  BOOST_TEST(writer.ClosedWithin(5s));  // by the end of the grace
  BOOST_TEST(disk->holding());
  BOOST_TEST(server_->connections() == 1u);  // closed, not freed: the pool still reads it
  disk->Release();
  runner_.join();
  BOOST_TEST(server_->connections() == 0u);
  BOOST_TEST(service_->state().FindUserByName("alice").has_value());
}

BOOST_AUTO_TEST_SUITE_END()

// ---- the real binary -----------------------------------------------------------------

// A child process with its stdout and stderr collected by reader threads.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<std::string> env_strings = ChildEnvironment();
    std::vector<char*> env;
    for (auto& e : env_strings) env.push_back(e.data());
    env.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), env.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    ::close(err[1]);
    if (rc != 0) {
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
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    if (out_reader_.joinable()) out_reader_.join();
    if (err_reader_.joinable()) err_reader_.join();
  }

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
      if (exited_ || Poll()) return err().find(text) != std::string::npos;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  // The exit code, or nullopt if the child is still running after `timeout` (or was
  // killed by a signal).
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (!exited_ && !Poll() && SteadyClock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    if (!exited_) return std::nullopt;
    if (out_reader_.joinable()) out_reader_.join();  // the pipes are at EOF now
    if (err_reader_.joinable()) err_reader_.join();
    if (!WIFEXITED(status_)) return std::nullopt;
    return WEXITSTATUS(status_);
  }

  void Signal(int sig) { ::kill(pid_, sig); }

 private:
  // Our environment; under ThreadSanitizer, plus one suppression for the child. The
  // Debian librocksdb.a is not instrumented, and opening an existing ledger read-write
  // (any `patledger` command does it, not only serve) makes TSan report a race inside
  // RocksDB's own static cache-role registry (rocksdb::RegisterCacheDeleterRole),
  // which is guarded by RocksDB's mutex in code TSan cannot see. Any other report
  // from the child still fails the test (TSan's exit code 66).
  static std::vector<std::string> ChildEnvironment() {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
#if defined(__SANITIZE_THREAD__)
    static const TempDir dir;  // removed at exit
    static const std::string supp = [] {
      const std::string path = dir.Sub("tsan.supp");
      std::ofstream(path) << "race:rocksdb::RegisterCacheDeleterRole\n";
      return path;
    }();
    bool found = false;
    for (auto& e : env) {
      if (e.starts_with("TSAN_OPTIONS=")) {
        e += " suppressions=" + supp;
        found = true;
      }
    }
    if (!found) env.push_back("TSAN_OPTIONS=suppressions=" + supp);
#endif
    return env;
  }

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

const std::string kBinary = std::string(PATLEDGER_TEST_BINARY_DIR) + "/tools/patledger";

// Parses the port from "listening on http://127.0.0.1:PORT".
std::uint16_t ListeningPort(const std::string& err) {
  const std::string marker = "listening on http://127.0.0.1:";
  const auto at = err.find(marker);
  if (at == std::string::npos) return 0;
  return static_cast<std::uint16_t>(std::stoul(err.substr(at + marker.size())));
}

// Polls GET `target` until it answers `status`, for up to `timeout`.
bool AnswersWithin(std::uint16_t port, const std::string& target, unsigned status,
                   std::chrono::milliseconds timeout, const std::string& token = {}) {
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    try {
      Client c(port);
      auto r = c.Get(target, token);
      if (r && r->result_int() == status) return true;
    } catch (const std::exception&) {
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

BOOST_AUTO_TEST_SUITE(serve_binary)

BOOST_AUTO_TEST_CASE(serve_initialises_serves_stops_on_sigterm_and_restarts) {
  TempDir dir;
  const std::vector<std::string> args = {kBinary,      "serve",     "--data",
                                         dir.Sub("data"), "--listen", "127.0.0.1:0",
                                         "--threads",  "2",         "--access-log",
                                         dir.Sub("access.log")};
  std::string token;
  {
    Child first(args);
    BOOST_TEST_REQUIRE(first.WaitForErr("listening on", 30s), first.err());
    const std::uint16_t port = ListeningPort(first.err());
    BOOST_TEST_REQUIRE(port != 0, first.err());
    BOOST_TEST_REQUIRE(AnswersWithin(port, "/-/readiness", 200, 30s), first.err());
    BOOST_TEST(first.err().find("replayed ") != std::string::npos, first.err());

    const std::string out = first.out();  // printed before listening
    token = out.substr(0, out.find('\n'));
    BOOST_TEST(out == token + "\n");  // the root token alone
    BOOST_TEST(token.starts_with("glpat-"));
    BOOST_TEST(token.size() == 6u + 36u);
    BOOST_TEST(first.err().find(token) == std::string::npos);
    BOOST_TEST(AnswersWithin(port, "/api/v4/user", 200, 5s, token));

    const auto t0 = SteadyClock::now();
    first.Signal(SIGTERM);
    const auto code = first.Wait(10s);
    BOOST_TEST_REQUIRE(code.has_value(), "still running or killed; stderr:\n" << first.err());
    BOOST_TEST(*code == 0, first.err());
    BOOST_TEST((SteadyClock::now() - t0 < 5s));
  }
  {
    Child second(args);
    BOOST_TEST_REQUIRE(second.WaitForErr("listening on", 30s), second.err());
    const std::uint16_t port = ListeningPort(second.err());
    BOOST_TEST_REQUIRE(AnswersWithin(port, "/-/readiness", 200, 30s), second.err());
    BOOST_TEST(AnswersWithin(port, "/api/v4/user", 200, 5s, token));  // the ledger survived
    second.Signal(SIGINT);
    const auto code = second.Wait(10s);
    BOOST_TEST_REQUIRE(code.has_value(), second.err());
    BOOST_TEST(*code == 0, second.err());
    BOOST_TEST(second.out().empty(), "a token was printed again: " << second.out().size());
    BOOST_TEST(second.err().find("Initialised") == std::string::npos);
  }
  // The access log has the requests, never the token.
  std::ifstream log_file(dir.Sub("access.log"));
  std::stringstream log;
  log << log_file.rdbuf();
  BOOST_TEST(log.str().find("GET /-/readiness 200") != std::string::npos, log.str());
  BOOST_TEST(log.str().find(token) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(serve_exits_non_zero_when_the_ledger_cannot_be_opened) {
  TempDir dir;
  service::ServiceOptions o;
  o.data_dir = dir.Sub("data");
  auto init = service::TokenService::Init(o);
  BOOST_TEST_REQUIRE(init.has_value(), Why(init));
  std::filesystem::remove(dir.Sub("data/token.key"));  // the ledger is there, its key is not
  Child child({kBinary, "serve", "--data", dir.Sub("data"), "--listen", "127.0.0.1:0"});
  const auto code = child.Wait(30s);
  BOOST_TEST_REQUIRE(code.has_value(), child.err());
  BOOST_TEST(*code != 0, child.err());
  BOOST_TEST(child.out().empty());  // no new root token for an existing ledger
  BOOST_TEST(child.err().find("patledger: ") != std::string::npos, child.err());
}

BOOST_AUTO_TEST_CASE(serve_rejects_a_bad_listen_address_with_usage) {
  for (const char* bad : {"8080", "localhost", "127.0.0.1:http", "::1:80", "[::1]80",
                          "127.0.0.1:65536"}) {
    Child child({kBinary, "serve", "--listen", bad});
    const auto code = child.Wait(10s);
    BOOST_TEST_REQUIRE(code.has_value(), bad);
    BOOST_TEST(*code == 2, bad << ": " << child.err());
    BOOST_TEST(child.err().find("usage: patledger serve") != std::string::npos, child.err());
  }
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::api
