// CheckpointStore on a temp dir, without a server: write/list/load round
// trip (also across a reopen), id rules, keep-last-K, and a damaged or
// incomplete checkpoint skipped in favour of the newest complete one.
#include "server/checkpoint_store.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::TempDir;

// A snapshot of two namespaces and three chunks whose contents depend on
// `tag`, so checkpoints written from different tags can be told apart.
ShardSnapshot MakeSnapshot(int tag) {
  ShardSnapshot s;
  for (const char* name : {"b-job", "a-job"}) {
    v1::NamespaceRecord& ns = s.namespaces.emplace_back();
    ns.set_name(name);
    ns.mutable_config()->mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
    ns.mutable_config()->mutable_optimizer()->set_learning_rate(0.1f * tag);
    v1::TensorSpec* t = ns.add_tensors();
    t->set_name("w");
    t->add_shape(8);
  }
  for (uint32_t i = 0; i < 3; ++i) {
    v1::ChunkRecord& c = s.chunks.emplace_back();
    c.set_namespace_(i == 0 ? "a-job" : "b-job");
    c.set_tensor("w");
    c.set_chunk(i);
    c.set_version(10 * tag + i);
    c.set_values(std::string(16, static_cast<char>('a' + tag + i)));
    c.set_slots(std::string(8 * i, static_cast<char>('A' + tag)));
  }
  s.updates_applied = 100 + tag;
  return s;
}

// Records in the order Load returns them: namespaces by name, chunks as
// written.
std::vector<std::string> Serialized(const ShardSnapshot& s) {
  std::vector<const v1::NamespaceRecord*> ns;
  for (const auto& n : s.namespaces) ns.push_back(&n);
  std::sort(ns.begin(), ns.end(),
            [](const auto* a, const auto* b) { return a->name() < b->name(); });
  std::vector<std::string> out;
  for (const auto* n : ns) out.push_back(n->SerializeAsString());
  for (const auto& c : s.chunks) out.push_back(c.SerializeAsString());
  out.push_back(absl::StrCat(s.updates_applied));
  return out;
}

class CheckpointStoreTest : public ::testing::Test {
 protected:
  CheckpointStoreTest() : layout_(Layout::Create(2, 4096).value()) {}

  absl::StatusOr<std::unique_ptr<CheckpointStore>> Open(int keep = 5,
                                                        uint32_t shard = 1) {
    return CheckpointStore::Open(dir_.path(), layout_, shard, keep);
  }

  absl::StatusOr<v1::CheckpointInfo> Write(CheckpointStore* store,
                                           const std::string& id, int tag) {
    return store->Write(id, MakeSnapshot(tag),
                        absl::FromUnixSeconds(1'700'000'000 + tag),
                        absl::Milliseconds(1));
  }

  static std::vector<std::string> Ids(const CheckpointStore& store) {
    std::vector<std::string> ids;
    for (const v1::CheckpointInfo& info : store.List()) ids.push_back(info.id());
    return ids;
  }

  TempDir dir_;
  Layout layout_;
};

TEST_F(CheckpointStoreTest, WriteListLoadRoundTrip) {
  {
    ASSERT_OK_AND_ASSIGN(auto store, Open());
    ASSERT_OK_AND_ASSIGN(v1::CheckpointInfo written, Write(store.get(), "c1", 1));
    EXPECT_EQ(written.id(), "c1");
    EXPECT_EQ(written.chunks(), 3u);
    EXPECT_EQ(written.bytes(), 3 * 16 + (0 + 8 + 16));
    EXPECT_EQ(written.time_unix_ms(), 1'700'000'001'000);
    EXPECT_EQ(written.shard_index(), 1u);
    EXPECT_EQ(written.num_shards(), 2u);
    EXPECT_EQ(written.chunk_elems(), 4096u);

    const std::vector<v1::CheckpointInfo> list = store->List();
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].id(), "c1");
    EXPECT_EQ(list[0].chunks(), written.chunks());
    EXPECT_EQ(list[0].bytes(), written.bytes());
    EXPECT_EQ(list[0].sequence(), written.sequence());
    EXPECT_EQ(list[0].time_unix_ms(), written.time_unix_ms());

    v1::CheckpointInfo info;
    ASSERT_OK_AND_ASSIGN(ShardSnapshot loaded, store->Load("c1", &info));
    EXPECT_EQ(Serialized(loaded), Serialized(MakeSnapshot(1)));
    EXPECT_EQ(info.id(), "c1");
  }
  // Durable: a new store on the same directory loads the same.
  ASSERT_OK_AND_ASSIGN(auto reopened, Open());
  EXPECT_EQ(Ids(*reopened), std::vector<std::string>{"c1"});
  ASSERT_OK_AND_ASSIGN(ShardSnapshot loaded, reopened->Load("c1", nullptr));
  EXPECT_EQ(Serialized(loaded), Serialized(MakeSnapshot(1)));
  // Sequence numbers go on after a reopen: the next one lists first.
  ASSERT_OK(Write(reopened.get(), "c0", 2));
  EXPECT_EQ(Ids(*reopened), (std::vector<std::string>{"c0", "c1"}));
}

TEST_F(CheckpointStoreTest, IdsAreCheckedAndNeverReused) {
  ASSERT_OK_AND_ASSIGN(auto store, Open());
  ASSERT_OK(Write(store.get(), "c1", 1));
  EXPECT_EQ(Write(store.get(), "c1", 2).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(Write(store.get(), "a/b", 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Write(store.get(), "", 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Load("nope", nullptr).status().code(),
            absl::StatusCode::kNotFound);
  // The refused writes changed nothing.
  EXPECT_EQ(Ids(*store), std::vector<std::string>{"c1"});
  ASSERT_OK_AND_ASSIGN(ShardSnapshot loaded, store->Load("c1", nullptr));
  EXPECT_EQ(Serialized(loaded), Serialized(MakeSnapshot(1)));
}

TEST_F(CheckpointStoreTest, KeepsTheNewestK) {
  ASSERT_OK_AND_ASSIGN(auto store, Open(/*keep=*/2));
  for (int k = 1; k <= 4; ++k) {
    ASSERT_OK(Write(store.get(), absl::StrCat("c", k), k));
    EXPECT_EQ(store->List().size(), std::min(k, 2));
  }
  EXPECT_EQ(Ids(*store), (std::vector<std::string>{"c4", "c3"}));
  EXPECT_EQ(store->Load("c2", nullptr).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_OK_AND_ASSIGN(ShardSnapshot loaded, store->Load("c3", nullptr));
  EXPECT_EQ(Serialized(loaded), Serialized(MakeSnapshot(3)));
}

TEST_F(CheckpointStoreTest, AnotherLayoutOrShardIsRefused) {
  {
    ASSERT_OK_AND_ASSIGN(auto store, Open());
    ASSERT_OK(Write(store.get(), "c1", 1));
  }
  ASSERT_OK_AND_ASSIGN(auto other, Open(5, /*shard=*/0));
  EXPECT_EQ(other->Load("c1", nullptr).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(other->LoadNewest([](const ShardSnapshot&) {
                    return absl::OkStatus();
                  }).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// c2 is damaged (a flipped byte in a chunk record); c3 was cut off before
// its manifest. LoadNewest applies c1, the newest complete one.
TEST_F(CheckpointStoreTest, DamagedAndIncompleteCheckpointsAreSkipped) {
  {
    ASSERT_OK_AND_ASSIGN(auto store, Open());
    for (int k = 1; k <= 3; ++k) {
      ASSERT_OK(Write(store.get(), absl::StrCat("c", k), k));
    }
  }
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir_.path(), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions()));
    it->Seek("c/c2/");
    ASSERT_TRUE(it->Valid() && it->key().starts_with("c/c2/"));
    std::string key = it->key().ToString(), value = it->value().ToString();
    value[value.size() / 2] ^= 0x40;
    it.reset();
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key, value).ok());
    ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), "m/c3").ok());
  }
  ASSERT_OK_AND_ASSIGN(auto store, Open());
  EXPECT_EQ(Ids(*store), (std::vector<std::string>{"c2", "c1"}));
  EXPECT_EQ(store->Load("c2", nullptr).status().code(),
            absl::StatusCode::kDataLoss);

  std::vector<std::string> seen;
  ASSERT_OK_AND_ASSIGN(v1::CheckpointInfo applied,
                       store->LoadNewest([&](const ShardSnapshot& s) {
                         seen = Serialized(s);
                         return absl::OkStatus();
                       }));
  EXPECT_EQ(applied.id(), "c1");
  EXPECT_EQ(seen, Serialized(MakeSnapshot(1)));
}

// What `apply` says counts too: DATA_LOSS (the snapshot does not fit)
// moves on to the next checkpoint; any other error stops at once.
TEST_F(CheckpointStoreTest, LoadNewestFollowsWhatApplySays) {
  ASSERT_OK_AND_ASSIGN(auto store, Open());
  EXPECT_EQ(store->LoadNewest([](const ShardSnapshot&) {
                    return absl::OkStatus();
                  }).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_OK(Write(store.get(), "c1", 1));
  ASSERT_OK(Write(store.get(), "c2", 2));

  int calls = 0;
  ASSERT_OK_AND_ASSIGN(v1::CheckpointInfo applied,
                       store->LoadNewest([&](const ShardSnapshot&) {
                         return ++calls == 1 ? absl::DataLossError("bad")
                                             : absl::OkStatus();
                       }));
  EXPECT_EQ(applied.id(), "c1");
  EXPECT_EQ(calls, 2);

  calls = 0;
  EXPECT_EQ(store->LoadNewest([&](const ShardSnapshot&) {
                    ++calls;
                    return absl::FailedPreconditionError("other layout");
                  }).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(calls, 1);

  calls = 0;
  EXPECT_EQ(store->LoadNewest([&](const ShardSnapshot&) {
                    ++calls;
                    return absl::DataLossError("bad");
                  }).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace pskit
