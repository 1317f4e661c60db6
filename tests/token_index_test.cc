// Specification of index/: TokenIndex, UserFlags and epoch reclamation.
// Concurrent cases count violations on worker threads (Boost.Test assertions are not
// thread-safe) and assert on the main thread; none asserts on timing.

#include "index/token_index.h"

#include <atomic>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "index/epoch.h"
#include "index/user_flags.h"

namespace patledger::index {
namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t SplitMix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Token n's digest: random-looking, distinct for distinct n (word 0 is a bijection).
TokenDigest Digest(std::uint64_t n) {
  TokenDigest d;
  for (std::uint64_t w = 0; w < 4; ++w) {
    const std::uint64_t v = SplitMix(n + (w << 56));
    for (int b = 0; b < 8; ++b) d[w * 8 + b] = static_cast<std::uint8_t>(v >> (8 * b));
  }
  return d;
}

TokenEntry Entry(std::uint64_t n) {
  return TokenEntry{.token_id = n,
                    .user_id = n % 1000 + 1,
                    .scopes = static_cast<std::uint32_t>(n * 7),
                    .expires_day = static_cast<std::int32_t>(19000 + n % 3000),
                    .revoked = false};
}

bool SameEntry(const TokenEntry& a, const TokenEntry& b) {
  return a.token_id == b.token_id && a.user_id == b.user_id && a.scopes == b.scopes &&
         a.expires_day == b.expires_day && a.revoked == b.revoked;
}

// Runs `readers` copies of read(rng_seed) while write() runs on this thread; read is
// called in a loop until write returns. Returns the number of reads performed.
template <typename Read, typename Write>
std::uint64_t RunReadersDuring(int readers, Read read, Write write) {
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> reads{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&, r] {
      std::uint64_t rng = SplitMix(r + 1), n = 0;
      while (!done.load(std::memory_order_acquire)) {
        rng = SplitMix(rng);
        read(rng);
        ++n;
      }
      // On a loaded machine the writer may finish before a reader is scheduled: every
      // reader also checks the final state, so each test reads for sure.
      for (int i = 0; i < 1000; ++i) {
        rng = SplitMix(rng);
        read(rng);
        ++n;
      }
      reads.fetch_add(n);
    });
  }
  write();
  done.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  return reads.load();
}

struct IndexFixture {
  TokenIndex index;
  TokenEntry found;

  bool Insert(std::uint64_t n) { return index.Insert(Digest(n), Entry(n)); }
  bool Find(std::uint64_t n) { return index.Lookup(Digest(n), &found); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(token_index)

BOOST_FIXTURE_TEST_CASE(inserted_token_is_found_with_its_entry, IndexFixture) {
  BOOST_TEST(Insert(42));
  BOOST_TEST(Find(42));
  BOOST_TEST(SameEntry(found, Entry(42)));
  BOOST_TEST(index.size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(unknown_digest_misses, IndexFixture) {
  BOOST_TEST(!Find(1));
  for (std::uint64_t n = 0; n < 5; ++n) BOOST_TEST(Insert(n));
  BOOST_TEST(!Find(5));
  BOOST_TEST(!index.Lookup(TokenDigest{}, &found));
}

BOOST_FIXTURE_TEST_CASE(duplicate_insert_is_refused_and_keeps_first_entry, IndexFixture) {
  BOOST_TEST(Insert(7));
  BOOST_TEST(!index.Insert(Digest(7), Entry(8)));
  BOOST_TEST(Find(7));
  BOOST_TEST(SameEntry(found, Entry(7)));
  BOOST_TEST(index.size() == 1u);
}

BOOST_AUTO_TEST_CASE(digest_differing_in_any_one_byte_is_another_token) {
  for (std::size_t byte = 0; byte < 32; ++byte) {
    BOOST_TEST_CONTEXT("flipped byte " << byte) {
      IndexFixture f;
      TokenDigest other = Digest(1);
      other[byte] ^= 0x01;
      BOOST_TEST(f.Insert(1));
      BOOST_TEST(!f.index.Lookup(other, &f.found));
      BOOST_TEST(f.index.Insert(other, Entry(2)));
      BOOST_TEST(f.index.Lookup(other, &f.found));
      BOOST_TEST(f.found.token_id == 2u);
      BOOST_TEST(f.Find(1));
      BOOST_TEST(f.found.token_id == 1u);
    }
  }
}

BOOST_FIXTURE_TEST_CASE(digests_in_the_same_bucket_are_distinguished, IndexFixture) {
  // Same first 8 bytes => same home bucket at every capacity: one long probe chain.
  auto colliding = [](std::uint64_t n) {
    TokenDigest d = Digest(n);
    for (int b = 0; b < 8; ++b) d[b] = 0xAB;
    return d;
  };
  for (std::uint64_t n = 0; n < 40; ++n) BOOST_TEST(index.Insert(colliding(n), Entry(n)));
  for (std::uint64_t n = 0; n < 40; ++n) {
    BOOST_TEST(index.Lookup(colliding(n), &found));
    BOOST_TEST(found.token_id == n);
  }
  BOOST_TEST(!index.Lookup(colliding(40), &found));
  BOOST_TEST(!index.Insert(colliding(3), Entry(99)));
}

BOOST_FIXTURE_TEST_CASE(growth_from_minimum_capacity_keeps_every_entry, IndexFixture) {
  constexpr std::uint64_t kTokens = 200'000;
  BOOST_TEST(index.capacity() == TokenIndex::kMinCapacity);
  for (std::uint64_t n = 0; n < kTokens; ++n) BOOST_REQUIRE(Insert(n));
  BOOST_TEST(index.size() == kTokens);
  const std::size_t cap = index.capacity();
  BOOST_TEST((cap & (cap - 1)) == 0u, "capacity is a power of two");
  BOOST_TEST(kTokens <= TokenIndex::MaxLoad(cap), "load factor <= 3/4");
  BOOST_TEST(2 * kTokens > TokenIndex::MaxLoad(cap), "grew no further than needed");
  BOOST_TEST(index.MemoryBytes() < cap * 64 + 4096, "old tables were reclaimed");
  std::uint64_t wrong = 0;
  for (std::uint64_t n = 0; n < kTokens; ++n) {
    wrong += !(Find(n) && SameEntry(found, Entry(n)));
  }
  BOOST_TEST(wrong == 0u);
  BOOST_TEST(!Find(kTokens));
}

BOOST_FIXTURE_TEST_CASE(reserve_makes_room_without_further_growth, IndexFixture) {
  BOOST_TEST(Insert(0));
  index.Reserve(10'000);
  const std::size_t cap = index.capacity();
  BOOST_TEST(TokenIndex::MaxLoad(cap) >= 10'000u);
  BOOST_TEST(Find(0));
  for (std::uint64_t n = 1; n < 10'000; ++n) BOOST_REQUIRE(Insert(n));
  BOOST_TEST(index.capacity() == cap);
  index.Reserve(10);  // never shrinks
  BOOST_TEST(index.capacity() == cap);
}

// A big table is mapped zero memory; Prefault faults it in 2 MiB steps (replay does it
// while it waits for the reader) without changing a slot, while inserts go on.
BOOST_AUTO_TEST_CASE(prefault_walks_a_big_table_once_and_changes_no_slot) {
  TokenIndex index(80000);  // 131,072 slots of 64 bytes: 8 MiB
  BOOST_REQUIRE_EQUAL(index.capacity(), 131072u);
  std::uint64_t next = 1;
  int calls = 0;
  bool more = true;
  while (more) {
    for (int i = 0; i < 1000; ++i, ++next) BOOST_REQUIRE(index.Insert(Digest(next), Entry(next)));
    more = index.Prefault(std::size_t{2} << 20);
    ++calls;
  }
  BOOST_TEST(calls == 4);                                // 8 MiB in 2 MiB steps
  BOOST_TEST(!index.Prefault(std::size_t{2} << 20));     // done: stays done
  for (std::uint64_t n = 1; n < next; ++n) {
    TokenEntry e;
    BOOST_REQUIRE(index.Lookup(Digest(n), &e));
    BOOST_REQUIRE(SameEntry(e, Entry(n)));
  }
  TokenEntry e;
  BOOST_TEST(!index.Lookup(Digest(next), &e));
  // A table that grows is walked again from its start.
  index.Reserve(200000);
  BOOST_TEST(index.Prefault(std::size_t{2} << 20));
  TokenIndex small(100);  // under 2 MiB: allocated and zeroed, nothing to do
  BOOST_TEST(!small.Prefault(std::size_t{2} << 20));
}

// Replay runs Prefault on its own thread while the writer inserts; a growth frees the
// table Prefault may be walking. Under TSan this checks the cursor's locking too.
BOOST_AUTO_TEST_CASE(prefault_on_another_thread_while_the_writer_inserts_and_grows) {
  TokenIndex index(40000);  // 65,536 slots: 4 MiB, mapped; grows three times below
  BOOST_REQUIRE_EQUAL(index.capacity(), 65536u);
  std::atomic<bool> stop{false};
  std::atomic<int> steps{0};
  std::thread prefaulter([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      if (index.Prefault(std::size_t{2} << 20)) steps.fetch_add(1, std::memory_order_relaxed);
    }
  });
  constexpr std::uint64_t kTokens = 300000;
  for (std::uint64_t n = 1; n <= kTokens; ++n) BOOST_REQUIRE(index.Insert(Digest(n), Entry(n)));
  stop.store(true, std::memory_order_relaxed);
  prefaulter.join();
  BOOST_TEST(index.capacity() == 524288u);  // 32 MiB after the growths
  BOOST_TEST(steps.load() >= 1);            // the first step on a 4 MiB table has more
  BOOST_TEST(index.size() == kTokens);
  for (std::uint64_t n = 1; n <= kTokens; ++n) {
    TokenEntry e;
    BOOST_REQUIRE(index.Lookup(Digest(n), &e));
    BOOST_REQUIRE(SameEntry(e, Entry(n)));
  }
}

BOOST_FIXTURE_TEST_CASE(revoke_marks_the_token_and_keeps_its_entry, IndexFixture) {
  BOOST_TEST(Insert(1));
  BOOST_TEST(Insert(2));
  BOOST_TEST(index.Revoke(Digest(1)));
  BOOST_TEST(Find(1));
  BOOST_TEST(found.revoked);
  BOOST_TEST(found.token_id == 1u);
  BOOST_TEST(Find(2));
  BOOST_TEST(!found.revoked);
  BOOST_TEST(index.Revoke(Digest(1)), "revoking twice is fine");
  BOOST_TEST(!index.Revoke(Digest(3)), "absent token");
  BOOST_TEST(!Find(3), "revoke of an absent token inserts nothing");
}

BOOST_FIXTURE_TEST_CASE(revocation_survives_growth_and_revoked_inserts, IndexFixture) {
  TokenEntry pre_revoked = Entry(0);
  pre_revoked.revoked = true;
  BOOST_TEST(index.Insert(Digest(0), pre_revoked));
  BOOST_TEST(Insert(1));
  BOOST_TEST(index.Revoke(Digest(1)));
  for (std::uint64_t n = 2; n < 1000; ++n) BOOST_REQUIRE(Insert(n));
  BOOST_TEST((Find(0) && found.revoked));
  BOOST_TEST((Find(1) && found.revoked));
  BOOST_TEST((Find(2) && !found.revoked));
}

// Writer revokes token k (growing the table meanwhile by inserting others), then
// publishes "tokens < k+1 revoked". Readers look up a random published-revoked token.
BOOST_AUTO_TEST_CASE(revoked_token_fails_on_every_thread_after_revoke_returns) {
  constexpr std::uint64_t kTokens = 150'000, kFresh = 1'000'000;
  TokenIndex index;
  for (std::uint64_t n = 0; n < kTokens; ++n)
    BOOST_REQUIRE(index.Insert(Digest(n), Entry(n)));
  const std::size_t start_capacity = index.capacity();
  std::atomic<std::uint64_t> revoked{0}, violations{0};
  const std::uint64_t reads = RunReadersDuring(
      2,
      [&](std::uint64_t rng) {
        const std::uint64_t p = revoked.load(std::memory_order_acquire);
        if (p == 0) return;
        TokenEntry e;
        if (!index.Lookup(Digest(rng % p), &e) || !e.revoked) violations.fetch_add(1);
      },
      [&] {
        const auto deadline = Clock::now() + std::chrono::milliseconds(500);
        for (std::uint64_t k = 0; k < kTokens && Clock::now() < deadline; ++k) {
          if (!index.Revoke(Digest(k))) violations.fetch_add(1);
          revoked.store(k + 1, std::memory_order_release);
          if (!index.Insert(Digest(kFresh + k), Entry(kFresh + k)))
            violations.fetch_add(1);
        }
      });
  BOOST_TEST(violations.load() == 0u);
  BOOST_TEST(reads > 0u);
  BOOST_TEST_MESSAGE("revoked " << revoked.load() << ", reads " << reads << ", grew "
                                << (index.capacity() > start_capacity));
}

// Writer grows from the minimum table; readers check that every token published
// before their lookup began is found, intact, while tables are swapped and freed.
BOOST_AUTO_TEST_CASE(readers_never_miss_published_tokens_during_growth) {
  constexpr std::uint64_t kTokens = 300'000;
  TokenIndex index;
  std::atomic<std::uint64_t> published{0}, violations{0};
  const std::uint64_t reads = RunReadersDuring(
      2,
      [&](std::uint64_t rng) {
        const std::uint64_t p = published.load(std::memory_order_acquire);
        if (p == 0) return;
        const std::uint64_t n = rng % p;
        TokenEntry e;
        if (!index.Lookup(Digest(n), &e) || !SameEntry(e, Entry(n))) {
          violations.fetch_add(1);
        }
      },
      [&] {
        for (std::uint64_t n = 0; n < kTokens; ++n) {
          if (!index.Insert(Digest(n), Entry(n))) violations.fetch_add(1);
          published.store(n + 1, std::memory_order_release);
        }
      });
  BOOST_TEST(violations.load() == 0u);
  BOOST_TEST(reads > 0u);
  BOOST_TEST(index.size() == kTokens);
}

BOOST_AUTO_TEST_CASE(synchronize_waits_for_a_section_that_began_before_it) {
  std::atomic<bool> entered{false}, leaving{false};
  std::thread reader([&] {
    epoch::ReadSection outer;
    { epoch::ReadSection inner; }  // a nested exit must not end the outer section
    entered.store(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    leaving.store(true);
  });
  while (!entered.load()) std::this_thread::yield();
  epoch::Synchronize();
  BOOST_TEST(leaving.load(), "grace period ended before the section did");
  reader.join();
  BOOST_TEST_MESSAGE("membarrier: " << epoch::UsingMembarrier());
}

BOOST_AUTO_TEST_CASE(user_flags_set_get_and_limits) {
  UserFlags flags;
  BOOST_TEST(flags.Get(1) == 0u, "unknown user");
  BOOST_TEST(flags.Set(1, UserFlags::kExists | UserFlags::kAdmin));
  BOOST_TEST(flags.Get(1) == (UserFlags::kExists | UserFlags::kAdmin));
  BOOST_TEST(flags.Set(1, UserFlags::kExists | UserFlags::kBlocked));
  BOOST_TEST(flags.Get(1) == (UserFlags::kExists | UserFlags::kBlocked));
  BOOST_TEST(flags.Get(2) == 0u);
  BOOST_TEST(!flags.Set(0, UserFlags::kExists), "0 is not a user id");
  BOOST_TEST(flags.Set(UserFlags::kMaxUserId, UserFlags::kExists));
  BOOST_TEST(flags.Get(UserFlags::kMaxUserId) == UserFlags::kExists);
  BOOST_TEST(!flags.Set(UserFlags::kMaxUserId + 1, UserFlags::kExists));
  BOOST_TEST(flags.Get(UserFlags::kMaxUserId + 1) == 0u);
  BOOST_TEST(flags.Get(~std::uint64_t{0}) == 0u);
  BOOST_TEST(!flags.Set(3, UserFlags::kExists | 8), "a bit outside kAllFlags");
  BOOST_TEST(flags.Get(3) == 0u);
}

BOOST_AUTO_TEST_CASE(user_flags_grow_across_chunks_while_read_concurrently) {
  constexpr std::uint64_t kUsers = 5 * UserFlags::kUsersPerChunk + 7;
  constexpr std::uint32_t kFlags = UserFlags::kExists | UserFlags::kBlocked;
  UserFlags flags;
  std::atomic<std::uint64_t> published{0}, violations{0};
  const std::uint64_t reads = RunReadersDuring(
      2,
      [&](std::uint64_t rng) {
        const std::uint64_t p = published.load(std::memory_order_acquire);
        if (p == 0) return;
        if (flags.Get(1 + rng % p) != kFlags) violations.fetch_add(1);
      },
      [&] {
        for (std::uint64_t id = 1; id <= kUsers; ++id) {
          if (!flags.Set(id, kFlags)) violations.fetch_add(1);
          published.store(id, std::memory_order_release);
        }
      });
  BOOST_TEST(violations.load() == 0u);
  BOOST_TEST(reads > 0u);
  BOOST_TEST(flags.Get(kUsers + 1) == 0u);
  BOOST_TEST(flags.MemoryBytes() ==
             UserFlags::kChunks * sizeof(void*) + 6 * UserFlags::kUsersPerChunk * 1);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace patledger::index
