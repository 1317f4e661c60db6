// ledger/damage.h: naming the damaged file when RocksDB refuses to open a ledger.
//
// RocksDB's refusal does not always say which file is damaged: a bad WAL record is
// "Corruption: checksum mismatch", and some SST damage is reported against the
// MANIFEST that lists the file. After such a refusal the ledger checks its files one
// by one — every SST with its own table check (ledger/table_check.h) and
// SstFileReader::VerifyChecksum, every WAL record by record (ledger/wal_file.h) — and
// names what it finds, with the offset of the first bad WAL record
// (docs/RELIABILITY.md, F2).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rocksdb {
class Env;
}

namespace patledger::ledger::internal {

// "000012.log: record at offset 4096: checksum mismatch; 000015.sst: ..." for every
// damaged SST or WAL file in `dir` (at most a few). If they all check out, the MANIFEST
// that CURRENT names ("MANIFEST-000028 (every SST and WAL file checks out, ...)");
// "" if not even that can be said.
// `refusal`: RocksDB's error; a table file it names by number ("... on file 23 ...",
// blamed on the MANIFEST that lists it) is named first.
std::string DescribeDamagedFiles(rocksdb::Env* env, const std::string& dir,
                                 std::string_view refusal = {});

// The first damaged physical record of a RocksDB WAL file's bytes, as
// "record at offset N: <what>", or nullopt if every record checks. A torn last record
// counts as damage here: this runs only after RocksDB refused the ledger.
std::optional<std::string> FirstBadWalRecord(std::string_view wal);

}  // namespace patledger::ledger::internal
