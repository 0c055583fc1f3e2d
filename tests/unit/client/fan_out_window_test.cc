// client_internal::FanOut with a per-shard window
// (FanOutOptions::max_in_flight_per_shard), against fake shards that answer
// on a thread of their own, as gRPC does: the window is never exceeded, a
// shard's calls start in order and the later ones from the completion of
// earlier ones, and retries and `recover` still work under a window.
#include <deque>
#include <map>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "client/internal/fan_out.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_clock.h"

namespace pskit::client_internal {
namespace {

struct TestCall : FanOutCall {
  int sent = 0;
};

// Holds every started call until its thread answers it (newest first, to
// stir the order), and answers nothing before `gate` calls have started:
// shard s answers its k-th send of a call script[s][k] (OK past the end).
// Counts the calls in flight per shard.
class AsyncShards {
 public:
  explicit AsyncShards(std::map<uint32_t, std::vector<grpc::StatusCode>> script,
                       int gate = 0)
      : script_(std::move(script)),
        gate_(gate),
        answerer_([this] { Answer(); }) {}
  ~AsyncShards() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    answerer_.join();
  }

  void Start(TestCall& c, size_t i, std::function<void(grpc::Status)> done) {
    absl::MutexLock lock(&mu_);
    const std::vector<grpc::StatusCode>& s = script_[c.shard];
    const size_t k = static_cast<size_t>(c.sent++);
    const grpc::StatusCode code = k < s.size() ? s[k] : grpc::StatusCode::OK;
    const size_t now = ++in_flight_[c.shard];
    max_in_flight_[c.shard] = std::max(max_in_flight_[c.shard], now);
    started_[c.shard].push_back(i);
    ++started_total_;
    pending_.push_back({c.shard, code, std::move(done)});
  }

  // Per shard: the most calls in flight at once, and the calls' indices in
  // the order they were started (every attempt).
  std::map<uint32_t, size_t> max_in_flight() {
    absl::MutexLock lock(&mu_);
    return max_in_flight_;
  }
  std::map<uint32_t, std::vector<size_t>> started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }

 private:
  struct Pending {
    uint32_t shard;
    grpc::StatusCode code;
    std::function<void(grpc::Status)> done;
  };

  void Answer() {
    for (;;) {
      Pending p;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](AsyncShards* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
              return s->stop_ || (!s->pending_.empty() &&
                                  s->started_total_ >= s->gate_);
            },
            this));
        if (pending_.empty()) return;
        p = std::move(pending_.back());
        pending_.pop_back();
        --in_flight_[p.shard];
      }
      // As gRPC does: the callback runs without any lock of the shard's.
      p.done(p.code == grpc::StatusCode::OK ? grpc::Status::OK
                                            : grpc::Status(p.code, "scripted"));
    }
  }

  absl::Mutex mu_;
  std::map<uint32_t, std::vector<grpc::StatusCode>> script_ ABSL_GUARDED_BY(mu_);
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, size_t> in_flight_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, size_t> max_in_flight_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, std::vector<size_t>> started_ ABSL_GUARDED_BY(mu_);
  int started_total_ ABSL_GUARDED_BY(mu_) = 0;
  const int gate_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread answerer_;  // last: starts once the rest is built
};

// `per_shard` calls to each of `shards` shards, interleaved as PlanRequests
// orders them (round r holds every shard's r-th call).
std::vector<TestCall> Calls(uint32_t shards, size_t per_shard) {
  std::vector<TestCall> calls(shards * per_shard);
  for (size_t i = 0; i < calls.size(); ++i) calls[i].shard = i % shards;
  return calls;
}

std::vector<size_t> IndicesOf(const std::vector<TestCall>& calls,
                              uint32_t shard) {
  std::vector<size_t> out;
  for (size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].shard == shard) out.push_back(i);
  }
  return out;
}

class FanOutWindowTest : public ::testing::Test {
 protected:
  FanOutOptions Options(size_t window) {
    FanOutOptions o;
    o.timeout = absl::Seconds(30);
    o.retry_unavailable = true;
    o.initial_backoff = absl::Milliseconds(100);
    o.max_backoff = absl::Milliseconds(400);
    o.op = "Op";
    o.clock = &clock_;
    o.max_in_flight_per_shard = window;
    return o;
  }

  testing::FakeClock clock_;
};

TEST_F(FanOutWindowTest, NeverMoreThanTheWindowPerShardAndInPlanOrder) {
  // Nothing is answered before 6 calls (the window of every shard) started:
  // without a window all 30 would be in flight by then.
  AsyncShards shards({}, /*gate=*/6);
  std::vector<TestCall> calls = Calls(3, 10);
  absl::Mutex mu;
  int answered = 0;
  const int attempts = FanOut(
      calls, Options(2),
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      [&](TestCall&) {
        absl::MutexLock lock(&mu);
        ++answered;
        return absl::OkStatus();
      });
  EXPECT_EQ(attempts, 1);
  EXPECT_EQ(answered, 30);
  for (const TestCall& c : calls) EXPECT_TRUE(c.Outcome().ok()) << c.Outcome();
  for (uint32_t s = 0; s < 3; ++s) {
    EXPECT_EQ(shards.max_in_flight()[s], 2u) << "shard " << s;
    EXPECT_EQ(shards.started()[s], IndicesOf(calls, s)) << "shard " << s;
  }
}

TEST_F(FanOutWindowTest, ZeroSendsEveryCallAtOnce) {
  // Nothing is answered before all 10 started, which they must all be.
  AsyncShards shards({}, /*gate=*/10);
  std::vector<TestCall> calls = Calls(2, 5);
  FanOut(
      calls, Options(0),
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      [](TestCall&) { return absl::OkStatus(); });
  for (const TestCall& c : calls) EXPECT_TRUE(c.Outcome().ok()) << c.Outcome();
  EXPECT_EQ(shards.max_in_flight()[0], 5u);
  EXPECT_EQ(shards.max_in_flight()[1], 5u);
}

TEST_F(FanOutWindowTest, RetriesGoThroughTheWindowToo) {
  // Every call of shard 1 fails UNAVAILABLE once, then CANCELLED once.
  AsyncShards shards({{1,
                       {grpc::StatusCode::UNAVAILABLE,
                        grpc::StatusCode::CANCELLED}}});
  std::vector<TestCall> calls = Calls(2, 8);
  const FanOutOptions o = Options(3);
  const int attempts = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      [](TestCall&) { return absl::OkStatus(); });
  EXPECT_EQ(attempts, 3);
  EXPECT_EQ(clock_.sleeps(), (std::vector<absl::Duration>{
                                 absl::Milliseconds(100),
                                 absl::Milliseconds(200)}));
  EXPECT_TRUE(JoinFailures("Op", calls, {"h0:1", "h1:1"}, {}, o, attempts)
                  .ok());
  for (const TestCall& c : calls) EXPECT_EQ(c.sent, c.shard == 1 ? 3 : 1);
  EXPECT_LE(shards.max_in_flight()[0], 3u);
  EXPECT_LE(shards.max_in_flight()[1], 3u);
  // Each attempt in plan order.
  std::vector<size_t> order = IndicesOf(calls, 1);
  std::vector<size_t> thrice = order;
  thrice.insert(thrice.end(), order.begin(), order.end());
  thrice.insert(thrice.end(), order.begin(), order.end());
  EXPECT_EQ(shards.started()[1], thrice);
}

TEST_F(FanOutWindowTest, RecoverResendsUnderTheWindow) {
  // Shard 0's calls: down, then the restarted shard forgot the worker, then
  // fine once recovered.
  AsyncShards shards({{0,
                       {grpc::StatusCode::UNAVAILABLE,
                        grpc::StatusCode::NOT_FOUND}}});
  std::vector<TestCall> calls = Calls(2, 6);
  FanOutOptions o = Options(2);
  absl::Mutex mu;
  std::vector<uint32_t> recovered;
  o.recover = [&](uint32_t shard, const absl::Status& s) {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
    recovered.push_back(shard);
    return true;
  };
  const int attempts = FanOut(
      calls, o,
      [&](TestCall& c, size_t i, auto done) { shards.Start(c, i, done); },
      [](TestCall&) { return absl::OkStatus(); });
  EXPECT_EQ(attempts, 3);
  for (const TestCall& c : calls) {
    EXPECT_TRUE(c.Outcome().ok()) << c.Outcome();
    EXPECT_EQ(c.sent, c.shard == 0 ? 3 : 1);
  }
  EXPECT_EQ(recovered, std::vector<uint32_t>(6, 0));  // once per call
  EXPECT_LE(shards.max_in_flight()[0], 2u);
  EXPECT_LE(shards.max_in_flight()[1], 2u);
}

}  // namespace
}  // namespace pskit::client_internal
