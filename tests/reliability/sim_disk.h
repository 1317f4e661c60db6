// tests/reliability/sim_disk.h: a RocksDB FileSystem (a FileSystemWrapper over the
// default one) that simulates what a real disk does to a database on power loss, and
// injects I/O errors and a full disk.
//
// Power loss. For every file under `root` it keeps what was written and what was
// made durable:
//   - data: a file's bytes are durable up to its size at its last Sync/Fsync; bytes
//     overwritten in place (a RandomRWFile) since its last sync get their old
//     content back;
//   - names: a created or renamed file's directory entry is durable only after a
//     later fsync of its directory (FSDirectory::Fsync); a deleted file is moved to a
//     graveyard and comes back unless its directory was fsynced after the delete.
// Crash() (or CrashAtOp(k): the k-th mutating operation under `root` and every later
// one fail with IOError, as if the machine had stopped there) freezes the disk: from
// then on nothing under `root` changes. After every DB using it is closed,
// PowerLoss() makes the files look as they would after the machine came back: each
// file truncated to its synced size, files whose creation was never made durable
// removed, renames and deletions not made durable undone. Reopen them with the
// default Env. Files that existed before the SimDisk saw them count as durable.
//
// Errors: FailWalAppends(n) / FailWalSyncs(n) fail the next n appends / syncs of
// write-ahead log files (*.log) with IOError; SetSpace(bytes) makes appends beyond
// that many bytes fail with NoSpace after writing what still fits (as a full disk
// does). Heal() clears them.
//
// Every file operation under `root` is serialised by one mutex (tests need
// determinism, not speed).
#pragma once

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace patledger::reliability {

class SimDisk : public rocksdb::FileSystemWrapper {
 public:
  // `graveyard`: a directory on the same file system as `root`, outside it.
  SimDisk(const std::string& root, const std::string& graveyard)
      : FileSystemWrapper(rocksdb::FileSystem::Default()),
        root_(Normal(root)),
        graveyard_(Normal(graveyard)) {
    std::filesystem::create_directories(graveyard_);
  }
  const char* Name() const override { return "SimDisk"; }

  // ---- faults ---------------------------------------------------------------------

  void CrashAtOp(std::uint64_t op) {
    std::lock_guard lock(mu_);
    crash_at_ = op;
  }
  void Crash() {
    std::lock_guard lock(mu_);
    crashed_ = true;
  }
  bool crashed() const {
    std::lock_guard lock(mu_);
    return crashed_;
  }
  // Mutating operations under root so far (the ones CrashAtOp counts).
  std::uint64_t ops() const {
    std::lock_guard lock(mu_);
    return ops_;
  }
  void FailWalAppends(int n) {
    std::lock_guard lock(mu_);
    fail_wal_appends_ = n;
  }
  void FailWalSyncs(int n) {
    std::lock_guard lock(mu_);
    fail_wal_syncs_ = n;
  }
  void SetSpace(std::optional<std::uint64_t> bytes) {
    std::lock_guard lock(mu_);
    space_ = bytes;
  }
  void Heal() {
    std::lock_guard lock(mu_);
    fail_wal_appends_ = fail_wal_syncs_ = 0;
    space_.reset();
  }
  // Operations that failed because of FailWal* or SetSpace.
  std::uint64_t injected() const {
    std::lock_guard lock(mu_);
    return injected_;
  }

  struct Loss {
    std::uint64_t files_vanished = 0, files_truncated = 0, bytes_dropped = 0;
    std::uint64_t renames_undone = 0, deletions_undone = 0;
    std::string ToString() const {
      std::ostringstream o;
      o << files_vanished << " files vanished, " << files_truncated << " truncated ("
        << bytes_dropped << " bytes), " << renames_undone << " renames and "
        << deletions_undone << " deletions undone";
      return o.str();
    }
  };

  // REQUIRES: no DB has files open on this SimDisk. Applies the power loss described
  // at the top to the real files; the SimDisk stays crashed.
  Loss PowerLoss() {
    namespace fs = std::filesystem;
    std::lock_guard lock(mu_);
    crashed_ = true;
    Loss loss;
    std::error_code ec;
    for (const auto& [path, st] : files_) {
      if (!fs::exists(path, ec)) continue;
      if (!st.entry_durable) {
        fs::remove(path, ec);
        ++loss.files_vanished;
        continue;
      }
      for (auto u = st.undo.rbegin(); u != st.undo.rend(); ++u) {
        std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
        f.seekp(static_cast<std::streamoff>(u->first));
        f.write(u->second.data(), static_cast<std::streamsize>(u->second.size()));
        loss.bytes_dropped += u->second.size();
      }
      const std::uint64_t size = fs::file_size(path, ec);
      if (!ec && size > st.synced) {
        fs::resize_file(path, st.synced, ec);
        ++loss.files_truncated;
        loss.bytes_dropped += size - st.synced;
      }
    }
    for (const auto& [target, r] : renamed_) {
      if (r.old_target) {
        WriteFile(target, *r.old_target);
      } else {
        fs::remove(target, ec);
      }
      if (r.old_source) WriteFile(r.old_source->first, r.old_source->second);
      ++loss.renames_undone;
    }
    for (const Grave& g : graves_) {
      fs::rename(g.grave, g.path, ec);
      if (!ec) fs::resize_file(g.path, g.synced, ec);
      ++loss.deletions_undone;
    }
    files_.clear();
    renamed_.clear();
    graves_.clear();
    return loss;
  }

  // ---- FileSystem -----------------------------------------------------------------

  rocksdb::IOStatus NewWritableFile(const std::string& fname,
                                    const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    const std::string path = Normal(fname);
    if (!Tracked(path)) return target()->NewWritableFile(fname, o, result, dbg);
    std::lock_guard lock(mu_);
    if (auto s = Step(); !s.ok()) return s;
    const bool was_durable = EntryDurable(path);
    auto s = target()->NewWritableFile(fname, o, result, dbg);
    if (!s.ok()) return s;
    files_[path] = FileState{0, 0, was_durable, {}};
    *result = std::make_unique<File>(this, path, std::move(*result));
    return s;
  }

  rocksdb::IOStatus ReopenWritableFile(const std::string& fname,
                                       const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    const std::string path = Normal(fname);
    if (!Tracked(path)) return target()->ReopenWritableFile(fname, o, result, dbg);
    std::lock_guard lock(mu_);
    if (auto s = Step(); !s.ok()) return s;
    auto s = target()->ReopenWritableFile(fname, o, result, dbg);
    if (!s.ok()) return s;
    std::error_code ec;
    const std::uint64_t size = std::filesystem::file_size(path, ec);
    auto it = files_.find(path);
    if (it == files_.end()) {
      files_[path] = FileState{size, size, true, {}};
    } else {
      it->second.size = size;
    }
    *result = std::make_unique<File>(this, path, std::move(*result));
    return s;
  }

  rocksdb::IOStatus ReuseWritableFile(const std::string& fname,
                                      const std::string& old_fname,
                                      const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override {
    auto s = RenameFile(old_fname, fname, rocksdb::IOOptions(), dbg);
    if (!s.ok()) return s;
    return NewWritableFile(fname, o, result, dbg);
  }

  rocksdb::IOStatus NewRandomRWFile(const std::string& fname,
                                    const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    const std::string path = Normal(fname);
    if (!Tracked(path)) return target()->NewRandomRWFile(fname, o, result, dbg);
    std::lock_guard lock(mu_);
    if (auto s = Step(); !s.ok()) return s;
    std::error_code ec;
    const bool existed = std::filesystem::exists(path, ec);
    const bool was_durable = EntryDurable(path);
    auto s = target()->NewRandomRWFile(fname, o, result, dbg);
    if (!s.ok()) return s;
    if (!files_.contains(path)) {
      const std::uint64_t size = existed ? std::filesystem::file_size(path, ec) : 0;
      files_[path] = FileState{size, size, was_durable, {}};
    }
    *result = std::make_unique<RwFile>(this, path, std::move(*result));
    return s;
  }

  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& io,
                                 std::unique_ptr<rocksdb::FSDirectory>* result,
                                 rocksdb::IODebugContext* dbg) override {
    auto s = target()->NewDirectory(name, io, result, dbg);
    if (s.ok())
      *result = std::make_unique<Directory>(this, Normal(name), std::move(*result));
    return s;
  }

  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& o,
                               rocksdb::IODebugContext* dbg) override {
    const std::string from = Normal(src), to = Normal(dst);
    if (!Tracked(from) && !Tracked(to)) return target()->RenameFile(src, dst, o, dbg);
    std::lock_guard lock(mu_);
    if (auto s = Step(); !s.ok()) return s;
    if (!renamed_.contains(to)) {
      Renamed r;
      if (EntryDurable(to)) r.old_target = DurableBytes(to);
      if (EntryDurable(from)) r.old_source = std::pair{from, DurableBytes(from)};
      renamed_[to] = std::move(r);
    }
    auto s = target()->RenameFile(src, dst, o, dbg);
    if (!s.ok()) return s;
    FileState st;
    if (auto it = files_.find(from); it != files_.end()) {
      st = it->second;
      files_.erase(it);
    } else {
      std::error_code ec;
      st.size = st.synced = std::filesystem::file_size(to, ec);
    }
    st.entry_durable = false;
    files_[to] = st;
    return s;
  }

  rocksdb::IOStatus DeleteFile(const std::string& fname, const rocksdb::IOOptions& o,
                               rocksdb::IODebugContext* dbg) override {
    const std::string path = Normal(fname);
    if (!Tracked(path)) return target()->DeleteFile(fname, o, dbg);
    std::lock_guard lock(mu_);
    if (auto s = Step(); !s.ok()) return s;
    std::error_code ec;
    if (EntryDurable(path) && std::filesystem::exists(path, ec)) {
      // The name survives a power loss until the directory is fsynced: keep the file.
      auto it = files_.find(path);
      const std::uint64_t synced =
          it != files_.end() ? it->second.synced : std::filesystem::file_size(path, ec);
      const std::string grave = graveyard_ + "/" + std::to_string(++graves_made_);
      std::filesystem::rename(path, grave, ec);
      if (ec)
        return rocksdb::IOStatus::IOError("SimDisk: cannot bury " + path, ec.message());
      graves_.push_back(Grave{path, grave, synced});
      files_.erase(path);
      return rocksdb::IOStatus::OK();
    }
    files_.erase(path);
    return target()->DeleteFile(fname, o, dbg);
  }

  rocksdb::IOStatus Truncate(const std::string& fname, size_t size,
                             const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* dbg) override {
    const std::string path = Normal(fname);
    if (!Tracked(path)) return target()->Truncate(fname, size, o, dbg);
    std::lock_guard lock(mu_);
    if (auto s = Step(); !s.ok()) return s;
    auto s = target()->Truncate(fname, size, o, dbg);
    if (s.ok()) Truncated(path, size);
    return s;
  }

 private:
  struct FileState {
    std::uint64_t size = 0;    // bytes written
    std::uint64_t synced = 0;  // bytes durable
    bool entry_durable = false;
    // Durable bytes overwritten since the last sync: {offset, old bytes}, in order.
    std::vector<std::pair<std::uint64_t, std::string>> undo;
  };
  struct Renamed {
    std::optional<std::string> old_target;  // what the target held durably, if anything
    std::optional<std::pair<std::string, std::string>> old_source;  // path, bytes
  };
  struct Grave {
    std::string path, grave;
    std::uint64_t synced = 0;
  };

  class File : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(SimDisk* disk, std::string path, std::unique_ptr<rocksdb::FSWritableFile> f)
        : FSWritableFileOwnerWrapper(std::move(f)),
          disk_(disk),
          path_(std::move(path)),
          wal_(path_.ends_with(".log")) {}

    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* dbg) override {
      return disk_->Write(path_, wal_, data, std::nullopt, [&](const rocksdb::Slice& d) {
        return target()->Append(d, o, dbg);
      });
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                             const rocksdb::DataVerificationInfo&,
                             rocksdb::IODebugContext* dbg) override {
      // The checksum in the verification info would not match a partial write.
      return Append(data, o, dbg);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                       const rocksdb::IOOptions& o,
                                       rocksdb::IODebugContext* dbg) override {
      return disk_->Write(path_, wal_, data, offset, [&](const rocksdb::Slice& d) {
        return target()->PositionedAppend(d, offset, o, dbg);
      });
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                       const rocksdb::IOOptions& o,
                                       const rocksdb::DataVerificationInfo&,
                                       rocksdb::IODebugContext* dbg) override {
      return PositionedAppend(data, offset, o, dbg);
    }
    rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& o,
                               rocksdb::IODebugContext* dbg) override {
      std::lock_guard lock(disk_->mu_);
      if (auto s = disk_->Step(); !s.ok()) return s;
      auto s = target()->Truncate(size, o, dbg);
      if (s.ok()) disk_->Truncated(path_, size);
      return s;
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& o,
                           rocksdb::IODebugContext* dbg) override {
      return disk_->SyncFile(path_, wal_, [&] { return target()->Sync(o, dbg); });
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o,
                            rocksdb::IODebugContext* dbg) override {
      return disk_->SyncFile(path_, wal_, [&] { return target()->Fsync(o, dbg); });
    }
    rocksdb::IOStatus RangeSync(uint64_t, uint64_t, const rocksdb::IOOptions&,
                                rocksdb::IODebugContext*) override {
      return rocksdb::IOStatus::OK();  // sync_file_range promises nothing durable
    }
    // No preallocation (a hint only): on tmpfs it would zero ~70 MB per WAL file.
    void PrepareWrite(size_t, size_t, const rocksdb::IOOptions&,
                      rocksdb::IODebugContext*) override {}
    rocksdb::IOStatus Allocate(uint64_t, uint64_t, const rocksdb::IOOptions&,
                               rocksdb::IODebugContext*) override {
      return rocksdb::IOStatus::OK();
    }

   private:
    SimDisk* disk_;
    std::string path_;
    bool wal_;
  };

  // A file written in place (RocksDB's RandomRWFile).
  class RwFile : public rocksdb::FSRandomRWFileOwnerWrapper {
   public:
    RwFile(SimDisk* disk, std::string path, std::unique_ptr<rocksdb::FSRandomRWFile> f)
        : FSRandomRWFileOwnerWrapper(std::move(f)), disk_(disk), path_(std::move(path)) {}
    rocksdb::IOStatus Write(uint64_t offset, const rocksdb::Slice& data,
                            const rocksdb::IOOptions& o,
                            rocksdb::IODebugContext* dbg) override {
      disk_->RememberOverwrite(path_, offset, data.size());
      return disk_->Write(path_, false, data, offset, [&](const rocksdb::Slice& d) {
        return target()->Write(offset, d, o, dbg);
      });
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& o,
                           rocksdb::IODebugContext* dbg) override {
      return disk_->SyncFile(path_, false, [&] { return target()->Sync(o, dbg); });
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o,
                            rocksdb::IODebugContext* dbg) override {
      return disk_->SyncFile(path_, false, [&] { return target()->Fsync(o, dbg); });
    }

   private:
    SimDisk* disk_;
    std::string path_;
  };

  class Directory : public rocksdb::FSDirectoryWrapper {
   public:
    Directory(SimDisk* disk, std::string path, std::unique_ptr<rocksdb::FSDirectory> d)
        : FSDirectoryWrapper(std::move(d)), disk_(disk), path_(std::move(path)) {}
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o,
                            rocksdb::IODebugContext* dbg) override {
      return disk_->SyncDir(path_, [&] { return FSDirectoryWrapper::Fsync(o, dbg); });
    }
    rocksdb::IOStatus FsyncWithDirOptions(const rocksdb::IOOptions& o,
                                          rocksdb::IODebugContext* dbg,
                                          const rocksdb::DirFsyncOptions&) override {
      return Fsync(o, dbg);  // always the whole directory
    }

   private:
    SimDisk* disk_;
    std::string path_;
  };

  static std::string Normal(const std::string& p) {
    std::string s = std::filesystem::path(p).lexically_normal().string();
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    return s;
  }
  static std::string Parent(const std::string& p) {
    return std::filesystem::path(p).parent_path().string();
  }
  bool Tracked(const std::string& path) const {
    return path.size() > root_.size() && path.compare(0, root_.size(), root_) == 0 &&
           path[root_.size()] == '/';
  }

  // REQUIRES mu_. The crash point: OK, or the IOError of a stopped machine.
  rocksdb::IOStatus Step() {
    if (crashed_) return rocksdb::IOStatus::IOError("SimDisk: simulated power loss");
    ++ops_;
    if (crash_at_ != 0 && ops_ >= crash_at_) {
      crashed_ = true;
      return rocksdb::IOStatus::IOError("SimDisk: simulated power loss");
    }
    return rocksdb::IOStatus::OK();
  }

  // REQUIRES mu_.
  bool EntryDurable(const std::string& path) const {
    auto it = files_.find(path);
    if (it != files_.end()) return it->second.entry_durable;
    std::error_code ec;
    return std::filesystem::exists(path, ec);  // there before we saw it
  }
  // REQUIRES mu_. The bytes of `path` that survive a power loss now.
  std::string DurableBytes(const std::string& path) const {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
    auto it = files_.find(path);
    if (it != files_.end() && bytes.size() > it->second.synced)
      bytes.resize(it->second.synced);
    return bytes;
  }
  static void WriteFile(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  // REQUIRES mu_.
  void Truncated(const std::string& path, std::uint64_t size) {
    auto it = files_.find(path);
    if (it == files_.end()) return;
    it->second.size = size;
    it->second.synced = std::min(it->second.synced, size);
  }

  rocksdb::IOStatus Write(
      const std::string& path, bool wal, const rocksdb::Slice& data,
      std::optional<std::uint64_t> offset,
      const std::function<rocksdb::IOStatus(const rocksdb::Slice&)>& write) {
    std::lock_guard lock(mu_);
    if (auto s = Step(); !s.ok()) return s;
    if (wal && fail_wal_appends_ != 0) {
      if (fail_wal_appends_ > 0) --fail_wal_appends_;
      ++injected_;
      return rocksdb::IOStatus::IOError("SimDisk: injected WAL append failure");
    }
    rocksdb::Slice part = data;
    bool full = false;
    if (space_ && data.size() > *space_) {
      part = rocksdb::Slice(data.data(), *space_);
      full = true;
    }
    rocksdb::IOStatus s =
        part.size() > 0 || !full ? write(part) : rocksdb::IOStatus::OK();
    if (s.ok()) {
      auto it = files_.find(path);
      if (it != files_.end()) {
        const std::uint64_t end = (offset ? *offset : it->second.size) + part.size();
        it->second.size = std::max(it->second.size, end);
      }
      if (space_) *space_ -= part.size();
    }
    if (s.ok() && full) {
      ++injected_;
      return rocksdb::IOStatus::NoSpace("SimDisk: no space left on device");
    }
    return s;
  }

  // Keeps the durable bytes [offset, offset + n) that a write in place is about to
  // replace, so that PowerLoss can put them back.
  void RememberOverwrite(const std::string& path, std::uint64_t offset, std::size_t n) {
    std::lock_guard lock(mu_);
    if (crashed_) return;
    auto it = files_.find(path);
    if (it == files_.end() || offset >= it->second.synced) return;
    const std::uint64_t len = std::min<std::uint64_t>(n, it->second.synced - offset);
    std::ifstream in(path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset));
    std::string old(len, '\0');
    in.read(old.data(), static_cast<std::streamsize>(len));
    old.resize(static_cast<std::size_t>(in.gcount()));
    it->second.undo.emplace_back(offset, std::move(old));
  }

  rocksdb::IOStatus SyncFile(const std::string& path, bool wal,
                             const std::function<rocksdb::IOStatus()>& sync) {
    std::lock_guard lock(mu_);
    if (auto s = Step(); !s.ok()) return s;
    if (wal && fail_wal_syncs_ != 0) {
      if (fail_wal_syncs_ > 0) --fail_wal_syncs_;
      ++injected_;
      return rocksdb::IOStatus::IOError("SimDisk: injected WAL sync failure");
    }
    auto s = sync();
    if (s.ok()) {
      auto it = files_.find(path);
      if (it != files_.end()) {
        it->second.synced = it->second.size;
        it->second.undo.clear();
      }
    }
    return s;
  }

  rocksdb::IOStatus SyncDir(const std::string& dir,
                            const std::function<rocksdb::IOStatus()>& sync) {
    std::lock_guard lock(mu_);
    const bool tracked = dir == root_ || Tracked(dir);
    if (tracked) {
      if (auto s = Step(); !s.ok()) return s;
    }
    auto s = sync();
    if (!s.ok() || !tracked) return s;
    for (auto& [path, st] : files_) {
      if (Parent(path) == dir) st.entry_durable = true;
    }
    std::erase_if(renamed_, [&](const auto& r) { return Parent(r.first) == dir; });
    std::erase_if(graves_, [&](const Grave& g) {
      if (Parent(g.path) != dir) return false;
      std::error_code ec;
      std::filesystem::remove(g.grave, ec);
      return true;
    });
    return s;
  }

  const std::string root_, graveyard_;
  mutable std::mutex mu_;
  bool crashed_ = false;
  std::uint64_t crash_at_ = 0, ops_ = 0, injected_ = 0, graves_made_ = 0;
  int fail_wal_appends_ = 0, fail_wal_syncs_ = 0;
  std::optional<std::uint64_t> space_;
  std::map<std::string, FileState> files_;
  std::map<std::string, Renamed> renamed_;
  std::vector<Grave> graves_;
};

// The default file system without WAL preallocation (a performance hint that RocksDB
// ignores when it fails): on tmpfs, preallocating zeroes ~70 MB per WAL file, which
// would dominate tests that open thousands of ledgers in /dev/shm. Nothing else is
// changed: every call goes to the default FileSystem.
class NoPreallocationFs : public rocksdb::FileSystemWrapper {
 public:
  NoPreallocationFs() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "NoPreallocationFs"; }
  rocksdb::IOStatus NewWritableFile(const std::string& fname,
                                    const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    auto s = target()->NewWritableFile(fname, o, result, dbg);
    if (s.ok()) *result = std::make_unique<File>(std::move(*result));
    return s;
  }
  // One Env for the whole test process.
  static rocksdb::Env* Env() {
    static const std::unique_ptr<rocksdb::Env> env =
        rocksdb::NewCompositeEnv(std::make_shared<NoPreallocationFs>());
    return env.get();
  }

 private:
  class File : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    explicit File(std::unique_ptr<rocksdb::FSWritableFile> f)
        : FSWritableFileOwnerWrapper(std::move(f)) {}
    void PrepareWrite(size_t, size_t, const rocksdb::IOOptions&,
                      rocksdb::IODebugContext*) override {}
    rocksdb::IOStatus Allocate(uint64_t, uint64_t, const rocksdb::IOOptions&,
                               rocksdb::IODebugContext*) override {
      return rocksdb::IOStatus::OK();
    }
  };
};

}  // namespace patledger::reliability
