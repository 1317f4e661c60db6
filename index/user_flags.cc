#include "index/user_flags.h"

#include <memory>

namespace patledger::index {

UserFlags::UserFlags() : directory_(new std::atomic<Chunk*>[kChunks]()) {}

UserFlags::~UserFlags() {
  for (std::size_t c = 0; c < kChunks; ++c) {
    delete directory_[c].load(std::memory_order_relaxed);  // no readers remain
  }
}

std::uint32_t UserFlags::Get(std::uint64_t user_id) const {
  if (user_id > kMaxUserId) return 0;
  // acquire: pairs with Set's release publication of a zeroed chunk (invariant 1).
  const Chunk* chunk =
      directory_[user_id / kUsersPerChunk].load(std::memory_order_acquire);
  if (chunk == nullptr) return 0;
  // acquire: sees Set's seq_cst store once Set has returned (invariant 2).
  return chunk->flags[user_id % kUsersPerChunk].load(std::memory_order_acquire);
}

bool UserFlags::Set(std::uint64_t user_id, std::uint32_t flags) {
  if (user_id == 0 || user_id > kMaxUserId || (flags & ~kAllFlags) != 0) return false;
  std::atomic<Chunk*>& entry = directory_[user_id / kUsersPerChunk];
  Chunk* chunk = entry.load(std::memory_order_relaxed);  // relaxed: writer-owned
  if (chunk == nullptr) {
    chunk = new Chunk();  // value-initialized: every user's flags are 0
    // release: readers that see the pointer see the zeroed chunk (invariant 1).
    entry.store(chunk, std::memory_order_release);
    ++chunks_allocated_;
  }
  // seq_cst: globally visible before Set returns (invariant 2).
  chunk->flags[user_id % kUsersPerChunk].store(static_cast<std::uint8_t>(flags),
                                               std::memory_order_seq_cst);
  return true;
}

std::size_t UserFlags::MemoryBytes() const {
  return kChunks * sizeof(std::atomic<Chunk*>) + chunks_allocated_ * sizeof(Chunk);
}

}  // namespace patledger::index
