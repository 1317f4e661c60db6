// ledger/table_check.h: checking an SST file's footer and meta blocks before RocksDB
// parses them (docs/RELIABILITY.md, F7).
//
// RocksDB 7.8 (Debian 12) parses a table's properties block before it verifies that
// block's checksum (table/meta_blocks.cc, so that a legacy global-seqno rewrite can be
// undone first), and Block's constructor asserts on what a damaged block says: one
// flipped bit — the top bit of the block's restart count, its hash-index flag — aborts
// the process inside DB::Open instead of returning Corruption. So every SST the ledger
// opens goes through a FileSystem that checks the table first: the footer (magic,
// format version, checksum type, block handles inside the file) and the checksum of
// the metaindex block, of every block it lists (properties, filters, range
// deletions, dictionaries) and of the index block. A table that fails is refused as
// Corruption naming the file, before RocksDB reads a byte of it. Data blocks are not
// read here: RocksDB verifies them before parsing (the ledger reads with
// verify_checksums).
//
// Only the tables RocksDB opens are checked — the live ones, listed by the MANIFEST —
// so an unfinished table left by a crash (deleted at open) never blocks a ledger.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace rocksdb {
class Env;
class FileSystem;
}

namespace patledger::ledger::internal {

// Reads `n` bytes at `offset` into `out`; false on an I/O error or a short read.
using ReadAt = std::function<bool(std::uint64_t offset, std::size_t n, std::string* out)>;

// What is wrong with the block-based table of `size` bytes that `read` reads, e.g.
// "properties block at offset 1036 (132 bytes): checksum mismatch", or nullopt if its
// footer and every meta block check out.
std::optional<std::string> FirstTableDamage(std::uint64_t size, const ReadAt& read);

// FirstTableDamage of the file at `path` in `fs`, or why it could not be read.
std::optional<std::string> TableFileDamage(rocksdb::FileSystem& fs, const std::string& path);

// An Env whose file system is `base`'s, except that opening an SST for reading
// (NewRandomAccessFile on "*.sst") first checks it with FirstTableDamage and fails
// with Corruption("<path>: <damage>") if it is damaged. Threads and clock are the
// default Env's, like every Env the ledger is given (tests' simulated disks included).
std::unique_ptr<rocksdb::Env> NewTableCheckingEnv(rocksdb::Env* base);

}  // namespace patledger::ledger::internal
