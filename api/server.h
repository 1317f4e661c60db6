// api/server.h: the HTTP/1.1 transport of patledger — sockets, parsing, limits,
// timeouts, keep-alive and the access log — over the request handler (api/handler.h),
// which it calls as a plain function. Modelled on Boost.Beast's
// example/http/server/async/http_server_async.cpp, restructured for throughput:
//
//   * One io_context per thread ("worker"). One acceptor (on worker 0) hands each new
//     connection to the next worker, round-robin, and the connection lives on that
//     thread for its whole life: no strand, no lock, no cross-thread hand-off on the
//     read path (a request that may write goes through the writer pool: "Handler
//     calls" below). (Not SO_REUSEPORT: it would let a second server bind the same
//     port and silently take half the connections, and its hash spreads a few
//     long-lived keep-alive connections less evenly than round-robin does.)
//   * Per connection, the read buffer, the response header buffer and the Exchange
//     are reused across keep-alive requests; responses are written with one gathered
//     write (header + body) that we serialize ourselves. What is still allocated per
//     request is what the Handler interface needs: the header fields and body of the
//     Request and the Response.
//   * Timeouts are deadlines checked by one coarse timer per worker (every 250 ms)
//     instead of a timer armed and cancelled around every read and write.
//
// Rough throughput (2-core VM, wrk -t2 -c64 -d5s on the same machine, --threads 2,
// access log to /dev/null): GET /-/liveness ~105-113k req/s where nginx 1.22
// `return 200` (2 workers) gives ~84-100k; forward auth with a valid token ~80k req/s.
//
// Protocol: HTTP/1.1 and 1.0 with keep-alive; pipelined requests are answered one at a
// time, in order. `Expect: 100-continue` is answered before the body is read. Limits:
//   body > max_body_bytes          -> 413 {"message":"413 Payload Too Large"}, close
//   header > max_header_bytes      -> 431 {"message":"431 Request Header Fields Too Large"}, close
//   malformed request              -> 400 {"message":"400 Bad Request"}, close
//   a request (first byte to last) or a response write taking > read_timeout -> close
//   a new connection sending nothing for read_timeout, or a keep-alive connection
//   idle for idle_timeout between requests -> close
//   connections beyond max_connections are closed as soon as they are accepted.
// After an error response (or a `Connection: close` one while the client has sent
// more) the server stops sending, then reads and discards what the client still sends
// for up to 2 s ("lingering close"), so the client reads the response instead of a
// connection reset.
//
// Handler calls: GET and HEAD requests and forward auth (authentication, reads) are
// handled directly on the I/O thread: they are fast and never wait for a sync. Every
// other request may append to the ledger and wait for its synced writes (WAL, head
// journal; Handler::MayWrite), so it is handed to a small writer pool
// (options.writer_threads) and the answer is posted back to the connection's worker,
// which writes it: a slow disk never holds up the other connections of that worker
// (docs/RELIABILITY.md, F6). The connection reads nothing more meanwhile (pipelined
// requests stay in order). read_timeout does not close it while its request is in the
// pool (the wait is the disk's, not the client's, and the answer may carry a token
// shown once); the end of Stop's grace does, and the connection is then freed when the
// answer comes back.
//
// Access log (options.access_log): one line per answered request, never a header or a
// body, the target filtered by api::FilteredTarget:
//   2026-11-29T00:12:34.567Z 127.0.0.1 GET /api/v4/user?private_token=[FILTERED] 200 0.123ms user=1 token=3 req=abc
// time is when the response was written, latency from the request's first byte to the
// response's last, user/token are from Exchange ("-" when nobody), req is the
// X-Request-Id header ("-" if none). Each worker batches its lines and writes whole lines
// under one mutex, flushed as soon as the worker has no other ready work, so lines never
// interleave and appear promptly.
//
// Thread safety: Start, Stop, port and connections may be called from any thread
// (Stop also from a completion handler or a signal handler's thread). Run is called
// once, after Start; when it returns, no Handle call is running or left to run. The
// destructor REQUIRES that Run has returned or was never called.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "api/handler.h"
#include "common/status.h"

namespace boost::asio {
class thread_pool;
}

namespace patledger::api {

struct ServerOptions {
  std::string host = "127.0.0.1";  // an IP address (v4 or v6) or a resolvable name
  std::uint16_t port = 8080;       // 0: the kernel picks a free port (see Server::port)
  int threads = 0;                 // 0: std::thread::hardware_concurrency()
  // Threads that handle the requests which may write to the ledger (Handler::MayWrite:
  // all but GET, HEAD and forward auth), each waiting for a group-committed synced
  // write; concurrent ones share one sync. 0: twice `threads` (as resolved), at least 4.
  int writer_threads = 0;
  std::size_t max_connections = 10000;
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t max_header_bytes = 16 * 1024;
  std::chrono::seconds read_timeout{30};
  std::chrono::seconds idle_timeout{60};
  // How long Stop lets in-flight requests finish before closing their connections.
  std::chrono::seconds shutdown_grace{10};
  std::ostream* access_log = nullptr;  // not owned; nullptr: no access log
};

class Server {
 public:
  // `handler` is not owned and must outlive the Server.
  Server(ServerOptions options, const Handler& handler);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Resolves the host, binds and listens on every worker's acceptor. After OK,
  // connections queue in the kernel until Run. kIOError (naming the address) if the
  // address is in use or cannot be bound; kInvalidArgument for a bad host.
  // REQUIRES: called once, before Run.
  Status Start();

  // The bound port (the picked one if options.port was 0); 0 before Start succeeds.
  std::uint16_t port() const { return port_.load(std::memory_order_acquire); }

  // Serves on options.threads threads (the calling one included) and returns after
  // Stop, once every connection is closed. Returns at once if Start did not succeed.
  void Run();

  // Stops accepting, closes idle connections, lets requests in flight finish (their
  // responses carry `Connection: close`) for up to options.shutdown_grace, then closes
  // whatever is left. Does not wait: Run returns when it is done. Idempotent.
  void Stop();

  // Connections open right now (for tests and metrics).
  std::size_t connections() const { return connections_.load(std::memory_order_relaxed); }

 private:
  class Worker;
  friend class Worker;

  ServerOptions options_;
  const Handler& handler_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // Handles the requests that may write (see "Handler calls"). Created by Start; joined
  // by Run after the workers; declared after workers_ so it is destroyed before them.
  std::unique_ptr<boost::asio::thread_pool> writers_;
  std::atomic<std::uint16_t> port_{0};
  std::atomic<bool> stopping_{false};
  // Every open connection on every worker, against max_connections. Relaxed: it is
  // only a bound, read and changed once per connection, never ordering other data.
  std::atomic<std::size_t> connections_{0};
  std::mutex control_mu_;  // Start, Stop and the start of Run; never on the request path
  std::mutex log_mu_;  // held while a worker writes its batch of access-log lines
};

}  // namespace patledger::api
