#include "tools/forensics/wal.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <istream>

namespace patledger::forensics::internal {
namespace {

constexpr std::size_t kBlockSize = 32768;
constexpr std::size_t kHeaderSize = 7;
constexpr std::size_t kRecyclableHeaderSize = 11;

enum RecordType : std::uint8_t {
  kZeroType = 0,
  kFullType = 1,
  kFirstType = 2,
  kMiddleType = 3,
  kLastType = 4,
  kRecyclableFullType = 5,
  kRecyclableFirstType = 6,
  kRecyclableMiddleType = 7,
  kRecyclableLastType = 8,
};

bool GetVarint32(const std::string& s, std::size_t* pos, std::uint32_t* v) {
  std::uint32_t result = 0;
  for (int shift = 0; shift <= 28 && *pos < s.size(); shift += 7) {
    const auto byte = static_cast<std::uint8_t>(s[(*pos)++]);
    result |= static_cast<std::uint32_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

bool GetSlice(const std::string& s, std::size_t* pos, std::string* out) {
  std::uint32_t len = 0;
  if (!GetVarint32(s, pos, &len) || s.size() - *pos < len) return false;
  *out = s.substr(*pos, len);
  *pos += len;
  return true;
}

// The ledger seqs (8-byte keys) of the puts in a (possibly partial) WriteBatch.
std::vector<std::uint64_t> SeqsInBatch(const std::string& batch) {
  std::vector<std::uint64_t> seqs;
  std::size_t pos = 12;  // sequence u64 + count u32
  while (pos < batch.size()) {
    const auto tag = static_cast<std::uint8_t>(batch[pos++]);
    std::uint32_t cf = 0;
    std::string key, value;
    if (tag == 0x5 || tag == 0x4) {  // column family value / deletion
      if (!GetVarint32(batch, &pos, &cf)) break;
    } else if (tag != 0x1 && tag != 0x0) {
      break;  // a record type we do not need
    }
    if (!GetSlice(batch, &pos, &key)) break;
    if (tag == 0x5 || tag == 0x1) {
      if (key.size() == 8) {
        std::uint64_t seq = 0;
        for (char c : key) seq = seq << 8 | static_cast<std::uint8_t>(c);
        seqs.push_back(seq);  // the events are put before the head
      }
      if (!GetSlice(batch, &pos, &value)) break;
    }
  }
  return seqs;
}

}  // namespace

bool TornTail(std::istream& in, WalTail* tail) {
  std::string pending;  // payload of the logical record being assembled
  bool fragmented = false;
  bool torn = false;
  bool ended = false;
  std::uint64_t record_start = 0;
  std::uint64_t block_offset = 0;
  std::string block(kBlockSize, '\0'), next(kBlockSize, '\0');
  auto fill = [&in](std::string* b) {
    in.read(b->data(), static_cast<std::streamsize>(kBlockSize));
    return static_cast<std::size_t>(in.gcount());
  };
  std::size_t n = fill(&block);
  std::uint64_t size = n;
  while (n > 0 && !torn && !ended) {
    const std::size_t next_n = n == kBlockSize ? fill(&next) : 0;
    size += next_n;
    const bool last = next_n == 0;
    std::size_t pos = 0;
    while (pos < n) {
      if (n - pos < kHeaderSize) {
        // The zero trailer of a block, or a header cut off by the end of the file.
        const bool zeros = std::all_of(block.begin() + static_cast<std::ptrdiff_t>(pos),
                                       block.begin() + static_cast<std::ptrdiff_t>(n),
                                       [](char c) { return c == 0; });
        if (last && (!zeros || fragmented)) {
          if (!fragmented) record_start = block_offset + pos;
          torn = true;
        }
        break;
      }
      const auto* h = reinterpret_cast<const std::uint8_t*>(block.data() + pos);
      const std::size_t length = h[4] | (static_cast<std::size_t>(h[5]) << 8);
      const std::uint8_t type = h[6];
      if (type == kZeroType && length == 0) {
        // Preallocated space that was never written: the log ends here.
        torn = fragmented;
        ended = true;
        break;
      }
      const std::size_t header =
          (type >= kRecyclableFullType && type <= kRecyclableLastType)
              ? kRecyclableHeaderSize
              : kHeaderSize;
      const bool starts = type == kFullType || type == kFirstType ||
                          type == kRecyclableFullType || type == kRecyclableFirstType;
      if (starts) {
        pending.clear();
        fragmented = false;
        record_start = block_offset + pos;
      }
      if (n - pos < header + length) {
        // The record runs past the end of its block: the file was cut here.
        if (n - pos > header) pending.append(block, pos + header, n - pos - header);
        if (!starts && !fragmented) record_start = block_offset + pos;
        torn = true;
        break;
      }
      switch (type) {
        case kFullType:
        case kRecyclableFullType:
        case kLastType:
        case kRecyclableLastType:
          pending.clear();
          fragmented = false;
          break;
        case kFirstType:
        case kRecyclableFirstType:
          pending.assign(block, pos + header, length);
          fragmented = true;
          break;
        case kMiddleType:
        case kRecyclableMiddleType:
          if (fragmented) pending.append(block, pos + header, length);
          break;
        default:
          break;  // metadata records (compression type, timestamp sizes)
      }
      pos += header + length;
    }
    if (last && fragmented && !ended) torn = true;
    block.swap(next);
    block_offset += n;
    n = next_n;
  }
  if (!torn) return false;
  tail->file_size = size;
  tail->offset = record_start;
  tail->seqs = SeqsInBatch(pending);
  return true;
}

Result<std::vector<WalTail>> FindTornWalTails(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<WalTail> out;
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".log" && entry.is_regular_file()) {
      files.push_back(entry.path());
    }
  }
  if (ec) return Err(Status::IOError("cannot list " + dir + ": " + ec.message()));
  std::sort(files.begin(), files.end());
  for (const fs::path& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Err(Status::IOError("cannot read " + path.string()));
    WalTail tail;
    if (TornTail(in, &tail)) {
      tail.file = path.filename().string();
      out.push_back(std::move(tail));
    }
  }
  return out;
}

}  // namespace patledger::forensics::internal
