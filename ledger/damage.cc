// Naming the damaged file after RocksDB refused a ledger (ledger/damage.h). The WAL
// walk is ledger/wal_file.h's; the SST check ledger/table_check.h's.

#include "ledger/damage.h"

#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_reader.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "ledger/table_check.h"
#include "ledger/wal_file.h"

namespace patledger::ledger::internal {
namespace {

constexpr std::size_t kMaxReported = 4;

}  // namespace

std::optional<std::string> FirstBadWalRecord(std::string_view wal) {
  WalWalker walk(wal);
  WalPiece p;
  while (walk.Next(&p)) {
    const auto bad = [&](const std::string& what) {
      return "record at offset " + std::to_string(p.offset) + ": " + what;
    };
    switch (p.kind) {
      case WalPiece::kPadding:
      case WalPiece::kPreallocated:
        break;
      case WalPiece::kCutShort:
        if (!p.header_whole) return bad("cut inside its header");
        return bad("cut short (" + std::to_string(wal.size() - p.offset) + " bytes)");
      case WalPiece::kPastBlock:
        return bad("length runs past its 32 KiB block");
      case WalPiece::kRecord:
        if (p.type > kWalMaxKnownType) {
          return bad("unknown record type " + std::to_string(p.type));
        }
        if (!p.checksum_ok) return bad("checksum mismatch");
        break;
    }
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
