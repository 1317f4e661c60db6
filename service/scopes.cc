// service/scopes.cc: parsing and formatting of scope sets; see scopes.h.

#include "service/scopes.h"

#include <cstdio>

#include "service/token_format.h"

namespace patledger::service {
namespace {

// An unknown scope name longer than this is not echoed in the error message: scope
// names are at most 16 characters, and a token (at least 37) pasted into the scopes
// field must never reach a message, a log or a response.
constexpr std::size_t kMaxEchoedScopeLength = 32;
static_assert(kMaxEchoedScopeLength < TokenLength("x"),
              "a token must be too long to be echoed as an unknown scope");

std::string_view TrimBlanks(std::string_view s) {
  const auto is_blank = [](char c) { return c == ' ' || c == '\t'; };
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

// "\"name\"" with non-printable bytes, quotes and backslashes escaped.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7F || c == '"' || c == '\\') {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02X", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

Status UnknownScope(std::string_view name) {
  std::string m = "unknown scope ";
  if (name.size() <= kMaxEchoedScopeLength) {
    m += Quote(name);
  } else {
    m += '(';
    m += std::to_string(name.size());
    m += " characters, not shown)";
  }
  m += "; valid scopes: ";
  m += FormatScopes(kAllScopes);
  return Status::InvalidArgument(std::move(m));
}

// Adds the scope `item` names to *set; an empty item (after trimming) adds nothing.
Status AddScope(std::string_view item, ScopeSet* set, bool* any) {
  item = TrimBlanks(item);
  if (item.empty()) return Status::OK();
  const std::optional<ScopeSet> bit = ScopeBit(item);
  if (!bit) return UnknownScope(item);
  *set |= *bit;
  *any = true;
  return Status::OK();
}

Result<ScopeSet> Finish(ScopeSet set, bool any) {
  if (!any) return Err(Status::InvalidArgument("at least one scope is required"));
  return set;
}

}  // namespace

Result<ScopeSet> ParseScopes(std::span<const std::string> names) {
  ScopeSet set = 0;
  bool any = false;
  for (const std::string& name : names) {
    if (Status s = AddScope(name, &set, &any); !s.ok()) return Err(std::move(s));
  }
  return Finish(set, any);
}

Result<ScopeSet> ParseScopeList(std::string_view comma_separated) {
  ScopeSet set = 0;
  bool any = false;
  std::string_view rest = comma_separated;
  while (true) {
    const std::size_t comma = rest.find(',');
    if (Status s = AddScope(rest.substr(0, comma), &set, &any); !s.ok()) {
      return Err(std::move(s));
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return Finish(set, any);
}

std::vector<std::string_view> ScopeNames(ScopeSet scopes) {
  std::vector<std::string_view> names;
  for (const ScopeInfo& s : kScopeTable) {
    if (scopes & s.bit) names.push_back(s.name);
  }
  return names;
}

std::string FormatScopes(ScopeSet scopes) {
  std::string out;
  for (const ScopeInfo& s : kScopeTable) {
    if (!(scopes & s.bit)) continue;
    if (!out.empty()) out += ", ";
    out += s.name;
  }
  return out;
}

}  // namespace patledger::service
