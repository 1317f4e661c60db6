// service/hmac_sha256_x86.cc: see hmac_sha256_x86.h.
//
// The compression follows Intel's reference use of the SHA extensions ("Intel SHA
// Extensions", 2013): the state lives in two registers as ABEF and CDGH, each
// SHA256RNDS2 does two rounds, SHA256MSG1/MSG2 extend the message schedule four words
// at a time.

#include "service/hmac_sha256_x86.h"

#include <openssl/crypto.h>

#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace patledger::service::internal {

#if defined(__x86_64__)
namespace {

#define PATLEDGER_SHANI __attribute__((target("sha,ssse3,sse4.1")))

// FIPS 180-4 section 4.2.2.
alignas(16) constexpr std::uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

// h0..h7 (in memory order) -> the ABEF / CDGH register form.
PATLEDGER_SHANI inline void LoadState(const std::uint32_t h[8], __m128i* abef,
                                      __m128i* cdgh) {
  const __m128i dcba = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h));
  const __m128i hgfe = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 4));
  const __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
  const __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
  *abef = _mm_alignr_epi8(cdab, efgh, 8);
  *cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
}

// ABEF / CDGH -> (h0, h1, h2, h3) and (h4, h5, h6, h7) in lanes 0..3.
PATLEDGER_SHANI inline void StoreState(__m128i abef, __m128i cdgh, __m128i* dcba,
                                       __m128i* hgfe) {
  const __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
  const __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
  *dcba = _mm_blend_epi16(feba, dchg, 0xF0);
  *hgfe = _mm_alignr_epi8(dchg, feba, 8);
}

// One SHA-256 compression of the block whose 16 words (host order) are w0..w3.
PATLEDGER_SHANI inline __attribute__((always_inline)) void Compress(
    __m128i* abef, __m128i* cdgh, __m128i w0, __m128i w1, __m128i w2, __m128i w3) {
  __m128i s0 = *abef;
  __m128i s1 = *cdgh;
  __m128i w[4] = {w0, w1, w2, w3};  // a ring of the last 16 schedule words
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) {  // four rounds per iteration
    if (i >= 4) {
      // W[t..t+3] from W[t-16..t-13] (w[i & 3]), W[t-15..t-12], W[t-7..t-4] and
      // W[t-4..t-1] (prev); MSG2 also chains W[t], W[t+1] into W[t+2], W[t+3].
      const __m128i prev = w[(i + 3) & 3];
      const __m128i t7 = _mm_alignr_epi8(prev, w[(i + 2) & 3], 4);
      w[i & 3] = _mm_sha256msg2_epu32(
          _mm_add_epi32(_mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]), t7), prev);
    }
    __m128i wk = _mm_add_epi32(
        w[i & 3], _mm_load_si128(reinterpret_cast<const __m128i*>(kRoundConstants + 4 * i)));
    s1 = _mm_sha256rnds2_epu32(s1, s0, wk);
    wk = _mm_shuffle_epi32(wk, 0x0E);
    s0 = _mm_sha256rnds2_epu32(s0, s1, wk);
  }
  *abef = _mm_add_epi32(s0, *abef);
  *cdgh = _mm_add_epi32(s1, *cdgh);
}

}  // namespace

bool HaveShaNi() {
  static const bool have = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
    const bool ssse3_sse41 = (c & bit_SSSE3) != 0 && (c & bit_SSE4_1) != 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
    return ssse3_sse41 && (b & bit_SHA) != 0;
  }();
  return have;
}

PATLEDGER_SHANI void HmacSha256OneBlockShaNi(const std::uint32_t inner[8],
                                             const std::uint32_t outer[8], const void* msg,
                                             std::size_t n, std::uint8_t out[32]) {
  // Big-endian words <-> bytes.
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
  // Inner block: msg, 0x80, zeros, the bit length of key-block + msg (big-endian).
  alignas(16) std::uint8_t block[64] = {};
  std::memcpy(block, msg, n);
  block[n] = 0x80;
  const std::uint64_t bits = (64 + n) * 8;
  __m128i w[4];  // the block as big-endian words (a lambda would lose the target)
  for (int i = 0; i < 4; ++i) {
    w[i] = _mm_shuffle_epi8(
        _mm_load_si128(reinterpret_cast<const __m128i*>(block + 16 * i)), bswap);
  }
  __m128i w3 = w[3];
  w3 = _mm_insert_epi32(w3, static_cast<int>(bits >> 32), 2);
  w3 = _mm_insert_epi32(w3, static_cast<int>(bits), 3);
  __m128i abef, cdgh;
  LoadState(inner, &abef, &cdgh);
  Compress(&abef, &cdgh, w[0], w[1], w[2], w3);
  OPENSSL_cleanse(block, sizeof block);  // the token
  // Outer block: the inner digest's eight words are the message words as they are,
  // then 0x80000000, zeros, and the length (64 + 32) * 8 = 768 bits.
  __m128i h0123, h4567;
  StoreState(abef, cdgh, &h0123, &h4567);
  LoadState(outer, &abef, &cdgh);
  Compress(&abef, &cdgh, h0123, h4567,
           _mm_set_epi32(0, 0, 0, static_cast<int>(0x80000000u)),
           _mm_set_epi32(768, 0, 0, 0));
  StoreState(abef, cdgh, &h0123, &h4567);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_shuffle_epi8(h0123, bswap));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 16), _mm_shuffle_epi8(h4567, bswap));
}

#else  // not x86-64

bool HaveShaNi() { return false; }

void HmacSha256OneBlockShaNi(const std::uint32_t*, const std::uint32_t*, const void*,
                             std::size_t, std::uint8_t*) {
  __builtin_trap();  // REQUIRES HaveShaNi()
}

#endif

}  // namespace patledger::service::internal
