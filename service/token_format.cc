// service/token_format.cc: see token_format.h for the format.

#include "service/token_format.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <xxhash.h>

#include <array>
#include <cstdint>

namespace patledger::service {
namespace {

constexpr std::uint8_t kNotBase62 = 0xFF;

// Byte -> base62 digit value, or kNotBase62.
constexpr std::array<std::uint8_t, 256> kDigitValue = [] {
  std::array<std::uint8_t, 256> t{};
  t.fill(kNotBase62);
  for (std::size_t i = 0; i < kTokenAlphabet.size(); ++i) {
    t[static_cast<unsigned char>(kTokenAlphabet[i])] = static_cast<std::uint8_t>(i);
  }
  return t;
}();

// Random bytes at or above this are rejected; below it, b % 62 is uniform.
constexpr unsigned kRejectFrom = 256 - 256 % 62;
static_assert(kRejectFrom == 248 && kRejectFrom % 62 == 0);

std::uint32_t Checksum(std::string_view prefix_and_random) {
  return XXH32(prefix_and_random.data(), prefix_and_random.size(), /*seed=*/0);
}

bool IsPrefixChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         c == '_' || c == '-';
}

}  // namespace

bool IsValidTokenPrefix(std::string_view prefix) {
  if (prefix.empty() || prefix.size() > kMaxTokenPrefixLength) return false;
  for (char c : prefix) {
    if (!IsPrefixChar(c)) return false;
  }
  return true;
}

Result<std::string> GenerateToken(std::string_view prefix) {
  if (!IsValidTokenPrefix(prefix)) {
    return Err(Status::InvalidArgument(
        "token prefix must be 1..16 characters of [A-Za-z0-9_-]"));
  }
  std::string token;
  token.reserve(TokenLength(prefix));
  token.append(prefix);

  // Each byte is kept with probability 248/256. 32 bytes would leave the token short
  // (and need a second RAND_bytes call) 7.7% of the time; 48 bytes, 1.2e-16.
  std::array<unsigned char, 48> random;
  std::size_t used = random.size();
  while (token.size() < prefix.size() + kTokenRandomLength) {
    if (used == random.size()) {
      if (RAND_bytes(random.data(), static_cast<int>(random.size())) != 1) {
        OPENSSL_cleanse(token.data(), token.size());
        return Err(Status::Internal("RAND_bytes failed: the CSPRNG is unavailable"));
      }
      used = 0;
    }
    const unsigned b = random[used++];
    if (b < kRejectFrom) token.push_back(kTokenAlphabet[b % 62]);
  }
  OPENSSL_cleanse(random.data(), random.size());

  std::uint32_t sum = Checksum(token);
  std::array<char, kTokenChecksumLength> digits;
  for (std::size_t i = digits.size(); i-- > 0;) {
    digits[i] = kTokenAlphabet[sum % 62];
    sum /= 62;
  }
  token.append(digits.data(), digits.size());
  return token;
}

TokenShape CheckTokenShape(std::string_view token, std::string_view prefix) {
  if (!token.starts_with(prefix)) return TokenShape::kWrongPrefix;
  if (token.size() != TokenLength(prefix)) return TokenShape::kWrongLength;

  const std::string_view body = token.substr(prefix.size());
  // OR of all digit values: kNotBase62 (0xFF) is the only value with bit 7 set
  // (digits are < 64), so one test after the loop covers every character.
  std::uint8_t any_bad = 0;
  for (char c : body) any_bad |= kDigitValue[static_cast<unsigned char>(c)];
  if (any_bad & 0x80) return TokenShape::kBadCharacter;

  std::uint64_t spelled = 0;  // < 62^6, fits easily
  for (char c : body.substr(kTokenRandomLength)) {
    spelled = spelled * 62 + kDigitValue[static_cast<unsigned char>(c)];
  }
  const std::uint32_t sum = Checksum(token.substr(0, prefix.size() + kTokenRandomLength));
  return spelled == sum ? TokenShape::kOk : TokenShape::kBadChecksum;
}

std::string_view TokenShapeName(TokenShape shape) {
  switch (shape) {
    case TokenShape::kOk:
      return "ok";
    case TokenShape::kWrongPrefix:
      return "wrong_prefix";
    case TokenShape::kWrongLength:
      return "wrong_length";
    case TokenShape::kBadCharacter:
      return "bad_character";
    case TokenShape::kBadChecksum:
      return "bad_checksum";
  }
  return "unknown";
}

}  // namespace patledger::service
