// service/scopes.h: the scope table of personal access tokens, and what each scope
// implies.
//
// A token carries a ScopeSet: bit i set = scope i of kScopeTable. The numbering is
// stored in the ledger (schema/events.fbs, TokenCreated.scopes), so a bit is never
// renumbered or reused; new scopes are appended. The static_asserts below pin it.
//
//   bit  scope              implies (Effective)
//   ---  -----------------  ---------------------------------------------------
//    0   read_user
//    1   api                every scope except sudo
//    2   read_registry
//    3   sudo               nothing; and it is dropped unless the owner is an admin
//    4   read_api           read_user
//    5   read_repository
//    6   write_repository   read_repository
//    7   write_registry     read_registry
//
// A stored ScopeSet is what the user granted; authorization asks Grants(), which
// compares against the Effective() set. Bits outside the table grant nothing.
//
// Thread safety: everything here is a pure function of its arguments.

#ifndef PATLEDGER_SERVICE_SCOPES_H_
#define PATLEDGER_SERVICE_SCOPES_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace patledger::service {

// Bit i set = scope i of kScopeTable.
using ScopeSet = std::uint32_t;

inline constexpr ScopeSet kReadUser = ScopeSet{1} << 0;
inline constexpr ScopeSet kApi = ScopeSet{1} << 1;
inline constexpr ScopeSet kReadRegistry = ScopeSet{1} << 2;
inline constexpr ScopeSet kSudo = ScopeSet{1} << 3;
inline constexpr ScopeSet kReadApi = ScopeSet{1} << 4;
inline constexpr ScopeSet kReadRepository = ScopeSet{1} << 5;
inline constexpr ScopeSet kWriteRepository = ScopeSet{1} << 6;
inline constexpr ScopeSet kWriteRegistry = ScopeSet{1} << 7;

struct ScopeInfo {
  ScopeSet bit;
  std::string_view name;         // as typed by users and shown in the API
  std::string_view description;  // one line, shown on the token page
};

// In bit order: kScopeTable[i].bit == 1 << i. Descriptions follow GitLab's
// documentation of personal access token scopes.
inline constexpr std::array<ScopeInfo, 8> kScopeTable = {{
    {kReadUser, "read_user",
     "Read-only access to the endpoints under /users (every GET request of the "
     "Users API)."},
    {kApi, "api",
     "Complete read/write access to the API; required for Git over HTTP when "
     "two-factor authentication is enabled."},
    {kReadRegistry, "read_registry",
     "Read (pull) container registry images of private projects that require "
     "authorization."},
    {kSudo, "sudo",
     "Perform API actions as any user in the system (only if the token's owner is "
     "an admin)."},
    {kReadApi, "read_api",
     "Read-only access to the API, including the container and package "
     "registries."},
    {kReadRepository, "read_repository",
     "Read-only access (pull) to repositories of private projects over Git over "
     "HTTP or the repository files API."},
    {kWriteRepository, "write_repository",
     "Read/write access (pull, push) to repositories of private projects over Git "
     "over HTTP (not the API)."},
    {kWriteRegistry, "write_registry",
     "Write (push) access to container registry images of private projects."},
}};

// Every scope of the table.
inline constexpr ScopeSet kAllScopes = (ScopeSet{1} << kScopeTable.size()) - 1;

// Pinned: these numbers are stored in the ledger (schema/events.fbs).
static_assert(kReadUser == 1u && kApi == 2u && kReadRegistry == 4u && kSudo == 8u &&
                  kReadApi == 16u && kReadRepository == 32u && kWriteRepository == 64u &&
                  kWriteRegistry == 128u,
              "scope bits are stored in TokenCreated.scopes; never renumber them");
static_assert(kAllScopes == 0xFFu, "a new scope is appended, never inserted");
static_assert(
    [] {
      for (std::size_t i = 0; i < kScopeTable.size(); ++i) {
        if (kScopeTable[i].bit != (ScopeSet{1} << i)) return false;
      }
      return true;
    }(),
    "kScopeTable[i] must describe bit i");

// The bit of the scope named `name` (exact, case-sensitive), or nullopt.
constexpr std::optional<ScopeSet> ScopeBit(std::string_view name) {
  for (const ScopeInfo& s : kScopeTable) {
    if (s.name == name) return s.bit;
  }
  return std::nullopt;
}

// `granted` plus every scope it implies (see the table at the top), restricted to
// known scopes; sudo is removed unless the token's owner is an admin.
constexpr ScopeSet Effective(ScopeSet granted, bool owner_is_admin) {
  ScopeSet s = granted & kAllScopes;
  if (s & kApi) s |= kAllScopes & ~kSudo;
  if (s & kReadApi) s |= kReadUser;
  if (s & kWriteRepository) s |= kReadRepository;
  if (s & kWriteRegistry) s |= kReadRegistry;
  if (!owner_is_admin) s &= ~kSudo;
  return s;
}

// True when a token granted `granted` may do something that needs every scope in
// `required`. Grants(g, 0, a) is true.
constexpr bool Grants(ScopeSet granted, ScopeSet required, bool owner_is_admin) {
  return (Effective(granted, owner_is_admin) & required) == required;
}

// One pass of Effective is already closed under the implications (api implies
// read_api, which implies read_user, and so on), for every possible set.
static_assert(
    [] {
      for (ScopeSet s = 0; s <= kAllScopes; ++s) {
        for (bool admin : {false, true}) {
          if (Effective(Effective(s, admin), admin) != Effective(s, admin)) return false;
        }
      }
      return true;
    }(),
    "Effective must be idempotent");
static_assert(Grants(kApi, kReadRegistry | kWriteRepository | kReadUser, false));
static_assert(!Grants(kApi, kSudo, true) && !Grants(kApi | kSudo, kSudo, false));
static_assert(Grants(kSudo, kSudo, true));

// Parses scope names, one per element (surrounding blanks ignored; empty elements
// skipped; duplicates allowed). Errors (InvalidArgument): no scope at all ("at least
// one scope is required"), or an unknown name; the message names it (escaped; a long
// name is not echoed, so a pasted token never reaches a message) and lists the valid
// scopes.
[[nodiscard]] Result<ScopeSet> ParseScopes(std::span<const std::string> names);

// As ParseScopes, over a comma-separated list: "api,read_user" or "read_user, api".
// Accepts what FormatScopes produces.
[[nodiscard]] Result<ScopeSet> ParseScopeList(std::string_view comma_separated);

// The names of the scopes in `scopes`, in table order; unknown bits are skipped.
// The views point into kScopeTable (static storage).
std::vector<std::string_view> ScopeNames(ScopeSet scopes);

// The names joined by ", " in table order: FormatScopes(kApi | kReadUser) ==
// "read_user, api"; "" for no scope.
std::string FormatScopes(ScopeSet scopes);

}  // namespace patledger::service

#endif  // PATLEDGER_SERVICE_SCOPES_H_
