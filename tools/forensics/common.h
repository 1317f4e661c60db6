// tools/forensics/common.h (internal to tools/forensics/): what the commands share —
// opening a ledger read-only, replaying it to a point, names, the flat event shape,
// time formatting and output helpers.
//
// Thread safety: pure functions; a Names or Table belongs to one thread.
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "ledger/ledger.h"
#include "replay/state.h"
#include "tools/forensics/forensics.h"
#include "tools/forensics/progress.h"

namespace patledger::forensics::internal {

// ---- the ledger ---------------------------------------------------------------------

// <data>/ledger, or <data> itself when it is a RocksDB directory.
std::string LedgerDir(const Source& source);
// source.key_file, or <data>/token.key.
std::string KeyPath(const Source& source);

// The names of the files in `dir`, sorted. RocksDB never reuses a file number, so two
// equal listings taken around an open mean that no flush, compaction, WAL switch or
// MANIFEST switch happened in between.
std::vector<std::string> FileNames(const std::string& dir);

// Opens the ledger read-only (no lock, no write). Beside a running writer, retries
// until the directory did not change during the open (see common.cc).
Result<std::unique_ptr<ledger::Ledger>> OpenLedger(const Source& source);
// check_head_journal: false only for verify, which reports the journal itself.
Result<std::unique_ptr<ledger::Ledger>> OpenLedgerDir(const std::string& dir,
                                                      bool check_head_journal = true);

// A visitor returns StopScan() to end a Scan early; IsStopScan tells it from errors.
Status StopScan();
bool IsStopScan(const Status& s);

// The N of a "seq N: ..." message, or 0.
std::uint64_t SeqOf(std::string_view message);

// Where a replay stopped.
struct ReplayPoint {
  std::uint64_t seq = 0;           // the last record applied (0: none)
  std::int64_t at_us = INT64_MIN;  // its recorded time
};

// Applies the records of `ledger` to `state` (a fresh one), in order, up to and
// including `to_seq` and recorded at or before `to_time_us`; the scan stops at the
// first record past either. `also` (optional) sees each applied record after
// `state` did; an error from it stops the replay. Damage stops the replay with a
// kCorruption naming the seq (and advice to run verify).
Status ReplayTo(const ledger::Ledger& ledger, replay::State* state,
                std::int64_t to_time_us, std::uint64_t to_seq, const Io& io,
                const std::string& label,
                const std::function<Status(const ledger::RecordView&)>& also,
                ReplayPoint* point);

// The user named by `id_or_name` in `state`; kNotFound otherwise.
Result<replay::UserRecord> FindUser(const replay::State& state,
                                    const std::string& id_or_name);

// Valid at `at_us`, judged on a state replayed up to `at_us`: not revoked, not expired
// (the UTC date of at_us is before the expiry day), owner exists and is not blocked.
enum class Validity { kValid, kRevoked, kExpired, kOwnerBlocked, kUnknownOwner };
// `owner`: the token's owner in that state (nullptr if there is none).
Validity ValidityAt(const replay::TokenMeta& token, const replay::UserRecord* owner,
                    std::int64_t at_us);
std::string_view ValidityName(Validity v);  // "active", "revoked", "expired", ...

// Who caused a record, and where from.
struct Who {
  std::uint64_t seq = 0;
  std::int64_t at_us = 0;
  std::uint64_t user_id = 0;   // 0: the local CLI
  std::uint64_t token_id = 0;  // 0: no token (CLI)
  bool via_sudo = false;
  std::string client_address, request_id;
};
Who WhoOf(std::uint64_t seq, const schema::Envelope& envelope);
// Reads record `seq` (verified by Ledger::Read) and says who caused it. `bytes` keeps
// the envelope for the caller.
Result<Who> ReadWho(const ledger::Ledger& ledger, std::uint64_t seq, std::string* bytes);
// {"seq","at","at_us","by_user_id","by_username","by_token_id","via_sudo",
//  "client_address","request_id"}
boost::json::object WhoJson(const Who& who, const std::string& username);
// "cli", "root/t1", or for sudo "root/t1 sudo as alice" (`token_owner`: the username
// of the token's owner, when known).
std::string ByText(const Who& who, const std::string& username,
                   const std::string& token_owner = "");

// Usernames of a replayed state, by id (a copy: State's accessors must not be called
// while ForEachToken holds its lock).
std::unordered_map<std::uint64_t, replay::UserRecord> UsersById(
    const replay::State& state);
std::string UserText(std::uint64_t id, const std::string& username);  // "alice (#5)"

// ---- names from the log -------------------------------------------------------------

// Usernames and token owners, learnt from the records as they stream by (memory: one
// entry per user and per token).
class Names {
 public:
  void Observe(const schema::Envelope& envelope);
  // "alice", or "#5" for an id never registered; "cli" for user 0.
  std::string User(std::uint64_t user_id) const;
  std::optional<std::uint64_t> UserId(const std::string& username) const;
  std::uint64_t OwnerOf(std::uint64_t token_id) const;  // 0 if unknown

 private:
  std::unordered_map<std::uint64_t, std::string> users_;
  std::unordered_map<std::string, std::uint64_t> ids_;
  std::unordered_map<std::uint64_t, std::uint64_t> owners_;
};

// ---- the flat event -----------------------------------------------------------------

// One record, flat: the shape of `log --json`, `export` and the CSV columns.
struct FlatEvent {
  std::uint64_t seq = 0;
  std::int64_t at_us = 0;
  std::string type;  // schema::EventTypeName: "TokenCreated", ...
  std::uint16_t txn_index = 0, txn_count = 0;
  std::uint64_t actor_user_id = 0, actor_token_id = 0;
  std::optional<std::string> actor_username;
  bool via_sudo = false;
  std::string client_address, request_id;
  std::optional<std::uint64_t> user_id;  // subject user (the token's owner for tokens)
  std::optional<std::string> username, name, email;
  std::optional<bool> admin;
  std::optional<std::string> change;  // "blocked", "unblocked", "admin_granted", ...
  std::optional<std::uint64_t> token_id;
  std::optional<std::string> token_name, description;
  std::optional<std::uint32_t> scopes;
  std::optional<std::int32_t> expires_day;  // index::kNoExpiry: never
  std::optional<std::uint64_t> rotated_from;
  std::optional<std::string> reason;  // "by_owner", "rotated", "reported_leaked", ...
  std::optional<std::uint32_t> format_version;
  std::optional<std::uint64_t> key_fingerprint;
  std::optional<std::string> token_prefix;
};

// REQUIRES: names has observed every record before this one (and may have observed
// this one).
FlatEvent Flatten(const ledger::RecordView& record, const Names& names);

// The JSON object of an event, every column present (null when not applicable).
boost::json::object EventJson(const FlatEvent& e);
// {"seq":N,"type":"Damage","error":"..."} with every other column null.
boost::json::object DamageJson(std::uint64_t seq, const std::string& error);
// The CSV columns, in order, and one row.
const std::vector<std::string>& EventColumns();
std::string CsvRow(const boost::json::object& event);

// People: "token 12 \"ci\" of alice (#5): api; expires 2026-04-01".
std::string EventDetails(const FlatEvent& e);
// "cli", "root/t1", "root/t1 sudo as alice".
std::string ActorText(const FlatEvent& e, const Names& names);

// ---- time and text ------------------------------------------------------------------

std::string When(std::int64_t us);      // "2026-03-04T10:15:02Z"
std::string JsonTime(std::int64_t us);  // FormatTimestamp: "2026-03-04T10:15:02.123Z"
// True when local time differs from UTC (a LOCAL column is worth printing).
bool ShowLocal();
std::string LocalHint(std::int64_t us);           // "03-04 11:15 CET"
std::string Expiry(std::int32_t day);             // "2026-04-01" or "never"
boost::json::value ExpiryJson(std::int32_t day);  // "2026-04-01" or null
boost::json::array ScopesJson(std::uint32_t scopes);
std::string ScopesText(std::uint32_t scopes);  // "api, read_user" ("-" for none)
std::string Hex(std::span<const std::uint8_t> bytes);
std::optional<ChainHash> ParseChain(std::string_view hex);
std::string Quote(const std::string& s);  // "\"...\"" with control characters escaped

void PrintJson(std::ostream& out, const boost::json::object& object);

// Aligned text columns. Only for results bounded by the state (users, tokens),
// never for event streams (those use FixedRow).
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return rows_.empty(); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// One line of fixed-width columns; the last cell is not padded.
std::string FixedRow(const std::vector<std::pair<std::string, std::size_t>>& cells);

// A multi-event type filter: true when `type` (schema::EventTypeName) is in `wanted`
// (case and '_' ignored) or `wanted` is empty. InvalidArgument for an unknown name.
Result<std::vector<std::string>> NormalizeTypes(const std::vector<std::string>& wanted);
bool TypeWanted(const std::vector<std::string>& normalized, const std::string& type);

}  // namespace patledger::forensics::internal
