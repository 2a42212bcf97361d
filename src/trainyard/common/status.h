#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace trainyard {

// Error codes. Each maps one-to-one to an HTTP status (see HttpStatusFor).
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // 400: the caller's input is wrong.
  kUnauthenticated,     // 401: no or bad credentials.
  kPermissionDenied,    // 403: credentials valid, action not allowed.
  kNotFound,            // 404
  kAlreadyExists,       // 409
  kFailedPrecondition,  // 409: the system is not in a state that allows the action.
  kPayloadTooLarge,     // 413
  kResourceExhausted,   // 429
  kCancelled,           // 499
  kInternal,            // 500
  kUnavailable,         // 503: a dependency (dockerd, registry) cannot be reached.
  kDeadlineExceeded,    // 504
};

// The outcome of an operation: OK, or a code with a message a person can act on.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "NOT_FOUND: message", or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "prefix: message".
  Status WithPrefix(std::string_view prefix) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

std::string_view StatusCodeName(StatusCode code);
int HttpStatusFor(StatusCode code);
// Inverse of HttpStatusFor for statuses received from a server.
StatusCode StatusCodeFromHttp(int http_status);

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status FailedPrecondition(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status PermissionDenied(std::string m) {
  return {StatusCode::kPermissionDenied, std::move(m)};
}
inline Status Unauthenticated(std::string m) {
  return {StatusCode::kUnauthenticated, std::move(m)};
}
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) {
  return {StatusCode::kDeadlineExceeded, std::move(m)};
}
inline Status PayloadTooLarge(std::string m) {
  return {StatusCode::kPayloadTooLarge, std::move(m)};
}
inline Status ResourceExhausted(std::string m) {
  return {StatusCode::kResourceExhausted, std::move(m)};
}

// A value or an error status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& s) : v_(s) {}        // NOLINT: implicit by design.
  StatusOr(Status&& s) : v_(std::move(s)) {}  // NOLINT
  StatusOr(const T& v) : v_(v) {}             // NOLINT
  StatusOr(T&& v) : v_(std::move(v)) {}       // NOLINT

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

  // Precondition: ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace trainyard

#define TY_CONCAT_INNER(a, b) a##b
#define TY_CONCAT(a, b) TY_CONCAT_INNER(a, b)

#define TY_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::trainyard::Status ty_status_ = (expr); \
    if (!ty_status_.ok()) return ty_status_; \
  } while (0)

#define TY_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()

#define TY_ASSIGN_OR_RETURN(lhs, expr) \
  TY_ASSIGN_OR_RETURN_IMPL(TY_CONCAT(ty_statusor_, __LINE__), lhs, expr)
