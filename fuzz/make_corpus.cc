// fuzz/make_corpus.cc: writes the seed corpora of the fuzz targets.
//
//   make_corpus <dir>      writes <dir>/<target>/<name> for every target (the committed
//                          seeds are fuzz/corpus/; tools/fuzz.sh --seeds regenerates them)
//
// Deterministic, and holds no secret: the event log is fuzz/fuzz_util.h's sample (made-
// up digests, no key); the token strings are made-up ones spelling "FuzzSeed..." with
// the right checksum, which no ledger has a digest of; HTTP requests name the fuzz
// fixture's tokens by markers (@TOKEN1@), which only the running harness replaces.
// Each seed's input format is the one its harness documents at its top.

#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "ledger/format.h"
#include "ledger/ledger.h"
#include "service/token_format.h"

namespace {

using namespace patledger;
using patledger::fuzz::Die;
namespace fs = std::filesystem;

void Write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) Die("cannot write " + (dir / name).string());
}

// Builds an input for FuzzedDataProvider: integrals are consumed from the end (the
// first one consumed is the last byte, most significant byte first), byte strings
// from the front. Call in the harness's order of consumption.
class FdpWriter {
 public:
  void Int(std::uint64_t value, std::uint64_t min, std::uint64_t max) {
    const std::uint64_t range = max - min, v = value - min;
    int bytes = 0;
    while (bytes < 8 && (range >> (8 * bytes)) > 0) ++bytes;
    for (int i = bytes - 1; i >= 0; --i) tail_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void Byte(std::uint8_t b) { Int(b, 0, 255); }
  void Bool(bool b) { Byte(b ? 1 : 0); }
  void Bytes(const std::string& s) { front_ += s; }
  // ConsumeRandomLengthString: '\' doubled, ended by '\' and another character.
  void RandomLengthString(const std::string& s) {
    for (char c : s) {
      front_ += c;
      if (c == '\\') front_ += c;
    }
    front_ += "\\;";
  }
  std::string Finish() const { return front_ + std::string(tail_.rbegin(), tail_.rend()); }

 private:
  std::string front_, tail_;
};

// ---- event_decode_fuzz ----------------------------------------------------------------

std::string Chunk(std::uint8_t flags, const std::string& bytes) {
  std::string out(1, static_cast<char>(flags));
  out += static_cast<char>(bytes.size() & 0xFF);
  out += static_cast<char>(bytes.size() >> 8);
  return out + bytes;
}

std::string StoredValue(std::span<const std::uint8_t> envelope) {
  const auto sum = ledger::format::EncodeChecksum(XXH3_64bits_withSeed(
      envelope.data(), envelope.size(), ledger::format::kChecksumSeed));
  return std::string(reinterpret_cast<const char*>(envelope.data()), envelope.size()) +
         std::string(sum.data(), sum.size());
}

void EventDecodeSeeds(const fs::path& out, const std::string& scratch) {
  // The sample log as the ledger stores it: every record verifies as is.
  const std::string dir = scratch + "/events";
  patledger::fuzz::BuildSampleLedger(dir, 0);
  std::vector<std::string> stored;
  {
    auto ledger = ledger::Ledger::Open(dir, ledger::Options{.read_only = true});
    if (!ledger) Die("reopening the sample ledger: " + ledger.error().ToString());
    Status s = (*ledger)->Scan({}, [&](const ledger::RecordView& r) {
      stored.push_back(StoredValue(r.envelope_bytes));
      return Status::OK();
    });
    if (!s.ok()) Die("scanning the sample ledger: " + s.ToString());
  }
  std::string all, fixed;
  for (const std::string& v : stored) all += Chunk(0, v);
  Write(out, "stored_log", all);
  // Fresh codec output (Sequencing zero): the harness stamps seq, chain and checksum.
  std::vector<std::string> fresh;
  for (const auto& txn : patledger::fuzz::SampleTransactions()) {
    for (const std::string& e : txn) fresh.push_back(e);
  }
  for (const std::string& e : fresh) fixed += Chunk(1, e);
  Write(out, "codec_log_fixup", fixed);
  // One event of each kind after LedgerInitialized.
  const char* names[] = {"init", "user_registered", "token_created", "user_changed",
                         "token_revoked"};
  const std::size_t picks[] = {0, 1, 2, fresh.size() - 1, 0};
  for (std::size_t k = 0; k < std::size(names); ++k) {
    std::string in = Chunk(1, fresh[0]);
    if (k == 4) {
      in += Chunk(1, fresh[1]) + Chunk(1, fresh[2]);
      for (const std::string& e : fresh) {
        if (schema::GetEnvelope(e.data())->event_type() == schema::Event::TokenRevoked) {
          in += Chunk(1, e);
          break;
        }
      }
    } else if (k != 0) {
      in += Chunk(1, fresh[picks[k]]);
    }
    Write(out, "event_" + std::string(names[k]), in);
  }
  // A single envelope (VerifyEnvelope of the whole input), a record with its checksum
  // added by the harness, a damaged checksum, a gap, and a malformed key.
  Write(out, "bare_envelope", fresh[3]);
  Write(out, "add_checksum", Chunk(2, std::string(stored[0], 0, stored[0].size() - 8)));
  std::string bad = stored[0];
  bad[bad.size() / 2] ^= 0x10;
  Write(out, "bad_checksum", Chunk(0, bad) + Chunk(0, stored[1]));
  Write(out, "gap", Chunk(0, stored[0]) + Chunk(4, stored[2]) + Chunk(0, stored[3]));
  Write(out, "malformed_key", Chunk(8, stored[0]) + Chunk(0, stored[1]));
}

// ---- token_parse_fuzz -----------------------------------------------------------------

std::string Base64(const std::string& in) {
  static constexpr char kDigits[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 3) {
    std::uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    if (i + 2 < in.size()) v |= static_cast<unsigned char>(in[i + 2]);
    out += kDigits[v >> 18 & 63];
    out += kDigits[v >> 12 & 63];
    out += i + 1 < in.size() ? kDigits[v >> 6 & 63] : '=';
    out += i + 2 < in.size() ? kDigits[v & 63] : '=';
  }
  return out;
}

// prefix + 30 made-up characters (from `words`, padded) + the right checksum.
std::string FakeToken(const std::string& prefix, const std::string& words) {
  std::string body = words.substr(0, service::kTokenRandomLength);
  while (body.size() < service::kTokenRandomLength) body += '0';
  std::string token = prefix + body;
  std::uint32_t sum = XXH32(token.data(), token.size(), 0);
  std::string digits(service::kTokenChecksumLength, '0');
  for (std::size_t i = digits.size(); i-- > 0; sum /= 62) digits[i] = service::kTokenAlphabet[sum % 62];
  token += digits;
  if (service::CheckTokenShape(token, prefix) != service::TokenShape::kOk) {
    Die("make_corpus built a fake token of the wrong shape");
  }
  return token;
}

std::string TokenInput(std::uint8_t selector, const std::string& candidate,
                       const std::string& prefix = "") {
  FdpWriter w;
  w.Byte(selector);
  w.Byte(7);   // where: the character a substitution is tried at
  w.Byte(13);  // replacement
  if ((selector & 3) == 1) w.RandomLengthString(prefix);
  w.Bytes(candidate);
  return w.Finish();
}

void TokenParseSeeds(const fs::path& out) {
  const std::string token = FakeToken("glpat-", "FuzzSeedNotARealToken");
  const std::string custom = FakeToken("acme_pat-", "FuzzSeedCustomPrefix");
  std::string bad_sum = token;
  bad_sum.back() = bad_sum.back() == 'a' ? 'b' : 'a';
  // selector: bits 0-1 prefix (0 glpat-, 1 fuzzed, 2 "x", 3 ""), bits 2-7 >> 2 % 5 where
  // PresentedToken finds it (0 PRIVATE-TOKEN, 1 Authorization, 2 Bearer, 3 Basic,
  // 4 X-Original-URI), 0x20 a longer HMAC key, 0x40 GenerateToken, 0x80 ',' list.
  Write(out, "token_private_token", TokenInput(0x00, token));
  Write(out, "token_bearer", TokenInput(0x08, token));
  Write(out, "token_authorization_raw", TokenInput(0x04, "Bearer " + token));
  Write(out, "token_basic", TokenInput(0x0C, Base64("user:" + token)));
  Write(out, "token_original_uri",
        TokenInput(0x10, "/api/v4/projects?per_page=20&private_token=" + token));
  Write(out, "token_custom_prefix", TokenInput(0x41, custom, "acme_pat-"));
  Write(out, "token_bad_checksum", TokenInput(0x00, bad_sum));
  Write(out, "token_wrong_length", TokenInput(0x00, token.substr(0, 30)));
  Write(out, "token_bad_character", TokenInput(0x00, token.substr(0, 20) + "!" +
                                                          token.substr(21)));
  Write(out, "token_no_prefix", TokenInput(0x23, token.substr(6)));
  Write(out, "token_x_prefix", TokenInput(0x42, FakeToken("x", "FuzzSeedShortPrefix")));
  Write(out, "scopes_list", TokenInput(0x80, "read_user, api,write_registry"));
  Write(out, "scopes_words", TokenInput(0x00, "read_api write_repository\tsudo"));
  Write(out, "scopes_unknown_long", TokenInput(0x80, "api," + token));
  Write(out, "date", TokenInput(0x00, "2027-06-30"));
  Write(out, "date_invalid", TokenInput(0x00, "2027-02-29"));
  Write(out, "timestamp", TokenInput(0x00, "2026-12-01T10:00:00.123456+02:00"));
  Write(out, "timestamp_epoch", TokenInput(0x00, "@1764288000"));
  Write(out, "key_file", TokenInput(0x00, "patledger-key v1\n"
                                          "00112233445566778899aabbccddeeff"
                                          "FFEEDDCCBBAA99887766554433221100\n"));
}

// ---- http_handler_fuzz ----------------------------------------------------------------

std::string Http(const std::string& method, const std::string& target,
                 const std::vector<std::string>& headers, const std::string& body = "") {
  std::string out = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n";
  for (const std::string& h : headers) out += h + "\r\n";
  if (!body.empty()) out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return out + "\r\n" + body;
}

void HttpSeeds(const fs::path& out) {
  const std::string json = "Content-Type: application/json";
  const std::string form = "Content-Type: application/x-www-form-urlencoded";
  const std::string root = "PRIVATE-TOKEN: @TOKEN0@", alice = "PRIVATE-TOKEN: @TOKEN1@";
  struct Seed {
    const char* name;
    std::string request;
  };
  const Seed seeds[] = {
      {"liveness", Http("GET", "/-/liveness", {})},
      {"readiness", Http("GET", "/-/readiness", {})},
      {"page", Http("GET", "/", {"Accept: text/html"})},
      {"page_asset", Http("GET", "/-/web/app.js", {})},
      {"public_scopes", Http("GET", "/api/v4/-/scopes", {})},
      {"public_policy", Http("HEAD", "/api/v4/-/policy", {})},
      {"user_private_token", Http("GET", "/api/v4/user", {alice})},
      {"user_bearer", Http("GET", "/api/v4/user", {"Authorization: Bearer @TOKEN2@"})},
      {"user_basic", Http("GET", "/api/v4/user", {"Authorization: @BASIC3@"})},
      {"user_query_token", Http("GET", "/api/v4/user?private_token=@TOKEN2@", {})},
      {"user_blocked", Http("GET", "/api/v4/user", {"PRIVATE-TOKEN: @TOKEN4@"})},
      {"user_revoked", Http("GET", "/api/v4/user", {"PRIVATE-TOKEN: @TOKEN5@"})},
      {"user_malformed", Http("GET", "/api/v4/user", {"PRIVATE-TOKEN: glpat-nope"})},
      {"auth_scope", Http("GET", "/api/v4/auth?scope=api", {alice})},
      {"auth_scope_list", Http("POST", "/api/v4/auth?scope=read_user,read_repository",
                               {"PRIVATE-TOKEN: @TOKEN3@"})},
      {"auth_insufficient", Http("HEAD", "/api/v4/auth?scope=write_registry",
                                 {"PRIVATE-TOKEN: @TOKEN7@"})},
      {"auth_original_uri",
       Http("GET", "/api/v4/auth", {"X-Original-URI: /repo.git/info/refs?private_token=@TOKEN1@"})},
      {"auth_none", Http("GET", "/api/v4/auth", {})},
      {"users_list", Http("GET", "/api/v4/users?username=alice&page=1&per_page=5", {root})},
      {"users_one", Http("GET", "/api/v4/users/2", {root})},
      {"users_create_json",
       Http("POST", "/api/v4/users", {root, json},
            R"({"username":"dave","name":"Dave","email":"dave@example.com","admin":false})")},
      {"users_create_form", Http("POST", "/api/v4/users", {"PRIVATE-TOKEN: @TOKEN6@", form},
                                 "username=erin&name=Erin+E&email=erin%40example.com")},
      {"users_block", Http("POST", "/api/v4/users/2/block", {root})},
      {"users_unblock", Http("POST", "/api/v4/users/3/unblock", {root})},
      {"sudo_user", Http("GET", "/api/v4/user", {root, "Sudo: alice"})},
      {"sudo_param", Http("GET", "/api/v4/personal_access_tokens?sudo=2", {root})},
      {"token_create_admin_json",
       Http("POST", "/api/v4/users/2/personal_access_tokens", {root, json},
            R"({"name":"ci","description":"build","scopes":["api","read_user"],)"
            R"("expires_at":"@EXPIRES@"})")},
      {"token_create_admin_form",
       Http("POST", "/api/v4/users/3/personal_access_tokens?name=deploy", {root, form},
            "scopes[]=read_registry&scopes[]=write_registry&expires_at=@EXPIRES@")},
      {"token_create_self",
       Http("POST", "/api/v4/user/personal_access_tokens", {alice, json},
            R"({"name":"mine","scopes":["read_api"],"expires_at":"@EXPIRES@"})")},
      {"tokens_list_admin",
       Http("GET", "/api/v4/personal_access_tokens?user_id=2&state=active&sort=created_asc",
            {root})},
      {"tokens_list_own", Http("GET", "/api/v4/personal_access_tokens?revoked=true&search=ci",
                               {alice})},
      {"token_self", Http("GET", "/api/v4/personal_access_tokens/self", {alice})},
      {"token_by_id", Http("GET", "/api/v4/personal_access_tokens/3", {root})},
      {"token_rotate_self", Http("POST", "/api/v4/personal_access_tokens/self/rotate",
                                 {"PRIVATE-TOKEN: @TOKEN3@"})},
      {"token_rotate_id", Http("POST", "/api/v4/personal_access_tokens/3/rotate", {root, json},
                               R"({"expires_at":"@EXPIRES@"})")},
      {"token_revoke_id", Http("DELETE", "/api/v4/personal_access_tokens/4", {root})},
      {"token_revoke_self",
       Http("DELETE", "/api/v4/personal_access_tokens/self", {"PRIVATE-TOKEN: @TOKEN2@"})},
      {"bad_json", Http("POST", "/api/v4/users", {root, json}, R"({"username":["a",{"b":1}],)")},
      {"bad_content_type", Http("POST", "/api/v4/users", {root, "Content-Type: text/plain"},
                                "username=x")},
      {"bad_method", Http("PUT", "/api/v4/user", {alice})},
      {"not_found", Http("GET", "/api/v4/projects/1%2F2?x=%zz&&=&y", {alice})},
  };
  for (const Seed& s : seeds) Write(out, s.name, s.request);
}

// ---- ledger_open_fuzz -----------------------------------------------------------------

struct Mutation {
  std::size_t file;
  std::size_t offset;  // taken modulo (file size + 1) by the harness
  int op;              // 0 flip, 1 set, 2 overwrite, 3 truncate, 4 insert
  std::string bytes;   // op 1: one byte; ops 2 and 4: the run
};

std::string OpenInput(bool sample_b, bool read_only, bool keep_going, bool append,
                      const std::vector<std::size_t>& sizes,
                      const std::vector<Mutation>& mutations) {
  FdpWriter w;
  w.Bool(sample_b);
  w.Bool(read_only);
  w.Bool(keep_going);
  w.Bool(append);
  w.Int(mutations.size(), 1, 4);
  for (const Mutation& m : mutations) {
    w.Int(m.file, 0, sizes.size() - 1);
    const std::size_t size = sizes[m.file];
    w.Int(std::min(m.offset, size), 0, size);
    w.Int(m.op, 0, 4);
    if (m.op == 0) w.Int(3, 0, 7);
    if (m.op == 1) w.Int(static_cast<unsigned char>(m.bytes[0]) ^ 0x80, 0, 255);
    if (m.op == 2 || m.op == 4) {
      w.Int(m.bytes.size(), 1, 64);
      w.Bytes(m.bytes);
    }
  }
  return w.Finish();
}

void LedgerOpenSeeds(const fs::path& out, const std::string& scratch) {
  struct Listing {
    std::vector<std::string> names;
    std::vector<std::size_t> sizes;
  } listings[2];
  for (int b = 0; b < 2; ++b) {
    const std::string dir = scratch + (b ? "/open_b" : "/open_a");
    patledger::fuzz::BuildSampleLedger(dir, b ? 5 : 0);
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename();
      if (name != "LOCK" && !name.starts_with("LOG")) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& p : files) {
      listings[b].names.push_back(p.filename());
      listings[b].sizes.push_back(fs::file_size(p));
    }
  }
  auto index_of = [&](int b, std::string_view kind) -> std::size_t {
    const auto& names = listings[b].names;
    for (std::size_t i = 0; i < names.size(); ++i) {
      const std::string& n = names[i];
      if ((kind == "wal" && n.ends_with(".log")) || (kind == "sst" && n.ends_with(".sst")) ||
          (kind != "wal" && kind != "sst" && n.starts_with(kind))) {
        return i;
      }
    }
    Die("the sample ledger has no " + std::string(kind) + " file");
  };
  const auto& a = listings[0].sizes;
  const auto& b = listings[1].sizes;
  std::size_t i = 0;
  auto seed = [&](const std::string& name, bool sample_b, bool ro, bool keep, bool append,
                  std::vector<Mutation> m) {
    Write(out, name, OpenInput(sample_b, ro, keep, append, sample_b ? b : a, m));
    ++i;
  };
  const std::size_t wal_a = index_of(0, "wal"), wal_b = index_of(1, "wal");
  const std::size_t sst_b = index_of(1, "sst"), man_a = index_of(0, "MANIFEST");
  const std::size_t cur_a = index_of(0, "CURRENT"), opt_b = index_of(1, "OPTIONS");
  // Untouched (a flip past the end of a file is no change): every check passes.
  seed("intact_wal", false, false, false, true, {{wal_a, a[wal_a], 0, ""}});
  seed("intact_sst_readonly", true, true, true, false, {{sst_b, b[sst_b], 0, ""}});
  seed("wal_flip_mid", false, false, false, false, {{wal_a, a[wal_a] / 2, 0, ""}});
  seed("wal_flip_mid_readonly", false, true, true, false, {{wal_a, a[wal_a] / 2, 0, ""}});
  seed("wal_torn_tail", false, false, false, true, {{wal_a, a[wal_a] - 100, 3, ""}});
  seed("wal_insert", true, false, true, false, {{wal_b, 40, 4, "patledger"}});
  seed("sst_set_byte", true, false, false, false, {{sst_b, b[sst_b] / 3, 1, "\x7f"}});
  seed("sst_overwrite_footer", true, true, false, false,
       {{sst_b, b[sst_b] - 20, 2, std::string(16, '\0')}});
  seed("sst_truncate", true, false, true, false, {{sst_b, b[sst_b] / 2, 3, ""}});
  seed("manifest_flip", false, false, false, false, {{man_a, a[man_a] / 2, 0, ""}});
  seed("current_overwrite", false, false, false, false, {{cur_a, 9, 2, "000099"}});
  seed("options_truncate", true, false, false, false, {{opt_b, b[opt_b] / 2, 3, ""}});
  seed("two_files", true, false, true, true,
       {{wal_b, b[wal_b] / 3, 0, ""}, {sst_b, b[sst_b] / 4, 1, "A"}});
  (void)i;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus <corpus dir>\n");
    return 2;
  }
  const fs::path out = argv[1];
  const std::string scratch = patledger::fuzz::MakeScratchDir("corpus");
  EventDecodeSeeds(out / "event_decode_fuzz", scratch);
  TokenParseSeeds(out / "token_parse_fuzz");
  HttpSeeds(out / "http_handler_fuzz");
  LedgerOpenSeeds(out / "ledger_open_fuzz", scratch);
  patledger::fuzz::RemoveTree(scratch);
  return 0;
}
