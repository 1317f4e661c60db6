// tools/forensics/wal.h (internal): finds write-ahead log files that end in a torn
// (incomplete) record.
//
// RocksDB opens a ledger with WALRecoveryMode::kTolerateCorruptedTailRecords, so a
// WAL whose last record was cut off (a crash during a write that was never
// acknowledged, or a truncated file) opens silently without that write: the log just
// ends earlier. Nothing inside the events tells; the physical WAL file does. This
// walks the files (read-only) in RocksDB's log format (ledger/wal_file.h) and reports
// a file whose last logical record is incomplete, with the ledger sequence numbers of
// the events visible in the part that is there (WriteBatch: seq u64, count u32, then
// tagged column-family puts whose 8-byte keys are ledger seqs).
//
// A truncation exactly at a record boundary leaves no torn record: only a head kept
// from an earlier audit (verify --expect) shows it.
#pragma once

#include <cstdint>
#include <string_view>
#include <string>
#include <vector>

#include "common/status.h"

namespace patledger::forensics::internal {

struct WalTail {
  std::string file;  // name within the directory, e.g. "000038.log"
  std::uint64_t file_size = 0;
  std::uint64_t offset = 0;         // where the incomplete record begins
  std::vector<std::uint64_t> seqs;  // ledger seqs of the events seen in it (may be empty)
};

// Every *.log file of `dir` whose last record is incomplete.
Result<std::vector<WalTail>> FindTornWalTails(const std::string& dir);

// The same check on one WAL file's bytes.
bool TornTail(std::string_view wal, WalTail* tail);

}  // namespace patledger::forensics::internal
