// replay_bench: rebuilding the in-memory state from the ledger, as `patledger serve`
// does at start (TokenService::Open: open RocksDB, load the key, replay::Replay every
// record — checksum, FlatBuffers verifier, sequence, hash chain — into State), vs a bare
// RocksDB iteration over the same column family in the same run (issue 6).
//
// Ours runs on two threads (Ledger::ScanBatches: the opening thread reads and
// verifies, a second checks the chain and applies); the peer's iteration is one.
// `ours cpu s` is the CPU of both threads.
//
// Peer: rocksdb::DB::OpenForReadOnly on the same directory with the same column
// families, one iterator over "events" with the same ReadOptions the ledger's Scan uses
// (verify_checksums, fill_cache = false), touching every value (XXH3-64 of it). Open
// time is included on both sides. Page cache: warm — each ledger is read once, untimed,
// before the timed runs (--drop-caches drops the page cache before every timed run
// instead; needs root).
//
// Memory: for each size, a child process (this program, re-executed) reports VmRSS
// before and after TokenService::Open, and VmHWM (the peak, which includes the index's
// transient doubling): whole-process bytes per token and the delta per token.
//
// usage: replay_bench [--tokens 1000000,10000000] [--reps R] [--ledger-dir DIR]
//                     [--seed S] [--drop-caches] [--no-memory | --memory-only]
//                     [--smoke] [--help]
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <iostream>
#include <memory>
#include <sstream>

#include "bench/bench_ledger.h"
#include "bench/bench_util.h"
#include "service/token_service.h"

extern char** environ;

namespace patledger::bench {
namespace {

using Clock = std::chrono::steady_clock;

// CPU seconds used by this process so far (all threads): beside the wall time, it
// tells a busy machine (wall >> cpu) from a slow program.
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::vector<std::uint64_t> ParseList(const std::string& s) {
  std::vector<std::uint64_t> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoull(item));
  return out;
}

// Ours: what serve does at start. Seconds; *events = records replayed.
double OpenService(const std::string& dir, std::uint64_t* events, double* cpu) {
  service::ServiceOptions so;
  so.data_dir = dir;
  so.read_only = true;  // the same Replay; no lock, never writes the cached ledger
  const double c0 = CpuSeconds();
  const auto t0 = Clock::now();
  auto svc = service::TokenService::Open(so);
  const double s = Seconds(Clock::now() - t0);
  *cpu = CpuSeconds() - c0;
  if (!svc) {
    std::cerr << "replay_bench: " << svc.error().ToString() << "\n";
    std::exit(1);
  }
  *events = (*svc)->ledger().last_seq();
  return s;  // (the service is destroyed after the clock stopped)
}

// Peer: open + iterate every key/value of "events", XXH3 of each value. Seconds.
double BareIteration(const std::string& dir, std::uint64_t* count, std::uint64_t* bytes,
                     double* cpu) {
  const double c0 = CpuSeconds();
  const auto t0 = Clock::now();
  auto bare = std::make_unique<BareLedger>(dir, "replay_bench");
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.fill_cache = false;
  std::uint64_t n = 0, b = 0, h = 0;
  {
    std::unique_ptr<rocksdb::Iterator> it(bare->db().NewIterator(ro, bare->events()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const rocksdb::Slice v = it->value();
      h ^= XXH3_64bits(v.data(), v.size());
      b += v.size() + it->key().size();
      ++n;
    }
    if (!it->status().ok()) {
      std::cerr << "replay_bench: rocksdb: " << it->status().ToString() << "\n";
      std::exit(1);
    }
  }
  bare.reset();  // the close is timed too
  const double sec = Seconds(Clock::now() - t0);
  *cpu = CpuSeconds() - c0;
  if (h == 42) std::cerr << " ";  // keep the hashing
  *count = n;
  *bytes = b;
  return sec;
}

void DropCaches() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  f << "3\n";
  if (!f) {
    std::cerr << "replay_bench: --drop-caches needs root\n";
    std::exit(2);
  }
}

// The child of the memory measurement: prints "rss_before rss_after hwm" in bytes.
int MemoryChild(const std::string& dir) {
  const std::size_t before = StatusBytes("VmRSS:");
  service::ServiceOptions so;
  so.data_dir = dir;
  so.read_only = true;
  auto svc = service::TokenService::Open(so);
  if (!svc) {
    std::cerr << "replay_bench: " << svc.error().ToString() << "\n";
    return 1;
  }
  std::printf("%zu %zu %zu %zu %zu\n", before, StatusBytes("VmRSS:"), StatusBytes("VmHWM:"),
              (*svc)->state().token_index().MemoryBytes(), (*svc)->state().MemoryBytes());
  return 0;
}

bool MeasureMemory(const std::string& dir, std::size_t* before, std::size_t* after,
                   std::size_t* hwm, std::size_t* index, std::size_t* state) {
  int fds[2];
  if (::pipe(fds) != 0) return false;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  std::string self = "/proc/self/exe", flag = "--memory-child";
  std::string d = dir;
  char* argv[] = {self.data(), flag.data(), d.data(), nullptr};
  pid_t pid;
  const int rc = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return false;
  }
  std::string out;
  char buf[256];
  for (ssize_t k; (k = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, k);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::istringstream in(out);
  return static_cast<bool>(in >> *before >> *after >> *hwm >> *index >> *state) &&
         WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
}

}  // namespace
}  // namespace patledger::bench

int main(int argc, char** argv) {
  using namespace patledger::bench;
  std::vector<std::uint64_t> sizes = {1'000'000, 10'000'000};
  int reps = 5;
  std::uint64_t seed = 42;
  std::string ledger_root = "/tmp/patledger-bench";
  bool drop = false, memory = true;
  const char* usage =
      "usage: replay_bench [--tokens N,N] [--reps R] [--ledger-dir DIR] [--seed S]\n"
      "                    [--drop-caches] [--no-memory | --memory-only] [--smoke] [--help]\n"
      "  --tokens N,N    ledger sizes in tokens (default 1000000,10000000)\n"
      "  --reps R        repetitions, median reported (default 5)\n"
      "  --ledger-dir D  where generated ledgers are cached (default "
      "/tmp/patledger-bench)\n"
      "  --drop-caches   drop the page cache before every timed run (root); default: "
      "warm\n"
      "  --no-memory     skip the RSS measurement\n"
      "  --memory-only   only the RSS measurement (no timed runs)\n"
      "  --smoke         a tiny run (20k tokens, 1 rep)\n";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "replay_bench: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--memory-child") return MemoryChild(next());
    if (a == "--tokens") sizes = ParseList(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--seed") seed = std::stoull(next());
    else if (a == "--ledger-dir") ledger_root = next();
    else if (a == "--drop-caches") drop = true;
    else if (a == "--no-memory") memory = false;
    else if (a == "--memory-only") reps = 0;
    else if (a == "--smoke") {
      sizes = {20'000};
      reps = 1;
    } else {
      std::cerr << usage;
      return a == "--help" ? 0 : 2;
    }
  }
  std::vector<std::string> dirs;
  for (std::uint64_t n : sizes) dirs.push_back(EnsureLedger(ledger_root, {n, 0, seed, ""}));

  PrintHeader("replay_bench",
              "reps " + std::to_string(reps) +
                  " (median); ours: 3 threads (read + checksum | verify + chain + "
                  "apply | idle-priority prefault), peer: 1 thread; " +
                  (drop ? "page cache dropped before every timed run"
                        : "page cache warm (each ledger read once before timing)") +
                  "\nours = TokenService::Open as serve does it (open + replay::Replay "
                  "into State); peer = rocksdb OpenForReadOnly + iterate \"events\", "
                  "XXH3 of each value");
  std::printf("| tokens | events | MB (keys+values) | ours s | ours events/s | bare s | "
              "bare events/s | ours / bare (speed) | ours cpu s | bare cpu s |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  struct Mem {
    std::uint64_t tokens;
    std::size_t before, after, hwm, index, state;
  };
  std::vector<std::string> results;
  std::vector<Mem> mems;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    const std::string& dir = dirs[k];
    std::uint64_t events = 0, count = 0, bytes = 0;
    double cpu = 0;
    if (reps > 0 && !drop) BareIteration(dir, &count, &bytes, &cpu);  // warm the cache
    std::vector<double> ours, bare, ours_cpu, bare_cpu;
    for (int r = 0; r < reps; ++r) {
      if (drop) DropCaches();
      ours.push_back(OpenService(dir, &events, &cpu));
      ours_cpu.push_back(cpu);
      if (drop) DropCaches();
      bare.push_back(BareIteration(dir, &count, &bytes, &cpu));
      bare_cpu.push_back(cpu);
      std::fprintf(stderr, "  %llu tokens rep %d: ours %.2f s, bare %.2f s\n",
                   static_cast<unsigned long long>(sizes[k]), r, ours.back(), bare.back());
    }
    if (reps == 0) {
      if (memory) {
        Mem m{sizes[k], 0, 0, 0, 0, 0};
        if (MeasureMemory(dir, &m.before, &m.after, &m.hwm, &m.index, &m.state)) {
          mems.push_back(m);
        }
      }
      continue;
    }
    if (count != events) {
      std::fprintf(stderr, "replay_bench: %llu events replayed but %llu keys iterated\n",
                   static_cast<unsigned long long>(events),
                   static_cast<unsigned long long>(count));
    }
    const double o = Median(ours), b = Median(bare);
    const double oe = events / o, be = count / b;
    std::printf("| %llu | %llu | %.0f | %.2f | %.0f | %.2f | %.0f | %.2fx | %.2f | %.2f |\n",
                static_cast<unsigned long long>(sizes[k]),
                static_cast<unsigned long long>(events), bytes / 1e6, o, oe, b, be, oe / be,
                Median(ours_cpu), Median(bare_cpu));
    std::fflush(stdout);
    const std::string p = "tokens=" + std::to_string(sizes[k]) +
                          " events=" + std::to_string(events) + " cache=" +
                          (drop ? "dropped" : "warm");
    results.push_back(p + "|events_per_s|" + std::to_string(oe) + "|" + std::to_string(be));
    results.push_back(p + "|seconds|" + std::to_string(o) + "|" + std::to_string(b));
    if (memory) {
      Mem m{sizes[k], 0, 0, 0, 0, 0};
      if (MeasureMemory(dir, &m.before, &m.after, &m.hwm, &m.index, &m.state)) {
        mems.push_back(m);
      }
      else std::fprintf(stderr, "replay_bench: memory measurement failed\n");
    }
  }
  if (!mems.empty()) {
    std::printf("\n## Memory after TokenService::Open (fresh process)\n\n"
                "| tokens | VmRSS before MB | VmRSS after MB | VmHWM MB | whole process "
                "B/token | delta B/token | peak B/token | index B/token | "
                "State::MemoryBytes B/token (index incl.) |\n"
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const Mem& m : mems) {
      const double t = static_cast<double>(m.tokens);
      std::printf("| %llu | %.1f | %.1f | %.1f | %.0f | %.0f | %.0f | %.0f | %.0f |\n",
                  static_cast<unsigned long long>(m.tokens), m.before / 1e6, m.after / 1e6,
                  m.hwm / 1e6, m.after / t, (m.after - m.before) / t, m.hwm / t,
                  m.index / t, m.state / t);
    }
    std::printf("\ntarget: whole process <= 200 B/token at 10M\n");
  }
  std::printf("\n");
  for (const std::string& line : results) {
    std::stringstream in(line);
    std::string p, name, o, b;
    std::getline(in, p, '|');
    std::getline(in, name, '|');
    std::getline(in, o, '|');
    std::getline(in, b, '|');
    PrintResult("replay", name, p, std::stod(o), std::stod(b),
                name == "seconds" ? "s" : "events/s", name != "seconds");
  }
  for (const Mem& m : mems) {
    const double t = static_cast<double>(m.tokens);
    const std::string p = "tokens=" + std::to_string(m.tokens);
    PrintResult("memory", "rss_per_token", p, m.after / t, 0, "B", false);
    PrintResult("memory", "rss_delta_per_token", p, (m.after - m.before) / t, 0, "B", false);
    PrintResult("memory", "peak_per_token", p, m.hwm / t, 0, "B", false);
  }
  return 0;
}
