// The status macros evaluate their argument once, pass or fail: a failing
// check that ran its expression twice would repeat a push or a Declare.
#include "tests/testing/status_matchers.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"

namespace pskit {
namespace {

TEST(StatusMatchersTest, ExpectOkEvaluatesOnceWhenOk) {
  int calls = 0;
  auto f = [&] {
    ++calls;
    return absl::OkStatus();
  };
  EXPECT_OK(f());
  ASSERT_OK(f());
  EXPECT_EQ(calls, 2);
}

TEST(StatusMatchersTest, ExpectOkEvaluatesOnceWhenFailing) {
  static int calls = 0;
  calls = 0;
  EXPECT_NONFATAL_FAILURE(
      EXPECT_OK([] {
        ++calls;
        return absl::StatusOr<int>(absl::NotFoundError("no tensor 'w'"));
      }()),
      "no tensor 'w'");
  EXPECT_EQ(calls, 1);
}

TEST(StatusMatchersTest, AssertOkFailsFatallyAndOnce) {
  static int calls = 0;
  calls = 0;
  EXPECT_FATAL_FAILURE(ASSERT_OK([] {
                         ++calls;
                         return absl::InternalError("disk gone");
                       }()),
                       "disk gone");
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace pskit
