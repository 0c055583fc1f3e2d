// Durable shards: checkpoints survive restarts bit-exactly, are complete or
// absent, and damaged or mismatched ones are never loaded.
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "gtest/gtest.h"
#include "pskit/v1/admin.grpc.pb.h"
#include "rocksdb/db.h"
#include "tests/testing/cluster.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::TempDir;
using testing::TestCluster;

constexpr int64_t kRows = 37, kCols = 1000;  // several chunks per shard
constexpr int64_t kBias = 1000;

ServerOptions Durable(const std::string& dir) {
  ServerOptions o;
  o.data_dir = dir;
  o.chunk_elems = 4096;
  o.checkpoint_interval = absl::ZeroDuration();  // only when asked
  return o;
}

std::vector<TensorDecl> Model() {
  TensorDecl w, b;
  w.spec.set_name("fc/w");
  w.spec.add_shape(kRows);
  w.spec.add_shape(kCols);
  w.spec.mutable_init()->set_kind(v1::INIT_HE_NORMAL);
  b.spec.set_name("fc/b");
  b.spec.add_shape(kBias);
  b.spec.mutable_init()->set_kind(v1::INIT_CONSTANT);
  b.spec.mutable_init()->set_value(0.1f);
  return {w, b};
}

// Deterministic gradients, different at every step.
void PushSteps(Client* c, const std::string& ns, int first, int count) {
  std::vector<float> gw(kRows * kCols), gb(kBias);
  for (int step = first; step < first + count; ++step) {
    for (size_t i = 0; i < gw.size(); ++i) {
      gw[i] = 0.01f * static_cast<float>((i * 7 + step * 13) % 101) - 0.5f;
    }
    for (size_t i = 0; i < gb.size(); ++i) {
      gb[i] = 0.02f * static_cast<float>((i + step) % 17) - 0.1f;
    }
    ASSERT_OK(c->Push(ns, {{"fc/w", gw}, {"fc/b", gb}}));
  }
}

std::vector<float> PullAll(Client* c, const std::string& ns) {
  std::vector<float> w(kRows * kCols), b(kBias);
  EXPECT_OK(c->Pull(ns, {{"fc/w", absl::MakeSpan(w)}, {"fc/b", absl::MakeSpan(b)}}));
  w.insert(w.end(), b.begin(), b.end());
  return w;
}

bool BitIdentical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// For every optimizer: 5 pushes, restart every shard (final checkpoint,
// then load), 5 more pushes gives the values of 10 uninterrupted pushes,
// bit for bit (so values, slots and versions all came back).
TEST(Checkpoint, RestartResumesBitExactlyForEveryOptimizer) {
  for (v1::OptimizerKind kind :
       {v1::OPTIMIZER_SGD, v1::OPTIMIZER_MOMENTUM, v1::OPTIMIZER_NESTEROV,
        v1::OPTIMIZER_ADAGRAD, v1::OPTIMIZER_RMSPROP, v1::OPTIMIZER_ADAM,
        v1::OPTIMIZER_ADAMW}) {
    SCOPED_TRACE(v1::OptimizerKind_Name(kind));
    v1::NamespaceConfig cfg;
    cfg.mutable_optimizer()->set_kind(kind);
    cfg.mutable_optimizer()->set_learning_rate(0.01f);
    cfg.set_compensation(v1::COMPENSATION_INVERSE);

    TempDir dir_a, dir_b;
    ASSERT_OK_AND_ASSIGN(auto straight, TestCluster::Start(2, Durable(dir_a.path())));
    ASSERT_OK_AND_ASSIGN(auto ca, straight->NewClient());
    ASSERT_OK(ca->Declare("job", cfg, Model()));
    PushSteps(ca.get(), "job", 0, 10);
    const std::vector<float> uninterrupted = PullAll(ca.get(), "job");

    ASSERT_OK_AND_ASSIGN(auto restarted, TestCluster::Start(2, Durable(dir_b.path())));
    ASSERT_OK_AND_ASSIGN(auto cb, restarted->NewClient());
    ASSERT_OK(cb->Declare("job", cfg, Model()));
    PushSteps(cb.get(), "job", 0, 5);
    ASSERT_OK(restarted->RestartAll());
    PushSteps(cb.get(), "job", 5, 5);
    EXPECT_TRUE(BitIdentical(PullAll(cb.get(), "job"), uninterrupted));
  }
}

TEST(Checkpoint, KeepsTheNewestKAndRestoresById) {
  TempDir dir;
  ServerOptions o = Durable(dir.path());
  o.keep_checkpoints = 2;
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2, o));
  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
  v1::NamespaceConfig cfg;
  cfg.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
  ASSERT_OK(c->Declare("job", cfg, Model()));
  std::vector<std::vector<float>> at;
  for (int k = 1; k <= 3; ++k) {
    PushSteps(c.get(), "job", k, 1);
    ASSERT_OK_AND_ASSIGN(auto infos, c->Checkpoint(absl::StrCat("c", k)));
    ASSERT_EQ(infos.size(), 2u);
    EXPECT_EQ(infos[0].id(), absl::StrCat("c", k));
    EXPECT_GT(infos[0].chunks(), 0u);
    at.push_back(PullAll(c.get(), "job"));
  }
  for (int s = 0; s < 2; ++s) {
    std::vector<v1::CheckpointInfo> list = cluster->shard(s).checkpoints()->List();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].id(), "c3");
    EXPECT_EQ(list[1].id(), "c2");
  }
  // An id in use is refused, on every shard, naming each.
  absl::StatusOr<std::vector<v1::CheckpointInfo>> again = c->Checkpoint("c3");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(again.status().message().find("shard 1"), absl::string_view::npos)
      << again.status();

  PushSteps(c.get(), "job", 10, 2);
  ASSERT_OK(c->Restore("c2"));
  EXPECT_TRUE(BitIdentical(PullAll(c.get(), "job"), at[1]));
  absl::StatusOr<std::vector<v1::CheckpointInfo>> gone = c->Restore("c1");
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(gone.status().message().find("no checkpoint 'c1'"),
            absl::string_view::npos)
      << gone.status();
  // Training goes on after a restore.
  PushSteps(c.get(), "job", 20, 1);
}

// Damage to any record of the newest checkpoint c2 (a byte of a chunk
// record, a namespace record that still parses, a manifest whose counts no
// longer agree) makes the shard start from c1; asking for c2 by name says
// DATA_LOSS.
TEST(Checkpoint, DamagedCheckpointFallsBackToThePreviousOne) {
  using Damage = std::function<void(rocksdb::DB*)>;
  const std::vector<std::pair<const char*, Damage>> damages = {
      {"a byte of a chunk record",
       [](rocksdb::DB* db) {
         std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
         it->Seek("c/c2/");
         it->Next();
         it->Next();
         ASSERT_TRUE(it->Valid() && it->key().starts_with("c/c2/"));
         std::string key = it->key().ToString(), value = it->value().ToString();
         value[value.size() / 2] ^= 0x40;
         it.reset();
         ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key, value).ok());
       }},
      {"a namespace record",
       [](rocksdb::DB* db) {
         std::string value;
         ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), "n/c2/job", &value).ok());
         v1::NamespaceRecord ns;
         ASSERT_TRUE(ns.ParseFromString(value));
         ns.mutable_tensors(0)->set_shape(0, 3);  // parses, but is wrong
         ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "n/c2/job", ns.SerializeAsString()).ok());
       }},
      {"the manifest's chunk count",
       [](rocksdb::DB* db) {
         std::string value;
         ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), "m/c2", &value).ok());
         v1::ManifestRecord m;
         ASSERT_TRUE(m.ParseFromString(value));
         m.mutable_info()->set_chunks(uint64_t{1} << 42);  // once a bad_alloc
         ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "m/c2", m.SerializeAsString()).ok());
       }},
  };
  for (const auto& [what, damage] : damages) {
    SCOPED_TRACE(what);
    TempDir dir;
    ServerOptions o = Durable(dir.path());
    o.checkpoint_on_shutdown = false;
    std::vector<float> at_c1;
    {
      ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, o));
      ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
      v1::NamespaceConfig cfg;
      cfg.mutable_optimizer()->set_kind(v1::OPTIMIZER_MOMENTUM);
      ASSERT_OK(c->Declare("job", cfg, Model()));
      PushSteps(c.get(), "job", 0, 2);
      ASSERT_OK(c->Checkpoint("c1"));
      at_c1 = PullAll(c.get(), "job");
      PushSteps(c.get(), "job", 2, 2);
      ASSERT_OK(c->Checkpoint("c2"));
    }
    {
      rocksdb::DB* raw = nullptr;
      ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir.path() + "/shard0", &raw).ok());
      std::unique_ptr<rocksdb::DB> db(raw);
      damage(db.get());
    }
    ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, o));
    ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
    EXPECT_TRUE(BitIdentical(PullAll(c.get(), "job"), at_c1));
    absl::StatusOr<std::vector<v1::CheckpointInfo>> r = c->Restore("c2");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  }
}

TEST(Checkpoint, AnotherLayoutIsRefusedAtStart) {
  TempDir dir;
  {
    ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2, Durable(dir.path())));
    ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
    v1::NamespaceConfig cfg;
    cfg.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
    ASSERT_OK(c->Declare("job", cfg, Model()));
  }  // final checkpoints written
  ServerOptions other = Durable(dir.path() + "/shard0");
  other.num_shards = 2;
  other.chunk_elems = 8192;
  absl::StatusOr<std::unique_ptr<Server>> s = Server::Start(other);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("chunk_elems=4096"), absl::string_view::npos)
      << s.status();
  other.chunk_elems = 4096;
  other.num_shards = 3;
  s = Server::Start(other);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  other.num_shards = 2;
  ASSERT_OK(Server::Start(other));  // the right layout loads
}

TEST(Checkpoint, StatusShowsNamespacesVersionsWorkersAndCheckpoints) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1, Durable(dir.path())));
  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
  v1::NamespaceConfig cfg;
  cfg.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  ASSERT_OK(c->Declare("job", cfg, Model()));
  ASSERT_OK(c->RegisterWorker("rank0"));
  PushSteps(c.get(), "job", 0, 3);
  ASSERT_OK(c->Checkpoint("s1"));
  auto admin = v1::Admin::NewStub(MakeChannel(cluster->addresses()[0]));
  grpc::ClientContext ctx;
  v1::StatusResponse status;
  ASSERT_TRUE(admin->Status(&ctx, v1::StatusRequest(), &status).ok());
  EXPECT_TRUE(status.durable());
  EXPECT_EQ(status.live_workers(), 1u);
  EXPECT_EQ(status.num_shards(), 1u);
  ASSERT_EQ(status.namespaces_size(), 1);
  EXPECT_EQ(status.namespaces(0).name(), "job");
  EXPECT_EQ(status.namespaces(0).config().optimizer().kind(),
            v1::OPTIMIZER_SGD);
  ASSERT_EQ(status.namespaces(0).tensors_size(), 2);
  uint64_t elements = 0;
  for (const v1::TensorStatus& t : status.namespaces(0).tensors()) {
    EXPECT_EQ(t.max_version(), 3u) << t.name();
    elements += t.elements_here();
  }
  EXPECT_EQ(elements, static_cast<uint64_t>(kRows * kCols + kBias));
  ASSERT_EQ(status.checkpoints_size(), 1);
  EXPECT_EQ(status.checkpoints(0).id(), "s1");
  EXPECT_EQ(status.updates_applied(), status.checkpoints(0).chunks() * 3);
}

// Automatic checkpoints fall on the clock's multiples of the interval and
// are named after them, so two shards write the same ids: each is a
// checkpoint of the whole cluster, restorable on every shard. The shards
// share a fake clock that the test moves.
TEST(Checkpoint, AutomaticCheckpointsShareIdsAcrossShards) {
  TempDir dir;
  testing::FakeClock clock;  // starts on a whole second
  ServerOptions o = Durable(dir.path());
  o.checkpoint_interval = absl::Seconds(1);
  o.keep_checkpoints = 10;
  o.clock = &clock;
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(2, o));
  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
  ASSERT_OK(c->Declare("auto", testing::SgdConfig(0.1f), Model()));
  std::vector<std::string> slots;
  for (int i = 1; i <= 2; ++i) {
    clock.Advance(absl::Seconds(1));
    slots.push_back(absl::StrCat("auto-", absl::ToUnixMillis(clock.Now())));
    // A due slot is taken before a request made after it: once this
    // checkpoint is answered, every shard has written the slot's.
    ASSERT_OK(c->Checkpoint(absl::StrCat("after-", i)));
  }
  for (int s = 0; s < 2; ++s) {
    std::set<std::string> ids;
    for (const auto& info : cluster->shard(s).checkpoints()->List()) {
      ids.insert(info.id());
    }
    for (const std::string& id : slots) {
      EXPECT_TRUE(ids.contains(id)) << "shard " << s << " lacks " << id;
    }
  }
  ASSERT_OK(c->Restore(slots.front()));
}

TEST(Checkpoint, MemoryOnlyShardSaysHowToGetCheckpoints) {
  ASSERT_OK_AND_ASSIGN(auto cluster, TestCluster::Start(1));
  ASSERT_OK_AND_ASSIGN(auto c, cluster->NewClient());
  absl::StatusOr<std::vector<v1::CheckpointInfo>> r = c->Checkpoint("x");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("--data_dir"), absl::string_view::npos);
  EXPECT_EQ(c->Checkpoint("bad/id").status().code(),
            absl::StatusCode::kFailedPrecondition);  // memory-only answers first
}

}  // namespace
}  // namespace pskit
