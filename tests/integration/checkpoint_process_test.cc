// Checkpoints against real ps-server processes: kill -9 in the middle of
// writing a 256 MiB checkpoint, and SIGTERM's final checkpoint.
#include <signal.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/testing/child_server.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::ChildServer;
using testing::TempDir;

// 256 MiB of float32 in four tensors.
constexpr int kTensors = 4;
constexpr int64_t kElems = 16 << 20;

std::unique_ptr<Client> Connect(const std::string& address,
                                absl::Duration timeout) {
  ClientOptions opts;
  opts.timeout = timeout;
  auto c = Client::Connect({address}, opts);
  EXPECT_OK(c);
  return c.ok() ? std::move(*c) : nullptr;
}

std::vector<std::string> Flags(const std::string& dir, int hold) {
  std::vector<std::string> f = {"--listen", "127.0.0.1:0", "--data_dir", dir,
                                "--checkpoint_interval_s", "0",
                                "--log_level", "warn"};
  if (hold > 0) {
    f.push_back("--testonly_hold_checkpoint");
    f.push_back(std::to_string(hold));
  }
  return f;
}

void PushAll(Client* c, float value, std::vector<float>* buffer) {
  std::fill(buffer->begin(), buffer->end(), value);
  for (int t = 0; t < kTensors; ++t) {
    ASSERT_OK(c->Push("big", {{absl::StrCat("t", t), *buffer}}));
  }
}

// Every element of every tensor equals `want`.
void ExpectAll(Client* c, float want, std::vector<float>* buffer) {
  for (int t = 0; t < kTensors; ++t) {
    ASSERT_OK(c->Pull("big", {{absl::StrCat("t", t), absl::MakeSpan(*buffer)}}));
    for (int64_t i = 0; i < kElems; i += 4099) {
      ASSERT_EQ((*buffer)[i], want) << "tensor t" << t << " element " << i;
    }
    ASSERT_EQ(buffer->back(), want);
  }
}

TEST(CheckpointProcess, KillNineWhileWritingLoadsTheLastCompleteCheckpoint) {
  TempDir dir;
  std::vector<float> buffer(kElems);
  {
    // Checkpoint 1 completes; checkpoint 2 is held between building its
    // batch and committing it, and the process is killed there.
    ChildServer server(Flags(dir.path(), /*hold=*/2));
    ASSERT_FALSE(server.address().empty()) << server.first_line();
    auto c = Connect(server.address(), absl::Seconds(60));
    v1::NamespaceConfig cfg;
    cfg.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
    cfg.mutable_optimizer()->set_learning_rate(1.0f);
    std::vector<TensorDecl> model(kTensors);
    for (int t = 0; t < kTensors; ++t) {
      model[t].spec.set_name(absl::StrCat("t", t));
      model[t].spec.add_shape(kElems);
      model[t].spec.mutable_init()->set_kind(v1::INIT_CONSTANT);
      model[t].spec.mutable_init()->set_value(10.0f);
    }
    ASSERT_OK(c->Declare("big", cfg, model));
    PushAll(c.get(), 1.0f, &buffer);  // 9
    ASSERT_OK_AND_ASSIGN(auto first, c->Checkpoint("c1"));
    EXPECT_GE(first[0].bytes(), uint64_t{256} << 20);
    PushAll(c.get(), 2.0f, &buffer);  // 7, never checkpointed

    // The held call's deadline is short: the shard goes on with the
    // checkpoint whether or not its caller still waits.
    auto held = Connect(server.address(), absl::Seconds(1));
    std::thread checkpoint([&] { (void)held->Checkpoint("c2"); });
    EXPECT_EQ(server.ReadLine(), "ps-server: holding checkpoint");
    EXPECT_EQ(server.StopWith(SIGKILL), -1);
    checkpoint.join();
  }
  {
    ChildServer server(Flags(dir.path(), 0));
    ASSERT_FALSE(server.address().empty()) << server.first_line();
    auto c = Connect(server.address(), absl::Seconds(60));
    ExpectAll(c.get(), 9.0f, &buffer);
    // A checkpoint that completed survives kill -9 as well.
    PushAll(c.get(), 4.0f, &buffer);  // 5
    ASSERT_OK(c->Checkpoint("c3"));
    EXPECT_EQ(server.StopWith(SIGKILL), -1);
  }
  ChildServer server(Flags(dir.path(), 0));
  ASSERT_FALSE(server.address().empty()) << server.first_line();
  auto c = Connect(server.address(), absl::Seconds(60));
  ExpectAll(c.get(), 5.0f, &buffer);
}

TEST(CheckpointProcess, SigtermWritesAFinalCheckpointAndLosesNothing) {
  TempDir dir;
  std::vector<float> w(1000);
  {
    ChildServer server(Flags(dir.path(), 0));
    ASSERT_FALSE(server.address().empty()) << server.first_line();
    auto c = Connect(server.address(), absl::Seconds(20));
    ASSERT_OK(c->Declare("", testing::SgdConfig(1.0f),
                         {testing::ZerosTensor("w", 1000)}));
    std::vector<float> ones(1000, 1.0f);
    for (int i = 0; i < 37; ++i) ASSERT_OK(c->Push("", {{"w", ones}}));
    EXPECT_EQ(server.StopWith(SIGTERM), 0);
  }
  ChildServer server(Flags(dir.path(), 0));
  ASSERT_FALSE(server.address().empty()) << server.first_line();
  auto c = Connect(server.address(), absl::Seconds(20));
  ASSERT_OK(c->Pull("", {{"w", absl::MakeSpan(w)}}));
  for (float v : w) ASSERT_EQ(v, -37.0f);
}

}  // namespace
}  // namespace pskit

#include "tests/testing/cluster.h"
#include "worker/evaluator.h"

namespace pskit {
namespace {

// A ps-worker killed with SIGKILL mid-training and started again with the
// same rank registers again, pulls the shards' model (not a fresh one) and
// carries on to a clean exit.
TEST(WorkerProcess, KilledWorkerRestartsAndCarriesOn) {
  ASSERT_OK_AND_ASSIGN(auto cluster, testing::TestCluster::Start(2));
  const std::string shards =
      cluster->addresses()[0] + "," + cluster->addresses()[1];
  const std::vector<std::string> flags = {
      "--shards", shards, "--rank", "0", "--world", "1",
      "--synthetic_train", "20000", "--synthetic_dim", "16",
      "--synthetic_classes", "4", "--layers", "16,64,4",
      "--log_interval_s", "0.01", "--backend", "cpu"};
  {
    std::vector<std::string> f = flags;
    f.insert(f.end(), {"--epochs", "1000"});
    ChildServer worker("ps-worker", f, /*merge_stderr=*/true);
    // Wait (by reading its progress lines, not by sleeping) for 300 steps.
    std::string line = worker.first_line();
    long step = 0;
    while (!line.empty() && step < 300) {
      const size_t at = line.find(" step ");
      if (at != std::string::npos) step = std::atol(line.c_str() + at + 6);
      if (step < 300) line = worker.ReadLine();
    }
    ASSERT_GE(step, 300) << "the worker stopped before 300 steps";
    EXPECT_EQ(worker.StopWith(SIGKILL), -1);
  }
  // What the shards hold now: trained, well above chance (0.25).
  worker::EvalOptions e;
  e.job.shards = cluster->addresses();
  e.job.model = worker::ParseMlpConfig("16,64,4", "relu", "xent").value();
  e.job.server_config.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
  e.job.server_config.mutable_optimizer()->set_learning_rate(0.001f);
  e.target_accuracy = 0.01;  // one evaluation
  const worker::Dataset test = worker::MakeTeacherDataset(1, 2001, 2000, 16, 4);
  std::unique_ptr<worker::Backend> be = worker::MakeCpuBackend(1);
  ASSERT_OK_AND_ASSIGN(worker::EvalSummary before, worker::Evaluate(e, be.get(), test));
  EXPECT_GT(before.last_accuracy, 0.5);

  std::vector<std::string> f = flags;
  f.insert(f.end(), {"--epochs", "1", "--log_interval_s", "0"});
  ChildServer again("ps-worker", f, /*merge_stderr=*/true);
  std::string summary;
  for (std::string line = again.first_line(); !line.empty(); line = again.ReadLine()) {
    if (line.rfind("worker summary", 0) == 0) summary = line;
  }
  EXPECT_EQ(again.StopWith(0), 0);
  EXPECT_NE(summary.find("rank 0"), std::string::npos) << summary;
  ASSERT_OK_AND_ASSIGN(worker::EvalSummary after, worker::Evaluate(e, be.get(), test));
  EXPECT_GT(after.last_accuracy, before.last_accuracy - 0.05)
      << "the restarted worker started the model over";
}

}  // namespace
}  // namespace pskit
