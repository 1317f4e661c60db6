// Naming the damaged file after RocksDB refused a ledger (ledger/damage.h).
//
// The WAL walk follows RocksDB's log format (db/log_format.h, db/log_writer.cc of
// RocksDB 7.8): the file is a sequence of 32 KiB blocks; each holds physical records
// with a 7-byte header — masked CRC32C (4 bytes LE), payload length (2 bytes LE),
// type (1 byte) — or an 11-byte one for the recyclable types, which add the log
// number (4 bytes) to the header and to the checksum. The checksum covers the type
// byte, the log number if any, and the payload. A block's last < header-size bytes are
// zero padding; a zero header (type 0, length 0) is preallocated space.

#include "ledger/damage.h"

#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_reader.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <vector>

#include "ledger/table_check.h"

namespace patledger::ledger::internal {
namespace {

constexpr std::size_t kBlockSize = 32768;
constexpr std::size_t kHeaderSize = 7;
constexpr std::size_t kRecyclableHeaderSize = 11;
constexpr std::uint8_t kZeroType = 0;
constexpr std::uint8_t kRecyclableFullType = 5;
constexpr std::uint8_t kSetCompressionType = 9;
constexpr std::uint8_t kMaxKnownType = 11;  // newer releases' timestamp-size records
constexpr std::uint32_t kMaskDelta = 0xa282ead8u;
constexpr std::size_t kMaxReported = 4;

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

std::uint32_t Le32(const char* p) {
  return static_cast<std::uint32_t>(static_cast<std::uint8_t>(p[0])) |
         static_cast<std::uint32_t>(static_cast<std::uint8_t>(p[1])) << 8 |
         static_cast<std::uint32_t>(static_cast<std::uint8_t>(p[2])) << 16 |
         static_cast<std::uint32_t>(static_cast<std::uint8_t>(p[3])) << 24;
}

std::uint32_t Unmask(std::uint32_t masked) {
  const std::uint32_t rot = masked - kMaskDelta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace

std::uint32_t Crc32c(std::uint32_t crc, std::string_view data) {
  crc = ~crc;
  for (char ch : data) crc = kTable[(crc ^ static_cast<std::uint8_t>(ch)) & 0xff] ^ (crc >> 8);
  return ~crc;
}

std::optional<std::string> FirstBadWalRecord(std::string_view wal) {
  std::size_t at = 0;
  while (at < wal.size()) {
    const std::size_t block_left = kBlockSize - at % kBlockSize;
    if (block_left < kHeaderSize) {  // trailer padding
      at += block_left;
      continue;
    }
    const auto bad = [&](const std::string& what) {
      return "record at offset " + std::to_string(at) + ": " + what;
    };
    if (wal.size() - at < kHeaderSize) return bad("cut inside its header");
    const char* h = wal.data() + at;
    const std::size_t length = static_cast<std::uint8_t>(h[4]) |
                               static_cast<std::size_t>(static_cast<std::uint8_t>(h[5])) << 8;
    const auto type = static_cast<std::uint8_t>(h[6]);
    if (type == kZeroType && length == 0 && Le32(h) == 0) {  // preallocated: skip the block
      at += block_left;
      continue;
    }
    if (type > kMaxKnownType) return bad("unknown record type " + std::to_string(type));
    const bool recyclable = type >= kRecyclableFullType && type != kSetCompressionType &&
                            type < 10;
    const std::size_t header = recyclable ? kRecyclableHeaderSize : kHeaderSize;
    if (header > block_left || header + length > block_left) {
      return bad("length " + std::to_string(length) + " runs past its 32 KiB block");
    }
    if (wal.size() - at < header + length) {
      return bad("cut short (" + std::to_string(wal.size() - at) + " of " +
                 std::to_string(header + length) + " bytes)");
    }
    std::uint32_t crc = Crc32c(0, wal.substr(at + 6, 1));
    if (recyclable) crc = Crc32c(crc, wal.substr(at + kHeaderSize, 4));
    crc = Crc32c(crc, wal.substr(at + header, length));
    if (Unmask(Le32(h)) != crc) return bad("checksum mismatch");
    at += header + length;
  }
  return std::nullopt;
}

std::string DescribeDamagedFiles(rocksdb::Env* env, const std::string& dir,
                                 std::string_view refusal) {
  std::vector<std::string> names;
  if (!env->GetChildren(dir, &names).ok()) return "";
  std::sort(names.begin(), names.end());
  std::vector<std::string> found;
  // RocksDB names some damaged tables by number only ("Missing table properties on
  // file 23 ..."), in an error about the MANIFEST that lists them.
  for (std::size_t at = refusal.find("on file "); at != std::string_view::npos;
       at = refusal.find("on file ", at + 1)) {
    std::size_t end = at + 8;
    std::uint64_t number = 0;
    while (end < refusal.size() && refusal[end] >= '0' && refusal[end] <= '9')
      number = number * 10 + static_cast<std::uint64_t>(refusal[end++] - '0');
    if (end == at + 8 || number > 999'999'999) continue;
    char name[32];
    std::snprintf(name, sizeof name, "%06llu.sst", static_cast<unsigned long long>(number));
    if (std::binary_search(names.begin(), names.end(), std::string(name))) {
      found.push_back(std::string(name) + ": RocksDB could not read it (table file " +
                      std::to_string(number) + " above)");
      names.erase(std::find(names.begin(), names.end(), std::string(name)));
    }
  }
  for (const std::string& name : names) {
    if (found.size() == kMaxReported) break;
    const std::string path = dir + "/" + name;
    if (name.ends_with(".sst")) {
      // Our own check first: SstFileReader parses the properties block before it
      // verifies it, and may abort on a damaged one (ledger/table_check.h, F7).
      if (auto bad = TableFileDamage(*env->GetFileSystem(), path)) {
        found.push_back(name + ": " + *bad);
        continue;
      }
      rocksdb::Options o;
      o.env = env;
      rocksdb::SstFileReader reader(o);
      rocksdb::Status s = reader.Open(path);
      if (s.ok()) s = reader.VerifyChecksum();
      if (!s.ok()) found.push_back(name + ": " + s.ToString());
    } else if (name.ends_with(".log")) {
      std::string bytes;
      rocksdb::Status s = rocksdb::ReadFileToString(env, path, &bytes);
      if (!s.ok()) {
        found.push_back(name + ": " + s.ToString());
      } else if (auto bad = FirstBadWalRecord(bytes)) {
        found.push_back(name + ": " + *bad);
      }
    }
  }
  std::string out;
  for (const std::string& f : found) out += (out.empty() ? "" : "; ") + f;
  if (out.empty()) {
    // Every SST and WAL checks out: what RocksDB found inconsistent is the MANIFEST
    // that CURRENT names (e.g. cut short, it still expects a WAL deleted since).
    std::string current;
    if (rocksdb::ReadFileToString(env, dir + "/CURRENT", &current).ok()) {
      while (!current.empty() && (current.back() == '\n' || current.back() == '\r'))
        current.pop_back();
      if (current.starts_with("MANIFEST-") && current.find('/') == std::string::npos) {
        out = current + " (every SST and WAL file checks out, so the MANIFEST that "
                        "CURRENT names disagrees with them)";
      }
    }
  }
  return out;
}

}  // namespace patledger::ledger::internal
