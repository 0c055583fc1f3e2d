// The compensations with per-worker state (server/compensation.h) against
// scalar references of their formulas, written out here: each rule alone,
// and through a ChunkStore with two workers holding different backups, a
// nonzero staleness, sgd and momentum. Then the state's life cycle: created
// at a pull, used at a push, freed at Leave and at lease expiry (through the
// real WorkerRegistry listener), never re-created for a worker just gone,
// kept across Snapshot -> Replace and a RocksDB checkpoint, dropped by a
// SetConfig that switches the rule; the memory limit; a non-finite refusal
// leaving the state unchanged; bad settings refused.
#include "server/compensation.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/encoding.h"
#include "common/layout.h"
#include "common/optimizer_config.h"
#include "gtest/gtest.h"
#include "server/checkpoint_store.h"
#include "server/chunk_store.h"
#include "server/update_rule.h"
#include "server/worker_registry.h"
#include "tests/testing/cluster.h"
#include "tests/testing/fake_clock.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

constexpr float kLr = 0.1f;
constexpr float kMu = 0.5f;  // the optimizer's momentum

// As a Declare carries it.
v1::NamespaceConfig RawConfig(v1::Compensation comp, bool momentum) {
  v1::NamespaceConfig c;
  c.mutable_optimizer()->set_kind(momentum ? v1::OPTIMIZER_MOMENTUM
                                           : v1::OPTIMIZER_SGD);
  c.mutable_optimizer()->set_learning_rate(kLr);
  if (momentum) c.mutable_optimizer()->set_momentum(kMu);
  c.set_compensation(comp);
  if (comp == v1::COMPENSATION_GEM) c.mutable_staleness()->set_gem_kappa(2.0f);
  if (comp == v1::COMPENSATION_DCASGD_C) {
    c.mutable_staleness()->set_dc_lambda(0.5f);
  }
  return c;
}

// With every default filled in, as the shard holds it.
v1::NamespaceConfig Config(v1::Compensation comp, bool momentum) {
  return NormalizeConfig(RawConfig(comp, momentum)).value();
}

// The scalar reference of one element: the optimizer (sgd or momentum),
// then the rule, as ps.proto writes them.
struct Ref {
  v1::NamespaceConfig cfg;
  // The optimizer on gradient g: new w, new velocity.
  void Optimizer(float w, float v, float g, float* w_out, float* v_out) const {
    if (cfg.optimizer().kind() == v1::OPTIMIZER_MOMENTUM) {
      *v_out = kMu * v + g;
      *w_out = w - kLr * *v_out;
    } else {
      *v_out = v;
      *w_out = w - kLr * g;
    }
  }
  // One push of element w (velocity v) with gradient g by a worker whose
  // state is bak / s, m; ms the shared MS.
  void Push(float* w, float* v, float g, float bak_or_s, float* m,
            float* ms) const {
    const v1::StalenessSettings& st = cfg.staleness();
    switch (cfg.compensation()) {
      case v1::COMPENSATION_DCASGD_C: {
        const float gc = g + st.dc_lambda() * g * g * (*w - bak_or_s);
        Optimizer(*w, *v, gc, w, v);
        return;
      }
      case v1::COMPENSATION_DCASGD_A: {
        *ms = st.dc_momentum() * *ms + (1 - st.dc_momentum()) * g * g;
        const float lambda = st.dc_lambda() / std::sqrt(*ms + st.dc_epsilon());
        const float gc = g + lambda * g * g * (*w - bak_or_s);
        Optimizer(*w, *v, gc, w, v);
        return;
      }
      case v1::COMPENSATION_GEM: {
        float w_opt, v_new;
        Optimizer(*w, *v, g, &w_opt, &v_new);
        const float d = w_opt - *w;
        *m = st.gem_momentum() * *m + d;
        float pi = (st.gem_kappa() * std::fabs(*m) - std::fabs(*w - bak_or_s)) /
                   (std::fabs(d) + st.gem_epsilon());
        pi = std::min(std::max(pi, 0.0f), 5.0f);
        *w = *w + pi * d;
        *v = v_new;
        return;
      }
      default:
        Optimizer(*w, *v, g, w, v);
    }
  }
};

struct RuleCase {
  v1::Compensation comp;
  bool momentum;
};

class RuleTest : public ::testing::TestWithParam<RuleCase> {};

TEST_P(RuleTest, ApplyMatchesTheScalarFormula) {
  const v1::NamespaceConfig cfg = Config(GetParam().comp, GetParam().momentum);
  const Ref ref{cfg};
  auto rule = UpdateRule::Create(cfg.optimizer());
  auto comp = Compensation::Create(cfg);
  ASSERT_NE(comp, nullptr);
  const size_t n = 5;
  const std::vector<float> w = {0.5f, -1.0f, 2.0f, 0.0f, 3.0f};
  const std::vector<float> g = {0.3f, -0.7f, 1.5f, 0.01f, -2.0f};
  std::vector<float> slots(n * rule->num_slots(), 0.2f);
  // The worker's state: backup (or s_i) apart from w, and m_i nonzero.
  std::vector<float> state(n * comp->worker_floats());
  for (size_t i = 0; i < n; ++i) state[i] = w[i] - 0.25f * (i + 1);
  for (size_t i = n; i < state.size(); ++i) state[i] = 0.05f * (i - n) - 0.1f;
  std::vector<float> shared(n * comp->shared_floats(), 0.4f);
  std::vector<float> w_out(n), slots_out(slots.size()), state_out(state.size()),
      shared_out(shared.size()), tmp(n);
  float scale = -1;
  ASSERT_TRUE(comp->Apply(*rule,
                          {w.data(), g.data(), slots.data(), state.data(),
                           shared.data(), n, 1, kLr},
                          {w_out.data(), slots_out.data(), state_out.data(),
                           shared_out.data(), tmp.data()},
                          &scale));
  double scale_sum = 0;
  for (size_t i = 0; i < n; ++i) {
    float wi = w[i], vi = slots.empty() ? 0 : slots[i];
    float mi = comp->worker_floats() == 2 ? state[n + i] : 0;
    float msi = shared.empty() ? 0 : shared[i];
    ref.Push(&wi, &vi, g[i], state[i], &mi, &msi);
    EXPECT_NEAR(w_out[i], wi, 1e-5f * (1 + std::fabs(wi))) << "element " << i;
    if (!slots.empty()) EXPECT_NEAR(slots_out[i], vi, 1e-5f) << i;
    EXPECT_FLOAT_EQ(state_out[i], state[i]) << "backup/s_i kept at a push";
    if (comp->worker_floats() == 2) EXPECT_NEAR(state_out[n + i], mi, 1e-6f);
    if (!shared.empty()) EXPECT_NEAR(shared_out[i], msi, 1e-6f);
    const v1::StalenessSettings& st = cfg.staleness();
    if (cfg.compensation() == v1::COMPENSATION_DCASGD_A) {
      scale_sum += st.dc_lambda() / std::sqrt(msi + st.dc_epsilon());
    } else if (cfg.compensation() == v1::COMPENSATION_GEM) {
      float w_opt, v_new;
      ref.Optimizer(w[i], slots.empty() ? 0 : slots[i], g[i], &w_opt, &v_new);
      const float d = w_opt - w[i];
      scale_sum += (wi - w[i]) / d;  // pi
    } else {
      scale_sum += st.dc_lambda();
    }
  }
  EXPECT_NEAR(scale, scale_sum / n, 1e-4 * (1 + std::fabs(scale)));
}

INSTANTIATE_TEST_SUITE_P(
    Rules, RuleTest,
    ::testing::Values(RuleCase{v1::COMPENSATION_DCASGD_C, false},
                      RuleCase{v1::COMPENSATION_DCASGD_C, true},
                      RuleCase{v1::COMPENSATION_DCASGD_A, false},
                      RuleCase{v1::COMPENSATION_DCASGD_A, true},
                      RuleCase{v1::COMPENSATION_GEM, false},
                      RuleCase{v1::COMPENSATION_GEM, true}));

TEST(CompensationCreate, NoneAndInverseKeepNoState) {
  EXPECT_EQ(Compensation::Create(Config(v1::COMPENSATION_NONE, false)), nullptr);
  EXPECT_EQ(Compensation::Create(Config(v1::COMPENSATION_INVERSE, false)),
            nullptr);
  EXPECT_EQ(Compensation::Create(Config(v1::COMPENSATION_GEM, false))
                ->worker_floats(),
            2);
  auto a = Compensation::Create(Config(v1::COMPENSATION_DCASGD_A, false));
  EXPECT_EQ(a->worker_floats(), 1);
  EXPECT_EQ(a->shared_floats(), 1);
}

// ---- through a ChunkStore: one shard, a tensor of 8 elements in 2 chunks
// of 4 ----

constexpr uint32_t kChunkElems = 4;
constexpr int64_t kNumel = 8;

std::vector<float> Floats(const std::string& bytes) {
  std::vector<float> v(bytes.size() / sizeof(float));
  DecodeFloats(v1::ENCODING_F32, bytes.data(), absl::MakeSpan(v));
  return v;
}

class StoreTest : public ::testing::TestWithParam<RuleCase> {
 protected:
  StoreTest() : layout_(Layout::Create(1, kChunkElems).value()) {}

  std::unique_ptr<ChunkStore> NewStore(uint64_t max_memory = 1 << 30) {
    PushWindowOptions window;
    window.clock = &clock_;
    window.adopt_within = absl::Seconds(30);
    return std::make_unique<ChunkStore>(layout_, 0, false, 1 << 20,
                                        max_memory, window);
  }

  static v1::Layout Wire() {
    v1::Layout l;
    l.set_num_shards(1);
    l.set_chunk_elems(kChunkElems);
    return l;
  }

  v1::DeclareRequest DeclareReq(const v1::NamespaceConfig& cfg) const {
    v1::DeclareRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    *req.mutable_config() = cfg;
    v1::TensorSpec* t = req.add_tensors();
    t->set_name("w");
    t->add_shape(kNumel);
    t->mutable_init()->set_kind(v1::INIT_CONSTANT);
    t->mutable_init()->set_value(0.5f);
    return req;
  }

  // Pulls the whole tensor as `worker`: values and the chunks' versions.
  absl::Status Pull(ChunkStore& s, uint64_t worker, std::vector<float>* values,
                    std::vector<uint64_t>* versions) {
    v1::PullRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    req.set_worker_id(worker);
    req.set_encoding(v1::ENCODING_F32);
    for (uint32_t c = 0; c < kNumel / kChunkElems; ++c) {
      v1::ChunkRef* r = req.add_chunks();
      r->set_tensor("w");
      r->set_chunk(c);
    }
    v1::PullResponse resp;
    absl::Status st = s.Pull(req, &resp);
    if (!st.ok()) return st;
    values->clear();
    versions->clear();
    for (const v1::ChunkData& d : resp.chunks()) {
      for (float x : Floats(d.data())) values->push_back(x);
      versions->push_back(d.version());
    }
    return absl::OkStatus();
  }

  v1::PushRequest PushReq(uint64_t worker, const std::vector<float>& g,
                          const std::vector<uint64_t>& versions) const {
    v1::PushRequest req;
    req.set_namespace_("job");
    *req.mutable_layout() = Wire();
    req.set_worker_id(worker);
    for (uint32_t c = 0; c < kNumel / kChunkElems; ++c) {
      v1::ChunkData* d = req.add_grads();
      d->set_tensor("w");
      d->set_chunk(c);
      d->set_version(versions[c]);
      d->set_encoding(v1::ENCODING_F32);
      std::vector<float> part(g.begin() + c * kChunkElems,
                              g.begin() + (c + 1) * kChunkElems);
      EncodeFloats(v1::ENCODING_F32, part, d->mutable_data());
    }
    return req;
  }

  std::vector<float> Values(ChunkStore& s) {
    std::vector<float> v;
    std::vector<uint64_t> versions;
    EXPECT_OK(Pull(s, 0, &v, &versions));
    return v;
  }

  static std::vector<float> Grad(float base) {
    std::vector<float> g(kNumel);
    for (int i = 0; i < kNumel; ++i) g[i] = base * (1 + 0.3f * i) * (i % 2 ? -1 : 1);
    return g;
  }

  Layout layout_;
  testing::FakeClock clock_;
};

// The reference of the whole tensor: values, velocity, per worker its
// backup / s_i and m_i, the shared MS.
struct RefModel {
  Ref ref;
  std::vector<float> w = std::vector<float>(kNumel, 0.5f);
  std::vector<float> v = std::vector<float>(kNumel, 0.0f);
  std::vector<float> ms = std::vector<float>(kNumel, 0.0f);
  std::map<uint64_t, std::pair<std::vector<float>, std::vector<float>>> state;
  void Pull(uint64_t worker) {
    auto& st = state[worker];
    if (st.second.empty()) st.second.assign(kNumel, 0.0f);
    st.first = w;
  }
  void Push(uint64_t worker, const std::vector<float>& g) {
    if (worker == 0) {
      for (int i = 0; i < kNumel; ++i) ref.Optimizer(w[i], v[i], g[i], &w[i], &v[i]);
      return;
    }
    if (!state.contains(worker)) Pull(worker);  // as if it pulled now
    auto& [s, m] = state[worker];
    for (int i = 0; i < kNumel; ++i) ref.Push(&w[i], &v[i], g[i], s[i], &m[i], &ms[i]);
  }
};

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want,
                const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-5f * (1 + std::fabs(want[i])))
        << what << " element " << i;
  }
}

TEST_P(StoreTest, TwoWorkersStaleGradientsMatchTheReference) {
  const v1::NamespaceConfig cfg = Config(GetParam().comp, GetParam().momentum);
  auto store = NewStore();
  v1::DeclareResponse dresp;
  ASSERT_OK(store->Declare(
      DeclareReq(RawConfig(GetParam().comp, GetParam().momentum)), &dresp));
  RefModel ref{Ref{cfg}};
  std::vector<float> vals;
  std::vector<uint64_t> ver0, ver1, ver2;
  // An anonymous push makes the elements differ; it keeps no state.
  ASSERT_OK(Pull(*store, 0, &vals, &ver0));
  v1::PushResponse presp;
  ASSERT_OK(store->Push(PushReq(0, Grad(1.0f), ver0), &presp));
  ref.Push(0, Grad(1.0f));
  EXPECT_EQ(store->CompensationState().workers, 0u);
  // Worker 1 pulls, worker 2 pushes and pulls, so their backups differ.
  ASSERT_OK(Pull(*store, 1, &vals, &ver1));
  ref.Pull(1);
  ASSERT_OK(Pull(*store, 2, &vals, &ver2));
  ref.Pull(2);
  EXPECT_EQ(store->CompensationState().workers, 2u);
  ASSERT_OK(store->Push(PushReq(2, Grad(0.7f), ver2), &presp));
  ref.Push(2, Grad(0.7f));
  ExpectNear(Values(*store), ref.w, "after worker 2's fresh push");
  ASSERT_OK(Pull(*store, 2, &vals, &ver2));
  ref.Pull(2);
  // Worker 1 pushes a gradient one update old.
  presp.Clear();
  ASSERT_OK(store->Push(PushReq(1, Grad(-0.4f), ver1), &presp));
  EXPECT_EQ(presp.acks(0).staleness(), 1u);
  ref.Push(1, Grad(-0.4f));
  ExpectNear(Values(*store), ref.w, "after worker 1's stale push");
  // A PushPull: its answer is worker 1's new backup.
  v1::PushPullResponse ppresp;
  v1::PushRequest pp = PushReq(1, Grad(0.9f), ver1);
  pp.set_return_encoding(v1::ENCODING_F32);
  ASSERT_OK(store->PushPull(pp, &ppresp));
  ref.Push(1, Grad(0.9f));
  ref.Pull(1);
  std::vector<float> answered;
  for (int c = 0; c < ppresp.chunks_size(); ++c) {
    ver1[c] = ppresp.chunks(c).version();
    for (float x : Floats(ppresp.chunks(c).data())) answered.push_back(x);
  }
  ExpectNear(answered, ref.w, "PushPull's answer");
  // Worker 2 again, stale by two.
  presp.Clear();
  ASSERT_OK(store->Push(PushReq(2, Grad(1.3f), ver2), &presp));
  EXPECT_EQ(presp.acks(0).staleness(), 2u);
  ref.Push(2, Grad(1.3f));
  ExpectNear(Values(*store), ref.w, "after worker 2's stale push");
  ASSERT_OK(store->Push(PushReq(1, Grad(0.2f), ver1), &presp));
  ref.Push(1, Grad(0.2f));
  ExpectNear(Values(*store), ref.w, "after worker 1's push after PushPull");
  // A worker first seen at a push: as if it pulled now.
  ASSERT_OK(store->Push(PushReq(3, Grad(0.5f), ver1), &presp));
  ref.Push(3, Grad(0.5f));
  ExpectNear(Values(*store), ref.w, "after worker 3's first push");
  EXPECT_EQ(store->CompensationState().workers, 3u);
  const int index = Compensation::Create(cfg)->index();
  EXPECT_EQ(store->compensation_scales().Read(index).count, 6u * 2);  // 6 pushes, 2 chunks
}

INSTANTIATE_TEST_SUITE_P(
    Rules, StoreTest,
    ::testing::Values(RuleCase{v1::COMPENSATION_DCASGD_C, false},
                      RuleCase{v1::COMPENSATION_DCASGD_A, true},
                      RuleCase{v1::COMPENSATION_GEM, false},
                      RuleCase{v1::COMPENSATION_GEM, true}));

class LifeCycleTest : public StoreTest {
 protected:
  void SetUp() override {
    store_ = NewStore();
    v1::DeclareResponse dresp;
    ASSERT_OK(store_->Declare(
        DeclareReq(RawConfig(v1::COMPENSATION_GEM, true)), &dresp));
  }
  uint64_t PerWorkerBytes() const { return 2 * kNumel * sizeof(float); }
  std::unique_ptr<ChunkStore> store_;
  std::vector<float> vals_;
  std::vector<uint64_t> vers_;
};

TEST_F(LifeCycleTest, FreedAtLeaveAndAtLeaseExpiryThroughTheRegistry) {
  ChunkStore* store = store_.get();
  WorkerListener listener;
  listener.live = [store](uint64_t id) { store->WorkerLive(id); };
  listener.gone = [store](uint64_t id, bool) { store->WorkerGone(id); };
  WorkerRegistry registry(&clock_, absl::Seconds(10), listener);
  ASSERT_OK_AND_ASSIGN(uint64_t a, registry.Register(0, "a"));
  ASSERT_OK_AND_ASSIGN(uint64_t b, registry.Register(0, "b"));
  ASSERT_OK(Pull(*store, a, &vals_, &vers_));
  ASSERT_OK(Pull(*store, b, &vals_, &vers_));
  EXPECT_EQ(store->CompensationState().workers, 2u);
  EXPECT_EQ(store->CompensationState().bytes, 2 * PerWorkerBytes());
  ASSERT_OK(registry.Leave(a));
  EXPECT_EQ(store->CompensationState().workers, 1u);
  EXPECT_EQ(store->CompensationState().bytes, PerWorkerBytes());
  clock_.Advance(absl::Seconds(11));
  EXPECT_EQ(registry.LiveCount(), 0u);  // finds the lapse
  EXPECT_EQ(store->CompensationState().workers, 0u);
  EXPECT_EQ(store->CompensationState().bytes, 0u);
  // The race: b was checked live, then lapsed; its pull creates nothing.
  ASSERT_OK(Pull(*store, b, &vals_, &vers_));
  v1::PushResponse presp;
  ASSERT_OK(store->Push(PushReq(b, Grad(0.1f), vers_), &presp));
  EXPECT_EQ(store->CompensationState().bytes, 0u);
  // Registered again under its old id: state again.
  ASSERT_OK(registry.Register(b, "b").status());
  ASSERT_OK(Pull(*store, b, &vals_, &vers_));
  EXPECT_EQ(store->CompensationState().workers, 1u);
}

TEST_F(LifeCycleTest, KeptAcrossSnapshotReplaceAndARocksDbCheckpoint) {
  ASSERT_OK(Pull(*store_, 1, &vals_, &vers_));
  v1::PushResponse presp;
  ASSERT_OK(store_->Push(PushReq(2, Grad(0.3f), vers_), &presp));
  ASSERT_OK(Pull(*store_, 2, &vals_, &vers_));
  const ShardSnapshot snap = store_->Snapshot();
  testing::TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto ckpt, CheckpointStore::Open(dir.path(), layout_, 0, 2));
  ASSERT_OK(ckpt->Write("c1", snap, absl::Now(), absl::ZeroDuration()).status());
  ASSERT_OK_AND_ASSIGN(ShardSnapshot loaded, ckpt->Load("c1", nullptr));
  auto copy = NewStore();
  auto from_disk = NewStore();
  ASSERT_OK(copy->Replace(snap));
  ASSERT_OK(from_disk->Replace(loaded));
  for (ChunkStore* s : {copy.get(), from_disk.get()}) {
    EXPECT_EQ(s->CompensationState().workers, 2u);
    EXPECT_EQ(s->CompensationState().bytes, store_->CompensationState().bytes);
  }
  // Worker 1's stale push gives the same values on all three.
  std::vector<uint64_t> old_versions = {0, 0};
  for (ChunkStore* s : {store_.get(), copy.get(), from_disk.get()}) {
    ASSERT_OK(s->Push(PushReq(1, Grad(-0.6f), old_versions), &presp));
  }
  const std::vector<float> want = Values(*store_);
  ExpectNear(Values(*copy), want, "restored from the snapshot");
  ExpectNear(Values(*from_disk), want, "restored from RocksDB");
  // Without its state worker 1's push would differ (gem's pi).
  auto fresh = NewStore();
  ASSERT_OK(fresh->Replace(snap));
  fresh->WorkerGone(1);
  ASSERT_OK(fresh->Push(PushReq(1, Grad(-0.6f), old_versions), &presp));
  EXPECT_NE(Values(*fresh), want);
}

TEST_F(LifeCycleTest, RestoredStateOfAWorkerNeverSeenLiveIsFreed) {
  ASSERT_OK(Pull(*store_, 1, &vals_, &vers_));
  ASSERT_OK(Pull(*store_, 2, &vals_, &vers_));
  auto restored = NewStore();
  ASSERT_OK(restored->Replace(store_->Snapshot()));
  restored->WorkerLive(1);  // worker 1 came back in time
  clock_.Advance(absl::Seconds(31));
  restored->WorkerLive(7);  // any registry event sweeps
  EXPECT_EQ(restored->CompensationState().workers, 1u);
  EXPECT_EQ(restored->CompensationState().bytes, PerWorkerBytes());
}

TEST_F(LifeCycleTest, SetConfigSwitchingTheRuleDropsItsState) {
  ASSERT_OK(Pull(*store_, 1, &vals_, &vers_));
  v1::SetConfigRequest req;
  req.set_namespace_("job");
  req.mutable_staleness()->set_gem_kappa(3.0f);
  v1::SetConfigResponse resp;
  ASSERT_OK(store_->SetConfig(req, &resp));  // same rule: kept
  EXPECT_EQ(store_->CompensationState().workers, 1u);
  req.Clear();
  req.set_namespace_("job");
  req.set_compensation(v1::COMPENSATION_DCASGD_A);
  ASSERT_OK(store_->SetConfig(req, &resp));
  EXPECT_EQ(store_->CompensationState().workers, 0u);
  EXPECT_EQ(store_->CompensationState().bytes, 0u);
  ASSERT_OK(Pull(*store_, 1, &vals_, &vers_));  // dcasgd: 1 float
  EXPECT_EQ(store_->CompensationState().bytes, kNumel * sizeof(float));
}

TEST_F(LifeCycleTest, MemoryLimitRefusesNewStateAndChangesNothing) {
  // Values 8 floats, momentum slots 8: 64 bytes; gem 64 bytes per worker.
  auto small = NewStore(64 + PerWorkerBytes());
  v1::DeclareResponse dresp;
  ASSERT_OK(small->Declare(DeclareReq(RawConfig(v1::COMPENSATION_GEM, true)),
                           &dresp));
  ASSERT_OK(Pull(*small, 1, &vals_, &vers_));
  absl::Status full = Pull(*small, 2, &vals_, &vers_);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_NE(full.message().find("fewer workers"), std::string::npos) << full;
  v1::PushResponse presp;
  full = small->Push(PushReq(3, Grad(0.1f), vers_), &presp);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_EQ(small->CompensationState().workers, 1u);
  EXPECT_EQ(small->CompensationState().bytes, PerWorkerBytes());
  EXPECT_EQ(vers_, (std::vector<uint64_t>{0, 0}));  // nothing applied
  ASSERT_OK(Pull(*small, 1, &vals_, &vers_));
  EXPECT_EQ(vers_, (std::vector<uint64_t>{0, 0}));
  ASSERT_OK(Pull(*small, 0, &vals_, &vers_));  // anonymous: no state needed
}

TEST_F(LifeCycleTest, NonFiniteRefusalLeavesTheStateUnchanged) {
  auto store = NewStore();
  v1::DeclareResponse dresp;
  ASSERT_OK(store->Declare(DeclareReq(RawConfig(v1::COMPENSATION_DCASGD_A, false)),
                           &dresp));
  ASSERT_OK(Pull(*store, 1, &vals_, &vers_));
  const ShardSnapshot before = store->Snapshot();
  std::vector<float> huge(kNumel, 1e30f);  // g * g overflows
  v1::PushResponse presp;
  absl::Status st = store->Push(PushReq(1, huge, vers_), &presp);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  st = store->Push(PushReq(2, huge, vers_), &presp);  // would create state
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  const ShardSnapshot after = store->Snapshot();
  ASSERT_EQ(after.chunks.size(), before.chunks.size());
  for (size_t i = 0; i < after.chunks.size(); ++i) {
    EXPECT_EQ(after.chunks[i].SerializeAsString(),
              before.chunks[i].SerializeAsString());
  }
  EXPECT_EQ(store->CompensationState().workers, 1u);
  EXPECT_EQ(store->CompensationState().bytes, kNumel * sizeof(float));
}

TEST_F(LifeCycleTest, BadSettingsAreInvalidArgument) {
  auto store = NewStore();
  v1::DeclareRequest req = DeclareReq(RawConfig(v1::COMPENSATION_DCASGD_C, false));
  req.mutable_config()->mutable_staleness()->set_dc_lambda(-1.0f);
  v1::DeclareResponse dresp;
  EXPECT_EQ(store->Declare(req, &dresp).code(),
            absl::StatusCode::kInvalidArgument);
  v1::SetConfigRequest set;
  set.set_namespace_("job");
  set.mutable_staleness()->set_gem_kappa(0.0f);
  v1::SetConfigResponse sresp;
  EXPECT_EQ(store_->SetConfig(set, &sresp).code(),
            absl::StatusCode::kInvalidArgument);
  set.mutable_staleness()->set_gem_kappa(-2.0f);
  EXPECT_EQ(store_->SetConfig(set, &sresp).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pskit
