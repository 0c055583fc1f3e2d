// Real shards, workers and an evaluator in one process, on the synthetic
// teacher set: the cluster learns, and the evaluator ends the job.
#include <algorithm>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"
#include "worker/algorithms/algorithm.h"
#include "worker/evaluator.h"
#include "worker/host_params.h"
#include "worker/trainer.h"
#include "worker/worker_metrics.h"

namespace pskit::worker {
namespace {

using pskit::testing::TestCluster;

struct ClusterRun {
  std::vector<absl::StatusOr<TrainSummary>> workers;
  absl::StatusOr<EvalSummary> eval;
};

ClusterRun TrainCluster(TestCluster* cluster, const std::string& algorithm,
                 double target,
                 std::function<void(int64_t)> rank0_after_step = nullptr,
                 std::function<void(AlgorithmOptions&)> configure = nullptr) {
  const Dataset train = MakeTeacherDataset(11, 1, 6000, 16, 4);
  const Dataset test = MakeTeacherDataset(11, 2, 1000, 16, 4);
  JobOptions job;
  job.shards = cluster->addresses();
  job.ns = algorithm;
  job.client.timeout = absl::Seconds(30);
  job.model = ParseMlpConfig("16,64,4", "relu", "xent").value();
  job.server_config.mutable_optimizer()->set_kind(
      algorithm == "easgd" ? v1::OPTIMIZER_SGD : v1::OPTIMIZER_ADAM);
  job.server_config.mutable_optimizer()->set_learning_rate(
      algorithm == "easgd" ? 0.01f : 0.003f);
  job.log_interval_s = 0;
  job.max_seconds = 120;  // a safety net; the evaluator ends it far sooner

  ClusterRun run;
  run.workers.resize(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      TrainOptions o;
      o.job = job;
      o.algorithm.name = algorithm;
      o.batch_size = 32;
      o.epochs = 1000;
      o.algorithm.tau = 4;
      o.algorithm.local_lr = 0.05f;
      o.algorithm.local_momentum = 0.9f;
      if (configure) configure(o.algorithm);
      o.rank = r;
      o.world = 2;
      if (r == 0) o.after_step = rank0_after_step;
      std::unique_ptr<Backend> be = MakeCpuBackend(1);
      run.workers[r] = Train(o, be.get(), train);
    });
  }
  EvalOptions e;
  e.job = job;
  e.eval_interval_s = 0.2;
  e.target_accuracy = target;
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  run.eval = Evaluate(e, be.get(), test);
  for (auto& t : threads) t.join();
  return run;
}

void ExpectLearnedAndEnded(const ClusterRun& run, double target) {
  ASSERT_OK(run.eval);
  EXPECT_GE(run.eval->last_accuracy, target);
  EXPECT_GE(run.eval->seconds_to_target, 0);
  for (const auto& w : run.workers) {
    ASSERT_OK(w);
    EXPECT_TRUE(w->ended_by_evaluator);
    EXPECT_GT(w->steps, 10);
  }
}

TEST(Training, DownpourWorkersReachTheTargetAndTheEvaluatorEndsTheJob) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  ExpectLearnedAndEnded(TrainCluster(cluster.get(), "downpour", 0.8), 0.8);
}

// Dean et al.'s Algorithm 7.1: pushes and fetches every 4 steps, each
// gradient also applied to the worker's own weights in between.
TEST(Training, DownpourWithLocalUpdatesBetweenFetchesReachesTheTarget) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  ExpectLearnedAndEnded(
      TrainCluster(cluster.get(), "downpour", 0.8, nullptr,
                   [](AlgorithmOptions& a) {
                     a.n_push = 4;
                     a.n_fetch = 4;
                     a.local_update = true;
                   }),
      0.8);
}

// Downpour with local updates pushes the sum of the gradients since its
// last push (the local step keeps that sum in its own pass over them): with
// SGD lr 0.5 on the shard and gradients G1..G4 over steps 1..4 of n_push =
// n_fetch = 2, the weights fetched at step 4 are w0 - 0.5 (G1+G2) - 0.5
// (G3+G4), whatever the local steps did between the fetches.
TEST(Training, DownpourWithLocalUpdatesPushesEachSumOnce) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1));
  JobOptions job;
  job.shards = cluster->addresses();
  job.model = ParseMlpConfig("3,2", "relu", "xent").value();
  job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  job.server_config.mutable_optimizer()->set_learning_rate(0.5f);
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  ASSERT_OK_AND_ASSIGN(auto mlp, Mlp::Create(job.model, be.get(), 1));
  AlgorithmOptions o;
  o.name = "downpour";
  o.n_push = 2;
  o.n_fetch = 2;
  o.local_update = true;
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Algorithm> downpour,
      MakeAlgorithm(o, {&job, be.get(), mlp.get(), "w", 1}));
  ASSERT_OK(downpour->Setup());
  HostParams w0(*mlp), grads(*mlp), now(*mlp);
  ASSERT_OK(w0.CopyFrom(be.get(), ParamPointers(mlp.get())));
  // Step k's gradient of element j: k * (j + 1) / 8 (exact in binary).
  const auto g = [](int step, size_t j) {
    return static_cast<float>(step) * static_cast<float>(j + 1) / 8.0f;
  };
  for (int step = 1; step <= 4; ++step) {
    for (size_t i = 0; i < grads.values.size(); ++i) {
      for (size_t j = 0; j < grads.values[i].size(); ++j) {
        grads.values[i][j] = g(step, j);
      }
    }
    ASSERT_OK(grads.CopyTo(be.get(), GradPointers(mlp.get())));
    ASSERT_OK(downpour->AfterGradient(step));
    ASSERT_OK(downpour->Communicate(step, nullptr));
  }
  ASSERT_OK(downpour->Drain(nullptr));
  ASSERT_OK(now.CopyFrom(be.get(), ParamPointers(mlp.get())));
  downpour->Finish();
  for (size_t i = 0; i < now.values.size(); ++i) {
    for (size_t j = 0; j < now.values[i].size(); ++j) {
      const float expected = (w0.values[i][j] - 0.5f * (g(1, j) + g(2, j))) -
                             0.5f * (g(3, j) + g(4, j));
      EXPECT_FLOAT_EQ(now.values[i][j], expected) << i << "[" << j << "]";
    }
  }
}

TEST(Training, EasgdWorkersReachTheTarget) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  ExpectLearnedAndEnded(TrainCluster(cluster.get(), "easgd", 0.8), 0.8);
}

// Shard 1 is stopped and started again (memory-only, so it comes back
// empty) at rank 0's 30th step, while both workers train: the workers wait
// for it, declare the model again, and the job still reaches its target;
// with downpour's overlap too, where the NOT_FOUND comes back from the
// communication thread.
TEST(Training, ShardRestartedMidRunDoesNotStopTraining) {
  for (const bool overlap : {false, true}) {
    SCOPED_TRACE(overlap ? "overlap" : "no overlap");
    ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
    absl::Status restarted = absl::UnknownError("never restarted");
    ClusterRun run = TrainCluster(
        cluster.get(), "downpour", 0.8,
        [&](int64_t step) {
          if (step == 30) restarted = cluster->Restart(1);
        },
        [overlap](AlgorithmOptions& a) { a.overlap = overlap; });
    ASSERT_OK(restarted);
    ExpectLearnedAndEnded(run, 0.8);
  }
}

// A stop request (ps-worker's SIGTERM) ends training after the step in hand
// with a summary, and the evaluator at once instead of at its next round.
TEST(Training, StopRequestEndsTrainingAndTheEvaluator) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1));
  const Dataset train = MakeTeacherDataset(11, 1, 2000, 16, 4);
  absl::Notification stop;
  TrainOptions o;
  o.job.shards = cluster->addresses();
  o.job.model = ParseMlpConfig("16,32,4", "relu", "xent").value();
  o.job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  o.job.server_config.mutable_optimizer()->set_learning_rate(0.01f);
  o.job.log_interval_s = 0;
  o.job.stop = &stop;
  o.epochs = 1000000;  // only the stop request ends it
  o.after_step = [&](int64_t step) {
    if (step == 25) stop.Notify();
  };
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  ASSERT_OK_AND_ASSIGN(TrainSummary s, Train(o, be.get(), train));
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.steps, 25);
  // The worker left: no lease is held any more.
  ASSERT_OK_AND_ASSIGN(auto client, cluster->NewClient());
  ASSERT_OK_AND_ASSIGN(auto status, client->Status());
  EXPECT_EQ(status[0].live_workers(), 0u);
  EXPECT_GT(status[0].updates_applied(), 0u);

  EvalOptions e;
  e.job = o.job;
  e.eval_interval_s = 3600;  // it would wait an hour without the request
  e.target_accuracy = 0.999;
  ASSERT_OK_AND_ASSIGN(EvalSummary r, Evaluate(e, be.get(), train));
  EXPECT_EQ(r.evaluations, 1);
  EXPECT_EQ(r.reason, "stopped by a signal");
}

// Downpour with and without the overlap: every gradient reaches the shard
// once (the last one too, drained before the worker leaves), and the
// worker's staleness metric counts the overlap's extra step: 0 for every
// push in turn; with the overlap, 1 for every push but the first (each
// gradient is computed while the previous one is on the wire).
TEST(Training, DownpourOverlapPushesEveryGradientAndReportsItsStaleness) {
  const Dataset train = MakeTeacherDataset(11, 1, 3200, 16, 4);
  for (const bool overlap : {true, false}) {
    SCOPED_TRACE(overlap ? "overlap" : "no overlap");
    ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1));
    WorkerMetrics metrics("worker", 0);
    TrainOptions o;
    o.job.shards = cluster->addresses();
    o.job.model = ParseMlpConfig("16,32,4", "relu", "xent").value();
    o.job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
    o.job.server_config.mutable_optimizer()->set_learning_rate(0.003f);
    o.job.log_interval_s = 0;
    o.job.metrics = &metrics;
    o.algorithm.name = "downpour";
    o.algorithm.overlap = overlap;
    o.batch_size = 32;
    o.epochs = 2;  // 200 steps
    std::unique_ptr<Backend> be = MakeCpuBackend(1);
    ASSERT_OK_AND_ASSIGN(TrainSummary s, Train(o, be.get(), train));
    ASSERT_EQ(s.steps, 200);
    // The CPU the process used while it trained (this test's shard runs in
    // it too): some, and at most every core for the whole time.
    EXPECT_GT(s.cpu_seconds, 0);
    EXPECT_LE(s.cpu_seconds,
              s.seconds * std::max(1u, std::thread::hardware_concurrency()) +
                  0.05);

    ASSERT_OK_AND_ASSIGN(auto client, cluster->NewClient());
    ASSERT_OK_AND_ASSIGN(auto status, client->Status());
    // 4 tensors of one chunk each: 4 chunk updates per push.
    EXPECT_EQ(status[0].updates_applied(), 4u * 200u);
    EXPECT_EQ(status[0].live_workers(), 0u);

    bool found = false;
    for (const prometheus::MetricFamily& f : metrics.registry()->Collect()) {
      if (f.name != "pskit_worker_staleness_pushes") continue;
      ASSERT_EQ(f.metric.size(), 1u);
      found = true;
      EXPECT_EQ(f.metric[0].histogram.sample_count, 200u);
      EXPECT_EQ(f.metric[0].histogram.sample_sum, overlap ? 199.0 : 0.0);
    }
    EXPECT_TRUE(found);
  }
}

// A job ended elsewhere (another evaluator's verdict, or psctl drain) ends
// this evaluator at its next report.
TEST(Training, EvaluatorStopsWhenTheJobWasEndedElsewhere) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  const Dataset test = MakeTeacherDataset(11, 2, 500, 16, 4);
  EvalOptions e;
  e.job.shards = cluster->addresses();
  e.job.ns = "ended";
  e.job.model = ParseMlpConfig("16,32,4", "relu", "xent").value();
  e.job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  e.job.server_config.mutable_optimizer()->set_learning_rate(0.01f);
  e.job.log_interval_s = 0;
  e.eval_interval_s = 0.05;
  e.target_accuracy = 0.999;
  e.job.max_seconds = 120;  // a safety net
  ASSERT_OK_AND_ASSIGN(auto client,
                       Client::Connect(cluster->addresses(), e.job.client));
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  std::thread other([&] {
    // Once the namespace exists, another evaluator says the job is done.
    for (int i = 0; i < 2000; ++i) {
      v1::Evaluation verdict;
      verdict.set_accuracy(0.5);
      verdict.set_done(true);
      verdict.set_reason("the other evaluator");
      if (client->ReportEvaluation("ended", verdict).ok()) return;
      absl::SleepFor(absl::Milliseconds(10));
    }
  });
  absl::StatusOr<EvalSummary> r = Evaluate(e, be.get(), test);
  other.join();
  ASSERT_OK(r);
  EXPECT_NE(r->reason.find("ended on the shards"), std::string::npos)
      << r->reason;
  EXPECT_LT(r->seconds, 60);
}

// Local mode starts from exactly the weights a cluster serves on its first
// Pull: the same tensor specs, namespace and initializer, whatever the number
// of shards and the chunk size.
TEST(Training, LocalModeStartsFromTheWeightsTheShardsServe) {
  ServerOptions base;
  base.chunk_elems = 1000;  // every weight tensor spans chunks on all shards
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(3, base));
  ASSERT_OK_AND_ASSIGN(auto client, cluster->NewClient());
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  for (const std::string ns : {"", "same-start"}) {  // "" is the default one
    SCOPED_TRACE("namespace '" + ns + "'");
    JobOptions job;
    job.ns = ns;
    job.seed = 77;
    job.model = ParseMlpConfig("16,300,64,4", "relu", "xent").value();
    job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
    job.server_config.mutable_optimizer()->set_learning_rate(0.01f);
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Mlp> mlp,
                         Mlp::Create(job.model, be.get(), 1));

    ASSERT_OK(client->Declare(ns, job.server_config, ModelDecls(*mlp)));
    HostParams served(*mlp);
    ASSERT_OK(client->Pull(ns, served.mutable_views));

    AlgorithmOptions local;
    local.name = "local";
    ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<Algorithm> algorithm,
        MakeAlgorithm(local, {&job, be.get(), mlp.get(), "local", 1}));
    ASSERT_OK(algorithm->Setup());
    HostParams started(*mlp);
    ASSERT_OK(started.CopyFrom(be.get(), ParamPointers(mlp.get())));

    for (size_t i = 0; i < mlp->num_params(); ++i) {
      const std::vector<float>& a = started.values[i];
      const std::vector<float>& b = served.values[i];
      ASSERT_EQ(a.size(), b.size());
      size_t differ = 0, nonzero = 0;
      for (size_t j = 0; j < a.size(); ++j) {
        differ += a[j] != b[j];
        nonzero += a[j] != 0;
      }
      EXPECT_EQ(differ, 0u) << mlp->specs()[i].name();
      if (mlp->specs()[i].init().kind() != v1::INIT_ZEROS) {
        EXPECT_GT(nonzero, a.size() / 2) << mlp->specs()[i].name();
      }
    }
  }
}

TEST(Training, BadOptionsSayWhatIsWrong) {
  const Dataset data = MakeTeacherDataset(1, 1, 100, 8, 3);
  std::unique_ptr<Backend> be = MakeCpuBackend(1);
  TrainOptions o;
  o.algorithm.name = "local";
  o.job.model = ParseMlpConfig("9,3", "relu", "xent").value();
  absl::StatusOr<TrainSummary> r = Train(o, be.get(), data);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("start with 8"), absl::string_view::npos)
      << r.status();
  o.job.model = ParseMlpConfig("8,2", "relu", "xent").value();
  EXPECT_EQ(Train(o, be.get(), data).status().code(),
            absl::StatusCode::kInvalidArgument);  // 3 classes, 2 outputs
  o.job.model = ParseMlpConfig("8,3", "relu", "xent").value();
  o.algorithm.name = "hogwild";
  EXPECT_EQ(Train(o, be.get(), data).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.algorithm.name = "downpour";  // no shards
  EXPECT_EQ(Train(o, be.get(), data).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.algorithm.name = "local";
  o.epochs = 3;
  o.batch_size = 10;
  EXPECT_EQ(Train(o, be.get(), data).status().code(),
            absl::StatusCode::kInvalidArgument);  // no optimizer given
  o.job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAGRAD);
  EXPECT_EQ(Train(o, be.get(), data).status().code(),
            absl::StatusCode::kInvalidArgument);  // not run locally
  o.job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
  o.local_test = &data;
  o.local_eval_interval_s = 0;
  o.local_target_accuracy = 0.5;
  ASSERT_OK_AND_ASSIGN(TrainSummary s, Train(o, be.get(), data));
  EXPECT_GE(s.local_accuracy, 0.0);
  // A rank whose slice is smaller than a batch is refused up front.
  o.world = 20;
  o.rank = 19;
  EXPECT_EQ(Train(o, be.get(), data).status().code(),
            absl::StatusCode::kInvalidArgument);
  // An evaluator without a way to end the job is refused.
  EvalOptions e;
  e.job = o.job;
  e.job.shards = {"127.0.0.1:1"};
  absl::StatusOr<EvalSummary> ev = Evaluate(e, be.get(), data);
  EXPECT_EQ(ev.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ev.status().message().find("--target_accuracy"),
            absl::string_view::npos);
}

}  // namespace
}  // namespace pskit::worker
