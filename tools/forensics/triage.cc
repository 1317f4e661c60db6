// `patledger triage`: for candidate strings from a secret scanner, which are ours,
// which exist, whose, in what state, and whether they were valid at an instant. It
// never revokes: it prints the calls that would.
//
// A candidate is a secret: it is never printed, only its line number and a short
// SHA-256 fingerprint (`printf %s "$TOKEN" | sha256sum` gives the same prefix).

#include <openssl/sha.h>

#include <fstream>
#include <ostream>
#include <set>

#include "common/clock.h"
#include "service/token_format.h"
#include "service/token_key.h"
#include "tools/forensics/common.h"
#include "tools/forensics/forensics.h"

namespace patledger::forensics {
namespace {

namespace json = boost::json;

std::string Fingerprint(const std::string& candidate) {
  std::uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(candidate.data()), candidate.size(),
         digest);
  return "sha256:" + internal::Hex(std::span<const std::uint8_t>(digest, 6));
}

std::string Trim(const std::string& line) {
  const auto first = line.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = line.find_last_not_of(" \t\r\n");
  return line.substr(first, last - first + 1);
}

}  // namespace

Status Triage(const TriageOptions& options, const Io& io) {
  std::ifstream file;
  std::istream* in = &io.in;
  if (options.file != "-") {
    file.open(options.file);
    if (!file) return Status::NotFound("cannot read " + options.file);
    in = &file;
  }
  auto key = service::TokenKey::Load(internal::KeyPath(options.source));
  if (!key) {
    return key.error().WithContext(
        "triage needs the instance key to recognise tokens (--key-file)");
  }
  auto opened = internal::OpenLedger(options.source);
  if (!opened) return opened.error();
  const ledger::Ledger& ledger = **opened;

  replay::State now_state, at_state;
  // With --now, the ledger as it stood then.
  PATLEDGER_RETURN_IF_ERROR(internal::ReplayTo(
      ledger, &now_state, options.now_us.value_or(INT64_MAX), UINT64_MAX, io, "triage",
      [&](const ledger::RecordView& r) -> Status {
        if (options.at_us && r.envelope->recorded_at_us() <= *options.at_us) {
          return at_state.Apply(r);
        }
        return Status::OK();
      },
      nullptr));
  if (key->Fingerprint() != now_state.key_fingerprint()) {
    return Status::FailedPrecondition(
        "the key file " + internal::KeyPath(options.source) +
        " does not belong to this ledger (fingerprint mismatch)");
  }
  const std::string prefix = now_state.token_prefix();
  const std::int64_t now = options.now_us.value_or(SystemClock::Get()->NowMicros());
  const auto users = internal::UsersById(now_state);
  const auto users_at = internal::UsersById(at_state);
  auto username = [&](std::uint64_t id) {
    auto it = users.find(id);
    return it == users.end() ? std::string("#") + std::to_string(id)
                             : it->second.username;
  };

  const bool local = !options.json && internal::ShowLocal();
  const std::string at_header = options.at_us
                                    ? "VALID AT " + internal::When(*options.at_us)
                                    : std::string("VALID AT");
  auto row = [&](const std::vector<std::string>& cells) {
    std::vector<std::pair<std::string, std::size_t>> c;
    const std::size_t widths[] = {6, 20, 14, 8, 7, 22, 15, 0};
    for (std::size_t i = 0; i < cells.size(); ++i) c.push_back({cells[i], widths[i]});
    io.out << internal::FixedRow(c) << "\n";
  };
  if (!options.json) {
    std::vector<std::string> h = {"LINE",  "FINGERPRINT", "SHAPE",    "LEDGER",
                                  "TOKEN", "OWNER",       "STATE NOW"};
    if (options.at_us) h.push_back(at_header);
    row(h);
  }

  std::uint64_t candidates = 0, well_formed = 0, known = 0, valid_then = 0;
  std::set<std::uint64_t> to_revoke;  // bounded by the number of tokens
  std::string line;
  std::uint64_t line_no = 0;
  while (std::getline(*in, line)) {
    ++line_no;
    const std::string candidate = Trim(line);
    if (candidate.empty() || candidate[0] == '#') continue;
    ++candidates;
    const service::TokenShape shape = service::CheckTokenShape(candidate, prefix);
    json::object o;
    o["type"] = "candidate";
    o["line"] = line_no;
    o["fingerprint"] = Fingerprint(candidate);
    o["shape"] = service::TokenShapeName(shape);
    o["known"] = false;
    std::vector<std::string> cells = {std::to_string(line_no), Fingerprint(candidate),
                                      std::string(service::TokenShapeName(shape))};
    std::optional<replay::TokenMeta> meta;
    if (shape == service::TokenShape::kOk) {
      ++well_formed;
      index::TokenEntry entry;
      if (now_state.token_index().Lookup(key->Digest(candidate), &entry)) {
        meta = now_state.FindToken(entry.token_id);
      }
    }
    if (!meta) {
      cells.insert(cells.end(),
                   {shape == service::TokenShape::kOk ? "unknown" : "-", "-", "-", "-"});
      if (options.at_us) cells.push_back("-");
      if (options.json) {
        o["token_id"] = nullptr;
        o["user_id"] = nullptr;
        o["username"] = nullptr;
        o["state"] = nullptr;
        o["valid_at"] = options.at_us ? json::value(false) : json::value(nullptr);
        o["live"] = false;
        internal::PrintJson(io.out, o);
      } else {
        row(cells);
      }
      continue;
    }
    ++known;
    auto owner = users.find(meta->user_id);
    const internal::Validity v =
        internal::ValidityAt(*meta, owner == users.end() ? nullptr : &owner->second, now);
    // Live: it works now, or would again if its owner were unblocked.
    const bool is_live =
        v == internal::Validity::kValid || v == internal::Validity::kOwnerBlocked;
    std::optional<bool> was_valid;
    if (options.at_us) {
      auto then = at_state.FindToken(meta->id);
      auto then_owner = then ? users_at.find(then->user_id) : users_at.end();
      was_valid =
          then && internal::ValidityAt(
                      *then, then_owner == users_at.end() ? nullptr : &then_owner->second,
                      *options.at_us) == internal::Validity::kValid;
      valid_then += *was_valid;
    }
    if (is_live) to_revoke.insert(meta->id);
    const std::string who = username(meta->user_id);
    if (options.json) {
      o["known"] = true;
      o["token_id"] = meta->id;
      o["user_id"] = meta->user_id;
      o["username"] = who;
      o["state"] = internal::ValidityName(v);
      o["valid_at"] = was_valid ? json::value(*was_valid) : json::value(nullptr);
      o["live"] = is_live;
      internal::PrintJson(io.out, o);
    } else {
      cells.insert(cells.end(), {"known", std::to_string(meta->id),
                                 internal::UserText(meta->user_id, who),
                                 std::string(internal::ValidityName(v))});
      if (was_valid) cells.push_back(*was_valid ? "yes" : "no");
      row(cells);
    }
  }
  if (in->bad()) return Status::IOError("reading the candidates failed");

  const std::string data =
      options.server_data.empty() ? options.source.data : options.server_data;
  auto api_call = [&](std::uint64_t id) {
    return "curl -X DELETE -H \"PRIVATE-TOKEN: $ADMIN_TOKEN\" " + options.api_url +
           "/api/v4/personal_access_tokens/" + std::to_string(id);
  };
  auto cli_call = [&](std::uint64_t id) {
    return "patledger token revoke " + std::to_string(id) +
           " --reason reported_leaked --data " + data;
  };
  if (options.json) {
    for (std::uint64_t id : to_revoke) {
      json::object o;
      o["type"] = "revoke";
      o["token_id"] = id;
      o["user_id"] = now_state.FindToken(id)->user_id;
      o["api"] = api_call(id);
      o["cli"] = cli_call(id);
      internal::PrintJson(io.out, o);
    }
    json::object o;
    o["type"] = "summary";
    o["candidates"] = candidates;
    o["well_formed"] = well_formed;
    o["known"] = known;
    o["live"] = to_revoke.size();
    o["valid_at"] = options.at_us ? json::value(valid_then) : json::value(nullptr);
    o["at"] = options.at_us ? json::value(internal::JsonTime(*options.at_us))
                            : json::value(nullptr);
    o["now"] = internal::JsonTime(now);
    internal::PrintJson(io.out, o);
    return Status::OK();
  }
  io.out << "\n"
         << candidates << " candidate" << (candidates == 1 ? "" : "s") << ": "
         << well_formed << " in this ledger's format (prefix " << prefix
         << ", valid checksum), " << known << " known to the ledger, " << to_revoke.size()
         << " live at " << internal::When(now)
         << (local ? " (" + internal::LocalHint(now) + ")" : "");
  if (options.at_us)
    io.out << ", " << valid_then << " valid at " << internal::When(*options.at_us);
  io.out << ".\n";
  if (to_revoke.empty()) {
    io.out << "Nothing to revoke.\n";
    return Status::OK();
  }
  io.out << "\nThis tool never revokes. To revoke the live ones, either over the HTTP "
            "API with\n"
            "an administrator's token in $ADMIN_TOKEN (the ledger records reason "
            "by_admin):\n";
  for (std::uint64_t id : to_revoke) io.out << "  " << api_call(id) << "\n";
  io.out << "or on the server's host while `patledger serve` is stopped (records "
            "reported_leaked):\n";
  for (std::uint64_t id : to_revoke) io.out << "  " << cli_call(id) << "\n";
  return Status::OK();
}

}  // namespace patledger::forensics
