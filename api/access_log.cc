#include "api/access_log.h"

#include <charconv>
#include <ctime>

#include "api/handler.h"
#include "service/token_format.h"

namespace patledger::api {
namespace {

constexpr std::size_t kMaxRequestIdLength = 128;

void AppendUint(std::uint64_t v, std::string* out) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, end);
}

// "2026-11-29T00:12:34.567Z". The part up to the seconds is formatted once per second
// per thread.
void AppendTime(std::int64_t time_us, std::string* out) {
  thread_local std::int64_t cached_second = -1;
  thread_local char cached[32];
  thread_local std::size_t cached_length = 0;
  std::int64_t second = time_us / 1'000'000;
  std::int64_t micros = time_us % 1'000'000;
  if (micros < 0) {
    micros += 1'000'000;
    --second;
  }
  if (second != cached_second) {
    const std::time_t t = static_cast<std::time_t>(second);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    cached_length = std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_second = second;
  }
  out->append(cached, cached_length);
  const int millis = static_cast<int>(micros / 1000);
  const char frac[6] = {'.', static_cast<char>('0' + millis / 100),
                        static_cast<char>('0' + millis / 10 % 10),
                        static_cast<char>('0' + millis % 10), 'Z', ' '};
  out->append(frac, sizeof frac);
}

// Appends `text` ("-" if empty) with spaces and control characters replaced.
void AppendField(std::string_view text, std::string* out) {
  if (text.empty()) {
    out->push_back('-');
    return;
  }
  const std::size_t start = out->size();
  out->append(text);
  for (std::size_t i = start; i < out->size(); ++i) {
    const unsigned char c = static_cast<unsigned char>((*out)[i]);
    if (c <= ' ' || c == 0x7f) (*out)[i] = '_';
  }
}

void AppendId(std::uint64_t id, std::string* out) {
  if (id == 0) {
    out->push_back('-');
  } else {
    AppendUint(id, out);
  }
}

}  // namespace

void AppendAccessLogLine(const AccessLogEntry& e, std::string* out) {
  AppendTime(e.time_us, out);
  AppendField(e.client_address, out);
  out->push_back(' ');
  AppendField(e.method, out);
  out->push_back(' ');
  if (e.target.empty()) {
    out->push_back('-');
  } else {
    AppendField(FilteredTarget(e.target), out);
  }
  out->push_back(' ');
  AppendUint(static_cast<std::uint64_t>(e.status), out);
  out->push_back(' ');
  const std::uint64_t latency = e.latency_us > 0 ? static_cast<std::uint64_t>(e.latency_us) : 0;
  AppendUint(latency / 1000, out);
  const unsigned frac = static_cast<unsigned>(latency % 1000);
  const char ms[6] = {'.', static_cast<char>('0' + frac / 100),
                      static_cast<char>('0' + frac / 10 % 10), static_cast<char>('0' + frac % 10),
                      'm', 's'};
  out->append(ms, sizeof ms);
  out->append(" user=");
  AppendId(e.user_id, out);
  out->append(" token=");
  AppendId(e.token_id, out);
  out->append(" req=");
  std::string_view id = e.request_id.substr(0, kMaxRequestIdLength);
  // A client could put a token anywhere; FilteredTarget masks anything token-shaped.
  // Shorter than a token body, there is nothing to mask (and nothing to allocate).
  if (id.size() >= service::kTokenBodyLength) {
    AppendField(FilteredTarget(id), out);
  } else {
    AppendField(id, out);
  }
  out->push_back('\n');
}

}  // namespace patledger::api
