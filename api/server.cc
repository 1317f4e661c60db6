#include "api/server.h"

#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <charconv>
#include <ctime>
#include <optional>
#include <ostream>
#include <thread>
#include <utility>

#include "api/access_log.h"

namespace patledger::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using SteadyClock = std::chrono::steady_clock;

// How often a worker checks deadlines (so timeouts fire up to this late) and
// refreshes its Date header.
constexpr auto kTick = std::chrono::milliseconds(250);
// Lingering close after an error response: how long, and how much, we read and
// discard so the client sees our response rather than a reset.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr std::size_t kLingerMaxBytes = 1 << 20;
// Each read asks for at least this much room in the connection's buffer.
constexpr std::size_t kMinRead = 4096;
// A worker writes its access-log batch at once beyond this size.
constexpr std::size_t kLogFlushBytes = 64 * 1024;
// The writer pool's size when options.writer_threads is 0: twice the I/O threads, at
// least this many (see ServerOptions::writer_threads).
constexpr std::size_t kMinWriterThreads = 4;

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

void AppendUint(std::uint64_t v, std::string* out) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, end);
}

std::int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string EndpointText(const tcp::endpoint& ep) {
  const std::string host = ep.address().to_string();
  return (ep.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(ep.port());
}

bool BodylessStatus(unsigned status) {
  return status / 100 == 1 || status == 204 || status == 304;
}

// Handler::Handle promises not to throw; a transport must not trust that.
Response HandleSafely(const Handler& handler, const Request& req, Exchange* exchange) {
  try {
    return handler.Handle(req, exchange);
  } catch (...) {
    Response res(http::status::internal_server_error, req.version());
    res.set(http::field::content_type, "application/json");
    res.body() = R"({"message":"500 Internal Server Error"})";
    return res;
  }
}

std::size_t WriterThreads(const ServerOptions& o, std::size_t io_threads) {
  if (o.writer_threads > 0) return static_cast<std::size_t>(o.writer_threads);
  return std::max<std::size_t>(kMinWriterThreads, 2 * io_threads);
}

}  // namespace

// One io_context and thread. Every connection (Session) lives on exactly one worker,
// so a worker's sessions, buffers and counters are touched by its thread only.
// Worker 0 also owns the acceptor and hands connections out round-robin.
class Server::Worker {
 public:
  class Session;

  Worker(Server& server, std::size_t index)
      : server_(server),
        options_(server.options_),
        index_(index),
        ioc_(1),
        acceptor_(ioc_),
        tick_(ioc_) {
    RefreshDate();
  }
  ~Worker();

  Status Listen(tcp::endpoint* endpoint);
  void Run();
  void Accept();
  void StartTicking() { OnTick({}); }
  void BeginStop();

  // The rest is touched only by this worker's thread (and by Server before Run).
  void OnAccept(const error_code& ec, tcp::socket socket, Worker* target);
  void AddSession(tcp::socket socket);
  void RemoveSession(Session* s);
  void OnTick(const error_code& ec);
  void RefreshDate();
  void Log(const AccessLogEntry& entry);
  void FlushLog();

  Server& server_;
  const ServerOptions& options_;
  const std::size_t index_;
  asio::io_context ioc_;      // first: destroyed after every I/O object below
  tcp::acceptor acceptor_;    // open on worker 0 only
  asio::steady_timer tick_;
  Session* sessions_ = nullptr;  // intrusive list of live sessions
  std::size_t next_worker_ = 0;  // worker 0: round-robin cursor
  bool stopping_ = false;
  bool accept_paused_ = false;  // after an accept error; resumed by the tick
  SteadyClock::time_point grace_deadline_{};
  std::int64_t date_second_ = -1;
  std::string date_line_;  // "Date: Sun, 29 Nov 2026 00:12:34 GMT\r\n"
  std::string log_buffer_;
  bool log_flush_posted_ = false;
};

// One connection. Invariant: at most one asynchronous operation is pending; its
// completion handler either starts the next one or destroys the session, so the
// session is destroyed exactly once, from a completion handler (or by the worker's
// destructor once its io_context has stopped). The worker's tick only closes the
// socket, which completes the pending operation with an error. A request handed to
// the writer pool (HandOff) is such an operation too: its completion is the answer
// posted back to this worker, and closing the socket meanwhile does not end it, so
// the session (whose parser owns the request the pool reads) outlives the hand-off.
class Server::Worker::Session {
 public:
  Session(Worker& worker, tcp::socket socket)
      : w_(worker),
        socket_(std::move(socket)),
        buffer_(worker.options_.max_header_bytes + 2 * kMinRead) {}

  void Start() {
    error_code ec;
    const tcp::endpoint remote = socket_.remote_endpoint(ec);
    if (!ec) exchange_.client_address = remote.address().to_string();
    socket_.set_option(tcp::no_delay(true), ec);
    StartRequest();
  }

  // Closes the socket if the deadline has passed (or `force`), which ends the session.
  // Not a request in the writer pool, unless forced: the deadline is for slow clients,
  // and that request is waiting on our disk, maybe writing a token whose secret its
  // answer shows once. (Stop's grace may still run out: the session then ends when the
  // answer comes back.)
  void Expire(SteadyClock::time_point now, bool force) {
    if (closed_ || (!force && (now < deadline_ || phase_ == Phase::kHandling))) return;
    closed_ = true;
    error_code ignored;
    socket_.close(ignored);
  }
  // Between requests, or only waiting for the client to close after an error: no
  // request to finish, so Stop closes it at once.
  bool between_requests() const {
    return phase_ == Phase::kIdle || phase_ == Phase::kLingering;
  }

  Session* prev_ = nullptr;
  Session* next_ = nullptr;

 private:
  enum class Phase {
    kIdle,       // waiting for the first byte of a request
    kReading,    // a request has begun
    kHandling,   // the request is in the writer pool (HandOff)
    kWriting,    // writing a response
    kLingering,  // closing: discarding input until the client closes (see Linger)
  };

  const ServerOptions& opts() const { return w_.options_; }

  void StartRequest() {
    parser_.emplace();
    parser_->eager(true);
    parser_->header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(opts().max_header_bytes, UINT32_MAX)));
    parser_->body_limit(opts().max_body_bytes);
    continue_sent_ = false;
    if (buffer_.size() > 0) {  // pipelined: the next request is already here
      BeginRequest(SteadyClock::now());
      return Parse();
    }
    if (w_.stopping_) {
      // Stopping, and no request of this connection is pending: close it now. (Stop
      // closes idle sessions itself, but one still finishing its write when Stop ran
      // arrives here afterwards and would otherwise wait for the grace deadline.)
      error_code ignored;
      socket_.shutdown(tcp::socket::shutdown_send, ignored);
      return Destroy();  // deletes this
    }
    phase_ = Phase::kIdle;
    // A new connection gets read_timeout to send its first request; between
    // keep-alive requests the idle timeout applies.
    deadline_ = SteadyClock::now() + (served_ ? opts().idle_timeout : opts().read_timeout);
    ReadSome();
  }

  void BeginRequest(SteadyClock::time_point now) {
    phase_ = Phase::kReading;
    start_ = now;
    deadline_ = now + opts().read_timeout;
  }

  void ReadSome() {
    const std::size_t room = std::min(
        std::max(buffer_.capacity() - buffer_.size(), kMinRead),
        buffer_.max_size() - buffer_.size());
    if (room == 0) return Reject(http::error::header_limit);  // not reached: see buffer_
    socket_.async_read_some(buffer_.prepare(room), [this](const error_code& ec,
                                                          std::size_t n) { OnRead(ec, n); });
  }

  void OnRead(const error_code& ec, std::size_t n) {
    // End of stream, reset, or the socket closed by a timeout or Stop: there is
    // no complete request to answer.
    if (ec || closed_) return Destroy();
    buffer_.commit(n);
    if (phase_ == Phase::kIdle) BeginRequest(SteadyClock::now());
    Parse();
  }

  // Feeds buffered bytes to the parser; answers, rejects or reads more.
  void Parse() {
    while (buffer_.size() > 0) {
      error_code ec;
      const std::size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == http::error::need_more) break;
      if (ec) return Reject(ec);
      if (parser_->is_done()) return Answer();
      if (used == 0) break;
    }
    if (!continue_sent_ && parser_->is_header_done() && ExpectsContinue()) {
      continue_sent_ = true;
      return asio::async_write(socket_, asio::buffer(kContinue.data(), kContinue.size()),
                               [this](const error_code& ec, std::size_t) {
                                 if (ec || closed_) return Destroy();
                                 ReadSome();
                               });
    }
    ReadSome();
  }

  bool ExpectsContinue() const {
    const Request& req = parser_->get();
    return req.version() >= 11 &&
           beast::iequals(req[http::field::expect], std::string_view("100-continue"));
  }

  void Answer() {
    const Request& req = parser_->get();
    exchange_.now_us = 0;
    exchange_.user_id = 0;
    exchange_.token_id = 0;
    if (Handler::MayWrite(req)) return HandOff();  // never an authentication
    response_ = HandleSafely(w_.server_.handler_, req, &exchange_);
    Respond();
  }

  // A request that may append to the ledger waits for synced writes (WAL, head
  // journal): on this thread it would hold up every other connection of the worker,
  // authentications included (docs/RELIABILITY.md, F6). A pool thread handles it
  // instead, reading only the request (which the parser holds unchanged until we
  // answer) and its own copy of the Exchange, and posts the answer back here.
  // The work guard keeps this worker's io_context running until then.
  void HandOff() {
    phase_ = Phase::kHandling;
    const Handler* handler = &w_.server_.handler_;
    const Request* req = &parser_->get();
    asio::post(*w_.server_.writers_, [this, handler, req, exchange = exchange_,
                                      work = asio::make_work_guard(w_.ioc_)]() mutable {
      Response res = HandleSafely(*handler, *req, &exchange);
      asio::post(work.get_executor(), [this, res = std::move(res),
                                       exchange = std::move(exchange)]() mutable {
        response_ = std::move(res);
        exchange_ = std::move(exchange);
        Respond();  // if the socket was closed meanwhile, the write fails and ends us
      });
    });
  }

  // Writes response_ (on this worker's thread, whoever handled the request).
  void Respond() {
    const Request& req = parser_->get();
    keep_alive_ = req.keep_alive() && response_.keep_alive() && !w_.stopping_;
    const unsigned status = response_.result_int();
    const bool with_body = !BodylessStatus(status) && req.method() != http::verb::head;
    SerializeHead(status);
    status_ = static_cast<int>(status);
    phase_ = Phase::kWriting;
    deadline_ = SteadyClock::now() + opts().read_timeout;
    const std::array<asio::const_buffer, 2> buffers = {
        asio::buffer(head_),
        with_body ? asio::buffer(response_.body()) : asio::const_buffer()};
    asio::async_write(socket_, buffers,
                      [this](const error_code& ec, std::size_t) { OnWritten(ec); });
  }

  // The status line and header of response_, as HTTP/1.1 wants them on the wire. We
  // own framing: Content-Length from the body, Connection from keep_alive_, and
  // Server and Date unless the handler set them.
  void SerializeHead(unsigned status) {
    head_.clear();
    head_.append(response_.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
    AppendUint(status, &head_);
    head_.push_back(' ');
    head_.append(response_.reason());
    head_.append("\r\n");
    bool has_server = false, has_date = false;
    for (const auto& f : response_) {
      switch (f.name()) {
        case http::field::content_length:
        case http::field::transfer_encoding:
        case http::field::connection:
        case http::field::keep_alive:
          continue;
        case http::field::server: has_server = true; break;
        case http::field::date: has_date = true; break;
        default: break;
      }
      head_.append(f.name_string());
      head_.append(": ");
      head_.append(f.value());
      head_.append("\r\n");
    }
    if (!has_server) head_.append("Server: patledger\r\n");
    if (!has_date) head_.append(w_.date_line_);
    if (!BodylessStatus(status)) {
      head_.append("Content-Length: ");
      AppendUint(response_.body().size(), &head_);
      head_.append("\r\n");
    }
    if (response_.version() == 10) {
      if (keep_alive_) head_.append("Connection: keep-alive\r\n");
    } else if (!keep_alive_) {
      head_.append("Connection: close\r\n");
    }
    head_.append("\r\n");
  }

  void OnWritten(const error_code& ec) {
    if (w_.options_.access_log != nullptr) LogRequest();
    if (ec || closed_) return Destroy();
    served_ = true;
    if (!keep_alive_) {
      // Closing with unread input would send a reset that can destroy the response
      // before the client reads it; if the client sent more, linger instead.
      error_code ignored;
      if (buffer_.size() == 0 && socket_.available(ignored) == 0) {
        socket_.shutdown(tcp::socket::shutdown_send, ignored);
        return Destroy();
      }
      return Linger();
    }
    StartRequest();
  }

  void LogRequest() {
    AccessLogEntry e;
    e.time_us = NowMicros();
    e.client_address = exchange_.client_address;
    if (parser_ && parser_->is_header_done()) {
      const Request& req = parser_->get();
      e.method = req.method_string();
      e.target = req.target();
      e.request_id = req["X-Request-Id"];
    }
    e.status = status_;
    e.latency_us =
        std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - start_)
            .count();
    e.user_id = exchange_.user_id;
    e.token_id = exchange_.token_id;
    w_.Log(e);
  }

  // Answers a request we will not hand to the handler, then closes (lingering).
  void Reject(const error_code& parse_error) {
    std::string_view line, body;
    if (parse_error == http::error::body_limit) {
      status_ = 413;
      line = "HTTP/1.1 413 Payload Too Large\r\n";
      body = R"({"message":"413 Payload Too Large"})";
    } else if (parse_error == http::error::header_limit) {
      status_ = 431;
      line = "HTTP/1.1 431 Request Header Fields Too Large\r\n";
      body = R"({"message":"431 Request Header Fields Too Large"})";
    } else {
      status_ = 400;
      line = "HTTP/1.1 400 Bad Request\r\n";
      body = R"({"message":"400 Bad Request"})";
    }
    head_.assign(line);
    head_.append("Server: patledger\r\n");
    head_.append(w_.date_line_);
    head_.append("Content-Type: application/json\r\nContent-Length: ");
    AppendUint(body.size(), &head_);
    head_.append("\r\nConnection: close\r\n\r\n");
    head_.append(body);
    exchange_.user_id = 0;
    exchange_.token_id = 0;
    phase_ = Phase::kWriting;
    deadline_ = SteadyClock::now() + opts().read_timeout;
    asio::async_write(socket_, asio::buffer(head_), [this](const error_code& ec, std::size_t) {
      if (w_.options_.access_log != nullptr) LogRequest();
      if (ec || closed_) return Destroy();
      Linger();
    });
  }

  void Linger() {
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    phase_ = Phase::kLingering;
    deadline_ = SteadyClock::now() + std::min<SteadyClock::duration>(
                                         kLingerTime, opts().read_timeout);
    lingered_ = 0;
    buffer_.clear();
    DiscardSome();
  }

  void DiscardSome() {
    socket_.async_read_some(buffer_.prepare(std::min(kMinRead, buffer_.max_size())),
                            [this](const error_code& ec, std::size_t n) {
                              lingered_ += n;
                              if (ec || closed_ || lingered_ > kLingerMaxBytes) {
                                return Destroy();
                              }
                              DiscardSome();
                            });
  }

  void Destroy() { w_.RemoveSession(this); }  // deletes this

  Worker& w_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;  // unparsed input; at most a header plus one read
  std::optional<http::request_parser<http::string_body>> parser_;
  Response response_;
  Exchange exchange_;  // client_address set once
  std::string head_;   // the serialized response header, reused
  Phase phase_ = Phase::kIdle;
  SteadyClock::time_point deadline_{};
  SteadyClock::time_point start_{};
  int status_ = 0;
  std::size_t lingered_ = 0;
  bool keep_alive_ = false;
  bool continue_sent_ = false;
  bool served_ = false;  // a response was written on this connection
  bool closed_ = false;
};

// ---- Worker ---------------------------------------------------------------------------

Server::Worker::~Worker() {
  // Only after the io_context stopped (or never ran): no handler can run any more.
  while (sessions_ != nullptr) {
    Session* s = sessions_;
    sessions_ = s->next_;
    server_.connections_.fetch_sub(1, std::memory_order_relaxed);
    delete s;
  }
}

Status Server::Worker::Listen(tcp::endpoint* endpoint) {
  error_code ec;
  const std::string where = "listen on " + EndpointText(*endpoint);
  if (acceptor_.open(endpoint->protocol(), ec); ec) {
    return Status::IOError(where + ": " + ec.message());
  }
  acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (acceptor_.bind(*endpoint, ec); ec) return Status::IOError(where + ": " + ec.message());
  if (acceptor_.listen(asio::socket_base::max_listen_connections, ec); ec) {
    return Status::IOError(where + ": " + ec.message());
  }
  *endpoint = acceptor_.local_endpoint(ec);
  if (ec) return Status::IOError(where + ": " + ec.message());
  return Status::OK();
}

void Server::Worker::Run() {
  for (;;) {
    try {
      ioc_.run();
      break;
    } catch (const std::exception&) {
      // A completion handler threw (only std::bad_alloc can): keep serving the rest.
    }
  }
  FlushLog();
}

void Server::Worker::Accept() {
  // Round-robin: the new socket belongs to the next worker's io_context, and that
  // worker's thread runs its session.
  Worker* target = server_.workers_[next_worker_].get();
  next_worker_ = (next_worker_ + 1) % server_.workers_.size();
  acceptor_.async_accept(target->ioc_,
                         [this, target](const error_code& ec, tcp::socket socket) {
                           OnAccept(ec, std::move(socket), target);
                         });
}

void Server::Worker::OnAccept(const error_code& ec, tcp::socket socket, Worker* target) {
  if (ec == asio::error::operation_aborted || stopping_) return;  // socket closes itself
  if (ec) {
    // Out of descriptors or memory, most likely: back off until the next tick
    // instead of spinning.
    accept_paused_ = true;
    return;
  }
  // Relaxed: the counter is a bound, not a publication of anything.
  if (server_.connections_.fetch_add(1, std::memory_order_relaxed) >=
      options_.max_connections) {
    server_.connections_.fetch_sub(1, std::memory_order_relaxed);
    error_code ignored;
    socket.close(ignored);
  } else if (target == this) {
    AddSession(std::move(socket));
  } else {
    asio::post(target->ioc_, [target, s = std::move(socket)]() mutable {
      target->AddSession(std::move(s));
    });
  }
  Accept();
}

void Server::Worker::AddSession(tcp::socket socket) {
  if (stopping_) {
    server_.connections_.fetch_sub(1, std::memory_order_relaxed);
    return;  // the socket closes as it goes out of scope
  }
  auto* s = new Session(*this, std::move(socket));
  s->next_ = sessions_;
  if (sessions_ != nullptr) sessions_->prev_ = s;
  sessions_ = s;
  s->Start();
}

void Server::Worker::RemoveSession(Session* s) {
  if (s->prev_ != nullptr) {
    s->prev_->next_ = s->next_;
  } else {
    sessions_ = s->next_;
  }
  if (s->next_ != nullptr) s->next_->prev_ = s->prev_;
  delete s;
  server_.connections_.fetch_sub(1, std::memory_order_relaxed);
  if (stopping_ && sessions_ == nullptr) tick_.cancel();  // nothing left to wait for
}

void Server::Worker::OnTick(const error_code& ec) {
  if (ec && stopping_) return;
  const auto now = SteadyClock::now();
  RefreshDate();
  const bool force = stopping_ && now >= grace_deadline_;
  for (Session* s = sessions_; s != nullptr; s = s->next_) s->Expire(now, force);
  if (stopping_ && sessions_ == nullptr) return;  // let the io_context run out of work
  if (accept_paused_ && !stopping_) {
    accept_paused_ = false;
    Accept();
  }
  tick_.expires_after(kTick);
  tick_.async_wait([this](const error_code& e) { OnTick(e); });
}

void Server::Worker::BeginStop() {
  if (stopping_) return;
  stopping_ = true;
  grace_deadline_ = SteadyClock::now() + options_.shutdown_grace;
  error_code ignored;
  acceptor_.close(ignored);
  if (index_ == 0) {
    // Worker 0 accepts for everyone; once its acceptor is closed it posts no more
    // connections, so stopping the others now (FIFO after any connection it handed
    // them) leaves no connection posted to a worker that has already finished.
    for (std::size_t i = 1; i < server_.workers_.size(); ++i) {
      Worker* w = server_.workers_[i].get();
      asio::post(w->ioc_, [w] { w->BeginStop(); });
    }
  }
  // Idle connections go now; the others finish the request they are in.
  for (Session* s = sessions_; s != nullptr; s = s->next_) {
    if (s->between_requests()) s->Expire(SteadyClock::time_point::max(), /*force=*/true);
  }
  if (sessions_ == nullptr) tick_.cancel();
}

void Server::Worker::RefreshDate() {
  const std::time_t t = std::time(nullptr);
  if (t == date_second_) return;
  date_second_ = t;
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  const std::size_t n = std::strftime(buf, sizeof buf, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
  date_line_.assign(buf, n);
}

void Server::Worker::Log(const AccessLogEntry& entry) {
  AppendAccessLogLine(entry, &log_buffer_);
  if (log_buffer_.size() >= kLogFlushBytes) return FlushLog();
  // Write the batch as soon as this worker has no other ready work: under load many
  // lines go out in one write, and an idle server logs at once.
  if (!log_flush_posted_) {
    log_flush_posted_ = true;
    asio::post(ioc_, [this] {
      log_flush_posted_ = false;
      FlushLog();
    });
  }
}

void Server::Worker::FlushLog() {
  if (log_buffer_.empty() || options_.access_log == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(server_.log_mu_);
    options_.access_log->write(log_buffer_.data(),
                               static_cast<std::streamsize>(log_buffer_.size()));
    options_.access_log->flush();
  }
  log_buffer_.clear();
}

// ---- Server ---------------------------------------------------------------------------

Server::Server(ServerOptions options, const Handler& handler)
    : options_(std::move(options)), handler_(handler) {}

Server::~Server() = default;

Status Server::Start() {
  std::lock_guard<std::mutex> lock(control_mu_);
  if (!workers_.empty()) return Status::FailedPrecondition("the server is already started");
  if (stopping_.load(std::memory_order_acquire)) {
    return Status::FailedPrecondition("the server was stopped before it started");
  }
  error_code ec;
  tcp::endpoint endpoint;
  const auto address = asio::ip::make_address(options_.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, options_.port);
  } else {
    asio::io_context ioc;
    tcp::resolver resolver(ioc);
    auto results = resolver.resolve(options_.host, std::to_string(options_.port),
                                    tcp::resolver::passive, ec);
    if (ec || results.empty()) {
      return Status::InvalidArgument("cannot resolve host '" + options_.host +
                                     "': " + (ec ? ec.message() : "no address"));
    }
    endpoint = results.begin()->endpoint();
  }
  const unsigned cores = std::thread::hardware_concurrency();
  const std::size_t threads =
      options_.threads > 0 ? static_cast<std::size_t>(options_.threads) : std::max(1u, cores);
  std::vector<std::unique_ptr<Worker>> workers;
  for (std::size_t i = 0; i < threads; ++i) workers.push_back(std::make_unique<Worker>(*this, i));
  Status s = workers[0]->Listen(&endpoint);
  if (!s.ok()) return s;
  writers_ = std::make_unique<asio::thread_pool>(WriterThreads(options_, threads));
  workers_ = std::move(workers);
  port_.store(endpoint.port(), std::memory_order_release);
  return Status::OK();
}

void Server::Run() {
  {
    std::lock_guard<std::mutex> lock(control_mu_);
    if (workers_.empty()) return;
    workers_[0]->Accept();
    for (auto& w : workers_) w->StartTicking();
  }
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < workers_.size(); ++i) {
    threads.emplace_back([w = workers_[i].get()] { w->Run(); });
  }
  workers_[0]->Run();
  for (auto& t : threads) t.join();
  // Nothing is left in the pool (each request in it kept its worker running until its
  // answer came back), so this only ends its threads; after it, no Handle call is left.
  writers_->join();
}

void Server::Stop() {
  std::lock_guard<std::mutex> lock(control_mu_);
  if (stopping_.exchange(true, std::memory_order_acq_rel)) return;
  if (workers_.empty()) return;
  Worker* w = workers_[0].get();  // which stops the others (see BeginStop)
  asio::post(w->ioc_, [w] { w->BeginStop(); });
}

}  // namespace patledger::api
