// Status and Result<T>: how every MLCapsule library reports failure. No exceptions cross a
// library API. Error tiers (STYLE.md): untrusted data -> an error Status that names the value and
// the allowed range; already-validated invariants -> assert; programmer misuse inside the trusted
// core -> abort.
//
//   Result<Plan> plan = LoadPlan(bytes);
//   if (!plan.ok()) return plan.status();
//   Use(plan.value());
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace mlcapsule {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // malformed or out-of-range input
  kUnsupported = 2,      // well-formed, but uses an operator/type/feature we do not implement
  kNotFound = 3,
  kDataLoss = 4,  // truncated or corrupted bytes
  kResourceExhausted = 5,
  kFailedPrecondition = 6,
  kPermissionDenied = 7,
  kIoError = 8,
  kInternal = 9,
  kAlreadyExists = 10,    // a record with this key (id, token, nonce, sequence) exists
  kUnauthenticated = 11,  // no or an unknown credential
  kUnavailable = 12,      // a device, helper or service the call needs is absent or gone
  kAborted = 13,          // a concurrent change interfered (a retry may succeed)
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

  // Prefixes the message with context ("node 'conv1' (Conv): ...").
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename... Args>
Status InvalidArgument(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kInvalidArgument, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status Unsupported(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kUnsupported, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status DataLoss(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kDataLoss, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status ResourceExhausted(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kResourceExhausted, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status IoError(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kIoError, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status InternalError(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kInternal, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status NotFound(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kNotFound, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status FailedPrecondition(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kFailedPrecondition, fmt::format(format, std::forward<Args>(args)...));
}

template <typename... Args>
Status AlreadyExists(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kAlreadyExists, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status Unauthenticated(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kUnauthenticated, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status Unavailable(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kUnavailable, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status Aborted(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kAborted, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
Status PermissionDenied(fmt::format_string<Args...> format, Args&&... args) {
  return Status(StatusCode::kPermissionDenied, fmt::format(format, std::forward<Args>(args)...));
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : value_(std::move(status)) {  // NOLINT
    assert(!std::get<Status>(value_).ok() && "Result built from an OK status");
  }
  bool ok() const { return std::holds_alternative<T>(value_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(value_);
  }
  T& value() & { return std::get<T>(value_); }
  const T& value() const& { return std::get<T>(value_); }
  T&& value() && { return std::get<T>(std::move(value_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }

 private:
  std::variant<T, Status> value_;
};

}  // namespace mlcapsule

#define MLC_CONCAT_INNER(a, b) a##b
#define MLC_CONCAT(a, b) MLC_CONCAT_INNER(a, b)

// Returns early from the enclosing function when `expr` is not OK.
#define MLC_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::mlcapsule::Status mlc_status_ = (expr);  \
    if (!mlc_status_.ok()) return mlc_status_; \
  } while (0)

// MLC_ASSIGN_OR_RETURN(auto x, MakeX()): unwraps a Result or returns its error.
#define MLC_ASSIGN_OR_RETURN(lhs, expr) \
  MLC_ASSIGN_OR_RETURN_IMPL(MLC_CONCAT(mlc_result_, __LINE__), lhs, expr)
#define MLC_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
