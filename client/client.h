// client/client.h
//
// Client: the C++ API to a pskit cluster (libpskit_client). It cuts tensors
// into chunks with the cluster's Layout, groups the chunks of each shard into
// requests of at most `max_request_bytes`, sends them with at most
// `max_in_flight_per_shard` in flight per shard (a pipeline: later requests
// go out while earlier answers come back), and copies the answers into
// caller-owned float buffers. Each answer is released once copied, and
// f16/bf16 (or Exchange's) payloads are encoded as their request starts, so
// an operation holds about max_in_flight_per_shard x max_request_bytes per
// shard beyond the caller's buffers, whatever the model's size.
//
// Every operation has one deadline (`timeout` from its start). A shard that
// answers UNAVAILABLE (down, restarting, unreachable) or CANCELLED (it shut
// down with the call in flight) is retried with exponential backoff until
// that deadline, so a restarted shard is picked up
// again by the same Client. Other errors are returned at once, prefixed with
// the shard's index and address.
//
// The Client remembers, per chunk, the version it last pulled; a push sends
// it so the shard can measure staleness.
//
// Exactly-once: once RegisterWorker gave this Client a worker id, each
// request of Push, PushPull and Exchange carries a sequence of its own
// (increasing, starting from the clock's microseconds so a later Client
// with the same id starts above it), and a retry resends the same request,
// same sequence. The shard applies a (worker, sequence) once and answers a
// copy from its window (see PushRequest.sequence in ps.proto), also after it
// restarted from a checkpoint that holds the call: when a call retried after
// UNAVAILABLE or CANCELLED is answered NOT_FOUND (the restarted shard forgot
// the worker), the worker is registered again on that shard under the same
// id and the call resent, once per call. A call the shard applied
// after its last checkpoint and then lost in a crash is applied again on
// retry: the state it was applied to is gone too.
// Without a worker id (anonymous, worker id 0) there is no sequence: a call
// retried after the shard received it is applied twice.
//
// Example:
//   ClientOptions opts;
//   PSKIT_ASSIGN_OR_RETURN(auto client, Client::Connect({"h1:7000", "h2:7000"}, opts));
//   PSKIT_RETURN_IF_ERROR(client->Declare("job1", config, {{spec, {}}}));
//   std::vector<float> w(n), g(n);
//   PSKIT_RETURN_IF_ERROR(client->Pull("job1", {{"fc1/w", absl::MakeSpan(w)}}));
//   ... compute g ...
//   PSKIT_ASSIGN_OR_RETURN(PushResult r,
//       client->PushPull("job1", {{"fc1/w", g}}, {{"fc1/w", absl::MakeSpan(w)}}));
//
// Thread safety: all methods may be called concurrently. Calls that write
// the same caller buffer at once race on that buffer (the caller's business).
// Buffers are borrowed only for the duration of the call.
#ifndef PSKIT_CLIENT_CLIENT_H_
#define PSKIT_CLIENT_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/admin_client.h"
#include "client/internal/plan.h"
#include "common/clock.h"
#include "common/grpc_options.h"
#include "common/layout.h"
#include "pskit/v1/admin.grpc.pb.h"
#include "pskit/v1/ps.grpc.pb.h"
#include <grpcpp/generic/generic_stub.h>

namespace pskit {
namespace client_internal {
struct ChunkMeta;
class SliceTracker;
}  // namespace client_internal

struct ClientOptions {
  // Maximum floats per chunk; must equal the shards' --chunk_elems.
  // Default: 262144.
  uint32_t chunk_elems = kDefaultChunkElems;
  // Requests are split so each carries at most this many payload bytes (at
  // least one chunk). With 2 in flight per shard, 1 MiB (one chunk of f32)
  // moved more per CPU second, and faster, than 2 or 4 MiB (measured:
  // NOTES-README-P.md); above ~16 MiB gRPC slows down 2-3x.
  // Default: 1 MiB.
  size_t max_request_bytes = 1 << 20;
  // Data-plane requests in flight per shard at once (0 to 1024; 0: every
  // request of an operation at once, which interleaves them all on the
  // connection and holds the whole operation in memory). 2 lets the next
  // request go out while an answer comes back; more only added memory and
  // CPU (measured). Default: 2.
  int max_in_flight_per_shard = 2;
  // Deadline of one operation, retries included. Default: 60 s.
  absl::Duration timeout = absl::Seconds(60);
  // First and largest wait between retries of an UNAVAILABLE shard.
  // Default: 50 ms and 2 s.
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  // The clock an operation's retry deadline and the backoff between retries
  // are measured on. Tests pass a testing::FakeClock, so a retried call
  // costs no real time; gRPC's own per-call deadline stays real time.
  // Borrowed; must outlive the Client. Default: the wall clock.
  const Clock* clock = SystemClock();
  // Encoding of pushed gradients, pulled values and exchanged parameters.
  // f16/bf16 halve the bytes at a loss of precision. Default: f32.
  v1::Encoding encoding = v1::ENCODING_F32;
  // TCP connections per shard; a shard's requests take them in turn. One
  // loopback TCP stream is bound by its own latency, not by the CPU: with
  // 2, pushpull moved 1.2-1.5x more than with 1 (README "Performance").
  // Default: 2.
  int channels_per_shard = 2;
  // Largest gRPC message sent or received. Default: 64 MiB.
  int max_message_bytes = kDefaultMaxMessageBytes;
  // TLS files and bearer token of every channel (common/channel.h); checked
  // by Connect. Default: plaintext, no token.
  ChannelSecurity security;
};

// A tensor to declare. `values` is read only for INIT_EXPLICIT and must then
// hold every element.
struct TensorDecl {
  v1::TensorSpec spec;
  absl::Span<const float> values;
};

// A named caller-owned buffer holding a whole tensor.
struct TensorBuffer {
  absl::string_view name;
  absl::Span<float> data;
};
struct ConstTensorBuffer {
  absl::string_view name;
  absl::Span<const float> data;
};

struct PushResult {
  uint64_t chunks = 0;         // chunks updated
  uint64_t max_staleness = 0;  // over those chunks
  double mean_staleness = 0;
};

class Client {
 public:
  // Opens channels to `shards` (host:port, in shard-index order). Does not
  // wait for them to be up. INVALID_ARGUMENT for an empty list, an empty
  // address or bad options.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Client>> Connect(
      std::vector<std::string> shards, const ClientOptions& options);

  ~Client();

  // Declares `tensors` in namespace `ns` ("" means "default") with `config`
  // on every shard. Idempotent (see DeclareRequest).
  [[nodiscard]] absl::Status Declare(absl::string_view ns,
                                     const v1::NamespaceConfig& config,
                                     absl::Span<const TensorDecl> tensors);

  // Fills each buffer with the tensor's current values.
  [[nodiscard]] absl::Status Pull(absl::string_view ns,
                                  absl::Span<const TensorBuffer> tensors);

  // Pushes one gradient per tensor (each buffer the tensor's full size).
  [[nodiscard]] absl::StatusOr<PushResult> Push(
      absl::string_view ns, absl::Span<const ConstTensorBuffer> grads);

  // Pushes `grads` and fills `weights` (same tensors, same order, same
  // sizes) with the values right after the update, in one round trip.
  [[nodiscard]] absl::StatusOr<PushResult> PushPull(
      absl::string_view ns, absl::Span<const ConstTensorBuffer> grads,
      absl::Span<const TensorBuffer> weights);

  // EASGD: sends each local tensor, and subtracts from it the elastic
  // difference e = alpha * (x - centre) the shards answer. alpha in (0, 1].
  [[nodiscard]] absl::Status Exchange(absl::string_view ns, float alpha,
                                      absl::Span<const TensorBuffer> params);

  // Registers this client as a worker on every shard (one id for all) and
  // returns the id; pushes and exchanges then carry it.
  // `ns` ("" means "default") is the namespace the worker trains: the
  // shards refuse Admin/DropNamespace of it while the lease is live (each
  // Heartbeat(ns) updates it).
  [[nodiscard]] absl::StatusOr<uint64_t> RegisterWorker(
      std::string name, absl::string_view ns = "");
  // Renews the lease on every shard; a shard that forgot the worker (it
  // restarted, or the lease lapsed) gets it registered again. Returns
  // whether the evaluator has ended namespace `ns`'s job.
  [[nodiscard]] absl::StatusOr<bool> Heartbeat(absl::string_view ns = "");
  // Reports an evaluation of namespace `ns` to every shard. Returns whether
  // the job is over on any shard (this report or an earlier one said done,
  // or an operator drained a shard).
  [[nodiscard]] absl::StatusOr<bool> ReportEvaluation(
      absl::string_view ns, const v1::Evaluation& eval);
  // Ends the lease on every shard.
  [[nodiscard]] absl::Status Leave();
  // The id RegisterWorker gave; 0 before it and after Leave.
  uint64_t worker_id() const ABSL_LOCKS_EXCLUDED(mu_);

  // Takes checkpoint `id` on every shard ("" picks "ckpt-<unix ms>", one id
  // for all); returns each shard's record, in shard order. Succeeds only if
  // every shard did; otherwise the error names each failed shard and why.
  [[nodiscard]] absl::StatusOr<std::vector<v1::CheckpointInfo>> Checkpoint(
      std::string id);
  // Every shard's Admin Status, in shard order; with `evaluations`, each
  // namespace's evaluation history too (StatusRequest.evaluations).
  [[nodiscard]] absl::StatusOr<std::vector<v1::StatusResponse>> Status(
      bool evaluations = false);
  // Deletes namespace `ns` (not "": name it) on every shard: shard 0 first,
  // and if it refuses, nothing changed anywhere and its error is returned
  // (FAILED_PRECONDITION while workers of `ns` hold leases, NOT_FOUND when
  // shard 0 has no such namespace, INVALID_ARGUMENT for a bad name); then
  // the others (AdminClient::DropNamespace). Returns each shard's answer, in
  // shard order.
  [[nodiscard]] absl::StatusOr<std::vector<v1::DropNamespaceResponse>>
  DropNamespace(const std::string& ns);
  // Restores checkpoint `id` on every shard; errors as for Checkpoint.
  [[nodiscard]] absl::StatusOr<std::vector<v1::CheckpointInfo>> Restore(
      const std::string& id);

  const Layout& layout() const { return layout_; }
  const std::vector<std::string>& shards() const { return shards_; }

 private:
  using Piece = client_internal::RequestPiece;
  using Batch = client_internal::RequestBatch;
  template <typename Req, typename Resp>
  struct Call;

  Client(std::vector<std::string> shards, const ClientOptions& options,
         Layout layout);

  // Sends every call with send(shard, channel, ctx, req, resp, done)
  // through client_internal::FanOut, retrying UNAVAILABLE ones with backoff
  // until the deadline, and runs `on_ok` on each answer (on a gRPC thread).
  // Returns once every call has finished: OK, or every failed shard named.
  // `recover` (may be empty): see FanOutOptions::recover. `window`: see
  // FanOutOptions::max_in_flight_per_shard. `prepare` (may be empty) runs
  // on a call just before each attempt of it is sent (on any thread).
  template <typename Req, typename Resp, typename Send, typename OnOk>
  absl::Status Run(
      const char* op, std::vector<Call<Req, Resp>>& calls, Send send,
      OnOk on_ok,
      std::function<bool(uint32_t, const absl::Status&)> recover = nullptr,
      size_t window = 0,
      std::function<void(Call<Req, Resp>&)> prepare = nullptr);

  // Push (`weights` empty) or PushPull.
  absl::StatusOr<PushResult> PushImpl(const char* op, absl::string_view ns,
                                      absl::Span<const ConstTensorBuffer> grads,
                                      absl::Span<const TensorBuffer> weights);

  // Sends `req` to shards [begin, end) with `send` (as for Run) and returns
  // their answers in shard order.
  template <typename Resp, typename Req, typename Send>
  absl::StatusOr<std::vector<Resp>> Broadcast(const char* op, const Req& req,
                                              uint32_t begin, uint32_t end,
                                              Send send);

  v1::Layout WireLayout(uint32_t shard) const;
  // Serializes `header` and one ChunkData (repeated field `field`) per
  // piece, with values from src[piece.tensor] and versions[j] (if given).
  // f32 payloads borrow `src` unless `copy`; others are encoded into slices
  // the buffer owns. Borrowed memory must outlive `tracker`'s wait.
  grpc::ByteBuffer EncodeChunks(const google::protobuf::MessageLite& header,
                                int field, const std::vector<Piece>& pieces,
                                absl::Span<const ConstTensorBuffer> src,
                                const std::vector<uint64_t>* versions,
                                bool copy,
                                client_internal::SliceTracker* tracker) const;
  // Parses the answer of data-plane call `c` into `dest` (the buffers its
  // pieces index; subtracted for Exchange) and fills `meta`. With `keys`
  // (one "ns/tensor" per buffer) the versions are recorded as pulled.
  absl::Status ReceiveChunks(Call<grpc::ByteBuffer, grpc::ByteBuffer>& c,
                             bool with_acks, bool subtract,
                             absl::Span<const TensorBuffer> dest,
                             const std::vector<std::string>* keys,
                             std::vector<client_internal::ChunkMeta>* meta)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Sends `calls` to data-plane method `method`, at most
  // max_in_flight_per_shard per shard at once, and parses each answer into
  // the tensors' buffers with `on_ok`; see Run. A call's request is made by
  // encode(call) when it is first sent, kept for its retries, and released
  // with its answer once the answer is parsed. With `worker_id` != 0, a
  // shard that answers NOT_FOUND gets the worker registered again
  // (ReregisterOn) and the call resent, once per call.
  template <typename OnOk>
  absl::Status RunGeneric(
      const char* op, const std::string& method,
      std::vector<Call<grpc::ByteBuffer, grpc::ByteBuffer>>& calls,
      std::function<grpc::ByteBuffer(Call<grpc::ByteBuffer, grpc::ByteBuffer>&)>
          encode,
      OnOk on_ok, uint64_t worker_id = 0);
  // Registers worker `worker_id` again on `shard`, under this Client's
  // worker name (a renewal if the shard still knows it). False on failure
  // or if the Client's worker id changed meanwhile.
  bool ReregisterOn(uint32_t shard, uint64_t worker_id) ABSL_LOCKS_EXCLUDED(mu_);
  // The next exactly-once sequence of this Client.
  uint64_t NextSequence() { return next_sequence_.fetch_add(1); }
  // INVALID_ARGUMENT for a bad or repeated name, an empty or oversized
  // buffer, or a size that differs from the declared tensor's.
  absl::Status CheckBuffers(
      absl::string_view ns,
      absl::Span<const std::pair<absl::string_view, uint64_t>> buffers)
      ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t PulledVersion(const std::string& key, uint32_t chunk)
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void RecordVersion(const std::string& key, uint32_t num_chunks,
                     uint32_t chunk, uint64_t version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const std::vector<std::string> shards_;
  const ClientOptions options_;
  const Layout layout_;
  // stubs_[shard][channel] for the control calls; generic_[shard][channel]
  // on the same channels for the data plane (client/internal/wire.h).
  std::vector<std::vector<std::unique_ptr<v1::ParameterServer::Stub>>> stubs_;
  std::vector<std::vector<std::unique_ptr<grpc::GenericStub>>> generic_;
  // channels_[shard]: the first channel to each shard, to report its state;
  // admin_ sends the Admin calls on them.
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::unique_ptr<AdminClient> admin_;

  mutable absl::Mutex mu_;
  // "ns/tensor" -> number of elements, from Declare.
  absl::flat_hash_map<std::string, uint64_t> sizes_ ABSL_GUARDED_BY(mu_);
  // "ns/tensor" -> version last seen per chunk.
  absl::flat_hash_map<std::string, std::vector<uint64_t>> versions_
      ABSL_GUARDED_BY(mu_);
  uint64_t worker_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::string worker_name_ ABSL_GUARDED_BY(mu_);
  // The namespace registered for (RegisterWorker, then each Heartbeat's):
  // a re-registration carries it.
  std::string worker_ns_ ABSL_GUARDED_BY(mu_);

  // Atomic: concurrent operations take sequences without mu_.
  std::atomic<uint64_t> next_sequence_;
};

}  // namespace pskit

#endif  // PSKIT_CLIENT_CLIENT_H_
