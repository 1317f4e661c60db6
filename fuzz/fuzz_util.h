// fuzz/fuzz_util.h: what the fuzz targets and fuzz/make_corpus.cc share — scratch
// directories, a deterministic sample event log, and a small real ledger built from it.
// docs/RELIABILITY.md, section 7, describes the targets.
//
// Nothing here holds or prints a token: the sample log carries made-up digests (no
// instance key exists for it), so none of its tokens can authenticate anywhere.
//
// Thread safety: none needed; a fuzz target runs one input at a time.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "ledger/format.h"
#include "ledger/ledger.h"
#include "schema/event_codec.h"

namespace patledger::fuzz {

// Stops the fuzz target with a message (never an input's content). Used for broken
// invariants of the harness itself and for findings that are not a crash on their own.
[[noreturn]] inline void Die(const std::string& what) {
  std::fprintf(stderr, "fuzz: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// A fresh directory for scratch ledgers. Prefers /dev/shm (tmpfs: the ledger syncs
// every append, and fsync on a disk would dominate the run), then $TMPDIR, then /tmp.
inline std::string MakeScratchDir(const std::string& tag) {
  std::string base = "/tmp";
  if (const char* t = std::getenv("TMPDIR"); t != nullptr && *t != '\0') base = t;
  if (::access("/dev/shm", W_OK) == 0) base = "/dev/shm";
  std::string tmpl = base + "/patledger-fuzz-" + tag + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp failed under " + base);
  return tmpl;
}

inline void RemoveTree(const std::string& dir) {
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

// Replaces `to` with a copy of the directory tree `from`.
inline void CopyTree(const std::string& from, const std::string& to) {
  RemoveTree(to);
  std::error_code ec;
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive, ec);
  if (ec) Die("copying " + from + " failed: " + ec.message());
}

// The event context of sample event `n`: fixed, increasing times.
inline schema::EventContext SampleContext(std::uint64_t n, std::uint64_t actor) {
  schema::EventContext ctx;
  ctx.recorded_at_us = 1'767'225'600'000'000 + static_cast<std::int64_t>(n) * 1'000'000;
  ctx.actor_user_id = actor;
  ctx.actor_token_id = actor == 0 ? 0 : 1;
  ctx.client_address = actor == 0 ? "" : "192.0.2.7";
  ctx.request_id = "fuzz-" + std::to_string(n);
  return ctx;
}

// A made-up digest: a fixed byte pattern per token id (no key produces it knowingly).
inline schema::Digest SampleDigest(std::uint64_t token_id) {
  schema::Digest d;
  for (std::size_t i = 0; i < d.size(); ++i) {
    d[i] = static_cast<std::uint8_t>(0xA5 ^ (token_id * 31 + i * 7));
  }
  return d;
}

// A small, realistic event log, as transactions (each is one Ledger::Append): the
// ledger is initialised, root, alice and bob registered, tokens created, one revoked,
// one rotated (revoke + successor in one transaction), bob blocked. Deterministic.
inline std::vector<std::vector<std::string>> SampleTransactions() {
  using schema::RevokeReason;
  using schema::UserChange;
  std::uint64_t n = 0;
  auto ctx = [&](std::uint64_t actor) { return SampleContext(++n, actor); };
  auto token = [&](std::uint64_t id, std::uint64_t user, std::uint32_t scopes,
                   std::uint64_t rotated_from, const char* name) {
    schema::TokenCreatedFields f;
    f.token_id = id;
    f.user_id = user;
    f.name = name;
    f.description = id % 2 ? "made by the fuzz corpus" : "";
    f.scopes = scopes;
    f.expires_day = 20'800 + static_cast<std::int32_t>(id);  // 2026-12-12 onwards
    f.digest = SampleDigest(id);
    f.rotated_from = rotated_from;
    return schema::BuildTokenCreated(ctx(1), f);
  };
  std::vector<std::vector<std::string>> txns;
  txns.push_back({schema::BuildLedgerInitialized(ctx(0), 0x0123456789ABCDEFull, "glpat-"),
                  schema::BuildUserRegistered(ctx(0), 1, "root", "Administrator",
                                              "admin@example.com", true),
                  token(1, 1, 0x0A, 0, "root")});
  txns.push_back({schema::BuildUserRegistered(ctx(1), 2, "alice", "Alice",
                                              "alice@example.com", false)});
  txns.push_back({schema::BuildUserRegistered(ctx(1), 3, "bob", "Bob", "", false)});
  txns.push_back({token(2, 2, 0x02, 0, "ci")});
  txns.push_back({token(3, 2, 0x11, 0, "read-only")});
  txns.push_back({token(4, 3, 0xE4, 0, "registry")});
  txns.push_back({schema::BuildTokenRevoked(ctx(1), 3, RevokeReason::ByOwner)});
  txns.push_back({schema::BuildTokenRevoked(ctx(2), 2, RevokeReason::Rotated),
                  token(5, 2, 0x02, 2, "ci")});
  txns.push_back({schema::BuildUserChanged(ctx(1), 3, UserChange::Blocked)});
  txns.push_back({schema::BuildUserChanged(ctx(1), 2, UserChange::AdminGranted)});
  return txns;
}

// Builds the sample log as a real ledger in `dir` (which must not hold one). With
// `flush_after` = k > 0, the first k transactions are flushed to SST files (through a
// raw RocksDB handle, as tests/ledger_test.cc does) and the rest stay in the WAL, so
// the directory has both kinds of files. Returns the number of records.
inline std::uint64_t BuildSampleLedger(const std::string& dir, std::size_t flush_after) {
  const auto txns = SampleTransactions();
  auto append = [&](std::size_t from, std::size_t to) {
    ledger::Options options;
    options.create_if_missing = true;
    auto opened = ledger::Ledger::Open(dir, options);
    if (!opened) Die("creating the sample ledger: " + opened.error().ToString());
    for (std::size_t i = from; i < to && i < txns.size(); ++i) {
      auto seq = (*opened)->Append(txns[i]);
      if (!seq) Die("appending to the sample ledger: " + seq.error().ToString());
    }
    return (*opened)->last_seq();
  };
  if (flush_after == 0) return append(0, txns.size());
  append(0, flush_after);
  {
    rocksdb::DBOptions db_options;
    db_options.atomic_flush = true;
    rocksdb::ColumnFamilyOptions cf;
    const std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {rocksdb::kDefaultColumnFamilyName, cf},
        {std::string(ledger::format::kEventsColumnFamily), cf},
        {std::string(ledger::format::kMetaColumnFamily), cf},
    };
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(db_options, dir, cfs, &handles, &raw);
    if (!s.ok()) Die("raw open of the sample ledger: " + s.ToString());
    std::unique_ptr<rocksdb::DB> db(raw);
    s = db->Flush(rocksdb::FlushOptions(), handles);
    if (!s.ok()) Die("flushing the sample ledger: " + s.ToString());
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db->Close().PermitUncheckedError();
  }
  return append(flush_after, txns.size());
}

}  // namespace patledger::fuzz
