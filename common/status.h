// Status and Result<T>: how every library part of patledger reports failure.
//
// Library code never throws; it returns a Status (or a Result<T>, which is a
// value or a Status). Exceptions appear only at the edges (the CLI and the HTTP
// server), and each edge maps a Code to an exit code or an HTTP status in
// exactly one place.
//
// Thread safety: a Status is a value; distinct objects may be used from
// different threads without synchronization.
#pragma once

#include <expected>
#include <iosfwd>
#include <string>
#include <string_view>
#include <utility>

namespace patledger {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk = 0,
    kNotFound,          // the thing asked for does not exist
    kInvalidArgument,   // the caller's input is wrong; the message says which field
    kAlreadyExists,     // a unique name or id is taken
    kPermissionDenied,  // authenticated, but not allowed
    kUnauthenticated,   // no valid credential
    kFailedPrecondition,  // state forbids it (e.g. ledger already initialised)
    kCorruption,        // stored data is damaged; the message says where
    kIOError,           // the storage failed; nothing was acknowledged
    kInternal,          // a bug: an invariant did not hold
  };

  Status() = default;  // OK
  static Status OK() { return Status(); }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
  static Status PermissionDenied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }
  static Status Unauthenticated(std::string m) { return {Code::kUnauthenticated, std::move(m)}; }
  static Status FailedPrecondition(std::string m) {
    return {Code::kFailedPrecondition, std::move(m)};
  }
  static Status Corruption(std::string m) { return {Code::kCorruption, std::move(m)}; }
  static Status IOError(std::string m) { return {Code::kIOError, std::move(m)}; }
  static Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }

  // "Corruption: seq 42: checksum mismatch". Never contains a token secret:
  // callers must not put one in a message.
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context + ": "`.
  Status WithContext(std::string_view context) const;

 private:
  Status(Code c, std::string m) : code_(c), message_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

std::string_view CodeName(Status::Code code);
std::ostream& operator<<(std::ostream& os, Status::Code code);  // CodeName

// A value or the Status saying why there is none. REQUIRES: the Status is not OK.
template <typename T>
using Result = std::expected<T, Status>;

inline std::unexpected<Status> Err(Status s) { return std::unexpected<Status>(std::move(s)); }

}  // namespace patledger

// Returns early from the enclosing function when `expr` is not OK.
#define PATLEDGER_RETURN_IF_ERROR(expr)        \
  do {                                         \
    ::patledger::Status _st = (expr);          \
    if (!_st.ok()) return _st;                 \
  } while (0)

// The same, in a function returning Result<T>.
#define PATLEDGER_RETURN_ERR_IF_ERROR(expr)    \
  do {                                         \
    ::patledger::Status _st = (expr);          \
    if (!_st.ok()) return ::patledger::Err(std::move(_st)); \
  } while (0)
