// Real shard servers on 127.0.0.1 (OS-chosen ports) driven through Client.

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "gtest/gtest.h"
#include "pskit/v1/ps.grpc.pb.h"
#include "tests/testing/cluster.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::TestCluster;

v1::NamespaceConfig Sgd(float lr) {
  v1::NamespaceConfig c;
  c.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  c.mutable_optimizer()->set_learning_rate(lr);
  return c;
}

TensorDecl Constant(const std::string& name, std::vector<int64_t> shape,
                    float value) {
  TensorDecl d;
  d.spec.set_name(name);
  for (int64_t s : shape) d.spec.add_shape(s);
  d.spec.mutable_init()->set_kind(v1::INIT_CONSTANT);
  d.spec.mutable_init()->set_value(value);
  return d;
}

// 3 shards, 8 clients pushing gradients of ones with sgd lr=1: every value
// ends at init - total pushes, exactly. Small chunks and small requests make
// every push span many chunks, requests and shards.
TEST(Cluster, ConcurrentPushesAreAllApplied) {
  ServerOptions base;
  base.chunk_elems = 8192;
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(3, base));
  const std::vector<TensorDecl> model = {Constant("emb", {1000, 100}, 7.0f),
                                         Constant("fc/w", {300, 70}, 7.0f),
                                         Constant("fc/b", {70}, 7.0f)};
  ClientOptions opts;
  opts.max_request_bytes = 64 << 10;
  {
    ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient(opts));
    ASSERT_OK(c->Declare("job", Sgd(1.0f), model));
  }
  constexpr int kClients = 8, kPushes = 25;
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(kClients);
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      auto c = cluster->NewClient(opts);
      if (!c.ok()) {
        results[i] = c.status();
        return;
      }
      // Every client declares too: Declare is idempotent.
      results[i] = (*c)->Declare("job", Sgd(1.0f), model);
      std::vector<std::vector<float>> ones;
      std::vector<ConstTensorBuffer> grads;
      for (const TensorDecl& d : model) {
        int64_t n = 1;
        for (int64_t s : d.spec.shape()) n *= s;
        ones.emplace_back(n, 1.0f);
      }
      for (size_t t = 0; t < model.size(); ++t) {
        grads.push_back({model[t].spec.name(), ones[t]});
      }
      for (int p = 0; p < kPushes && results[i].ok(); ++p) {
        results[i] = (*c)->Push("job", grads).status();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& s : results) ASSERT_OK(s);

  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient(opts));
  for (const TensorDecl& d : model) {
    int64_t n = 1;
    for (int64_t s : d.spec.shape()) n *= s;
    std::vector<float> w(n, -1.0f);
    ASSERT_OK(c->Pull("job", {{d.spec.name(), absl::MakeSpan(w)}}));
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(w[i], 7.0f - kClients * kPushes)
          << d.spec.name() << " element " << i;
    }
  }
}

TEST(Cluster, StalenessIsMeasuredAndInverseCompensationApplied) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  v1::NamespaceConfig cfg = Sgd(1.0f);
  cfg.set_compensation(v1::COMPENSATION_INVERSE);
  ASSERT_OK_AND_ASSIGN(auto a, cluster->NewClient());
  ASSERT_OK_AND_ASSIGN(auto b, cluster->NewClient());
  ASSERT_OK(a->Declare("", cfg, {Constant("w", {10}, 0.0f)}));
  std::vector<float> wa(10), wb(10), ones(10, 1.0f);
  ASSERT_OK(a->Pull("", {{"w", absl::MakeSpan(wa)}}));
  ASSERT_OK(b->Pull("", {{"w", absl::MakeSpan(wb)}}));
  // b pushes 4 times; each is fresh or stale by the pushes before it.
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(PushResult r, b->Push("", {{"w", ones}}));
    EXPECT_EQ(r.max_staleness, static_cast<uint64_t>(i));
  }
  // a's copy is 4 versions old: its gradient counts 1/4. PushPull returns
  // the new values: 0 - (1 + 1 + 1/2 + 1/3) - 1/4.
  ASSERT_OK_AND_ASSIGN(PushResult r,
                       a->PushPull("", {{"w", ones}}, {{"w", absl::MakeSpan(wa)}}));
  EXPECT_EQ(r.max_staleness, 4u);
  EXPECT_FLOAT_EQ(wa[0], -(1.0f + 1.0f + 0.5f + 1.0f / 3 + 0.25f));
  // After the PushPull a is up to date: its next push is fresh.
  ASSERT_OK_AND_ASSIGN(r, a->Push("", {{"w", ones}}));
  EXPECT_EQ(r.max_staleness, 0u);
}

// EASGD: e = alpha (x - c); c += e; x -= e, checked in float against the
// same arithmetic, over several workers and rounds.
TEST(Cluster, ExchangeIsElasticAveraging) {
  ServerOptions base;
  base.chunk_elems = 4096;
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2, base));
  const int n = 20000;
  std::vector<float> centre(n);
  for (int i = 0; i < n; ++i) centre[i] = 0.001f * (i % 997);
  TensorDecl d;
  d.spec.set_name("w");
  d.spec.add_shape(n);
  d.spec.mutable_init()->set_kind(v1::INIT_EXPLICIT);
  d.values = centre;
  ASSERT_OK_AND_ASSIGN(auto w1, cluster->NewClient());
  ASSERT_OK_AND_ASSIGN(auto w2, cluster->NewClient());
  ASSERT_OK(w1->Declare("easgd", Sgd(0.1f), {d}));
  std::vector<float> x1(n), x2(n);
  for (int i = 0; i < n; ++i) {
    x1[i] = 1.0f + 0.01f * (i % 13);
    x2[i] = -2.0f + 0.003f * (i % 7);
  }
  const float alpha = 0.45f;
  for (int round = 0; round < 3; ++round) {
    for (auto [client, x] : {std::pair{w1.get(), &x1}, std::pair{w2.get(), &x2}}) {
      std::vector<float> expect_x = *x;
      for (int i = 0; i < n; ++i) {
        const float e = alpha * (expect_x[i] - centre[i]);
        centre[i] += e;
        expect_x[i] -= e;
      }
      ASSERT_OK(client->Exchange("easgd", alpha, {{"w", absl::MakeSpan(*x)}}));
      ASSERT_EQ(*x, expect_x) << "round " << round;
    }
  }
  std::vector<float> got(n);
  ASSERT_OK(w1->Pull("easgd", {{"w", absl::MakeSpan(got)}}));
  EXPECT_EQ(got, centre);
}

TEST(Cluster, LapsedLeaseRemovesTheWorker) {
  testing::FakeClock clock;
  ServerOptions base;
  base.clock = &clock;
  base.lease = absl::Seconds(10);
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2, base));
  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
  ASSERT_OK(c->Declare("", Sgd(0.1f), {Constant("w", {100}, 0.0f)}));
  ASSERT_OK_AND_ASSIGN(uint64_t id, c->RegisterWorker("rank0"));
  std::vector<float> g(100, 1.0f);
  ASSERT_OK(c->Push("", {{"w", g}}));

  clock.Advance(absl::Seconds(11));
  // A raw Heartbeat shows the shard dropped the worker...
  auto stub =
      v1::ParameterServer::NewStub(MakeChannel(cluster->addresses()[0]));
  grpc::ClientContext ctx;
  v1::HeartbeatRequest hb;
  hb.set_worker_id(id);
  v1::HeartbeatResponse hb_resp;
  EXPECT_EQ(stub->Heartbeat(&ctx, hb, &hb_resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // ...its pushes are refused...
  absl::StatusOr<PushResult> pushed = c->Push("", {{"w", g}});
  EXPECT_EQ(pushed.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(pushed.status().message().find("RegisterWorker"),
            absl::string_view::npos);
  // ...and Client::Heartbeat registers it again under the same id.
  ASSERT_OK(c->Heartbeat());
  ASSERT_OK(c->Push("", {{"w", g}}));
  grpc::ClientContext ctx2;
  ASSERT_TRUE(stub->Heartbeat(&ctx2, hb, &hb_resp).ok());
  EXPECT_EQ(hb_resp.live_workers(), 1u);
  ASSERT_OK(c->Leave());
}

// A shard stopped and started again on its address is reached again by the
// same Client: the operation waits (retrying UNAVAILABLE) until the shard is
// back, with no reconnect code here.
TEST(Cluster, RestartedShardIsReachedAgainBySameClient) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
  const std::vector<TensorDecl> model = {Constant("a", {50000}, 1.0f),
                                         Constant("b", {30000}, 2.0f)};
  ASSERT_OK(c->Declare("", Sgd(1.0f), model));
  std::vector<float> a(50000), b(30000);
  ASSERT_OK(c->Pull("", {{"a", absl::MakeSpan(a)}, {"b", absl::MakeSpan(b)}}));

  cluster->Stop(1);
  // While shard 1 is down, a Declare (idempotent; it rebuilds shard 1's
  // memory-only state) waits and retries.
  absl::Status declared;
  std::thread t([&] { declared = c->Declare("", Sgd(1.0f), model); });
  ASSERT_OK(cluster->Restart(1));
  t.join();
  ASSERT_OK(declared);

  std::vector<float> ones_a(50000, 1.0f), ones_b(30000, 1.0f);
  ASSERT_OK(c->PushPull("", {{"a", ones_a}, {"b", ones_b}},
                        {{"a", absl::MakeSpan(a)}, {"b", absl::MakeSpan(b)}}));
  for (float v : a) ASSERT_EQ(v, 0.0f);
  for (float v : b) ASSERT_EQ(v, 1.0f);
}

TEST(Cluster, UnreachableShardFailsAtTheDeadlineNamingIt) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  const std::string dead = cluster->addresses()[1];
  cluster->Stop(1);
  ClientOptions opts;
  opts.timeout = absl::Milliseconds(500);
  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient(opts));
  absl::Status s = c->Declare("", Sgd(1.0f), {Constant("a", {50000}, 1.0f)});
  // gRPC's deadline ends the wait (the fan-out must not cancel the calls
  // itself a moment after it, which read as CANCELLED/UNAVAILABLE).
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find("could not connect to shard 1 (" + dead + ")"),
            absl::string_view::npos)
      << s;
}

TEST(Cluster, ReducedPrecisionEncodings) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2));
  for (v1::Encoding e : {v1::ENCODING_F16, v1::ENCODING_BF16}) {
    ClientOptions opts;
    opts.encoding = e;
    ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient(opts));
    const std::string ns = absl::StrCat("enc", static_cast<int>(e));
    ASSERT_OK(c->Declare(ns, Sgd(0.5f), {Constant("w", {10000}, 1.0f)}));
    std::vector<float> g(10000, 1.0f), w(10000);
    ASSERT_OK(c->PushPull(ns, {{"w", g}}, {{"w", absl::MakeSpan(w)}}));
    for (float v : w) ASSERT_EQ(v, 0.5f);  // exact in both encodings
  }
}

}  // namespace
}  // namespace pskit
