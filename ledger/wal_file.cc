// A walk over a RocksDB WAL file's physical records (ledger/wal_file.h).

#include "ledger/wal_file.h"

#include <algorithm>
#include <array>

#include "common/endian.h"

namespace patledger::ledger::internal {
namespace {

constexpr std::size_t kHeaderSize = 7;
constexpr std::size_t kRecyclableHeaderSize = 11;

constexpr std::array<std::uint32_t, 256> MakeTable() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<std::uint32_t, 256> kTable = MakeTable();

bool Recyclable(std::uint8_t type) {
  return type >= kWalRecyclableFullType && type <= kWalRecyclableLastType;
}

bool AllZero(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == 0; });
}

}  // namespace

std::uint32_t Crc32c(std::uint32_t crc, std::string_view data) {
  crc = ~crc;
  for (char ch : data) crc = kTable[(crc ^ static_cast<std::uint8_t>(ch)) & 0xff] ^ (crc >> 8);
  return ~crc;
}

std::uint32_t MaskCrc32c(std::uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

bool StartsLogicalRecord(std::uint8_t type) {
  return type == kWalFullType || type == kWalFirstType || type == kWalRecyclableFullType ||
         type == kWalRecyclableFirstType;
}

bool WalWalker::Next(WalPiece* piece) {
  if (stopped_ || at_ >= file_.size()) return false;
  *piece = WalPiece{};
  piece->offset = at_;
  const std::string_view rest = file_.substr(at_);
  const std::size_t block_left = kWalBlockSize - at_ % kWalBlockSize;
  if (block_left < kHeaderSize) {
    piece->kind = WalPiece::kPadding;
    piece->zeros = AllZero(rest.substr(0, block_left));
    at_ += block_left;
    return true;
  }
  if (rest.size() < kHeaderSize) {
    piece->kind = WalPiece::kCutShort;
    piece->header_whole = false;
    piece->zeros = AllZero(rest);
    stopped_ = true;
    return true;
  }
  const char* h = rest.data();
  const std::size_t length = static_cast<std::uint8_t>(h[4]) |
                             static_cast<std::size_t>(static_cast<std::uint8_t>(h[5])) << 8;
  piece->type = static_cast<std::uint8_t>(h[6]);
  if (piece->type == kWalZeroType && length == 0) {
    piece->kind = WalPiece::kPreallocated;
    at_ += block_left;
    return true;
  }
  const std::size_t header = Recyclable(piece->type) ? kRecyclableHeaderSize : kHeaderSize;
  if (header + length > block_left) {
    piece->kind = WalPiece::kPastBlock;
    piece->payload = rest.substr(std::min(header, rest.size()),
                                 block_left > header ? block_left - header : 0);
    stopped_ = true;
    return true;
  }
  if (rest.size() < header + length) {
    piece->kind = WalPiece::kCutShort;
    piece->header_whole = rest.size() >= header;
    piece->payload = rest.substr(std::min(header, rest.size()));
    stopped_ = true;
    return true;
  }
  piece->kind = WalPiece::kRecord;
  piece->payload = rest.substr(header, length);
  std::uint32_t crc = Crc32c(0, rest.substr(6, 1));
  if (header == kRecyclableHeaderSize) crc = Crc32c(crc, rest.substr(kHeaderSize, 4));
  crc = Crc32c(crc, piece->payload);
  piece->checksum_ok = LoadLe32(h) == MaskCrc32c(crc);
  at_ += header + length;
  return true;
}

}  // namespace patledger::ledger::internal
