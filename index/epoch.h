// index/epoch.h: read-side sections and grace periods for reclaiming memory that
// lock-free readers may still be reading (a userspace RCU, liburcu's "memb" flavour).
//
// A reader thread brackets its reads in an epoch::ReadSection. A writer that has
// unpublished an object (e.g. swapped in a new hash table) calls Synchronize(); when
// it returns, every section that could have seen the old object has ended, so the
// writer may free it.
//
// Thread safety
// -------------
// Readers never write shared memory and never perform an atomic read-modify-write.
// Each reader thread owns one cache-line-sized ReaderRecord, registered once per thread
// (under a mutex, on its first section) and unregistered by a thread_local destructor.
// Entering the outermost section costs one acquire load of the global epoch (a plain
// load on x86), one relaxed store to the thread's own record and a compiler-only fence;
// leaving costs a compiler-only fence and one release store. Nested sections only touch
// a thread-local counter.
//
// Invariants:
//  (1) A record's counter is 0 outside sections, else the global epoch the thread read
//      on entry. Only its owner thread writes it.
//  (2) Synchronize() advances the global epoch to E, then forces a full memory barrier
//      on every running thread of the process (membarrier(PRIVATE_EXPEDITED)), then
//      waits until every record's counter is 0 or >= E, then issues a second barrier.
//      A reader whose entry store became visible before the barrier is waited for; a
//      reader that entered after it loads pointers after the barrier and so sees every
//      store the writer made before calling Synchronize(). Hence (3).
//  (3) After Synchronize() returns, no section that began before the call can still be
//      running, and any section running now started after the writer's earlier stores.
//  (4) If membarrier is unavailable (queried once per process), readers use a seq_cst
//      fence instead of the compiler fence and the writer a seq_cst fence instead of
//      the syscall: a Dekker pattern on (counter, pointer). Still no reader RMW.
//      PATLEDGER_EPOCH_NO_MEMBARRIER=1 in the environment forces this mode (for tests).
//  (5) Sections must be short and must not block: Synchronize() spins (then yields,
//      then sleeps) until they end. REQUIRES for Synchronize(): the calling thread is
//      not inside a ReadSection (it would wait for itself forever).
//  (6) Do not enter a section from a thread_local destructor (the record may be gone).

#ifndef PATLEDGER_INDEX_EPOCH_H_
#define PATLEDGER_INDEX_EPOCH_H_

#include <atomic>
#include <cstdint>

namespace patledger::index::epoch {

// One per registered reader thread; alone on its cache line so that a reader's
// stores never invalidate a line another thread reads on its fast path.
struct alignas(64) ReaderRecord {
  std::atomic<std::uint64_t> counter{0};  // invariant (1)
  ReaderRecord* prev = nullptr;           // registry list links, guarded by the
  ReaderRecord* next = nullptr;           // registry mutex (touched only at (un)register)
};
static_assert(sizeof(ReaderRecord) == 64, "one record per cache line: no false sharing");

// Per-thread state; constant-initialized and trivially destructible so the compiler
// accesses it directly (no TLS init wrapper on the fast path).
struct ThreadState {
  ReaderRecord* record = nullptr;
  std::uint32_t nesting = 0;
  bool strong_fence = false;  // invariant (4): true when membarrier is unavailable
};
inline constinit thread_local ThreadState tls_state{};

// Global epoch, starts at 1 (0 means "not in a section"). Written only by Synchronize.
alignas(64) inline constinit std::atomic<std::uint64_t> global_epoch{1};

// A seq_cst fence. GCC's ThreadSanitizer does not model fences and warns (-Wtsan);
// nothing here relies on TSan seeing them (sections publish their end with release).
#if defined(__SANITIZE_THREAD__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
inline void FullFence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
#if defined(__SANITIZE_THREAD__)
#pragma GCC diagnostic pop
#endif

// Slow path of the first section on a thread: allocates and registers the record.
// noexcept: a section must never be left half-entered (terminates on out-of-memory).
void RegisterThisThread() noexcept;

// True when grace periods use membarrier (decided once per process).
bool UsingMembarrier();

// Waits for a grace period: see invariants (2), (3), (5).
void Synchronize();

// RAII read-side section. Cheap enough to wrap every single lookup.
class ReadSection {
 public:
  ReadSection() {
    ThreadState& ts = tls_state;
    if (ts.nesting++ != 0) return;
    if (ts.record == nullptr) RegisterThisThread();
    // acquire: if we read Synchronize()'s new epoch we also see the pointers the
    // writer published before it (pairs with the release in its fetch_add).
    const std::uint64_t e = global_epoch.load(std::memory_order_acquire);
    // relaxed: ordering against our later loads comes from the fence below or, in
    // membarrier mode, from the writer's barrier on this CPU (invariant 2).
    ts.record->counter.store(e, std::memory_order_relaxed);
    Fence(ts);
  }
  ~ReadSection() {
    ThreadState& ts = tls_state;
    if (--ts.nesting != 0) return;
    Fence(ts);
    // release: every read of the section happens-before the writer's acquire load
    // that sees 0 and then frees (also what lets ThreadSanitizer see the ordering).
    ts.record->counter.store(0, std::memory_order_release);
  }
  ReadSection(const ReadSection&) = delete;
  ReadSection& operator=(const ReadSection&) = delete;

 private:
  static void Fence(const ThreadState& ts) {
    if (ts.strong_fence) {
      FullFence();  // invariant (4)
    } else {
      std::atomic_signal_fence(std::memory_order_seq_cst);  // compiler-only; (2)
    }
  }
};

}  // namespace patledger::index::epoch

#endif  // PATLEDGER_INDEX_EPOCH_H_
