// tests/fuzz/fuzz_rpc.cc
//
// libFuzzer target: request validation of every RPC. Each input is a run of
// up to 16 calls against a fresh in-process shard (shard 0 of 2, a
// ChunkStore and a WorkerRegistry on a fake clock) that has namespace "job"
// (adam) declared with four small tensors, some held here and some on the
// other shard. Each call is an op picked by FuzzedDataProvider (an integer
// from the input's end) and the bytes of its request (from the front),
// parsed as that RPC's request message the way gRPC would, and then handed
// to the same code the handlers of server/ps_service.cc and
// server/admin_service.cc call (ParameterServer: Declare, Pull, Push,
// PushPull, Exchange, RegisterWorker, Heartbeat, Leave, ReportEvaluation;
// Admin: Status, SetConfig, Drain, DropNamespace (with the handler's name
// and live-worker checks), and Checkpoint/Restore as a snapshot round trip,
// with their checkpoint-id checks). One more op moves the clock, so leases
// lapse.
//
// Asserted beyond "no crash" (ASan/UBSan on):
//   - a refused request leaves the shard exactly as it was (every
//     namespace, config, tensor, chunk value, slot and version, the update
//     counter, the live workers), and its code is one a bad request may get
//     (never OK-with-garbage, UNKNOWN or INTERNAL), with a message;
//   - an accepted Pull answers one chunk per ref, with the stored version
//     and a payload of the right size in the asked encoding; an accepted
//     Push/PushPull acks every gradient with the chunk's version plus one;
//     Exchange answers one diff per chunk sent;
//   - no accepted request leaves a NaN or an infinity in any value (the
//     shard does not allow non-finite values);
//   - Checkpoint/Restore: the shard's snapshot, written as records and read
//     back, replaces the state and gives the same snapshot again.
//
// Seeds: PSKIT_FUZZ_WRITE_SEEDS=DIR writes one input per RPC (valid
// requests built with the protobuf classes) into DIR; tests/fuzz/corpus/
// fuzz_rpc holds them (scripts/fuzz.sh --write-seeds).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/encoding.h"
#include "common/layout.h"
#include "common/validation.h"
#include "pskit/v1/admin.pb.h"
#include "pskit/v1/checkpoint.pb.h"
#include "pskit/v1/ps.pb.h"
#include "server/checkpoint_store.h"
#include "server/chunk_store.h"
#include "server/worker_registry.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/testing/fake_clock.h"

namespace pskit {
namespace {

enum Op : uint8_t {
  kDeclare,
  kPull,
  kPush,
  kPushPull,
  kExchange,
  kRegisterWorker,
  kHeartbeat,
  kLeave,
  kReportEvaluation,
  kStatus,
  kSetConfig,
  kDrain,
  kCheckpointRestore,
  kAdvanceClock,
  kDropNamespace,  // last: the seeds' op numbers above stay as they were
  kNumOps
};

constexpr uint32_t kNumShards = 2;
constexpr uint32_t kShard = 0;
constexpr size_t kMaxMessageBytes = 16 << 10;
constexpr uint64_t kMaxMemoryBytes = 1 << 20;
constexpr int kMaxCalls = 16;

const Layout& TheLayout() {
  static const Layout layout = *Layout::Create(kNumShards, kDefaultChunkElems);
  return layout;
}

v1::Layout WireLayout() {
  v1::Layout l;
  l.set_num_shards(kNumShards);
  l.set_chunk_elems(kDefaultChunkElems);
  l.set_shard_index(kShard);
  return l;
}

// The base namespace's tensors: two held here, two on shard 1 (names picked
// once by where the layout puts them), and their sizes.
struct BaseTensor {
  std::string name;
  int64_t rows, cols;
  uint32_t shard;
};
const std::vector<BaseTensor>& BaseTensors() {
  static const std::vector<BaseTensor> tensors = [] {
    std::vector<BaseTensor> out;
    int here = 0, there = 0;
    const int64_t shapes[][2] = {{3, 4}, {1, 5}, {2, 2}, {1, 3}};
    for (int i = 0; here + there < 4; ++i) {
      const std::string name = "t" + std::to_string(i);
      const uint32_t shard = TheLayout().Chunk("job", name, 1, 0).shard;
      int& count = shard == kShard ? here : there;
      if (count == 2) continue;
      const auto& shape = shapes[out.size()];
      out.push_back({name, shape[0], shape[1], shard});
      ++count;
    }
    return out;
  }();
  return tensors;
}

v1::DeclareRequest BaseDeclare() {
  v1::DeclareRequest req;
  req.set_namespace_("job");
  *req.mutable_layout() = WireLayout();
  req.mutable_config()->mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
  req.mutable_config()->mutable_optimizer()->set_learning_rate(0.01f);
  for (const BaseTensor& t : BaseTensors()) {
    v1::TensorSpec* spec = req.add_tensors();
    spec->set_name(t.name);
    spec->add_shape(t.rows);
    spec->add_shape(t.cols);
    spec->mutable_init()->set_kind(v1::INIT_GLOROT_UNIFORM);
    spec->mutable_init()->set_seed(7);
  }
  return req;
}

// The shard's state in a canonical order, serialized: equal strings mean
// equal states.
using ChunkKey = std::tuple<std::string, std::string, uint32_t>;
struct Canonical {
  std::string bytes;
  std::map<ChunkKey, v1::ChunkRecord> chunks;
};
Canonical Canon(const ChunkStore& store, WorkerRegistry* workers) {
  ShardSnapshot snap = store.Snapshot();
  Canonical out;
  std::map<std::string, v1::NamespaceRecord> namespaces;
  for (v1::NamespaceRecord& ns : snap.namespaces) {
    std::vector<v1::TensorSpec> tensors(ns.tensors().begin(),
                                        ns.tensors().end());
    std::sort(tensors.begin(), tensors.end(),
              [](const auto& a, const auto& b) { return a.name() < b.name(); });
    ns.clear_tensors();
    for (v1::TensorSpec& t : tensors) *ns.add_tensors() = std::move(t);
    namespaces[ns.name()] = std::move(ns);
  }
  for (v1::ChunkRecord& c : snap.chunks) {
    out.chunks[{c.namespace_(), c.tensor(), c.chunk()}] = std::move(c);
  }
  std::string bytes;
  for (const auto& [name, ns] : namespaces) {
    ns.SerializeToString(&bytes);
    out.bytes += std::to_string(bytes.size()) + ":" + bytes;
  }
  for (const auto& [key, c] : out.chunks) {
    c.SerializeToString(&bytes);
    out.bytes += std::to_string(bytes.size()) + ":" + bytes;
  }
  out.bytes += "updates=" + std::to_string(snap.updates_applied);
  out.bytes += " workers=" + std::to_string(workers->LiveCount());
  out.bytes += store.draining() ? " draining" : "";
  return out;
}

bool AllFinite(const Canonical& c) {
  for (const auto& [key, chunk] : c.chunks) {
    const size_t n = chunk.values().size() / sizeof(float);
    for (size_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, chunk.values().data() + i * sizeof(float), sizeof(v));
      if (!std::isfinite(v)) return false;
    }
  }
  return true;
}

// The codes a refused request may get.
bool RefusalCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kUnavailable:
      return true;
    default:
      return false;
  }
}

// What PsService does before a data-plane call: worker 0 is anonymous.
absl::Status CheckWorker(WorkerRegistry* workers, uint64_t id) {
  return id == 0 ? absl::OkStatus() : workers->CheckLive(id);
}

uint64_t VersionOf(const Canonical& c, const std::string& ns,
                   const std::string& tensor, uint32_t chunk) {
  auto it = c.chunks.find({ns.empty() ? "default" : ns, tensor, chunk});
  return it == c.chunks.end() ? 0 : it->second.version();
}

// Runs one call; returns its status. Checks what an accepted call answered.
absl::Status Call(Op op, const std::string& bytes, const Canonical& before,
                  ChunkStore* store, WorkerRegistry* workers,
                  testing::FakeClock* clock, bool* parsed) {
  *parsed = true;
  switch (op) {
    case kDeclare: {
      v1::DeclareRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      v1::DeclareResponse resp;
      return store->Declare(req, &resp);
    }
    case kPull: {
      v1::PullRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      v1::PullResponse resp;
      absl::Status s = store->Pull(req, &resp);
      if (s.ok()) {
        FUZZ_CHECK(resp.chunks_size() == req.chunks_size());
        for (int i = 0; i < resp.chunks_size(); ++i) {
          const v1::ChunkData& c = resp.chunks(i);
          FUZZ_CHECK(c.tensor() == req.chunks(i).tensor());
          FUZZ_CHECK(c.chunk() == req.chunks(i).chunk());
          FUZZ_CHECK(c.version() == VersionOf(before, req.namespace_(),
                                              c.tensor(), c.chunk()));
          const size_t bpe = BytesPerElement(c.encoding());
          FUZZ_CHECK(bpe > 0 && c.data().size() % bpe == 0);
        }
      }
      return s;
    }
    case kPush:
    case kPushPull: {
      v1::PushRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      absl::Status s = CheckWorker(workers, req.worker_id());
      if (!s.ok()) return s;
      google::protobuf::RepeatedPtrField<v1::ChunkAck> acks;
      if (op == kPush) {
        v1::PushResponse resp;
        s = store->Push(req, &resp);
        acks = resp.acks();
      } else {
        v1::PushPullResponse resp;
        s = store->PushPull(req, &resp);
        acks = resp.acks();
        if (s.ok()) FUZZ_CHECK(resp.chunks_size() == req.grads_size());
      }
      if (s.ok()) {
        FUZZ_CHECK(acks.size() == req.grads_size());
        for (int i = 0; i < acks.size(); ++i) {
          FUZZ_CHECK(acks[i].version() ==
                     VersionOf(before, req.namespace_(), req.grads(i).tensor(),
                               req.grads(i).chunk()) +
                         1);
        }
      }
      return s;
    }
    case kExchange: {
      v1::ExchangeRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      absl::Status s = CheckWorker(workers, req.worker_id());
      if (!s.ok()) return s;
      v1::ExchangeResponse resp;
      s = store->Exchange(req, &resp);
      if (s.ok()) FUZZ_CHECK(resp.diffs_size() == req.params_size());
      return s;
    }
    case kRegisterWorker: {
      v1::RegisterWorkerRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      if (store->draining()) return absl::UnavailableError("draining");
      absl::StatusOr<uint64_t> id =
          workers->Register(req.worker_id(), req.name());
      if (id.ok()) {
        FUZZ_CHECK(*id != 0);
        FUZZ_CHECK(req.worker_id() == 0 || *id == req.worker_id());
        FUZZ_CHECK(workers->CheckLive(*id).ok());
      }
      return id.status();
    }
    case kHeartbeat: {
      v1::HeartbeatRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      absl::Status s = workers->Heartbeat(req.worker_id());
      if (s.ok()) (void)store->JobDone(req.namespace_());
      return s;
    }
    case kLeave: {
      v1::LeaveRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      return workers->Leave(req.worker_id());
    }
    case kReportEvaluation: {
      v1::ReportEvaluationRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      absl::Status s = store->ReportEvaluation(req);
      if (s.ok() && req.evaluation().done()) {
        FUZZ_CHECK(store->JobDone(req.namespace_().empty()
                                      ? "default"
                                      : req.namespace_()));
      }
      return s;
    }
    case kStatus: {
      v1::StatusRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      v1::StatusResponse resp;
      store->Describe(&resp);
      return absl::OkStatus();
    }
    case kSetConfig: {
      v1::SetConfigRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      v1::SetConfigResponse resp;
      return store->SetConfig(req, &resp);
    }
    case kDrain: {
      v1::DrainRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      // A durable shard checks the drain checkpoint's id first.
      if (!req.checkpoint_id().empty()) {
        if (absl::Status s = ValidateCheckpointId(req.checkpoint_id());
            !s.ok()) {
          return s;
        }
      }
      store->Drain(req.reason(), 1);
      FUZZ_CHECK(store->draining());
      return absl::OkStatus();
    }
    case kCheckpointRestore: {
      v1::CheckpointRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      if (!req.id().empty()) {
        if (absl::Status s = ValidateCheckpointId(req.id()); !s.ok()) return s;
      }
      // What a checkpoint writes and a restore reads back.
      ShardSnapshot snap = store->Snapshot();
      ShardSnapshot read;
      read.updates_applied = snap.updates_applied;
      for (const auto& ns : snap.namespaces) {
        FUZZ_CHECK(read.namespaces.emplace_back().ParseFromString(
            ns.SerializeAsString()));
      }
      for (const auto& c : snap.chunks) {
        FUZZ_CHECK(
            read.chunks.emplace_back().ParseFromString(c.SerializeAsString()));
      }
      absl::Status s = store->Replace(read);
      FUZZ_CHECK(s.ok());
      FUZZ_CHECK(Canon(*store, workers).bytes == before.bytes);
      return s;
    }
    case kDropNamespace: {
      v1::DropNamespaceRequest req;
      if (!(*parsed = req.ParseFromString(bytes))) break;
      // What AdminService::DropNamespace checks before the store's call.
      const std::string& ns = req.namespace_();
      if (ns.empty()) return absl::InvalidArgumentError("empty namespace");
      if (absl::Status s = ValidateName("namespace", ns); !s.ok()) return s;
      if (!store->ConfigOf(ns).ok()) return absl::NotFoundError("not declared");
      if (!workers->LiveIn(ns).empty()) {
        return absl::FailedPreconditionError("live workers");
      }
      v1::DropNamespaceResponse resp;
      absl::Status s = store->DropNamespace(ns, &resp);
      if (s.ok()) FUZZ_CHECK(!store->ConfigOf(ns).ok());
      return s;
    }
    case kAdvanceClock: {
      clock->Advance(absl::Seconds(bytes.size()));
      return absl::OkStatus();
    }
    case kNumOps:
      break;
  }
  return absl::OkStatus();
}

fuzz::Seeds MakeSeeds() {
  fuzz::Seeds seeds;
  auto add = [&](const std::string& name,
                 std::vector<std::pair<Op, std::string>> calls) {
    fuzz::FuzzInputWriter w;
    for (const auto& [op, bytes] : calls) {
      w.Small(op);
      w.Int<uint16_t>(static_cast<uint16_t>(bytes.size()));
      w.Bytes(bytes);
    }
    seeds.emplace_back(name, w.Finish());
  };
  const BaseTensor* mine = nullptr;
  for (const BaseTensor& t : BaseTensors()) {
    if (t.shard == kShard) {
      mine = &t;
      break;
    }
  }
  const uint64_t n = static_cast<uint64_t>(mine->rows * mine->cols);

  v1::DeclareRequest declare = BaseDeclare();
  declare.set_namespace_("other");
  declare.mutable_config()->mutable_optimizer()->set_kind(
      v1::OPTIMIZER_MOMENTUM);
  add("declare", {{kDeclare, declare.SerializeAsString()},
                  {kDeclare, BaseDeclare().SerializeAsString()}});

  for (v1::Encoding e :
       {v1::ENCODING_F32, v1::ENCODING_F16, v1::ENCODING_BF16}) {
    v1::PullRequest pull;
    pull.set_namespace_("job");
    *pull.mutable_layout() = WireLayout();
    pull.set_encoding(e);
    for (const BaseTensor& t : BaseTensors()) {
      if (t.shard != kShard) continue;
      v1::ChunkRef* ref = pull.add_chunks();
      ref->set_tensor(t.name);
      ref->set_chunk(0);
    }
    add("pull-" + EncodingName(e), {{kPull, pull.SerializeAsString()}});

    v1::PushRequest push;
    push.set_namespace_("job");
    *push.mutable_layout() = WireLayout();
    push.set_return_encoding(e);
    v1::ChunkData* g = push.add_grads();
    g->set_tensor(mine->name);
    g->set_chunk(0);
    g->set_encoding(e);
    std::vector<float> grad(n, 0.5f);
    EncodeFloats(e, grad, g->mutable_data());
    add("push-" + EncodingName(e), {{kPush, push.SerializeAsString()},
                                    {kPushPull, push.SerializeAsString()}});

    v1::ExchangeRequest ex;
    ex.set_namespace_("job");
    *ex.mutable_layout() = WireLayout();
    ex.set_alpha(0.5f);
    *ex.add_params() = *g;
    add("exchange-" + EncodingName(e), {{kExchange, ex.SerializeAsString()}});
  }

  v1::RegisterWorkerRequest reg;
  reg.set_name("host:1");
  reg.set_worker_id(42);
  v1::HeartbeatRequest hb;
  hb.set_worker_id(42);
  hb.set_namespace_("job");
  v1::PushRequest push;
  push.set_namespace_("job");
  *push.mutable_layout() = WireLayout();
  push.set_worker_id(42);
  v1::ChunkData* g = push.add_grads();
  g->set_tensor(mine->name);
  g->set_encoding(v1::ENCODING_F32);
  std::vector<float> grad(n, -1.0f);
  EncodeFloats(v1::ENCODING_F32, grad, g->mutable_data());
  v1::LeaveRequest leave;
  leave.set_worker_id(42);
  add("workers", {{kRegisterWorker, reg.SerializeAsString()},
                  {kHeartbeat, hb.SerializeAsString()},
                  {kPush, push.SerializeAsString()},
                  {kAdvanceClock, std::string(20, 'x')},
                  {kHeartbeat, hb.SerializeAsString()},
                  {kLeave, leave.SerializeAsString()}});

  v1::ReportEvaluationRequest report;
  report.set_namespace_("job");
  report.mutable_evaluation()->set_loss(0.25);
  report.mutable_evaluation()->set_accuracy(0.9);
  report.mutable_evaluation()->set_done(true);
  report.mutable_evaluation()->set_reason("target reached");
  add("report", {{kReportEvaluation, report.SerializeAsString()},
                 {kStatus, ""}});

  v1::SetConfigRequest set;
  set.set_namespace_("job");
  set.mutable_optimizer()->set_learning_rate(0.5f);
  set.mutable_optimizer()->set_beta1(0.8f);
  set.set_compensation(v1::COMPENSATION_INVERSE);
  add("setconfig", {{kSetConfig, set.SerializeAsString()},
                    {kPush, push.SerializeAsString()}});

  v1::DrainRequest drain;
  drain.set_reason("maintenance");
  drain.set_checkpoint_id("drain-1");
  v1::CheckpointRequest ckpt;
  ckpt.set_id("c1");
  add("drain", {{kPush, push.SerializeAsString()},
                {kCheckpointRestore, ckpt.SerializeAsString()},
                {kDrain, drain.SerializeAsString()},
                {kRegisterWorker, reg.SerializeAsString()}});

  v1::DropNamespaceRequest drop;
  drop.set_namespace_("job");
  add("drop", {{kDropNamespace, drop.SerializeAsString()},
               {kPush, push.SerializeAsString()},
               {kStatus, ""}});
  return seeds;
}

}  // namespace
}  // namespace pskit

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  pskit::fuzz::QuietLogs();
  pskit::fuzz::WriteSeedsIfAsked(pskit::MakeSeeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pskit;
  FuzzedDataProvider in(data, size);
  testing::FakeClock clock;
  WorkerRegistry workers(&clock, absl::Seconds(10));
  ChunkStore store(TheLayout(), kShard, /*allow_nonfinite=*/false,
                   kMaxMessageBytes, kMaxMemoryBytes);
  v1::DeclareResponse declared;
  FUZZ_CHECK(store.Declare(BaseDeclare(), &declared).ok());
  Canonical before = Canon(store, &workers);
  for (int call = 0; call < kMaxCalls && in.remaining_bytes() > 0; ++call) {
    const Op op = static_cast<Op>(in.ConsumeIntegral<uint8_t>() % kNumOps);
    const std::string bytes =
        in.ConsumeBytesAsString(in.ConsumeIntegral<uint16_t>());
    bool parsed = false;
    absl::Status s = Call(op, bytes, before, &store, &workers, &clock, &parsed);
    Canonical after = Canon(store, &workers);
    if (!s.ok()) {
      FUZZ_CHECK(RefusalCode(s.code()));
      FUZZ_CHECK(!s.message().empty());
      if (op != kAdvanceClock) FUZZ_CHECK(after.bytes == before.bytes);
    }
    FUZZ_CHECK(AllFinite(after));
    before = std::move(after);
  }
  return 0;
}
