// tools/cli.h: the `patledger` command line, as a function tests can call.
//
// RunCli parses argv, runs one subcommand against a TokenService and returns the
// process exit code. Secrets go to `out` only where a command's whole purpose is to
// show a new token once (init, token create, token rotate); every message, error
// and listing goes elsewhere and never contains one.
//
// Exit codes (the only place a Status becomes one; see ExitCodeFor):
//   0 success          1 auth: the token is not valid (reason on stderr)
//   2 usage or invalid argument          3 not found
//   4 already exists or not allowed in the current state
//   5 the ledger is corrupt              6 I/O error (disk, lock held by a server)
//   7 permission (key file mode)         70 internal error
#pragma once

#include <iosfwd>

#include "common/status.h"

namespace patledger::tools {

int RunCli(int argc, const char* const* argv, std::istream& in, std::ostream& out,
           std::ostream& err);

int ExitCodeFor(const Status& status);

}  // namespace patledger::tools
