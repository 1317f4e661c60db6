#include "tools/forensics/common.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <thread>

#include "common/clock.h"
#include "index/token_index.h"
#include "schema/event_codec.h"
#include "service/scopes.h"

namespace patledger::forensics::internal {

namespace fs = std::filesystem;
namespace json = boost::json;

// ---- the ledger ---------------------------------------------------------------------

std::string LedgerDir(const Source& source) {
  const fs::path data(source.data);
  std::error_code ec;
  if (!fs::exists(data / "ledger", ec) && fs::exists(data / "CURRENT", ec)) {
    return data.string();
  }
  return (data / "ledger").string();
}

std::string KeyPath(const Source& source) {
  if (!source.key_file.empty()) return source.key_file;
  return (fs::path(source.data) / "token.key").string();
}

std::vector<std::string> FileNames(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

Result<std::unique_ptr<ledger::Ledger>> OpenLedgerDir(const std::string& dir,
                                                      bool check_head_journal) {
  // RocksDB's read-only open reads the MANIFEST, then lists and replays the WAL files.
  // Beside a running writer, a flush or compaction that finishes in between makes it
  // fail ("No such file or directory", reported as IOError or Corruption), or worse,
  // succeed with a view that misses the records of a WAL deleted after its flush
  // (which reads as a gap). So the open is retried until the directory's listing is
  // the same before and after it; once open, the handle keeps its files open and its
  // view is stable.
  ledger::Options o;
  o.read_only = true;
  o.check_head_journal = check_head_journal;
  Result<std::unique_ptr<ledger::Ledger>> opened = Err(Status::Internal("not tried"));
  for (int attempt = 0; attempt < 8; ++attempt) {
    const std::vector<std::string> before = FileNames(dir);
    opened = ledger::Ledger::Open(dir, o);
    const bool stable = FileNames(dir) == before;
    const bool vanished =
        !opened && (opened.error().code() == Status::Code::kIOError ||
                    (opened.error().IsCorruption() &&
                     opened.error().message().find("No such file or directory") !=
                         std::string::npos));
    if (stable && !vanished) break;
    opened = Err(Status::Internal("not tried"));
    std::this_thread::sleep_for(std::chrono::milliseconds(20 << std::min(attempt, 4)));
    if (attempt == 7) opened = ledger::Ledger::Open(dir, o);  // the best we can do
  }
  return opened;
}

Result<std::unique_ptr<ledger::Ledger>> OpenLedger(const Source& source) {
  return OpenLedgerDir(LedgerDir(source));
}

namespace {
constexpr std::string_view kStopMessage = "forensics: scan ended on purpose";
}

Status StopScan() { return Status::Internal(std::string(kStopMessage)); }

bool IsStopScan(const Status& s) {
  return s.code() == Status::Code::kInternal && s.message() == kStopMessage;
}

std::uint64_t SeqOf(std::string_view message) {
  if (!message.starts_with("seq ")) return 0;
  std::uint64_t seq = 0;
  const char* begin = message.data() + 4;
  auto [ptr, ec] = std::from_chars(begin, message.data() + message.size(), seq);
  if (ec != std::errc() || ptr == begin) return 0;
  return seq;
}

Status ReplayTo(const ledger::Ledger& ledger, replay::State* state,
                std::int64_t to_time_us, std::uint64_t to_seq, const Io& io,
                const std::string& label,
                const std::function<Status(const ledger::RecordView&)>& also,
                ReplayPoint* point) {
  Progress progress(io.err, io.progress, label, std::min(ledger.last_seq(), to_seq));
  ReplayPoint where;
  std::uint64_t done = 0;
  ledger::ScanOptions scan;
  scan.to_seq = to_seq;
  Status s = ledger.Scan(scan, [&](const ledger::RecordView& r) -> Status {
    if (r.envelope->recorded_at_us() > to_time_us) return StopScan();
    PATLEDGER_RETURN_IF_ERROR(state->Apply(r));
    where.seq = r.seq;
    where.at_us = r.envelope->recorded_at_us();
    if (also) PATLEDGER_RETURN_IF_ERROR(also(r));
    progress.Update(++done);
    return Status::OK();
  });
  progress.Done();
  if (point) *point = where;
  if (IsStopScan(s)) return Status::OK();
  if (s.IsCorruption()) {
    return Status::Corruption(
        s.message() + " (run `patledger verify` for every problem of the ledger)");
  }
  return s;
}

Result<replay::UserRecord> FindUser(const replay::State& state,
                                    const std::string& id_or_name) {
  std::uint64_t id = 0;
  const char* end = id_or_name.data() + id_or_name.size();
  auto [ptr, ec] = std::from_chars(id_or_name.data(), end, id);
  std::optional<replay::UserRecord> user;
  if (!id_or_name.empty() && ec == std::errc() && ptr == end) {
    user = state.FindUser(id);
  } else {
    user = state.FindUserByName(id_or_name);
  }
  if (!user) return Err(Status::NotFound("no user '" + id_or_name + "' in the ledger"));
  return *user;
}

Validity ValidityAt(const replay::TokenMeta& token, const replay::UserRecord* owner,
                    std::int64_t at_us) {
  if (token.revoked()) return Validity::kRevoked;
  if (token.expires_day != index::kNoExpiry && DayOf(at_us) >= token.expires_day) {
    return Validity::kExpired;
  }
  if (owner == nullptr) return Validity::kUnknownOwner;
  if (owner->blocked) return Validity::kOwnerBlocked;
  return Validity::kValid;
}

std::string_view ValidityName(Validity v) {
  switch (v) {
    case Validity::kValid:
      return "active";
    case Validity::kRevoked:
      return "revoked";
    case Validity::kExpired:
      return "expired";
    case Validity::kOwnerBlocked:
      return "owner_blocked";
    case Validity::kUnknownOwner:
      return "unknown_owner";
  }
  return "unknown";
}

Who WhoOf(std::uint64_t seq, const schema::Envelope& env) {
  Who w;
  w.seq = seq;
  w.at_us = env.recorded_at_us();
  if (const auto* a = env.actor()) {
    w.user_id = a->user_id();
    w.token_id = a->token_id();
    w.via_sudo = a->via_sudo();
  }
  w.client_address = env.client_address() ? env.client_address()->str() : "";
  w.request_id = env.request_id() ? env.request_id()->str() : "";
  return w;
}

Result<Who> ReadWho(const ledger::Ledger& ledger, std::uint64_t seq, std::string* bytes) {
  auto read = ledger.Read(seq);
  if (!read) return Err(read.error());
  *bytes = std::move(*read);
  return WhoOf(seq, *schema::GetEnvelope(bytes->data()));
}

json::object WhoJson(const Who& w, const std::string& username) {
  json::object o;
  o["seq"] = w.seq;
  o["at"] = JsonTime(w.at_us);
  o["at_us"] = w.at_us;
  o["by_user_id"] = w.user_id;
  o["by_username"] = w.user_id == 0 ? json::value(nullptr) : json::value(username);
  o["by_token_id"] = w.token_id == 0 ? json::value(nullptr) : json::value(w.token_id);
  o["via_sudo"] = w.via_sudo;
  o["client_address"] = w.client_address;
  o["request_id"] = w.request_id;
  return o;
}

std::string ByText(const Who& w, const std::string& username,
                   const std::string& token_owner) {
  if (w.user_id == 0 && w.token_id == 0) return "cli";
  const std::string user = w.user_id == 0 ? "cli" : username;
  if (w.via_sudo && !token_owner.empty()) {
    return token_owner + "/t" + std::to_string(w.token_id) + " sudo as " + user;
  }
  std::string s = user;
  if (w.token_id) s += "/t" + std::to_string(w.token_id);
  if (w.via_sudo) s += " sudo";
  return s;
}

std::unordered_map<std::uint64_t, replay::UserRecord> UsersById(
    const replay::State& state) {
  std::unordered_map<std::uint64_t, replay::UserRecord> out;
  for (replay::UserRecord& u : state.Users()) out.emplace(u.id, std::move(u));
  return out;
}

std::string UserText(std::uint64_t id, const std::string& username) {
  return username + " (#" + std::to_string(id) + ")";
}

// ---- names --------------------------------------------------------------------------

void Names::Observe(const schema::Envelope& env) {
  switch (env.event_type()) {
    case schema::Event::UserRegistered: {
      const auto* e = env.event_as_UserRegistered();
      std::string name = e->username() ? e->username()->str() : std::string();
      ids_.emplace(name, e->user_id());
      users_.emplace(e->user_id(), std::move(name));
      break;
    }
    case schema::Event::TokenCreated: {
      const auto* e = env.event_as_TokenCreated();
      owners_.emplace(e->token_id(), e->user_id());
      break;
    }
    default:
      break;
  }
}

std::string Names::User(std::uint64_t user_id) const {
  if (user_id == 0) return "cli";
  auto it = users_.find(user_id);
  return it == users_.end() ? std::string("#") + std::to_string(user_id) : it->second;
}

std::optional<std::uint64_t> Names::UserId(const std::string& username) const {
  auto it = ids_.find(username);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

std::uint64_t Names::OwnerOf(std::uint64_t token_id) const {
  auto it = owners_.find(token_id);
  return it == owners_.end() ? 0 : it->second;
}

// ---- the flat event -----------------------------------------------------------------

namespace {
std::string Str(const flatbuffers::String* s) { return s ? s->str() : std::string(); }
}  // namespace

FlatEvent Flatten(const ledger::RecordView& record, const Names& names) {
  const schema::Envelope& env = *record.envelope;
  FlatEvent e;
  e.seq = record.seq;
  e.at_us = env.recorded_at_us();
  e.type = schema::EventTypeName(env.event_type());
  if (const auto* sq = env.sequencing()) {
    e.txn_index = sq->txn_index();
    e.txn_count = sq->txn_count();
  }
  if (const auto* a = env.actor()) {
    e.actor_user_id = a->user_id();
    e.actor_token_id = a->token_id();
    e.via_sudo = a->via_sudo();
  }
  if (e.actor_user_id != 0) {
    std::string n = names.User(e.actor_user_id);
    if (!n.starts_with("#")) e.actor_username = std::move(n);
  }
  e.client_address = Str(env.client_address());
  e.request_id = Str(env.request_id());
  auto user_name = [&](std::uint64_t id) -> std::optional<std::string> {
    std::string n = names.User(id);
    if (n.starts_with("#")) return std::nullopt;
    return n;
  };
  switch (env.event_type()) {
    case schema::Event::LedgerInitialized: {
      const auto* x = env.event_as_LedgerInitialized();
      e.format_version = x->format_version();
      e.key_fingerprint = x->key_fingerprint();
      e.token_prefix = Str(x->token_prefix());
      break;
    }
    case schema::Event::UserRegistered: {
      const auto* x = env.event_as_UserRegistered();
      e.user_id = x->user_id();
      e.username = Str(x->username());
      e.name = Str(x->name());
      e.email = Str(x->email());
      e.admin = x->admin();
      break;
    }
    case schema::Event::UserChanged: {
      const auto* x = env.event_as_UserChanged();
      e.user_id = x->user_id();
      e.username = user_name(x->user_id());
      e.change = std::string(schema::UserChangeName(x->change()));
      break;
    }
    case schema::Event::TokenCreated: {
      const auto* x = env.event_as_TokenCreated();
      e.user_id = x->user_id();
      e.username = user_name(x->user_id());
      e.token_id = x->token_id();
      e.token_name = Str(x->name());
      e.description = Str(x->description());
      e.scopes = x->scopes();
      e.expires_day = x->expires_day();
      e.rotated_from = x->rotated_from();
      break;
    }
    case schema::Event::TokenRevoked: {
      const auto* x = env.event_as_TokenRevoked();
      e.token_id = x->token_id();
      if (const std::uint64_t owner = names.OwnerOf(x->token_id())) {
        e.user_id = owner;
        e.username = user_name(owner);
      }
      e.reason = std::string(schema::RevokeReasonName(x->reason()));
      break;
    }
    default:
      break;
  }
  return e;
}

const std::vector<std::string>& EventColumns() {
  static const std::vector<std::string> kColumns = {
      "seq",           "recorded_at",    "recorded_at_us",
      "type",          "txn_index",      "txn_count",
      "actor_user_id", "actor_username", "actor_token_id",
      "via_sudo",      "client_address", "request_id",
      "user_id",       "username",       "name",
      "email",         "admin",          "change",
      "token_id",      "token_name",     "description",
      "scopes",        "expires_at",     "rotated_from",
      "reason",        "format_version", "key_fingerprint",
      "token_prefix",  "error"};
  return kColumns;
}

namespace {

template <typename T>
json::value Opt(const std::optional<T>& v) {
  if (!v) return nullptr;
  return json::value(*v);
}

json::object EmptyEvent() {
  json::object o;
  for (const std::string& c : EventColumns()) o[c] = nullptr;
  return o;
}

std::string Fingerprint(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

json::object EventJson(const FlatEvent& e) {
  json::object o = EmptyEvent();
  o["seq"] = e.seq;
  o["recorded_at"] = JsonTime(e.at_us);
  o["recorded_at_us"] = e.at_us;
  o["type"] = e.type;
  o["txn_index"] = e.txn_index;
  o["txn_count"] = e.txn_count;
  o["actor_user_id"] = e.actor_user_id;
  o["actor_username"] = Opt(e.actor_username);
  o["actor_token_id"] = e.actor_token_id;
  o["via_sudo"] = e.via_sudo;
  o["client_address"] = e.client_address;
  o["request_id"] = e.request_id;
  o["user_id"] = Opt(e.user_id);
  o["username"] = Opt(e.username);
  o["name"] = Opt(e.name);
  o["email"] = Opt(e.email);
  o["admin"] = Opt(e.admin);
  o["change"] = Opt(e.change);
  o["token_id"] = Opt(e.token_id);
  o["token_name"] = Opt(e.token_name);
  o["description"] = Opt(e.description);
  if (e.scopes) o["scopes"] = ScopesJson(*e.scopes);
  if (e.expires_day) o["expires_at"] = ExpiryJson(*e.expires_day);
  if (e.rotated_from) {
    o["rotated_from"] =
        *e.rotated_from == 0 ? json::value(nullptr) : json::value(*e.rotated_from);
  }
  o["reason"] = Opt(e.reason);
  o["format_version"] = Opt(e.format_version);
  if (e.key_fingerprint) o["key_fingerprint"] = Fingerprint(*e.key_fingerprint);
  o["token_prefix"] = Opt(e.token_prefix);
  return o;
}

json::object DamageJson(std::uint64_t seq, const std::string& error) {
  json::object o = EmptyEvent();
  o["seq"] = seq;
  o["type"] = "Damage";
  o["error"] = error;
  return o;
}

namespace {

std::string CsvCell(const json::value& v) {
  std::string text;
  if (v.is_null()) return "";
  if (v.is_string()) {
    text = std::string(v.get_string());
  } else if (v.is_bool()) {
    text = v.get_bool() ? "true" : "false";
  } else if (v.is_array()) {
    for (const json::value& x : v.get_array()) {
      if (!text.empty()) text += ' ';
      text += x.is_string() ? std::string(x.get_string()) : json::serialize(x);
    }
  } else {
    text = json::serialize(v);
  }
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

}  // namespace

std::string CsvRow(const json::object& event) {
  std::string row;
  bool first = true;
  for (const std::string& c : EventColumns()) {
    if (!first) row += ',';
    first = false;
    if (const json::value* v = event.if_contains(c)) row += CsvCell(*v);
  }
  return row;
}

std::string EventDetails(const FlatEvent& e) {
  auto who = [&](std::uint64_t id) {
    return (e.username ? *e.username : std::string("#") + std::to_string(id)) + " (#" +
           std::to_string(id) + ")";
  };
  if (e.type == "LedgerInitialized") {
    return "ledger created (format " + std::to_string(e.format_version.value_or(0)) +
           ", token prefix " + e.token_prefix.value_or("") + ", key fingerprint " +
           Fingerprint(e.key_fingerprint.value_or(0)) + ")";
  }
  if (e.type == "UserRegistered") {
    return "user " + who(*e.user_id) + " registered: " + Quote(e.name.value_or("")) +
           " <" + e.email.value_or("") + ">" + (e.admin.value_or(false) ? ", admin" : "");
  }
  if (e.type == "UserChanged") {
    return "user " + who(*e.user_id) + ": " + e.change.value_or("?");
  }
  if (e.type == "TokenCreated") {
    std::string s = "token " + std::to_string(*e.token_id) + " " +
                    Quote(e.token_name.value_or("")) + " for " + who(*e.user_id) + ": " +
                    ScopesText(e.scopes.value_or(0)) + "; expires " +
                    Expiry(e.expires_day.value_or(index::kNoExpiry));
    if (e.rotated_from && *e.rotated_from) {
      s += "; rotated from " + std::to_string(*e.rotated_from);
    }
    return s;
  }
  if (e.type == "TokenRevoked") {
    std::string s = "token " + std::to_string(*e.token_id);
    if (e.user_id) s += " of " + who(*e.user_id);
    return s + " revoked: " + e.reason.value_or("?");
  }
  return e.type;
}

std::string ActorText(const FlatEvent& e, const Names& names) {
  Who w;
  w.user_id = e.actor_user_id;
  w.token_id = e.actor_token_id;
  w.via_sudo = e.via_sudo;
  const std::uint64_t owner = e.via_sudo ? names.OwnerOf(e.actor_token_id) : 0;
  return ByText(w, names.User(e.actor_user_id), owner ? names.User(owner) : "");
}

// ---- time and text ------------------------------------------------------------------

std::string When(std::int64_t us) {
  std::string t = FormatTimestamp(us);  // 2026-03-04T10:15:02.123Z
  return t.substr(0, 19) + "Z";
}

std::string JsonTime(std::int64_t us) { return FormatTimestamp(us); }

namespace {

bool LocalTm(std::int64_t us, struct tm* out) {
  const time_t secs =
      static_cast<time_t>(us >= 0 ? us / 1'000'000 : (us - 999'999) / 1'000'000);
  return localtime_r(&secs, out) != nullptr;
}

}  // namespace

bool ShowLocal() {
  static const bool show = [] {
    tzset();
    const std::int64_t now = SystemClock::Get()->NowMicros();
    struct tm winter {
    }, summer{};
    // Either half of the year differing from UTC is enough.
    if (!LocalTm(now, &winter) || !LocalTm(now + 182 * kMicrosPerDay, &summer))
      return false;
    return winter.tm_gmtoff != 0 || summer.tm_gmtoff != 0;
  }();
  return show;
}

std::string LocalHint(std::int64_t us) {
  struct tm t {};
  if (!LocalTm(us, &t)) return "?";
  char buf[48];
  std::strftime(buf, sizeof buf, "%m-%d %H:%M %Z", &t);
  return buf;
}

std::string Expiry(std::int32_t day) {
  return day == index::kNoExpiry ? std::string("never") : FormatDate(day);
}

json::value ExpiryJson(std::int32_t day) {
  if (day == index::kNoExpiry) return nullptr;
  return json::value(FormatDate(day));
}

json::array ScopesJson(std::uint32_t scopes) {
  json::array a;
  for (std::string_view n : service::ScopeNames(scopes)) a.emplace_back(n);
  return a;
}

std::string ScopesText(std::uint32_t scopes) {
  std::string s = service::FormatScopes(scopes);
  return s.empty() ? "-" : s;
}

std::string Hex(std::span<const std::uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

std::optional<ChainHash> ParseChain(std::string_view hex) {
  ChainHash out{};
  if (hex.size() != out.size() * 2) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

void PrintJson(std::ostream& out, const json::object& object) {
  out << json::serialize(object) << '\n';
}

namespace {

// Display width of UTF-8 text (code points; good enough for names).
std::size_t Width(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

void Table::Print(std::ostream& out) const {
  std::vector<std::size_t> widths(headers_.size(), 0);
  for (std::size_t i = 0; i < headers_.size(); ++i) widths[i] = Width(headers_[i]);
  for (const auto& row : rows_) {
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], Width(row[i]));
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (std::size_t i = 0; i < cells.size() && i < widths.size(); ++i) {
      s += cells[i];
      if (i + 1 < cells.size()) s.append(widths[i] - Width(cells[i]) + 2, ' ');
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    out << s << '\n';
  };
  line(headers_);
  for (const auto& row : rows_) line(row);
}

std::string FixedRow(const std::vector<std::pair<std::string, std::size_t>>& cells) {
  std::string s;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const auto& [text, width] = cells[i];
    s += text;
    if (i + 1 < cells.size()) {
      const std::size_t w = Width(text);
      s.append(w < width ? width - w : 0, ' ');
      s += ' ';
    }
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

namespace {

std::string Fold(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c != '_' && c != '-')
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

}  // namespace

Result<std::vector<std::string>> NormalizeTypes(const std::vector<std::string>& wanted) {
  static const std::vector<std::string> kKnown = {"ledgerinitialized", "userregistered",
                                                  "userchanged", "tokencreated",
                                                  "tokenrevoked"};
  std::vector<std::string> out;
  for (const std::string& w : wanted) {
    std::string_view rest = w;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      std::string one = Fold(rest.substr(0, comma));
      rest =
          comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (one.empty()) continue;
      if (std::find(kKnown.begin(), kKnown.end(), one) == kKnown.end()) {
        return Err(Status::InvalidArgument(
            "unknown event type '" + std::string(w) +
            "' (one of LedgerInitialized, UserRegistered, UserChanged, TokenCreated, "
            "TokenRevoked; case and '_' do not matter)"));
      }
      out.push_back(one);
    }
  }
  return out;
}

bool TypeWanted(const std::vector<std::string>& normalized, const std::string& type) {
  if (normalized.empty()) return true;
  return std::find(normalized.begin(), normalized.end(), Fold(type)) != normalized.end();
}

}  // namespace patledger::forensics::internal
