// MakeAlgorithm's choice and checks, and the local algorithm's update, with
// no shard involved (the cluster algorithms run in
// tests/integration/training_test.cc).
#include "worker/algorithms/algorithm.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "worker/host_params.h"

namespace pskit::worker {
namespace {

struct Fixture {
  Fixture() {
    job.model = ParseMlpConfig("3,2", "relu", "xent").value();
    job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
    job.server_config.mutable_optimizer()->set_learning_rate(0.5f);
    mlp = Mlp::Create(job.model, backend.get(), 1).value();
  }
  AlgorithmContext context() { return {&job, backend.get(), mlp.get(), "w", 2}; }

  JobOptions job;
  std::unique_ptr<Backend> backend = MakeCpuBackend(1);
  std::unique_ptr<Mlp> mlp;
};

absl::StatusCode CodeOf(const AlgorithmOptions& o, const AlgorithmContext& c) {
  return MakeAlgorithm(o, c).status().code();
}

TEST(MakeAlgorithm, RefusesUnknownNamesMissingShardsAndBadOptions) {
  Fixture f;
  AlgorithmOptions o;
  o.name = "hogwild";
  absl::StatusOr<std::unique_ptr<Algorithm>> a = MakeAlgorithm(o, f.context());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("downpour, easgd or local"),
            absl::string_view::npos);
  o.name = "downpour";  // no shards
  EXPECT_EQ(CodeOf(o, f.context()), absl::StatusCode::kInvalidArgument);
  f.job.shards = {"127.0.0.1:1"};  // never contacted: nothing is set up
  EXPECT_OK(MakeAlgorithm(o, f.context()));
  o.n_fetch = 0;
  EXPECT_EQ(CodeOf(o, f.context()), absl::StatusCode::kInvalidArgument);
  o.n_fetch = 1;
  o.local_update = true;  // every local step would be overwritten at once
  absl::Status refused = MakeAlgorithm(o, f.context()).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("--n_fetch of 2 or more"),
            absl::string_view::npos)
      << refused;
  o.n_fetch = 2;
  EXPECT_OK(MakeAlgorithm(o, f.context()));
  f.job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_RMSPROP);
  EXPECT_EQ(CodeOf(o, f.context()), absl::StatusCode::kInvalidArgument);
  f.job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  o = AlgorithmOptions();
  o.name = "easgd";
  EXPECT_OK(MakeAlgorithm(o, f.context()));
  o.tau = 0;
  EXPECT_EQ(CodeOf(o, f.context()), absl::StatusCode::kInvalidArgument);
  o.tau = 1;
  o.alpha = 1.5f;
  EXPECT_EQ(CodeOf(o, f.context()), absl::StatusCode::kInvalidArgument);
  o = AlgorithmOptions();
  o.name = "local";
  f.job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_RMSPROP);
  EXPECT_EQ(CodeOf(o, f.context()), absl::StatusCode::kInvalidArgument);
  // The local optimizer applies no weight decay: refused, not ignored.
  f.job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  f.job.server_config.mutable_optimizer()->set_weight_decay(0.1f);
  EXPECT_EQ(CodeOf(o, f.context()), absl::StatusCode::kInvalidArgument);
}

TEST(MakeAlgorithm, OnlyLocalTrainsWithoutShards) {
  EXPECT_TRUE(TrainsWithoutShards("local"));
  EXPECT_FALSE(TrainsWithoutShards("downpour"));
  EXPECT_FALSE(TrainsWithoutShards("easgd"));
  EXPECT_FALSE(TrainsWithoutShards("hogwild"));
}

// Sets every gradient to 0.25 * (index + 1), runs step 1 of `algorithm`
// (no communication falls on it) and returns how much each weight moved.
std::vector<std::vector<float>> MovesOfOneStep(Fixture& f,
                                               Algorithm* algorithm) {
  HostParams before(*f.mlp), grads(*f.mlp), after(*f.mlp);
  EXPECT_OK(before.CopyFrom(f.backend.get(), ParamPointers(f.mlp.get())));
  for (size_t i = 0; i < grads.values.size(); ++i) {
    for (size_t j = 0; j < grads.values[i].size(); ++j) {
      grads.values[i][j] = 0.25f * static_cast<float>(j + 1);
    }
  }
  EXPECT_OK(grads.CopyTo(f.backend.get(), GradPointers(f.mlp.get())));
  EXPECT_OK(algorithm->AfterGradient(1));
  EXPECT_OK(algorithm->Communicate(1, nullptr));
  EXPECT_OK(after.CopyFrom(f.backend.get(), ParamPointers(f.mlp.get())));
  std::vector<std::vector<float>> moves(after.values.size());
  for (size_t i = 0; i < after.values.size(); ++i) {
    for (size_t j = 0; j < after.values[i].size(); ++j) {
      moves[i].push_back(after.values[i][j] - before.values[i][j]);
    }
  }
  return moves;
}

// Downpour with local_update applies the job's optimizer (SGD, lr 0.5) to
// its own weights between fetches; without it the weights wait for the
// next fetch. Step 1 of n_fetch 2 talks to no shard, so none is needed.
TEST(DownpourAlgorithm, LocalUpdateMovesTheWorkersWeightsBetweenFetches) {
  for (const bool local_update : {true, false}) {
    SCOPED_TRACE(local_update ? "local_update" : "no local_update");
    Fixture f;
    f.job.shards = {"127.0.0.1:1"};  // never contacted
    AlgorithmOptions o;
    o.name = "downpour";
    o.n_push = 2;
    o.n_fetch = 2;
    o.local_update = local_update;
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Algorithm> downpour,
                         MakeAlgorithm(o, f.context()));
    const std::vector<std::vector<float>> moves =
        MovesOfOneStep(f, downpour.get());
    for (size_t i = 0; i < moves.size(); ++i) {
      for (size_t j = 0; j < moves[i].size(); ++j) {
        EXPECT_FLOAT_EQ(moves[i][j],
                        local_update ? -0.5f * 0.25f * static_cast<float>(j + 1)
                                     : 0.0f)
            << f.mlp->specs()[i].name() << "[" << j << "]";
      }
    }
  }
}

// Local SGD: every step moves each weight by -lr * gradient.
TEST(LocalAlgorithm, AppliesTheShardsOptimizerToItsOwnWeights) {
  Fixture f;
  AlgorithmOptions o;
  o.name = "local";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Algorithm> local,
                       MakeAlgorithm(o, f.context()));
  ASSERT_OK(local->Setup());
  EXPECT_FALSE(local->JobDone());
  const std::vector<std::vector<float>> moves = MovesOfOneStep(f, local.get());
  for (size_t i = 0; i < moves.size(); ++i) {
    for (size_t j = 0; j < moves[i].size(); ++j) {
      EXPECT_FLOAT_EQ(moves[i][j], -0.5f * 0.25f * static_cast<float>(j + 1))
          << f.mlp->specs()[i].name() << "[" << j << "]";
    }
  }
}

}  // namespace
}  // namespace pskit::worker
