// service/hmac_sha256_x86.h: HMAC-SHA256 of a short message in two SHA-256
// compressions with the x86 SHA extensions (SHA-NI); internal to TokenKey.
//
// TokenKey::Digest runs on every authentication. With the key's inner and outer
// chaining values precomputed (RFC 2104 section 4), HMAC of a message of at most
// kMaxOneBlockMessage bytes is exactly two compressions: H_in(message + padding), then
// H_out(inner digest + padding). OpenSSL's SHA256_Update/SHA256_Final also use SHA-NI
// but add buffering, length bookkeeping, byte-order conversions and two library calls
// per hash; doing the two compressions here, with the inner digest handed to the outer
// compression as message words in registers, measured ~120 ns instead of ~145-150 ns
// per digest (docs/PERFORMANCE.md section 2). Results are identical by construction and
// tests/token_test.cc compares them with OpenSSL's HMAC() for every length 0..200.
//
// Thread safety: pure functions of their arguments.

#ifndef PATLEDGER_SERVICE_HMAC_SHA256_X86_H_
#define PATLEDGER_SERVICE_HMAC_SHA256_X86_H_

#include <cstddef>
#include <cstdint>

namespace patledger::service::internal {

// 64-byte block minus the 0x80 byte and the 8-byte length of the padding.
inline constexpr std::size_t kMaxOneBlockMessage = 55;

// True when this CPU has SHA-NI (and the SSSE3/SSE4.1 it is used with); checked once.
// False on other architectures.
bool HaveShaNi();

// out = HMAC-SHA256 of msg[0, n), given the SHA-256 chaining values (h0..h7) after
// absorbing the 64-byte blocks key ^ ipad (`inner`) and key ^ opad (`outer`).
// REQUIRES: HaveShaNi(), n <= kMaxOneBlockMessage. The stack copy of the message is
// wiped before returning.
void HmacSha256OneBlockShaNi(const std::uint32_t inner[8], const std::uint32_t outer[8],
                             const void* msg, std::size_t n, std::uint8_t out[32]);

}  // namespace patledger::service::internal

#endif  // PATLEDGER_SERVICE_HMAC_SHA256_X86_H_
