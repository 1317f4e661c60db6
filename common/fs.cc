#include "common/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace patledger {

std::string DirectoryOf(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return Status::IOError("cannot open directory " + dir + ": " + std::strerror(errno));
  }
  Status s;
  if (::fsync(fd) != 0) {
    s = Status::IOError("cannot fsync directory " + dir + ": " + std::strerror(errno));
  }
  ::close(fd);
  return s;
}

}  // namespace patledger
