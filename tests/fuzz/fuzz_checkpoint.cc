// tests/fuzz/fuzz_checkpoint.cc
//
// libFuzzer target: checkpoint records and manifests as read back from a
// shard's RocksDB (server/checkpoint_store.cc's DecodeCheckpoint, Load
// without the database), then loaded into a shard (ChunkStore::Replace,
// what a restore or a restart does with them). The loading shard is shard 0
// of 2 with the default chunk size. The first input byte picks:
//   0  raw: a manifest and up to 4 namespace and 8 chunk records, all bytes
//      from the input (damage of any kind, CRCs included);
//   1  well-formed: namespace and chunk records from the input under a
//      manifest that is right for them (layout, counts, CRC-32s), so the
//      fuzzer gets past the checksums to the records' contents and to
//      Replace.
//
// Asserted beyond "no crash" (ASan/UBSan on; an allocation the input can
// size beyond libFuzzer's -malloc_limit_mb is a crash too):
//   - DecodeCheckpoint answers OK, DATA_LOSS or FAILED_PRECONDITION, never
//     anything else; on OK every record matched its CRC, the counts match
//     the manifest, and *info is the manifest's;
//   - a well-formed checkpoint decodes (unless a record is not a protobuf
//     message: DATA_LOSS) into exactly the records written;
//   - Replace answers OK, DATA_LOSS or FAILED_PRECONDITION (what
//     LoadNewest relies on to fall back to an older checkpoint) and on
//     refusal leaves the shard as it was; on OK the shard's own snapshot
//     holds exactly the loaded chunks (values, slots, versions) and
//     counters.
//
// Seeds: PSKIT_FUZZ_WRITE_SEEDS=DIR writes checkpoints of a real shard
// state (declared, pushed, evaluated) in both modes.
#include <zlib.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "absl/status/status.h"
#include "common/encoding.h"
#include "common/layout.h"
#include "google/protobuf/util/message_differencer.h"
#include "pskit/v1/checkpoint.pb.h"
#include "server/checkpoint_store.h"
#include "server/chunk_store.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace pskit {
namespace {

using google::protobuf::util::MessageDifferencer;

constexpr uint32_t kNumShards = 2;
constexpr uint32_t kShard = 0;
constexpr int kMaxNamespaces = 4;
constexpr int kMaxChunks = 8;
const std::string kId = "ckpt-1";

const Layout& TheLayout() {
  static const Layout layout = *Layout::Create(kNumShards, kDefaultChunkElems);
  return layout;
}

std::unique_ptr<ChunkStore> NewStore() {
  return std::make_unique<ChunkStore>(TheLayout(), kShard,
                                      /*allow_nonfinite=*/false, 64 << 20,
                                      uint64_t{64} << 20);
}

uint32_t Crc32(const std::string& s) {
  return static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(s.data()),
            static_cast<uInt>(s.size())));
}

// Serves `records` one by one to DecodeCheckpoint.
struct Records {
  const std::vector<std::string>* records;
  size_t next = 0;
  bool operator()(absl::string_view* v) {
    if (next >= records->size()) return false;
    *v = (*records)[next++];
    return true;
  }
};

// A manifest that is right for `namespaces` and `chunks` (as Write makes).
std::string ManifestFor(const std::vector<std::string>& namespaces,
                        const std::vector<std::string>& chunks,
                        uint64_t updates_applied) {
  v1::ManifestRecord m;
  v1::CheckpointInfo* info = m.mutable_info();
  info->set_id(kId);
  info->set_sequence(1);
  info->set_shard_index(kShard);
  info->set_num_shards(kNumShards);
  info->set_chunk_elems(kDefaultChunkElems);
  info->set_chunks(chunks.size());
  m.set_namespaces(namespaces.size());
  m.set_updates_applied(updates_applied);
  for (const std::string& r : namespaces) m.add_namespace_crc32(Crc32(r));
  for (const std::string& r : chunks) m.add_chunk_crc32(Crc32(r));
  return m.SerializeAsString();
}

using ChunkKey = std::tuple<std::string, std::string, uint32_t>;
std::map<ChunkKey, v1::ChunkRecord> ChunksOf(const ShardSnapshot& s) {
  std::map<ChunkKey, v1::ChunkRecord> out;
  for (const v1::ChunkRecord& c : s.chunks) {
    out[{c.namespace_(), c.tensor(), c.chunk()}] = c;
  }
  return out;
}

bool SameChunks(const std::map<ChunkKey, v1::ChunkRecord>& a,
                const std::map<ChunkKey, v1::ChunkRecord>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [key, c] : a) {
    auto it = b.find(key);
    if (it == b.end() || !MessageDifferencer::Equals(c, it->second)) {
      return false;
    }
  }
  return true;
}

// Loads a decoded checkpoint into a fresh shard that already holds one
// tensor, and checks the outcome.
void CheckReplace(const ShardSnapshot& snapshot) {
  std::unique_ptr<ChunkStore> store = NewStore();
  v1::DeclareRequest declare;
  declare.set_namespace_("old");
  declare.mutable_layout()->set_num_shards(kNumShards);
  declare.mutable_layout()->set_chunk_elems(kDefaultChunkElems);
  declare.mutable_config()->mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  v1::TensorSpec* t = declare.add_tensors();
  t->set_name("w");
  t->add_shape(3);
  t->mutable_init()->set_kind(v1::INIT_ZEROS);
  v1::DeclareResponse declared;
  FUZZ_CHECK(store->Declare(declare, &declared).ok());
  const ShardSnapshot before = store->Snapshot();

  absl::Status s = store->Replace(snapshot);
  const ShardSnapshot after = store->Snapshot();
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == absl::StatusCode::kDataLoss ||
               s.code() == absl::StatusCode::kFailedPrecondition);
    FUZZ_CHECK(SameChunks(ChunksOf(before), ChunksOf(after)));
    FUZZ_CHECK(after.namespaces.size() == before.namespaces.size());
    FUZZ_CHECK(after.updates_applied == before.updates_applied);
    return;
  }
  FUZZ_CHECK(SameChunks(ChunksOf(snapshot), ChunksOf(after)));
  FUZZ_CHECK(after.namespaces.size() == snapshot.namespaces.size());
  FUZZ_CHECK(after.updates_applied == snapshot.updates_applied);
}

void FuzzRaw(FuzzedDataProvider* in) {
  const std::string manifest =
      in->ConsumeBytesAsString(in->ConsumeIntegral<uint16_t>());
  std::vector<std::string> namespaces(
      in->ConsumeIntegralInRange<int>(0, kMaxNamespaces));
  for (std::string& r : namespaces) {
    r = in->ConsumeBytesAsString(in->ConsumeIntegral<uint16_t>());
  }
  std::vector<std::string> chunks(in->ConsumeIntegralInRange<int>(0, kMaxChunks));
  for (std::string& r : chunks) {
    r = in->ConsumeBytesAsString(in->ConsumeIntegral<uint16_t>());
  }
  // Exactly-once window records (server/push_window.h), last in a
  // checkpoint's key order.
  std::vector<std::string> windows(in->ConsumeIntegralInRange<int>(0, 4));
  for (std::string& r : windows) {
    r = in->ConsumeBytesAsString(in->ConsumeIntegral<uint16_t>());
  }
  Records next_ns{&namespaces}, next_chunk{&chunks}, next_window{&windows};
  v1::CheckpointInfo info;
  absl::StatusOr<ShardSnapshot> got =
      DecodeCheckpoint(kId, manifest, TheLayout(), kShard, next_ns, next_chunk,
                       next_window, &info);
  if (!got.ok()) {
    FUZZ_CHECK(got.status().code() == absl::StatusCode::kDataLoss ||
               got.status().code() == absl::StatusCode::kFailedPrecondition);
    return;
  }
  v1::ManifestRecord m;
  FUZZ_CHECK(m.ParseFromString(manifest));
  FUZZ_CHECK(info.SerializeAsString() == m.info().SerializeAsString());
  FUZZ_CHECK(info.num_shards() == kNumShards && info.shard_index() == kShard &&
             info.chunk_elems() == kDefaultChunkElems);
  FUZZ_CHECK(got->namespaces.size() == namespaces.size() &&
             namespaces.size() == m.namespaces());
  FUZZ_CHECK(got->chunks.size() == chunks.size() &&
             chunks.size() == info.chunks());
  for (size_t i = 0; i < namespaces.size(); ++i) {
    FUZZ_CHECK(Crc32(namespaces[i]) == m.namespace_crc32(static_cast<int>(i)));
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    FUZZ_CHECK(Crc32(chunks[i]) == m.chunk_crc32(static_cast<int>(i)));
  }
  FUZZ_CHECK(got->updates_applied == m.updates_applied());
  CheckReplace(*got);
}

void FuzzWellFormed(FuzzedDataProvider* in) {
  const uint64_t updates = in->ConsumeIntegral<uint64_t>();
  std::vector<std::string> namespaces(
      in->ConsumeIntegralInRange<int>(0, kMaxNamespaces));
  for (std::string& r : namespaces) {
    r = in->ConsumeBytesAsString(in->ConsumeIntegral<uint16_t>());
  }
  std::vector<std::string> chunks(in->ConsumeIntegralInRange<int>(0, kMaxChunks));
  for (std::string& r : chunks) {
    r = in->ConsumeBytesAsString(in->ConsumeIntegral<uint16_t>());
  }
  const std::string manifest = ManifestFor(namespaces, chunks, updates);
  const std::vector<std::string> no_windows;
  Records next_ns{&namespaces}, next_chunk{&chunks}, next_window{&no_windows};
  v1::CheckpointInfo info;
  absl::StatusOr<ShardSnapshot> got =
      DecodeCheckpoint(kId, manifest, TheLayout(), kShard, next_ns, next_chunk,
                       next_window, &info);
  bool all_parse = true;
  for (const std::string& r : namespaces) {
    all_parse = all_parse && v1::NamespaceRecord().ParseFromString(r);
  }
  for (const std::string& r : chunks) {
    all_parse = all_parse && v1::ChunkRecord().ParseFromString(r);
  }
  if (!all_parse) {
    FUZZ_CHECK(got.status().code() == absl::StatusCode::kDataLoss);
    return;
  }
  FUZZ_CHECK(got.ok());
  FUZZ_CHECK(info.id() == kId && info.chunks() == chunks.size());
  FUZZ_CHECK(got->namespaces.size() == namespaces.size());
  FUZZ_CHECK(got->chunks.size() == chunks.size());
  for (size_t i = 0; i < namespaces.size(); ++i) {
    v1::NamespaceRecord want;
    FUZZ_CHECK(want.ParseFromString(namespaces[i]));
    // Bytes, not MessageDifferencer: a NaN loss is not equal to itself.
    FUZZ_CHECK(want.SerializeAsString() ==
               got->namespaces[i].SerializeAsString());
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    v1::ChunkRecord want;
    FUZZ_CHECK(want.ParseFromString(chunks[i]));
    FUZZ_CHECK(want.SerializeAsString() == got->chunks[i].SerializeAsString());
  }
  FUZZ_CHECK(got->updates_applied == updates);
  CheckReplace(*got);
}

// Seeds: a real shard's state (adam namespace with tensors here and on the
// other shard, pushed once, evaluated), as both modes read it.
fuzz::Seeds MakeSeeds() {
  std::unique_ptr<ChunkStore> store = NewStore();
  v1::DeclareRequest declare;
  declare.set_namespace_("job");
  declare.mutable_layout()->set_num_shards(kNumShards);
  declare.mutable_layout()->set_chunk_elems(kDefaultChunkElems);
  declare.mutable_config()->mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
  for (int i = 0; i < 4; ++i) {
    v1::TensorSpec* t = declare.add_tensors();
    t->set_name("t" + std::to_string(i));
    t->add_shape(2);
    t->add_shape(i + 1);
    t->mutable_init()->set_kind(v1::INIT_GLOROT_UNIFORM);
  }
  v1::DeclareResponse declared;
  FUZZ_CHECK(store->Declare(declare, &declared).ok());
  v1::PushRequest push;
  push.set_namespace_("job");
  *push.mutable_layout() = declare.layout();
  for (int i = 0; i < 4; ++i) {
    const std::string name = "t" + std::to_string(i);
    if (TheLayout().Chunk("job", name, 2 * (i + 1), 0).shard != kShard) continue;
    v1::ChunkData* g = push.add_grads();
    g->set_tensor(name);
    g->set_encoding(v1::ENCODING_F32);
    EncodeFloats(v1::ENCODING_F32, std::vector<float>(2 * (i + 1), 0.25f),
                 g->mutable_data());
  }
  v1::PushResponse pushed;
  FUZZ_CHECK(store->Push(push, &pushed).ok());
  v1::ReportEvaluationRequest report;
  report.set_namespace_("job");
  report.mutable_evaluation()->set_accuracy(0.5);
  FUZZ_CHECK(store->ReportEvaluation(report).ok());
  const ShardSnapshot snap = store->Snapshot();

  std::vector<std::string> namespaces, chunks;
  for (const auto& ns : snap.namespaces) {
    namespaces.push_back(ns.SerializeAsString());
  }
  for (const auto& c : snap.chunks) chunks.push_back(c.SerializeAsString());
  fuzz::Seeds seeds;
  {
    fuzz::FuzzInputWriter w;
    w.Small(0);
    const std::string manifest =
        ManifestFor(namespaces, chunks, snap.updates_applied);
    w.Int<uint16_t>(static_cast<uint16_t>(manifest.size()));
    w.Bytes(manifest);
    w.Small(static_cast<uint8_t>(namespaces.size()));
    for (const std::string& r : namespaces) {
      w.Int<uint16_t>(static_cast<uint16_t>(r.size()));
      w.Bytes(r);
    }
    w.Small(static_cast<uint8_t>(chunks.size()));
    for (const std::string& r : chunks) {
      w.Int<uint16_t>(static_cast<uint16_t>(r.size()));
      w.Bytes(r);
    }
    seeds.emplace_back("raw-adam", w.Finish());
  }
  {
    fuzz::FuzzInputWriter w;
    w.Small(1);
    w.Int<uint64_t>(snap.updates_applied);
    w.Small(static_cast<uint8_t>(namespaces.size()));
    for (const std::string& r : namespaces) {
      w.Int<uint16_t>(static_cast<uint16_t>(r.size()));
      w.Bytes(r);
    }
    w.Small(static_cast<uint8_t>(chunks.size()));
    for (const std::string& r : chunks) {
      w.Int<uint16_t>(static_cast<uint16_t>(r.size()));
      w.Bytes(r);
    }
    seeds.emplace_back("wellformed-adam", w.Finish());
  }
  return seeds;
}

}  // namespace
}  // namespace pskit

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  pskit::fuzz::QuietLogs();
  pskit::fuzz::WriteSeedsIfAsked(pskit::MakeSeeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  if (in.ConsumeIntegral<uint8_t>() % 2 == 0) {
    pskit::FuzzRaw(&in);
  } else {
    pskit::FuzzWellFormed(&in);
  }
  return 0;
}
