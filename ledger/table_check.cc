// Checking an SST before RocksDB parses it (ledger/table_check.h).
//
// The block-based table format, as RocksDB 7.8 writes and reads it (table/format.h,
// table/format.cc, table/block_based/block.h):
//   footer    the file's last 53 bytes: checksum type (1 byte), the metaindex block's
//             handle and the index block's (each two varint64: offset, size), zero
//             padding to 41 bytes, format_version (u32 LE), magic (u64 LE).
//   block     `size` bytes at `offset`, then a 5-byte trailer: compression type
//             (1 byte) and a checksum (u32 LE) of the block and that byte.
//   metaindex a block of entries — varint32 shared, varint32 non_shared, varint32
//             value length, key suffix, value — then the restart offsets (u32 each)
//             and their count (u32; its top bit is a hash-index flag); each value is
//             the handle of a meta block, its key the meta block's name.

#include "ledger/table_check.h"

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <xxhash.h>

#include <array>
#include <string_view>

#include "common/endian.h"
#include "ledger/wal_file.h"  // Crc32c, MaskCrc32c

namespace patledger::ledger::internal {
namespace {

constexpr std::uint64_t kBlockBasedTableMagic = 0x88e241b785f4cff7ull;
constexpr std::uint64_t kLegacyBlockBasedTableMagic = 0xdb4775248b80fb57ull;
constexpr std::size_t kFooterSize = 53;
constexpr std::size_t kFooterHandlesSize = 41;  // checksum type, handles, padding
constexpr std::size_t kTrailerSize = 5;
constexpr std::uint32_t kMaxFormatVersion = 5;  // the newest RocksDB 7.8 reads
constexpr std::string_view kPropertiesBlock = "rocksdb.properties";

enum ChecksumType : std::uint8_t { kNoChecksum, kCRC32c, kxxHash, kxxHash64, kXXH3 };

std::uint32_t Le32(std::string_view s, std::size_t at) { return LoadLe32(s.data() + at); }
std::uint64_t Le64(std::string_view s, std::size_t at) { return LoadLe64(s.data() + at); }

// Consumes a varint (at most `max_bytes` bytes) from the front of `in`.
bool Varint(std::string_view* in, std::uint64_t* v, int max_bytes) {
  *v = 0;
  for (int i = 0; i < max_bytes && !in->empty(); ++i) {
    const auto b = static_cast<std::uint8_t>(in->front());
    in->remove_prefix(1);
    *v |= static_cast<std::uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

struct Handle {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

bool DecodeHandle(std::string_view* in, Handle* h) {
  return Varint(in, &h->offset, 10) && Varint(in, &h->size, 10);
}

// The checksum RocksDB stores in a block's trailer; `block` is the block followed by
// its compression type byte (table/format.cc, ComputeBuiltinChecksum).
std::uint32_t BlockChecksum(ChecksumType type, std::string_view block) {
  switch (type) {
    case kCRC32c:
      return MaskCrc32c(Crc32c(0, block));
    case kxxHash:
      return XXH32(block.data(), block.size(), 0);
    case kxxHash64:
      return static_cast<std::uint32_t>(XXH64(block.data(), block.size(), 0));
    case kXXH3: {
      const auto v = static_cast<std::uint32_t>(XXH3_64bits(block.data(), block.size() - 1));
      return v ^ static_cast<std::uint8_t>(block.back()) * 0x6b9083d9u;
    }
    case kNoChecksum:
      break;
  }
  return 0;
}

class Table {
 public:
  Table(std::uint64_t size, const ReadAt& read) : size_(size), read_(read) {}

  std::optional<std::string> Check() {
    if (size_ < kFooterSize) {
      return "shorter (" + std::to_string(size_) + " bytes) than a table's footer";
    }
    std::string footer;
    if (!read_(size_ - kFooterSize, kFooterSize, &footer)) return "footer unreadable";
    const std::uint64_t magic = Le64(footer, kFooterSize - 8);
    if (magic == kLegacyBlockBasedTableMagic) {
      return "footer: legacy table format (the ledger never writes it)";
    }
    if (magic != kBlockBasedTableMagic) return "footer: bad magic number";
    const std::uint32_t version = Le32(footer, kFooterHandlesSize);
    if (version == 0 || version > kMaxFormatVersion) {
      return "footer: unknown format_version " + std::to_string(version);
    }
    const auto type = static_cast<std::uint8_t>(footer[0]);
    if (type == kNoChecksum || type > kXXH3) {
      return "footer: checksum type " + std::to_string(type) +
             (type == kNoChecksum ? " (none: the ledger always writes checksums)"
                                  : " (unknown)");
    }
    checksum_ = static_cast<ChecksumType>(type);
    std::string_view handles = std::string_view(footer).substr(1, kFooterHandlesSize - 1);
    Handle metaindex, index;
    if (!DecodeHandle(&handles, &metaindex) || !DecodeHandle(&handles, &index)) {
      return "footer: block handles do not decode";
    }
    std::string block;
    if (auto bad = ReadBlock("metaindex block", metaindex, &block)) return bad;
    if (auto bad = CheckMetaBlocks(block)) return bad;
    return ReadBlock("index block", index, &block);
  }

 private:
  // Reads the block at `h` into `block` and verifies its trailer's checksum.
  std::optional<std::string> ReadBlock(const std::string& what, const Handle& h,
                                       std::string* block) {
    const std::string where = what + " at offset " + std::to_string(h.offset) + " (" +
                              std::to_string(h.size) + " bytes)";
    const std::uint64_t end = size_ - kFooterSize;
    if (h.offset > end || h.size > end - h.offset || kTrailerSize > end - h.offset - h.size) {
      return where + ": outside the file (" + std::to_string(size_) + " bytes)";
    }
    std::string bytes;
    if (!read_(h.offset, h.size + kTrailerSize, &bytes)) return where + ": unreadable";
    const std::string_view with_type = std::string_view(bytes).substr(0, h.size + 1);
    if (BlockChecksum(checksum_, with_type) != Le32(bytes, h.size + 1)) {
      return where + ": checksum mismatch";
    }
    bytes.resize(h.size);
    *block = std::move(bytes);
    return std::nullopt;
  }

  // Verifies every block the (checksum-verified) metaindex block lists.
  std::optional<std::string> CheckMetaBlocks(std::string_view metaindex) {
    if (metaindex.size() < 4) return "metaindex block: too short";
    const std::uint32_t restarts = Le32(metaindex, metaindex.size() - 4) & 0x7fffffffu;
    if (restarts > (metaindex.size() - 4) / 4) return "metaindex block: bad restart count";
    std::string_view entries = metaindex.substr(0, metaindex.size() - 4 - 4ull * restarts);
    std::string key;
    bool has_properties = false;
    while (!entries.empty()) {
      std::uint64_t shared = 0, non_shared = 0, value_size = 0;
      if (!Varint(&entries, &shared, 5) || !Varint(&entries, &non_shared, 5) ||
          !Varint(&entries, &value_size, 5) || shared > key.size() ||
          non_shared + value_size > entries.size()) {
        return "metaindex block: an entry does not decode";
      }
      key.resize(shared);
      key.append(entries.substr(0, non_shared));
      std::string_view value = entries.substr(non_shared, value_size);
      entries.remove_prefix(non_shared + value_size);
      Handle h;
      if (!DecodeHandle(&value, &h)) {
        return "metaindex block: the handle of \"" + key + "\" does not decode";
      }
      std::string block;
      if (auto bad = ReadBlock("\"" + key + "\" block", h, &block)) return bad;
      has_properties |= key == kPropertiesBlock;
    }
    if (!has_properties) return "metaindex block: no properties block";
    return std::nullopt;
  }

  const std::uint64_t size_;
  const ReadAt& read_;
  ChecksumType checksum_ = kNoChecksum;
};

ReadAt ReaderOf(rocksdb::FSRandomAccessFile* file) {
  return [file](std::uint64_t offset, std::size_t n, std::string* out) {
    out->resize(n);
    rocksdb::Slice got;
    if (!file->Read(offset, n, rocksdb::IOOptions(), &got, out->data(), nullptr).ok() ||
        got.size() != n) {
      return false;
    }
    if (got.data() != out->data()) out->assign(got.data(), got.size());
    return true;
  };
}

// Checks each SST it opens for reading (ledger/table_check.h).
class TableCheckingFs : public rocksdb::FileSystemWrapper {
 public:
  explicit TableCheckingFs(const std::shared_ptr<rocksdb::FileSystem>& base)
      : FileSystemWrapper(base) {}
  const char* Name() const override { return "PatledgerTableCheckingFs"; }

  rocksdb::IOStatus NewRandomAccessFile(const std::string& path,
                                        const rocksdb::FileOptions& options,
                                        std::unique_ptr<rocksdb::FSRandomAccessFile>* result,
                                        rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewRandomAccessFile(path, options, result, dbg);
    if (!s.ok() || !path.ends_with(".sst")) return s;
    std::uint64_t size = 0;
    s = target()->GetFileSize(path, rocksdb::IOOptions(), &size, dbg);
    if (!s.ok()) return s;
    if (auto bad = FirstTableDamage(size, ReaderOf(result->get()))) {
      result->reset();
      return rocksdb::IOStatus::Corruption(path + ": " + *bad);
    }
    return s;
  }
};

}  // namespace

std::optional<std::string> FirstTableDamage(std::uint64_t size, const ReadAt& read) {
  return Table(size, read).Check();
}

std::optional<std::string> TableFileDamage(rocksdb::FileSystem& fs,
                                           const std::string& path) {
  std::unique_ptr<rocksdb::FSRandomAccessFile> file;
  std::uint64_t size = 0;
  rocksdb::IOStatus s = fs.NewRandomAccessFile(path, rocksdb::FileOptions(), &file, nullptr);
  if (s.ok()) s = fs.GetFileSize(path, rocksdb::IOOptions(), &size, nullptr);
  if (!s.ok()) return s.ToString();
  return FirstTableDamage(size, ReaderOf(file.get()));
}

std::unique_ptr<rocksdb::Env> NewTableCheckingEnv(rocksdb::Env* base) {
  return rocksdb::NewCompositeEnv(std::make_shared<TableCheckingFs>(base->GetFileSystem()));
}

}  // namespace patledger::ledger::internal
