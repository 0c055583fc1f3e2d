// Real shards (in process) and two downpour workers training the teacher
// MLP under gem and dcasgd-a: the shards keep compensation state for both
// workers while they train, the scale histogram fills, the model learns,
// and the state is gone once the workers leave.
#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/chunk_store.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"
#include "worker/host_params.h"
#include "worker/trainer.h"

namespace pskit::worker {
namespace {

using pskit::testing::TestCluster;

class CompensationTraining
    : public ::testing::TestWithParam<v1::Compensation> {};

TEST_P(CompensationTraining, StateForEachWorkerWhileTrainingNoneAfter) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  const Dataset train = MakeTeacherDataset(11, 1, 2000, 16, 4);
  JobOptions job;
  job.shards = cluster->addresses();
  job.ns = "comp";
  job.client.timeout = absl::Seconds(30);
  job.model = ParseMlpConfig("16,32,4", "relu", "xent").value();
  job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_MOMENTUM);
  job.server_config.mutable_optimizer()->set_learning_rate(0.02f);
  job.server_config.mutable_optimizer()->set_momentum(0.9f);
  job.server_config.set_compensation(GetParam());
  job.log_interval_s = 0;
  job.max_seconds = 120;

  // The most workers with state either shard saw, read by each worker
  // after its steps.
  std::atomic<uint64_t> most{0};
  auto watch = [&](int64_t) {
    for (int s = 0; s < 2; ++s) {
      const uint64_t w = cluster->shard(s).store().CompensationState().workers;
      uint64_t seen = most.load();
      while (w > seen && !most.compare_exchange_weak(seen, w)) {
      }
    }
  };
  std::vector<absl::StatusOr<TrainSummary>> runs(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      TrainOptions o;
      o.job = job;
      o.algorithm.name = "downpour";
      o.batch_size = 32;
      o.epochs = 3;
      o.rank = r;
      o.world = 2;
      o.after_step = watch;
      std::unique_ptr<Backend> be = MakeCpuBackend(1);
      runs[r] = Train(o, be.get(), train);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& run : runs) {
    ASSERT_OK(run);
    EXPECT_GT(run->steps, 20);
    EXPECT_LT(run->last_loss, 1.2f);  // ln 4 = 1.39 at chance
  }
  EXPECT_EQ(most.load(), 2u);
  uint64_t observed = 0;
  const int rule = GetParam() == v1::COMPENSATION_GEM ? 2 : 1;
  for (int s = 0; s < 2; ++s) {
    ChunkStore& store = cluster->shard(s).store();
    // Both workers left at the end of Train: their state went with them.
    EXPECT_EQ(store.CompensationState().workers, 0u) << "shard " << s;
    if (GetParam() == v1::COMPENSATION_GEM) {
      EXPECT_EQ(store.CompensationState().bytes, 0u) << "shard " << s;
    }
    observed += store.compensation_scales().Read(rule).count;
  }
  EXPECT_GT(observed, 0u);
}

INSTANTIATE_TEST_SUITE_P(Rules, CompensationTraining,
                         ::testing::Values(v1::COMPENSATION_GEM,
                                           v1::COMPENSATION_DCASGD_A));

}  // namespace
}  // namespace pskit::worker
