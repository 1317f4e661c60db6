#include "common/status.h"

#include <ostream>

namespace patledger {

std::string_view CodeName(Status::Code code) {
  switch (code) {
    case Status::Code::kOk: return "OK";
    case Status::Code::kNotFound: return "Not found";
    case Status::Code::kInvalidArgument: return "Invalid argument";
    case Status::Code::kAlreadyExists: return "Already exists";
    case Status::Code::kPermissionDenied: return "Permission denied";
    case Status::Code::kUnauthenticated: return "Unauthenticated";
    case Status::Code::kFailedPrecondition: return "Failed precondition";
    case Status::Code::kCorruption: return "Corruption";
    case Status::Code::kIOError: return "IO error";
    case Status::Code::kInternal: return "Internal error";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(CodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, std::string(context) + ": " + message_);
}

std::ostream& operator<<(std::ostream& os, Status::Code code) { return os << CodeName(code); }

}  // namespace patledger
