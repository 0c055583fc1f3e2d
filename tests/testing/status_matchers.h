// tests/testing/status_matchers.h
//
// ASSERT_OK / EXPECT_OK / ASSERT_OK_AND_ASSIGN for absl::Status and
// absl::StatusOr (this Abseil release has no status matchers). Failures print
// the status.
//
// Thread safety: macros and pure functions.
#ifndef PSKIT_TESTS_TESTING_STATUS_MATCHERS_H_
#define PSKIT_TESTS_TESTING_STATUS_MATCHERS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace pskit::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// A gtest predicate-formatter: success when `s` is OK; otherwise the failure
// prints the expression and the status. gtest evaluates the expression once.
template <typename S>
::testing::AssertionResult IsOkFormat(const char* expr, const S& s) {
  const absl::Status& status = GetStatus(s);
  if (status.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expr << " is " << status;
}

}  // namespace pskit::testing

// Each evaluates `expr` exactly once; more text may be streamed after them.
#define EXPECT_OK(expr) EXPECT_PRED_FORMAT1(::pskit::testing::IsOkFormat, expr)
#define ASSERT_OK(expr) ASSERT_PRED_FORMAT1(::pskit::testing::IsOkFormat, expr)

#define PSKIT_TEST_CONCAT_INNER_(a, b) a##b
#define PSKIT_TEST_CONCAT_(a, b) PSKIT_TEST_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(PSKIT_TEST_CONCAT_(pskit_test_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(var, lhs, expr)   \
  auto var = (expr);                                 \
  ASSERT_TRUE(var.ok()) << var.status();             \
  lhs = std::move(var).value()

#endif  // PSKIT_TESTS_TESTING_STATUS_MATCHERS_H_
