// fuzz/token_parse_fuzz.cc: everything that parses a presented token string or the
// small text fields around it:
//   - service::CheckTokenShape / IsValidTokenPrefix (service/token_format.h), with the
//     default prefix, a fuzzed prefix, and the prefixes 'x' and '';
//   - api::PresentedToken (api/request.h): PRIVATE-TOKEN, Authorization Bearer/Basic
//     (base64 decoding), the private_token parameter and X-Original-URI's query;
//   - service::ParseScopeList / ParseScopes and FormatScopes (service/scopes.h);
//   - ParseDate / ParseTimestamp (common/clock.h), the expiry and --at parsers;
//   - TokenKey::FromBytes + Digest, and TokenKey::Load over a fuzzed key file.
//
// Input (FuzzedDataProvider): a selector byte and a prefix from the end, then the
// candidate string (the rest). Properties checked besides "no crash":
//   - a token CheckTokenShape accepts has the documented shape, and changing any one
//     character after the prefix to another alphabet character is always detected
//     (token_format.h promises EVERY single substitution is);
//   - GenerateToken(prefix) is accepted for every valid prefix;
//   - a scope error never echoes a name long enough to be a token; FormatScopes of a
//     parsed set parses back to the same set;
//   - ParseDate(FormatDate(d)) == d for every date ParseDate accepts.
// Nothing is printed: inputs may look like tokens.

#include <fuzzer/FuzzedDataProvider.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "api/request.h"
#include "common/clock.h"
#include "fuzz/fuzz_util.h"
#include "service/scopes.h"
#include "service/token_format.h"
#include "service/token_key.h"

namespace {

using namespace patledger;
using patledger::fuzz::Die;

std::string g_key_path;  // a scratch key file, for TokenKey::Load

void CheckShape(std::string_view token, std::string_view prefix, std::size_t where,
                std::uint8_t replacement) {
  const service::TokenShape shape = service::CheckTokenShape(token, prefix);
  if (service::TokenShapeName(shape) == "unknown") Die("TokenShapeName has no name");
  if (shape != service::TokenShape::kOk) return;
  if (!token.starts_with(prefix) || token.size() != service::TokenLength(prefix)) {
    Die("CheckTokenShape accepted a token of the wrong prefix or length");
  }
  for (char c : token.substr(prefix.size())) {
    if (service::kTokenAlphabet.find(c) == std::string_view::npos) {
      Die("CheckTokenShape accepted a character outside the alphabet");
    }
  }
  // One substitution inside the body must always be caught.
  std::string mutated(token);
  const std::size_t i = prefix.size() + where % service::kTokenBodyLength;
  const std::size_t old = service::kTokenAlphabet.find(mutated[i]);
  mutated[i] = service::kTokenAlphabet[(old + 1 + replacement % 61) % 62];
  if (service::CheckTokenShape(mutated, prefix) == service::TokenShape::kOk) {
    Die("a single-character substitution passed the token checksum");
  }
}

void CheckPresentedToken(const std::string& candidate, std::uint8_t how) {
  api::Request req;
  req.method(boost::beast::http::verb::get);
  req.target("/api/v4/auth");
  switch (how % 5) {
    case 0: req.set("PRIVATE-TOKEN", candidate); break;
    case 1: req.set(boost::beast::http::field::authorization, candidate); break;
    case 2: req.set(boost::beast::http::field::authorization, "Bearer " + candidate); break;
    case 3: req.set(boost::beast::http::field::authorization, "Basic " + candidate); break;
    case 4: req.set("X-Original-URI", candidate); break;
  }
  api::Params none;
  const std::string token = api::PresentedToken(req, none, /*include_original_uri=*/true);
  if (token.size() > candidate.size() + 16) Die("PresentedToken grew its input");
  if (auto parsed = api::ParseRequest(req); parsed) {
    (void)api::PresentedToken(req, parsed->params, true);
  }
}

std::vector<std::string> Split(const std::string& text, char separator) {
  std::vector<std::string> items;
  for (std::size_t start = 0;;) {
    const std::size_t end = text.find(separator, start);
    items.push_back(text.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return items;
}

// An unknown scope name longer than 32 characters (so any token) never reaches the
// error message. Items never contain the separator, and every 33-character window of
// the message's list of valid scopes does (", "), so a hit is a real echo.
void CheckParsedScopes(const Result<service::ScopeSet>& r,
                       const std::vector<std::string>& items) {
  if (r) {
    if (*r == 0 || (*r & ~service::kAllScopes) != 0) Die("parsed an impossible ScopeSet");
    auto again = service::ParseScopeList(service::FormatScopes(*r));
    if (!again || *again != *r) Die("FormatScopes does not parse back");
    if (service::ScopeNames(*r).empty()) Die("ScopeNames of a parsed set is empty");
    return;
  }
  for (std::string_view item : items) {
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item.size() > 32 && r.error().message().find(item) != std::string::npos) {
      Die("a long unknown scope was echoed in the error");
    }
  }
}

void CheckScopes(const std::string& candidate, char separator) {
  CheckParsedScopes(service::ParseScopeList(candidate), Split(candidate, ','));
  const std::vector<std::string> items = Split(candidate, separator);
  CheckParsedScopes(service::ParseScopes(items), items);
}

void CheckDates(const std::string& candidate) {
  if (auto day = ParseDate(candidate)) {
    if (ParseDate(FormatDate(*day)) != day) Die("ParseDate(FormatDate(d)) != d");
    (void)DayOf(static_cast<std::int64_t>(*day) * kMicrosPerDay);
  }
  if (auto t = ParseTimestamp(candidate)) (void)FormatTimestamp(*t);
}

void CheckKeyFile(const std::string& contents, std::string_view token) {
  {
    std::ofstream f(g_key_path, std::ios::binary | std::ios::trunc);
    f.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  }
  if (::chmod(g_key_path.c_str(), 0600) != 0) Die("chmod of the scratch key file failed");
  auto key = service::TokenKey::Load(g_key_path);
  if (key) (void)key->Digest(token);
  if (!key && key.error().message().find(contents) != std::string::npos &&
      contents.size() > 8) {
    Die("TokenKey::Load echoed the key file's contents");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static const std::string dir = patledger::fuzz::MakeScratchDir("token");
  g_key_path = dir + "/token.key";
  std::atexit([] { patledger::fuzz::RemoveTree(dir); });  // not after a crash
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider fdp(data, size);
  const std::uint8_t selector = fdp.ConsumeIntegral<std::uint8_t>();
  const std::size_t where = fdp.ConsumeIntegral<std::uint8_t>();
  const std::uint8_t replacement = fdp.ConsumeIntegral<std::uint8_t>();
  std::string prefix;
  switch (selector & 3) {
    case 0: prefix = service::kDefaultTokenPrefix; break;
    case 1: prefix = fdp.ConsumeRandomLengthString(24); break;
    case 2: prefix = "x"; break;
    case 3: break;  // "" (never a valid prefix, but CheckTokenShape must cope)
  }
  const std::string candidate = fdp.ConsumeRemainingBytesAsString();

  const bool valid_prefix = service::IsValidTokenPrefix(prefix);
  if (valid_prefix != (!prefix.empty() && prefix.size() <= service::kMaxTokenPrefixLength &&
                       prefix.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
                                                "OPQRSTUVWXYZ0123456789_-") ==
                           std::string::npos)) {
    Die("IsValidTokenPrefix disagrees with its documented alphabet");
  }
  CheckShape(candidate, prefix, where, replacement);
  // The candidate's body under the default prefix too (a token pasted without prefix).
  CheckShape(std::string(service::kDefaultTokenPrefix) + candidate,
             service::kDefaultTokenPrefix, where, replacement);
  if (valid_prefix && (selector & 0x40)) {
    auto generated = service::GenerateToken(prefix);
    if (!generated ||
        service::CheckTokenShape(*generated, prefix) != service::TokenShape::kOk) {
      Die("GenerateToken made a token CheckTokenShape refuses");
    }
    CheckShape(*generated, prefix, where, replacement);
  }
  CheckPresentedToken(candidate, selector >> 2);
  CheckScopes(candidate, (selector & 0x80) ? ',' : ' ');
  CheckDates(candidate);

  const service::TokenKey key = service::TokenKey::FromBytes(
      {data, std::min<std::size_t>(size, (selector & 0x20) ? 100 : 32)});
  if (key.Digest(candidate) != key.Digest(candidate)) Die("Digest is not deterministic");
  if (candidate.size() == service::TokenKey::kFileBytes ||
      candidate.starts_with(service::TokenKey::kFileHeader)) {
    CheckKeyFile(candidate, prefix);
  }
  return 0;
}
