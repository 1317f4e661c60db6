// web/assets.h: the files of the Access tokens page (web/index.html, app.js, style.css),
// embedded in the binary at build time by web/embed_assets.cmake, so `patledger serve`
// needs nothing installed beside it and serves exactly the files it was built with.
//
// Thread safety: the table is constant; FindAsset may be called from any thread.
#pragma once

#include <string_view>

namespace patledger::web {

struct Asset {
  std::string_view content_type;  // e.g. "text/javascript; charset=utf-8"
  std::string_view body;          // the file's bytes (static storage)
};

// The embedded file named `path` ("index.html", "app.js", "style.css": a plain file
// name, no directory), or nullptr.
const Asset* FindAsset(std::string_view path);

}  // namespace patledger::web
