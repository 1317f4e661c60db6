// loadgen: a fixed-rate HTTP/1.1 load client (what wrk2 does; wrk2 is not packaged).
//
// C keep-alive connections spread over T threads (one epoll loop each) send requests at
// a total rate R, spread evenly: connection j sends its k-th request at the intended
// time  start + (j + k * C) / R.  One request is outstanding per connection (no
// pipelining); when a response comes late, the next request goes out as soon as the
// connection is free, and its latency is still measured from its INTENDED send time, so
// a stall counts against every request it delayed instead of being hidden (coordinated
// omission). Latencies of the --warmup period are not recorded. Requests still
// unanswered --timeout seconds after the end are counted as errors.
//
// Each request is  GET <path>  with a Host header, the --header lines, and, with
// --token-file, "<token-header>: <token>" taking the file's tokens round robin. Tokens
// are secrets: they are never printed.
//
// Output: p50/p90/p99/p99.9/max latency, achieved rate, errors (connect/read failures,
// timeouts), non-2xx responses; a human table and one RESULT line.
//
// usage: loadgen --url http://HOST:PORT/PATH --rate R [--connections C] [--threads T]
//                [--duration S] [--warmup S] [--timeout S] [--token-file F]
//                [--token-header NAME] [--header "K: V"]... [--label NAME]
//                [--smoke] [--help]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"

namespace patledger::bench {
namespace {

using Ns = std::int64_t;

Ns NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<Ns>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct Config {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string path = "/";
  double rate = 1000;
  int connections = 50;
  int threads = 1;
  double duration = 10, warmup = 2, timeout = 2;
  std::vector<std::string> headers;
  std::string token_header = "Private-Token";
  std::vector<std::string> tokens;
  std::string label = "run";
};

struct Conn {
  int fd = -1;
  bool busy = false;  // a request is outstanding
  Ns next_intended = 0;
  Ns intended = 0;    // of the outstanding request
  std::string in;
  std::string out;
  std::size_t out_off = 0;
};

struct ThreadResult {
  std::vector<Ns> latencies;  // recorded (after warmup)
  std::uint64_t errors = 0, non2xx = 0, completed = 0, sent = 0;
};

int Connect(const Config& c) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(c.port));
  if (::inet_pton(AF_INET, c.host.c_str(), &a.sin_addr) != 1 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

// A complete response at the front of `in`: its length, status and whether the server
// closes the connection; 0 if incomplete, -1 if unparseable.
long ParseResponse(const std::string& in, int* status, bool* close) {
  const std::size_t end = in.find("\r\n\r\n");
  if (end == std::string::npos) return 0;
  if (in.compare(0, 5, "HTTP/") != 0 || in.size() < 12) return -1;
  *status = std::atoi(in.c_str() + 9);
  long body = 0;
  bool chunked = false;
  *close = false;
  std::size_t pos = in.find("\r\n") + 2;
  while (pos < end) {
    const std::size_t eol = in.find("\r\n", pos);
    std::string line = in.substr(pos, eol - pos);
    for (char& ch : line) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (line.rfind("content-length:", 0) == 0) body = std::atol(line.c_str() + 15);
    if (line.rfind("transfer-encoding:", 0) == 0 && line.find("chunked") != std::string::npos)
      chunked = true;
    if (line.rfind("connection:", 0) == 0 && line.find("close") != std::string::npos)
      *close = true;
    pos = eol + 2;
  }
  if (chunked) {
    const std::size_t last = in.find("\r\n0\r\n\r\n", end + 2);
    const std::size_t first = in.compare(end + 4, 5, "0\r\n\r\n") == 0 ? end + 4 : 0;
    if (first) return static_cast<long>(first + 5);
    return last == std::string::npos ? 0 : static_cast<long>(last + 7);
  }
  const std::size_t total = end + 4 + static_cast<std::size_t>(body);
  return in.size() >= total ? static_cast<long>(total) : 0;
}

void Worker(const Config& c, int index, Ns start, ThreadResult* res) {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  std::vector<Conn> conns;
  for (int j = index; j < c.connections; j += c.threads) {
    Conn k;
    k.next_intended = start + static_cast<Ns>(j * 1e9 / c.rate);
    conns.push_back(std::move(k));
  }
  const Ns interval = static_cast<Ns>(c.connections * 1e9 / c.rate);
  const Ns measure_from = start + static_cast<Ns>(c.warmup * 1e9);
  const Ns end = measure_from + static_cast<Ns>(c.duration * 1e9);
  const Ns give_up = end + static_cast<Ns>(c.timeout * 1e9);
  std::string head = "GET " + c.path + " HTTP/1.1\r\nHost: " + c.host + ":" +
                     std::to_string(c.port) + "\r\n";
  for (const std::string& h : c.headers) head += h + "\r\n";
  std::size_t token = static_cast<std::size_t>(index) * 7919;
  auto open = [&](std::size_t i) {
    Conn& k = conns[i];
    if (k.fd >= 0) {
      ::epoll_ctl(ep, EPOLL_CTL_DEL, k.fd, nullptr);
      ::close(k.fd);
    }
    k.fd = Connect(c);
    k.in.clear();
    k.busy = false;
    if (k.fd < 0) return false;
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, k.fd, &e);
    return true;
  };
  for (std::size_t i = 0; i < conns.size(); ++i) {
    if (!open(i)) ++res->errors;
  }
  auto flush = [&](std::size_t i) {
    Conn& k = conns[i];
    while (k.out_off < k.out.size()) {
      const ssize_t n = ::send(k.fd, k.out.data() + k.out_off, k.out.size() - k.out_off,
                               MSG_NOSIGNAL);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        epoll_event e{};
        e.events = EPOLLIN | EPOLLOUT;
        e.data.u64 = i;
        ::epoll_ctl(ep, EPOLL_CTL_MOD, k.fd, &e);
        return true;
      }
      if (n <= 0) return false;
      k.out_off += static_cast<std::size_t>(n);
    }
    return true;
  };
  std::vector<epoll_event> events(256);
  char buf[16384];
  for (;;) {
    Ns now = NowNs();
    std::size_t busy = 0;
    Ns wake = now + 10'000'000;
    for (std::size_t i = 0; i < conns.size(); ++i) {
      Conn& k = conns[i];
      if (k.fd < 0 && now < end && !open(i)) {
        ++res->errors;
        k.next_intended += interval;
        continue;
      }
      if (!k.busy && k.next_intended < end && k.next_intended <= now) {
        k.intended = k.next_intended;
        k.next_intended += interval;
        k.out = head;
        if (!c.tokens.empty()) {
          k.out += c.token_header + ": " + c.tokens[token++ % c.tokens.size()] + "\r\n";
        }
        k.out += "\r\n";
        k.out_off = 0;
        k.busy = true;
        ++res->sent;
        if (!flush(i)) {
          ++res->errors;
          open(i);
        }
      }
      if (k.busy) ++busy;
      else if (k.next_intended < end) wake = std::min(wake, k.next_intended);
    }
    if (now >= end && busy == 0) break;
    if (now >= give_up) {
      res->errors += busy;  // unanswered: timeouts
      break;
    }
    const Ns wait = std::max<Ns>(0, std::min(wake, give_up) - now);
    timespec ts{static_cast<time_t>(wait / 1'000'000'000), static_cast<long>(wait % 1'000'000'000)};
    const int n = ::epoll_pwait2(ep, events.data(), static_cast<int>(events.size()), &ts,
                                 nullptr);
    now = NowNs();
    for (int e = 0; e < n; ++e) {
      const std::size_t i = events[e].data.u64;
      Conn& k = conns[i];
      if (events[e].events & EPOLLOUT) {
        if (!flush(i)) {
          ++res->errors;
          open(i);
          continue;
        }
        if (k.out_off == k.out.size()) {
          epoll_event m{};
          m.events = EPOLLIN;
          m.data.u64 = i;
          ::epoll_ctl(ep, EPOLL_CTL_MOD, k.fd, &m);
        }
      }
      if (!(events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
      bool broken = false;
      for (;;) {
        const ssize_t r = ::recv(k.fd, buf, sizeof buf, 0);
        if (r > 0) {
          k.in.append(buf, static_cast<std::size_t>(r));
          continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        broken = true;  // EOF or error
        break;
      }
      int status = 0;
      bool close = false;
      const long len = k.busy ? ParseResponse(k.in, &status, &close) : 0;
      if (len > 0) {
        k.in.erase(0, static_cast<std::size_t>(len));
        k.busy = false;
        ++res->completed;
        if (status < 200 || status > 299) ++res->non2xx;
        if (k.intended >= measure_from) res->latencies.push_back(now - k.intended);
        if (close || broken) open(i);
      } else if (len < 0 || broken) {
        ++res->errors;
        open(i);
      }
    }
  }
  for (Conn& k : conns) {
    if (k.fd >= 0) ::close(k.fd);
  }
  ::close(ep);
}

// --smoke: a trivial HTTP server on an ephemeral port (one thread per connection).
int StartSmokeServer(std::vector<std::thread>* threads) {
  const int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(ls, 64) != 0 ||
      ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return -1;
  }
  threads->emplace_back([ls] {
    for (;;) {
      const int fd = ::accept(ls, nullptr, nullptr);
      if (fd < 0) return;
      std::thread([fd] {
        std::string in;
        char b[4096];
        for (ssize_t n; (n = ::recv(fd, b, sizeof b, 0)) > 0;) {
          in.append(b, static_cast<std::size_t>(n));
          for (std::size_t e; (e = in.find("\r\n\r\n")) != std::string::npos;) {
            in.erase(0, e + 4);
            static const char kOk[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if (::send(fd, kOk, sizeof kOk - 1, MSG_NOSIGNAL) < 0) break;
          }
        }
        ::close(fd);
      }).detach();
    }
  });
  threads->back().detach();
  return ntohs(a.sin_port);
}

bool ParseUrl(const std::string& url, Config* c) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return false;
  const std::size_t slash = url.find('/', scheme.size());
  const std::string hostport = url.substr(scheme.size(), slash - scheme.size());
  c->path = slash == std::string::npos ? "/" : url.substr(slash);
  const std::size_t colon = hostport.rfind(':');
  if (colon == std::string::npos) return false;
  c->host = hostport.substr(0, colon);
  c->port = std::atoi(hostport.c_str() + colon + 1);
  if (c->host == "localhost") c->host = "127.0.0.1";
  return c->port > 0;
}

}  // namespace
}  // namespace patledger::bench

int main(int argc, char** argv) {
  using namespace patledger::bench;
  Config c;
  bool smoke = false, have_url = false;
  std::string token_file;
  const char* usage =
      "usage: loadgen --url http://HOST:PORT/PATH --rate R [--connections C] [--threads T]\n"
      "               [--duration S] [--warmup S] [--timeout S] [--token-file F]\n"
      "               [--token-header NAME] [--header \"K: V\"]... [--label NAME]\n"
      "               [--smoke] [--help]\n"
      "  --rate R          total requests per second, fixed (intended send times)\n"
      "  --connections C   keep-alive connections (default 50)\n"
      "  --threads T       client threads (default 1)\n"
      "  --duration S      measured seconds (default 10), after --warmup S (default 2)\n"
      "  --timeout S       wait for answers after the end (default 2); then errors\n"
      "  --token-file F    one token per line, sent round robin in --token-header\n"
      "                    (default Private-Token); never printed\n"
      "  --label NAME      name in the RESULT line (default run)\n"
      "  --smoke           against a built-in trivial server, 1 s\n";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "loadgen: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--url") {
      have_url = ParseUrl(next(), &c);
      if (!have_url) {
        std::cerr << "loadgen: --url must be http://HOST:PORT/PATH (IPv4 host)\n";
        return 2;
      }
    } else if (a == "--rate") c.rate = std::stod(next());
    else if (a == "--connections") c.connections = std::stoi(next());
    else if (a == "--threads") c.threads = std::stoi(next());
    else if (a == "--duration") c.duration = std::stod(next());
    else if (a == "--warmup") c.warmup = std::stod(next());
    else if (a == "--timeout") c.timeout = std::stod(next());
    else if (a == "--token-file") token_file = next();
    else if (a == "--token-header") c.token_header = next();
    else if (a == "--header") c.headers.push_back(next());
    else if (a == "--label") c.label = next();
    else if (a == "--smoke") smoke = true;
    else {
      std::cerr << usage;
      return a == "--help" ? 0 : 2;
    }
  }
  std::vector<std::thread> server;
  if (smoke) {
    const int port = StartSmokeServer(&server);
    if (port < 0) {
      std::cerr << "loadgen: cannot start the smoke server\n";
      return 1;
    }
    c.port = port;
    c.host = "127.0.0.1";
    c.path = "/smoke";
    c.rate = 2000;
    c.connections = 4;
    c.threads = 2;
    c.duration = 0.8;
    c.warmup = 0.2;
    c.label = "smoke";
    have_url = true;
  }
  if (!have_url || c.rate <= 0 || c.connections < 1 || c.threads < 1 ||
      c.threads > c.connections) {
    std::cerr << usage;
    return 2;
  }
  if (!token_file.empty()) {
    std::ifstream f(token_file);
    for (std::string line; std::getline(f, line);) {
      if (!line.empty() && line[0] != '#') c.tokens.push_back(line);
    }
    if (c.tokens.empty()) {
      std::cerr << "loadgen: no tokens in " << token_file << "\n";
      return 2;
    }
  }
  char params[320];
  std::snprintf(params, sizeof params,
                "target http://%s:%d%s | rate %.0f req/s fixed | %d connections, %d "
                "threads | %.1f s measured after %.1f s warmup | %zu tokens in %s",
                c.host.c_str(), c.port, c.path.c_str(), c.rate, c.connections, c.threads,
                c.duration, c.warmup, c.tokens.size(), c.token_header.c_str());
  PrintHeader("loadgen " + c.label, params);
  const Ns start = NowNs() + 50'000'000;
  std::vector<ThreadResult> results(c.threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < c.threads; ++t) {
    pool.emplace_back(Worker, std::cref(c), t, start, &results[t]);
  }
  for (auto& th : pool) th.join();
  std::vector<double> lat;
  std::uint64_t errors = 0, non2xx = 0, completed = 0, sent = 0;
  for (const ThreadResult& r : results) {
    for (Ns v : r.latencies) lat.push_back(static_cast<double>(v) / 1e6);
    errors += r.errors;
    non2xx += r.non2xx;
    completed += r.completed;
    sent += r.sent;
  }
  const double achieved = static_cast<double>(lat.size()) / c.duration;
  const double p50 = Percentile(lat, 0.5), p90 = Percentile(lat, 0.9),
               p99 = Percentile(lat, 0.99), p999 = Percentile(lat, 0.999),
               mx = lat.empty() ? 0 : *std::max_element(lat.begin(), lat.end());
  std::printf("| target req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max "
              "ms | errors | non-2xx |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::printf("| %.0f | %.0f | %.3f | %.3f | %.3f | %.3f | %.3f | %llu | %llu |\n\n", c.rate,
              achieved, p50, p90, p99, p999, mx, static_cast<unsigned long long>(errors),
              static_cast<unsigned long long>(non2xx));
  std::printf("RESULT bench=loadgen name=%s target_rate=%.0f connections=%d threads=%d "
              "achieved=%.0f p50_ms=%.4f p90_ms=%.4f p99_ms=%.4f p999_ms=%.4f max_ms=%.4f "
              "errors=%llu non2xx=%llu requests=%zu\n",
              c.label.c_str(), c.rate, c.connections, c.threads, achieved, p50, p90, p99,
              p999, mx, static_cast<unsigned long long>(errors),
              static_cast<unsigned long long>(non2xx), lat.size());
  std::fill(c.tokens.begin(), c.tokens.end(), std::string());
  if (smoke && (lat.empty() || errors != 0)) return 1;
  return 0;
}
