// ledger/format.h: the constants of the ledger's on-disk format and the helpers that
// encode its integers. docs/ledger-format.md is the description; this header only
// pins the numbers it names, so a change here is a format change (see "Evolution"
// in the doc: bump kFormatVersion).
//
// Integers in keys and in "meta" are big-endian (so keys sort in sequence order);
// the record checksum is stored little-endian, as XXH3 returns it on this platform.
//
// Thread safety: constants and pure functions only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace patledger::ledger::format {

// The version written to meta[kFormatVersionKey]. A reader refuses any other.
inline constexpr std::uint32_t kFormatVersion = 1;

// Column families. "default" exists (RocksDB requires it) and stays empty.
inline constexpr std::string_view kEventsColumnFamily = "events";
inline constexpr std::string_view kMetaColumnFamily = "meta";

// Keys of the "meta" column family (ASCII, no terminator).
// format_version -> 4 bytes, big-endian u32.
inline constexpr std::string_view kFormatVersionKey = "format_version";
// head -> 8 bytes big-endian last seq, then 32 bytes chain(last seq). An empty
// ledger has head = seq 0 and 32 zero bytes.
inline constexpr std::string_view kHeadKey = "head";

inline constexpr std::size_t kSeqKeySize = 8;
inline constexpr std::size_t kChainSize = 32;
inline constexpr std::size_t kFormatVersionSize = 4;
inline constexpr std::size_t kHeadSize = kSeqKeySize + kChainSize;

// events value = envelope bytes || checksum, where checksum =
// XXH3_64bits_withSeed(envelope bytes, size, kChecksumSeed) as kChecksumSize
// little-endian bytes. The checksum covers the envelope bytes only (not the key).
inline constexpr std::size_t kChecksumSize = 8;
inline constexpr std::uint64_t kChecksumSeed = 0;

// The most events in one transaction: Sequencing.txn_count is a ushort.
inline constexpr std::size_t kMaxTransactionEvents = 65535;

using SeqKey = std::array<char, kSeqKeySize>;

inline SeqKey EncodeSeq(std::uint64_t seq) {
  SeqKey key;
  for (std::size_t i = 0; i < kSeqKeySize; ++i) {
    key[i] = static_cast<char>(seq >> (8 * (kSeqKeySize - 1 - i)));
  }
  return key;
}

// REQUIRES: p points at kSeqKeySize readable bytes.
inline std::uint64_t DecodeSeq(const char* p) {
  std::uint64_t seq = 0;
  for (std::size_t i = 0; i < kSeqKeySize; ++i) {
    seq = (seq << 8) | static_cast<std::uint8_t>(p[i]);
  }
  return seq;
}

inline std::array<char, kFormatVersionSize> EncodeFormatVersion(std::uint32_t version) {
  return {static_cast<char>(version >> 24), static_cast<char>(version >> 16),
          static_cast<char>(version >> 8), static_cast<char>(version)};
}

// REQUIRES: p points at kFormatVersionSize readable bytes.
inline std::uint32_t DecodeFormatVersion(const char* p) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < kFormatVersionSize; ++i) {
    v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  }
  return v;
}

inline std::array<char, kChecksumSize> EncodeChecksum(std::uint64_t checksum) {
  std::array<char, kChecksumSize> out;
  for (std::size_t i = 0; i < kChecksumSize; ++i)
    out[i] = static_cast<char>(checksum >> (8 * i));
  return out;
}

// REQUIRES: p points at kChecksumSize readable bytes.
inline std::uint64_t DecodeChecksum(const char* p) {
  std::uint64_t v = 0;
  for (std::size_t i = kChecksumSize; i-- > 0;)
    v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}

}  // namespace patledger::ledger::format
