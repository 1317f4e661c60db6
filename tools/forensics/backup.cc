// `patledger backup` and `patledger restore`.
//
// backup: RocksDB's Checkpoint of a read-only open (OpenForReadOnly takes no lock and
// writes nothing, so it works beside a running server; checked in RocksDB 7.8.3 that a
// read-only handle can make a checkpoint when log_size_for_flush is UINT64_MAX, i.e.
// the WAL is copied instead of flushed). The checkpoint hard-links the SST files when
// it can; the backup then gets its own copy of every linked file, so that nothing done
// to the live directory later (even an in-place edit) reaches the evidence. Finally the
// copy is opened and every record verified.
//
// restore: verifies the backup, copies it to <to>/ledger.restoring, syncs, renames it
// to <to>/ledger and verifies the result. It never overwrites a ledger or a key.

#include <fcntl.h>
#include <rocksdb/db.h>
#include <rocksdb/utilities/checkpoint.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <ostream>
#include <thread>

#include "ledger/format.h"
#include "tools/forensics/common.h"
#include "tools/forensics/forensics.h"
#include "tools/forensics/wal.h"

namespace patledger::forensics {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

Status IoError(const std::string& what, const std::error_code& ec) {
  return Status::IOError(what + ": " + ec.message());
}

Status SyncPath(const fs::path& path, bool directory) {
  const int fd =
      ::open(path.c_str(), (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError("cannot open " + path.string() + " to sync it");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::IOError("cannot sync " + path.string());
  return Status::OK();
}

// Copies `from` to `to` (a new file) with `mode`, and syncs it.
Status CopyFile(const fs::path& from, const fs::path& to, fs::perms mode) {
  std::error_code ec;
  if (!fs::copy_file(from, to, fs::copy_options::none, ec)) {
    return IoError("cannot copy " + from.string() + " to " + to.string(), ec);
  }
  fs::permissions(to, mode, ec);
  if (ec) return IoError("cannot set the mode of " + to.string(), ec);
  return SyncPath(to, false);
}

// Gives every hard-linked file of `dir` its own copy (same name, same bytes).
Status Unlink(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file() || entry.hard_link_count() <= 1) continue;
    const fs::path tmp = entry.path().string() + ".copy";
    PATLEDGER_RETURN_IF_ERROR(CopyFile(entry.path(), tmp, fs::perms(0644)));
    fs::rename(tmp, entry.path(), ec);
    if (ec) return IoError("cannot replace " + entry.path().string(), ec);
  }
  if (ec) return IoError("cannot list " + dir.string(), ec);
  return SyncPath(dir, true);
}

Status Checkpoint(const std::string& ledger_dir, const fs::path& target) {
  rocksdb::DBOptions db_options;
  const std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, {}},
      {std::string(ledger::format::kEventsColumnFamily), {}},
      {std::string(ledger::format::kMetaColumnFamily), {}},
  };
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  // As in internal::OpenLedgerDir: only a view opened while the directory did not
  // change is consistent (Backup retries).
  const std::vector<std::string> before = internal::FileNames(ledger_dir);
  rocksdb::Status s =
      rocksdb::DB::OpenForReadOnly(db_options, ledger_dir, cfs, &handles, &raw);
  if (!s.ok())
    return Status::IOError("cannot open " + ledger_dir + " read-only: " + s.ToString());
  std::unique_ptr<rocksdb::DB> db(raw);
  if (internal::FileNames(ledger_dir) != before) {
    for (rocksdb::ColumnFamilyHandle* h : handles)
      db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db->Close().PermitUncheckedError();
    return Status::IOError(ledger_dir + " changed while it was being opened");
  }
  rocksdb::Checkpoint* cp = nullptr;
  s = rocksdb::Checkpoint::Create(db.get(), &cp);
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(cp);
  // UINT64_MAX: never flush (a read-only handle cannot); copy the WAL instead.
  if (s.ok()) s = checkpoint->CreateCheckpoint(target.string(), UINT64_MAX);
  for (rocksdb::ColumnFamilyHandle* h : handles)
    db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  db->Close().PermitUncheckedError();
  if (!s.ok())
    return Status::IOError("checkpoint of " + ledger_dir + " failed: " + s.ToString());
  return Status::OK();
}

struct Verified {
  std::uint64_t head_seq = 0;
  ChainHash head_chain{};
};

// Opens `dir` read-only and verifies every record (stops at the first damage).
Result<Verified> VerifyDir(const std::string& dir) {
  auto opened = internal::OpenLedgerDir(dir);
  if (!opened) return Err(opened.error());
  Status s = (*opened)->Scan({}, [](const ledger::RecordView&) { return Status::OK(); });
  if (!s.ok()) return Err(s);
  return Verified{(*opened)->last_seq(), (*opened)->head_chain()};
}

bool EmptyOrMissing(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return true;
  return fs::is_directory(dir, ec) && fs::is_empty(dir, ec);
}

}  // namespace

Status Backup(const BackupOptions& options, const Io& io) {
  if (options.to.empty()) return Status::InvalidArgument("--to is required");
  const fs::path to(options.to);
  if (!EmptyOrMissing(to)) {
    return Status::AlreadyExists(
        options.to + " exists and is not empty: back up into a new directory");
  }
  const std::string source = internal::LedgerDir(options.source);
  // Fail early, with the usual messages, if there is no readable ledger.
  {
    auto opened = internal::OpenLedger(options.source);
    if (!opened) return opened.error();
  }
  std::error_code ec;
  fs::create_directories(to, ec);
  if (ec) return IoError("cannot create " + options.to, ec);
  const fs::path target = to / "ledger";
  Status made;
  for (int attempt = 0; attempt < 8; ++attempt) {
    fs::remove_all(target, ec);
    made = Checkpoint(source, target);
    if (made.ok()) break;
    // A running writer may replace files (flush, compaction) during the open or
    // while they are being linked.
    std::this_thread::sleep_for(std::chrono::milliseconds(20 << std::min(attempt, 4)));
  }
  if (!made.ok()) return made;
  PATLEDGER_RETURN_IF_ERROR(Unlink(target));
  // The live WAL is copied at its size of the moment: if a write was in flight, the
  // copy ends in a torn record, which RocksDB drops when it opens the copy. Drop it
  // here, so that the backup is exactly what it recovers (and verify finds no torn
  // tail in it).
  auto torn = internal::FindTornWalTails(target.string());
  if (!torn) return torn.error();
  for (const internal::WalTail& t : *torn) {
    fs::resize_file(target / t.file, t.offset, ec);
    if (ec) return IoError("cannot trim " + (target / t.file).string(), ec);
    PATLEDGER_RETURN_IF_ERROR(SyncPath(target / t.file, false));
  }
  bool key_copied = false;
  if (options.with_key) {
    PATLEDGER_RETURN_IF_ERROR(CopyFile(internal::KeyPath(options.source),
                                       to / "token.key",
                                       fs::perms::owner_read | fs::perms::owner_write));
    key_copied = true;
  }
  PATLEDGER_RETURN_IF_ERROR(SyncPath(to, true));
  auto verified = VerifyDir(target.string());
  if (!verified) return verified.error().WithContext("the backup in " + target.string());
  const std::string chain = internal::Hex(verified->head_chain);
  if (options.json) {
    json::object o;
    o["type"] = "backup";
    o["from"] = source;
    o["to"] = target.string();
    o["head_seq"] = verified->head_seq;
    o["head_chain"] = chain;
    o["key_copied"] = key_copied;
    o["verified"] = true;
    internal::PrintJson(io.out, o);
    return Status::OK();
  }
  io.out << "Backed up " << source << " to " << target.string() << " (records 1.."
         << verified->head_seq << ", every one verified).\n"
         << "head: seq " << verified->head_seq << "  chain " << chain << "\n";
  if (key_copied) {
    io.out << "The instance key was copied to " << (to / "token.key").string()
           << " (mode 0600): guard the backup like the key itself.\n";
  } else {
    io.out << "The instance key was not copied (--with-key copies it): keep it apart; "
              "without it\n"
              "the backup can still be audited, but triage and history --token-value "
              "need it\n"
              "(--key-file).\n";
  }
  return Status::OK();
}

Status Restore(const RestoreOptions& options, const Io& io) {
  if (options.from.empty() || options.to.empty()) {
    return Status::InvalidArgument("--from and --to are required");
  }
  Source from_source;
  from_source.data = options.from;
  const fs::path from(internal::LedgerDir(from_source));
  const fs::path from_key = fs::path(options.from) / "token.key";
  const fs::path to(options.to);
  const fs::path target = to / "ledger";
  std::error_code ec;
  if (fs::exists(target, ec) || fs::exists(to / "CURRENT", ec)) {
    return Status::AlreadyExists(options.to +
                                 " already holds a ledger: restore refuses to "
                                 "overwrite it (restore into a new directory)");
  }
  const bool with_key = fs::exists(from_key, ec) && fs::path(options.from) != from;
  if (with_key && fs::exists(to / "token.key", ec)) {
    return Status::AlreadyExists((to / "token.key").string() + " already exists");
  }
  auto source = VerifyDir(from.string());
  if (!source) return source.error().WithContext("the backup in " + from.string());

  fs::create_directories(to, ec);
  if (ec) return IoError("cannot create " + options.to, ec);
  const fs::path staging = to / "ledger.restoring";
  fs::remove_all(staging, ec);
  fs::create_directory(staging, ec);
  if (ec) return IoError("cannot create " + staging.string(), ec);
  for (const auto& entry : fs::directory_iterator(from, ec)) {
    const std::string name = entry.path().filename().string();
    // LOCK and the info logs belong to a running instance, not to the data.
    if (!entry.is_regular_file() || name == "LOCK" || name.starts_with("LOG")) continue;
    PATLEDGER_RETURN_IF_ERROR(CopyFile(entry.path(), staging / name, fs::perms(0644)));
  }
  if (ec) return IoError("cannot list " + from.string(), ec);
  PATLEDGER_RETURN_IF_ERROR(SyncPath(staging, true));
  fs::rename(staging, target, ec);
  if (ec) return IoError("cannot rename " + staging.string(), ec);
  if (with_key) {
    PATLEDGER_RETURN_IF_ERROR(CopyFile(from_key, to / "token.key",
                                       fs::perms::owner_read | fs::perms::owner_write));
  }
  PATLEDGER_RETURN_IF_ERROR(SyncPath(to, true));
  auto restored = VerifyDir(target.string());
  if (!restored)
    return restored.error().WithContext("the restored ledger in " + target.string());
  if (restored->head_seq != source->head_seq ||
      restored->head_chain != source->head_chain) {
    return Status::Corruption("the restored ledger ends at seq " +
                              std::to_string(restored->head_seq) +
                              ", the backup at seq " + std::to_string(source->head_seq));
  }
  const std::string chain = internal::Hex(restored->head_chain);
  if (options.json) {
    json::object o;
    o["type"] = "restore";
    o["from"] = from.string();
    o["to"] = target.string();
    o["head_seq"] = restored->head_seq;
    o["head_chain"] = chain;
    o["key_copied"] = with_key;
    o["verified"] = true;
    internal::PrintJson(io.out, o);
    return Status::OK();
  }
  io.out << "Restored " << from.string() << " to " << target.string() << " (records 1.."
         << restored->head_seq << ", every one verified).\n"
         << "head: seq " << restored->head_seq << "  chain " << chain << "\n"
         << (with_key
                 ? "The instance key was restored to " + (to / "token.key").string() +
                       ".\n"
                 : "The backup holds no key: put the instance key in " +
                       (to / "token.key").string() + " (mode 0600) before serving.\n")
         << "Serve it with: patledger serve --data " << options.to << "\n";
  return Status::OK();
}

}  // namespace patledger::forensics
