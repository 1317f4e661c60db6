// common/endian.h: little-endian integers in byte buffers, whatever the host's order
// (the head journal's records; RocksDB's table footers, block trailers and WAL
// headers as the ledger's checks read them).
//
// Thread safety: pure functions only.
#pragma once

#include <cstdint>

namespace patledger {

// REQUIRES: p points at 4 readable bytes.
inline std::uint32_t LoadLe32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<std::uint8_t>(p[i]);
  return v;
}

// REQUIRES: p points at 8 readable bytes.
inline std::uint64_t LoadLe64(const char* p) {
  return static_cast<std::uint64_t>(LoadLe32(p + 4)) << 32 | LoadLe32(p);
}

// REQUIRES: out points at 8 writable bytes.
inline void StoreLe64(char* out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
}

}  // namespace patledger
