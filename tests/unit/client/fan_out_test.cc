// client_internal::FanOut, the one fan-out of pskit, with scripted answers
// (no network) and a FakeClock advanced by the backoff instead of sleeping:
// which calls are sent again, the backoff sequence, when it gives up, and
// how JoinFailures names every failed shard.
#include "client/internal/fan_out.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace pskit::client_internal {
namespace {

struct TestCall : FanOutCall {
  int sent = 0;
};

// Answers each call at once: shard s fails with script[s][k] on its k-th
// send (OK past the end of its script).
class ScriptedShards {
 public:
  explicit ScriptedShards(std::map<uint32_t, std::vector<grpc::Status>> script)
      : script_(std::move(script)) {}

  void Start(TestCall& c, size_t, std::function<void(grpc::Status)> done) {
    const std::vector<grpc::Status>& s = script_[c.shard];
    const size_t k = static_cast<size_t>(c.sent++);
    done(k < s.size() ? s[k] : grpc::Status::OK);
  }

 private:
  std::map<uint32_t, std::vector<grpc::Status>> script_;
};

grpc::Status Unavailable() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "down");
}

// What gRPC 1.51 answers for a name with no address (c-ares).
grpc::Status NoName(const std::string& address) {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "DNS resolution failed for " + address +
                          ": C-ares status is not ARES_SUCCESS qtype=A "
                          "name=x is_balancer=0: Domain name not found");
}

std::vector<TestCall> CallsTo(uint32_t shards) {
  std::vector<TestCall> calls(shards);
  for (uint32_t s = 0; s < shards; ++s) calls[s].shard = s;
  return calls;
}

const std::vector<std::string> kAddresses = {"h0:1", "h1:1", "h2:1"};

class FanOutTest : public ::testing::Test {
 protected:
  FanOutOptions Options(bool retry) {
    FanOutOptions o;
    o.timeout = absl::Seconds(1);
    o.retry_unavailable = retry;
    o.initial_backoff = absl::Milliseconds(100);
    o.max_backoff = absl::Milliseconds(400);
    o.op = "Op";
    o.clock = &clock_;
    return o;
  }

  testing::FakeClock clock_;
};

auto NoCheck() {
  return [](TestCall&) { return absl::OkStatus(); };
}

TEST_F(FanOutTest, RetriesOnlyTheUnavailableShardWithDoublingBackoff) {
  ScriptedShards shards(
      {{1,
        {Unavailable(), Unavailable(), Unavailable(), Unavailable(),
         grpc::Status(grpc::StatusCode::CANCELLED, "shutting down")}}});
  std::vector<TestCall> calls = CallsTo(3);
  FanOutOptions o = Options(/*retry=*/true);
  o.timeout = absl::Seconds(10);
  const int attempts = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      NoCheck());
  EXPECT_EQ(attempts, 6);
  EXPECT_EQ(calls[0].sent, 1);
  EXPECT_EQ(calls[1].sent, 6);
  EXPECT_EQ(calls[2].sent, 1);
  // Doubling, capped at max_backoff.
  EXPECT_EQ(clock_.sleeps(), (std::vector<absl::Duration>{
                         absl::Milliseconds(100), absl::Milliseconds(200),
                         absl::Milliseconds(400), absl::Milliseconds(400),
                         absl::Milliseconds(400)}));
  EXPECT_TRUE(JoinFailures("Op", calls, kAddresses, {}, o, attempts).ok());
}

TEST_F(FanOutTest, GivesUpWhenTheNextBackoffWouldPassTheTimeout) {
  ScriptedShards shards({{2, std::vector<grpc::Status>(100, Unavailable())}});
  std::vector<TestCall> calls = CallsTo(3);
  const FanOutOptions o = Options(/*retry=*/true);
  const int attempts = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      NoCheck());
  // Sleeps 100 + 200 + 400 ms; at 700 ms another 400 would pass 1 s.
  EXPECT_EQ(attempts, 4);
  EXPECT_EQ(clock_.sleeps().size(), 3u);
  const absl::Status s = JoinFailures("Op", calls, kAddresses, {}, o, attempts);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.message(),
            "Op: shard 2 (h2:1) still unavailable after 4 attempts over 1s: "
            "down");
}

TEST_F(FanOutTest, AnotherErrorStopsAtOnceAndEveryFailedShardIsNamed) {
  ScriptedShards shards(
      {{0, {grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad")}},
       {1, {grpc::Status(grpc::StatusCode::NOT_FOUND, "gone")}},
       {2, {Unavailable()}}});
  std::vector<TestCall> calls = CallsTo(3);
  const FanOutOptions o = Options(/*retry=*/true);
  const int attempts = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      NoCheck());
  EXPECT_EQ(attempts, 1);
  EXPECT_TRUE(clock_.sleeps().empty());
  const absl::Status s = JoinFailures("Op", calls, kAddresses, {}, o, attempts);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "Op: shard 0 (h0:1): bad; shard 1 (h1:1): gone");
}

TEST_F(FanOutTest, WithoutRetryAnUnavailableShardIsReportedAsIs) {
  ScriptedShards shards({{1, {Unavailable()}}});
  std::vector<TestCall> calls = CallsTo(2);
  const FanOutOptions o = Options(/*retry=*/false);
  const int attempts = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      NoCheck());
  EXPECT_EQ(attempts, 1);
  EXPECT_EQ(calls[1].Outcome().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(JoinFailures("Op", calls, kAddresses, {}, o, attempts).message(),
            "Op: shard 1 (h1:1): down");
}

// A shard name that does not resolve (yet) is asked again until the
// timeout even where UNAVAILABLE is not retried (psctl), the others are not
// sent again, and the failure names the name.
TEST_F(FanOutTest, AnUnresolvedNameIsRetriedUntilTheTimeoutAndNamed) {
  ScriptedShards shards({{1, std::vector<grpc::Status>(100, NoName("h1:1"))},
                         {2, {Unavailable()}}});
  std::vector<TestCall> calls = CallsTo(3);
  FanOutOptions o = Options(/*retry=*/false);
  o.addresses = &kAddresses;
  const int attempts = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      NoCheck());
  // Sleeps 100 + 200 + 400 ms; at 700 ms another 400 would pass 1 s.
  EXPECT_EQ(attempts, 4);
  EXPECT_EQ(calls[0].sent, 1);
  EXPECT_EQ(calls[1].sent, 4);
  EXPECT_EQ(calls[2].sent, 1);  // not retried: retry_unavailable is off
  EXPECT_EQ(clock_.sleeps().size(), 3u);
  const absl::Status s = JoinFailures("Op", calls, kAddresses, {}, o, attempts);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(
      s.message(), "Op: the name 'h1' of shard 1 (h1:1) did not resolve "
                   "within 1s: DNS resolution failed for h1:1"))
      << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "shard 2 (h2:1): down")) << s;

  // With retry_unavailable too (the Client), the same words.
  testing::FakeClock clock2;
  ScriptedShards again({{0, std::vector<grpc::Status>(100, NoName("h0:1"))}});
  calls = CallsTo(1);
  o = Options(/*retry=*/true);
  o.clock = &clock2;
  const int n = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { again.Start(c, i, done); },
      NoCheck());
  EXPECT_TRUE(absl::StrContains(
      JoinFailures("Op", calls, kAddresses, {}, o, n).message(),
      "Op: the name 'h0' of shard 0 (h0:1) did not resolve within 1s"));
}

// A bounded wait (psctl checkpoint's "wait at most W") also bounds the
// retries of a name that fails at once: no retry is begun that would end
// past it, and the call keeps its name failure.
TEST_F(FanOutTest, ABoundedWaitStopsRetryingAnUnresolvedName) {
  ScriptedShards shards({{0, std::vector<grpc::Status>(100, NoName("h0:1"))}});
  std::vector<TestCall> calls = CallsTo(1);
  FanOutOptions o = Options(/*retry=*/true);
  o.addresses = &kAddresses;
  o.timeout = absl::Seconds(60);
  o.wait = absl::Milliseconds(1);  // over before the first 100 ms backoff
  const int attempts = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      NoCheck());
  EXPECT_EQ(attempts, 1);
  EXPECT_EQ(calls[0].sent, 1);
  EXPECT_TRUE(clock_.sleeps().empty());
  EXPECT_TRUE(IsNameNotResolved(calls[0].Outcome())) << calls[0].Outcome();
}

// A name that resolves after a while: the call goes through. While the
// name is unknown a call that should wait_for_ready is sent without it (so
// gRPC reports the failure instead of holding the call), and with it once
// the name resolved and only the connection failed.
TEST_F(FanOutTest, ANameThatResolvesLaterIsUsedAndThenWaitedFor) {
  ScriptedShards shards({{0, {NoName("h0:1"), NoName("h0:1"), Unavailable()}}});
  std::vector<TestCall> calls = CallsTo(1);
  FanOutOptions o = Options(/*retry=*/true);
  o.wait_for_ready = true;
  std::vector<bool> waited;
  const int attempts = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) {
        waited.push_back(c.wait_for_ready);
        shards.Start(c, i, done);
      },
      NoCheck());
  EXPECT_EQ(attempts, 4);
  EXPECT_TRUE(calls[0].Outcome().ok());
  EXPECT_EQ(waited, (std::vector<bool>{false, false, false, true}));

  // Without retry_unavailable a wait_for_ready call always waits: failing
  // it at once on a reconnecting shard would break what was asked.
  ScriptedShards quiet({});
  calls = CallsTo(1);
  o.retry_unavailable = false;
  FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { quiet.Start(c, i, done); },
      NoCheck());
  EXPECT_TRUE(calls[0].wait_for_ready);
}

TEST(HostOf, StripsThePortAndIpv6Brackets) {
  EXPECT_EQ(HostOf("shard-0.ps.default.svc:7000"), "shard-0.ps.default.svc");
  EXPECT_EQ(HostOf("[::1]:7000"), "::1");
  EXPECT_EQ(HostOf("h"), "h");
  EXPECT_EQ(HostOf("::1"), "::1");
}

TEST(IsNameNotResolved, OnlyUnavailableWithGrpcsDnsWords) {
  EXPECT_TRUE(IsNameNotResolved(FromGrpcStatus(NoName("h:1"))));
  EXPECT_FALSE(IsNameNotResolved(FromGrpcStatus(Unavailable())));
  EXPECT_FALSE(IsNameNotResolved(
      absl::NotFoundError("DNS resolution failed for h:1")));
}

TEST_F(FanOutTest, AnswerCheckRunsOnSuccessAndItsErrorCounts) {
  ScriptedShards shards({});
  std::vector<TestCall> calls = CallsTo(2);
  const FanOutOptions o = Options(/*retry=*/true);
  const int attempts = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      [](TestCall& c) {
        return c.shard == 1 ? absl::DataLossError("short answer")
                            : absl::OkStatus();
      });
  EXPECT_EQ(attempts, 1);
  const absl::Status s = JoinFailures("Op", calls, kAddresses, {}, o, attempts);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "Op: shard 1 (h1:1): short answer");
}

}  // namespace
}  // namespace pskit::client_internal
