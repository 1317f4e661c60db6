// Reliability, point 3 (issue 7): damaged files are refused, naming the damage, or
// provably harmless — never a silent difference in state.
//
// A data directory is built through TokenService in two sessions, so that the first
// session's events sit in SST files (RocksDB flushes the recovered WAL when the second
// session opens) and the second session's only in the live WAL. Then, for every file
// of the ledger (WAL, each SST, MANIFEST, CURRENT, OPTIONS) and every damage —
// bit flips spread over the file, truncations, a zeroed 4 KiB page — a COPY of the
// directory is damaged and opened the two ways patledger opens a ledger: writable
// (TokenService::Open, as `patledger serve`) and read-only (as the tools). Each case is
//   detected  the open fails and the error names the damaged file or a seq;
//   refused   the open fails, but the error names neither (unclear, reported);
//   harmless  the open succeeds and the whole state — every user, every TokenMeta, the
//             index, and every token's name, description and revocation read back from
//             the ledger (ServiceText) — is identical to the undamaged one;
//   silent    the open succeeds with a different state. Must be 0.

#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "service/token_service.h"
#include "tests/reliability/reliability_util.h"
#include "tests/reliability/sim_disk.h"
#include "tests/test_util.h"

namespace patledger::reliability {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kNoon = 1'795'867'200'000'000LL;  // 2026-11-28T12:00:00Z

service::ServiceOptions Options(const std::string& data, const Clock* clock) {
  service::ServiceOptions o;
  o.data_dir = data;
  o.clock = clock;
  o.env = NoPreallocationFs::Env();
  return o;
}

// Users, tokens, revocations, rotations (one reused: a family revocation), a block.
void Session(service::TokenService& svc, int tokens, std::mt19937_64& rng) {
  service::Actor root{1, 1, false, "192.0.2.1", "req"};
  std::vector<std::uint64_t> users;  // the active ones but root
  for (const auto& u : svc.state().Users()) {
    if (u.id != 1 && !u.blocked) users.push_back(u.id);
  }
  for (int i = static_cast<int>(svc.state().user_count()); i < 4; ++i) {
    auto u =
        svc.RegisterUser(root, "user" + std::to_string(i), "User " + std::to_string(i),
                         "u" + std::to_string(i) + "@example.com", false);
    BOOST_TEST_REQUIRE(u.has_value(), Why(u));
    users.push_back(u->id);
  }
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < tokens; ++i) {
    service::CreateTokenRequest req;
    req.user_id = users[rng() % users.size()];
    req.name = "token-" + std::to_string(svc.state().max_token_id() + 1);
    req.description = "made for the corruption matrix";
    req.scopes = service::kReadApi | (i % 2 ? service::kApi : 0);
    auto t = svc.CreateToken(root, req);
    BOOST_TEST_REQUIRE(t.has_value(), Why(t));
    ids.push_back(t->info.meta.id);
  }
  for (int i = 0; i < tokens / 6; ++i) {
    Status s = svc.RevokeToken(root, ids[i], schema::RevokeReason::ByAdmin);
    BOOST_TEST_REQUIRE(s.ok(), s.ToString());
  }
  for (int i = tokens / 6; i < tokens / 3; ++i) {
    auto t = svc.RotateToken(root, ids[i], std::nullopt);
    BOOST_TEST_REQUIRE(t.has_value(), Why(t));
  }
  auto reuse = svc.RotateToken(root, ids[tokens / 6], std::nullopt);  // already rotated
  BOOST_TEST_REQUIRE(!reuse.has_value());
  Status s = svc.BlockUser(root, users.front());
  BOOST_TEST_REQUIRE(s.ok(), s.ToString());
}

enum class Outcome { kDetected, kRefused, kHarmless, kSilent };
constexpr const char* kOutcomeNames[] = {"detected", "refused (unclear)", "harmless",
                                         "silent"};

struct Damage {
  std::string file;  // name inside the ledger directory
  std::string kind;  // "flip", "truncate", "zero page"
  std::uint64_t offset = 0;
  int bit = 0;
  std::string Describe() const {
    return kind + " " + file + " at " + std::to_string(offset) +
           (kind == "flip" ? " bit " + std::to_string(bit) : "");
  }
};

void Apply(const std::string& path, const Damage& d) {
  if (d.kind == "truncate") {
    fs::resize_file(path, d.offset);
    return;
  }
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  const std::uint64_t size = fs::file_size(path);
  const std::uint64_t len =
      d.kind == "flip" ? 1 : std::min<std::uint64_t>(4096, size - d.offset);
  std::string bytes(len, '\0');
  f.seekg(static_cast<std::streamoff>(d.offset));
  f.read(bytes.data(), static_cast<std::streamsize>(len));
  if (d.kind == "flip") {
    bytes[0] = static_cast<char>(bytes[0] ^ (1 << d.bit));
  } else {
    bytes.assign(len, '\0');
  }
  f.seekp(static_cast<std::streamoff>(d.offset));
  f.write(bytes.data(), static_cast<std::streamsize>(len));
}

// "WAL", "SST", "MANIFEST", "CURRENT", "OPTIONS", "HEAD" (the head journal), or
// "other".
std::string KindOf(const std::string& name) {
  if (name.ends_with(".log")) return "WAL";
  if (name.ends_with(".sst")) return "SST";
  if (name.starts_with("MANIFEST-")) return "MANIFEST";
  if (name == "CURRENT") return "CURRENT";
  if (name.starts_with("OPTIONS-")) return "OPTIONS";
  if (name.starts_with("PATLEDGER-HEAD-")) return "HEAD";
  return "other";
}

// Does the error say what is damaged: the file by name (or the file CURRENT points
// to, for CURRENT), or the sequence number of a record?
bool NamesTheDamage(const std::string& message, const std::string& file) {
  if (message.find(file) != std::string::npos) return true;
  if (file == "CURRENT" && message.find("MANIFEST") != std::string::npos) return true;
  const auto at = message.find("seq ");
  return at != std::string::npos && at + 4 < message.size() &&
         std::isdigit(static_cast<unsigned char>(message[at + 4]));
}

struct Matrix {
  // [file kind][damage kind][mode] -> counts per outcome
  std::map<std::string, std::map<std::string, std::map<std::string, std::array<int, 4>>>>
      cells;
  std::map<std::string, std::set<std::string>> samples;  // outcome/kind -> messages
  std::vector<std::string> silent, refused;
  std::array<int, 4> totals{};

  void Add(const std::string& file_kind, const Damage& d, const std::string& mode,
           Outcome o, const std::string& detail) {
    const int i = static_cast<int>(o);
    ++cells[file_kind][d.kind][mode][i];
    ++totals[i];
    if (o == Outcome::kSilent)
      silent.push_back(mode + ": " + d.Describe() + ": " + detail);
    if (o == Outcome::kRefused)
      refused.push_back(mode + ": " + d.Describe() + ": " + detail);
    auto& s = samples[file_kind + " " + kOutcomeNames[i]];
    if (s.size() < 3 && (o == Outcome::kDetected || o == Outcome::kRefused))
      s.insert(detail);
  }

  // Cases of `file_kind` with outcome `o`, in the image whose name starts `image`
  // ("" = both images).
  int Count(const std::string& file_kind, Outcome o, std::string_view image = "") const {
    int n = 0;
    auto f = cells.find(file_kind);
    if (f == cells.end()) return 0;
    for (const auto& [damage, by_mode] : f->second) {
      for (const auto& [mode, c] : by_mode) {
        if (mode.starts_with(image)) n += c[static_cast<int>(o)];
      }
    }
    return n;
  }

  std::string Table() const {
    std::ostringstream o;
    o << "| file | damage | open | cases | detected | refused (unclear) | harmless | "
         "silent |\n"
      << "|---|---|---|---|---|---|---|---|\n";
    for (const auto& [file, by_damage] : cells) {
      for (const auto& [damage, by_mode] : by_damage) {
        for (const auto& [mode, c] : by_mode) {
          o << "| " << file << " | " << damage << " | " << mode << " | "
            << c[0] + c[1] + c[2] + c[3] << " | " << c[0] << " | " << c[1] << " | "
            << c[2] << " | " << c[3] << " |\n";
        }
      }
    }
    o << "| **all** | | | " << totals[0] + totals[1] + totals[2] + totals[3] << " | "
      << totals[0] << " | " << totals[1] << " | " << totals[2] << " | " << totals[3]
      << " |\n";
    return o.str();
  }
};

// Opens the data directory and classifies the result against the undamaged text. A
// silent difference that is exactly the undamaged ledger cut short (replayed from
// `reference` up to the same seq) is said so: an acknowledged tail was dropped.
std::pair<Outcome, std::string> Classify(const std::string& data, bool read_only,
                                         const std::string& file,
                                         const std::string& expected,
                                         const std::string& reference,
                                         const Clock* clock) {
  service::ServiceOptions o = Options(data, clock);
  o.read_only = read_only;
  auto svc = service::TokenService::Open(o);
  if (!svc) {
    const std::string m = svc.error().ToString();
    return {NamesTheDamage(m, file) ? Outcome::kDetected : Outcome::kRefused, m};
  }
  const std::string text = ServiceText(**svc);
  if (text == expected) return {Outcome::kHarmless, "identical state"};
  std::string detail = FirstDifference(expected, text);
  service::ServiceOptions r = Options(reference, clock);
  r.read_only = true;
  r.replay_to.to_seq = (*svc)->ledger().last_seq();
  if (auto cut = service::TokenService::Open(r); cut && ServiceText(**cut) == text) {
    detail = "opened without an error, the acknowledged tail after seq " +
             std::to_string(r.replay_to.to_seq) + " dropped";
  }
  return {Outcome::kSilent, detail};
}

void CopyTree(const std::string& from, const std::string& to) {
  fs::copy(from, to, fs::copy_options::recursive);
}

// Builds the ledger, damages copies, classifies every case. Run once, by the first
// test case that asks; BOOST_TEST_REQUIRE failures here fail that case.
Matrix BuildMatrix() {
  const std::uint64_t seed = Seed("corruption_matrix");
  std::mt19937_64 rng(seed);
  ScratchDir tmp;  // damage is applied to copies; the real disk's fsyncs play no part
  ManualClock clock(kNoon);
  const std::string pristine = tmp.Sub("pristine");
  const int tokens = static_cast<int>(Size("PATLEDGER_CORRUPTION_TOKENS", 60, 600));
  {
    auto init = service::TokenService::Init(Options(pristine, &clock));
    BOOST_TEST_REQUIRE(init.has_value(), Why(init));
  }
  // Two images of the same ledger. "stopped": after a clean stop, which flushes the
  // memtables, so every event is in SST files and the WAL is empty. "crashed": a copy
  // taken while the second session's service was still open, as a crash leaves it —
  // the first session's events in SST files, the second's only in the live WAL.
  const std::string crashed = tmp.Sub("crashed");
  for (int session = 0; session < 2; ++session) {
    auto svc = service::TokenService::Open(Options(pristine, &clock));
    BOOST_TEST_REQUIRE(svc.has_value(), Why(svc));
    Session(**svc, tokens, rng);
    if (session == 1) {
      const std::error_code copied = CopyTreeOfLiveLedger(pristine, crashed);
      BOOST_TEST_REQUIRE(!copied, copied.message());
    }
    clock.Advance(3'600'000'000LL);
  }
  // The undamaged state, from a copy (opening writable flushes the WAL).
  const std::string reference = tmp.Sub("reference");  // undamaged, opened once
  std::string expected, expected_ro;
  std::uint64_t last_seq = 0;
  {
    CopyTree(pristine, reference);
    service::ServiceOptions o = Options(reference, &clock);
    o.read_only = true;
    auto ro = service::TokenService::Open(o);
    BOOST_TEST_REQUIRE(ro.has_value(), Why(ro));
    expected_ro = ServiceText(**ro);
    last_seq = (*ro)->ledger().last_seq();
    ro->reset();
    o.read_only = false;
    auto rw = service::TokenService::Open(o);
    BOOST_TEST_REQUIRE(rw.has_value(), Why(rw));
    expected = ServiceText(**rw);
  }
  BOOST_TEST_REQUIRE(expected == expected_ro, FirstDifference(expected, expected_ro));
  {  // The comparison can fail: the same ledger replayed one record short differs.
    service::ServiceOptions o = Options(reference, &clock);
    o.read_only = true;
    o.replay_to.to_seq = last_seq - 1;
    auto shorter = service::TokenService::Open(o);
    BOOST_TEST_REQUIRE(shorter.has_value(), Why(shorter));
    BOOST_TEST_REQUIRE(ServiceText(**shorter) != expected);
  }

  const std::uint64_t flips_per_file = Size("PATLEDGER_CORRUPTION_FLIPS", 64, 1'000);
  Matrix m;
  std::uint64_t damaged = 0;
  for (const auto& [image, dir] :
       {std::pair<std::string, std::string>{"stopped", pristine}, {"crashed", crashed}}) {
    // The files, and where the events are.
    std::vector<std::pair<std::string, std::uint64_t>> files;
    std::map<std::string, int> per_kind;
    std::map<std::string, std::uint64_t> bytes_per_kind;
    for (const auto& e : fs::directory_iterator(dir + "/ledger")) {
      const std::string name = e.path().filename().string();
      if (KindOf(name) == "other") continue;
      files.emplace_back(name, e.file_size());
      ++per_kind[KindOf(name)];
      bytes_per_kind[KindOf(name)] += e.file_size();
    }
    std::sort(files.begin(), files.end());
    std::ostringstream listing;
    for (const auto& [name, size] : files)
      listing << " " << name << " (" << size << " B)";
    BOOST_TEST_MESSAGE("corruption_matrix, " << image << ": " << last_seq
                                             << " events; files:" << listing.str());
    BOOST_TEST_REQUIRE(per_kind["SST"] >= 1);
    BOOST_TEST_REQUIRE(per_kind["MANIFEST"] == 1);
    if (image == "stopped") {
      BOOST_TEST_REQUIRE(bytes_per_kind["WAL"] == 0u,
                         "a clean stop leaves the WAL empty");
    } else {
      BOOST_TEST_REQUIRE(bytes_per_kind["WAL"] > 0u,
                         "the crash image has events in its WAL");
    }

    // The cases. An empty file (the stopped image's WAL) has no byte to damage.
    std::vector<Damage> cases;
    for (const auto& [name, size] : files) {
      if (size == 0) continue;
      const bool small = size < 64;  // CURRENT: fewer cases
      const std::uint64_t flips = small ? 6 : flips_per_file;
      std::set<std::uint64_t> offsets;
      for (std::uint64_t i = 0; i < flips && offsets.size() < size; ++i) {
        // One offset in each of `flips` equal slices, so every region is hit.
        const std::uint64_t lo = i * size / flips,
                            hi = std::max(lo + 1, (i + 1) * size / flips);
        offsets.insert(lo + rng() % (hi - lo));
      }
      for (std::uint64_t off : offsets) {
        cases.push_back({name, "flip", off, static_cast<int>(rng() % 8)});
      }
      std::set<std::uint64_t> cuts = {0, size / 4, size / 2, size * 3 / 4};
      if (size > 1) cuts.insert(size - 1);
      if (size > 7) cuts.insert(size - 7);
      if (size > 100) cuts.insert(size - 100);
      cuts.insert(rng() % size);
      for (std::uint64_t cut : cuts) cases.push_back({name, "truncate", cut, 0});
      std::set<std::uint64_t> pages;
      for (int i = 0; i < 2 && size > 4096; ++i)
        pages.insert((rng() % (size / 4096)) * 4096);
      for (std::uint64_t page : pages) cases.push_back({name, "zero page", page, 0});
    }

    for (const Damage& d : cases) {
      const std::string data = tmp.Sub("case-" + std::to_string(damaged++));
      CopyTree(dir, data);
      Apply(data + "/ledger/" + d.file, d);
      const std::string kind = KindOf(d.file);
      auto [ro, ro_detail] = Classify(data, true, d.file, expected, reference, &clock);
      m.Add(kind, d, image + ", read-only", ro, ro_detail);
      auto [rw, rw_detail] = Classify(data, false, d.file, expected, reference, &clock);
      m.Add(kind, d, image + ", writable", rw, rw_detail);
      fs::remove_all(data);
    }
  }

  BOOST_TEST_MESSAGE("corruption_matrix: " << damaged << " damaged copies, each opened "
                                           << "read-only and writable:\n"
                                           << m.Table());
  for (const auto& [what, messages] : m.samples) {
    for (const auto& msg : messages) BOOST_TEST_MESSAGE("  e.g. " << what << ": " << msg);
  }
  return m;
}

// Built once, by the first test case that asks. Not a function-local static: if the
// build is cut short by a signal (Boost.Test recovers from it with a long jump, e.g.
// after an assertion inside RocksDB, F7), a static's guard would stay taken and every
// later case would hang until ctest's timeout; this fails them at once instead.
const Matrix& TheMatrix() {
  enum class Build { kNotYet, kBuilding, kDone };
  static Build state = Build::kNotYet;
  static std::optional<Matrix> matrix;
  if (state == Build::kBuilding) {
    BOOST_FAIL("the corruption matrix could not be built (its build stopped: see above)");
  }
  if (state == Build::kNotYet) {
    state = Build::kBuilding;
    matrix.emplace(BuildMatrix());
    state = Build::kDone;
  }
  return *matrix;
}

// For the cases marked expected_failures: a matrix that could not be built must fail
// them (its own failed REQUIRE is one failure; this adds another).
const Matrix* MatrixOrFail() {
  try {
    return &TheMatrix();
  } catch (...) {
    BOOST_TEST(false, "the corruption matrix could not be built");
    return nullptr;
  }
}

std::string Lines(const std::vector<std::string>& v) {
  std::ostringstream o;
  for (const auto& s : v) o << "\n  " << s;
  return o.str();
}

BOOST_AUTO_TEST_SUITE(corruption_matrix)

BOOST_AUTO_TEST_CASE(
    damaged_sst_manifest_current_and_options_are_refused_or_harmless_never_silent) {
  const Matrix& m = TheMatrix();
  for (const std::string kind : {"SST", "MANIFEST", "CURRENT", "OPTIONS", "HEAD"}) {
    BOOST_TEST_CONTEXT(kind) {
      BOOST_TEST(m.Count(kind, Outcome::kSilent) == 0, Lines(m.silent));
      BOOST_TEST(m.Count(kind, Outcome::kDetected) + m.Count(kind, Outcome::kHarmless) +
                     m.Count(kind, Outcome::kRefused) >
                 0);
    }
  }
  BOOST_TEST(m.Count("SST", Outcome::kDetected) > 0);
  BOOST_TEST(m.Count("MANIFEST", Outcome::kDetected) > 0);
}

// F1 (docs/RELIABILITY.md), fixed for a stopped ledger: a clean stop flushes the
// memtables, so the WAL of a stopped ledger is empty and no damage to it can drop
// anything (before the fix its events were only there, and a truncation dropped them
// silently).
BOOST_AUTO_TEST_CASE(a_stopped_ledger_keeps_nothing_only_in_its_wal) {
  const Matrix* built = MatrixOrFail();
  if (built == nullptr) return;
  const Matrix& m = *built;
  BOOST_TEST(m.Count("WAL", Outcome::kSilent, "stopped") == 0, Lines(m.silent));
  BOOST_TEST(m.Count("SST", Outcome::kDetected, "stopped") > 0);
}

// F1 (docs/RELIABILITY.md), after a crash: damage to the live WAL of a crash image
// that looks like a torn tail — a truncation, or a zeroed page — is accepted by
// RocksDB's kTolerateCorruptedTailRecords recovery; the head journal, synced before
// each group is acknowledged, makes the open refuse it naming the missing seqs
// (before it, the ledger opened with its acknowledged tail missing).
BOOST_AUTO_TEST_CASE(damaged_live_wal_after_a_crash_is_refused_or_harmless_never_silent) {
  const Matrix* built = MatrixOrFail();
  if (built == nullptr) return;
  const Matrix& m = *built;
  BOOST_TEST(m.Count("WAL", Outcome::kDetected, "crashed") +
                 m.Count("WAL", Outcome::kRefused, "crashed") >
             0);
  BOOST_TEST(m.Count("WAL", Outcome::kSilent, "crashed") == 0,
             m.Count("WAL", Outcome::kSilent, "crashed")
                 << " silent differences:" << Lines(m.silent));
}

// F2 (docs/RELIABILITY.md): RocksDB reports a checksum error in the WAL as a bare
// "Corruption: checksum mismatch", and some SST damage against the MANIFEST; after a
// refusal the ledger checks every SST and WAL itself and names the damaged one (or,
// if they all check out, the MANIFEST).
BOOST_AUTO_TEST_CASE(every_refusal_names_the_damaged_file_or_seq) {
  const Matrix* built = MatrixOrFail();
  if (built == nullptr) return;
  const Matrix& m = *built;
  BOOST_TEST(m.refused.empty(),
             m.refused.size() << " refusals do not name the damage:" << Lines(m.refused));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
}  // namespace patledger::reliability
