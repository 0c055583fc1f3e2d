#include "client/client.h"

#include <grpcpp/support/proto_buffer_reader.h>

#include <algorithm>
#include <type_traits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "client/internal/client_call.h"
#include "client/internal/fan_out.h"
#include "client/internal/plan.h"
#include "client/internal/wire.h"
#include "common/channel.h"
#include "common/encoding.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "common/validation.h"
#include "spdlog/spdlog.h"

namespace pskit {


absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    std::vector<std::string> shards, const ClientOptions& options) {
  if (shards.empty()) {
    return absl::InvalidArgumentError(
        "no shard addresses; give host:port of every shard, in shard order");
  }
  for (size_t i = 0; i < shards.size(); ++i) {
    if (shards[i].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard address ", i, " is empty"));
    }
  }
  PSKIT_RETURN_IF_ERROR(ValidateEncoding(options.encoding));
  PSKIT_RETURN_IF_ERROR(CheckChannelSecurity(options.security));
  if (options.channels_per_shard < 1 || options.channels_per_shard > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "channels_per_shard is ", options.channels_per_shard,
        "; use 1 to 64"));
  }
  if (options.max_request_bytes < 1024 ||
      options.max_request_bytes + (1 << 16) >
          static_cast<size_t>(options.max_message_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_request_bytes ", options.max_request_bytes,
        " must be at least 1024 and 64 KiB below max_message_bytes ",
        options.max_message_bytes));
  }
  if (options.max_in_flight_per_shard < 0 ||
      options.max_in_flight_per_shard > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_in_flight_per_shard is ", options.max_in_flight_per_shard,
        "; use 1 to 1024 requests per shard, or 0 for no limit"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be positive");
  }
  PSKIT_ASSIGN_OR_RETURN(
      Layout layout,
      Layout::Create(static_cast<uint32_t>(shards.size()), options.chunk_elems));
  return std::unique_ptr<Client>(
      new Client(std::move(shards), options, layout));
}

Client::Client(std::vector<std::string> shards, const ClientOptions& options,
               Layout layout)
    : shards_(std::move(shards)),
      options_(options),
      layout_(layout),
      // From the clock's microseconds: a later Client that gets the same
      // worker id starts above every sequence this one sends.
      next_sequence_(static_cast<uint64_t>(std::max<int64_t>(
          1, absl::ToUnixMicros(options.clock->Now())))) {
  stubs_.resize(shards_.size());
  generic_.resize(shards_.size());
  for (size_t s = 0; s < shards_.size(); ++s) {
    for (int c = 0; c < options_.channels_per_shard; ++c) {
      ChannelOptions channel_options;
      channel_options.max_message_bytes = options_.max_message_bytes;
      channel_options.channel_index = c;
      channel_options.security = options_.security;
      auto channel = MakeChannel(shards_[s], channel_options);
      if (c == 0) channels_.push_back(channel);
      stubs_[s].push_back(v1::ParameterServer::NewStub(channel));
      generic_[s].push_back(std::make_unique<grpc::GenericStub>(channel));
    }
  }
  // Admin calls wait for a restarting shard, as data-plane calls do.
  AdminOptions admin_options;
  admin_options.timeout = options_.timeout;
  admin_options.wait_for_ready = true;
  admin_options.retry_unavailable = true;
  admin_options.initial_backoff = options_.initial_backoff;
  admin_options.max_backoff = options_.max_backoff;
  admin_options.clock = options_.clock;
  admin_ = std::make_unique<AdminClient>(shards_, channels_, admin_options);
}

Client::~Client() = default;

v1::Layout Client::WireLayout(uint32_t shard) const {
  v1::Layout l;
  l.set_num_shards(layout_.num_shards());
  l.set_chunk_elems(layout_.chunk_elems());
  l.set_shard_index(shard);
  return l;
}


absl::Status Client::CheckBuffers(
    absl::string_view ns,
    absl::Span<const std::pair<absl::string_view, uint64_t>> buffers) {
  absl::flat_hash_set<absl::string_view> names;
  for (const auto& [tensor, size] : buffers) {
    PSKIT_RETURN_IF_ERROR(ValidateName("tensor name", tensor));
    if (size == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("buffer for tensor ", Quoted(tensor), " is empty"));
    }
    if (!names.insert(tensor).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", Quoted(tensor),
                       " is named twice in one call; give each once"));
    }
  }
  absl::MutexLock lock(&mu_);
  for (const auto& [tensor, size] : buffers) {
    auto it = sizes_.find(TensorKey(ns, tensor));
    if (it != sizes_.end() && it->second != size) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", Quoted(tensor), " has ", it->second,
                       " elements; the buffer holds ", size));
    }
    if (size > layout_.MaxTensorElems()) {
      return absl::InvalidArgumentError(
          absl::StrCat("buffer for tensor ", Quoted(tensor), " holds ", size,
                       " elements, more than a tensor may have (",
                       layout_.MaxTensorElems(), ")"));
    }
  }
  return absl::OkStatus();
}

uint64_t Client::PulledVersion(const std::string& key, uint32_t chunk) {
  auto it = versions_.find(key);
  if (it == versions_.end() || chunk >= it->second.size()) return 0;
  return it->second[chunk];
}

void Client::RecordVersion(const std::string& key, uint32_t num_chunks,
                           uint32_t chunk, uint64_t version) {
  std::vector<uint64_t>& v = versions_[key];
  if (v.size() != num_chunks) v.assign(num_chunks, 0);
  v[chunk] = version;
}

absl::Status Client::Declare(absl::string_view ns_in,
                             const v1::NamespaceConfig& config,
                             absl::Span<const TensorDecl> tensors) {
  const std::string ns = NamespaceOf(ns_in);
  using DeclareCall = Call<v1::DeclareRequest, v1::DeclareResponse>;
  std::vector<DeclareCall> calls(layout_.num_shards());
  std::vector<std::pair<std::string, uint64_t>> sizes;
  for (uint32_t s = 0; s < layout_.num_shards(); ++s) {
    calls[s].shard = s;
    calls[s].req.set_namespace_(ns);
    *calls[s].req.mutable_layout() = WireLayout(s);
    *calls[s].req.mutable_config() = config;
  }
  for (const TensorDecl& t : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.spec.shape()) numel *= d > 0 ? d : 0;
    sizes.emplace_back(TensorKey(ns, t.spec.name()), numel);
    for (DeclareCall& c : calls) *c.req.add_tensors() = t.spec;
    if (t.spec.init().kind() != v1::INIT_EXPLICIT) continue;
    if (numel == 0 || t.values.size() != numel) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", Quoted(t.spec.name()), " is INIT_EXPLICIT with ", numel,
          " elements, but ", t.values.size(), " values were given"));
    }
    for (const ChunkSpan& span : layout_.Chunks(ns, t.spec.name(), numel)) {
      v1::ChunkData* d = calls[span.shard].req.add_initial_values();
      d->set_tensor(t.spec.name());
      d->set_chunk(span.index);
      d->set_encoding(v1::ENCODING_F32);
      EncodeFloats(v1::ENCODING_F32, t.values.subspan(span.offset, span.length),
                   d->mutable_data());
    }
  }
  PSKIT_RETURN_IF_ERROR(Run(
      "Declare", calls,
      PSKIT_SEND(stubs_[shard][channel], Declare),
      [](DeclareCall&) { return absl::OkStatus(); }));
  absl::MutexLock lock(&mu_);
  for (auto& [key, numel] : sizes) sizes_[key] = numel;
  return absl::OkStatus();
}

template <typename OnOk>
absl::Status Client::RunGeneric(
    const char* op, const std::string& method,
    std::vector<Call<grpc::ByteBuffer, grpc::ByteBuffer>>& calls,
    std::function<grpc::ByteBuffer(Call<grpc::ByteBuffer, grpc::ByteBuffer>&)>
        encode,
    OnOk on_ok, uint64_t worker_id) {
  using WireCall = Call<grpc::ByteBuffer, grpc::ByteBuffer>;
  std::function<bool(uint32_t, const absl::Status&)> recover;
  if (worker_id != 0) {
    // A shard that restarted forgot the worker (NOT_FOUND): register it
    // again, once per shard and operation, and resend the same requests,
    // same sequences, which its loaded window may answer.
    recover = [this, worker_id,
               state = std::vector<int>(shards_.size(), 0)](
                  uint32_t shard, const absl::Status& s) mutable {
      if (s.code() != absl::StatusCode::kNotFound) return false;
      if (state[shard] == 0) state[shard] = ReregisterOn(shard, worker_id) ? 1 : 2;
      return state[shard] == 1;
    };
  }
  return Run(
      op, calls,
      [&](uint32_t shard, size_t channel, grpc::ClientContext* ctx,
          const grpc::ByteBuffer* req, grpc::ByteBuffer* resp,
          std::function<void(grpc::Status)> cb) {
        generic_[shard][channel]->UnaryCall(ctx, method, grpc::StubOptions(),
                                            req, resp, std::move(cb));
      },
      [&on_ok](WireCall& c) {
        absl::Status s = on_ok(c);
        // Parsed into the caller's buffers: let go of the answer now, and
        // of the request once it needs no retry, not at the end of the
        // operation (they would add up to the model's size).
        c.resp.Clear();
        if (s.ok()) c.req.Clear();
        return s;
      },
      std::move(recover), static_cast<size_t>(options_.max_in_flight_per_shard),
      // A call's request is made when it is first sent (a retry resends the
      // same bytes, same sequence), so only those in flight exist at once.
      std::function<void(WireCall&)>([&encode](WireCall& c) {
        if (!c.req.Valid() && encode) c.req = encode(c);
      }));
}

namespace {
constexpr char kPullMethod[] = "/pskit.v1.ParameterServer/Pull";
constexpr char kPushMethod[] = "/pskit.v1.ParameterServer/Push";
constexpr char kPushPullMethod[] = "/pskit.v1.ParameterServer/PushPull";
constexpr char kExchangeMethod[] = "/pskit.v1.ParameterServer/Exchange";

grpc::ByteBuffer SerializeSmall(const google::protobuf::MessageLite& m) {
  grpc::Slice slice(m.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}
}  // namespace

absl::Status Client::Pull(absl::string_view ns_in,
                          absl::Span<const TensorBuffer> tensors) {
  const std::string ns = NamespaceOf(ns_in);
  std::vector<std::pair<absl::string_view, uint64_t>> sizes;
  std::vector<std::string> keys;
  for (const TensorBuffer& t : tensors) {
    sizes.emplace_back(t.name, t.data.size());
    keys.push_back(TensorKey(ns, t.name));
  }
  PSKIT_RETURN_IF_ERROR(CheckBuffers(ns, sizes));
  using WireCall = Call<grpc::ByteBuffer, grpc::ByteBuffer>;
  std::vector<Batch> batches = client_internal::PlanRequests(
      layout_, ns, sizes, BytesPerElement(options_.encoding),
      options_.max_request_bytes);
  // A registered worker names itself: the shards' staleness rules keep
  // what it read (DCASGD, GEM) and may hold its pull (SSP, SYNC).
  uint64_t worker_id;
  {
    absl::MutexLock lock(&mu_);
    worker_id = worker_id_;
  }
  std::vector<WireCall> calls(batches.size());
  for (size_t i = 0; i < batches.size(); ++i) {
    WireCall& c = calls[i];
    c.shard = batches[i].shard;
    c.pieces = std::move(batches[i].pieces);
    v1::PullRequest req;
    req.set_namespace_(ns);
    *req.mutable_layout() = WireLayout(c.shard);
    req.set_encoding(options_.encoding);
    req.set_worker_id(worker_id);
    for (const Piece& p : c.pieces) {
      v1::ChunkRef* r = req.add_chunks();
      r->set_tensor(std::string(tensors[p.tensor].name));
      r->set_chunk(p.span.index);
    }
    c.req = SerializeSmall(req);
  }
  return RunGeneric(
      "Pull", kPullMethod, calls, /*encode=*/nullptr,
      [&](WireCall& c) {
        std::vector<client_internal::ChunkMeta> meta;
        return ReceiveChunks(c, /*with_acks=*/false, /*subtract=*/false,
                             tensors, &keys, &meta);
      },
      worker_id);
}

absl::Status Client::ReceiveChunks(Call<grpc::ByteBuffer, grpc::ByteBuffer>& c,
                                   bool with_acks, bool subtract,
                                   absl::Span<const TensorBuffer> dest,
                                   const std::vector<std::string>* keys,
                                   std::vector<client_internal::ChunkMeta>* meta) {
  std::vector<client_internal::ChunkSink> sinks;
  sinks.reserve(c.pieces.size());
  for (const Piece& p : c.pieces) {
    sinks.push_back({dest[p.tensor].name, p.span.index,
                     dest[p.tensor].data.data() + p.span.offset, p.span.length,
                     subtract});
  }
  PSKIT_RETURN_IF_ERROR(
      client_internal::ParseChunks(&c.resp, with_acks, sinks, meta));
  if (keys == nullptr) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  for (size_t j = 0; j < c.pieces.size(); ++j) {
    const Piece& p = c.pieces[j];
    RecordVersion((*keys)[p.tensor],
                  layout_.NumChunks(dest[p.tensor].data.size()), p.span.index,
                  (*meta)[j].version);
  }
  return absl::OkStatus();
}

absl::StatusOr<PushResult> Client::Push(
    absl::string_view ns, absl::Span<const ConstTensorBuffer> grads) {
  return PushImpl("Push", ns, grads, {});
}

absl::StatusOr<PushResult> Client::PushPull(
    absl::string_view ns, absl::Span<const ConstTensorBuffer> grads,
    absl::Span<const TensorBuffer> weights) {
  if (weights.size() != grads.size() || grads.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PushPull got ", grads.size(), " gradients and ", weights.size(),
        " weight buffers; give one of each per tensor, in the same order"));
  }
  return PushImpl("PushPull", ns, grads, weights);
}

grpc::ByteBuffer Client::EncodeChunks(
    const google::protobuf::MessageLite& header, int field,
    const std::vector<Piece>& pieces, absl::Span<const ConstTensorBuffer> src,
    const std::vector<uint64_t>* versions, bool copy,
    client_internal::SliceTracker* tracker) const {
  const size_t bpe = BytesPerElement(options_.encoding);
  const bool borrow = options_.encoding == v1::ENCODING_F32 && !copy;
  client_internal::OutgoingMessage msg;
  msg.AppendMessageFields(header);
  for (size_t j = 0; j < pieces.size(); ++j) {
    const Piece& p = pieces[j];
    v1::ChunkData meta;
    meta.set_tensor(std::string(src[p.tensor].name));
    meta.set_chunk(p.span.index);
    if (versions != nullptr) meta.set_version((*versions)[j]);
    meta.set_encoding(options_.encoding);
    absl::Span<const float> values =
        src[p.tensor].data.subspan(p.span.offset, p.span.length);
    if (borrow) {
      msg.AppendChunk(field, meta, reinterpret_cast<const char*>(values.data()),
                      values.size() * bpe, tracker);
      continue;
    }
    grpc::Slice payload(values.size() * bpe);
    // The slice is new: nothing else holds it yet.
    EncodeFloats(options_.encoding, values,
                 reinterpret_cast<char*>(const_cast<uint8_t*>(payload.begin())));
    msg.AppendChunk(field, meta, std::move(payload));
  }
  return msg.Finish();
}

absl::StatusOr<PushResult> Client::PushImpl(
    const char* op, absl::string_view ns_in,
    absl::Span<const ConstTensorBuffer> grads,
    absl::Span<const TensorBuffer> weights) {
  const bool pull = !weights.empty();
  const std::string ns = NamespaceOf(ns_in);
  std::vector<std::pair<absl::string_view, uint64_t>> sizes;
  std::vector<std::string> keys;
  for (size_t i = 0; i < grads.size(); ++i) {
    if (pull && (weights[i].name != grads[i].name ||
                 weights[i].data.size() != grads[i].data.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PushPull: weight buffer ", i, " (", Quoted(weights[i].name), ", ",
          weights[i].data.size(), " elements) does not match gradient ",
          Quoted(grads[i].name), " (", grads[i].data.size(), " elements)"));
    }
    sizes.emplace_back(grads[i].name, grads[i].data.size());
    keys.push_back(TensorKey(ns, grads[i].name));
  }
  PSKIT_RETURN_IF_ERROR(CheckBuffers(ns, sizes));
  using WireCall = Call<grpc::ByteBuffer, grpc::ByteBuffer>;
  const size_t bpe = BytesPerElement(options_.encoding);
  std::vector<Batch> batches = client_internal::PlanRequests(
      layout_, ns, sizes, bpe, options_.max_request_bytes);
  // The versions this worker pulled, and its id, read under mu_ once; the
  // (possibly long) encoding below runs without it.
  std::vector<std::vector<uint64_t>> pulled(batches.size());
  uint64_t worker_id;
  {
    absl::MutexLock lock(&mu_);
    worker_id = worker_id_;
    for (size_t i = 0; i < batches.size(); ++i) {
      for (const Piece& p : batches[i].pieces) {
        pulled[i].push_back(PulledVersion(keys[p.tensor], p.span.index));
      }
    }
  }
  // Order matters: `tracker`, whose destructor waits until gRPC lets go of
  // every slice borrowing `grads`, outlives `calls`, whose buffers hold such
  // slices.
  client_internal::SliceTracker tracker;
  std::vector<WireCall> calls(batches.size());
  // Exactly-once: each request its own sequence, taken now so they increase
  // in plan order; a retry resends the very same buffer, so the same one.
  std::vector<uint64_t> sequences(batches.size(), 0);
  for (size_t i = 0; i < batches.size(); ++i) {
    calls[i].shard = batches[i].shard;
    calls[i].pieces = std::move(batches[i].pieces);
    if (worker_id != 0) sequences[i] = NextSequence();
  }
  auto encode = [&](WireCall& c) {
    const size_t i = &c - calls.data();
    v1::PushRequest header;
    header.set_namespace_(ns);
    *header.mutable_layout() = WireLayout(c.shard);
    header.set_worker_id(worker_id);
    if (worker_id != 0) header.set_sequence(sequences[i]);
    if (pull) header.set_return_encoding(options_.encoding);
    return EncodeChunks(header, /*field=*/4, c.pieces, grads, &pulled[i],
                        /*copy=*/false, &tracker);
  };
  // Staleness per call, for the result (written on gRPC threads, read after
  // Run has returned).
  std::vector<std::vector<client_internal::ChunkMeta>> metas(calls.size());
  auto on_ok = [&](WireCall& c) -> absl::Status {
    std::vector<client_internal::ChunkMeta>& meta =
        metas[&c - calls.data()];
    if (!pull) {
      v1::PushResponse resp;
      grpc::ProtoBufferReader reader(&c.resp);
      if (!resp.ParseFromZeroCopyStream(&reader) ||
          resp.acks_size() != static_cast<int>(c.pieces.size())) {
        return absl::InternalError("the shard answered the wrong number of chunks");
      }
      meta.resize(c.pieces.size());
      for (int j = 0; j < resp.acks_size(); ++j) {
        meta[j].version = resp.acks(j).version();
        meta[j].staleness = resp.acks(j).staleness();
      }
      return absl::OkStatus();
    }
    // Only a pull brings the worker's copy up to date: a plain push leaves
    // it as old as it was, and records nothing.
    return ReceiveChunks(c, /*with_acks=*/true, /*subtract=*/false, weights,
                         &keys, &meta);
  };
  PSKIT_RETURN_IF_ERROR(RunGeneric(op, pull ? kPushPullMethod : kPushMethod,
                                   calls, encode, on_ok, worker_id));
  PushResult result;
  uint64_t total = 0;
  for (const auto& meta : metas) {
    for (const client_internal::ChunkMeta& m : meta) {
      ++result.chunks;
      total += m.staleness;
      result.max_staleness = std::max(result.max_staleness, m.staleness);
    }
  }
  if (result.chunks > 0) {
    result.mean_staleness = static_cast<double>(total) / result.chunks;
  }
  return result;
}

absl::Status Client::Exchange(absl::string_view ns_in, float alpha,
                              absl::Span<const TensorBuffer> params) {
  const std::string ns = NamespaceOf(ns_in);
  if (!(alpha > 0.0f && alpha <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Exchange alpha is ", alpha, "; it must be in (0, 1]"));
  }
  std::vector<std::pair<absl::string_view, uint64_t>> sizes;
  for (const TensorBuffer& t : params) {
    sizes.emplace_back(t.name, t.data.size());
  }
  PSKIT_RETURN_IF_ERROR(CheckBuffers(ns, sizes));
  using WireCall = Call<grpc::ByteBuffer, grpc::ByteBuffer>;
  const size_t bpe = BytesPerElement(options_.encoding);
  std::vector<Batch> batches = client_internal::PlanRequests(
      layout_, ns, sizes, bpe, options_.max_request_bytes);
  uint64_t worker_id;
  {
    absl::MutexLock lock(&mu_);
    worker_id = worker_id_;
  }
  // The parameters are sent from a copy, made as each call is first sent
  // (its answer is subtracted from the caller's buffer while gRPC may still
  // hold the request; a retry resends the copy). The copies are owned by
  // their requests, so nothing is borrowed (no SliceTracker).
  std::vector<ConstTensorBuffer> sources;
  for (const TensorBuffer& t : params) sources.push_back({t.name, t.data});
  std::vector<WireCall> calls(batches.size());
  std::vector<uint64_t> sequences(batches.size(), 0);
  for (size_t i = 0; i < batches.size(); ++i) {
    calls[i].shard = batches[i].shard;
    calls[i].pieces = std::move(batches[i].pieces);
    if (worker_id != 0) sequences[i] = NextSequence();
  }
  auto encode = [&](WireCall& c) {
    v1::ExchangeRequest header;
    header.set_namespace_(ns);
    *header.mutable_layout() = WireLayout(c.shard);
    header.set_worker_id(worker_id);
    if (worker_id != 0) header.set_sequence(sequences[&c - calls.data()]);
    header.set_alpha(alpha);
    return EncodeChunks(header, /*field=*/5, c.pieces, sources, nullptr,
                        /*copy=*/true, /*tracker=*/nullptr);
  };
  return RunGeneric(
      "Exchange", kExchangeMethod, calls, encode, [&](WireCall& c) {
        std::vector<client_internal::ChunkMeta> meta;
        return ReceiveChunks(c, /*with_acks=*/false, /*subtract=*/true, params,
                             nullptr, &meta);
      },
      worker_id);
}

#undef PSKIT_SEND

}  // namespace pskit
