// Small POSIX file-system helpers for durable publication of files and directories.
#ifndef PATLEDGER_COMMON_FS_H_
#define PATLEDGER_COMMON_FS_H_

#include <string>

#include "common/status.h"

namespace patledger {

// The directory part of `path` ("." when it has none, "/" for a file in the root).
std::string DirectoryOf(const std::string& path);

// fsync(2) on a directory, so that entries created, renamed or removed in it survive a
// power loss. IOError naming the directory on failure.
Status SyncDirectory(const std::string& dir);

}  // namespace patledger

#endif  // PATLEDGER_COMMON_FS_H_
