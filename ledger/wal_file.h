// ledger/wal_file.h (internal): a walk over the physical records of a RocksDB
// write-ahead log file, for the two readers that look at WAL bytes themselves —
// ledger/damage.h (which record of a refused ledger is damaged) and the forensic
// torn-tail finder (tools/forensics/wal.h).
//
// RocksDB's log format (db/log_format.h, db/log_writer.cc of RocksDB 7.8): the file is
// a sequence of 32 KiB blocks; each holds physical records with a 7-byte header —
// masked CRC32C (4 bytes LE), payload length (2 bytes LE), type (1 byte) — or an
// 11-byte one for the recyclable types, which add the log number (4 bytes) to the
// header and to the checksum. The checksum covers the type byte, the log number if
// any, and the payload. A logical record longer than a block's room is split into
// first/middle/last fragments. A block's last < 7 bytes are zero padding; a zero
// header (type 0, length 0) is space preallocated and never written.
#pragma once

#include <cstdint>
#include <string_view>

namespace patledger::ledger::internal {

inline constexpr std::size_t kWalBlockSize = 32768;

enum WalRecordType : std::uint8_t {
  kWalZeroType = 0,
  kWalFullType = 1,
  kWalFirstType = 2,
  kWalMiddleType = 3,
  kWalLastType = 4,
  kWalRecyclableFullType = 5,
  kWalRecyclableFirstType = 6,
  kWalRecyclableMiddleType = 7,
  kWalRecyclableLastType = 8,
  kWalSetCompressionType = 9,
  kWalMaxKnownType = 11,  // newer releases' timestamp-size records
};

// One step of a walk.
struct WalPiece {
  enum Kind {
    kRecord,        // a whole physical record
    kPadding,       // a block's last < 7 bytes (`zeros` if they are all zero)
    kPreallocated,  // a zero header: never written; the walk goes on at the next block
    kCutShort,      // the file ends inside this record's header or payload
    kPastBlock,     // its length runs past its 32 KiB block: not a record
  };
  Kind kind = kRecord;
  std::uint64_t offset = 0;    // of the header (the padding) in the file
  std::uint8_t type = 0;       // kRecord, kCutShort (if the header is whole), kPastBlock
  bool header_whole = true;    // kCutShort: false if the file ends inside the header
  bool zeros = false;          // kPadding, and kCutShort inside the header: all bytes zero
  std::string_view payload;    // kRecord; the part there is for kCutShort, kPastBlock
  bool checksum_ok = false;    // kRecord
};

// Is `type` one of the record types that start (or are) a logical record?
bool StartsLogicalRecord(std::uint8_t type);

// Walks `file` (the whole WAL file's bytes) piece by piece. A walk ends after a
// kCutShort or kPastBlock piece, or at the end of the file.
class WalWalker {
 public:
  explicit WalWalker(std::string_view file) : file_(file) {}
  // The next piece, or false at the end.
  bool Next(WalPiece* piece);
  // Is nothing left after the piece Next returned last?
  bool AtEnd() const { return at_ >= file_.size(); }

 private:
  std::string_view file_;
  std::uint64_t at_ = 0;
  bool stopped_ = false;
};

// CRC32C (Castagnoli), as RocksDB's util/crc32c.h computes it.
std::uint32_t Crc32c(std::uint32_t crc, std::string_view data);
// A CRC32C as RocksDB stores it, in WAL record headers and in table block trailers
// (util/crc32c.h, Mask).
std::uint32_t MaskCrc32c(std::uint32_t crc);

}  // namespace patledger::ledger::internal
