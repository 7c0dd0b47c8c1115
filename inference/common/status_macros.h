// Early-return helpers for absl::Status / absl::StatusOr.
#ifndef QWEN_INFERENCE_COMMON_STATUS_MACROS_H_
#define QWEN_INFERENCE_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define QWEN_CONCAT_INNER_(a, b) a##b
#define QWEN_CONCAT_(a, b) QWEN_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::absl::Status qwen_status_ = (expr);        \
    if (!qwen_status_.ok()) return qwen_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Foo());` assigns the value of a StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(QWEN_CONCAT_(qwen_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // QWEN_INFERENCE_COMMON_STATUS_MACROS_H_
