// common/status_macros.h
//
// PSKIT_RETURN_IF_ERROR and PSKIT_ASSIGN_OR_RETURN: early return on a failed
// absl::Status / absl::StatusOr (this Abseil release ships neither).
//
//   PSKIT_RETURN_IF_ERROR(ValidateLayout(req.layout()));
//   PSKIT_ASSIGN_OR_RETURN(Tensor* t, store.Find(ns, name));
//
// Thread safety: macros only.
#ifndef PSKIT_COMMON_STATUS_MACROS_H_
#define PSKIT_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PSKIT_RETURN_IF_ERROR(expr)                    \
  do {                                                 \
    ::absl::Status pskit_status_ = (expr);             \
    if (!pskit_status_.ok()) return pskit_status_;     \
  } while (false)

#define PSKIT_STATUS_CONCAT_INNER_(a, b) a##b
#define PSKIT_STATUS_CONCAT_(a, b) PSKIT_STATUS_CONCAT_INNER_(a, b)

// `lhs` may declare a variable (`auto x`, `Foo* f`) or name an existing one.
#define PSKIT_ASSIGN_OR_RETURN(lhs, expr)                                   \
  PSKIT_ASSIGN_OR_RETURN_IMPL_(                                             \
      PSKIT_STATUS_CONCAT_(pskit_statusor_, __LINE__), lhs, expr)

#define PSKIT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // PSKIT_COMMON_STATUS_MACROS_H_
