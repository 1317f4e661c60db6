// api/access_log.h: the format of one access-log line (api/server.h writes them).
//
//   2026-11-29T00:12:34.567Z 127.0.0.1 GET /api/v4/user?private_token=[FILTERED] 200 0.123ms user=1 token=3 req=abc
//
// Fields, separated by one space: UTC time with milliseconds; client address; method;
// target, passed through api::FilteredTarget so no token reaches the log; status;
// latency in milliseconds with three decimals; the user and token ids the request
// authenticated as ("-" for nobody); the X-Request-Id header ("-" if absent). A field
// the client controls never contains a space or a control character (they become '_'),
// and the request id is filtered like the target and cut at 128 bytes. Never a header
// other than X-Request-Id, never a body.
//
// Thread safety: a pure function (its timestamp cache is thread_local).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace patledger::api {

struct AccessLogEntry {
  std::int64_t time_us = 0;         // UTC microseconds since the epoch
  std::string_view client_address;  // "" -> "-"
  std::string_view method;          // "" -> "-" (the request line was not parsed)
  std::string_view target;          // raw; filtered here. "" -> "-"
  int status = 0;
  std::int64_t latency_us = 0;
  std::uint64_t user_id = 0;   // 0: nobody
  std::uint64_t token_id = 0;  // 0: none
  std::string_view request_id;  // "" -> "-"
};

// Appends one line, '\n' included, to *out.
void AppendAccessLogLine(const AccessLogEntry& entry, std::string* out);

}  // namespace patledger::api
