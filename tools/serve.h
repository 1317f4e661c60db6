// tools/serve.h: `patledger serve`, the HTTP server, as a function tests can call.
//
//   patledger serve [--data DIR] [--listen HOST:PORT] [--threads N] [--writer-threads N]
//                   [--max-connections N] [--key-file F] [--access-log FILE|-]
//
// If --data holds no ledger, it is initialised first (as `patledger init`): the root
// token is printed ALONE on `out`, once, with an explanation on `err`. The server then
// listens at once ("listening on http://HOST:PORT" on `err`, with the bound port, so
// --listen HOST:0 can be discovered) and /-/liveness answers while the ledger is
// replayed on another thread ("replayed N events in X ms" on `err`); after that
// /-/readiness answers 200 and the API is available. A ledger that fails to open
// (corruption names the sequence number) is reported on `err` and ends the server with
// the exit code of tools::ExitCodeFor. SIGTERM or SIGINT: stop accepting, finish the
// requests in flight (up to 10 s), close the ledger, exit 0. Bad options: usage on
// `err`, exit 2. The access log goes to stderr by default ("-"), or to FILE (appended).
//
// Returns the process exit code. Installs SIGTERM/SIGINT handlers while it runs.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace patledger::tools {

// `args` are the arguments after "serve".
int Serve(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace patledger::tools
