// The command line of the forensic subcommands: parse, call the library function,
// map its Status to an exit code. tools/cli.cc hands these commands to Run.

#include <unistd.h>

#include <boost/program_options.hpp>
#include <charconv>
#include <iostream>

#include "common/clock.h"
#include "tools/forensics/common.h"
#include "tools/forensics/forensics.h"
#include "tools/forensics/generator.h"

namespace patledger::forensics {
namespace {

namespace po = boost::program_options;
constexpr int kUsage = 2;

struct Spec {
  const char* name;
  const char* synopsis;
};

constexpr Spec kCommands[] = {
    {"verify", "verify [--data DIR] [--expect SEQ[:CHAIN]] [--json] [--quiet]"},
    {"log",
     "log [--data DIR] [--from-seq N] [--to-seq N] [--since T] [--until T] [--user U]\n"
     "    [--token-id N] [--type T[,T]] [--follow [--interval SECONDS]] [--json] "
     "[--quiet]"},
    {"export", "export [--data DIR] [--format jsonl|csv] [--quiet]"},
    {"history",
     "history [--data DIR] (--token-id N | --token-value -|FILE | --user U)\n"
     "    [--key-file F] [--now T] [--json] [--quiet]"},
    {"state", "state [--data DIR] (--at T | --seq N) [--user U] [--json] [--quiet]"},
    {"diff", "diff [--data DIR] --from T --to T [--user U] [--json] [--quiet]"},
    {"triage",
     "triage FILE|- [--data DIR] [--key-file F] [--at T] [--now T] [--api-url URL]\n"
     "    [--server-data DIR] [--json] [--quiet]"},
    {"stats", "stats [--data DIR] [--at T] [--now T] [--json] [--quiet]"},
    {"backup", "backup [--data DIR] --to DIR [--with-key [--key-file F]] [--json]"},
    {"restore", "restore --from DIR --to DIR [--json]"},
    {"generate",
     "generate --data DIR --users N --tokens M --seed S [--days D] [--start DATE]\n"
     "    [--key-file F] [--truth FILE] [--leaks FILE] [--batch N]"},
};

const char* Synopsis(const std::string& command) {
  for (const Spec& s : kCommands) {
    if (command == s.name) return s.synopsis;
  }
  return "";
}

// Parses a time option; InvalidArgument naming the option otherwise.
Result<std::int64_t> Time(const std::string& option, const std::string& text) {
  auto t = ParseTimestamp(text);
  if (!t) {
    return Err(Status::InvalidArgument(
        "--" + option + " '" + text +
        "' is not a timestamp (YYYY-MM-DD[THH:MM[:SS[.ffffff]]][Z|+HH:MM] or "
        "@unix-seconds)"));
  }
  return *t;
}

// Sets *out from an optional time option: nothing when `text` is empty.
template <typename T>
Status SetTime(const std::string& option, const std::string& text, T* out) {
  if (text.empty()) return Status::OK();
  auto t = Time(option, text);
  if (!t) return t.error();
  *out = *t;
  return Status::OK();
}

Result<ExpectedHead> ParseExpect(const std::string& text) {
  ExpectedHead e;
  const auto colon = text.find(':');
  const std::string seq = text.substr(0, colon);
  auto [ptr, ec] = std::from_chars(seq.data(), seq.data() + seq.size(), e.seq);
  if (ec != std::errc() || ptr != seq.data() + seq.size() || e.seq == 0) {
    return Err(Status::InvalidArgument("--expect '" + text +
                                       "' is not SEQ or SEQ:CHAIN (64 hex digits)"));
  }
  if (colon != std::string::npos) {
    e.chain = internal::ParseChain(std::string_view(text).substr(colon + 1));
    if (!e.chain) {
      return Err(Status::InvalidArgument("--expect '" + text +
                                         "': the chain must be 64 hex digits"));
    }
  }
  return e;
}

class Cli {
 public:
  Cli(const std::string& command, const std::vector<std::string>& args, std::istream& in,
      std::ostream& out, std::ostream& err)
      : command_(command), args_(args), io_{in, out, err, false}, opts_("options") {
    opts_.add_options()("help,h", "show this help");
  }

  po::options_description& opts() { return opts_; }
  po::positional_options_description& positional() { return positional_; }

  void AddSource(Source* s, bool key) {
    opts_.add_options()("data", po::value(&s->data)->default_value("./data"),
                        "data directory (holding ledger/), or a ledger directory");
    if (key) {
      opts_.add_options()("key-file", po::value(&s->key_file),
                          "instance key file (default <data>/token.key)");
    }
  }
  void AddJson(bool* json) {
    opts_.add_options()("json", po::bool_switch(json), "JSON lines (docs/forensics.md)");
  }
  void AddQuiet() {
    opts_.add_options()("quiet,q", po::bool_switch(&quiet_), "no progress bar");
  }

  // false: do not run (help printed, or a usage error); *exit is set.
  bool Parse(int* exit) {
    try {
      po::store(
          po::command_line_parser(args_).options(opts_).positional(positional_).run(),
          vm_);
      if (vm_.count("help")) {
        io_.out << "usage: patledger " << Synopsis(command_) << "\n\n" << opts_;
        *exit = 0;
        return false;
      }
      po::notify(vm_);
    } catch (const po::error& e) {
      io_.err << "patledger: " << e.what() << "\nusage: patledger " << Synopsis(command_)
              << "\n";
      *exit = kUsage;
      return false;
    }
    // The progress bar only on a terminal, and only on the process's own stderr.
    io_.progress = !quiet_ && &io_.err == &std::cerr && ::isatty(STDERR_FILENO) == 1;
    return true;
  }

  bool Has(const char* name) const {
    return vm_.count(name) > 0 && !vm_[name].defaulted();
  }

  int Finish(const Status& s) {
    if (s.ok()) return 0;
    io_.err << "patledger: " << s.ToString() << "\n";
    if (s.code() == Status::Code::kInvalidArgument) {
      io_.err << "usage: patledger " << Synopsis(command_) << "\n";
    }
    return ExitCodeFor(s);
  }

  const Io& io() const { return io_; }

 private:
  std::string command_;
  std::vector<std::string> args_;
  Io io_;
  po::options_description opts_;
  po::positional_options_description positional_;
  po::variables_map vm_;
  bool quiet_ = false;
};

int RunVerify(Cli& cli) {
  VerifyOptions o;
  std::string expect;
  cli.AddSource(&o.source, false);
  cli.opts().add_options()(
      "expect", po::value(&expect),
      "SEQ[:CHAIN]: a head printed by an earlier verify; the log must "
      "still reach SEQ with that chain");
  cli.AddJson(&o.json);
  cli.AddQuiet();
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  if (!expect.empty()) {
    auto e = ParseExpect(expect);
    if (!e) return cli.Finish(e.error());
    o.expect = *e;
  }
  return cli.Finish(Verify(o, cli.io()));
}

int RunLog(Cli& cli) {
  LogOptions o;
  std::string since, until;
  double interval = 1.0;
  cli.AddSource(&o.source, false);
  cli.opts().add_options()("from-seq", po::value(&o.filter.from_seq), "first seq")(
      "to-seq", po::value(&o.filter.to_seq), "last seq")(
      "since", po::value(&since), "recorded at or after T (ISO 8601, date, @unix)")(
      "until", po::value(&until), "recorded at or before T")(
      "user", po::value(&o.filter.user),
      "username or id: events about the user or their tokens, or done as the user")(
      "token-id", po::value(&o.filter.token_id),
      "events about the token (created, revoked, its successor) or done with it")(
      "type", po::value(&o.filter.types)->composing(),
      "event types, comma separated: TokenCreated, TokenRevoked, UserRegistered, "
      "UserChanged, LedgerInitialized")("follow,f", po::bool_switch(&o.follow),
                                        "keep printing new events (Ctrl-C stops)")(
      "interval", po::value(&interval)->default_value(1.0),
      "--follow: seconds between polls");
  cli.AddJson(&o.json);
  cli.AddQuiet();
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  if (Status s = SetTime("since", since, &o.filter.since_us); !s.ok()) {
    return cli.Finish(s);
  }
  if (Status s = SetTime("until", until, &o.filter.until_us); !s.ok()) {
    return cli.Finish(s);
  }
  if (!(interval > 0) || interval > 3600) {
    return cli.Finish(Status::InvalidArgument("--interval must be in (0, 3600] seconds"));
  }
  o.interval = std::chrono::milliseconds(static_cast<std::int64_t>(interval * 1000) + 0);
  return cli.Finish(Log(o, cli.io()));
}

int RunExport(Cli& cli) {
  ExportOptions o;
  std::string format = "jsonl";
  cli.AddSource(&o.source, false);
  cli.opts().add_options()("format", po::value(&format)->default_value("jsonl"),
                           "jsonl or csv");
  cli.AddQuiet();
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  if (format == "jsonl") {
    o.format = ExportFormat::kJsonl;
  } else if (format == "csv") {
    o.format = ExportFormat::kCsv;
  } else {
    return cli.Finish(Status::InvalidArgument("--format must be jsonl or csv"));
  }
  return cli.Finish(Export(o, cli.io()));
}

int RunHistory(Cli& cli) {
  HistoryOptions o;
  std::string now;
  cli.AddSource(&o.source, true);
  cli.opts().add_options()("token-id", po::value(&o.token_id), "the token's id")(
      "token-value", po::value(&o.token_value_from),
      "'-' to read the plaintext token from stdin, or a file holding it (needs the key)")(
      "user", po::value(&o.user), "a username or id: the user's whole history")(
      "now", po::value(&now),
      "the instant the current state is judged at (default: now)");
  cli.AddJson(&o.json);
  cli.AddQuiet();
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  if (Status s = SetTime("now", now, &o.now_us); !s.ok()) {
    return cli.Finish(s);
  }
  return cli.Finish(History(o, cli.io()));
}

int RunState(Cli& cli) {
  StateOptions o;
  std::string at;
  std::uint64_t seq = 0;
  cli.AddSource(&o.source, false);
  cli.opts().add_options()("at", po::value(&at), "the instant (ISO 8601, date, @unix)")(
      "seq", po::value(&seq), "just after this record")("user", po::value(&o.user),
                                                        "only this user's tokens");
  cli.AddJson(&o.json);
  cli.AddQuiet();
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  if (Status s = SetTime("at", at, &o.at_us); !s.ok()) {
    return cli.Finish(s);
  }
  if (cli.Has("seq")) {
    if (seq == 0) return cli.Finish(Status::InvalidArgument("--seq must be 1 or more"));
    o.seq = seq;
  }
  return cli.Finish(ShowState(o, cli.io()));
}

int RunDiff(Cli& cli) {
  DiffOptions o;
  std::string from, to;
  cli.AddSource(&o.source, false);
  cli.opts().add_options()("from", po::value(&from)->required(), "the earlier instant")(
      "to", po::value(&to)->required(), "the later instant")(
      "user", po::value(&o.user), "only changes about this user");
  cli.AddJson(&o.json);
  cli.AddQuiet();
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  auto f = Time("from", from);
  if (!f) return cli.Finish(f.error());
  auto t = Time("to", to);
  if (!t) return cli.Finish(t.error());
  o.from_us = *f;
  o.to_us = *t;
  return cli.Finish(Diff(o, cli.io()));
}

int RunTriage(Cli& cli) {
  TriageOptions o;
  std::string at, now;
  cli.AddSource(&o.source, true);
  cli.opts().add_options()("file", po::value(&o.file)->default_value("-"),
                           "candidates, one a line ('-': stdin)")(
      "at", po::value(&at), "also say whether each was valid at this instant")(
      "now", po::value(&now),
      "the instant the current state is judged at (default: now)")(
      "api-url", po::value(&o.api_url)->default_value("http://127.0.0.1:8080"),
      "the server's URL, for the printed revoke calls")(
      "server-data", po::value(&o.server_data),
      "the live data directory, for the printed CLI revoke commands (default: --data)");
  cli.positional().add("file", 1);
  cli.AddJson(&o.json);
  cli.AddQuiet();
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  if (Status s = SetTime("at", at, &o.at_us); !s.ok()) {
    return cli.Finish(s);
  }
  if (Status s = SetTime("now", now, &o.now_us); !s.ok()) {
    return cli.Finish(s);
  }
  while (!o.api_url.empty() && o.api_url.back() == '/') o.api_url.pop_back();
  return cli.Finish(Triage(o, cli.io()));
}

int RunStats(Cli& cli) {
  StatsOptions o;
  std::string at, now;
  cli.AddSource(&o.source, false);
  cli.opts().add_options()("at", po::value(&at),
                           "the ledger as it stood at this instant")(
      "now", po::value(&now),
      "the instant token states are judged at (default: --at, or now)");
  cli.AddJson(&o.json);
  cli.AddQuiet();
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  if (Status s = SetTime("at", at, &o.at_us); !s.ok()) {
    return cli.Finish(s);
  }
  if (Status s = SetTime("now", now, &o.now_us); !s.ok()) {
    return cli.Finish(s);
  }
  return cli.Finish(Stats(o, cli.io()));
}

int RunBackup(Cli& cli) {
  BackupOptions o;
  cli.AddSource(&o.source, true);
  cli.opts().add_options()("to", po::value(&o.to)->required(), "a new directory")(
      "with-key", po::bool_switch(&o.with_key), "also copy the instance key (0600)");
  cli.AddJson(&o.json);
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  return cli.Finish(Backup(o, cli.io()));
}

int RunRestore(Cli& cli) {
  RestoreOptions o;
  cli.opts().add_options()("from", po::value(&o.from)->required(), "a backup directory")(
      "to", po::value(&o.to)->required(), "a data directory without a ledger");
  cli.AddJson(&o.json);
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  return cli.Finish(Restore(o, cli.io()));
}

int RunGenerate(Cli& cli) {
  GeneratorOptions o;
  cli.opts().add_options()("data", po::value(&o.data)->required(),
                           "a new data directory")(
      "users", po::value(&o.users)->required(), "users besides root")(
      "tokens", po::value(&o.tokens)->required(),
      "tokens in all (root's and rotations' included)")(
      "seed", po::value(&o.seed)->required(), "the seed: the same seed, the same ledger")(
      "days", po::value(&o.days)->default_value(180), "simulated days")(
      "start", po::value(&o.start)->default_value("2026-01-05"),
      "first simulated day (UTC)")(
      "key-file", po::value(&o.key_file),
      "a pre-made key file (default: a TEST-ONLY key derived from the seed)")(
      "truth", po::value(&o.truth_file), "write the ground truth (JSON lines) here")(
      "leaks", po::value(&o.leaks_file),
      "write a sample secret-scanner report here (TEST ONLY: plaintext tokens)")(
      "batch", po::value(&o.batch)->default_value(1),
      "requests per append: N > 1 writes N requests as one transaction (big "
      "benchmark ledgers)");
  int exit = 0;
  if (!cli.Parse(&exit)) return exit;
  return cli.Finish(GenerateCommand(o, cli.io()));
}

}  // namespace

int ExitCodeFor(const Status& status) {
  // The same mapping as tools::ExitCodeFor (tools/cli.h), which this library cannot
  // call (the CLI links this library, not the other way round).
  using C = Status::Code;
  switch (status.code()) {
    case C::kOk:
      return 0;
    case C::kUnauthenticated:
      return 1;
    case C::kInvalidArgument:
      return 2;
    case C::kNotFound:
      return 3;
    case C::kAlreadyExists:
    case C::kFailedPrecondition:
      return 4;
    case C::kCorruption:
      return 5;
    case C::kIOError:
      return 6;
    case C::kPermissionDenied:
      return 7;
    case C::kInternal:
      return 70;
  }
  return 70;
}

bool IsForensicsCommand(const std::string& command) {
  for (const Spec& s : kCommands) {
    if (command == s.name) return true;
  }
  return false;
}

int Run(const std::string& command, const std::vector<std::string>& args,
        std::istream& in, std::ostream& out, std::ostream& err) {
  Cli cli(command, args, in, out, err);
  try {
    if (command == "verify") return RunVerify(cli);
    if (command == "log") return RunLog(cli);
    if (command == "export") return RunExport(cli);
    if (command == "history") return RunHistory(cli);
    if (command == "state") return RunState(cli);
    if (command == "diff") return RunDiff(cli);
    if (command == "triage") return RunTriage(cli);
    if (command == "stats") return RunStats(cli);
    if (command == "backup") return RunBackup(cli);
    if (command == "restore") return RunRestore(cli);
    if (command == "generate") return RunGenerate(cli);
  } catch (const std::exception& e) {
    err << "patledger: internal error: " << e.what() << "\n";
    return 70;
  }
  err << "patledger: unknown command '" << command << "'\n";
  return kUsage;
}

}  // namespace patledger::forensics
