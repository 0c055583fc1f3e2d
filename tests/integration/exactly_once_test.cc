// Exactly-once pushes on real shards: a push retried across a shard restart
// is applied once (raw requests, and through the Client's own retry), and an
// answer lost after the shard applied the call (ServerOptions::
// testonly_lose_answer) does not make the Client's retry apply it again,
// for Push and Exchange. An anonymous Client (no worker id) is shown to give
// that up.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/channel.h"
#include "common/grpc_status.h"
#include "gtest/gtest.h"
#include "pskit/v1/ps.grpc.pb.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::SgdConfig;
using testing::TempDir;
using testing::TestCluster;
using testing::ZerosTensor;

constexpr int64_t kNumel = 1000;  // one chunk

ServerOptions Durable(const std::string& dir) {
  ServerOptions o;
  o.data_dir = dir;
  o.chunk_elems = 4096;
  o.checkpoint_interval = absl::ZeroDuration();  // the final one only
  return o;
}

std::vector<float> PullW(Client* c) {
  std::vector<float> w(kNumel, -99.0f);
  EXPECT_OK(c->Pull("", {{"w", absl::MakeSpan(w)}}));
  return w;
}

// A raw call that waits for a (re)starting shard.
template <typename Method, typename Req, typename Resp>
grpc::Status Call(Method method, const Req& req, Resp* resp) {
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(true);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  return method(&ctx, req, resp);
}

TEST(ExactlyOnce, APushResentAcrossAShardRestartIsAppliedOnce) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, Durable(dir.path())));
  ASSERT_OK_AND_ASSIGN(auto client, cluster->NewClient());
  ASSERT_OK(client->Declare("", SgdConfig(1.0f), {ZerosTensor("w", kNumel)}));
  auto stub = v1::ParameterServer::NewStub(MakeChannel(cluster->addresses()[0]));
  auto push_fn = [&](grpc::ClientContext* ctx, const v1::PushRequest& r,
                     v1::PushResponse* out) { return stub->Push(ctx, r, out); };
  auto register_fn = [&](grpc::ClientContext* ctx,
                         const v1::RegisterWorkerRequest& r,
                         v1::RegisterWorkerResponse* out) {
    return stub->RegisterWorker(ctx, r, out);
  };

  v1::RegisterWorkerRequest reg;
  reg.set_name("rank0");
  v1::RegisterWorkerResponse registered;
  ASSERT_TRUE(Call(register_fn, reg, &registered).ok());
  const uint64_t worker = registered.worker_id();

  v1::PushRequest push;
  push.mutable_layout()->set_num_shards(1);
  push.mutable_layout()->set_chunk_elems(4096);
  push.set_worker_id(worker);
  push.set_sequence(77);
  v1::ChunkData* g = push.add_grads();
  g->set_tensor("w");
  g->set_chunk(0);
  g->set_encoding(v1::ENCODING_F32);
  std::vector<float> ones(kNumel, 1.0f);
  g->set_data(std::string(reinterpret_cast<const char*>(ones.data()),
                          ones.size() * sizeof(float)));
  v1::PushResponse first;
  ASSERT_TRUE(Call(push_fn, push, &first).ok());
  ASSERT_EQ(first.acks_size(), 1);
  EXPECT_EQ(first.acks(0).version(), 1u);

  // The answer is "lost"; the shard stops (final checkpoint) and restarts.
  cluster->Stop(0);
  ASSERT_OK(cluster->Restart(0));

  // The restarted shard does not know the worker: the resend is refused,
  // the worker registers again under its id, and the resend is answered
  // from the window the checkpoint carried.
  v1::PushResponse again;
  EXPECT_EQ(Call(push_fn, push, &again).error_code(), grpc::StatusCode::NOT_FOUND);
  reg.set_worker_id(worker);
  ASSERT_TRUE(Call(register_fn, reg, &registered).ok());
  const grpc::Status resent = Call(push_fn, push, &again);
  ASSERT_TRUE(resent.ok()) << resent.error_message();
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(PullW(client.get()), std::vector<float>(kNumel, -1.0f));
  EXPECT_EQ(cluster->shard(0).store().push_window().retries_answered(), 1u);

  // The next sequence is applied.
  push.set_sequence(78);
  ASSERT_TRUE(Call(push_fn, push, &again).ok());
  EXPECT_EQ(again.acks(0).version(), 2u);
  EXPECT_EQ(PullW(client.get()), std::vector<float>(kNumel, -2.0f));
}

// Loses the answer of every Push and Exchange while armed; counts calls.
struct LoseAnswers {
  std::atomic<bool> armed{false};
  std::atomic<bool> once{false};  // disarm after the first lost answer
  std::atomic<int> lost{0};
  absl::Notification first_lost;

  bool operator()(absl::string_view) {
    if (!armed.load()) return false;
    if (once.load()) armed.store(false);
    if (lost.fetch_add(1) == 0) first_lost.Notify();
    return true;
  }
};

ServerOptions Losing(std::shared_ptr<LoseAnswers> lose, ServerOptions o = {}) {
  o.testonly_lose_answer = [lose](absl::string_view m) { return (*lose)(m); };
  return o;
}

TEST(ExactlyOnce, TheClientsRetryOfALostAnswerIsAppliedOnce) {
  auto lose = std::make_shared<LoseAnswers>();
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, Losing(lose)));
  ASSERT_OK_AND_ASSIGN(auto client, cluster->NewClient());
  ASSERT_OK(client->Declare("", SgdConfig(1.0f), {ZerosTensor("w", kNumel)}));
  ASSERT_OK(client->RegisterWorker("rank0").status());

  lose->once = true;
  lose->armed = true;
  std::vector<float> ones(kNumel, 1.0f);
  ASSERT_OK_AND_ASSIGN(PushResult r, client->Push("", {{"w", ones}}));
  EXPECT_EQ(lose->lost.load(), 1);  // the first answer was lost
  EXPECT_EQ(r.chunks, 1u);
  EXPECT_EQ(PullW(client.get()), std::vector<float>(kNumel, -1.0f));
  EXPECT_EQ(cluster->shard(0).store().push_window().retries_answered(), 1u);
  EXPECT_EQ(cluster->shard(0).store().updates_applied(), 1u);

  // Exchange: the worker subtracts the centre's move e exactly once.
  // Centre -1, x = 1, alpha 0.5: e = 1; centre 0, x 0. (A second e against
  // the moved centre would leave x at 0.5 and the centre at 0.5.)
  std::vector<float> x(kNumel, 1.0f);
  lose->once = true;
  lose->armed = true;
  ASSERT_OK(client->Exchange("", 0.5f, {{"w", absl::MakeSpan(x)}}));
  EXPECT_EQ(lose->lost.load(), 2);
  EXPECT_EQ(x, std::vector<float>(kNumel, 0.0f));
  EXPECT_EQ(PullW(client.get()), std::vector<float>(kNumel, 0.0f));
}

TEST(ExactlyOnce, AnAnonymousClientsRetryOfALostAnswerIsAppliedTwice) {
  // What worker id 0 gives up (README, "Exactly-once pushes").
  auto lose = std::make_shared<LoseAnswers>();
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, Losing(lose)));
  ASSERT_OK_AND_ASSIGN(auto client, cluster->NewClient());
  ASSERT_OK(client->Declare("", SgdConfig(1.0f), {ZerosTensor("w", kNumel)}));
  lose->once = true;
  lose->armed = true;
  std::vector<float> ones(kNumel, 1.0f);
  ASSERT_OK(client->Push("", {{"w", ones}}).status());
  EXPECT_EQ(PullW(client.get()), std::vector<float>(kNumel, -2.0f));
}

TEST(ExactlyOnce, TheClientsRetryAcrossAShardRestartIsAppliedOnce) {
  TempDir dir;
  auto lose = std::make_shared<LoseAnswers>();
  ASSERT_OK_AND_ASSIGN(auto cluster,
                       TestCluster::Start(1, Losing(lose, Durable(dir.path()))));
  ASSERT_OK_AND_ASSIGN(auto client, cluster->NewClient());
  ASSERT_OK(client->Declare("", SgdConfig(1.0f), {ZerosTensor("w", kNumel)}));
  const uint64_t worker = client->RegisterWorker("rank0").value();

  // Every answer is lost until the shard has restarted: the Client keeps
  // retrying the same request, through the restart.
  lose->armed = true;
  absl::StatusOr<PushResult> pushed = absl::UnknownError("not run");
  std::thread push([&] {
    std::vector<float> ones(kNumel, 1.0f);
    pushed = client->Push("", {{"w", ones}});
  });
  lose->first_lost.WaitForNotification();
  cluster->Stop(0);  // final checkpoint: the call and its window entry
  lose->armed = false;
  ASSERT_OK(cluster->Restart(0));
  push.join();
  // The restarted shard forgot the worker: the Client registered it again
  // under the same id and resent; the loaded window answered.
  ASSERT_OK(pushed);
  EXPECT_EQ(PullW(client.get()), std::vector<float>(kNumel, -1.0f));
  EXPECT_GE(cluster->shard(0).store().push_window().retries_answered(), 1u);
  ASSERT_OK_AND_ASSIGN(auto status, client->Status());
  EXPECT_EQ(status[0].updates_applied(), 1u);
  ASSERT_OK(client->Leave());
  (void)worker;
}

}  // namespace
}  // namespace pskit
