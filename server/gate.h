// server/gate.h
//
// The gate every call of pskit.v1.ParameterServer and pskit.v1.Admin passes,
// in this order:
//   1. authenticate: the bearer token in metadata "authorization: Bearer <t>"
//      must be in the shard's --auth_tokens file (UNAUTHENTICATED otherwise);
//   2. authorize the role: reader < worker < admin (PERMISSION_DENIED);
//   3. parse the request bytes (INVALID_ARGUMENT "request could not be parsed
//      as pskit.v1.XRequest ..." instead of gRPC's empty UNIMPLEMENTED);
//      a PushRequest's or ExchangeRequest's chunk payloads stay in the
//      received slices (server/wire.h, ServerCall::payloads());
//   4. authorize what the request names: its namespace, and the worker id
//      it acts for (a worker id belongs to the token that registered it);
//   5. run the handler, a plain member function that answers with
//      ServerCall::Reply.
// Authentication comes before parsing so that a caller without a token
// learns nothing and costs no parsing. With no token file the shard is open
// (steps 1, 2 and 4 pass everyone) and only the parsing step remains.
//
// The services register their methods as raw (ByteBuffer) callback methods
// through one adapter, GatedMethod(), so the parse failure is ours to answer.
//
// Example (server/ps_service.cc):
//   PsService::PsService(Gate* gate, ...) {
//     AddGatedMethod(this, gate, "Declare", kWorkerCall, &PsService::Declare);
//   }
//   void PsService::Declare(ServerCall<v1::DeclareRequest,
//                                      v1::DeclareResponse>* call) {
//     call->Reply(store_->Declare(call->request(), call->response()));
//   }
//
// Tokens never appear in logs or messages: only roles, namespaces and RPCs.
//
// Thread safety: Gate's methods may be called concurrently; Reload swaps the
// token table atomically (calls in flight keep the table they started with).
#ifndef PSKIT_SERVER_GATE_H_
#define PSKIT_SERVER_GATE_H_

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/impl/codegen/server_callback_handlers.h>
#include <grpcpp/impl/rpc_service_method.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/auth_token.h"
#include "common/grpc_status.h"
#include "google/protobuf/message.h"
#include "server/chunk_payload.h"
#include "server/wire.h"

namespace pskit {

class ServerMetrics;
class WorkerRegistry;

// Who is calling: the token-file entry of the caller's token, or nobody on an
// open shard (every check passes).
class Caller {
 public:
  // An open shard's caller.
  Caller() = default;
  Caller(std::shared_ptr<const std::vector<TokenEntry>> table,
         const TokenEntry* entry)
      : table_(std::move(table)), entry_(entry) {}

  // True on an open shard (no --auth_tokens).
  bool open() const { return entry_ == nullptr; }
  // The token's entry; null when open(). Lives as long as this Caller.
  const TokenEntry* entry() const { return entry_; }
  // Whether the caller may touch namespace `ns` ("" is "default").
  bool AllowsNamespace(absl::string_view ns) const;
  // Whether the caller may touch every namespace (an open shard, or a token
  // without a namespace list).
  bool AllNamespaces() const {
    return entry_ == nullptr || entry_->namespaces.empty();
  }

 private:
  std::shared_ptr<const std::vector<TokenEntry>> table_;  // keeps entry_ alive
  const TokenEntry* entry_ = nullptr;
};

// What a method needs from its caller.
struct MethodPolicy {
  // The least role that may call it.
  TokenRole role = TokenRole::kAdmin;
  // The method acts on the whole shard (every namespace): a token limited to
  // some namespaces may not call it.
  bool whole_shard = false;
  // How the request's `worker_id` field is treated.
  enum class WorkerId {
    kNone,      // not looked at
    kActsFor,   // must be 0 or registered with the caller's token
    kBinds,     // RegisterWorker: the answered id becomes the caller's
    kReleases,  // Leave: as kActsFor; on success the binding is dropped
  };
  WorkerId worker_id = WorkerId::kNone;
};

// The policies of the roles table (README "Tokens and roles").
inline constexpr MethodPolicy kReaderCall = {TokenRole::kReader, false,
                                             MethodPolicy::WorkerId::kNone};
inline constexpr MethodPolicy kWorkerCall = {TokenRole::kWorker, false,
                                             MethodPolicy::WorkerId::kNone};
inline constexpr MethodPolicy kAdminCall = {TokenRole::kAdmin, false,
                                            MethodPolicy::WorkerId::kNone};
inline constexpr MethodPolicy kAdminShardCall = {
    TokenRole::kAdmin, true, MethodPolicy::WorkerId::kNone};

class Gate {
 public:
  // An open gate: no tokens, every caller passes steps 1, 2 and 4.
  // `metrics` (refusal counts) and `workers` (binding liveness) are borrowed
  // and may be null; both must outlive the gate.
  Gate(ServerMetrics* metrics, WorkerRegistry* workers)
      : metrics_(metrics), workers_(workers) {}

  // A gate that requires a token from `tokens_file` (see
  // common/auth_token.h for the format). The file's errors (INVALID_ARGUMENT
  // naming file and line, NOT_FOUND, PERMISSION_DENIED) are returned.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Gate>> WithTokens(
      const std::string& tokens_file, ServerMetrics* metrics,
      WorkerRegistry* workers);

  // Re-reads the token file; on error the old table stays in force and the
  // error is returned. Calls already admitted are not affected. OK and a
  // no-op for an open gate. Returns the number of tokens now in force.
  [[nodiscard]] absl::StatusOr<size_t> Reload() ABSL_LOCKS_EXCLUDED(mu_);

  bool open() const { return tokens_file_.empty(); }

  // Step 1 and 2. `rpc` is "ParameterServer/Push" etc. UNAUTHENTICATED for
  // no token or an unknown one; PERMISSION_DENIED for a role below
  // `policy.role` or a namespace-limited token on a whole-shard method.
  // Each refusal is counted.
  [[nodiscard]] absl::StatusOr<Caller> Admit(
      const grpc::CallbackServerContext& ctx, absl::string_view rpc,
      const MethodPolicy& policy) ABSL_LOCKS_EXCLUDED(mu_);

  // Step 4 on the parsed request: its `namespace` field (if it has one) and
  // its `worker_id` field (per `policy`). PERMISSION_DENIED, counted.
  [[nodiscard]] absl::Status AuthorizeRequest(
      const Caller& caller, absl::string_view rpc, const MethodPolicy& policy,
      const google::protobuf::Message& request) ABSL_LOCKS_EXCLUDED(mu_);

  // After a successful answer: binds or releases the worker id (per policy)
  // and, with `count_updates`, records the answer's metrics (updates
  // applied, staleness).
  void Answered(const Caller& caller, const MethodPolicy& policy,
                const google::protobuf::Message& request,
                const google::protobuf::Message& response, bool count_updates)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Counts a refusal (pskit_server_auth_refusals_total{rpc,reason}).
  void CountRefusal(absl::string_view rpc, absl::string_view reason);

 private:
  // Constant after construction.
  ServerMetrics* const metrics_;
  WorkerRegistry* const workers_;
  std::string tokens_file_;  // empty: open

  absl::Mutex mu_;
  std::shared_ptr<const std::vector<TokenEntry>> tokens_ ABSL_GUARDED_BY(mu_);
  // Worker id -> hash of the token that registered it.
  absl::flat_hash_map<uint64_t, std::string> worker_owner_ ABSL_GUARDED_BY(mu_);
  // Size of worker_owner_ at which lapsed workers are swept out.
  size_t next_sweep_ ABSL_GUARDED_BY(mu_) = 4096;
};

// A unary call as a handler sees it: the parsed request, the response to
// fill, the caller, and Reply. It is the call's reactor and deletes itself
// when gRPC is done with the call.
//
// A handler may hold the call and Reply later (server/consistency.h parks
// SSP and sync calls): SetOnCancel then says what to do if the client
// cancels first (its deadline passed, or it went away).
//
// Thread safety: Reply may be called from any thread, exactly once.
// SetOnCancel and OnCancel may race: the hook runs exactly once if the call
// is cancelled, whichever comes first.
template <typename Req, typename Resp>
class ServerCall final : public grpc::ServerUnaryReactor {
 public:
  ServerCall(grpc::CallbackServerContext* ctx, grpc::ByteBuffer* out,
             Gate* gate, const MethodPolicy& policy)
      : ctx_(ctx), out_(out), gate_(gate), policy_(policy) {}

  grpc::CallbackServerContext* context() const { return ctx_; }
  const Caller& caller() const { return caller_; }
  const Req& request() const { return request_; }
  Resp* response() { return &response_; }

  // For a PushRequest or ExchangeRequest (server/wire.h): the payload of
  // each chunk of the request, in order, pointing into the received slices
  // (the request's own `data` fields are empty then). Valid as long as the
  // call.
  absl::Span<const PayloadView> payloads() const { return payloads_; }
  // Copies the payloads into the request's `data` fields, for code that
  // keeps or reads the protobuf message (server/consistency.h's held
  // calls); payloads() then views those fields.
  void MaterializePayloads() {
    static_assert(kPayloadField<Req> != 0);
    auto* chunks = wire_internal::MutablePayloadChunks(&request_);
    for (int i = 0; i < chunks->size(); ++i) {
      (*chunks)[i].set_data(payloads_[i].ToString());
    }
    payloads_ = PayloadsOf(*chunks);
    request_slices_.clear();
  }

  // Where the answer's chunks go, encoded straight into the slices the
  // reply carries (server/wire.h); Reply appends them to the response's
  // other fields. A handler fills either this or the response's own
  // chunks, not both.
  ChunkOut* answer_chunks() {
    static_assert(kAnswerField<Resp> != 0);
    return &answer_;
  }

  // Marks the answer as one that applied nothing (a replayed answer to a
  // retried push): Reply then counts no updates or staleness for it.
  void DoNotCountUpdates() { count_updates_ = false; }

  // `hook` runs (once, on a gRPC thread, or at once on this thread when
  // the call was cancelled already) if the client cancels the call before
  // it finishes. It must not Reply itself unless the holder agrees that
  // nobody else will (server/consistency.cc removes the parked call first).
  void SetOnCancel(std::function<void()> hook) ABSL_LOCKS_EXCLUDED(cancel_mu_) {
    bool now = false;
    {
      absl::MutexLock lock(&cancel_mu_);
      if (cancelled_) {
        now = true;
      } else {
        on_cancel_ = std::move(hook);
      }
    }
    if (now) hook();
  }

  // Answers the call: with an OK status the response is sent.
  void Reply(const absl::Status& status) {
    if (!status.ok()) {
      Finish(ToGrpcStatus(status));
      return;
    }
    gate_->Answered(caller_, policy_, request_, response_, count_updates_);
    if constexpr (kAnswerField<Resp> != 0) {
      if (!answer_.empty()) {
        *out_ = answer_.AppendAnswer(response_, kAnswerField<Resp>);
        Finish(grpc::Status::OK);
        return;
      }
    }
    bool own = false;
    grpc::Status s =
        grpc::SerializationTraits<Resp>::Serialize(response_, out_, &own);
    Finish(s);
  }

  // For GatedMethod only.
  Caller* mutable_caller() { return &caller_; }
  Req* mutable_request() { return &request_; }
  std::vector<grpc::Slice>* mutable_request_slices() {
    return &request_slices_;
  }
  std::vector<PayloadView>* mutable_payloads() { return &payloads_; }

 private:
  void OnDone() override { delete this; }
  void OnCancel() override ABSL_LOCKS_EXCLUDED(cancel_mu_) {
    std::function<void()> hook;
    {
      absl::MutexLock lock(&cancel_mu_);
      cancelled_ = true;
      hook = std::move(on_cancel_);
    }
    if (hook) hook();
  }

  grpc::CallbackServerContext* const ctx_;
  grpc::ByteBuffer* const out_;
  Gate* const gate_;
  const MethodPolicy policy_;
  Caller caller_;
  Req request_;
  Resp response_;
  // The received slices the payloads point into, referenced.
  std::vector<grpc::Slice> request_slices_;
  std::vector<PayloadView> payloads_;
  WireChunkOut answer_;
  bool count_updates_ = true;
  absl::Mutex cancel_mu_;
  bool cancelled_ ABSL_GUARDED_BY(cancel_mu_) = false;
  std::function<void()> on_cancel_ ABSL_GUARDED_BY(cancel_mu_);
};

namespace gate_internal {

// The index gRPC gives method `method` of service `service` (proto order),
// from the generated descriptor pool. CHECK-fails for a name the proto does
// not have (a programming error caught at the first start).
int MethodIndex(absl::string_view service, absl::string_view method);

// CHECK-fails unless `service` has exactly `added` methods.
void CheckMethodCount(absl::string_view service, int added);

// INVALID_ARGUMENT for request bytes that are not a `type_name`.
absl::Status Unparsable(absl::string_view rpc, absl::string_view type_name,
                        size_t bytes);

}  // namespace gate_internal

// The one adapter from a raw gRPC method to a typed handler: a handler for
// grpc::Service::MarkMethodRawCallback that runs steps 1-5 for `rpc`
// ("ParameterServer/Declare") and calls `(service->*handler)(call)`.
// `service` and `gate` are borrowed and must outlive the gRPC server.
template <typename Service, typename Req, typename Resp>
grpc::internal::MethodHandler* GatedMethod(
    Service* service, Gate* gate, std::string rpc, MethodPolicy policy,
    void (Service::*handler)(ServerCall<Req, Resp>*)) {
  return new grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer,
                                                  grpc::ByteBuffer>(
      [service, gate, rpc = std::move(rpc), policy, handler](
          grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
          grpc::ByteBuffer* out) -> grpc::ServerUnaryReactor* {
        auto* call = new ServerCall<Req, Resp>(ctx, out, gate, policy);
        absl::StatusOr<Caller> caller = gate->Admit(*ctx, rpc, policy);
        if (!caller.ok()) {
          call->Reply(caller.status());
          return call;
        }
        *call->mutable_caller() = *std::move(caller);
        const size_t size = in->Length();
        bool parsed = false;
        if constexpr (kPayloadField<Req> != 0) {
          // Payloads stay in the received slices (server/wire.h).
          parsed = ParseRequest(*in, call->mutable_request(),
                                call->mutable_request_slices(),
                                call->mutable_payloads());
        } else {
          // Deserialize consumes its buffer: parse a copy (slices are
          // shared, not copied).
          grpc::ByteBuffer bytes(*in);
          parsed = grpc::SerializationTraits<Req>::Deserialize(
                       &bytes, call->mutable_request())
                       .ok();
        }
        if (!parsed) {
          gate->CountRefusal(rpc, "unparsable");
          call->Reply(gate_internal::Unparsable(
              rpc, Req::descriptor()->full_name(), size));
          return call;
        }
        if (absl::Status s = gate->AuthorizeRequest(call->caller(), rpc,
                                                    policy, call->request());
            !s.ok()) {
          call->Reply(s);
          return call;
        }
        (service->*handler)(call);
        return call;
      });
}

// A generated gRPC service (v1::ParameterServer::Service) whose every method
// is a raw callback method behind the gate. Derived classes call AddMethod
// once per method in their constructor, then CheckAllAdded.
template <typename GeneratedService>
class GatedService : public GeneratedService {
 protected:
  // `full_name`: "pskit.v1.ParameterServer". `gate` is borrowed and must
  // outlive the gRPC server.
  GatedService(absl::string_view full_name, Gate* gate)
      : full_name_(full_name),
        short_name_(full_name.substr(full_name.rfind('.') + 1)),
        gate_(gate) {}

  // Routes method `method` ("Declare") through the gate to `handler`.
  template <typename Derived, typename Req, typename Resp>
  void AddMethod(absl::string_view method, const MethodPolicy& policy,
                 void (Derived::*handler)(ServerCall<Req, Resp>*)) {
    this->MarkMethodRawCallback(
        gate_internal::MethodIndex(full_name_, method),
        GatedMethod(static_cast<Derived*>(this), gate_,
                    absl::StrCat(short_name_, "/", method), policy, handler));
    ++added_;
  }

  // CHECK-fails unless every method of the service was added (a method
  // left out would run gRPC's sync stub: UNIMPLEMENTED without the gate).
  void CheckAllAdded() const {
    gate_internal::CheckMethodCount(full_name_, added_);
  }

 private:
  const std::string full_name_;
  const std::string short_name_;
  Gate* const gate_;
  int added_ = 0;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_GATE_H_
