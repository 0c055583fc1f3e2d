// Micro-benchmarks of the shard's hot loops (Google Benchmark):
//   build/bin/pskit_micro_bench
// Items/s is elements per second on one core.
#include <vector>

#include "benchmark/benchmark.h"
#include "common/encoding.h"
#include "common/validation.h"
#include "server/update_rule.h"

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

}  // namespace
}  // namespace pskit
