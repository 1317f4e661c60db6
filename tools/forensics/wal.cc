#include "tools/forensics/wal.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "ledger/wal_file.h"

namespace patledger::forensics::internal {
namespace {

using ledger::internal::WalPiece;

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

bool TornTail(std::string_view wal, WalTail* tail) {
  std::string pending;  // payload of the logical record being assembled
  bool fragmented = false;
  bool torn = false;
  std::uint64_t record_start = 0;
  ledger::internal::WalWalker walk(wal);
  ledger::internal::WalPiece p;
  while (!torn && walk.Next(&p)) {
    if (p.kind == WalPiece::kPreallocated) break;  // never written: the log ends here
    if (p.kind == WalPiece::kPadding) {
      // A block's zero trailer; at the end of the file, garbage or an unfinished record
      // is a cut.
      if (walk.AtEnd() && (!p.zeros || fragmented)) {
        if (!fragmented) record_start = p.offset;
        torn = true;
      }
      continue;
    }
    if (p.kind == WalPiece::kCutShort && !p.header_whole) {
      // A header cut off by the end of the file (zeros: preallocated space).
      if (!p.zeros || fragmented) {
        if (!fragmented) record_start = p.offset;
        torn = true;
      }
      break;
    }
    const bool starts = ledger::internal::StartsLogicalRecord(p.type);
    if (starts) {
      pending.clear();
      fragmented = false;
      record_start = p.offset;
    }
    if (p.kind != WalPiece::kRecord) {  // cut short, or running past its block
      pending.append(p.payload);
      if (!starts && !fragmented) record_start = p.offset;
      torn = true;
      break;
    }
    switch (p.type) {
      case ledger::internal::kWalFullType:
      case ledger::internal::kWalRecyclableFullType:
      case ledger::internal::kWalLastType:
      case ledger::internal::kWalRecyclableLastType:
        pending.clear();
        fragmented = false;
        break;
      case ledger::internal::kWalFirstType:
      case ledger::internal::kWalRecyclableFirstType:
        pending.assign(p.payload);
        fragmented = true;
        break;
      case ledger::internal::kWalMiddleType:
      case ledger::internal::kWalRecyclableMiddleType:
        if (fragmented) pending.append(p.payload);
        break;
      default:
        break;  // metadata records (compression type, timestamp sizes)
    }
  }
  if (fragmented) torn = true;  // the log ends inside a fragmented record
  if (!torn) return false;
  tail->file_size = wal.size();
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
    const std::string wal{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (!in) return Err(Status::IOError("cannot read " + path.string()));
    WalTail tail;
    if (TornTail(wal, &tail)) {
      tail.file = path.filename().string();
      out.push_back(std::move(tail));
    }
  }
  return out;
}

}  // namespace patledger::forensics::internal
