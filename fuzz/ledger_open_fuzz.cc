// fuzz/ledger_open_fuzz.cc: ledger::Ledger::Open, Scan, Read and replay::Replay over
// damaged ledger directories — RocksDB's CURRENT, MANIFEST, OPTIONS, WAL and SST files
// as ledger/ writes them, with bytes changed.
//
// LLVMFuzzerInitialize builds the sample log of fuzz/fuzz_util.h twice into a scratch
// directory (/dev/shm when available): ledger A keeps every record in the WAL, ledger B
// has the first transactions flushed to SST files and the rest in the WAL. Each input
// is a mutation descriptor (FuzzedDataProvider):
//   which ledger, open read-only or read-write, scan with keep_going or not, append
//   after a clean scan or not, then 1..4 mutations, each: a file (index into the
//   sorted file list, LOCK and LOG files excluded), an operation — flip a bit, set a
//   byte, overwrite a run, truncate, insert a run — an offset and the bytes.
// The ledger's files are written fresh for every input, into an in-memory RocksDB Env.
//
// Must hold for every input: no crash, no sanitizer report, no hang (libFuzzer's
// -timeout), and: an error from Open/Scan/Read/Replay is a Status (errors are fine);
// a Scan that returns OK visited seq 1..last_seq() in order; Replay agrees with Scan.
//
// A read-only open retries for ~1.4 s when a file it needs is missing (a writer
// beside it may be renaming files, ledger.cc); a damaged CURRENT does that every time,
// so read-only inputs leave CURRENT alone (the read-write inputs cover it).

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <rocksdb/env.h>

#include "fuzz/fuzz_util.h"
#include "ledger/ledger.h"
#include "replay/state.h"

namespace {

using namespace patledger;
using patledger::fuzz::Die;

struct File {
  std::string name;
  std::string bytes;
};

struct Sample {
  std::vector<File> files;  // sorted by name, LOCK and LOG* excluded
  std::uint64_t records = 0;
};

Sample g_samples[2];
// The damaged copy lives in an in-memory RocksDB Env (rocksdb::NewMemEnv), passed to
// the ledger through ledger::Options::env: writing it and opening it costs no system
// call, which makes the target several times faster than a copy on disk.
rocksdb::Env* g_env = nullptr;
const std::string g_scratch = "/fuzz/ledger";

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

Sample Snapshot(const std::string& dir, std::uint64_t records) {
  Sample s;
  s.records = records;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename();
    if (name == "LOCK" || name.starts_with("LOG")) continue;
    s.files.push_back({name, ReadFile(entry.path())});
  }
  std::sort(s.files.begin(), s.files.end(),
            [](const File& a, const File& b) { return a.name < b.name; });
  return s;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::unique_ptr<rocksdb::WritableFile> f;
  rocksdb::Status s = g_env->NewWritableFile(path, &f, rocksdb::EnvOptions());
  if (s.ok()) s = f->Append(bytes);
  if (s.ok()) s = f->Close();
  if (!s.ok()) Die("cannot write " + path + ": " + s.ToString());
}

// Empties the in-memory ledger directory.
void ClearScratch() {
  std::vector<std::string> names;
  if (!g_env->GetChildren(g_scratch, &names).ok()) return;
  for (const std::string& n : names) {
    if (n != "." && n != "..") g_env->DeleteFile(g_scratch + "/" + n).PermitUncheckedError();
  }
}

void Mutate(FuzzedDataProvider& fdp, std::string* bytes) {
  const std::size_t offset = fdp.ConsumeIntegralInRange<std::size_t>(0, bytes->size());
  switch (fdp.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: {  // flip one bit (at the end of the file: no change)
      const int bit = fdp.ConsumeIntegralInRange(0, 7);
      if (offset < bytes->size()) (*bytes)[offset] ^= static_cast<char>(1 << bit);
      break;
    }
    case 1: {  // set one byte
      const char value = fdp.ConsumeIntegral<char>();
      if (offset < bytes->size()) (*bytes)[offset] = value;
      break;
    }
    case 2: {  // overwrite a run
      const std::string run = fdp.ConsumeBytesAsString(fdp.ConsumeIntegralInRange(1, 64));
      bytes->replace(offset, std::min(run.size(), bytes->size() - offset), run);
      break;
    }
    case 3:  // truncate
      bytes->resize(offset);
      break;
    case 4:  // insert a run
      bytes->insert(offset, fdp.ConsumeBytesAsString(fdp.ConsumeIntegralInRange(1, 64)));
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string root = patledger::fuzz::MakeScratchDir("open");
  const std::string a = root + "/a", b = root + "/b";
  g_samples[0] = Snapshot(a, patledger::fuzz::BuildSampleLedger(a, 0));
  g_samples[1] = Snapshot(b, patledger::fuzz::BuildSampleLedger(b, 5));
  patledger::fuzz::RemoveTree(a);
  patledger::fuzz::RemoveTree(b);
  patledger::fuzz::RemoveTree(root);
  g_env = rocksdb::NewMemEnv(rocksdb::Env::Default());
  g_env->CreateDirIfMissing("/fuzz").PermitUncheckedError();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider fdp(data, size);
  const Sample& sample = g_samples[fdp.ConsumeBool()];
  ledger::Options options;
  options.read_only = fdp.ConsumeBool();
  const bool keep_going = fdp.ConsumeBool();
  const bool append = fdp.ConsumeBool();

  std::vector<File> files = sample.files;
  const int mutations = fdp.ConsumeIntegralInRange(1, 4);
  for (int m = 0; m < mutations && fdp.remaining_bytes() > 0; ++m) {
    File& f = files[fdp.ConsumeIntegralInRange<std::size_t>(0, files.size() - 1)];
    if (options.read_only && f.name == "CURRENT") continue;  // see the header comment
    Mutate(fdp, &f.bytes);
  }
  ClearScratch();
  g_env->CreateDirIfMissing(g_scratch).PermitUncheckedError();
  for (const File& f : files) WriteFile(g_scratch + "/" + f.name, f.bytes);
  options.env = g_env;

  auto opened = ledger::Ledger::Open(g_scratch, options);
  if (!opened) return 0;
  ledger::Ledger& ledger = **opened;

  std::uint64_t visited = 0, damaged = 0;
  bool in_order = true;
  ledger::ScanOptions scan;
  scan.keep_going = keep_going;
  scan.on_damage = [&](const Status& s) {
    ++damaged;
    if (s.ok()) Die("on_damage called with OK");
  };
  const Status scanned = ledger.Scan(scan, [&](const ledger::RecordView& r) {
    in_order &= r.seq == ++visited || keep_going;
    if (r.envelope == nullptr) Die("Scan visited a record without an envelope");
    return Status::OK();
  });
  if (!in_order) Die("Scan visited records out of order");
  if (scanned.ok()) {
    if (visited != ledger.last_seq() || damaged != 0) {
      Die("Scan returned OK but did not visit 1..last_seq() cleanly");
    }
  }

  for (std::uint64_t seq : {std::uint64_t{0}, std::uint64_t{1}, ledger.last_seq(),
                            ledger.last_seq() + 1, sample.records / 2}) {
    auto read = ledger.Read(seq);
    if (read && (read->size() < 8 || seq == 0)) Die("Read returned a bogus record");
  }

  replay::State state;
  std::uint64_t applied = 0;
  const Status replayed = replay::Replay(ledger, &state, {}, &applied);
  if (replayed.ok() && !scanned.ok() && !keep_going) {
    Die("Replay accepted a ledger that Scan refused");
  }
  if (scanned.ok() && replayed.ok() && applied != ledger.last_seq()) {
    Die("Replay applied a different number of records than Scan visited");
  }

  if (append && scanned.ok() && !options.read_only) {
    schema::EventContext ctx = patledger::fuzz::SampleContext(1000, 1);
    auto seq = ledger.Append({schema::BuildTokenRevoked(ctx, 1, schema::RevokeReason::ByAdmin)});
    if (seq && *seq != ledger.last_seq()) Die("Append returned a seq that is not the head");
  }
  return 0;
}
