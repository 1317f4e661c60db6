// tests/reliability/serve_process.h: the real `patledger serve` as a child process and
// a small synchronous HTTP/1.1 keep-alive client for it — the minimum of
// tests/e2e_test.cc's Child and HttpClient, plus what a crash loop needs: SIGKILL at
// any moment, a wait on stderr that wakes as soon as the text arrives, and a client
// whose every failure (connection refused or reset by a killed server, timeout) is
// just "no answer".
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "api/handler.h"

extern char** environ;

namespace patledger::reliability {

using SteadyClock = std::chrono::steady_clock;

inline const std::string& PatledgerBinary() {
  static const std::string path =
      std::string(PATLEDGER_TEST_BINARY_DIR) + "/tools/patledger";
  return path;
}

// A child process with stdout and stderr collected by reader threads. It gets
// SIGKILL when this object is destroyed while it runs, or when the test process dies
// (PR_SET_PDEATHSIG), so no server outlives a failed test.
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
    started_ = SteadyClock::now();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls until exec.
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
    Kill();
    if (out_reader_.joinable()) out_reader_.join();
    if (err_reader_.joinable()) err_reader_.join();
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  SteadyClock::time_point started() const { return started_; }
  std::string out() const {
    std::lock_guard lock(mu_);
    return out_;
  }
  std::string err() const {
    std::lock_guard lock(mu_);
    return err_;
  }

  // Waits until stderr contains `text`; false after `timeout` or once stderr closed
  // (the child exited) without it.
  bool WaitForErr(std::string_view text, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      return err_.find(text) != std::string::npos || err_closed_;
    }) && err_.find(text) != std::string::npos;
  }

  // SIGKILL and reap (no-op once reaped).
  void Kill() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
      reaped_ = true;
    }
  }
  void Signal(int sig) {
    if (!reaped_) ::kill(pid_, sig);
  }
  // The exit code once the child exited by itself within `timeout`; nullopt if it is
  // still running or died of a signal.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (!reaped_ && SteadyClock::now() < deadline) {
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
        reaped_ = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!reaped_ || !WIFEXITED(status_)) return std::nullopt;
    return WEXITSTATUS(status_);
  }
  // True while the child has not exited (it is reaped if it has).
  bool Running() {
    if (reaped_) return false;
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) reaped_ = true;
    return !reaped_;
  }

 private:
  void Drain(int fd, std::string* into) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      std::lock_guard lock(mu_);
      into->append(buf, static_cast<std::size_t>(n));
      cv_.notify_all();
    }
    ::close(fd);
    std::lock_guard lock(mu_);
    if (into == &err_) err_closed_ = true;
    cv_.notify_all();
  }

  pid_t pid_ = -1;
  int status_ = 0;
  bool reaped_ = false;
  SteadyClock::time_point started_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string out_, err_;
  bool err_closed_ = false;
  std::thread out_reader_, err_reader_;
};

// One keep-alive connection to 127.0.0.1:port, reopened after any failure. Every
// failure — refused, reset, closed, timed out — is a nullopt: to a client of a
// server that may be killed at any moment, they all mean "no answer".
class HttpClient {
 public:
  explicit HttpClient(std::uint16_t port,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10))
      : port_(port), timeout_(timeout), socket_(ioc_) {}

  std::optional<api::Response> Do(api::Request req) {
    req.set(boost::beast::http::field::host, "127.0.0.1:" + std::to_string(port_));
    req.keep_alive(true);
    req.prepare_payload();
    try {
      if (!socket_.is_open()) {
        socket_.connect(boost::asio::ip::tcp::endpoint(
            boost::asio::ip::make_address("127.0.0.1"), port_));
        buffer_.clear();
      }
      boost::beast::http::write(socket_, req);
    } catch (const std::exception&) {
      Close();
      return std::nullopt;
    }
    auto res = Read();
    if (!res || !res->keep_alive()) Close();
    return res;
  }

  std::optional<api::Response> Call(boost::beast::http::verb method,
                                    const std::string& target, std::string_view token,
                                    std::string body = {}) {
    api::Request req(method, target, 11);
    if (!token.empty()) req.set("PRIVATE-TOKEN", token);
    if (!body.empty()) {
      req.set(boost::beast::http::field::content_type, "application/json");
      req.body() = std::move(body);
    }
    return Do(std::move(req));
  }

 private:
  std::optional<api::Response> Read() {
    namespace http = boost::beast::http;
    const auto deadline = SteadyClock::now() + timeout_;
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.body_limit(1 << 24);
    for (;;) {
      if (buffer_.size() > 0) {
        boost::beast::error_code ec;
        const std::size_t n = parser.put(buffer_.data(), ec);
        buffer_.consume(n);
        if (ec && ec != http::error::need_more) return std::nullopt;
        if (parser.is_done()) return parser.release();
        if (!ec && n > 0) continue;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - SteadyClock::now());
      pollfd pfd{socket_.native_handle(), POLLIN, 0};
      if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
        return std::nullopt;
      }
      boost::beast::error_code ec;
      const std::size_t n = socket_.read_some(buffer_.prepare(64 * 1024), ec);
      if (ec) return std::nullopt;
      buffer_.commit(n);
    }
  }
  void Close() {
    boost::beast::error_code ignored;
    socket_.close(ignored);
    buffer_.clear();
  }

  std::uint16_t port_;
  std::chrono::milliseconds timeout_;
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::socket socket_;
  boost::beast::flat_buffer buffer_;
};

// `patledger serve --data <data>` on a free port of 127.0.0.1.
class Server {
 public:
  explicit Server(const std::string& data)
      : child_({PatledgerBinary(), "serve", "--data", data, "--listen", "127.0.0.1:0",
                "--threads", "2", "--access-log", "/dev/null"}) {}

  // Waits for "listening on" (the port) and then polls /-/readiness until it answers
  // 200. False if the child exits or `timeout` passes first.
  bool WaitReady(std::chrono::milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    const std::string marker = "listening on http://127.0.0.1:";
    if (!child_.WaitForErr(marker, timeout)) return false;
    const std::string err = child_.err();
    port_ = static_cast<std::uint16_t>(
        std::stoul(err.substr(err.find(marker) + marker.size())));
    HttpClient probe(port_, std::chrono::seconds(5));
    while (SteadyClock::now() < deadline) {
      auto r = probe.Call(boost::beast::http::verb::get, "/-/readiness", {});
      if (r && r->result_int() == 200) return true;
      if (!child_.Running()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }

  std::uint16_t port() const { return port_; }
  Child& child() { return child_; }

 private:
  Child child_;
  std::uint16_t port_ = 0;
};

}  // namespace patledger::reliability
