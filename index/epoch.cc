#include "index/epoch.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cassert>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <thread>

namespace patledger::index::epoch {
namespace {

// Registry of reader records: an intrusive list so that no global here has a dynamic
// destructor (threads may exit after static destruction has begun).
constinit std::mutex registry_mu;
constinit ReaderRecord* registry_head = nullptr;  // guarded by registry_mu

std::once_flag init_once;
bool use_membarrier = false;  // written once under init_once, read after it

long Membarrier(int cmd) { return syscall(__NR_membarrier, cmd, 0U, 0); }

void InitOnce() {
  std::call_once(init_once, [] {
    const char* force = std::getenv("PATLEDGER_EPOCH_NO_MEMBARRIER");
    if (force != nullptr && std::strcmp(force, "1") == 0) return;
    const long cmds = Membarrier(MEMBARRIER_CMD_QUERY);
    if (cmds < 0 || (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return;
    use_membarrier = Membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
  });
}

// A full barrier on every running thread of this process (invariant 2), or on this
// thread only in fallback mode, where readers fence for themselves (invariant 4).
void HeavyBarrier() {
  if (!use_membarrier) {
    FullFence();
    return;
  }
  // Registered at init, so failure here would break the readers' assumptions.
  if (Membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) std::terminate();
}

// Unregisters this thread's record at thread exit.
struct RecordOwner {
  bool armed = false;
  ~RecordOwner() {
    if (!armed) return;
    ReaderRecord* r = tls_state.record;
    assert(tls_state.nesting == 0);
    {
      std::lock_guard lock(registry_mu);
      (r->prev != nullptr ? r->prev->next : registry_head) = r->next;
      if (r->next != nullptr) r->next->prev = r->prev;
    }
    tls_state.record = nullptr;
    delete r;
  }
};

}  // namespace

void RegisterThisThread() noexcept {
  InitOnce();
  static thread_local RecordOwner owner;
  auto* r = new ReaderRecord;
  {
    std::lock_guard lock(registry_mu);
    r->next = registry_head;
    if (registry_head != nullptr) registry_head->prev = r;
    registry_head = r;
  }
  tls_state.record = r;
  tls_state.strong_fence = !use_membarrier;
  owner.armed = true;
}

bool UsingMembarrier() {
  InitOnce();
  return use_membarrier;
}

void Synchronize() {
  assert(tls_state.nesting == 0 && "Synchronize() inside a ReadSection deadlocks");
  InitOnce();
  std::lock_guard lock(registry_mu);  // one grace period at a time; list is stable
  // seq_cst (includes release): a reader that loads the new epoch with acquire also
  // sees every pointer this thread published before calling Synchronize().
  const std::uint64_t target = global_epoch.fetch_add(1, std::memory_order_seq_cst) + 1;
  HeavyBarrier();
  for (ReaderRecord* r = registry_head; r != nullptr; r = r->next) {
    for (int spins = 0;; ++spins) {
      // acquire: pairs with the reader's release store of 0, so its reads of the
      // old object happen-before whatever the caller does next (freeing it).
      const std::uint64_t c = r->counter.load(std::memory_order_acquire);
      if (c == 0 || c >= target) break;
      if (spins < 100) continue;
      if (spins < 200) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }
  HeavyBarrier();
}

}  // namespace patledger::index::epoch
