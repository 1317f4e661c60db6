// `patledger verify`: every check the ledger format defines, plus the consistency of
// the whole log, reporting every problem with its sequence number.
//
// Two independent consistency checks run side by side: replay::State (what a server
// would refuse at start-up), as long as no damage has been met; and verify's own model
// below, which keeps going after damage so that every later contradiction is reported
// too. A seq reported by one is not reported again by the other.

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <ostream>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "schema/event_codec.h"
#include "service/scopes.h"
#include "tools/forensics/common.h"
#include "tools/forensics/forensics.h"
#include "tools/forensics/wal.h"

namespace patledger::forensics {
namespace {

namespace json = boost::json;
using internal::Hex;

struct DigestHash {
  std::size_t operator()(const schema::Digest& d) const {
    std::size_t h = 0;
    for (std::size_t i = 0; i < sizeof h; ++i) h = h << 8 | d[i];
    return h;
  }
};

// verify's own model of the rules in replay/state.h (and the service's invariants),
// written independently of replay::State. Memory: a few words per user and token.
class Consistency {
 public:
  // The contradictions record `r` makes with the records seen before it.
  std::vector<std::string> Check(const ledger::RecordView& r) {
    std::vector<std::string> found;
    const schema::Envelope& env = *r.envelope;
    const std::int64_t at = env.recorded_at_us();
    if (at < last_at_) {
      found.push_back("recorded_at " + internal::JsonTime(at) +
                      " is before that of the record before it (" +
                      internal::JsonTime(last_at_) + "): time runs backwards");
    }
    last_at_ = std::max(last_at_, at);
    if (env.event_type() != schema::Event::LedgerInitialized && !initialized_) {
      found.push_back("event before LedgerInitialized");
    }
    switch (env.event_type()) {
      case schema::Event::LedgerInitialized: {
        const auto* e = env.event_as_LedgerInitialized();
        if (initialized_) found.push_back("second LedgerInitialized");
        initialized_ = true;
        if (e->format_version() != 1) {
          found.push_back("LedgerInitialized says format version " +
                          std::to_string(e->format_version()));
        }
        break;
      }
      case schema::Event::UserRegistered: {
        const auto* e = env.event_as_UserRegistered();
        const std::uint64_t id = e->user_id();
        const std::string name = e->username() ? e->username()->str() : "";
        if (id == 0) found.push_back("user id 0");
        if (users_.contains(id))
          found.push_back("duplicate user id " + std::to_string(id));
        if (!usernames_.insert(name).second) {
          found.push_back("duplicate username " + internal::Quote(name));
        }
        users_.emplace(id, User{.admin = e->admin()});
        break;
      }
      case schema::Event::UserChanged: {
        const auto* e = env.event_as_UserChanged();
        auto it = users_.find(e->user_id());
        if (it == users_.end()) {
          found.push_back("change of unknown user " + std::to_string(e->user_id()));
          break;
        }
        switch (e->change()) {
          case schema::UserChange::Blocked:
            it->second.blocked = true;
            break;
          case schema::UserChange::Unblocked:
            it->second.blocked = false;
            break;
          case schema::UserChange::AdminGranted:
            it->second.admin = true;
            break;
          case schema::UserChange::AdminRemoved:
            it->second.admin = false;
            break;
          default:
            found.push_back("invalid user change");
            break;
        }
        break;
      }
      case schema::Event::TokenCreated: {
        const auto* e = env.event_as_TokenCreated();
        const std::uint64_t id = e->token_id(), owner = e->user_id(),
                            from = e->rotated_from();
        const std::string tid = std::to_string(id);
        auto user = users_.find(owner);
        if (user == users_.end()) {
          found.push_back("token " + tid + " for unknown user " + std::to_string(owner));
        } else if ((e->scopes() & service::kSudo) && !user->second.admin) {
          found.push_back("token " + tid + " has scope sudo but its owner " +
                          std::to_string(owner) + " is not an administrator");
        }
        if (id == 0) found.push_back("token id 0");
        if (tokens_.contains(id)) found.push_back("duplicate token id " + tid);
        if (!digests_.insert(schema::ToDigest(*e->digest())).second) {
          found.push_back("token " + tid + " has the digest of another token");
        }
        if (from != 0) {
          auto prev = tokens_.find(from);
          if (prev == tokens_.end()) {
            found.push_back("token " + tid + " rotated from unknown token " +
                            std::to_string(from));
          } else {
            if (prev->second.successor != 0) {
              found.push_back("token " + tid + " is a second successor of token " +
                              std::to_string(from) + " (the first is " +
                              std::to_string(prev->second.successor) + ")");
            }
            if (!prev->second.revoked) {
              found.push_back("token " + tid + " replaces token " + std::to_string(from) +
                              ", which was not revoked first");
            }
            if (prev->second.owner != owner) {
              found.push_back("token " + tid + " of user " + std::to_string(owner) +
                              " replaces token " + std::to_string(from) + " of user " +
                              std::to_string(prev->second.owner));
            }
            prev->second.successor = id;
          }
        }
        tokens_.emplace(id, Token{.owner = owner});
        break;
      }
      case schema::Event::TokenRevoked: {
        const auto* e = env.event_as_TokenRevoked();
        auto it = tokens_.find(e->token_id());
        if (it == tokens_.end()) {
          found.push_back("revoke of unknown token " + std::to_string(e->token_id()));
        } else if (it->second.revoked) {
          found.push_back("token " + std::to_string(e->token_id()) + " revoked again");
        } else {
          it->second.revoked = true;
        }
        break;
      }
      default:
        found.push_back("unknown event type " + schema::EventTypeName(env.event_type()));
        break;
    }
    return found;
  }

  std::size_t users() const { return users_.size(); }
  std::size_t tokens() const { return tokens_.size(); }

 private:
  struct User {
    bool admin = false;
    bool blocked = false;
  };
  struct Token {
    std::uint64_t owner = 0;
    bool revoked = false;
    std::uint64_t successor = 0;
  };
  bool initialized_ = false;
  std::int64_t last_at_ = INT64_MIN;
  std::unordered_map<std::uint64_t, User> users_;
  std::unordered_set<std::string> usernames_;
  std::unordered_map<std::uint64_t, Token> tokens_;
  std::unordered_set<schema::Digest, DigestHash> digests_;
};

// Prints problems as they are found and keeps the report.
class Reporter {
 public:
  Reporter(const Io& io, bool json, VerifyReport* report)
      : io_(io), json_(json), report_(report) {}

  void Add(std::uint64_t seq, const std::string& kind, std::string what) {
    // "seq N: what" -> "what": the seq has its own column.
    const std::string prefix = "seq " + std::to_string(seq) + ": ";
    if (seq != 0 && what.starts_with(prefix)) what = what.substr(prefix.size());
    ++report_->problem_count;
    if (kind == "record") ++report_->damaged;
    if (seq != 0) {
      if (bad_seqs_.size() < VerifyReport::kMaxKeptProblems)
        bad_seqs_.insert(seq);
      else
        bad_seqs_truncated_ = true;
    }
    if (report_->problems.size() < VerifyReport::kMaxKeptProblems) {
      report_->problems.push_back({seq, kind, what});
    }
    if (json_) {
      json::object o;
      o["type"] = "problem";
      o["seq"] = seq == 0 ? json::value(nullptr) : json::value(seq);
      o["kind"] = kind;
      o["what"] = what;
      internal::PrintJson(io_.out, o);
    } else {
      if (report_->problem_count == 1) {
        io_.out << "PROBLEMS\n"
                << internal::FixedRow({{"  SEQ", 12}, {"KIND", 7}, {"WHAT", 0}}) << "\n";
      }
      io_.out << internal::FixedRow(
                     {{"  " + (seq ? std::to_string(seq) : std::string("-")), 12},
                      {kind, 7},
                      {what, 0}})
              << "\n";
    }
  }

  bool Reported(std::uint64_t seq) const { return bad_seqs_.contains(seq); }
  const std::set<std::uint64_t>& bad_seqs() const { return bad_seqs_; }
  bool bad_seqs_truncated() const { return bad_seqs_truncated_; }

 private:
  const Io& io_;
  bool json_;
  VerifyReport* report_;
  std::set<std::uint64_t> bad_seqs_;
  bool bad_seqs_truncated_ = false;
};

std::string CountsText(const std::map<std::string, std::uint64_t>& counts) {
  std::string s;
  for (const auto& [type, n] : counts) {
    if (!s.empty()) s += ", ";
    s += type + " " + std::to_string(n);
  }
  return s.empty() ? "none" : s;
}

}  // namespace

Status Verify(const VerifyOptions& options, const Io& io, VerifyReport* report_out) {
  VerifyReport local;
  VerifyReport& report = report_out ? *report_out : local;
  report = VerifyReport{};
  Reporter problems(io, options.json, &report);
  const std::string dir = internal::LedgerDir(options.source);

  // The head journal is read before the ledger (as Ledger::Open does: a writer beside
  // this open only appends heads after what the open sees) and checked below, as a
  // problem of its own instead of a refusal to open.
  const auto journal = ledger::ReadHeadJournal(dir);
  auto opened = internal::OpenLedgerDir(dir, /*check_head_journal=*/false);
  if (!opened) {
    const Status& s = opened.error();
    if (!s.IsCorruption()) return s;  // not found, I/O, unsupported version: not damage
    problems.Add(internal::SeqOf(s.message()), "open", s.message());
    if (options.json) {
      json::object o;
      o["type"] = "summary";
      o["ok"] = false;
      o["ledger"] = dir;
      o["problems"] = report.problem_count;
      internal::PrintJson(io.out, o);
    }
    return s;
  }
  const ledger::Ledger& ledger = **opened;
  report.head_seq = ledger.last_seq();
  report.head_chain = ledger.head_chain();
  if (!options.json) io.out << "Verifying the ledger in " << dir << " (read-only)\n";

  Consistency model;
  replay::State state;
  bool state_in_sync = true;
  std::optional<ChainHash> chain_at_expected, chain_at_journal;
  Progress progress(io.err, io.progress, "verify", report.head_seq);
  bool first = true;

  ledger::ScanOptions scan;
  scan.keep_going = true;
  std::string first_damage;
  scan.on_damage = [&](const Status& s) {
    state_in_sync = false;  // replay::State needs every record in order
    if (first_damage.empty()) first_damage = s.message();
    problems.Add(internal::SeqOf(s.message()), "record", s.message());
  };
  Status scanned = ledger.Scan(scan, [&](const ledger::RecordView& r) -> Status {
    ++report.records;
    const schema::Envelope& env = *r.envelope;
    ++report.counts[schema::EventTypeName(env.event_type())];
    if (first) report.first_at_us = env.recorded_at_us();
    first = false;
    report.last_at_us = std::max(report.last_at_us, env.recorded_at_us());
    if (options.expect && r.seq == options.expect->seq) chain_at_expected = r.chain;
    if (journal && r.seq == journal->seq) chain_at_journal = r.chain;

    bool reported = false;
    for (std::string& what : model.Check(r)) {
      problems.Add(r.seq, "replay", std::move(what));
      reported = true;
    }
    if (state_in_sync) {
      Status applied =
          r.seq == state.last_seq() + 1
              ? state.Apply(r)
              : Status::Corruption("seq " + std::to_string(r.seq) + ": out of order");
      if (!applied.ok()) {
        state_in_sync = false;
        if (!reported) problems.Add(r.seq, "replay", applied.message());
      }
    }
    progress.Update(report.records);
    return Status::OK();
  });
  progress.Done();
  if (!scanned.ok() && !scanned.IsCorruption()) return scanned;  // I/O: cannot go on
  if (!scanned.ok() &&
      (first_damage.empty() || !scanned.message().starts_with(first_damage))) {
    // Damage Scan could not go past (the head in meta, or RocksDB's own block checks).
    problems.Add(internal::SeqOf(scanned.message()), "record", scanned.message());
  }

  // A torn WAL tail: the last write was cut off. On a live ledger the writer may be in
  // the middle of a write: only a tail that stays the same is reported.
  auto tails = internal::FindTornWalTails(dir);
  if (tails && !tails->empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto again = internal::FindTornWalTails(dir);
    if (again) {
      for (const internal::WalTail& t : *again) {
        const bool stable = std::any_of(tails->begin(), tails->end(), [&](const auto& u) {
          return u.file == t.file && u.file_size == t.file_size && u.offset == t.offset;
        });
        if (!stable) continue;
        std::string what = "WAL " + t.file + " ends in a torn record at byte " +
                           std::to_string(t.offset) + " of " +
                           std::to_string(t.file_size) + ": the write after seq " +
                           std::to_string(report.head_seq) + " was cut off";
        if (!t.seqs.empty()) {
          const auto [lo, hi] = std::minmax_element(t.seqs.begin(), t.seqs.end());
          what += " (it held seq " + std::to_string(*lo) +
                  (*hi != *lo ? ".." + std::to_string(*hi) : std::string()) + ")";
        }
        what +=
            "; a truncated file, or a crash during a write that was never acknowledged";
        problems.Add(t.seqs.empty() ? report.head_seq + 1
                                    : *std::min_element(t.seqs.begin(), t.seqs.end()),
                     "wal", what);
      }
    }
  }

  // What the head journal says was acknowledged (docs/ledger-format.md).
  if (!journal && journal.error().code() != Status::Code::kNotFound) {
    problems.Add(0, "journal", journal.error().message());
  } else if (journal && journal->seq > report.head_seq) {
    problems.Add(report.head_seq + 1, "journal",
                 "missing: the log ends at seq " + std::to_string(report.head_seq) +
                     " but " + journal->file + " recorded seq " +
                     std::to_string(journal->seq) + " as acknowledged (records " +
                     std::to_string(report.head_seq + 1) + ".." +
                     std::to_string(journal->seq) +
                     " are gone: a truncated WAL or MANIFEST)");
  } else if (journal && journal->seq > 0 && chain_at_journal &&
             *chain_at_journal != journal->chain) {
    problems.Add(journal->seq, "journal",
                 "chain(" + std::to_string(journal->seq) + ") is " +
                     Hex(*chain_at_journal) + " but " + journal->file + " recorded " +
                     Hex(journal->chain) + ": records 1.." +
                     std::to_string(journal->seq) + " are not the ones acknowledged");
  }

  if (options.expect) {
    const ExpectedHead& e = *options.expect;
    if (e.seq > report.head_seq) {
      problems.Add(report.head_seq + 1, "expect",
                   "missing: the log ends at seq " + std::to_string(report.head_seq) +
                       " but reached seq " + std::to_string(e.seq) +
                       " when --expect was recorded (records " +
                       std::to_string(report.head_seq + 1) + ".." +
                       std::to_string(e.seq) + " were removed)");
    } else if (e.chain) {
      if (!chain_at_expected) {
        problems.Add(
            e.seq, "expect",
            "cannot check chain(" + std::to_string(e.seq) + "): the record is damaged");
      } else if (*chain_at_expected != *e.chain) {
        problems.Add(e.seq, "expect",
                     "chain(" + std::to_string(e.seq) + ") is " +
                         Hex(*chain_at_expected) + " but --expect says " + Hex(*e.chain) +
                         ": records 1.." + std::to_string(e.seq) +
                         " are not the ones audited then");
      }
    }
  }

  report.users = model.users();
  report.tokens = model.tokens();
  const std::string head_chain = Hex(report.head_chain);
  if (options.json) {
    json::object o;
    o["type"] = "summary";
    o["ok"] = report.ok();
    o["ledger"] = dir;
    o["records"] = report.records;
    o["damaged"] = report.damaged;
    o["problems"] = report.problem_count;
    o["first_bad_seq"] = problems.bad_seqs().empty()
                             ? json::value(nullptr)
                             : json::value(*problems.bad_seqs().begin());
    json::array bad;
    for (std::uint64_t s : problems.bad_seqs()) bad.push_back(s);
    o["bad_seqs"] = std::move(bad);
    o["bad_seqs_truncated"] = problems.bad_seqs_truncated();
    o["head_seq"] = report.head_seq;
    o["head_chain"] = head_chain;
    o["first_recorded_at"] = report.records
                                 ? json::value(internal::JsonTime(report.first_at_us))
                                 : json::value(nullptr);
    o["last_recorded_at"] = report.records
                                ? json::value(internal::JsonTime(report.last_at_us))
                                : json::value(nullptr);
    json::object counts;
    for (const auto& [type, n] : report.counts) counts[type] = n;
    o["events"] = std::move(counts);
    o["users"] = report.users;
    o["tokens"] = report.tokens;
    internal::PrintJson(io.out, o);
  } else {
    auto row = [&](const std::string& k, const std::string& v) {
      io.out << internal::FixedRow({{k, 9}, {v, 0}}) << "\n";
    };
    row("records", std::to_string(report.records) + " intact of 1.." +
                       std::to_string(report.head_seq) + " (" +
                       std::to_string(report.damaged) + " damaged)");
    if (report.records) {
      row("span", internal::When(report.first_at_us) + " .. " +
                      internal::When(report.last_at_us));
    }
    row("events", CountsText(report.counts));
    row("state", std::to_string(report.users) + " users, " +
                     std::to_string(report.tokens) + " tokens");
    row("head", "seq " + std::to_string(report.head_seq) + "  chain " + head_chain);
    if (report.ok()) {
      row("result", "OK: no problems. Keep this to prove later that records 1.." +
                        std::to_string(report.head_seq) + " are unchanged:");
      row("", "patledger verify --expect " + std::to_string(report.head_seq) + ":" +
                  head_chain);
    } else {
      std::string seqs;
      std::size_t shown = 0;
      for (std::uint64_t s : problems.bad_seqs()) {
        if (shown++ == 20) {
          seqs += " ...";
          break;
        }
        if (!seqs.empty()) seqs += ' ';
        seqs += std::to_string(s);
      }
      row("result", "DAMAGED: " + std::to_string(report.problem_count) + " problem(s)" +
                        (seqs.empty() ? std::string() : "; bad seqs: " + seqs));
    }
  }
  if (report.ok()) return Status::OK();
  const std::uint64_t first_seq =
      problems.bad_seqs().empty() ? 0 : *problems.bad_seqs().begin();
  const Problem* p = &report.problems.front();
  for (const Problem& q : report.problems) {
    if (q.seq == first_seq) {
      p = &q;
      break;
    }
  }
  std::string message = first_seq ? "seq " + std::to_string(first_seq) + ": " : "";
  message += p->what;
  if (report.problem_count > 1) {
    message += " (" + std::to_string(report.problem_count) + " problems in all)";
  }
  return Status::Corruption(message);
}

}  // namespace patledger::forensics
