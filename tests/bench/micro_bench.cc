// Micro-benchmarks of the shard's hot loops (Google Benchmark):
//   build/bin/pskit_micro_bench
// Items/s is elements per second on one core; for BM_PushPullCodec,
// bytes/s is push+pull payload bytes through one PushPull of a 16 MiB
// request (4 chunks of 4 MiB, f32, sgd), from the received slices to the
// reply's ByteBuffer: protobuf's parse and serialize (/0) against the
// shard's own codec, server/wire.h (/1).
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>

#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/encoding.h"
#include "common/layout.h"
#include "common/malloc_tuning.h"
#include "common/validation.h"
#include "server/chunk_store.h"
#include "server/update_rule.h"
#include "server/wire.h"

namespace pskit {
namespace {

void BM_Update(benchmark::State& state, v1::OptimizerKind kind) {
  v1::NamespaceConfig c;
  c.mutable_optimizer()->set_kind(kind);
  auto cfg = NormalizeConfig(c);
  auto rule = UpdateRule::Create(cfg->optimizer());
  const size_t n = state.range(0);
  std::vector<float> w(n, 0.5f), g(n, 0.01f), slots(n * rule->num_slots(), 0.0f);
  // As the shard does it: out of place into spare buffers (finiteness
  // checked in the same loop), then swapped in.
  std::vector<float> w_next(n), slots_next(slots.size());
  uint64_t step = 0;
  for (auto _ : state) {
    const bool finite =
        rule->Update(w.data(), g.data(), slots.data(), w_next.data(),
                     slots_next.data(), n, ++step, 0.001f);
    benchmark::DoNotOptimize(finite);
    w.swap(w_next);
    slots.swap(slots_next);
    benchmark::DoNotOptimize(w.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK_CAPTURE(BM_Update, sgd, v1::OPTIMIZER_SGD)->Arg(1 << 18)->Arg(50'000'000);
BENCHMARK_CAPTURE(BM_Update, momentum, v1::OPTIMIZER_MOMENTUM)->Arg(1 << 18);
BENCHMARK_CAPTURE(BM_Update, adagrad, v1::OPTIMIZER_ADAGRAD)->Arg(1 << 18);
BENCHMARK_CAPTURE(BM_Update, adam, v1::OPTIMIZER_ADAM)->Arg(1 << 18)->Arg(50'000'000);

void BM_Encode(benchmark::State& state, v1::Encoding e) {
  std::vector<float> v(1 << 18, 0.123f);
  std::string out;
  for (auto _ : state) {
    EncodeFloats(e, v, &out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * v.size());
}
BENCHMARK_CAPTURE(BM_Encode, f32, v1::ENCODING_F32);
BENCHMARK_CAPTURE(BM_Encode, f16, v1::ENCODING_F16);
BENCHMARK_CAPTURE(BM_Encode, bf16, v1::ENCODING_BF16);

void BM_FiniteCheck(benchmark::State& state) {
  std::vector<float> v(1 << 18, 0.123f);
  for (auto _ : state) benchmark::DoNotOptimize(FirstNonFinite(v));
  state.SetItemsProcessed(state.iterations() * v.size());
}
BENCHMARK(BM_FiniteCheck);

void BM_PushPullCodec(benchmark::State& state) {
  TuneMallocForLargeMessages();  // as ps-server does
  const bool wire = state.range(0) == 1;
  constexpr uint32_t kChunk = 1 << 20;
  constexpr int kChunks = 4;
  ChunkStore store(Layout::Create(1, kChunk).value(), 0, false, 64 << 20,
                   uint64_t{1} << 30);
  v1::Layout layout;
  layout.set_num_shards(1);
  layout.set_chunk_elems(kChunk);
  v1::DeclareRequest d;
  d.set_namespace_("job");
  *d.mutable_layout() = layout;
  d.mutable_config()->mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  d.mutable_config()->mutable_optimizer()->set_learning_rate(0.001f);
  v1::TensorSpec* t = d.add_tensors();
  t->set_name("w");
  t->add_shape(int64_t{kChunk} * kChunks);
  t->mutable_init()->set_kind(v1::INIT_ZEROS);
  v1::DeclareResponse dr;
  if (!store.Declare(d, &dr).ok()) {
    state.SkipWithError("declare failed");
    return;
  }
  v1::PushRequest req;
  req.set_namespace_("job");
  *req.mutable_layout() = layout;
  req.set_return_encoding(v1::ENCODING_F32);
  for (uint32_t c = 0; c < kChunks; ++c) {
    v1::ChunkData* g = req.add_grads();
    g->set_tensor("w");
    g->set_chunk(c);
    g->set_encoding(v1::ENCODING_F32);
    EncodeFloats(v1::ENCODING_F32, std::vector<float>(kChunk, 0.01f),
                 g->mutable_data());
  }
  // As received: slices of 64 KiB.
  const std::string bytes = req.SerializeAsString();
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < bytes.size(); at += 64 << 10) {
    slices.emplace_back(bytes.data() + at,
                        std::min<size_t>(64 << 10, bytes.size() - at));
  }
  const grpc::ByteBuffer in(slices.data(), slices.size());
  for (auto _ : state) {
    grpc::ByteBuffer out;
    if (wire) {
      v1::PushRequest r;
      std::vector<grpc::Slice> keep;
      std::vector<PayloadView> payloads;
      if (!ParseRequest(in, &r, &keep, &payloads)) state.SkipWithError("parse");
      v1::PushPullResponse resp;
      WireChunkOut values;
      if (!store.PushPull(r, payloads, resp.mutable_acks(), &values).ok()) {
        state.SkipWithError("pushpull");
      }
      out = values.AppendAnswer(resp, 2);
    } else {
      grpc::ByteBuffer copy(in);
      v1::PushRequest r;
      if (!grpc::SerializationTraits<v1::PushRequest>::Deserialize(&copy, &r)
               .ok()) {
        state.SkipWithError("parse");
      }
      v1::PushPullResponse resp;
      if (!store.PushPull(r, &resp).ok()) state.SkipWithError("pushpull");
      bool own = false;
      (void)grpc::SerializationTraits<v1::PushPullResponse>::Serialize(
          resp, &out, &own);
    }
    benchmark::DoNotOptimize(out.Length());
  }
  state.SetBytesProcessed(state.iterations() * 2 * int64_t{kChunk} * kChunks *
                          4);
}
BENCHMARK(BM_PushPullCodec)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace pskit
