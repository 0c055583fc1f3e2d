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

}  // namespace pskit::testing

#define EXPECT_OK(expr) \
  EXPECT_TRUE(::pskit::testing::GetStatus(expr).ok()) \
      << ::pskit::testing::GetStatus(expr)
#define ASSERT_OK(expr)                                          \
  do {                                                           \
    const ::absl::Status pskit_test_status_ =                    \
        ::pskit::testing::GetStatus(expr);                       \
    ASSERT_TRUE(pskit_test_status_.ok()) << pskit_test_status_;  \
  } while (false)

#define PSKIT_TEST_CONCAT_INNER_(a, b) a##b
#define PSKIT_TEST_CONCAT_(a, b) PSKIT_TEST_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(PSKIT_TEST_CONCAT_(pskit_test_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(var, lhs, expr)   \
  auto var = (expr);                                 \
  ASSERT_TRUE(var.ok()) << var.status();             \
  lhs = std::move(var).value()

#endif  // PSKIT_TESTS_TESTING_STATUS_MATCHERS_H_
