// client/internal/fan_out_attempt.h
//
// FanOutAttempt: one attempt of client_internal::FanOut (fan_out.h). It
// sends a set of calls with at most `window` of them in flight per shard
// (0: all at once) and waits for them. A shard's calls start in the order
// given; when one ends, the shard's next one is started from its completion
// callback (on a gRPC thread; starting an RPC there is allowed, blocking is
// not, and nothing here blocks) before its answer is parsed, so the next
// request goes on the wire while this answer is read. A window keeps the
// two directions of a shard's connection busy at once (later requests
// going out while earlier answers come back) and bounds what is in flight,
// hence the memory of both ends.
//
//   FanOutAttempt<MyCall, Start, OnAnswer> attempt(calls, start, on_answer,
//                                                  /*window=*/4);
//   attempt.Send(todo);  // every calls[i].ctx made beforehand
//   const bool cancelled = !attempt.Wait(wait_until);
//
// Thread safety: Send and Wait run on FanOut's thread; the completion
// callbacks on gRPC's (or inline, within `start`); `start` and `on_answer`
// therefore run on any of them, concurrently for different calls.
#ifndef PSKIT_CLIENT_INTERNAL_FAN_OUT_ATTEMPT_H_
#define PSKIT_CLIENT_INTERNAL_FAN_OUT_ATTEMPT_H_

#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <algorithm>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace pskit::client_internal {

template <typename CallT, typename Start, typename OnAnswer>
class FanOutAttempt {
 public:
  // `calls`, `start` and `on_answer` are borrowed until Wait has returned.
  FanOutAttempt(std::vector<CallT>& calls, Start& start, OnAnswer& on_answer,
                size_t window)
      : calls_(calls),
        start_(start),
        on_answer_(on_answer),
        window_(window),
        state_(std::make_shared<State>()) {}

  FanOutAttempt(const FanOutAttempt&) = delete;
  FanOutAttempt& operator=(const FanOutAttempt&) = delete;

  // Starts calls[todo] (at most `window` per shard now, the rest as earlier
  // ones end). Each call's ctx must be set.
  void Send(const std::vector<size_t>& todo) {
    todo_ = &todo;
    std::vector<uint32_t> shards;  // in the order they first appear
    {
      absl::MutexLock lock(&state_->mu);
      state_->open = todo.size();
      for (size_t i : todo) {
        const uint32_t shard = calls_[i].shard;
        if (shard >= state_->queued.size()) {
          state_->queued.resize(shard + 1);
          state_->in_flight.resize(shard + 1, 0);
          state_->starting.resize(shard + 1, false);
        }
        if (state_->queued[shard].empty()) shards.push_back(shard);
        state_->queued[shard].push_back(i);
      }
    }
    for (uint32_t shard : shards) Pump(shard);
  }

  // Waits until every call has ended, or until `until` if `bounded`: then
  // cancels the calls in flight (they end CANCELLED), ends the queued ones
  // CANCELLED unsent, and waits for the cancelled ones. Returns false if it
  // cancelled.
  bool Wait(bool bounded, absl::Time until) {
    State* st = state_.get();
    auto all_done = [st]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(st->mu) {
      return st->open == 0;
    };
    {
      absl::MutexLock lock(&st->mu);
      if (!bounded) {
        st->mu.Await(absl::Condition(&all_done));
        return true;
      }
      if (st->mu.AwaitWithDeadline(absl::Condition(&all_done), until)) {
        return true;
      }
      st->stopped = true;
      for (std::deque<size_t>& q : st->queued) {
        for (size_t i : q) {
          calls_[i].status = grpc::Status(
              grpc::StatusCode::CANCELLED,
              "not sent: the wait for the shard's answers ended first");
        }
        st->open -= q.size();
        q.clear();
      }
    }
    // Outside the lock: a cancelled call's callback may run inline. A call
    // not started yet has no call to cancel, and none starts any more.
    for (size_t i : *todo_) calls_[i].ctx->TryCancel();
    absl::MutexLock lock(&st->mu);
    st->mu.Await(absl::Condition(&all_done));
    return false;
  }

 private:
  // Shared with the callbacks: the last one may still be unlocking `mu`
  // when FanOut returns.
  struct State {
    absl::Mutex mu;
    size_t open ABSL_GUARDED_BY(mu) = 0;  // calls not ended, queued included
    bool stopped ABSL_GUARDED_BY(mu) = false;  // Wait gave up: start nothing
    // Per shard: calls started and not ended; calls waiting, in order; and
    // whether a thread is starting its calls (Pump).
    std::vector<size_t> in_flight ABSL_GUARDED_BY(mu);
    std::vector<std::deque<size_t>> queued ABSL_GUARDED_BY(mu);
    std::vector<bool> starting ABSL_GUARDED_BY(mu);
  };

  // Starts `shard`'s queued calls, in order, while it has places in flight.
  // One thread at a time does so per shard (`starting`); a call that ends
  // meanwhile frees its place for that thread's loop, which checks again
  // after each start. So a shard's calls start strictly in order, whether
  // the callbacks run on gRPC's threads or inline.
  void Pump(uint32_t shard) {
    State* st = state_.get();
    st->mu.Lock();
    if (st->starting[shard]) {
      st->mu.Unlock();
      return;
    }
    st->starting[shard] = true;
    std::deque<size_t>& q = st->queued[shard];
    while (!st->stopped && !q.empty() &&
           (window_ == 0 || st->in_flight[shard] < window_)) {
      const size_t i = q.front();
      q.pop_front();
      ++st->in_flight[shard];
      st->mu.Unlock();
      Start1(i);
      st->mu.Lock();
    }
    st->starting[shard] = false;
    st->mu.Unlock();
  }

  void Start1(size_t i) {
    start_(calls_[i], i, [this, i, st = state_](grpc::Status status) {
      CallT& c = calls_[i];
      c.status = std::move(status);
      // The shard's next call goes out while this answer is parsed.
      {
        absl::MutexLock lock(&st->mu);
        --st->in_flight[c.shard];
      }
      Pump(c.shard);
      if (c.status.ok()) c.answer = on_answer_(c);
      // `this` may be gone once `open` is 0: only `st` from here.
      absl::MutexLock lock(&st->mu);
      --st->open;
    });
  }

  std::vector<CallT>& calls_;
  Start& start_;
  OnAnswer& on_answer_;
  const size_t window_;
  const std::vector<size_t>* todo_ = nullptr;
  std::shared_ptr<State> state_;
};

}  // namespace pskit::client_internal

#endif  // PSKIT_CLIENT_INTERNAL_FAN_OUT_ATTEMPT_H_
