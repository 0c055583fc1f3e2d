// client/internal/fan_out.h
//
// FanOut: the one way pskit sends a set of unary calls to shards at once.
// Client's data-plane and worker-control calls (Client::Run) and every Admin
// call (AdminClient: Client's admin calls, psctl, psrun's monitor) go
// through it; so do the retry of UNAVAILABLE shards, the wait for a shard
// name that does not resolve yet, and the naming of a failed shard.
//
// Shard names: a shard may be given as a DNS name (a Kubernetes headless
// Service's pod record, a compose service) that has no address until the
// shard is up. gRPC resolves the name itself (pskit never does, so a shard
// that comes back on another address is found again: gRPC resolves anew
// when a connection fails) and fails a call UNAVAILABLE "DNS resolution
// failed for NAME:PORT" while it has none. FanOut sends such a call again
// after the backoff until `timeout`, whatever retry_unavailable says, and
// logs "waiting for shard NAME:PORT: the name does not resolve yet" at most
// every 5 s. gRPC asks DNS again on its own schedule: after 1 s, then 1.6x
// longer each time up to 2 min (fixed in gRPC 1.51; resetting the channel's
// backoff does not hurry it, tried), so a name that appears T seconds after
// the first try is used at worst about 0.8 T later (with 20% jitter). A call
// that would wait_for_ready is sent without it on its first attempt and
// after each resolution failure: gRPC holds a waiting call silently, so the
// failure would otherwise show only as a deadline.
//
//   struct MyCall : FanOutCall {
//     v1::StatusRequest req;
//     v1::StatusResponse resp;
//   };
//   std::vector<MyCall> calls(n);  // calls[i].shard = i
//   FanOutOptions o;
//   o.timeout = absl::Seconds(5);
//   FanOut(calls, o,
//          [&](MyCall& c, size_t i, std::function<void(grpc::Status)> done) {
//            stubs[c.shard]->async()->Status(c.ctx.get(), &c.req, &c.resp,
//                                            std::move(done));
//          },
//          [](MyCall&) { return absl::OkStatus(); });
//   // every calls[i].status / .answer is now set.
//
// Thread safety: FanOut blocks its caller until every call has finished;
// `start` runs on the caller's thread, or, for a call that waited for a
// place in its shard's window, on the gRPC thread that ended the call before
// it; `on_answer` on gRPC's threads (at most once per call and attempt).
// Both run concurrently for different calls.
#ifndef PSKIT_CLIENT_INTERNAL_FAN_OUT_H_
#define PSKIT_CLIENT_INTERNAL_FAN_OUT_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/internal/fan_out_attempt.h"
#include "common/clock.h"
#include "common/grpc_status.h"
#include "spdlog/spdlog.h"

namespace pskit::client_internal {

// What FanOut needs of a call; a call type derives from it and adds its
// request and response.
struct FanOutCall {
  uint32_t shard = 0;
  // Made fresh by FanOut for every attempt, with the deadline set.
  std::unique_ptr<grpc::ClientContext> ctx;
  // Whether the last attempt was sent with wait_for_ready (ClientContext
  // does not say).
  bool wait_for_ready = false;
  // The last attempt's gRPC status, and what `on_answer` made of its answer
  // (OK when the call failed).
  grpc::Status status;
  absl::Status answer;

  // The call's outcome: the gRPC error, else the answer's.
  absl::Status Outcome() const {
    return status.ok() ? answer : FromGrpcStatus(status);
  }
};

struct FanOutOptions {
  // Deadline of the whole fan-out, retries included. Required.
  absl::Duration timeout = absl::Seconds(60);
  // After `wait` (at most timeout) the calls still open are cancelled on
  // this side and answer CANCELLED (the shard may go on with the work).
  // Default: wait for every answer.
  absl::Duration wait = absl::InfiniteDuration();
  // Wait for a (re)connecting shard instead of failing at once with
  // UNAVAILABLE. Default: false.
  bool wait_for_ready = false;
  // Send calls that ended UNAVAILABLE or CANCELLED (a shard down or shutting
  // down) again, after a backoff doubling from initial_backoff up to
  // max_backoff, until `timeout`. Not after `wait` cancelled calls, and not
  // once a call failed otherwise. Default: false.
  bool retry_unavailable = false;
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  // Named in the debug log line of a retry. Default: "call".
  const char* op = "call";
  // Shard addresses by shard index, named in the "waiting for shard" line.
  // Borrowed; must outlive the call. Default: none ("shard N" instead).
  const std::vector<std::string>* addresses = nullptr;
  // When to stop retrying (clock->Now() + timeout) and how to wait between
  // retries (clock->SleepFor): injectable so a test's FakeClock advances
  // instead of sleeping. gRPC's own deadline on each call is real time.
  // Default: the wall clock. Borrowed; must outlive the call.
  const Clock* clock = SystemClock();
  // With retry_unavailable: called (on the caller's thread) for a call that
  // was sent again after UNAVAILABLE or CANCELLED and then failed otherwise,
  // with its shard and error, once per call; if it returns true, the call
  // is sent again (after the backoff) instead of failing the fan-out.
  // Client uses it to register its worker again on a shard that forgot it
  // (it restarted while the call was in flight) and resend the same call.
  // Default: none.
  std::function<bool(uint32_t shard, const absl::Status& s)> recover;
  // At most this many calls of one shard in flight at once; the others wait
  // and start, in the order of `calls`, as earlier ones end (a retry round
  // likewise). 0: every call at once. Default: 0.
  size_t max_in_flight_per_shard = 0;
};

// Whether FanOut retries a call that ended with `s`: the shard is down,
// restarting, or shut down with the call in flight. pskit never cancels a
// call it still waits for, so CANCELLED comes from the shard's side.
inline bool IsRetryable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kCancelled;
}

// Whether `s` says that gRPC could not resolve the shard's host name (no
// DNS record yet, or a misspelt name): gRPC gives no code of its own for it,
// only UNAVAILABLE with "DNS resolution failed for NAME:PORT: ..." (the
// c-ares and the native resolver alike).
inline bool IsNameNotResolved(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable &&
         absl::StrContains(s.message(), "DNS resolution failed");
}

// The host of "host:port" ("[::1]:7000" -> "::1"; no port: all of it).
std::string HostOf(const std::string& address);

// At most this often FanOut logs that it waits for a shard's name.
inline constexpr absl::Duration kNameWaitLogInterval = absl::Seconds(5);

// Logs (warning) "waiting for shard NAME:PORT: the name does not resolve
// yet ..." for shard `shard`, its address from `addresses` if given.
void LogNameWait(uint32_t shard, const std::vector<std::string>* addresses,
                 const absl::Status& s, absl::Duration left);

// Sends every call of `calls` (at most options.max_in_flight_per_shard of a
// shard at once; see fan_out_attempt.h): start(call, index, done) starts the
// RPC on call.ctx and arranges for done(status) to run when it ends. For
// each call that succeeds, on_answer(call) runs (on a gRPC thread) and its
// Status is stored in call.answer. Retries as `options` say. Returns the
// number of attempts once every call has finished; each call's status and
// answer then hold its outcome. A call whose shard's name does not resolve
// is sent again until the timeout (see the top of this file).
template <typename CallT, typename Start, typename OnAnswer>
int FanOut(std::vector<CallT>& calls, const FanOutOptions& options, Start start,
           OnAnswer on_answer) {
  const absl::Time deadline = absl::Now() + options.timeout;
  // Only a `wait` shorter than the timeout cancels calls; otherwise gRPC's
  // deadline ends them, as DEADLINE_EXCEEDED (a wait that expired a few ns
  // after that deadline would race it and turn the error into CANCELLED).
  const bool bounded_wait = options.wait < options.timeout;
  const absl::Time wait_until = absl::Now() + options.wait;
  const absl::Time retry_until = options.clock->Now() + options.timeout;
  absl::Duration backoff = options.initial_backoff;
  std::vector<size_t> todo(calls.size());
  for (size_t i = 0; i < calls.size(); ++i) todo[i] = i;
  // Per call: send it without wait_for_ready, to learn whether its shard's
  // name resolves (first attempt, and after a resolution failure). Only
  // where UNAVAILABLE is retried anyway: otherwise a shard merely
  // reconnecting would fail a call that was asked to wait.
  const bool probe_names = options.wait_for_ready && options.retry_unavailable;
  std::vector<bool> name_unknown(calls.size(), true);
  std::vector<bool> resent(calls.size(), false);  // after a retryable error
  std::vector<bool> recovered(calls.size(), false);
  absl::Time next_name_log = absl::InfinitePast();
  for (int attempt = 1;; ++attempt) {
    for (size_t i : todo) {
      CallT& c = calls[i];
      c.ctx = std::make_unique<grpc::ClientContext>();
      c.ctx->set_deadline(absl::ToChronoTime(deadline));
      c.wait_for_ready =
          options.wait_for_ready && !(probe_names && name_unknown[i]);
      c.ctx->set_wait_for_ready(c.wait_for_ready);
      c.answer = absl::OkStatus();
    }
    FanOutAttempt<CallT, Start, OnAnswer> sent(
        calls, start, on_answer, options.max_in_flight_per_shard);
    sent.Send(todo);
    const bool cancelled = !sent.Wait(bounded_wait, wait_until);
    if (cancelled) return attempt;
    std::vector<size_t> retry;
    std::vector<size_t> unresolved;  // one call per shard whose name failed
    for (size_t i : todo) {
      const absl::Status s = calls[i].Outcome();
      name_unknown[i] = IsNameNotResolved(s);
      if (s.ok()) continue;
      if (name_unknown[i]) {
        retry.push_back(i);
        if (std::none_of(unresolved.begin(), unresolved.end(), [&](size_t j) {
              return calls[j].shard == calls[i].shard;
            })) {
          unresolved.push_back(i);
        }
        continue;
      }
      if (!options.retry_unavailable) continue;  // reported as it is
      if (!IsRetryable(s)) {
        if (options.recover && resent[i] && !recovered[i] &&
            options.recover(calls[i].shard, s)) {
          recovered[i] = true;
          retry.push_back(i);
          continue;
        }
        return attempt;  // reported at once
      }
      resent[i] = true;
      retry.push_back(i);
    }
    const absl::Time now = options.clock->Now();
    if (retry.empty() || now + backoff >= retry_until) return attempt;
    // A bounded wait also bounds the retries (a name that does not resolve
    // fails at once, so the wait above never expires for it): the calls
    // keep their last failure.
    if (bounded_wait && absl::Now() + backoff >= wait_until) return attempt;
    if (!unresolved.empty() && now >= next_name_log) {
      for (size_t i : unresolved) {
        LogNameWait(calls[i].shard, options.addresses, calls[i].Outcome(),
                    retry_until - now);
      }
      next_name_log = now + kNameWaitLogInterval;
    }
    const CallT& first = calls[retry.front()];
    spdlog::debug("{}: shard {} unavailable ({}); retrying in {}", options.op,
                  first.shard, first.status.error_message(),
                  absl::FormatDuration(backoff));
    options.clock->SleepFor(backoff);
    backoff = std::min(backoff * 2, options.max_backoff);
    todo = std::move(retry);
  }
}

// One line naming a failed call's shard and why: "shard 1 (h:7000): ...".
// A name that did not resolve is named as such ("the name 'h' of shard 1
// (h:7000) did not resolve within 5s: ..."). A DEADLINE_EXCEEDED says whether the shard could not be reached at all
// (from `channel`'s state, if not null) or did not answer in `timeout`.
std::string DescribeFailure(uint32_t shard, const std::string& address,
                            const absl::Status& s, absl::Duration timeout,
                            int attempts, grpc::Channel* channel);

// One line for a shard that still answered UNAVAILABLE or CANCELLED when
// FanOut stopped retrying: "shard 1 (h:7000) still unavailable after 4
// attempts over 5s: <message>".
std::string DescribeGaveUp(uint32_t shard, const std::string& address,
                           const absl::Status& s, absl::Duration timeout,
                           int attempts);

// The outcome of a whole fan-out as one Status: OK when every call
// succeeded; otherwise "op: <line>; <line>..." with one DescribeFailure line
// per failed shard and the first failure's code. When only retryable
// failures remain after retrying, UNAVAILABLE naming the first such shard
// and the attempts made. `addresses[shard]` and `channels[shard]` (may be
// empty) describe the shards.
template <typename CallT>
absl::Status JoinFailures(
    const char* op, const std::vector<CallT>& calls,
    const std::vector<std::string>& addresses,
    const std::vector<std::shared_ptr<grpc::Channel>>& channels,
    const FanOutOptions& options, int attempts) {
  absl::Status failed;
  const CallT* unavailable = nullptr;
  std::vector<bool> named(addresses.size(), false);
  for (const CallT& c : calls) {
    const absl::Status s = c.Outcome();
    if (s.ok()) continue;
    if (options.retry_unavailable && IsRetryable(s)) {
      if (unavailable == nullptr) unavailable = &c;
      continue;
    }
    if (named[c.shard]) continue;  // one line per shard
    named[c.shard] = true;
    const std::string line = DescribeFailure(
        c.shard, addresses[c.shard], s, options.timeout, attempts,
        c.shard < channels.size() ? channels[c.shard].get() : nullptr);
    failed = failed.ok()
                 ? absl::Status(s.code(), absl::StrCat(op, ": ", line))
                 : absl::Status(failed.code(),
                                absl::StrCat(failed.message(), "; ", line));
  }
  if (!failed.ok() || unavailable == nullptr) return failed;
  return absl::UnavailableError(absl::StrCat(
      op, ": ",
      DescribeGaveUp(unavailable->shard, addresses[unavailable->shard],
                     unavailable->Outcome(), options.timeout, attempts)));
}

}  // namespace pskit::client_internal

#endif  // PSKIT_CLIENT_INTERNAL_FAN_OUT_H_
