// `patledger log` and `patledger export`: the event stream, filtered or whole, with
// damaged records reported in place; `log --follow` tails a live ledger.

#include <boost/json/serialize.hpp>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <thread>

#include "ledger/ledger.h"
#include "schema/event_codec.h"
#include "tools/forensics/common.h"
#include "tools/forensics/forensics.h"

namespace patledger::forensics {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using internal::FlatEvent;

enum class Sink { kTable, kJsonl, kCsv };

// Prints events and damage to `out` in one of the sinks, applying the filter. Keeps
// the names (one entry per user and token) and nothing per event.
class EventPrinter {
 public:
  EventPrinter(const Io& io, Sink sink, EventFilter filter,
               std::vector<std::string> types)
      : io_(io), sink_(sink), filter_(std::move(filter)), types_(std::move(types)) {
    if (!filter_.user.empty()) {
      std::uint64_t id = 0;
      const char* end = filter_.user.data() + filter_.user.size();
      auto [ptr, ec] = std::from_chars(filter_.user.data(), end, id);
      if (ec == std::errc() && ptr == end) user_id_ = id;
    }
    local_ = sink_ == Sink::kTable && internal::ShowLocal();
  }

  void Header() {
    if (sink_ == Sink::kCsv) {
      std::string h;
      for (const std::string& c : internal::EventColumns())
        h += (h.empty() ? "" : ",") + c;
      io_.out << h << "\n";
    } else if (sink_ == Sink::kTable) {
      io_.out << Row("SEQ", "WHEN (UTC)", "LOCAL", "EVENT", "ACTOR", "FROM", "DETAILS")
              << "\n";
    }
  }

  // A verified record (in seq order). Returns true if `until` was passed (stop).
  bool Record(const ledger::RecordView& r) {
    names_.Observe(*r.envelope);
    if (!user_id_ && !filter_.user.empty()) user_id_ = names_.UserId(filter_.user);
    last_seq_ = r.seq;
    if (r.envelope->recorded_at_us() > filter_.until_us) {
      past_until_ = true;
      return true;
    }
    if (r.seq < filter_.from_seq || r.seq > filter_.to_seq) return false;
    if (r.envelope->recorded_at_us() < filter_.since_us) return false;
    const FlatEvent e = internal::Flatten(r, names_);
    if (!Wanted(e)) return false;
    ++printed_;
    switch (sink_) {
      case Sink::kJsonl:
        internal::PrintJson(io_.out, internal::EventJson(e));
        break;
      case Sink::kCsv:
        io_.out << internal::CsvRow(internal::EventJson(e)) << "\n";
        break;
      case Sink::kTable:
        io_.out << Row(std::to_string(e.seq), internal::When(e.at_us),
                       local_ ? internal::LocalHint(e.at_us) : "", e.type,
                       internal::ActorText(e, names_),
                       e.client_address.empty() ? "-" : e.client_address,
                       internal::EventDetails(e))
                << "\n";
        break;
    }
    return false;
  }

  void Damage(const Status& s) {
    const std::uint64_t seq = internal::SeqOf(s.message());
    ++damaged_;
    if (first_damage_.ok()) first_damage_ = s;
    if (seq != 0 && (seq < filter_.from_seq || seq > filter_.to_seq)) return;
    switch (sink_) {
      case Sink::kJsonl:
        internal::PrintJson(io_.out, internal::DamageJson(seq, s.message()));
        break;
      case Sink::kCsv:
        io_.out << internal::CsvRow(internal::DamageJson(seq, s.message())) << "\n";
        break;
      case Sink::kTable:
        io_.out << "!! DAMAGED: " << s.message() << "\n";
        break;
    }
  }

  void Flush() { io_.out.flush(); }

  // OK, or a kCorruption naming the first damaged seq and the count.
  Status Result() const {
    if (damaged_ == 0) return Status::OK();
    std::string m = first_damage_.message();
    if (damaged_ > 1) m += " (" + std::to_string(damaged_) + " damaged records in all)";
    return Status::Corruption(m + "; the other records were printed");
  }

  std::uint64_t last_seq() const { return last_seq_; }
  bool past_until() const { return past_until_; }
  std::uint64_t printed() const { return printed_; }

 private:
  bool Wanted(const FlatEvent& e) const {
    if (!internal::TypeWanted(types_, e.type)) return false;
    if (!filter_.user.empty()) {
      if (!user_id_) return false;
      if (e.user_id.value_or(0) != *user_id_ && e.actor_user_id != *user_id_)
        return false;
    }
    if (filter_.token_id != 0) {
      const std::uint64_t t = filter_.token_id;
      if (e.token_id.value_or(0) != t && e.rotated_from.value_or(0) != t &&
          e.actor_token_id != t) {
        return false;
      }
    }
    return true;
  }

  std::string Row(const std::string& seq, const std::string& when,
                  const std::string& local, const std::string& type,
                  const std::string& actor, const std::string& from,
                  const std::string& details) const {
    std::vector<std::pair<std::string, std::size_t>> cells = {{seq, 7}, {when, 20}};
    if (local_) cells.push_back({local, 16});
    cells.insert(cells.end(), {{type, 17}, {actor, 16}, {from, 15}, {details, 0}});
    return internal::FixedRow(cells);
  }

  const Io& io_;
  Sink sink_;
  EventFilter filter_;
  std::vector<std::string> types_;
  bool local_ = false;
  internal::Names names_;
  std::optional<std::uint64_t> user_id_;
  std::uint64_t last_seq_ = 0;
  bool past_until_ = false;
  std::uint64_t printed_ = 0;
  std::uint64_t damaged_ = 0;
  Status first_damage_;
};

// Changes when the ledger's files change (WAL sizes, MANIFEST, CURRENT).
std::string DirSignature(const std::string& dir) {
  std::string sig;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".log") || name.starts_with("MANIFEST-") || name == "CURRENT") {
      sig += name + ":" + std::to_string(entry.file_size(ec)) + ";";
    }
  }
  return sig;
}

// Scans the whole ledger through `printer` (keep going past damage). `chain` receives
// chain(last visited record).
Status ScanAll(const ledger::Ledger& ledger, const EventFilter& filter,
               EventPrinter* printer, const Io& io, const char* label,
               ledger::ChainHash* chain) {
  Progress progress(io.err, io.progress, label, ledger.last_seq());
  ledger::ScanOptions scan;
  scan.keep_going = true;
  scan.to_seq = filter.to_seq;
  scan.on_damage = [&](const Status& s) { printer->Damage(s); };
  std::uint64_t n = 0;
  Status s = ledger.Scan(scan, [&](const ledger::RecordView& r) -> Status {
    *chain = r.chain;
    if (printer->Record(r)) return internal::StopScan();
    progress.Update(++n);
    return Status::OK();
  });
  progress.Done();
  if (internal::IsStopScan(s) || s.ok() || s.IsCorruption()) return Status::OK();
  return s;  // I/O
}

Status Follow(const LogOptions& options, EventPrinter* printer, ledger::ChainHash chain,
              std::uint64_t next) {
  const std::string dir = internal::LedgerDir(options.source);
  std::string signature = DirSignature(dir);
  // The chain is known if the last record scanned was intact.
  bool chain_known = printer->last_seq() + 1 == next;
  auto stopped = [&] { return options.stop != nullptr && options.stop->load(); };
  while (!stopped()) {
    // Sleep in short steps so that `stop` is noticed quickly.
    const auto wake = std::chrono::steady_clock::now() + options.interval;
    while (!stopped() && std::chrono::steady_clock::now() < wake) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (stopped()) break;
    const std::string now = DirSignature(dir);
    if (now == signature) continue;
    signature = now;
    auto opened = internal::OpenLedger(options.source);
    if (!opened) continue;  // the writer is between files; try again next time
    const ledger::Ledger& ledger = **opened;
    const std::uint64_t last = std::min(ledger.last_seq(), options.filter.to_seq);
    for (; next <= last && !stopped(); ++next) {
      auto bytes = ledger.Read(next);
      if (!bytes) {
        printer->Damage(bytes.error().IsCorruption()
                            ? bytes.error()
                            : Status::Corruption("seq " + std::to_string(next) + ": " +
                                                 bytes.error().ToString()));
        chain_known = false;
        continue;
      }
      ledger::RecordView view;
      view.seq = next;
      view.envelope_bytes = {reinterpret_cast<const std::uint8_t*>(bytes->data()),
                             bytes->size()};
      view.envelope = schema::GetEnvelope(bytes->data());
      ledger::ChainHash prev{};
      const auto* prev_bytes = view.envelope->sequencing()->prev_chain().bytes();
      for (std::size_t i = 0; i < prev.size(); ++i) prev[i] = prev_bytes->Get(i);
      if (chain_known && prev != chain) {
        printer->Damage(Status::Corruption(
            "seq " + std::to_string(next) + ": chain mismatch (prev_chain " +
            internal::Hex(prev) + ", chain(" + std::to_string(next - 1) + ") " +
            internal::Hex(chain) + ")"));
      }
      chain = ledger::NextChain(prev, view.envelope_bytes);
      chain_known = true;
      view.chain = chain;
      if (printer->Record(view)) return Status::OK();  // past --until
    }
    printer->Flush();
    if (next > options.filter.to_seq) break;
  }
  return Status::OK();
}

}  // namespace

Status Log(const LogOptions& options, const Io& io) {
  auto types = internal::NormalizeTypes(options.filter.types);
  if (!types) return types.error();
  auto opened = internal::OpenLedger(options.source);
  if (!opened) return opened.error();
  EventPrinter printer(io, options.json ? Sink::kJsonl : Sink::kTable, options.filter,
                       std::move(*types));
  printer.Header();
  ledger::ChainHash chain{};
  PATLEDGER_RETURN_IF_ERROR(
      ScanAll(**opened, options.filter, &printer, io, "log", &chain));
  const std::uint64_t next = (*opened)->last_seq() + 1;
  opened->reset();
  printer.Flush();
  if (options.follow && next <= options.filter.to_seq && !printer.past_until()) {
    PATLEDGER_RETURN_IF_ERROR(Follow(options, &printer, chain, next));
  }
  if (!options.json && printer.printed() == 0) io.err << "patledger: no event matches\n";
  return printer.Result();
}

Status Export(const ExportOptions& options, const Io& io) {
  auto opened = internal::OpenLedger(options.source);
  if (!opened) return opened.error();
  EventPrinter printer(io,
                       options.format == ExportFormat::kCsv ? Sink::kCsv : Sink::kJsonl,
                       EventFilter{}, {});
  printer.Header();
  ledger::ChainHash chain{};
  PATLEDGER_RETURN_IF_ERROR(
      ScanAll(**opened, EventFilter{}, &printer, io, "export", &chain));
  printer.Flush();
  return printer.Result();
}

}  // namespace patledger::forensics
