// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status, which bookworm's Abseil lacks.
#ifndef REPTRACE_COMMON_STATUS_MACROS_H_
#define REPTRACE_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define REPTRACE_CONCAT_INNER_(a, b) a##b
#define REPTRACE_CONCAT_(a, b) REPTRACE_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the caller if it is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status _rt_status = (expr);            \
    if (!_rt_status.ok()) return _rt_status;       \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F());` evaluates F() (an absl::StatusOr<T>); returns its status
// from the caller if it is not OK, else moves the value into `lhs`.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(REPTRACE_CONCAT_(_rt_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // REPTRACE_COMMON_STATUS_MACROS_H_
