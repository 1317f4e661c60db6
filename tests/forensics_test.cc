// Specification of the audit and offline forensic toolkit (tools/forensics/, issue 4).
//
// Ledgers come from the generator, whose truth file records what it did from its own
// model; the TruthModel below reads that file and answers "which tokens were valid at
// T", "what is the life of token N", ... by itself, independently of replay::State and
// of the commands under test. Then damaged copies (raw RocksDB edits, a truncated WAL)
// must be reported at the right sequence numbers, and no command may change a byte of
// the directory it reads, also while `patledger serve` runs on it.

#include "tools/forensics/forensics.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <streambuf>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "ledger/format.h"
#include "ledger/ledger.h"
#include "schema/event_codec.h"
#include "service/token_format.h"
#include "service/token_key.h"
#include "service/token_service.h"
#include "tests/test_util.h"
#include "tools/forensics/generator.h"
#include "tools/forensics/progress.h"
#include "tools/forensics/wal.h"

extern char** environ;

namespace patledger::forensics {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
namespace fmt = ledger::format;
using namespace std::chrono_literals;

const std::string kBinary = std::string(PATLEDGER_TEST_BINARY_DIR) + "/tools/patledger";

// ---- running a command ----------------------------------------------------------------

std::uint64_t U(const json::value& v) { return v.to_number<std::uint64_t>(); }
std::int64_t I(const json::value& v) { return v.to_number<std::int64_t>(); }
std::string S(const json::value& v) { return std::string(v.as_string()); }

struct Captured {
  Status status;
  std::string out, err;
  std::vector<json::object> Lines() const {
    std::vector<json::object> lines;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) lines.push_back(json::parse(line).as_object());
    }
    return lines;
  }
  std::vector<json::object> OfType(const std::string& type) const {
    std::vector<json::object> out;
    for (auto& l : Lines()) {
      if (S(l.at("type")) == type) out.push_back(l);
    }
    return out;
  }
};

template <typename Fn>
Captured Call(Fn fn, const std::string& input = "") {
  std::istringstream in(input);
  std::ostringstream out, err;
  Io io{in, out, err, false};
  Captured c;
  c.status = fn(io);
  c.out = out.str();
  c.err = err.str();
  return c;
}

std::string Show(const Captured& c) { return c.status.ToString() + "\nerr: " + c.err; }

// ---- the ground truth, read independently --------------------------------------------

struct TruthToken {
  std::uint64_t id = 0, user = 0;
  std::string name, description;
  std::uint32_t scopes = 0;
  std::int32_t expires_day = 0;
  std::uint64_t rotated_from = 0, rotated_to = 0;
  std::uint64_t created_seq = 0, revoked_seq = 0;
  std::int64_t created_at = 0, revoked_at = 0;
  std::string reason;
  json::object created, revoked;  // the truth lines
};

struct TruthModel {
  std::vector<json::object> lines;  // in file order (= seq order), "end" excluded
  json::object end;
  std::map<std::uint64_t, TruthToken> tokens;
  std::map<std::uint64_t, json::object> users;  // registration line
  // seq, at, op of each user change.
  std::map<std::uint64_t, std::vector<json::object>> user_changes;

  explicit TruthModel(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      json::object o = json::parse(line).as_object();
      const std::string op = S(o.at("op"));
      if (op == "end") {
        end = o;
        continue;
      }
      lines.push_back(o);
      if (op == "user") {
        users[U(o.at("user_id"))] = o;
      } else if (op == "block" || op == "unblock" || op == "admin_grant" ||
                 op == "admin_remove") {
        user_changes[U(o.at("user_id"))].push_back(o);
      } else if (op == "create") {
        TruthToken t;
        t.id = U(o.at("token_id"));
        t.user = U(o.at("user_id"));
        t.name = S(o.at("name"));
        t.description = S(o.at("description"));
        t.scopes = static_cast<std::uint32_t>(U(o.at("scopes")));
        t.expires_day = static_cast<std::int32_t>(I(o.at("expires_day")));
        t.rotated_from = U(o.at("rotated_from"));
        t.created_seq = U(o.at("seq"));
        t.created_at = I(o.at("at_us"));
        t.created = o;
        if (t.rotated_from) tokens.at(t.rotated_from).rotated_to = t.id;
        tokens[t.id] = t;
      } else if (op == "revoke") {
        TruthToken& t = tokens.at(U(o.at("token_id")));
        t.revoked_seq = U(o.at("seq"));
        t.revoked_at = I(o.at("at_us"));
        t.reason = S(o.at("reason"));
        t.revoked = o;
      }
    }
  }

  std::uint64_t last_seq() const { return U(end.at("last_seq")); }
  std::int64_t first_us() const { return I(end.at("first_us")); }
  std::int64_t last_us() const { return I(end.at("last_us")); }

  // Considering the events recorded at or before `t` with seq <= max_seq.
  bool BlockedAt(std::uint64_t user, std::int64_t t, std::uint64_t max_seq) const {
    bool blocked = false;
    auto it = user_changes.find(user);
    if (it == user_changes.end()) return false;
    for (const json::object& c : it->second) {
      if (I(c.at("at_us")) > t || U(c.at("seq")) > max_seq) break;
      if (c.at("op") == "block") blocked = true;
      if (c.at("op") == "unblock") blocked = false;
    }
    return blocked;
  }

  std::set<std::uint64_t> ValidAt(std::int64_t t, std::uint64_t max_seq = UINT64_MAX,
                                  std::optional<std::uint64_t> user = {}) const {
    std::set<std::uint64_t> valid;
    for (const auto& [id, tok] : tokens) {
      if (tok.created_at > t || tok.created_seq > max_seq) continue;
      if (user && tok.user != *user) continue;
      if (tok.revoked_seq && tok.revoked_at <= t && tok.revoked_seq <= max_seq) continue;
      if (DayOf(t) >= tok.expires_day) continue;
      if (BlockedAt(tok.user, t, max_seq)) continue;
      valid.insert(id);
    }
    return valid;
  }

  std::vector<std::uint64_t> Family(std::uint64_t id) const {
    std::uint64_t first = id;
    while (tokens.at(first).rotated_from) first = tokens.at(first).rotated_from;
    std::vector<std::uint64_t> out;
    for (std::uint64_t m = first; m; m = tokens.at(m).rotated_to) out.push_back(m);
    return out;
  }

  std::int64_t AtOfSeq(std::uint64_t seq) const {
    for (const json::object& l : lines) {
      if (U(l.at("seq")) == seq) return I(l.at("at_us"));
    }
    return 0;
  }
};

// ---- a generated ledger in a temporary directory
// ---------------------------------------

struct Generated {
  TempDir tmp;
  GeneratorOptions options;
  std::string data, truth_path, leaks_path;
  std::unique_ptr<TruthModel> truth;

  explicit Generated(std::uint64_t users = 12, std::uint64_t tokens = 90,
                     std::uint64_t seed = 42, int days = 150) {
    data = tmp.Sub("data");
    truth_path = tmp.Sub("truth.jsonl");
    leaks_path = tmp.Sub("leaks.txt");
    options.data = data;
    options.users = users;
    options.tokens = tokens;
    options.seed = seed;
    options.days = days;
    options.truth_file = truth_path;
    options.leaks_file = leaks_path;
    auto r = Generate(options);
    BOOST_TEST_REQUIRE(r.has_value(), Why(r));
    truth = std::make_unique<TruthModel>(truth_path);
  }

  Source source() const {
    Source s;
    s.data = data;
    return s;
  }
  std::string ledger_dir() const { return data + "/ledger"; }
};

// ---- hashing a directory
// ----------------------------------------------------------------

std::string Sha256File(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), d);
  std::string hex;
  char buf[3];
  for (unsigned char c : d) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    hex += buf;
  }
  return hex + ":" + std::to_string(bytes.size());
}

// Every file under `dir` (recursively) -> SHA-256 and size.
std::map<std::string, std::string> HashTree(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file())
      out[fs::relative(e.path(), dir).string()] = Sha256File(e.path());
  }
  return out;
}

std::string DescribeChange(const std::map<std::string, std::string>& a,
                           const std::map<std::string, std::string>& b) {
  std::string s;
  for (const auto& [f, h] : a) {
    auto it = b.find(f);
    if (it == b.end())
      s += " removed:" + f;
    else if (it->second != h)
      s += " changed:" + f;
  }
  for (const auto& [f, h] : b) {
    if (!a.contains(f)) s += " added:" + f;
  }
  return s.empty() ? "unchanged" : s;
}

// ---- raw damage (plain RocksDB, as an attacker or a bad disk would)
// --------------------

template <typename F>
void WithRaw(const std::string& dir, F f) {
  rocksdb::DBOptions db_options;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, {}},
      {std::string(fmt::kEventsColumnFamily), {}},
      {std::string(fmt::kMetaColumnFamily), {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, cfs, &handles, &db);
  BOOST_REQUIRE_MESSAGE(s.ok(), s.ToString());
  f(*db, handles[1]);
  for (auto* h : handles) BOOST_REQUIRE(db->DestroyColumnFamilyHandle(h).ok());
  BOOST_REQUIRE(db->Close().ok());
  delete db;
}

std::string RawGet(const std::string& dir, std::uint64_t seq) {
  std::string value;
  WithRaw(dir, [&](rocksdb::DB& db, rocksdb::ColumnFamilyHandle* events) {
    const auto key = fmt::EncodeSeq(seq);
    BOOST_REQUIRE(
        db.Get({}, events, rocksdb::Slice(key.data(), key.size()), &value).ok());
  });
  return value;
}

void RawPut(const std::string& dir, std::uint64_t seq, const std::string& value) {
  WithRaw(dir, [&](rocksdb::DB& db, rocksdb::ColumnFamilyHandle* events) {
    const auto key = fmt::EncodeSeq(seq);
    BOOST_REQUIRE(db.Put({}, events, rocksdb::Slice(key.data(), key.size()), value).ok());
  });
}

void RawDelete(const std::string& dir, std::uint64_t seq) {
  WithRaw(dir, [&](rocksdb::DB& db, rocksdb::ColumnFamilyHandle* events) {
    const auto key = fmt::EncodeSeq(seq);
    BOOST_REQUIRE(db.Delete({}, events, rocksdb::Slice(key.data(), key.size())).ok());
  });
}

std::string Seal(std::string envelope) {
  const auto sum =
      fmt::EncodeChecksum(XXH3_64bits_withSeed(envelope.data(), envelope.size(), 0));
  envelope.append(sum.data(), sum.size());
  return envelope;
}

std::string EnvelopeOf(const std::string& value) {
  return value.substr(0, value.size() - fmt::kChecksumSize);
}

// ---- verify helpers -------------------------------------------------------------------

struct Verified {
  Captured c;
  VerifyReport report;
  std::set<std::uint64_t> Seqs(const std::string& kind) const {
    std::set<std::uint64_t> s;
    for (const Problem& p : report.problems) {
      if (p.kind == kind) s.insert(p.seq);
    }
    return s;
  }
  const Problem* First(const std::string& kind, std::uint64_t seq) const {
    for (const Problem& p : report.problems) {
      if (p.kind == kind && p.seq == seq) return &p;
    }
    return nullptr;
  }
};

Verified RunVerify(const Source& source, std::optional<ExpectedHead> expect = {},
                   bool json = false) {
  Verified v;
  VerifyOptions o;
  o.source = source;
  o.expect = expect;
  o.json = json;
  v.c = Call([&](const Io& io) { return Verify(o, io, &v.report); });
  return v;
}

std::string ProblemsText(const Verified& v) {
  std::string s;
  for (const Problem& p : v.report.problems) {
    s += "\n  seq " + std::to_string(p.seq) + " " + p.kind + ": " + p.what;
  }
  return s.empty() ? "(no problems)" : s;
}

// Runs a real process (the patledger binary) with its output collected.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args,
                 const std::string& stdin_text = "") {
    int out[2], err[2], in[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0 ||
        ::pipe2(in, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    ::close(err[1]);
    ::close(in[0]);
    if (rc != 0) throw std::runtime_error("cannot run " + args[0]);
    if (!stdin_text.empty()) {
      [[maybe_unused]] ssize_t n = ::write(in[1], stdin_text.data(), stdin_text.size());
    }
    ::close(in[1]);
    out_reader_ = std::thread([this, fd = out[0]] { Drain(fd, &out_); });
    err_reader_ = std::thread([this, fd = err[0]] { Drain(fd, &err_); });
  }
  ~Child() {
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
    }
    if (out_reader_.joinable()) out_reader_.join();
    if (err_reader_.joinable()) err_reader_.join();
  }
  std::string out() const {
    std::lock_guard lock(mu_);
    return out_;
  }
  std::string err() const {
    std::lock_guard lock(mu_);
    return err_;
  }
  bool WaitForErr(const std::string& text, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (err().find(text) != std::string::npos) return true;
      if (Poll()) return err().find(text) != std::string::npos;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }
  // The exit code (nullopt: still running after `timeout`, or killed).
  std::optional<int> Wait(std::chrono::milliseconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!Poll() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    if (!exited_) return std::nullopt;
    if (out_reader_.joinable()) out_reader_.join();
    if (err_reader_.joinable()) err_reader_.join();
    if (!WIFEXITED(status_)) return std::nullopt;
    return WEXITSTATUS(status_);
  }
  void Signal(int sig) { ::kill(pid_, sig); }

 private:
  bool Poll() {
    if (!exited_ && ::waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
    return exited_;
  }
  void Drain(int fd, std::string* into) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      std::lock_guard lock(mu_);
      into->append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
  }
  pid_t pid_ = -1;
  int status_ = 0;
  bool exited_ = false;
  mutable std::mutex mu_;
  std::string out_, err_;
  std::thread out_reader_, err_reader_;
};

// A stream whose text can be read while another thread writes it.
class LockedBuf : public std::streambuf {
 public:
  std::string str() const {
    std::lock_guard lock(mu_);
    return text_;
  }

 protected:
  int overflow(int c) override {
    if (c == EOF) return 0;
    std::lock_guard lock(mu_);
    text_ += static_cast<char>(c);
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    std::lock_guard lock(mu_);
    text_.append(s, static_cast<std::size_t>(n));
    return n;
  }

 private:
  mutable std::mutex mu_;
  std::string text_;
};

// ================================================================================
BOOST_AUTO_TEST_SUITE(generator)

BOOST_AUTO_TEST_CASE(
    same_seed_gives_byte_identical_records_and_truth_other_seed_does_not) {
  Generated a(8, 40, 7, 60), b(8, 40, 7, 60), c(8, 40, 8, 60);
  auto records = [](const Generated& g) {
    std::vector<std::string> out;
    WithRaw(g.ledger_dir(), [&](rocksdb::DB& db, rocksdb::ColumnFamilyHandle* events) {
      std::unique_ptr<rocksdb::Iterator> it(db.NewIterator({}, events));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        out.push_back(it->key().ToString() + "=" + it->value().ToString());
      }
    });
    return out;
  };
  const auto ra = records(a), rb = records(b), rc = records(c);
  BOOST_TEST(ra.size() == a.truth->last_seq());
  BOOST_TEST((ra == rb), "same seed, different records");
  BOOST_TEST((ra != rc), "another seed gave the same records");
  auto file = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)),
                       std::istreambuf_iterator<char>());
  };
  BOOST_TEST(file(a.truth_path) == file(b.truth_path));
  BOOST_TEST(file(a.data + "/token.key") == file(b.data + "/token.key"));
  BOOST_TEST(file(a.leaks_path) == file(b.leaks_path));
  BOOST_TEST(file(a.truth_path) != file(c.truth_path));
}

BOOST_AUTO_TEST_CASE(generated_ledger_opens_in_the_service_and_its_tokens_authenticate) {
  Generated g;
  service::ServiceOptions o;
  o.data_dir = g.data;
  o.read_only = true;
  auto svc = service::TokenService::Open(o);  // replays and checks the key fingerprint
  BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
  BOOST_TEST((*svc)->state().token_count() == g.truth->tokens.size());
  BOOST_TEST((*svc)->state().user_count() == g.truth->users.size());
  for (const auto& [id, t] : g.truth->tokens) {
    const std::string secret = GeneratedToken(42, id);
    BOOST_TEST((service::CheckTokenShape(secret, "glpat-") == service::TokenShape::kOk));
    const auto r = (*svc)->Authenticate(secret, t.created_at);
    BOOST_TEST(r.token_id == id);
    BOOST_TEST(r.user_id == t.user);
  }
  std::ifstream key(g.data + "/token.key");
  struct stat st {};
  BOOST_REQUIRE(::stat((g.data + "/token.key").c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
}

BOOST_AUTO_TEST_CASE(generated_ledger_is_a_realistic_mix_that_obeys_the_service_rules) {
  Generated g(15, 160, 3, 200);
  const TruthModel& t = *g.truth;
  std::map<std::string, int> ops, reasons;
  int sudo = 0, cli = 0, api = 0, expired_in_span = 0;
  std::map<std::uint64_t, bool> admin;
  for (const json::object& l : t.lines) {
    const std::string op = S(l.at("op"));
    ++ops[op];
    if (op == "init") continue;
    if (l.at("via_sudo").as_bool()) ++sudo;
    (U(l.at("actor_user_id")) == 0 ? cli : api)++;
    if (op == "user") admin[U(l.at("user_id"))] = l.at("admin").as_bool();
    if (op == "admin_grant") admin[U(l.at("user_id"))] = true;
    if (op == "admin_remove") admin[U(l.at("user_id"))] = false;
    if (op == "revoke") ++reasons[S(l.at("reason"))];
    if (op == "create") {
      const std::int32_t today = DayOf(I(l.at("at_us")));
      const auto expires = I(l.at("expires_day"));
      BOOST_TEST(expires > today);         // never today or in the past
      BOOST_TEST(expires <= today + 365);  // at most the maximum lifetime
      const std::uint64_t owner = U(l.at("user_id"));
      if (U(l.at("scopes")) & 8u) BOOST_TEST(admin[owner], "sudo for a non-admin");
      BOOST_TEST(!t.BlockedAt(owner, I(l.at("at_us")), U(l.at("seq"))),
                 "token for a blocked user");
      if (expires * kMicrosPerDay < t.last_us()) ++expired_in_span;
      if (const std::uint64_t from = U(l.at("rotated_from"))) {
        // Rotation: the predecessor is revoked as "rotated" in the same transaction.
        const TruthToken& prev = t.tokens.at(from);
        BOOST_TEST(prev.reason == "rotated");
        BOOST_TEST(prev.revoked_seq + 1 == U(l.at("seq")));
      }
    }
  }
  BOOST_TEST(ops["user"] == 16);
  BOOST_TEST(ops["create"] == 160);
  for (const char* op : {"block", "unblock", "admin_grant", "revoke"}) {
    BOOST_TEST(ops[op] > 0, "no " << op);
  }
  for (const char* r :
       {"by_owner", "by_admin", "reported_leaked", "rotated", "family_reuse"}) {
    BOOST_TEST(reasons[r] > 0, "no revocation " << r);
  }
  BOOST_TEST(sudo > 0);
  BOOST_TEST(cli > 0);
  BOOST_TEST(api > cli);
  BOOST_TEST(expired_in_span > 10);
  // Months of simulated time.
  BOOST_TEST(t.last_us() - t.first_us() > 150 * kMicrosPerDay);
  BOOST_TEST(t.last_us() - t.first_us() <= 201 * kMicrosPerDay);
}

BOOST_AUTO_TEST_CASE(
    a_pre_made_key_is_used_and_the_test_only_warning_is_loud_without_one) {
  TempDir tmp;
  auto key = service::TokenKey::Create(tmp.Sub("my.key"));
  BOOST_TEST_REQUIRE(key.has_value(), Why(key));
  GeneratorOptions o;
  o.data = tmp.Sub("data");
  o.users = 3;
  o.tokens = 10;
  o.key_file = tmp.Sub("my.key");
  Captured c = Call([&](const Io& io) { return GenerateCommand(o, io); });
  BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
  BOOST_TEST(c.err.find("TEST ONLY") == std::string::npos, c.err);
  service::ServiceOptions so;
  so.data_dir = o.data;
  so.read_only = true;
  auto svc = service::TokenService::Open(so);  // <data>/token.key is the given key
  BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
  BOOST_TEST((*svc)->state().key_fingerprint() == key->Fingerprint());
  // Without --key-file: derived from the seed, and said so.
  o.data = tmp.Sub("derived");
  o.key_file.clear();
  c = Call([&](const Io& io) { return GenerateCommand(o, io); });
  BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
  BOOST_TEST(c.err.find("WARNING: TEST ONLY") != std::string::npos, c.err);
  const auto derived = service::TokenKey::FromBytes(DerivedKey(o.seed));
  so.data_dir = o.data;
  svc = service::TokenService::Open(so);
  BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
  BOOST_TEST((*svc)->state().key_fingerprint() == derived.Fingerprint());
}

BOOST_AUTO_TEST_CASE(refuses_a_directory_that_holds_a_ledger_and_changes_nothing) {
  Generated g(3, 10, 1, 30);
  const auto before = HashTree(g.data);
  auto r = Generate(g.options);
  BOOST_REQUIRE(!r.has_value());
  BOOST_TEST((r.error().code() == Status::Code::kAlreadyExists), Why(r));
  BOOST_TEST(DescribeChange(before, HashTree(g.data)) == "unchanged");
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================
BOOST_AUTO_TEST_SUITE(ground_truth)

BOOST_AUTO_TEST_CASE(verify_is_clean_and_its_head_and_counts_match_the_truth) {
  Generated g;
  Verified v = RunVerify(g.source());
  BOOST_TEST(v.c.status.ok(), Show(v.c) << ProblemsText(v));
  BOOST_TEST(v.report.ok());
  BOOST_TEST(v.report.records == g.truth->last_seq());
  BOOST_TEST(v.report.head_seq == g.truth->last_seq());
  std::string head_hex;
  for (std::uint8_t b : v.report.head_chain) {
    char buf[3];
    std::snprintf(buf, sizeof buf, "%02x", b);
    head_hex += buf;
  }
  BOOST_TEST(head_hex == S(g.truth->end.at("head_chain")));
  std::map<std::string, std::uint64_t> ops;
  for (const auto& l : g.truth->lines) ++ops[S(l.at("op"))];
  BOOST_TEST(v.report.counts["TokenCreated"] == ops["create"]);
  BOOST_TEST(v.report.counts["TokenRevoked"] == ops["revoke"]);
  BOOST_TEST(v.report.counts["UserRegistered"] == ops["user"]);
  BOOST_TEST(v.report.counts["UserChanged"] ==
             ops["block"] + ops["unblock"] + ops["admin_grant"] + ops["admin_remove"]);
  BOOST_TEST(v.report.tokens == g.truth->tokens.size());
  BOOST_TEST(v.c.out.find("result    OK") != std::string::npos, v.c.out);
  // The printed --expect line checks clean too.
  ExpectedHead e;
  e.seq = v.report.head_seq;
  e.chain = v.report.head_chain;
  Verified again = RunVerify(g.source(), e, /*json=*/true);
  BOOST_TEST(again.c.status.ok(), Show(again.c));
  const auto summary = again.c.OfType("summary");
  BOOST_REQUIRE(summary.size() == 1u);
  BOOST_TEST(summary[0].at("ok").as_bool());
  BOOST_TEST(S(summary[0].at("head_chain")) == head_hex);
}

BOOST_AUTO_TEST_CASE(state_at_matches_the_truth_at_many_instants) {
  Generated g;
  const TruthModel& t = *g.truth;
  std::vector<std::int64_t> instants = {t.first_us() - 1, t.first_us(), t.last_us(),
                                        t.last_us() + 400 * kMicrosPerDay};
  for (int i = 1; i < 20; ++i) {
    instants.push_back(t.first_us() + (t.last_us() - t.first_us()) * i / 20);
  }
  // Exactly at events and just before them, and at expiry midnights.
  for (std::size_t i = 5; i < t.lines.size(); i += t.lines.size() / 9) {
    const std::int64_t at = I(t.lines[i].at("at_us"));
    instants.push_back(at);
    instants.push_back(at - 1);
  }
  int midnights = 0;
  for (const auto& [id, tok] : t.tokens) {
    if (midnights++ > 6) break;
    instants.push_back(static_cast<std::int64_t>(tok.expires_day) * kMicrosPerDay);
    instants.push_back(static_cast<std::int64_t>(tok.expires_day) * kMicrosPerDay - 1);
  }
  for (std::int64_t at : instants) {
    StateOptions o;
    o.source = g.source();
    o.at_us = at;
    o.json = true;
    Captured c = Call([&](const Io& io) { return ShowState(o, io); });
    BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
    std::set<std::uint64_t> got;
    for (const auto& line : c.OfType("token")) got.insert(U(line.at("token_id")));
    const std::set<std::uint64_t> want = t.ValidAt(at);
    BOOST_TEST((got == want), "at " << FormatTimestamp(at) << " (" << at << "): "
                                    << got.size() << " tokens, truth " << want.size());
    const auto summary = c.OfType("summary");
    BOOST_REQUIRE(summary.size() == 1u);
    BOOST_TEST(U(summary[0].at("valid")) == want.size());
  }
}

BOOST_AUTO_TEST_CASE(state_after_a_seq_and_for_one_user_match_the_truth) {
  Generated g;
  const TruthModel& t = *g.truth;
  for (std::uint64_t seq : {std::uint64_t{3}, t.last_seq() / 3, t.last_seq() / 2 + 1,
                            t.last_seq() - 1, t.last_seq()}) {
    StateOptions o;
    o.source = g.source();
    o.seq = seq;
    o.json = true;
    Captured c = Call([&](const Io& io) { return ShowState(o, io); });
    BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
    std::set<std::uint64_t> got;
    for (const auto& line : c.OfType("token")) got.insert(U(line.at("token_id")));
    BOOST_TEST((got == t.ValidAt(t.AtOfSeq(seq), seq)), "seq " << seq);
    BOOST_TEST(U(c.OfType("summary").at(0).at("seq")) == seq);
  }
  const std::int64_t mid = (t.first_us() + t.last_us()) / 2;
  for (const auto& [id, reg] : t.users) {
    StateOptions o;
    o.source = g.source();
    o.at_us = mid;
    o.user = S(reg.at("username"));
    o.json = true;
    Captured c = Call([&](const Io& io) { return ShowState(o, io); });
    BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
    std::set<std::uint64_t> got;
    for (const auto& line : c.OfType("token")) {
      got.insert(U(line.at("token_id")));
      BOOST_TEST(U(line.at("user_id")) == id);
    }
    BOOST_TEST((got == t.ValidAt(mid, UINT64_MAX, id)), "user " << o.user);
  }
  StateOptions past_end;
  past_end.source = g.source();
  past_end.seq = t.last_seq() + 1;
  Captured c = Call([&](const Io& io) { return ShowState(past_end, io); });
  BOOST_TEST(c.status.IsNotFound(), Show(c));
}

// Compares one token line of `history --json` with the truth.
void CheckTokenLine(const json::object& line, const TruthModel& t) {
  const std::uint64_t id = U(line.at("token_id"));
  BOOST_TEST_CONTEXT("token " << id) {
    const TruthToken& tok = t.tokens.at(id);
    BOOST_TEST(U(line.at("user_id")) == tok.user);
    BOOST_TEST(S(line.at("name")) == tok.name);
    BOOST_TEST(S(line.at("description")) == tok.description);
    BOOST_TEST(S(line.at("expires_at")) == FormatDate(tok.expires_day));
    std::uint32_t scopes = 0;
    for (const auto& s : line.at("scopes").as_array()) {
      scopes |= *service::ScopeBit(std::string(s.as_string()));
    }
    BOOST_TEST(scopes == tok.scopes);
    BOOST_TEST((line.at("rotated_from").is_null() ? 0 : U(line.at("rotated_from"))) ==
               tok.rotated_from);
    BOOST_TEST((line.at("rotated_to").is_null() ? 0 : U(line.at("rotated_to"))) ==
               tok.rotated_to);
    auto check_who = [](const json::object& who, const json::object& truth) {
      BOOST_TEST(U(who.at("seq")) == U(truth.at("seq")));
      BOOST_TEST(I(who.at("at_us")) == I(truth.at("at_us")));
      BOOST_TEST(U(who.at("by_user_id")) == U(truth.at("actor_user_id")));
      BOOST_TEST((who.at("by_token_id").is_null() ? 0 : U(who.at("by_token_id"))) ==
                 U(truth.at("actor_token_id")));
      BOOST_TEST(who.at("via_sudo").as_bool() == truth.at("via_sudo").as_bool());
      BOOST_TEST(S(who.at("client_address")) == S(truth.at("client_address")));
      BOOST_TEST(S(who.at("request_id")) == S(truth.at("request_id")));
    };
    check_who(line.at("created").as_object(), tok.created);
    if (tok.revoked_seq) {
      BOOST_REQUIRE(line.at("revoked").is_object());
      check_who(line.at("revoked").as_object(), tok.revoked);
      BOOST_TEST(S(line.at("revoked").as_object().at("reason")) == tok.reason);
    } else {
      BOOST_TEST(line.at("revoked").is_null());
    }
  }
}

BOOST_AUTO_TEST_CASE(history_matches_the_truth_for_sampled_tokens) {
  Generated g;
  const TruthModel& t = *g.truth;
  // Rotated families, revoked tokens, sudo-made ones, the root token and some others.
  std::set<std::uint64_t> sample = {1, t.tokens.rbegin()->first};
  for (const auto& [id, tok] : t.tokens) {
    if (tok.rotated_from && sample.size() < 5) sample.insert(id);
    if (tok.created.at("via_sudo").as_bool()) sample.insert(id);
    if (tok.reason == "reported_leaked" || tok.reason == "family_reuse")
      sample.insert(id);
    if (id % 17 == 0) sample.insert(id);
  }
  const std::int64_t now = t.last_us() + 1;
  for (std::uint64_t id : sample) {
    HistoryOptions o;
    o.source = g.source();
    o.token_id = id;
    o.json = true;
    o.now_us = now;
    Captured c = Call([&](const Io& io) { return History(o, io); });
    BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
    const auto family = c.OfType("family");
    BOOST_REQUIRE(family.size() == 1u);
    std::vector<std::uint64_t> ids;
    for (const auto& v : family[0].at("tokens").as_array()) ids.push_back(U(v));
    BOOST_TEST((ids == t.Family(id)), "family of " << id);
    const auto tokens = c.OfType("token");
    BOOST_TEST_REQUIRE(tokens.size() == ids.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      BOOST_TEST(U(tokens[i].at("token_id")) == ids[i]);
      BOOST_TEST(U(tokens[i].at("family_position")) == i + 1);
      CheckTokenLine(tokens[i], t);
      const TruthToken& tok = t.tokens.at(ids[i]);
      const bool valid = t.ValidAt(now).contains(ids[i]);
      const std::string state = S(tokens[i].at("state_now"));
      if (valid) BOOST_TEST(state == "active");
      if (tok.revoked_seq) BOOST_TEST(state == "revoked");
    }
  }
}

BOOST_AUTO_TEST_CASE(history_by_token_value_and_by_user_match_the_truth) {
  Generated g;
  const TruthModel& t = *g.truth;
  const std::uint64_t id = t.tokens.rbegin()->first;
  const std::string secret = GeneratedToken(42, id);
  HistoryOptions o;
  o.source = g.source();
  o.token_value_from = "-";
  o.json = true;
  Captured c = Call([&](const Io& io) { return History(o, io); }, secret + "\n");
  BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
  BOOST_TEST(U(c.OfType("family").at(0).at("token_id")) == id);
  BOOST_TEST(c.out.find(secret) == std::string::npos);
  BOOST_TEST(c.err.find(secret) == std::string::npos);
  // Without the key it cannot be looked up; a token of another ledger is not found.
  o.source.key_file = g.tmp.Sub("no-such.key");
  c = Call([&](const Io& io) { return History(o, io); }, secret + "\n");
  BOOST_TEST(c.status.IsNotFound(), Show(c));
  o.source.key_file.clear();
  c = Call([&](const Io& io) { return History(o, io); }, GeneratedToken(43, id) + "\n");
  BOOST_TEST(c.status.IsNotFound(), Show(c));
  BOOST_TEST(c.err.find(GeneratedToken(43, id)) == std::string::npos);
  BOOST_TEST(c.status.message().find(GeneratedToken(43, id)) == std::string::npos);

  // A user: registration, every change, every token.
  for (const auto& [uid, reg] : t.users) {
    HistoryOptions u;
    u.source = g.source();
    u.user = S(reg.at("username"));
    u.json = true;
    Captured h = Call([&](const Io& io) { return History(u, io); });
    BOOST_TEST_REQUIRE(h.status.ok(), Show(h));
    const auto user = h.OfType("user");
    BOOST_REQUIRE(user.size() == 1u);
    BOOST_TEST(U(user[0].at("user_id")) == uid);
    BOOST_TEST(U(user[0].at("registered").as_object().at("seq")) == U(reg.at("seq")));
    const auto changes = h.OfType("user_change");
    std::vector<std::uint64_t> got, want = {U(reg.at("seq"))};
    for (const auto& ch : changes) got.push_back(U(ch.at("seq")));
    if (t.user_changes.contains(uid)) {
      for (const auto& ch : t.user_changes.at(uid)) want.push_back(U(ch.at("seq")));
    }
    BOOST_TEST((got == want), "changes of " << u.user);
    std::set<std::uint64_t> tokens, truth_tokens;
    for (const auto& line : h.OfType("token")) {
      tokens.insert(U(line.at("token_id")));
      CheckTokenLine(line, t);
    }
    for (const auto& [tid, tok] : t.tokens) {
      if (tok.user == uid) truth_tokens.insert(tid);
    }
    BOOST_TEST((tokens == truth_tokens), "tokens of " << u.user);
  }
}

BOOST_AUTO_TEST_CASE(log_filters_select_exactly_the_events_the_truth_says) {
  Generated g;
  const TruthModel& t = *g.truth;
  auto seqs = [&](LogOptions o) {
    o.source = g.source();
    o.json = true;
    Captured c = Call([&](const Io& io) { return Log(o, io); });
    BOOST_TEST(c.status.ok(), Show(c));
    std::vector<std::uint64_t> out;
    for (const auto& l : c.Lines()) out.push_back(U(l.at("seq")));
    return out;
  };
  auto want = [&](auto pred) {
    std::vector<std::uint64_t> out;
    for (const auto& l : t.lines) {
      if (pred(l)) out.push_back(U(l.at("seq")));
    }
    return out;
  };
  auto num = [](const json::object& l, const char* k) {
    return l.contains(k) ? U(l.at(k)) : std::uint64_t{0};
  };
  LogOptions all;
  BOOST_TEST(seqs(all).size() == t.last_seq());

  // A token: its creation, revocation, its successor's creation, and what it did.
  const std::uint64_t token = t.Family(t.tokens.rbegin()->first).front();
  LogOptions by_token;
  by_token.filter.token_id = token;
  BOOST_TEST(seqs(by_token) == want([&](const json::object& l) {
               return num(l, "token_id") == token || num(l, "rotated_from") == token ||
                      num(l, "actor_token_id") == token;
             }),
             boost::test_tools::per_element());

  // A user (by name): about them, their tokens, or done as them.
  const auto& [uid, reg] = *std::next(t.users.begin(), 2);
  LogOptions by_user;
  by_user.filter.user = S(reg.at("username"));
  BOOST_TEST(seqs(by_user) == want([&](const json::object& l) {
               const std::uint64_t subject = S(l.at("op")) == "revoke"
                                                 ? t.tokens.at(num(l, "token_id")).user
                                                 : num(l, "user_id");
               return S(l.at("op")) != "init" &&
                      (subject == uid || num(l, "actor_user_id") == uid);
             }),
             boost::test_tools::per_element());

  // Types, a time window and a seq range, together.
  const std::int64_t since = I(t.lines[t.lines.size() / 4].at("at_us"));
  const std::int64_t until = I(t.lines[t.lines.size() / 2].at("at_us"));
  LogOptions window;
  window.filter.types = {"token_revoked,USERCHANGED"};
  window.filter.since_us = since;
  window.filter.until_us = until;
  window.filter.from_seq = 10;
  window.filter.to_seq = t.last_seq() - 5;
  BOOST_TEST(seqs(window) == want([&](const json::object& l) {
               const std::string op = S(l.at("op"));
               const bool type = op == "revoke" || op == "block" || op == "unblock" ||
                                 op == "admin_grant" || op == "admin_remove";
               const auto at = I(l.at("at_us"));
               const auto seq = U(l.at("seq"));
               return type && at >= since && at <= until && seq >= 10 &&
                      seq <= t.last_seq() - 5;
             }),
             boost::test_tools::per_element());

  LogOptions bad;
  bad.source = g.source();
  bad.filter.types = {"TokenExploded"};
  Captured c = Call([&](const Io& io) { return Log(bad, io); });
  BOOST_TEST((c.status.code() == Status::Code::kInvalidArgument), Show(c));
}

BOOST_AUTO_TEST_CASE(export_is_the_whole_stream_flat_in_jsonl_and_csv) {
  Generated g(5, 30, 9, 60);
  const TruthModel& t = *g.truth;
  ExportOptions o;
  o.source = g.source();
  Captured c = Call([&](const Io& io) { return Export(o, io); });
  BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
  const auto lines = c.Lines();
  BOOST_REQUIRE(lines.size() == t.last_seq());
  for (std::size_t i = 0; i < lines.size(); ++i) {
    BOOST_TEST(U(lines[i].at("seq")) == i + 1);
    BOOST_TEST(lines[i].size() == lines[0].size());  // every column on every line
    const json::object& truth = t.lines[i];
    BOOST_TEST(I(lines[i].at("recorded_at_us")) == I(truth.at("at_us")));
    if (truth.at("op") == "create") {
      BOOST_TEST(S(lines[i].at("type")) == "TokenCreated");
      BOOST_TEST(U(lines[i].at("token_id")) == U(truth.at("token_id")));
      BOOST_TEST(S(lines[i].at("client_address")) == S(truth.at("client_address")));
    }
    if (truth.at("op") == "revoke") {
      BOOST_TEST(S(lines[i].at("reason")) == S(truth.at("reason")));
      BOOST_TEST(U(lines[i].at("user_id")) == t.tokens.at(U(truth.at("token_id"))).user);
    }
  }
  o.format = ExportFormat::kCsv;
  c = Call([&](const Io& io) { return Export(o, io); });
  BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
  std::istringstream csv(c.out);
  std::string header, row;
  std::getline(csv, header);
  BOOST_TEST(header.starts_with("seq,recorded_at,recorded_at_us,type,"));
  std::size_t rows = 0;
  while (std::getline(csv, row)) ++rows;
  BOOST_TEST(rows == t.last_seq());
}

BOOST_AUTO_TEST_CASE(diff_matches_the_truth_between_two_instants) {
  Generated g;
  const TruthModel& t = *g.truth;
  const std::int64_t span = t.last_us() - t.first_us();
  for (auto [from, to] : {std::pair{t.first_us() + span / 5, t.first_us() + span / 2},
                          std::pair{t.first_us() - 1, t.last_us()},
                          std::pair{t.first_us() + span / 2,
                                    t.first_us() + span / 2 + 3 * kMicrosPerDay}}) {
    DiffOptions o;
    o.source = g.source();
    o.from_us = from;
    o.to_us = to;
    o.json = true;
    Captured c = Call([&](const Io& io) { return Diff(o, io); });
    BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
    std::set<std::uint64_t> created, revoked, expired, want_created, want_revoked,
        want_expired;
    for (const auto& l : c.Lines()) {
      const std::string type = S(l.at("type"));
      if (type == "created" || type == "rotated") created.insert(U(l.at("token_id")));
      if (type == "revoked") revoked.insert(U(l.at("token_id")));
      if (type == "expired") expired.insert(U(l.at("token_id")));
    }
    for (const auto& [id, tok] : t.tokens) {
      if (tok.created_at > from && tok.created_at <= to) want_created.insert(id);
      if (tok.revoked_seq && tok.revoked_at > from && tok.revoked_at <= to)
        want_revoked.insert(id);
      const std::int64_t e = static_cast<std::int64_t>(tok.expires_day) * kMicrosPerDay;
      if (e > from && e <= to && tok.created_at < e &&
          (!tok.revoked_seq || tok.revoked_at >= e)) {
        want_expired.insert(id);
      }
    }
    BOOST_TEST((created == want_created));
    BOOST_TEST((revoked == want_revoked));
    BOOST_TEST((expired == want_expired));
    const auto summary = c.OfType("summary").at(0);
    BOOST_TEST(U(summary.at("valid_at_from")) == t.ValidAt(from).size());
    BOOST_TEST(U(summary.at("valid_at_to")) == t.ValidAt(to).size());
    // The stream is in time order, expiries included.
    std::int64_t last = INT64_MIN;
    for (const auto& l : c.Lines()) {
      if (l.at("type") == "summary") continue;
      BOOST_TEST(I(l.at("at_us")) >= last);
      last = I(l.at("at_us"));
    }
  }
}

BOOST_AUTO_TEST_CASE(triage_classifies_scanner_findings_and_never_prints_a_secret) {
  Generated g;
  const TruthModel& t = *g.truth;
  std::ifstream leaks_file(g.leaks_path);
  std::vector<std::string> candidates;
  std::string line;
  while (std::getline(leaks_file, line)) {
    if (!line.empty() && line[0] != '#') candidates.push_back(line);
  }
  BOOST_REQUIRE(candidates.size() >= 7u);
  const std::int64_t now = t.last_us() + 1;
  const std::int64_t at = (t.first_us() + t.last_us()) / 2;
  TriageOptions o;
  o.source = g.source();
  o.file = g.leaks_path;
  o.now_us = now;
  o.at_us = at;
  o.json = true;
  const auto before = HashTree(g.data);
  Captured c = Call([&](const Io& io) { return Triage(o, io); });
  BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
  BOOST_TEST(DescribeChange(before, HashTree(g.data)) == "unchanged");  // never revokes

  // Which candidate is which token, from the generator's own secrets.
  std::map<std::string, std::uint64_t> id_of;
  for (const auto& [id, tok] : t.tokens) id_of[GeneratedToken(42, id)] = id;
  const auto valid_now = t.ValidAt(now), valid_then = t.ValidAt(at);
  const auto lines = c.OfType("candidate");
  BOOST_REQUIRE(lines.size() == candidates.size());
  std::set<std::uint64_t> live;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& cand = candidates[i];
    const json::object& l = lines[i];
    BOOST_TEST_CONTEXT("candidate " << i) {
      const auto shape = service::CheckTokenShape(cand, "glpat-");
      BOOST_TEST(S(l.at("shape")) == service::TokenShapeName(shape));
      auto it = id_of.find(cand);
      BOOST_TEST(l.at("known").as_bool() == (it != id_of.end()));
      if (it == id_of.end()) continue;
      const TruthToken& tok = t.tokens.at(it->second);
      BOOST_TEST(U(l.at("token_id")) == it->second);
      BOOST_TEST(U(l.at("user_id")) == tok.user);
      BOOST_TEST(l.at("valid_at").as_bool() == valid_then.contains(it->second));
      const bool blocked = t.BlockedAt(tok.user, now, UINT64_MAX);
      const bool is_live = !tok.revoked_seq && DayOf(now) < tok.expires_day;
      BOOST_TEST(l.at("live").as_bool() == is_live);
      if (valid_now.contains(it->second)) BOOST_TEST(S(l.at("state")) == "active");
      if (is_live && blocked) BOOST_TEST(S(l.at("state")) == "owner_blocked");
      if (is_live) live.insert(it->second);
    }
  }
  BOOST_TEST(!live.empty());
  std::set<std::uint64_t> revoke;
  for (const auto& r : c.OfType("revoke")) {
    revoke.insert(U(r.at("token_id")));
    BOOST_TEST(S(r.at("api")).find("$ADMIN_TOKEN") != std::string::npos);
    BOOST_TEST(S(r.at("api")).find("DELETE") != std::string::npos);
    BOOST_TEST(S(r.at("cli")).starts_with("patledger token revoke "));
  }
  BOOST_TEST((revoke == live));
  // No candidate ever appears in the output, for people or machines.
  TriageOptions text = o;
  text.json = false;
  Captured people = Call([&](const Io& io) { return Triage(text, io); });
  BOOST_TEST_REQUIRE(people.status.ok(), Show(people));
  for (const std::string& cand : candidates) {
    BOOST_TEST(c.out.find(cand) == std::string::npos);
    BOOST_TEST(people.out.find(cand) == std::string::npos);
    BOOST_TEST(people.err.find(cand) == std::string::npos);
  }
  for (std::uint64_t id : live) {
    BOOST_TEST(people.out.find("personal_access_tokens/" + std::to_string(id)) !=
               std::string::npos);
  }
  // From stdin, and without the key: refused.
  TriageOptions from_stdin = o;
  from_stdin.file = "-";
  Captured s =
      Call([&](const Io& io) { return Triage(from_stdin, io); }, candidates[0] + "\n");
  BOOST_TEST(s.status.ok(), Show(s));
  BOOST_TEST(s.OfType("candidate").size() == 1u);
  from_stdin.source.key_file = g.tmp.Sub("missing.key");
  s = Call([&](const Io& io) { return Triage(from_stdin, io); }, candidates[0] + "\n");
  BOOST_TEST(s.status.IsNotFound(), Show(s));
}

BOOST_AUTO_TEST_CASE(stats_count_what_the_truth_counts) {
  Generated g;
  const TruthModel& t = *g.truth;
  const std::int64_t now = t.last_us() + 1;
  StatsOptions o;
  o.source = g.source();
  o.now_us = now;
  o.json = true;
  Captured c = Call([&](const Io& io) { return Stats(o, io); });
  BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
  const json::object s = c.OfType("stats").at(0);
  BOOST_TEST(U(s.at("users").as_object().at("total")) == t.users.size());
  const json::object& tokens = s.at("tokens").as_object();
  BOOST_TEST(U(tokens.at("total")) == t.tokens.size());
  BOOST_TEST(U(tokens.at("active")) == t.ValidAt(now).size());
  std::map<std::string, std::uint64_t> reasons;
  std::uint64_t revoked = 0;
  for (const auto& [id, tok] : t.tokens) {
    if (tok.revoked_seq) ++reasons[tok.reason], ++revoked;
  }
  BOOST_TEST(U(tokens.at("revoked")) == revoked);
  for (const auto& [r, n] : reasons) {
    BOOST_TEST(U(s.at("revoked_by_reason").as_object().at(r)) == n);
  }
  Captured people = Call([&](const Io& io) {
    StatsOptions p = o;
    p.json = false;
    return Stats(p, io);
  });
  BOOST_TEST(people.status.ok());
  BOOST_TEST(people.out.find("Active tokens, by expiry month") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================
BOOST_AUTO_TEST_SUITE(damage)

// A TokenRevoked record in the middle of the log (for damage that must be seen by the
// consistency checks too).
std::uint64_t MiddleRevocation(const TruthModel& t) {
  for (std::size_t i = t.lines.size() / 2; i < t.lines.size(); ++i) {
    if (t.lines[i].at("op") == "revoke") return U(t.lines[i].at("seq"));
  }
  return 0;
}

BOOST_AUTO_TEST_CASE(flipped_byte_is_reported_at_its_seq_and_log_keeps_going) {
  Generated g;
  const std::uint64_t k = g.truth->last_seq() / 2;
  std::string v = RawGet(g.ledger_dir(), k);
  v[v.size() / 2] ^= 0x40;
  RawPut(g.ledger_dir(), k, v);
  Verified r = RunVerify(g.source());
  BOOST_TEST(r.c.status.IsCorruption(), Show(r.c));
  BOOST_TEST(r.c.status.message().starts_with("seq " + std::to_string(k) +
                                              ": checksum mismatch"),
             Show(r.c));
  BOOST_TEST((r.Seqs("record") == std::set<std::uint64_t>{k}), ProblemsText(r));
  BOOST_TEST(r.report.records == g.truth->last_seq() - 1);
  BOOST_TEST(r.c.out.find("DAMAGED") != std::string::npos, r.c.out);

  // log and export go on past it, and say where it is.
  LogOptions o;
  o.source = g.source();
  o.json = true;
  Captured c = Call([&](const Io& io) { return Log(o, io); });
  BOOST_TEST(c.status.IsCorruption(), Show(c));
  std::vector<std::uint64_t> events, damaged;
  for (const auto& l : c.Lines())
    (l.at("type") == "Damage" ? damaged : events).push_back(U(l.at("seq")));
  BOOST_TEST(damaged == std::vector<std::uint64_t>{k});
  BOOST_TEST(events.size() == g.truth->last_seq() - 1);
  BOOST_TEST(events.back() == g.truth->last_seq());
  o.json = false;
  c = Call([&](const Io& io) { return Log(o, io); });
  BOOST_TEST(c.out.find("!! DAMAGED: seq " + std::to_string(k) + ": checksum mismatch") !=
             std::string::npos);

  // Commands that rebuild state stop there, naming it.
  StateOptions s;
  s.source = g.source();
  s.at_us = g.truth->last_us();
  c = Call([&](const Io& io) { return ShowState(s, io); });
  BOOST_TEST(c.status.IsCorruption(), Show(c));
  BOOST_TEST(c.status.message().starts_with("seq " + std::to_string(k) + ": "), Show(c));
}

BOOST_AUTO_TEST_CASE(deleted_key_is_a_gap_at_its_seq) {
  Generated g;
  const std::uint64_t k = g.truth->last_seq() / 3;
  RawDelete(g.ledger_dir(), k);
  Verified r = RunVerify(g.source());
  BOOST_TEST(r.c.status.IsCorruption(), Show(r.c));
  BOOST_TEST((r.Seqs("record") == std::set<std::uint64_t>{k}), ProblemsText(r));
  const Problem* p = r.First("record", k);
  BOOST_REQUIRE(p != nullptr);
  BOOST_TEST(p->what == "gap (expected " + std::to_string(k) + " found " +
                            std::to_string(k + 1) + ")");
}

BOOST_AUTO_TEST_CASE(swapped_values_are_reported_at_both_seqs) {
  Generated g;
  const std::uint64_t a = g.truth->last_seq() / 4, b = g.truth->last_seq() / 4 * 3;
  const std::string va = RawGet(g.ledger_dir(), a), vb = RawGet(g.ledger_dir(), b);
  RawPut(g.ledger_dir(), a, vb);
  RawPut(g.ledger_dir(), b, va);
  Verified r = RunVerify(g.source());
  BOOST_TEST(r.c.status.IsCorruption(), Show(r.c));
  BOOST_TEST((r.Seqs("record") == std::set<std::uint64_t>{a, b}), ProblemsText(r));
  BOOST_REQUIRE(r.First("record", a) != nullptr);
  BOOST_TEST(r.First("record", a)->what == "key is seq " + std::to_string(a) +
                                               " but Sequencing.seq is " +
                                               std::to_string(b));
  BOOST_TEST(r.First("record", b)->what == "key is seq " + std::to_string(b) +
                                               " but Sequencing.seq is " +
                                               std::to_string(a));
  BOOST_TEST(
      r.c.status.message().starts_with("seq " + std::to_string(a) + ": key is seq"));
}

BOOST_AUTO_TEST_CASE(broken_chain_is_reported_at_its_seq) {
  Generated g;
  const std::uint64_t k = g.truth->last_seq() / 2 + 3;
  std::string env = EnvelopeOf(RawGet(g.ledger_dir(), k));
  auto* bytes = schema::GetMutableEnvelope(env.data())
                    ->mutable_sequencing()
                    ->mutable_prev_chain()
                    .mutable_bytes();
  bytes->Mutate(0, bytes->Get(0) ^ 0xff);
  RawPut(g.ledger_dir(), k, Seal(env));  // a valid checksum: only the chain tells
  Verified r = RunVerify(g.source());
  BOOST_TEST(r.c.status.IsCorruption(), Show(r.c));
  BOOST_TEST((r.Seqs("record") == std::set<std::uint64_t>{k}), ProblemsText(r));
  BOOST_TEST(r.First("record", k)->what.starts_with("chain mismatch"));
}

BOOST_AUTO_TEST_CASE(edited_and_resealed_event_breaks_the_chain_after_it_and_the_replay) {
  Generated g;
  const std::uint64_t k = MiddleRevocation(*g.truth);
  BOOST_REQUIRE(k != 0u);
  std::string env = EnvelopeOf(RawGet(g.ledger_dir(), k));
  auto* e = static_cast<schema::TokenRevoked*>(
      schema::GetMutableEnvelope(env.data())->mutable_event());
  BOOST_REQUIRE(e->mutate_token_id(e->token_id() + 100000));
  RawPut(g.ledger_dir(), k, Seal(env));
  Verified r = RunVerify(g.source());
  BOOST_TEST(r.c.status.IsCorruption(), Show(r.c));
  // The record itself is intact but contradicts the log; the next one's chain breaks.
  BOOST_TEST((r.Seqs("replay").contains(k)), ProblemsText(r));
  BOOST_TEST(r.First("replay", k)->what.starts_with("revoke of unknown token"),
             ProblemsText(r));
  BOOST_TEST((r.Seqs("record") == std::set<std::uint64_t>{k + 1}), ProblemsText(r));
}

BOOST_AUTO_TEST_CASE(every_damage_is_reported_in_one_run) {
  Generated g;
  const std::uint64_t n = g.truth->last_seq();
  const std::uint64_t flip = n / 5, gone = n / 3, chain = n / 2;
  std::string v = RawGet(g.ledger_dir(), flip);
  v[v.size() / 2] ^= 1;
  RawPut(g.ledger_dir(), flip, v);
  RawDelete(g.ledger_dir(), gone);
  std::string env = EnvelopeOf(RawGet(g.ledger_dir(), chain));
  auto* bytes = schema::GetMutableEnvelope(env.data())
                    ->mutable_sequencing()
                    ->mutable_prev_chain()
                    .mutable_bytes();
  bytes->Mutate(5, bytes->Get(5) ^ 1);
  RawPut(g.ledger_dir(), chain, Seal(env));
  Verified r = RunVerify(g.source(), {}, /*json=*/true);
  BOOST_TEST((r.Seqs("record") == std::set<std::uint64_t>{flip, gone, chain}),
             ProblemsText(r));
  const auto summary = r.c.OfType("summary").at(0);
  BOOST_TEST(U(summary.at("first_bad_seq")) == flip);
  BOOST_TEST(!summary.at("ok").as_bool());
  std::set<std::uint64_t> bad;
  for (const auto& s : summary.at("bad_seqs").as_array()) bad.insert(U(s));
  BOOST_TEST(bad.contains(flip));
  BOOST_TEST(bad.contains(gone));
  BOOST_TEST(bad.contains(chain));
  BOOST_TEST(r.c.OfType("problem").size() == r.report.problem_count);
}

// The newest WAL file of a ledger directory.
fs::path NewestWal(const std::string& dir) {
  fs::path newest;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".log" &&
        (newest.empty() || e.path().filename() > newest.filename())) {
      newest = e.path();
    }
  }
  return newest;
}

BOOST_AUTO_TEST_CASE(truncated_wal_is_reported_at_the_first_lost_seq) {
  Generated g(6, 30, 5, 40);
  const std::uint64_t l = g.truth->last_seq();
  // Append four single-event requests through the service, noting where each one ends
  // in the (new) WAL.
  std::vector<std::uintmax_t> ends;
  ExpectedHead audited;
  // A clean stop flushes the WAL into SST files (F1), so the damage below is done to
  // a crash image: a copy taken while the service still runs, its events in the WAL.
  TempDir image;
  fs::path wal;
  {
    service::ServiceOptions so;
    so.data_dir = g.data;
    auto svc = service::TokenService::Open(so);
    BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
    ends.push_back(fs::file_size(NewestWal(g.ledger_dir())));
    for (int i = 0; i < 4; ++i) {
      auto u = (*svc)->RegisterUser({}, "late" + std::to_string(i), "Late",
                                    "late@example.com", false);
      BOOST_TEST_REQUIRE(u.has_value(), Why(u));
      ends.push_back(fs::file_size(NewestWal(g.ledger_dir())));
    }
    audited.seq = (*svc)->ledger().last_seq();
    audited.chain = (*svc)->ledger().head_chain();
    wal = NewestWal(g.ledger_dir());
    const std::error_code copied = CopyTreeOfLiveLedger(g.data, image.Sub("data"));
    BOOST_TEST_REQUIRE(!copied, copied.message());
  }
  BOOST_TEST_REQUIRE(audited.seq == l + 4);
  {  // After the clean stop the WAL holds nothing: cutting it loses nothing.
    TempDir stopped;
    fs::copy(g.data, stopped.Sub("data"), fs::copy_options::recursive);
    for (const auto& e : fs::directory_iterator(stopped.Sub("data/ledger"))) {
      if (e.path().extension() == ".log") fs::resize_file(e.path(), 0);
    }
    Source s;
    s.data = stopped.Sub("data");
    Verified v = RunVerify(s, audited);
    BOOST_TEST(v.c.status.ok(), ProblemsText(v));
    BOOST_TEST(v.report.head_seq == l + 4);
  }

  // Cut in the middle of the second request's record: seq l+2 on are lost.
  TempDir cut;
  fs::copy(image.Sub("data"), cut.Sub("data"), fs::copy_options::recursive);
  Source mid;
  mid.data = cut.Sub("data");
  fs::resize_file(cut.Sub("data/ledger/") + wal.filename().string(), ends[1] + 40);
  Verified r = RunVerify(mid);
  BOOST_TEST(r.c.status.IsCorruption(), Show(r.c));
  BOOST_TEST(r.report.head_seq == l + 1);
  BOOST_TEST((r.Seqs("wal") == std::set<std::uint64_t>{l + 2}), ProblemsText(r));
  BOOST_TEST(r.First("wal", l + 2)->what.find("held seq " + std::to_string(l + 2)) !=
                 std::string::npos,
             ProblemsText(r));
  BOOST_TEST((r.Seqs("journal") == std::set<std::uint64_t>{l + 2}), ProblemsText(r));
  r = RunVerify(mid, audited);
  BOOST_TEST((r.Seqs("expect") == std::set<std::uint64_t>{l + 2}), ProblemsText(r));
  BOOST_TEST(r.First("expect", l + 2)->what.starts_with("missing"));

  // Cut exactly between two records: no torn record tells; the head journal does, and
  // so does the audited head.
  TempDir clean;
  fs::copy(image.Sub("data"), clean.Sub("data"), fs::copy_options::recursive);
  Source boundary;
  boundary.data = clean.Sub("data");
  fs::resize_file(clean.Sub("data/ledger/") + wal.filename().string(), ends[2]);
  r = RunVerify(boundary);
  BOOST_TEST(r.c.status.IsCorruption(), ProblemsText(r));
  BOOST_TEST(r.report.head_seq == l + 2);
  BOOST_TEST(r.Seqs("wal").empty(), ProblemsText(r));
  BOOST_TEST((r.Seqs("journal") == std::set<std::uint64_t>{l + 3}), ProblemsText(r));
  BOOST_TEST(r.First("journal", l + 3)->what.find("recorded seq " + std::to_string(l + 4)) !=
                 std::string::npos,
             ProblemsText(r));
  r = RunVerify(boundary, audited);
  BOOST_TEST(r.c.status.IsCorruption());
  BOOST_TEST((r.Seqs("expect") == std::set<std::uint64_t>{l + 3}), ProblemsText(r));
  // Without the journal (moved aside), only the audited head tells.
  for (const auto& e : fs::directory_iterator(clean.Sub("data/ledger"))) {
    if (e.path().filename().string().starts_with("PATLEDGER-HEAD-")) fs::remove(e.path());
  }
  r = RunVerify(boundary);
  BOOST_TEST(r.c.status.ok(), ProblemsText(r));
  BOOST_TEST(r.report.head_seq == l + 2);

  // An audited chain that does not match (records changed since): reported at its seq.
  ExpectedHead wrong = audited;
  wrong.seq = l;
  (*wrong.chain)[0] ^= 1;
  r = RunVerify(g.source(), wrong);
  BOOST_TEST((r.Seqs("expect") == std::set<std::uint64_t>{l}), ProblemsText(r));
}

BOOST_AUTO_TEST_CASE(damaged_last_record_is_reported_with_its_seq) {
  // A read-only open does not read the last record, so verify opens the ledger and
  // reports the damage as a record problem at its seq (and the scan goes on to the end).
  Generated g(3, 10, 2, 20);
  const std::uint64_t k = g.truth->last_seq();
  std::string v = RawGet(g.ledger_dir(), k);
  v[v.size() / 2] ^= 0x10;
  RawPut(g.ledger_dir(), k, v);
  Verified r = RunVerify(g.source());
  BOOST_TEST(r.c.status.IsCorruption(), Show(r.c));
  BOOST_TEST((r.Seqs("record") == std::set<std::uint64_t>{k}), ProblemsText(r));
  BOOST_TEST(r.c.status.message().find("seq " + std::to_string(k) +
                                       ": checksum mismatch") != std::string::npos,
             Show(r.c));
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================
BOOST_AUTO_TEST_SUITE(read_only)

// Runs every command against `g` (reading `data`) and checks after each that no byte of
// `data` changed. `same` compares two hash trees.
void EveryCommandChangesNothing(
    const Generated& g, const std::string& data,
    const std::function<std::string(const std::map<std::string, std::string>&,
                                    const std::map<std::string, std::string>&)>& same) {
  Source src;
  src.data = data;
  const TruthModel& t = *g.truth;
  const std::string secret = GeneratedToken(42, t.tokens.rbegin()->first);
  TempDir out;
  int n = 0;
  auto check = [&](const std::string& name, auto fn, const std::string& input = "",
                   bool must_succeed = true) {
    const auto before = HashTree(data);
    Captured c = Call(fn, input);
    if (must_succeed) BOOST_TEST(c.status.ok(), name << ": " << Show(c));
    BOOST_TEST(same(before, HashTree(data)) == "unchanged", name);
    BOOST_TEST(c.out.find(secret) == std::string::npos, name);
    ++n;
  };
  check("verify", [&](const Io& io) {
    return Verify(VerifyOptions{src, false, {}}, io);
  });
  check("log", [&](const Io& io) {
    LogOptions o;
    o.source = src;
    o.filter.user = "root";
    return Log(o, io);
  });
  check("export", [&](const Io& io) {
    return Export(ExportOptions{src, ExportFormat::kCsv}, io);
  });
  check("history --token-id", [&](const Io& io) {
    HistoryOptions o;
    o.source = src;
    o.token_id = t.tokens.rbegin()->first;
    return History(o, io);
  });
  check(
      "history --token-value",
      [&](const Io& io) {
        HistoryOptions o;
        o.source = src;
        o.token_value_from = "-";
        return History(o, io);
      },
      secret + "\n");
  check("history --user", [&](const Io& io) {
    HistoryOptions o;
    o.source = src;
    o.user = "root";
    return History(o, io);
  });
  check("state", [&](const Io& io) {
    StateOptions o;
    o.source = src;
    o.at_us = (t.first_us() + t.last_us()) / 2;
    return ShowState(o, io);
  });
  check("diff", [&](const Io& io) {
    DiffOptions o;
    o.source = src;
    o.from_us = t.first_us();
    o.to_us = t.last_us();
    return Diff(o, io);
  });
  check("triage", [&](const Io& io) {
    TriageOptions o;
    o.source = src;
    o.file = g.leaks_path;
    o.at_us = t.last_us();
    return Triage(o, io);
  });
  check("stats", [&](const Io& io) {
    return Stats(StatsOptions{src, {}, {}, false}, io);
  });
  check("backup", [&](const Io& io) {
    BackupOptions o;
    o.source = src;
    o.to = out.Sub("backup");
    o.with_key = true;
    return Backup(o, io);
  });
  check("restore (refused: a ledger is there)", [&](const Io& io) {
    RestoreOptions o;
    o.from = out.Sub("backup");
    o.to = data;
    Status s = Restore(o, io);
    BOOST_TEST((s.code() == Status::Code::kAlreadyExists), s.ToString());
    return Status::OK();
  });
  check("generate (refused: a ledger is there)", [&](const Io&) {
    GeneratorOptions o = g.options;
    o.data = data;
    o.truth_file.clear();
    o.leaks_file.clear();
    auto r = Generate(o);
    BOOST_TEST(!r.has_value());
    return Status::OK();
  });
  // The backup can be restored elsewhere; restoring reads the backup without changing it.
  const auto backup_before = HashTree(out.Sub("backup"));
  Captured r = Call([&](const Io& io) {
    RestoreOptions o;
    o.from = out.Sub("backup");
    o.to = out.Sub("restored");
    return Restore(o, io);
  });
  BOOST_TEST(r.status.ok(), Show(r));
  BOOST_TEST(DescribeChange(backup_before, HashTree(out.Sub("backup"))) == "unchanged");
  BOOST_TEST(n == 13);
}

BOOST_AUTO_TEST_CASE(no_command_changes_a_byte_of_a_quiet_ledger_directory) {
  Generated g;
  // RocksDB's info LOG included: a read-only open does not even write that.
  EveryCommandChangesNothing(g, g.data, DescribeChange);
  // And the binary's own subcommands (the CLI path) likewise.
  const auto before = HashTree(g.data);
  for (std::vector<std::string> args :
       {std::vector<std::string>{kBinary, "verify", "--data", g.data},
        {kBinary, "log", "--data", g.data, "--type", "UserChanged"},
        {kBinary, "stats", "--data", g.data, "--json"}}) {
    Child c(args);
    BOOST_TEST((c.Wait() == std::optional<int>(0)), args[1] << ": " << c.err());
  }
  BOOST_TEST(DescribeChange(before, HashTree(g.data)) == "unchanged");
}

// A running server owns the directory: RocksDB's periodic flush of its own info log
// (LOG) may land at any moment. So LOG may only grow (its old bytes unchanged: the
// server appended); every other file must be byte-identical and no file may appear or
// disappear. The quiet-directory test above shows a read-only open writes no LOG.
std::string SameButServerLog(const std::map<std::string, std::string>& a,
                             const std::map<std::string, std::string>& b) {
  std::map<std::string, std::string> x = a, y = b;
  x.erase("ledger/LOG");
  y.erase("ledger/LOG");
  std::string diff = DescribeChange(x, y);
  if (diff != "unchanged") return diff;
  if (a.contains("ledger/LOG") != b.contains("ledger/LOG"))
    return "LOG appeared or vanished";
  return "unchanged";
}

BOOST_AUTO_TEST_CASE(no_command_changes_a_byte_of_a_running_servers_directory) {
  Generated g;
  TempDir logs;
  Child server({kBinary, "serve", "--data", g.data, "--listen", "127.0.0.1:0",
                "--threads", "1", "--access-log", logs.Sub("access.log")});
  BOOST_TEST_REQUIRE(server.WaitForErr("ready", 30s), server.err());
  // Let the server's start-up work (recovery flush, obsolete file removal) settle.
  auto without_log = [&] {
    auto h = HashTree(g.data);
    h.erase("ledger/LOG");
    return h;
  };
  auto last = without_log();
  for (int stable = 0, i = 0; stable < 3 && i < 100; ++i) {
    std::this_thread::sleep_for(100ms);
    auto now = without_log();
    stable = now == last ? stable + 1 : 0;
    last = std::move(now);
  }
  const std::string log_path = g.data + "/ledger/LOG";
  std::string log_prefix;
  {
    std::ifstream in(log_path, std::ios::binary);
    log_prefix.assign((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
  }
  EveryCommandChangesNothing(g, g.data, SameButServerLog);
  // The server's LOG only grew: nobody rewrote it.
  std::string log_now;
  {
    std::ifstream in(log_path, std::ios::binary);
    log_now.assign((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  }
  BOOST_TEST(log_now.starts_with(log_prefix));
  // The CLI beside it; and the server is still the one holding the lock, alive.
  Child verify({kBinary, "verify", "--data", g.data});
  BOOST_TEST((verify.Wait() == std::optional<int>(0)), verify.err());
  Child backup({kBinary, "backup", "--data", g.data, "--to", logs.Sub("b")});
  BOOST_TEST((backup.Wait() == std::optional<int>(0)), backup.err());
  BOOST_TEST(!server.Wait(10ms).has_value(), "the server exited: " << server.err());
  server.Signal(SIGTERM);
  BOOST_TEST((server.Wait(20s) == std::optional<int>(0)), server.err());
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================
BOOST_AUTO_TEST_SUITE(live)

BOOST_AUTO_TEST_CASE(log_follow_prints_events_a_writer_commits_after_it_started) {
  Generated g(4, 20, 11, 30);
  service::ServiceOptions so;
  so.data_dir = g.data;
  auto svc = service::TokenService::Open(so);  // the writer, in this process
  BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
  LockedBuf buf;
  std::ostream out(&buf);
  std::ostringstream err;
  std::istringstream in;
  std::atomic<bool> stop{false};
  LogOptions o;
  o.source = g.source();
  o.json = true;
  o.follow = true;
  o.interval = 30ms;
  o.stop = &stop;
  o.filter.types = {"UserRegistered"};
  Status followed;
  std::thread follower([&] {
    Io io{in, out, err, false};
    followed = Log(o, io);
  });
  auto count = [&](const std::string& text) {
    const std::string s = buf.str();
    std::size_t n = 0;
    for (auto at = s.find(text); at != std::string::npos; at = s.find(text, at + 1)) ++n;
    return n;
  };
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (count("\"UserRegistered\"") < g.truth->users.size() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  for (int i = 0; i < 3; ++i) {
    auto u = (*svc)->RegisterUser({}, "newcomer" + std::to_string(i), "N",
                                  "n@example.com", false);
    BOOST_TEST_REQUIRE(u.has_value(), Why(u));
  }
  while (count("newcomer") < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  stop = true;
  follower.join();
  BOOST_TEST(followed.ok(), followed.ToString());
  BOOST_TEST(count("\"newcomer") == 3u, buf.str());
  BOOST_TEST(count("\"UserRegistered\"") == g.truth->users.size() + 3);
}

// Every `patledger user add` (20 of them) opens the ledger read-write, and RocksDB's recovery then
// flushes the WAL into an SST, deletes the WAL and may compact: the file churn during
// which a naive read-only open fails, or sees a view missing the flushed records (a
// false "gap"). Commands run meanwhile must neither fail nor report damage.
BOOST_AUTO_TEST_CASE(commands_beside_a_writer_that_churns_files_report_no_false_damage) {
  Generated g(4, 20, 13, 30);
  // The writer adds users until told to stop (at most 200), so the reader gets its
  // rounds however the two are scheduled; it then prints how many it added.
  const std::string stop_file = g.data + "/../stop-churn";
  std::string script = "i=0; while [ ! -e " + stop_file + " ] && [ $i -lt 200 ]; do " +
                       "i=$((i+1)); " + kBinary + " user add churn$i --name C " +
                       "--email c@example.com --data " + g.data +
                       " >/dev/null || exit 1; done; echo $i";
  Child writer({"/bin/bash", "-c", script});
  int rounds = 0;
  std::optional<int> code;
  while (!(code = writer.Wait(1ms))) {
    ++rounds;
    Verified v = RunVerify(g.source());
    BOOST_TEST(v.c.status.ok(),
               "round " << rounds << ":" << ProblemsText(v) << Show(v.c));
    StateOptions s;
    s.source = g.source();
    s.seq = 5;
    Captured c = Call([&](const Io& io) { return ShowState(s, io); });
    BOOST_TEST(c.status.ok(), "round " << rounds << ": " << Show(c));
    if (rounds == 6) std::ofstream(stop_file) << "stop\n";
  }
  BOOST_TEST((code == std::optional<int>(0)), writer.err());
  BOOST_TEST(rounds >= 1);
  const std::uint64_t added = std::stoull("0" + writer.out());
  BOOST_TEST(added >= 1u);
  Verified end = RunVerify(g.source());
  BOOST_TEST(end.report.head_seq == g.truth->last_seq() + added);
}

BOOST_AUTO_TEST_CASE(backup_of_a_ledger_being_written_is_consistent_and_restorable) {
  Generated g(4, 20, 12, 30);
  service::ServiceOptions so;
  so.data_dir = g.data;
  auto svc = service::TokenService::Open(so);
  BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
  const std::uint64_t before = (*svc)->ledger().last_seq();
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; !done && i < 2000; ++i) {
      auto u = (*svc)->RegisterUser({}, "busy" + std::to_string(i), "B", "b@example.com",
                                    false);
      if (!u) break;
    }
  });
  TempDir out;
  BackupOptions o;
  o.source = g.source();
  o.to = out.Sub("backup");
  o.json = true;
  Captured c = Call([&](const Io& io) { return Backup(o, io); });
  done = true;
  writer.join();
  BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
  const json::object b = c.OfType("backup").at(0);
  BOOST_TEST(U(b.at("head_seq")) >= before);
  BOOST_TEST(!b.at("key_copied").as_bool());
  // Its own files: no hard link into the live directory.
  for (const auto& e : fs::directory_iterator(out.Sub("backup/ledger"))) {
    BOOST_TEST(fs::hard_link_count(e.path()) == 1u, e.path());
  }
  Verified v = RunVerify(Source{out.Sub("backup"), ""});
  BOOST_TEST(v.c.status.ok(), ProblemsText(v));
  BOOST_TEST(v.report.head_seq == U(b.at("head_seq")));

  // Restore into a new directory, with the key, and serve from it (read-write open).
  fs::copy_file(g.data + "/token.key", out.Sub("backup/token.key"));
  RestoreOptions r;
  r.from = out.Sub("backup");
  r.to = out.Sub("restored");
  Captured rc = Call([&](const Io& io) { return Restore(r, io); });
  BOOST_TEST_REQUIRE(rc.status.ok(), Show(rc));
  svc->reset();
  service::ServiceOptions ro;
  ro.data_dir = out.Sub("restored");
  auto restored = service::TokenService::Open(ro);
  BOOST_TEST_REQUIRE(restored.has_value(), Why(restored));
  BOOST_TEST((*restored)->ledger().last_seq() == v.report.head_seq);
  restored->reset();
  // A second restore over it is refused and changes nothing.
  const auto restored_hash = HashTree(out.Sub("restored"));
  rc = Call([&](const Io& io) { return Restore(r, io); });
  BOOST_TEST((rc.status.code() == Status::Code::kAlreadyExists), Show(rc));
  BOOST_TEST(DescribeChange(restored_hash, HashTree(out.Sub("restored"))) == "unchanged");
  // Backing up into a non-empty directory is refused too.
  c = Call([&](const Io& io) { return Backup(o, io); });
  BOOST_TEST((c.status.code() == Status::Code::kAlreadyExists), Show(c));
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================
BOOST_AUTO_TEST_SUITE(output)

BOOST_AUTO_TEST_CASE(progress_bar_shows_events_rate_and_eta_only_when_enabled) {
  BOOST_TEST(RenderProgress("verify", 500, 1000, 2.0) ==
             "verify [==========>         ]  50% 500/1,000 events  250 ev/s  ETA 0:02");
  BOOST_TEST(RenderProgress("log", 1234567, 0, 1.0) ==
             "log 1,234,567 events  1,234,567 ev/s");
  BOOST_TEST(Thousands(999) == "999");
  BOOST_TEST(Thousands(1000) == "1,000");
  BOOST_TEST(Thousands(27437) == "27,437");
  BOOST_TEST(Thousands(100000) == "100,000");
  BOOST_TEST(Thousands(0) == "0");
  auto t = std::chrono::steady_clock::time_point{};
  auto clock = [&t] { return t; };
  std::ostringstream on, off;
  {
    Progress p(on, true, "scan", 100, clock);
    Progress q(off, false, "scan", 100, clock);
    for (int i = 1; i <= 100; ++i) {
      t += 50ms;
      p.Update(static_cast<std::uint64_t>(i));
      q.Update(static_cast<std::uint64_t>(i));
    }
  }
  BOOST_TEST(off.str().empty());
  const std::string drawn = on.str();
  BOOST_TEST(drawn.find("\rscan [") != std::string::npos, drawn);
  BOOST_TEST(drawn.find("events") != std::string::npos);
  BOOST_TEST(drawn.find("ev/s") != std::string::npos);
  BOOST_TEST(drawn.find("ETA") != std::string::npos);
  BOOST_TEST(drawn.back() == '\r');        // erased at the end
  BOOST_TEST(drawn.size() < 100u * 120u);  // redrawn at most every 100 ms, not per event
}

BOOST_AUTO_TEST_CASE(commands_print_aligned_tables_for_people) {
  Generated g(5, 30, 4, 60);
  StateOptions o;
  o.source = g.source();
  o.at_us = g.truth->last_us();
  Captured c = Call([&](const Io& io) { return ShowState(o, io); });
  BOOST_TEST_REQUIRE(c.status.ok(), Show(c));
  std::istringstream lines(c.out);
  std::string header, row;
  std::getline(lines, header);
  BOOST_TEST(header.starts_with("TOKEN  NAME"), header);
  const auto owner_col = header.find("OWNER");
  while (std::getline(lines, row) && !row.empty()) {
    BOOST_TEST(row.size() > owner_col);
    BOOST_TEST(row[owner_col - 1] == ' ');  // every row's OWNER starts under the header
    BOOST_TEST(row[owner_col] != ' ');
  }
  BOOST_TEST(c.out.find("valid at") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(binary_dispatches_the_subcommands_with_documented_exit_codes) {
  Generated g(3, 10, 6, 20);
  auto run = [](std::vector<std::string> args, const std::string& in = "") {
    args.insert(args.begin(), kBinary);
    Child c(args, in);
    auto code = c.Wait();
    return std::pair{code.value_or(-1), c.out() + c.err()};
  };
  BOOST_TEST(run({"verify", "--data", g.data}).first == 0);
  BOOST_TEST(run({"--help"}).second.find("triage FILE|-") != std::string::npos);
  BOOST_TEST(run({"state", "--data", g.data}).first == 2);  // neither --at nor --seq
  BOOST_TEST(run({"state", "--data", g.data, "--at", "yesterday"}).first == 2);
  BOOST_TEST(run({"history", "--data", g.data, "--token-id", "999999"}).first == 3);
  BOOST_TEST(run({"verify", "--data", g.tmp.Sub("nothing")}).first == 3);
  BOOST_TEST(run({"restore", "--from", g.data, "--to", g.data}).first == 4);
  const auto [code, text] =
      run({"history", "--data", g.data, "--token-value", "-", "--json"},
          GeneratedToken(6, 1) + "\n");
  BOOST_TEST(code == 0, text);
  BOOST_TEST(text.find(GeneratedToken(6, 1)) == std::string::npos);
  RawDelete(g.ledger_dir(), 3);
  BOOST_TEST(run({"verify", "--data", g.data}).first == 5);
  BOOST_TEST(run({"log", "--data", g.data}).first == 5);
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================
BOOST_AUTO_TEST_SUITE(wal_format)

// One physical record of RocksDB's log format (the checksum is not checked by the
// parser: RocksDB does that; only the framing matters here).
std::string Physical(std::uint8_t type, const std::string& payload) {
  std::string r(4, '\x5a');
  r += static_cast<char>(payload.size() & 0xff);
  r += static_cast<char>(payload.size() >> 8);
  r += static_cast<char>(type);
  return r + payload;
}

// A WriteBatch putting ledger record `seq` into column family 1.
std::string Batch(std::uint64_t seq, std::size_t value_size) {
  std::string b(12, '\0');
  b += '\x05';
  b += '\x01';
  b += '\x08';
  const auto key = fmt::EncodeSeq(seq);
  b.append(key.data(), key.size());
  std::uint32_t n = static_cast<std::uint32_t>(value_size);
  while (n >= 0x80) {
    b += static_cast<char>(n | 0x80);
    n >>= 7;
  }
  b += static_cast<char>(n);
  return b + std::string(value_size, 'v');
}

std::optional<internal::WalTail> Torn(const std::string& bytes) {
  internal::WalTail tail;
  if (!internal::TornTail(bytes, &tail)) return std::nullopt;
  return tail;
}

BOOST_AUTO_TEST_CASE(torn_tails_are_found_whole_logs_are_not) {
  constexpr std::size_t kBlock = 32768;
  // Block 0: a full record (seq 7), then a record of seq 8 fragmented over three blocks.
  std::string wal = Physical(1, Batch(7, 100));
  const std::size_t second = wal.size();
  const std::string big = Batch(8, 2 * kBlock);
  const std::size_t first_part = kBlock - wal.size() - 7;
  wal += Physical(2, big.substr(0, first_part));
  wal += Physical(3, big.substr(first_part, kBlock - 7));
  const std::size_t last_start = wal.size();
  wal += Physical(4, big.substr(first_part + kBlock - 7));
  BOOST_REQUIRE(wal.size() > 2 * kBlock);

  BOOST_TEST(!Torn(wal).has_value());
  BOOST_TEST(!Torn(wal.substr(0, second)).has_value());         // cut between two records
  BOOST_TEST(!Torn(wal + std::string(100, '\0')).has_value());  // preallocated zeros
  for (std::size_t cut : {second + 3, second + 40, second + 5000, kBlock + 10, last_start,
                          last_start + 9, wal.size() - 1}) {
    auto t = Torn(wal.substr(0, cut));
    BOOST_TEST_REQUIRE(t.has_value(), "cut at " << cut);
    BOOST_TEST(t->offset == second, "cut at " << cut);
    if (cut >= second + 40)
      BOOST_TEST((t->seqs == std::vector<std::uint64_t>{8}), "cut at " << cut);
  }
  auto t = Torn(wal.substr(0, 25));  // inside the first record, its key cut
  BOOST_REQUIRE(t.has_value());
  BOOST_TEST(t->offset == 0u);
  BOOST_TEST(t->seqs.empty());
  // A block whose last < 7 bytes are the zero trailer is whole.
  std::string padded = Physical(1, Batch(9, kBlock - 7 - 26 - 3));  // leaves 3 bytes
  BOOST_REQUIRE(padded.size() == kBlock - 3);
  padded.append(3, '\0');
  padded += Physical(1, Batch(10, 10));
  BOOST_TEST(!Torn(padded).has_value());
  BOOST_TEST(Torn(padded.substr(0, padded.size() - 3)).has_value());
}

BOOST_AUTO_TEST_SUITE_END()

// ================================================================================
BOOST_AUTO_TEST_SUITE(docs)

// docs/forensics.md: every ```sh block, in order, in an empty directory, with the
// built patledger first on the PATH, under `set -euo pipefail`.
BOOST_AUTO_TEST_CASE(every_command_of_the_walkthrough_runs_verbatim) {
  std::ifstream doc(std::string(PATLEDGER_SOURCE_DIR) + "/docs/forensics.md");
  BOOST_REQUIRE(doc.good());
  std::string line, script;
  bool in_sh = false;
  int blocks = 0, commands = 0;
  while (std::getline(doc, line)) {
    if (!in_sh && line == "```sh") {
      in_sh = true;
      ++blocks;
    } else if (in_sh && line == "```") {
      in_sh = false;
    } else if (in_sh) {
      script += line + "\n";
      if (line.starts_with("patledger") ||
          line.find("| patledger") != std::string::npos) {
        ++commands;
      }
    }
  }
  BOOST_TEST(blocks >= 8);
  BOOST_TEST(commands >= 20);
  TempDir dir;
  const std::string full = "set -euo pipefail\ncd " + dir.path() +
                           "\nexport PATH=" + std::string(PATLEDGER_TEST_BINARY_DIR) +
                           "/tools:$PATH\n" + script;
  Child bash({"/bin/bash", "-c", full});
  const auto code = bash.Wait(60s);
  BOOST_TEST((code == std::optional<int>(0)), "the walkthrough failed:\n" << bash.err());
  // What the text of the walkthrough says, the commands print.
  BOOST_TEST(bash.out().find("result    OK: no problems") != std::string::npos);
  const std::string out = bash.out();
  BOOST_TEST(out.find("yolanda2 (#41)         active          yes") != std::string::npos,
             out);
  BOOST_TEST(out.find("token 361 \"renovate\" for yolanda2 (#41): read_registry; "
                      "expires 2027-06-14") != std::string::npos);
  BOOST_TEST(
      out.find(
          "chain e03423bc47363316e8698b6a081226561c55dc8d8a9fcb6cd88ece6925a9f6c3") !=
      std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::forensics
