// tools/forensics/generator.h: a deterministic generator of realistic ledgers, for
// tests, benchmarks and the worked investigation in docs/forensics.md.
//
//   patledger generate --data DIR --users N --tokens M --seed S [--days D]
//                      [--start YYYY-MM-DD] [--key-file F] [--truth FILE] [--leaks FILE]
//                      [--batch N]
//
// It writes a new ledger of N users (plus root) and M tokens (TokenCreated events, the
// root token and rotation successors included) spread over D days of simulated time
// from --start: registrations (early ones first), creations through the API by owners,
// by administrators (some through sudo) and from the CLI, rotations, revocations
// (by_owner, by_admin, reported_leaked), reuse of a rotated-away token (the family is
// revoked, family_reuse), blocks and unblocks, admin grants and removals; expiries
// happen by themselves as simulated time passes. Every event is built exactly as the
// service builds it (schema/event_codec.h, one Ledger::Append per request, rotations as
// one transaction) and obeys the service's rules (expiry after today and at most 365
// days ahead, sudo only for administrators, nothing for blocked owners).
//
// Deterministic: the same options give byte-identical ledger records (keys and values)
// and the same truth file. So time comes from a ManualClock the generator drives, the
// randomness from a seeded xoshiro256** (never std::random_device or a <random>
// distribution, whose output is implementation-defined), token secrets from
// GeneratedToken(seed, id), and the instance key either from --key-file (copied to
// <data>/token.key) or — TEST ONLY, printed as a warning — derived from the seed, so
// anyone who knows the seed can compute every secret of a generated ledger. Never use
// a generated ledger or its key for anything real.
//
// The truth file (--truth) records what the generator did, from its own model and
// independently of replay::State: one JSON line per event with the seq the ledger gave
// it, then an "end" line:
//   {"seq":1,"at_us":..,"op":"init","key_fingerprint":"<16 hex>","token_prefix":"glpat-"}
//   {"seq":..,"at_us":..,"op":"user","user_id":..,"username":..,"admin":bool, ACTOR}
//   {"seq":..,"at_us":..,"op":"block"|"unblock"|"admin_grant"|"admin_remove",
//    "user_id":.., ACTOR}
//   {"seq":..,"at_us":..,"op":"create","token_id":..,"user_id":..,"name":..,
//    "description":..,"scopes":<mask>,"expires_day":<days since 1970-01-01>,
//    "rotated_from":<id or 0>, ACTOR}
//   {"seq":..,"at_us":..,"op":"revoke","token_id":..,"reason":"by_owner"|..., ACTOR}
//   {"op":"end","last_seq":..,"head_chain":"<hex>","users":..,"tokens":..,"seed":..,
//    "first_us":..,"last_us":..}
// where ACTOR stands for "actor_user_id", "actor_token_id", "via_sudo",
// "client_address" and "request_id".
//
// --leaks FILE writes a sample secret-scanner report for triage (TEST ONLY: it holds
// plaintext tokens of the generated ledger): a live token, a token revoked as
// reported_leaked, a rotated-away one, an expired one (when there are such), a
// well-formed token the ledger never had, a mistyped one, and two strings of other
// formats.
#pragma once

#include <array>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>

#include "common/status.h"
#include "tools/forensics/forensics.h"

namespace patledger::forensics {

struct GeneratorOptions {
  std::string data;            // a directory without a ledger (created if missing)
  std::uint64_t users = 20;    // besides root
  std::uint64_t tokens = 100;  // TokenCreated events in all, root's token included
  std::uint64_t seed = 1;
  int days = 180;
  std::string start = "2026-01-05";  // first simulated day (UTC); events from 08:00
  std::string key_file;              // a pre-made key file; "" = derived from the seed
  std::string truth_file;            // "" = none
  std::string leaks_file;            // "" = none
  // Requests per Ledger::Append: 1 = one transaction per request, as the service
  // writes. N > 1 appends the events of N requests as one transaction (for large
  // benchmark ledgers: ~10x faster); the records then differ from --batch 1's in
  // their txn_index/txn_count (and so in the chain), nothing else, and are still the
  // same for the same options.
  std::uint64_t batch = 1;
};

struct GeneratorResult {
  std::uint64_t last_seq = 0;
  ChainHash head_chain{};
  std::uint64_t users = 0;  // root included
  std::uint64_t tokens = 0;
  std::int64_t first_us = 0, last_us = 0;
  bool derived_key = false;
};

Result<GeneratorResult> Generate(const GeneratorOptions& options);

// The plaintext of token `token_id` of a ledger generated with `seed` (TEST ONLY).
std::string GeneratedToken(std::uint64_t seed, std::uint64_t token_id,
                           std::string_view prefix = "glpat-");

// The 32-byte key derived from `seed` when no --key-file is given (TEST ONLY).
std::array<std::uint8_t, 32> DerivedKey(std::uint64_t seed);

// `patledger generate`: Generate, then a summary (and the test-only warning) on err.
Status GenerateCommand(const GeneratorOptions& options, const Io& io);

}  // namespace patledger::forensics
