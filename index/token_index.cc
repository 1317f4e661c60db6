#include "index/token_index.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>

#include "index/epoch.h"

namespace patledger::index {
namespace {

constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

// Smallest power-of-two capacity (>= kMinCapacity) whose max load holds `tokens`.
std::size_t CapacityFor(std::size_t tokens) {
  constexpr std::size_t kMaxCapacity = std::numeric_limits<std::size_t>::max() / 256;
  std::size_t capacity = TokenIndex::kMinCapacity;
  while (TokenIndex::MaxLoad(capacity) < tokens) {
    if (capacity >= kMaxCapacity) throw std::bad_alloc();
    capacity *= 2;
  }
  return capacity;
}

// Constant-time equality of two digests: all 32 bytes are always combined; the only
// branch is on the final result (see the header on why that leaks nothing usable).
inline bool SameKey(const std::uint64_t (&a)[4], const std::uint64_t (&b)[4]) {
  return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

}  // namespace

TokenIndex::Key TokenIndex::LoadKey(const TokenDigest& digest) {
  Key key;
  static_assert(sizeof(key.w) == std::tuple_size_v<TokenDigest>);
  std::memcpy(key.w, digest.data(), sizeof(key.w));
  return key;
}

TokenIndex::Table* TokenIndex::NewTable(std::size_t capacity) {
  const std::size_t bytes = capacity * sizeof(Slot);
  auto table =
      std::make_unique<Table>(Table{capacity - 1, nullptr, bytes + sizeof(Table)});
  if (bytes < kHugePageBytes) {
    void* memory = std::aligned_alloc(alignof(Slot), bytes);  // bytes: a multiple of 64
    if (memory == nullptr) throw std::bad_alloc();  // the index is left unchanged
    table->slots = static_cast<Slot*>(memory);
    // Value-initialized: all zero, so every slot is empty.
    std::uninitialized_value_construct_n(table->slots, capacity);
    return table.release();
  }
  // Big tables: mapped anonymous memory, zero — every slot empty — without writing it.
  // (Writing it took 3.6 s for the 1 GiB table of 10M tokens on this VM, before
  // replay could start reading: docs/PERFORMANCE.md §3. Untouched, the kernel zeroes
  // each page at its first store, or Prefault does it while replay waits.) Aligned to
  // 2 MiB, on transparent huge pages: one TLB entry per 2 MiB saves a page walk (a
  // second memory miss) on most lookups.
  void* mapped = mmap(nullptr, bytes + kHugePageBytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) throw std::bad_alloc();  // the index is left unchanged
  const auto start = reinterpret_cast<std::uintptr_t>(mapped);
  const std::uintptr_t aligned = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  if (aligned > start) munmap(mapped, aligned - start);
  const std::size_t tail = start + bytes + kHugePageBytes - (aligned + bytes);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + bytes), tail);
  madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);  // a hint only
  static_assert(std::is_aggregate_v<Slot> && std::is_trivially_destructible_v<Slot>,
                "implicit-lifetime: its objects exist in mapped zero memory");
  table->slots = reinterpret_cast<Slot*>(aligned);
  return table.release();
}

void TokenIndex::FreeTable(Table* table) {
  const std::size_t bytes = (table->mask + 1) * sizeof(Slot);
  if (bytes < kHugePageBytes) {
    std::free(table->slots);  // Slot is trivially destructible
  } else {
    munmap(table->slots, bytes);
  }
  delete table;
}

bool TokenIndex::Prefault(std::size_t bytes) {
  // Held through the madvise: the table cannot be freed under it (GrowTo).
  std::lock_guard lock(prefault_mu_);
  // acquire: a fresh table's mask and slots, as a reader would see them.
  const Table* t = table_.load(std::memory_order_acquire);
  if (t != prefaulted_table_) {
    prefaulted_table_ = t;
    prefaulted_bytes_ = 0;
  }
  const std::size_t size = (t->mask + 1) * sizeof(Slot);
  if (size < kHugePageBytes || prefaulted_bytes_ >= size) return false;
  const std::size_t n = std::min(std::max(bytes, kHugePageBytes), size - prefaulted_bytes_);
  char* from = reinterpret_cast<char*>(t->slots) + prefaulted_bytes_;
  // Populates missing pages writable and zero; pages already there are left as they
  // are, so it never races with the slots the writer stores meanwhile.
  if (madvise(from, n, MADV_POPULATE_WRITE) != 0) {
    prefaulted_bytes_ = size;  // EINVAL before Linux 5.14: give up, inserts fault
    return false;
  }
  prefaulted_bytes_ += n;
  return prefaulted_bytes_ < size;
}

TokenIndex::TokenIndex(std::size_t expected_tokens)
    : table_(NewTable(CapacityFor(expected_tokens))) {
  const Table* t = table_.load(std::memory_order_relaxed);
  capacity_.store(t->mask + 1, std::memory_order_relaxed);
  memory_bytes_.store(t->bytes, std::memory_order_relaxed);
}

TokenIndex::~TokenIndex() { FreeTable(table_.load(std::memory_order_relaxed)); }

bool TokenIndex::Lookup(const TokenDigest& digest, TokenEntry* out) const {
  const Key key = LoadKey(digest);
  epoch::ReadSection section;  // keeps the table we load alive (invariant 5)
  // acquire: pairs with the release that published this table, so the rehashed
  // slots (written relaxed before it) are visible (invariant 4).
  const Table* t = table_.load(std::memory_order_acquire);
  for (std::size_t i = key.w[0] & t->mask;; i = (i + 1) & t->mask) {
    const Slot& slot = t->slots[i];
    // acquire: pairs with Insert's release, so the fields below are complete
    // (invariant 1), and sees Revoke's seq_cst store once it has returned (3).
    const std::uint32_t state = slot.state.load(std::memory_order_acquire);
    if (state == 0) return false;  // end of the cluster: never inserted
    if (SameKey(slot.key, key.w)) {
      out->token_id = slot.token_id;
      out->user_id = slot.user_id;
      out->scopes = slot.scopes;
      out->expires_day = slot.expires_day;
      out->revoked = (state & kRevoked) != 0;
      return true;
    }
  }
}

void TokenIndex::Prefetch(const TokenDigest& digest) const {
  std::uint64_t word0;
  std::memcpy(&word0, digest.data(), sizeof(word0));
  epoch::ReadSection section;
  // acquire: we dereference the table header (invariant 4).
  const Table* t = table_.load(std::memory_order_acquire);
  __builtin_prefetch(&t->slots[word0 & t->mask]);  // a hint: never faults
}

void TokenIndex::PrefetchForWrite(const TokenDigest& digest) const {
  std::uint64_t word0;
  std::memcpy(&word0, digest.data(), sizeof(word0));
  const Table* t = table_.load(std::memory_order_relaxed);  // relaxed: writer-owned
  __builtin_prefetch(&t->slots[word0 & t->mask], /*rw=*/1);  // a hint: never faults
}

TokenIndex::Slot* TokenIndex::FindForWrite(const Table& t, const Key& key,
                                           Slot** empty) const {
  for (std::size_t i = key.w[0] & t.mask;; i = (i + 1) & t.mask) {
    Slot& slot = t.slots[i];
    // relaxed: only this (writer) thread ever stores state.
    if (slot.state.load(std::memory_order_relaxed) == 0) {
      *empty = &slot;
      return nullptr;
    }
    if (SameKey(slot.key, key.w)) return &slot;
  }
}

bool TokenIndex::Insert(const TokenDigest& digest, const TokenEntry& entry) {
  const Key key = LoadKey(digest);
  // relaxed: only the writer stores table_.
  Table* t = table_.load(std::memory_order_relaxed);
  Slot* empty = nullptr;
  if (FindForWrite(*t, key, &empty) != nullptr) return false;
  const std::size_t n = size_.load(std::memory_order_relaxed);
  if (n + 1 > MaxLoad(t->mask + 1)) {
    GrowTo(2 * (t->mask + 1));
    t = table_.load(std::memory_order_relaxed);
    FindForWrite(*t, key, &empty);
  }
  std::memcpy(empty->key, key.w, sizeof(key.w));
  empty->token_id = entry.token_id;
  empty->user_id = entry.user_id;
  empty->scopes = entry.scopes;
  empty->expires_day = entry.expires_day;
  // release: publishes the fields written above to readers that acquire state.
  empty->state.store(kPublished | (entry.revoked ? kRevoked : 0),
                     std::memory_order_release);
  size_.store(n + 1, std::memory_order_relaxed);  // statistics only
  return true;
}

bool TokenIndex::Revoke(const TokenDigest& digest) {
  const Key key = LoadKey(digest);
  Table* t = table_.load(std::memory_order_relaxed);  // relaxed: writer-owned
  Slot* empty = nullptr;
  Slot* slot = FindForWrite(*t, key, &empty);
  if (slot == nullptr) return false;
  // seq_cst: a full barrier after the store (xchg on x86), so the store is globally
  // visible before Revoke returns (invariant 3).
  slot->state.store(kPublished | kRevoked, std::memory_order_seq_cst);
  return true;
}

void TokenIndex::Reserve(std::size_t tokens) {
  const std::size_t capacity = CapacityFor(tokens);
  if (capacity > capacity_.load(std::memory_order_relaxed)) GrowTo(capacity);
}

void TokenIndex::GrowTo(std::size_t capacity) {
  Table* old = table_.load(std::memory_order_relaxed);  // relaxed: writer-owned
  Table* fresh = NewTable(capacity);
  for (std::size_t j = 0; j <= old->mask; ++j) {
    const Slot& from = old->slots[j];
    // relaxed: only this thread writes state.
    const std::uint32_t state = from.state.load(std::memory_order_relaxed);
    if (state == 0) continue;
    std::size_t i = from.key[0] & fresh->mask;
    while (fresh->slots[i].state.load(std::memory_order_relaxed) != 0) {
      i = (i + 1) & fresh->mask;
    }
    Slot& to = fresh->slots[i];
    std::memcpy(to.key, from.key, sizeof(to.key));
    to.token_id = from.token_id;
    to.user_id = from.user_id;
    to.scopes = from.scopes;
    to.expires_day = from.expires_day;
    // relaxed: no reader can see `fresh` until the release store of table_ below.
    to.state.store(state, std::memory_order_relaxed);
  }
  memory_bytes_.store(old->bytes + fresh->bytes, std::memory_order_relaxed);
  // release: publishes every slot written above to readers that acquire table_.
  table_.store(fresh, std::memory_order_release);
  capacity_.store(capacity, std::memory_order_relaxed);
  epoch::Synchronize();  // invariant 5: no reader still holds `old`
  {
    std::lock_guard lock(prefault_mu_);  // nor a Prefault step
    FreeTable(old);
  }
  memory_bytes_.store(fresh->bytes, std::memory_order_relaxed);
}

}  // namespace patledger::index
