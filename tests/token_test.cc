// Tests of the token primitives: the scope table (service/scopes.h), the token
// string (service/token_format.h) and the instance key (service/token_key.h).

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <boost/test/unit_test.hpp>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "service/scopes.h"
#include "service/token_format.h"
#include "service/token_key.h"

namespace patledger::service {
namespace {

namespace fs = std::filesystem;

std::string ToHex(const TokenDigest& d) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (std::uint8_t b : d) {
    s += kHex[b >> 4];
    s += kHex[b & 0xF];
  }
  return s;
}

// The error of `r`, or "" if it holds a value. Boost.Test evaluates a BOOST_TEST
// message even when the check passes, so `r.error()` must not appear there directly.
template <typename T>
std::string Why(const Result<T>& r) {
  return r.has_value() ? std::string() : r.error().ToString();
}

std::vector<std::uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

std::string MustGenerate(std::string_view prefix = kDefaultTokenPrefix) {
  Result<std::string> t = GenerateToken(prefix);
  BOOST_TEST_REQUIRE(t.has_value(), Why(t));
  return *t;
}

// Pearson's chi-square statistic of `counts` against the uniform distribution.
double ChiSquare(const std::array<std::uint64_t, 62>& counts) {
  double total = 0;
  for (std::uint64_t c : counts) total += static_cast<double>(c);
  const double expected = total / 62;
  double chi2 = 0;
  for (std::uint64_t c : counts) {
    const double d = static_cast<double>(c) - expected;
    chi2 += d * d / expected;
  }
  return chi2;
}

// 61 degrees of freedom: mean 61, sd 11. A uniform source exceeds 200 with
// probability 1e-16 (never flaky); a generator using byte % 62 without rejection
// gives ~2000 on 300k characters (shown by chi_square_bound_catches_modulo_bias).
constexpr double kChiSquareBound = 200;

std::size_t AlphabetIndex(char c) { return kTokenAlphabet.find(c); }

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(scopes)

BOOST_AUTO_TEST_CASE(scope_bits_match_the_ledger_schema_numbering) {
  // schema/events.fbs, TokenCreated.scopes.
  const std::vector<std::string_view> expected = {"read_user",        "api",
                                                  "read_registry",    "sudo",
                                                  "read_api",         "read_repository",
                                                  "write_repository", "write_registry"};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    BOOST_TEST_CONTEXT("bit " << i) {
      BOOST_TEST(kScopeTable[i].name == expected[i]);
      BOOST_TEST(ScopeBit(expected[i]).value_or(0) == (1u << i));
      BOOST_TEST(!kScopeTable[i].description.empty());
      BOOST_TEST(kScopeTable[i].description.find('\n') == std::string_view::npos);
    }
  }
  BOOST_TEST(!ScopeBit("API").has_value());  // case-sensitive
  BOOST_TEST(!ScopeBit("").has_value());
}

BOOST_AUTO_TEST_CASE(parse_accepts_lists_with_blanks_empty_items_and_duplicates) {
  Result<ScopeSet> s = ParseScopeList("api, read_user,api ,\tsudo,");
  BOOST_TEST_REQUIRE(s.has_value(), Why(s));
  BOOST_TEST(*s == (kApi | kReadUser | kSudo));

  const std::vector<std::string> names = {"write_registry", " read_api ", "", "read_api"};
  Result<ScopeSet> v = ParseScopes(names);
  BOOST_TEST_REQUIRE(v.has_value(), Why(v));
  BOOST_TEST(*v == (kWriteRegistry | kReadApi));
}

BOOST_AUTO_TEST_CASE(parse_requires_at_least_one_scope) {
  for (std::string_view list : {"", " ", ",", " , ,"}) {
    BOOST_TEST_CONTEXT("list \"" << list << "\"") {
      Result<ScopeSet> s = ParseScopeList(list);
      BOOST_TEST_REQUIRE(!s.has_value());
      BOOST_TEST((s.error().code() == Status::Code::kInvalidArgument));
      BOOST_TEST(s.error().message() == "at least one scope is required");
    }
  }
  Result<ScopeSet> v = ParseScopes(std::vector<std::string>{});
  BOOST_TEST_REQUIRE(!v.has_value());
  BOOST_TEST(v.error().message() == "at least one scope is required");
}

BOOST_AUTO_TEST_CASE(unknown_scope_error_names_it_and_lists_every_valid_scope) {
  Result<ScopeSet> s = ParseScopeList("api,read_usr");
  BOOST_TEST_REQUIRE(!s.has_value());
  BOOST_TEST((s.error().code() == Status::Code::kInvalidArgument));
  const std::string& m = s.error().message();
  BOOST_TEST(m.find("\"read_usr\"") != std::string::npos, m);
  for (const ScopeInfo& info : kScopeTable) {
    BOOST_TEST(m.find(info.name) != std::string::npos, m << " lacks " << info.name);
  }

  const std::vector<std::string> names = {"read_api", "Api"};
  Result<ScopeSet> v = ParseScopes(names);
  BOOST_TEST_REQUIRE(!v.has_value());
  BOOST_TEST(v.error().message().find("\"Api\"") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(unknown_scope_error_escapes_control_bytes_and_never_echoes_a_token) {
  Result<ScopeSet> s = ParseScopeList("ap\x01i\"");
  BOOST_TEST_REQUIRE(!s.has_value());
  BOOST_TEST(s.error().message().find("\"ap\\x01i\\x22\"") != std::string::npos,
             s.error().message());

  const std::string token = MustGenerate();
  Result<ScopeSet> t = ParseScopeList("api," + token);
  BOOST_TEST_REQUIRE(!t.has_value());
  const std::string& m = t.error().message();
  BOOST_TEST(m.find(token.substr(kDefaultTokenPrefix.size(), 8)) == std::string::npos, m);
  BOOST_TEST(m.find("42 characters") != std::string::npos, m);
}

BOOST_AUTO_TEST_CASE(format_lists_names_in_table_order_and_parses_back) {
  BOOST_TEST(FormatScopes(kApi | kReadUser) == "read_user, api");
  BOOST_TEST(FormatScopes(0) == "");
  BOOST_TEST(FormatScopes(kSudo | (1u << 20)) == "sudo");  // unknown bits skipped
  const std::vector<std::string_view> names =
      ScopeNames(kWriteRegistry | kApi | kReadApi);
  BOOST_TEST(
      (names == std::vector<std::string_view>{"api", "read_api", "write_registry"}));
  for (ScopeSet set = 1; set <= kAllScopes; ++set) {
    Result<ScopeSet> back = ParseScopeList(FormatScopes(set));
    BOOST_TEST_REQUIRE(back.has_value(), Why(back));
    BOOST_TEST(*back == set);
  }
}

BOOST_AUTO_TEST_CASE(api_implies_every_scope_except_sudo) {
  for (const ScopeInfo& info : kScopeTable) {
    BOOST_TEST_CONTEXT(info.name) {
      BOOST_TEST(Grants(kApi, info.bit, /*owner_is_admin=*/true) == (info.bit != kSudo));
      BOOST_TEST(Grants(kApi, info.bit, /*owner_is_admin=*/false) == (info.bit != kSudo));
    }
  }
  BOOST_TEST(Effective(kApi, true) == (kAllScopes & ~kSudo));
}

BOOST_AUTO_TEST_CASE(read_api_implies_read_user_only) {
  BOOST_TEST(Effective(kReadApi, false) == (kReadApi | kReadUser));
  BOOST_TEST(Grants(kReadApi, kReadUser, false));
  BOOST_TEST(!Grants(kReadApi, kApi, false));
  BOOST_TEST(!Grants(kReadUser, kReadApi, false));
}

BOOST_AUTO_TEST_CASE(write_scopes_imply_their_read_scope_not_the_reverse) {
  BOOST_TEST(Effective(kWriteRepository, false) == (kWriteRepository | kReadRepository));
  BOOST_TEST(Effective(kWriteRegistry, false) == (kWriteRegistry | kReadRegistry));
  BOOST_TEST(!Grants(kReadRepository, kWriteRepository, true));
  BOOST_TEST(!Grants(kReadRegistry, kWriteRegistry, true));
  BOOST_TEST(!Grants(kWriteRepository, kReadRegistry, true));
  BOOST_TEST(!Grants(kWriteRegistry, kReadRepository, true));
}

BOOST_AUTO_TEST_CASE(sudo_counts_only_when_the_owner_is_an_admin) {
  BOOST_TEST(Grants(kSudo, kSudo, /*owner_is_admin=*/true));
  BOOST_TEST(!Grants(kSudo, kSudo, /*owner_is_admin=*/false));
  BOOST_TEST(Effective(kSudo | kReadUser, false) == kReadUser);
  BOOST_TEST(!Grants(kSudo, kReadUser, true));  // sudo implies nothing else
  BOOST_TEST(Grants(kSudo | kApi, kSudo | kWriteRegistry, true));
  BOOST_TEST(!Grants(kSudo | kApi, kSudo | kWriteRegistry, false));
}

BOOST_AUTO_TEST_CASE(unknown_bits_grant_nothing_and_empty_requirement_is_met) {
  BOOST_TEST(Effective(0xFFFFFF00u, true) == 0u);
  BOOST_TEST(!Grants(kApi | 0x100u, 0x100u, true));
  BOOST_TEST(Grants(0, 0, false));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(token_format)

BOOST_AUTO_TEST_CASE(
    generated_tokens_match_the_documented_regex_and_pass_the_shape_check) {
  const std::regex documented("^glpat-[0-9A-Za-z]{36}$");
  for (int i = 0; i < 200; ++i) {
    const std::string t = MustGenerate();
    BOOST_TEST(std::regex_match(t, documented));
    BOOST_TEST(t.size() == TokenLength(kDefaultTokenPrefix));
    BOOST_TEST((CheckTokenShape(t, kDefaultTokenPrefix) == TokenShape::kOk));
  }
  for (std::string_view prefix : {"x", "pl_", "A-b_9", "abcdefghijklmnop"}) {
    BOOST_TEST_CONTEXT("prefix " << prefix) {
      const std::string t = MustGenerate(prefix);
      std::string pattern(prefix);  // no regex metacharacters in these prefixes
      pattern += "[0-9A-Za-z]{36}";
      BOOST_TEST(std::regex_match(t, std::regex(pattern)));
      BOOST_TEST((CheckTokenShape(t, prefix) == TokenShape::kOk));
    }
  }
}

BOOST_AUTO_TEST_CASE(generate_rejects_an_invalid_prefix) {
  for (std::string_view prefix :
       {"", "abcdefghijklmnopq", "gl pat", "glpat/", "gl.pat", "gl\xC3\xA9"}) {
    BOOST_TEST_CONTEXT("prefix \"" << prefix << "\"") {
      BOOST_TEST(!IsValidTokenPrefix(prefix));
      Result<std::string> t = GenerateToken(prefix);
      BOOST_TEST_REQUIRE(!t.has_value());
      BOOST_TEST((t.error().code() == Status::Code::kInvalidArgument));
    }
  }
  BOOST_TEST(IsValidTokenPrefix(kDefaultTokenPrefix));
}

BOOST_AUTO_TEST_CASE(checksum_is_xxh32_of_prefix_and_random_part_in_big_endian_base62) {
  // Golden values (XXH32 seed 0 computed with libxxhash): 0x2bdbabc9 and 0xa3e25492.
  BOOST_TEST((CheckTokenShape("glpat-0000000000000000000000000000000nnPWT", "glpat-") ==
              TokenShape::kOk));
  BOOST_TEST((CheckTokenShape("glpat-abcdefghijABCDEFGHIJ0123456789304hUY", "glpat-") ==
              TokenShape::kOk));
}

BOOST_AUTO_TEST_CASE(ten_thousand_tokens_are_distinct_and_characters_uniform) {
  std::set<std::string> seen;
  std::array<std::uint64_t, 62> counts{};
  for (int i = 0; i < 10000; ++i) {
    const std::string t = MustGenerate();
    BOOST_TEST_REQUIRE(seen.insert(t).second);
    for (std::size_t j = 0; j < kTokenRandomLength; ++j) {
      ++counts[AlphabetIndex(t[kDefaultTokenPrefix.size() + j])];
    }
  }
  const double chi2 = ChiSquare(counts);
  BOOST_TEST_MESSAGE("chi-square of 300000 random characters, 61 df: " << chi2);
  BOOST_TEST(chi2 < kChiSquareBound);
}

BOOST_AUTO_TEST_CASE(chi_square_bound_catches_modulo_bias) {
  // The uniformity test above can fail: a generator that maps a byte b to b % 62
  // (without rejecting b >= 248) favours '0'..'7' (5/256 instead of 4/256).
  std::mt19937 rng(42);
  std::array<std::uint64_t, 62> biased{};
  std::array<std::uint64_t, 62> rejected{};
  for (int i = 0; i < 300000; ++i) ++biased[(rng() & 0xFF) % 62];
  for (int n = 0; n < 300000;) {
    const unsigned b = rng() & 0xFF;
    if (b < 248) ++rejected[b % 62], ++n;
  }
  BOOST_TEST(ChiSquare(biased) > kChiSquareBound * 5);
  BOOST_TEST(ChiSquare(rejected) < kChiSquareBound);
}

BOOST_AUTO_TEST_CASE(every_single_character_substitution_is_detected) {
  const std::size_t p = kDefaultTokenPrefix.size();
  for (int i = 0; i < 50; ++i) {
    const std::string valid = MustGenerate();
    for (std::size_t pos = 0; pos < valid.size(); ++pos) {
      for (int byte = 0; byte < 256; ++byte) {
        const char c = static_cast<char>(byte);
        if (c == valid[pos]) continue;
        std::string t = valid;
        t[pos] = c;
        const TokenShape expected = pos < p ? TokenShape::kWrongPrefix
                                    : AlphabetIndex(c) == std::string_view::npos
                                        ? TokenShape::kBadCharacter
                                        : TokenShape::kBadChecksum;
        const TokenShape got = CheckTokenShape(t, kDefaultTokenPrefix);
        if (got != expected) {  // one failure per case, not 10^5 passes logged
          BOOST_ERROR("position " << pos << " byte " << byte << ": "
                                  << TokenShapeName(got) << ", expected "
                                  << TokenShapeName(expected));
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(
    malformed_tokens_are_classified_by_prefix_then_length_then_characters) {
  const std::string t = MustGenerate();
  const std::string_view gl = kDefaultTokenPrefix;
  const auto shape = [&](std::string_view token, std::string_view prefix = "glpat-") {
    return CheckTokenShape(token, prefix);
  };
  BOOST_TEST((shape("") == TokenShape::kWrongPrefix));
  BOOST_TEST((shape("glpat") == TokenShape::kWrongPrefix));
  BOOST_TEST((shape("GLPAT-" + t.substr(gl.size())) == TokenShape::kWrongPrefix));
  BOOST_TEST((shape(t, "pl-") == TokenShape::kWrongPrefix));
  BOOST_TEST((shape(" " + t) == TokenShape::kWrongPrefix));

  BOOST_TEST((shape("glpat-") == TokenShape::kWrongLength));
  BOOST_TEST((shape(t + "0") == TokenShape::kWrongLength));
  BOOST_TEST((shape(t + "\n") == TokenShape::kWrongLength));
  BOOST_TEST((shape(t.substr(0, t.size() - 1)) == TokenShape::kWrongLength));
  BOOST_TEST((shape("glpat-" + t) == TokenShape::kWrongLength));

  std::string bad = t;
  bad[gl.size() + 3] = '-';
  BOOST_TEST((shape(bad) == TokenShape::kBadCharacter));
  bad = t;
  bad.back() = '\0';
  BOOST_TEST((shape(bad) == TokenShape::kBadCharacter));
  // A checksum that spells a number >= 2^32 ("zzzzzz") cannot match.
  bad = t.substr(0, t.size() - kTokenChecksumLength) + "zzzzzz";
  BOOST_TEST((shape(bad) == TokenShape::kBadChecksum));

  BOOST_TEST(TokenShapeName(TokenShape::kOk) == "ok");
  BOOST_TEST(TokenShapeName(TokenShape::kWrongPrefix) == "wrong_prefix");
  BOOST_TEST(TokenShapeName(TokenShape::kWrongLength) == "wrong_length");
  BOOST_TEST(TokenShapeName(TokenShape::kBadCharacter) == "bad_character");
  BOOST_TEST(TokenShapeName(TokenShape::kBadChecksum) == "bad_checksum");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// Owns a fresh temporary directory for key files.
class KeyDir {
 public:
  KeyDir() {
    std::string tmpl = (fs::temp_directory_path() / "token_test.XXXXXX").string();
    BOOST_TEST_REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir_ = tmpl;
  }
  ~KeyDir() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string Path(std::string_view name = "instance.key") const {
    return (dir_ / name).string();
  }
  TokenKey Create(const std::string& path) {
    Result<TokenKey> k = TokenKey::Create(path);
    BOOST_TEST_REQUIRE(k.has_value(), Why(k));
    return std::move(*k);
  }
  static void Write(const std::string& path, std::string_view contents, mode_t mode) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << contents;
    BOOST_TEST_REQUIRE(::chmod(path.c_str(), mode) == 0);
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  static Status::Code LoadCode(const std::string& path) {
    Result<TokenKey> k = TokenKey::Load(path);
    return k.has_value() ? Status::Code::kOk : k.error().code();
  }

 private:
  fs::path dir_;
};

BOOST_FIXTURE_TEST_SUITE(token_key, KeyDir)

BOOST_AUTO_TEST_CASE(digest_matches_rfc4231_hmac_sha256_test_cases) {
  struct Case {
    int number;
    std::vector<std::uint8_t> key;
    std::string data;
    std::string_view hmac;
  };
  std::vector<std::uint8_t> tc4_key;
  for (std::uint8_t b = 1; b <= 25; ++b) tc4_key.push_back(b);
  const std::vector<Case> cases = {
      {1, std::vector<std::uint8_t>(20, 0x0b), "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {2, Bytes("Jefe"), "what do ya want for nothing?",
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {3, std::vector<std::uint8_t>(20, 0xaa), std::string(50, '\xdd'),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {4, tc4_key, std::string(50, '\xcd'),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      // 6 and 7: a key longer than the block size is hashed first.
      {6, std::vector<std::uint8_t>(131, 0xaa),
       "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {7, std::vector<std::uint8_t>(131, 0xaa),
       "This is a test using a larger than block-size key and a larger than "
       "block-size data. The key needs to be hashed before being used by the HMAC "
       "algorithm.",
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  for (const Case& c : cases) {
    BOOST_TEST_CONTEXT("RFC 4231 test case " << c.number) {
      const TokenKey key = TokenKey::FromBytes(c.key);
      BOOST_TEST(ToHex(key.Digest(c.data)) == c.hmac);
      BOOST_TEST(ToHex(key.Digest(c.data)) == c.hmac);  // the pads are not consumed
    }
  }
}

BOOST_AUTO_TEST_CASE(digest_equals_openssl_hmac_for_every_message_length_up_to_200) {
  // Covers the padding boundaries (55, 56, 63, 64, 119, 120, 128 bytes).
  std::mt19937 rng(7);
  std::vector<std::uint8_t> k(TokenKey::kKeyBytes);
  for (auto& b : k) b = static_cast<std::uint8_t>(rng());
  const TokenKey key = TokenKey::FromBytes(k);
  std::string msg;
  for (int len = 0; len <= 200; ++len) {
    TokenDigest want;
    unsigned int n = 0;
    HMAC(EVP_sha256(), k.data(), static_cast<int>(k.size()),
         reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), want.data(), &n);
    BOOST_TEST_REQUIRE(n == want.size());
    BOOST_TEST((key.Digest(msg) == want), "length " << len);
    msg += static_cast<char>(rng());
  }
}

BOOST_AUTO_TEST_CASE(created_key_file_is_owner_only_and_in_the_documented_format) {
  const std::string path = Path();
  const TokenKey key = Create(path);
  struct stat st;
  BOOST_TEST_REQUIRE(::stat(path.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  const std::string contents = Read(path);
  BOOST_TEST(contents.size() == TokenKey::kFileBytes);
  BOOST_TEST(std::regex_match(contents, std::regex("patledger-key v1\n[0-9a-f]{64}\n")));
}

BOOST_AUTO_TEST_CASE(create_never_overwrites_an_existing_file_or_follows_a_symlink) {
  const std::string path = Path();
  const TokenKey first = Create(path);
  const std::string before = Read(path);
  Result<TokenKey> again = TokenKey::Create(path);
  BOOST_TEST_REQUIRE(!again.has_value());
  BOOST_TEST((again.error().code() == Status::Code::kAlreadyExists));
  BOOST_TEST(Read(path) == before);

  const std::string link = Path("link.key");
  const std::string target = Path("target.key");
  BOOST_TEST_REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);
  Result<TokenKey> via_link = TokenKey::Create(link);
  BOOST_TEST_REQUIRE(!via_link.has_value());
  BOOST_TEST((via_link.error().code() == Status::Code::kAlreadyExists));
  BOOST_TEST(!fs::exists(target));
}

BOOST_AUTO_TEST_CASE(loaded_key_has_the_same_fingerprint_and_digests) {
  const std::string path = Path();
  const TokenKey created = Create(path);
  Result<TokenKey> loaded = TokenKey::Load(path);
  BOOST_TEST_REQUIRE(loaded.has_value(), Why(loaded));
  BOOST_TEST(loaded->Fingerprint() == created.Fingerprint());
  Result<TokenKey> again = TokenKey::Load(path);
  BOOST_TEST_REQUIRE(again.has_value());
  BOOST_TEST(again->Fingerprint() == created.Fingerprint());
  const std::string token = MustGenerate();
  BOOST_TEST((loaded->Digest(token) == created.Digest(token)));

  // The fingerprint is the first 8 bytes of HMAC(key, "patledger key fingerprint").
  const TokenDigest d = created.Digest("patledger key fingerprint");
  std::uint64_t want = 0;
  for (int i = 0; i < 8; ++i) want = (want << 8) | d[i];
  BOOST_TEST(created.Fingerprint() == want);

  // Another key differs in both.
  const TokenKey other = Create(Path("other.key"));
  BOOST_TEST(other.Fingerprint() != created.Fingerprint());
  BOOST_TEST((other.Digest(token) != created.Digest(token)));
}

BOOST_AUTO_TEST_CASE(load_uses_the_key_written_in_the_file) {
  // RFC 4231 test case 2's data, under the key 00 01 .. 1f written by hand.
  std::string hex;
  std::vector<std::uint8_t> raw;
  for (int i = 0; i < 32; ++i) {
    static constexpr char kHex[] = "0123456789abcdef";
    hex += kHex[i >> 4];
    hex += kHex[i & 0xF];
    raw.push_back(static_cast<std::uint8_t>(i));
  }
  const std::string path = Path();
  Write(path, "patledger-key v1\n" + hex + "\n", 0600);
  Result<TokenKey> loaded = TokenKey::Load(path);
  BOOST_TEST_REQUIRE(loaded.has_value(), Why(loaded));
  BOOST_TEST((loaded->Digest("what do ya want for nothing?") ==
              TokenKey::FromBytes(raw).Digest("what do ya want for nothing?")));
  // Uppercase hex is the same key.
  std::string upper = hex;
  for (char& c : upper)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Write(path, "patledger-key v1\n" + upper + "\n", 0400);
  Result<TokenKey> upper_loaded = TokenKey::Load(path);
  BOOST_TEST_REQUIRE(upper_loaded.has_value(), Why(upper_loaded));
  BOOST_TEST(upper_loaded->Fingerprint() == loaded->Fingerprint());
}

BOOST_AUTO_TEST_CASE(load_refuses_a_key_file_group_or_others_can_access) {
  const std::string path = Path();
  { const TokenKey k = Create(path); }
  for (mode_t mode : {0644, 0640, 0604, 0610, 0601}) {
    BOOST_TEST_CONTEXT("mode " << std::oct << mode) {
      BOOST_TEST_REQUIRE(::chmod(path.c_str(), mode) == 0);
      Result<TokenKey> k = TokenKey::Load(path);
      BOOST_TEST_REQUIRE(!k.has_value());
      BOOST_TEST((k.error().code() == Status::Code::kPermissionDenied));
      BOOST_TEST(k.error().message().find("chmod 600 " + path) != std::string::npos,
                 k.error().message());
    }
  }
  BOOST_TEST_REQUIRE(::chmod(path.c_str(), 0400) == 0);
  BOOST_TEST((LoadCode(path) == Status::Code::kOk));
  BOOST_TEST_REQUIRE(::chmod(path.c_str(), 0600) == 0);
  BOOST_TEST((LoadCode(path) == Status::Code::kOk));
}

BOOST_AUTO_TEST_CASE(load_reports_a_wrong_length_header_or_digit_as_corruption) {
  const std::string path = Path();
  { const TokenKey k = Create(path); }
  const std::string good = Read(path);
  const std::string key_hex = good.substr(TokenKey::kFileHeader.size(), 64);
  const std::vector<std::pair<std::string, std::string>> damaged = {
      {"truncated", good.substr(0, good.size() - 1)},
      {"one byte more", good + "\n"},
      {"empty", ""},
      {"raw 32 bytes", std::string(32, 'k')},
      {"wrong version", "patledger-key v2\n" + good.substr(TokenKey::kFileHeader.size())},
      {"non-hex digit", good.substr(0, 20) + "g" + good.substr(21)},
      {"no final newline", good.substr(0, good.size() - 1) + "0"},
  };
  for (const auto& [what, contents] : damaged) {
    BOOST_TEST_CONTEXT(what) {
      Write(path, contents, 0600);
      Result<TokenKey> k = TokenKey::Load(path);
      BOOST_TEST_REQUIRE(!k.has_value());
      BOOST_TEST((k.error().code() == Status::Code::kCorruption), k.error().ToString());
      BOOST_TEST(k.error().message().find(path) != std::string::npos);
      BOOST_TEST(k.error().message().find(key_hex.substr(0, 8)) == std::string::npos);
    }
  }
}

BOOST_AUTO_TEST_CASE(
    load_reports_a_missing_file_as_not_found_and_a_directory_as_unusable) {
  BOOST_TEST((LoadCode(Path("missing.key")) == Status::Code::kNotFound));
  const std::string dir = Path("dir.key");
  BOOST_TEST_REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
  BOOST_TEST((LoadCode(dir) == Status::Code::kFailedPrecondition));
}

BOOST_AUTO_TEST_CASE(a_moved_key_keeps_digesting_the_same) {
  TokenKey a = TokenKey::FromBytes(Bytes("0123456789abcdef0123456789abcdef"));
  const TokenDigest before = a.Digest("glpat-x");
  const std::uint64_t fp = a.Fingerprint();
  TokenKey b = std::move(a);
  BOOST_TEST((b.Digest("glpat-x") == before));
  BOOST_TEST(b.Fingerprint() == fp);
  TokenKey c = TokenKey::FromBytes(Bytes("another key"));
  c = std::move(b);
  BOOST_TEST((c.Digest("glpat-x") == before));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::service
