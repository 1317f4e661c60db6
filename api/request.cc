#include "api/request.h"

#include <boost/beast/core/detail/base64.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/json/serialize.hpp>
#include <cctype>

namespace patledger::api {
namespace {

namespace http = boost::beast::http;

std::string Normalize(std::string_view name) {
  if (name.ends_with("[]")) name.remove_suffix(2);
  return std::string(name);
}

int HexDigit(char h) {
  if (h >= '0' && h <= '9') return h - '0';
  if (h >= 'a' && h <= 'f') return h - 'a' + 10;
  if (h >= 'A' && h <= 'F') return h - 'A' + 10;
  return -1;
}

// Decodes one application/x-www-form-urlencoded component: '+' is a space, %XX a
// byte; a '%' not followed by two hex digits stays as it is.
std::string FormDecode(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < raw.size() &&
               HexDigit(raw[i + 1]) >= 0 && HexDigit(raw[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexDigit(raw[i + 1]) * 16 + HexDigit(raw[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Status AddQuery(std::string_view query, Params* params) {
  // Split by hand rather than with a URL parser: GitLab clients send raw characters
  // (e.g. '[' ']' in scopes[]) that strict RFC 3986 parsing refuses.
  while (!query.empty()) {
    const auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    std::string key = FormDecode(pair.substr(0, eq));
    std::string value = eq == std::string_view::npos ? std::string()
                                                     : FormDecode(pair.substr(eq + 1));
    params->Add(Normalize(key), std::move(value));
  }
  return Status::OK();
}

void AddJsonValue(const std::string& name, const boost::json::value& v, Params* params) {
  switch (v.kind()) {
    case boost::json::kind::string:
      params->Add(name, std::string(v.get_string()));
      break;
    case boost::json::kind::bool_:
      params->Add(name, v.get_bool() ? "true" : "false");
      break;
    case boost::json::kind::int64:
      params->Add(name, std::to_string(v.get_int64()));
      break;
    case boost::json::kind::uint64:
      params->Add(name, std::to_string(v.get_uint64()));
      break;
    case boost::json::kind::double_:
      params->Add(name, boost::json::serialize(v));
      break;
    case boost::json::kind::array:
      for (const auto& e : v.get_array()) {
        if (!e.is_array() && !e.is_object()) AddJsonValue(name, e, params);
      }
      break;
    case boost::json::kind::null:
    case boost::json::kind::object:
      break;  // no parameter of ours is an object; ignore rather than guess
  }
}

}  // namespace

std::optional<std::string_view> Params::Get(std::string_view name) const {
  auto it = values_.find(std::string(name));
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return std::string_view(it->second.front());
}

const std::vector<std::string>& Params::All(std::string_view name) const {
  static const std::vector<std::string> kNone;
  auto it = values_.find(std::string(name));
  return it == values_.end() ? kNone : it->second;
}

void Params::Add(std::string name, std::string value) {
  values_[std::move(name)].push_back(std::move(value));
}

Result<ParsedRequest> ParseRequest(const Request& request) {
  ParsedRequest out;
  const std::string_view target = request.target();
  const auto q = target.find('?');
  if (target.empty() || target.front() != '/') {
    return Err(Status::InvalidArgument("malformed request target"));
  }
  // Paths are decoded like components, except that '+' stays a plus.
  for (std::string_view raw = target.substr(0, q); !raw.empty();) {
    const auto plus = raw.find('+');
    out.path += FormDecode(raw.substr(0, plus));
    if (plus == std::string_view::npos) break;
    out.path.push_back('+');
    raw.remove_prefix(plus + 1);
  }
  if (q != std::string_view::npos) {
    PATLEDGER_RETURN_ERR_IF_ERROR(AddQuery(target.substr(q + 1), &out.params));
  }
  const std::string_view body = request.body();
  if (body.empty()) return out;
  std::string_view type = request[http::field::content_type];
  type = type.substr(0, type.find(';'));
  while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
  if (type == "application/json") {
    boost::json::error_code ec;
    boost::json::parse_options opts;
    opts.max_depth = 8;
    boost::json::value v = boost::json::parse(body, ec, {}, opts);
    if (ec) return Err(Status::InvalidArgument("malformed JSON body: " + ec.message()));
    if (!v.is_object()) return Err(Status::InvalidArgument("the JSON body must be an object"));
    for (const auto& [key, value] : v.get_object()) {
      AddJsonValue(Normalize(key), value, &out.params);
    }
  } else if (type == "application/x-www-form-urlencoded" || type.empty()) {
    PATLEDGER_RETURN_ERR_IF_ERROR(AddQuery(body, &out.params));
  } else {
    return Err(Status::InvalidArgument("unsupported Content-Type; send application/json or "
                                       "application/x-www-form-urlencoded"));
  }
  return out;
}

std::string PresentedToken(const Request& request, const Params& params,
                           bool include_original_uri) {
  if (auto t = params.Get("private_token")) return std::string(*t);
  if (auto h = request.find("PRIVATE-TOKEN"); h != request.end()) {
    return std::string(h->value());
  }
  if (auto h = request.find(http::field::authorization); h != request.end()) {
    std::string_view v = h->value();
    auto starts = [&](std::string_view scheme) {
      return v.size() > scheme.size() &&
             std::equal(scheme.begin(), scheme.end(), v.begin(),
                        [](char a, char b) { return std::tolower(a) == std::tolower(b); });
    };
    if (starts("Bearer ")) return std::string(v.substr(7));
    if (starts("Basic ")) {
      std::string_view enc = v.substr(6);
      // Not base64::decoded_size(n) (= n / 4 * 3): that is short for unpadded input,
      // whose last partial group still decodes to up to 2 bytes.
      std::string decoded((enc.size() + 3) / 4 * 3, '\0');
      auto [written, read] =
          boost::beast::detail::base64::decode(decoded.data(), enc.data(), enc.size());
      (void)read;
      decoded.resize(written);
      const auto colon = decoded.find(':');
      if (colon != std::string::npos) return decoded.substr(colon + 1);
    }
  }
  if (include_original_uri) {
    if (auto h = request.find("X-Original-URI"); h != request.end()) {
      std::string_view uri = h->value();
      const auto q = uri.find('?');
      if (q != std::string_view::npos) {
        Params original;
        if (AddQuery(uri.substr(q + 1), &original).ok()) {
          if (auto t = original.Get("private_token")) return std::string(*t);
        }
      }
    }
  }
  return {};
}

}  // namespace patledger::api
