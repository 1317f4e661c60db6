// service/token_format.h: the personal access token string: how it is generated and
// how its shape is checked before any lookup.
//
// A token is
//
//   <prefix><30 random base62 characters><6 base62 characters of checksum>
//
//   prefix    1..16 characters of [A-Za-z0-9_-]; "glpat-" unless configured (the
//             prefix in force is recorded in LedgerInitialized.token_prefix).
//   random    30 characters, each uniform over the 62-character alphabet, drawn from
//             OpenSSL's CSPRNG (RAND_bytes) by rejection sampling: a byte b < 248
//             (= 4 * 62) gives character b % 62, a byte >= 248 is discarded, so there
//             is no modulo bias. 30 * log2(62) = 178.6 bits of entropy.
//   checksum  XXH32 (seed 0) of prefix + random part (the first prefix.size() + 30
//             bytes), as a big-endian base62 number zero-padded to 6 characters
//             (62^6 = 5.68e10 > 2^32, so the first character is always 0..4).
//
//   alphabet  "0-9A-Za-z": '0'..'9' are digits 0..9, 'A'..'Z' are 10..35,
//             'a'..'z' are 36..61.
//
// With the default prefix a token matches  ^glpat-[0-9A-Za-z]{36}$  (42 characters).
//
// The checksum lets the auth path, and secret scanners, reject a mistyped or made-up
// token without a lookup. It is not a secret and not a MAC (the index lookup by HMAC
// is what authenticates). It detects EVERY single-character substitution, not just
// all but 2^-32 of them: for a fixed input length, XXH32 is a bijection of each
// 32-bit input word and of each tail byte when all other input is fixed (every step
// is an add of word * odd prime, a rotate, or a multiply by an odd prime), so
// changing one character always changes the hash; a substitution inside the
// checksum changes the number it spells.
//
// Tokens are secrets: never put one in a Status message, a log line or any output
// other than the one response that hands it to its owner.
//
// Thread safety: every function may be called from any thread.

#ifndef PATLEDGER_SERVICE_TOKEN_FORMAT_H_
#define PATLEDGER_SERVICE_TOKEN_FORMAT_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace patledger::service {

inline constexpr std::string_view kDefaultTokenPrefix = "glpat-";
inline constexpr std::size_t kMaxTokenPrefixLength = 16;
inline constexpr std::size_t kTokenRandomLength = 30;
inline constexpr std::size_t kTokenChecksumLength = 6;
// Characters after the prefix.
inline constexpr std::size_t kTokenBodyLength = kTokenRandomLength + kTokenChecksumLength;
inline constexpr std::string_view kTokenAlphabet =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static_assert(kTokenAlphabet.size() == 62);
static_assert(kTokenBodyLength == 36, "the documented regex says {36}");
// 62^6 > 2^32: six base62 characters hold any XXH32 value.
static_assert(62ull * 62 * 62 * 62 * 62 * 62 > 0xFFFFFFFFull);

// True when `prefix` is 1..kMaxTokenPrefixLength characters of [A-Za-z0-9_-].
bool IsValidTokenPrefix(std::string_view prefix);

// prefix.size() + kTokenBodyLength.
constexpr std::size_t TokenLength(std::string_view prefix) {
  return prefix.size() + kTokenBodyLength;
}

// A new token with `prefix`. Errors: InvalidArgument if the prefix is not valid;
// Internal if the CSPRNG fails (RAND_bytes). The result is a secret.
[[nodiscard]] Result<std::string> GenerateToken(std::string_view prefix);

// What is wrong with a presented token, checked in this order.
enum class TokenShape {
  kOk,
  kWrongPrefix,   // does not start with the prefix (including: shorter than it)
  kWrongLength,   // starts with the prefix, but is not TokenLength(prefix) long
  kBadCharacter,  // a character after the prefix is not in the alphabet
  kBadChecksum,   // well-formed, but the checksum does not match
};

// Classifies `token` against the format above with `prefix`. Pure: no allocation,
// no system call; a few tens of ns (it runs on every authentication before the
// lookup). Does not say whether the token exists.
TokenShape CheckTokenShape(std::string_view token, std::string_view prefix);

// "ok", "wrong_prefix", "wrong_length", "bad_character", "bad_checksum".
std::string_view TokenShapeName(TokenShape shape);

}  // namespace patledger::service

#endif  // PATLEDGER_SERVICE_TOKEN_FORMAT_H_
