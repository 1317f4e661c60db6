// tools/forensics/forensics.h: patledger's audit and offline forensic toolkit (issue 4).
//
// Every subcommand is one function here; `patledger <command>` parses its options
// (forensics::Run, called from tools/cli.cc) and calls it, and tests call it directly.
// docs/forensics.md is the user's guide, with the JSON shapes and a worked leak
// investigation.
//
//   verify    every record (checksum, Verifier, sequence, chain), the head, the WAL
//             tail and the consistency of the whole log; every problem with its seq
//   log       events, filtered by seq, time, user, token and type; --follow tails
//   export    the whole event stream, flat, as JSON lines or CSV
//   history   the life of one token's rotation family, or of one user
//   state     every token valid at an instant (or after a seq)
//   diff      what changed between two instants
//   triage    candidate strings from a secret scanner: ours? known? whose? live?
//   stats     users and tokens by state and scope, tokens per user, expiry by month
//   backup    a consistent, verified copy of a (live) ledger; restore copies one back
//   generate  a deterministic synthetic ledger with its own ground truth (generator.h)
//
// Ground rules, for every command but generate and restore (which write only to
// their new target directory):
//   - The ledger is opened read-only (ledger::Options::read_only: RocksDB
//     OpenForReadOnly, which takes no lock and writes no file, not even its info log),
//     so the commands work on the live directory of a running `patledger serve`.
//     Nothing is ever written to the data directory; tests hash every file of it
//     before and after each command.
//   - Memory is bounded by the state being rebuilt (users, tokens), never by the
//     number of events read: events are streamed, never collected.
//   - No output ever contains a token secret. Plaintext tokens are read from stdin or
//     a file (history --token-value -, triage FILE|-), never from the command line,
//     and are identified in output only by line number and a SHA-256 fingerprint.
//   - A damaged ledger is reported with the sequence number and what is wrong.
//     verify, log and export keep going past damage and report every damaged record;
//     commands that rebuild state (history, state, diff, triage, stats) stop at the
//     first damaged record they need, naming it. Any problem: non-OK Status
//     (kCorruption for damage), exit code 5.
//   - Output is for people by default (aligned tables; UTC timestamps, with a local
//     time column when the local zone is not UTC); --json gives JSON lines whose
//     shapes are documented in docs/forensics.md and kept stable (fields are only
//     ever added).
//
// Thread safety: each function may run on any thread; they share nothing.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace patledger::forensics {

// Where a command writes. `progress`: draw a progress bar on `err` (Run sets it when
// stderr is a terminal and --quiet was not given).
struct Io {
  std::istream& in;
  std::ostream& out;
  std::ostream& err;
  bool progress = false;
};

// The ledger to read. `data` is a data directory (holding ledger/ and token.key), or
// a ledger directory itself (a RocksDB directory with CURRENT).
struct Source {
  std::string data = "./data";
  std::string key_file;  // "" = <data>/token.key (history --token-value, triage)
};

// ---- verify -------------------------------------------------------------------------

using ChainHash = std::array<std::uint8_t, 32>;

// A head kept from an earlier audit: the log must reach `seq` and, if given, chain(seq)
// must be `chain`. Catches a log cut short (e.g. a truncated WAL), which no check
// inside the directory can see.
struct ExpectedHead {
  std::uint64_t seq = 0;
  std::optional<ChainHash> chain;
};

struct VerifyOptions {
  Source source;
  bool json = false;
  std::optional<ExpectedHead> expect;
};

// One thing verify found wrong. kind: "open" (the ledger cannot be opened), "record"
// (a stored record: checksum, Verifier, gap, key/seq, transaction, chain, head),
// "replay" (a record that contradicts the log before it), "wal" (a torn write-ahead
// log tail), "expect" (the log does not match --expect).
struct Problem {
  std::uint64_t seq = 0;  // 0 when no record is to blame
  std::string kind;
  std::string what;
};

struct VerifyReport {
  std::uint64_t records = 0;  // records that passed the record checks
  std::uint64_t damaged = 0;  // records reported damaged (kind "record")
  std::uint64_t problem_count = 0;
  std::vector<Problem> problems;  // the first kMaxKeptProblems, in order found
  static constexpr std::size_t kMaxKeptProblems = 10000;
  std::uint64_t head_seq = 0;  // the head in meta
  ChainHash head_chain{};
  std::int64_t first_at_us = 0, last_at_us = 0;
  std::map<std::string, std::uint64_t> counts;  // by event type name
  std::uint64_t users = 0, tokens = 0;
  bool ok() const { return problem_count == 0; }
};

// Status: OK when nothing is wrong; kCorruption naming the first bad seq otherwise
// (or the open error). `report` (optional) receives what was found.
Status Verify(const VerifyOptions& options, const Io& io, VerifyReport* report = nullptr);

// ---- log / export -------------------------------------------------------------------

struct EventFilter {
  std::uint64_t from_seq = 1;
  std::uint64_t to_seq = UINT64_MAX;
  std::int64_t since_us = INT64_MIN;  // recorded at or after
  std::int64_t until_us = INT64_MAX;  // recorded at or before
  // A username or id: events about the user (registration, changes, their tokens'
  // creation and revocation) or performed as the user.
  std::string user;
  // Events about the token (created, revoked, created as its successor) or performed
  // with it.
  std::uint64_t token_id = 0;
  // Event type names (EventTypeName: "TokenCreated"; case and '_' ignored); empty: all.
  std::vector<std::string> types;
};

struct LogOptions {
  Source source;
  EventFilter filter;
  bool json = false;
  // After the last record, keep polling the directory every `interval` and print new
  // records as they are committed, until `stop` is set (or forever).
  bool follow = false;
  std::chrono::milliseconds interval{1000};
  const std::atomic<bool>* stop = nullptr;
};

Status Log(const LogOptions& options, const Io& io);

enum class ExportFormat { kJsonl, kCsv };
struct ExportOptions {
  Source source;
  ExportFormat format = ExportFormat::kJsonl;
};

// Every record, flat (docs/forensics.md, "The event shape"). Damaged records are
// reported inline (type "Damage") and the export goes on; the Status is then not OK.
Status Export(const ExportOptions& options, const Io& io);

// ---- history ------------------------------------------------------------------------

struct HistoryOptions {
  Source source;
  std::uint64_t token_id = 0;
  // "-" (stdin) or a file holding the plaintext token on its first line; needs the key.
  std::string token_value_from;
  std::string user;  // a username or id
  bool json = false;
  std::optional<std::int64_t> now_us;  // what "now" means for the current state
};

// Exactly one of token_id, token_value_from and user.
Status History(const HistoryOptions& options, const Io& io);

// ---- state / diff / stats -----------------------------------------------------------

struct StateOptions {
  Source source;
  std::optional<std::int64_t> at_us;  // the ledger as it stood at this instant, or
  std::optional<std::uint64_t> seq;   // just after this record (at its recorded time)
  std::string user;                   // only this user's tokens
  bool json = false;
};

// Every token valid at that instant: created by then, not revoked by then, not
// expired then (expiry day > the UTC date), owner not blocked then.
Status ShowState(const StateOptions& options, const Io& io);

struct DiffOptions {
  Source source;
  std::int64_t from_us = 0;
  std::int64_t to_us = 0;
  std::string user;  // only changes concerning this user
  bool json = false;
};

// Changes in (from, to]: tokens created, revoked, expired; users registered,
// blocked, unblocked, promoted, demoted.
Status Diff(const DiffOptions& options, const Io& io);

struct StatsOptions {
  Source source;
  std::optional<std::int64_t> at_us;  // the ledger as it stood then (default: all)
  std::optional<std::int64_t>
      now_us;  // what "now" means for expiry (default: at, or the clock)
  bool json = false;
};

Status Stats(const StatsOptions& options, const Io& io);

// ---- triage -------------------------------------------------------------------------

struct TriageOptions {
  Source source;
  std::string file = "-";                         // one candidate a line; "-" = stdin
  std::optional<std::int64_t> at_us;              // also say whether each was valid then
  std::optional<std::int64_t> now_us;             // what "now" means (default: the clock)
  std::string api_url = "http://127.0.0.1:8080";  // for the printed revoke calls
  // The live data directory, for the printed CLI revoke commands ("" = source.data):
  // triage usually reads a copy (backup), but revocations belong in the live ledger.
  std::string server_data;
  bool json = false;
};

// Never revokes: prints the API calls and CLI commands that would revoke the live ones.
Status Triage(const TriageOptions& options, const Io& io);

// ---- backup / restore ---------------------------------------------------------------

struct BackupOptions {
  Source source;
  std::string to;         // a new directory; the copy goes to <to>/ledger
  bool with_key = false;  // also copy the key file to <to>/token.key (0600)
  bool json = false;
};

// A RocksDB checkpoint of a read-only open (hard links where possible), then verified.
Status Backup(const BackupOptions& options, const Io& io);

struct RestoreOptions {
  std::string from;  // a backup (or any data or ledger directory)
  std::string to;    // a data directory without a ledger
  bool json = false;
};

// Verifies `from`, then copies it to <to>/ledger (and token.key if the backup has
// one); refuses if <to> already holds a ledger or a key.
Status Restore(const RestoreOptions& options, const Io& io);

// ---- the command line ---------------------------------------------------------------

// The subcommands Run knows, and their one-line usage for `patledger --help`.
bool IsForensicsCommand(const std::string& command);

// Parses `args` (after the command name) and runs `command`. Returns the exit code:
// the same mapping as tools::ExitCodeFor (0 ok, 2 usage, 3 not found, 4 exists /
// refused, 5 corrupt ledger, 6 I/O, 7 key file permissions, 70 internal).
int Run(const std::string& command, const std::vector<std::string>& args,
        std::istream& in, std::ostream& out, std::ostream& err);

int ExitCodeFor(const Status& status);

}  // namespace patledger::forensics
