// Admin/DropNamespace and the evaluation history on real in-process shards,
// through Client (AdminClient::DropNamespace underneath): refused while a
// worker of the namespace holds a lease (the one it registered for, or its
// last heartbeat's), dropped on every shard once it left, a Declare after
// it starting afresh, other namespaces untouched, a shard that has it no
// more counting as dropped, and Status(evaluations=true).
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using ::testing::HasSubstr;
using testing::TestCluster;

constexpr int64_t kNumel = 40;

// The namespaces each shard reports, by shard.
std::vector<std::vector<std::string>> NamespacesOnEachShard(Client* c) {
  std::vector<std::vector<std::string>> out;
  absl::StatusOr<std::vector<v1::StatusResponse>> status = c->Status();
  EXPECT_OK(status);
  if (!status.ok()) return out;
  for (const v1::StatusResponse& s : *status) {
    std::vector<std::string>& names = out.emplace_back();
    for (const v1::NamespaceStatus& n : s.namespaces()) {
      names.push_back(n.name());
    }
  }
  return out;
}

class DropNamespaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.chunk_elems = 8;
    ASSERT_OK_AND_ASSIGN(cluster_, TestCluster::Start(2, options));
    ASSERT_OK_AND_ASSIGN(admin_, cluster_->NewClient());
    for (const char* ns : {"job", "other"}) {
      ASSERT_OK(admin_->Declare(ns, testing::SgdConfig(1.0f),
                                {testing::ZerosTensor("w", kNumel)}));
    }
  }

  std::unique_ptr<Client> NewClient() {
    auto c = cluster_->NewClient();
    EXPECT_OK(c);
    return c.ok() ? std::move(*c) : nullptr;
  }

  std::unique_ptr<TestCluster> cluster_;
  std::unique_ptr<Client> admin_;
};

TEST_F(DropNamespaceTest, RefusedWhileItsWorkerIsLiveDroppedEverywhereOnceItLeft) {
  auto worker = NewClient();
  ASSERT_OK(worker->RegisterWorker("rank0", "job"));
  auto bystander = NewClient();
  ASSERT_OK(bystander->RegisterWorker("rank9", "other"));
  std::vector<float> g(kNumel, 1.0f);
  ASSERT_OK(worker->Push("job", {{"w", g}}));
  ASSERT_OK(bystander->Push("other", {{"w", g}}));

  absl::StatusOr<std::vector<v1::DropNamespaceResponse>> dropped =
      admin_->DropNamespace("job");
  ASSERT_EQ(dropped.status().code(), absl::StatusCode::kFailedPrecondition)
      << dropped.status();
  EXPECT_THAT(std::string(dropped.status().message()),
              HasSubstr("1 live worker on shard 0: rank0 (id "));
  EXPECT_THAT(std::string(dropped.status().message()),
              HasSubstr("stop them (or wait for their leases to lapse), then "
                        "drop"));
  // Shard 0 refused: no shard was changed.
  const std::vector<std::vector<std::string>> both = {{"job", "other"},
                                                      {"job", "other"}};
  EXPECT_EQ(NamespacesOnEachShard(admin_.get()), both);

  ASSERT_OK(worker->Leave());
  ASSERT_OK_AND_ASSIGN(std::vector<v1::DropNamespaceResponse> freed,
                       admin_->DropNamespace("job"));
  ASSERT_EQ(freed.size(), 2u);
  uint64_t elements = 0;
  uint32_t chunks = 0;
  for (const v1::DropNamespaceResponse& r : freed) {
    elements += r.elements_freed();
    chunks += r.chunks_freed();
  }
  EXPECT_EQ(elements, static_cast<uint64_t>(kNumel));
  EXPECT_EQ(chunks, admin_->layout().NumChunks(kNumel));
  const std::vector<std::vector<std::string>> rest = {{"other"}, {"other"}};
  EXPECT_EQ(NamespacesOnEachShard(admin_.get()), rest);
  // The other namespace still trains.
  ASSERT_OK(bystander->Push("other", {{"w", g}}));
  std::vector<float> w(kNumel);
  ASSERT_OK(bystander->Pull("other", {{"w", absl::MakeSpan(w)}}));
  EXPECT_EQ(w, std::vector<float>(kNumel, -2.0f));

  // Gone: a second drop is NOT_FOUND, "" is no name.
  EXPECT_EQ(admin_->DropNamespace("job").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(admin_->DropNamespace("").status().code(),
            absl::StatusCode::kInvalidArgument);
  // Declared again: its initial values (zeros), not the pushed ones.
  ASSERT_OK(admin_->Declare("job", testing::SgdConfig(0.5f),
                            {testing::ZerosTensor("w", kNumel)}));
  ASSERT_OK(admin_->Pull("job", {{"w", absl::MakeSpan(w)}}));
  EXPECT_EQ(w, std::vector<float>(kNumel, 0.0f));
  ASSERT_OK(bystander->Leave());
}

TEST_F(DropNamespaceTest, AHeartbeatTellsTheShardsWhichNamespaceTheWorkerTrains) {
  auto worker = NewClient();
  ASSERT_OK(worker->RegisterWorker("rank0"));  // "default"
  ASSERT_OK(admin_->DropNamespace("job"));
  ASSERT_OK(admin_->Declare("job", testing::SgdConfig(1.0f),
                            {testing::ZerosTensor("w", kNumel)}));
  ASSERT_OK(worker->Heartbeat("job"));
  EXPECT_EQ(admin_->DropNamespace("job").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_OK(worker->Heartbeat("other"));
  EXPECT_OK(admin_->DropNamespace("job"));
  EXPECT_EQ(admin_->DropNamespace("other").status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_OK(worker->Leave());
}

TEST_F(DropNamespaceTest, AShardThatHasItNoMoreCountsAsDropped) {
  // An earlier drop got as far as shard 1 only (say shard 0 was restarted
  // from a checkpoint that still had it).
  v1::DropNamespaceResponse r;
  ASSERT_OK(cluster_->shard(1).store().DropNamespace("job", &r));
  ASSERT_OK_AND_ASSIGN(std::vector<v1::DropNamespaceResponse> freed,
                       admin_->DropNamespace("job"));
  ASSERT_EQ(freed.size(), 2u);
  EXPECT_GT(freed[0].chunks_freed(), 0u);
  EXPECT_EQ(freed[1].chunks_freed(), 0u);
  // NOT_FOUND only when no shard has it.
  ASSERT_OK(cluster_->shard(1).store().DropNamespace("other", &r));
  EXPECT_OK(admin_->DropNamespace("other"));
  EXPECT_EQ(admin_->DropNamespace("other").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DropNamespaceTest, ADropThatGotPastShardZeroIsFinishedByRunningItAgain) {
  // Shard 0 dropped "job", shard 1 did not (it refused, or was down): shard
  // 0's NOT_FOUND must not stop the rerun before shard 1.
  v1::DropNamespaceResponse r;
  ASSERT_OK(cluster_->shard(0).store().DropNamespace("job", &r));
  ASSERT_OK_AND_ASSIGN(std::vector<v1::DropNamespaceResponse> freed,
                       admin_->DropNamespace("job"));
  ASSERT_EQ(freed.size(), 2u);
  EXPECT_EQ(freed[0].chunks_freed(), 0u);
  EXPECT_GT(freed[1].chunks_freed(), 0u);
  EXPECT_EQ(NamespacesOnEachShard(admin_.get()),
            (std::vector<std::vector<std::string>>{{"other"}, {"other"}}));
  EXPECT_EQ(admin_->DropNamespace("job").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DropNamespaceTest, StatusCarriesTheEvaluationHistoryWhenAsked) {
  for (int i = 0; i < 3; ++i) {
    v1::Evaluation e;
    e.set_time_unix_ms(1000 + i);
    e.set_loss(1.0 / (i + 1));
    e.set_accuracy(0.25 * (i + 1));
    e.set_samples(100);
    e.set_done(i == 2);
    ASSERT_OK(admin_->ReportEvaluation("job", e));
  }
  ASSERT_OK_AND_ASSIGN(std::vector<v1::StatusResponse> plain,
                       admin_->Status());
  ASSERT_OK_AND_ASSIGN(std::vector<v1::StatusResponse> full,
                       admin_->Status(/*evaluations=*/true));
  ASSERT_EQ(full.size(), 2u);
  for (size_t s = 0; s < full.size(); ++s) {
    for (const v1::NamespaceStatus& n : plain[s].namespaces()) {
      EXPECT_EQ(n.evaluations_size(), 0) << n.name();
    }
    for (const v1::NamespaceStatus& n : full[s].namespaces()) {
      if (n.name() != "job") {
        EXPECT_EQ(n.evaluations_size(), 0) << n.name();
        continue;
      }
      ASSERT_EQ(n.evaluations_size(), 3);
      for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(n.evaluations(i).time_unix_ms(), 1000 + i);
        EXPECT_DOUBLE_EQ(n.evaluations(i).accuracy(), 0.25 * (i + 1));
      }
      EXPECT_TRUE(n.evaluations(2).done());
    }
  }
  // Dropped and declared again: a fresh history.
  ASSERT_OK(admin_->DropNamespace("job"));
  ASSERT_OK(admin_->Declare("job", testing::SgdConfig(1.0f),
                            {testing::ZerosTensor("w", kNumel)}));
  ASSERT_OK_AND_ASSIGN(full, admin_->Status(/*evaluations=*/true));
  for (const v1::StatusResponse& s : full) {
    for (const v1::NamespaceStatus& n : s.namespaces()) {
      EXPECT_EQ(n.evaluations_size(), 0) << n.name();
      EXPECT_FALSE(n.has_last_evaluation()) << n.name();
    }
  }
}

}  // namespace
}  // namespace pskit
