// index/user_flags.h: per-user flags read on the auth path (does the token's owner
// exist, is it blocked, is it an admin for sudo scopes?), indexed by dense user id.
//
// Layout: a fixed directory of kChunks atomic chunk pointers; chunk c holds the flags
// of users c * kUsersPerChunk .. (c + 1) * kUsersPerChunk - 1, one atomic byte each.
// Chunks are allocated on demand and never move or shrink, so the structure grows
// without copying and without any reclamation. Memory: 512 KiB directory + 4 KiB per
// 4096 users touched (~1 B per user when ids are dense).
//
// One byte per user, not a word, because Get sits on the auth path right after the
// index miss, and depends on it: at 200k users the flags are 200 KB, which stay in a
// core's L2 while lookups stream the 1 GB index through it; as 4-byte words (800 KB)
// they were evicted between uses and each auth paid a second miss, ~40-100 ns at 10M
// tokens (docs/PERFORMANCE.md section 2). The directory entries in use (8 B per 4096
// users) stay in L1.
//
// Thread safety
// -------------
// Get: any number of threads, wait-free, acquire loads only. Set: REQUIRES one writer
// thread at a time (serialized by the caller).
//  (1) A chunk is fully zeroed before the writer publishes its pointer with a release
//      store; Get acquire-loads the pointer before reading the chunk.
//  (2) Set stores the flags word with seq_cst, so once Set returns every Get that
//      starts afterwards sees the new flags (e.g. "blocked" takes effect at once).
//  (3) Chunks are freed only by the destructor (REQUIRES: no concurrent readers).

#ifndef PATLEDGER_INDEX_USER_FLAGS_H_
#define PATLEDGER_INDEX_USER_FLAGS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace patledger::index {

class UserFlags {
 public:
  static constexpr std::uint32_t kExists = 1, kBlocked = 2, kAdmin = 4;
  static constexpr std::uint32_t kAllFlags = kExists | kBlocked | kAdmin;

  static constexpr std::size_t kUsersPerChunk = 4096;
  static constexpr std::size_t kChunks = 65536;
  // Valid user ids are 1..kMaxUserId (2^28 - 1 = 268,435,455); 0 means "no user".
  static constexpr std::uint64_t kMaxUserId = kUsersPerChunk * kChunks - 1;

  UserFlags();
  ~UserFlags();  // REQUIRES: no concurrent readers.
  UserFlags(const UserFlags&) = delete;
  UserFlags& operator=(const UserFlags&) = delete;

  // Reader: the flags last Set for user_id, or 0 for unknown or out-of-range ids.
  std::uint32_t Get(std::uint64_t user_id) const;
  // Writer: returns false (nothing changed) if user_id is 0 or > kMaxUserId, or if
  // flags has a bit outside kAllFlags.
  [[nodiscard]] bool Set(std::uint64_t user_id, std::uint32_t flags);

  // Bytes held (directory plus allocated chunks). Writer thread only.
  std::size_t MemoryBytes() const;

 private:
  struct Chunk {
    std::atomic<std::uint8_t> flags[kUsersPerChunk];
  };
  static_assert(sizeof(Chunk) == kUsersPerChunk, "1 byte per user: cache-resident");
  static_assert(kAllFlags <= 0xFF, "every flag fits the per-user byte");
  static_assert(std::atomic<std::uint8_t>::is_always_lock_free,
                "readers must never take a lock");
  static_assert((kUsersPerChunk & (kUsersPerChunk - 1)) == 0, "id split by shift/mask");

  // Heap-allocated: 512 KiB would be a hazard inline (e.g. a UserFlags on the stack).
  std::unique_ptr<std::atomic<Chunk*>[]> directory_;
  std::size_t chunks_allocated_ = 0;  // writer-only
};

}  // namespace patledger::index

#endif  // PATLEDGER_INDEX_USER_FLAGS_H_
