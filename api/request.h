// api/request.h: what the handler reads from an HTTP request — the path, the
// parameters (query string, JSON body or form body, merged as GitLab's Grape does) and
// the presented credential.
//
// Thread safety: pure functions over their arguments.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "api/handler.h"
#include "common/status.h"

namespace patledger::api {

// Request parameters by name. `scopes[]=a&scopes[]=b` and a JSON array both give
// "scopes" -> {"a", "b"}; JSON true/false become "true"/"false"; null is absent.
class Params {
 public:
  // The first value of `name`, if present.
  std::optional<std::string_view> Get(std::string_view name) const;
  // Every value of `name` (empty if absent).
  const std::vector<std::string>& All(std::string_view name) const;
  bool Has(std::string_view name) const { return Get(name).has_value(); }
  void Add(std::string name, std::string value);

 private:
  std::unordered_map<std::string, std::vector<std::string>> values_;
};

struct ParsedRequest {
  std::string path;  // decoded path without the query, e.g. "/api/v4/user"
  Params params;
};

// Splits the target and merges query and body parameters (the body wins on a clash of
// single values). kInvalidArgument for a malformed target or body, with the reason.
Result<ParsedRequest> ParseRequest(const Request& request);

// The token presented, looked for in GitLab's order: `private_token` parameter,
// PRIVATE-TOKEN header, `Authorization: Bearer`, HTTP Basic password. For forward auth
// also the `private_token` in the query of X-Original-URI. Empty if none.
std::string PresentedToken(const Request& request, const Params& params,
                           bool include_original_uri);

}  // namespace patledger::api
