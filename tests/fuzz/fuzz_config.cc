// tests/fuzz/fuzz_config.cc
//
// libFuzzer target: the parsers of flags and configuration. The first
// input byte picks one of:
//   0  psctl set's key=value settings (tools/psctl ParseSettings), then the
//      optimizer config they make through NormalizeConfig / DescribeConfig;
//   1  an optimizer config (NamespaceConfig bytes, as Declare and SetConfig
//      carry it and checkpoints keep it) through NormalizeConfig,
//      DescribeConfig and FieldsUsedBy;
//   2  psctl's command line (tools/psctl ParseArgs: its flags anywhere,
//      --name=value, --name value, --bool, --nobool, "--");
//   3  psrun's worker flags and shard flags (InspectWorkerArgs,
//      RejectReserved);
//   4  a cluster layout (--num_shards, --chunk_elems) and a tensor size:
//      Layout::Create and its cut;
//   5  a worker's rank and world from flags and the launcher's environment
//      (worker/launch_env RankAndWorld: SLURM, Open MPI, PMI, Kubernetes);
//   6  a Prometheus exposition (common/http_get FindSample, which psrun and
//      the tests read shard metrics with).
//
// Asserted beyond "no crash" (ASan/UBSan on):
//   - every refusal is INVALID_ARGUMENT (NOT_FOUND for FindSample) with a
//     message;
//   - settings: an accepted key=value set has one field set per pair, and
//     the config it makes normalizes or is refused, never otherwise;
//   - NormalizeConfig is idempotent: a normalized config normalizes to
//     itself, with every field its optimizer reads set and finite;
//   - ParseArgs returns only arguments that were on the command line, in
//     their order;
//   - Layout: the chunks of a tensor cover it exactly, in order, none
//     longer than chunk_elems, each on a shard < num_shards; NumChunks
//     agrees and ElementsOnShard sums to the tensor;
//   - RankAndWorld: an accepted rank lies in [0, world).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "absl/status/status.h"
#include "common/http_get.h"
#include "common/layout.h"
#include "common/optimizer_config.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/message_differencer.h"
#include "pskit/v1/admin.pb.h"
#include "pskit/v1/ps.pb.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"
#include "tools/psctl/commands.h"
#include "tools/psctl/flags.h"
#include "tools/psctl/output.h"
#include "tools/psrun/launch/worker_flags.h"
#include "worker/launch_env.h"

namespace pskit {
namespace {

using google::protobuf::util::MessageDifferencer;

// Command-line arguments: C strings, so without NUL bytes.
std::vector<std::string> ConsumeArgs(FuzzedDataProvider* in, int max) {
  std::vector<std::string> args(in->ConsumeIntegralInRange<int>(0, max));
  for (std::string& a : args) {
    a = in->ConsumeRandomLengthString(48);
    a.erase(std::remove(a.begin(), a.end(), '\0'), a.end());
  }
  return args;
}

bool Refused(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument && !s.message().empty();
}

// NormalizeConfig's contract on any config.
void CheckNormalize(const v1::NamespaceConfig& config) {
  (void)DescribeConfig(config);
  absl::StatusOr<v1::NamespaceConfig> n = NormalizeConfig(config);
  if (!n.ok()) {
    FUZZ_CHECK(Refused(n.status()));
    return;
  }
  (void)DescribeConfig(*n);
  absl::StatusOr<v1::NamespaceConfig> again = NormalizeConfig(*n);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(MessageDifferencer::Equals(*again, *n));
  const v1::OptimizerConfig& o = n->optimizer();
  const google::protobuf::Reflection* r = o.GetReflection();
  for (const std::string& field : FieldsUsedBy(o.kind())) {
    const google::protobuf::FieldDescriptor* f =
        o.GetDescriptor()->FindFieldByName(field);
    FUZZ_CHECK(f != nullptr);
    FUZZ_CHECK(r->HasField(o, f));
    FUZZ_CHECK(std::isfinite(r->GetFloat(o, f)));
  }
  FUZZ_CHECK(n->compensation() != v1::COMPENSATION_UNSPECIFIED);
}

void FuzzSettings(FuzzedDataProvider* in) {
  const std::vector<std::string> pairs = ConsumeArgs(in, 8);
  v1::SetConfigRequest req;
  psctl::Json changes = psctl::Json::Object();
  absl::Status s = psctl::ParseSettings(pairs, &req, &changes);
  if (!s.ok()) {
    FUZZ_CHECK(Refused(s));
    return;
  }
  (void)changes.Dump();
  // One field per pair (compensation is outside the optimizer).
  std::vector<const google::protobuf::FieldDescriptor*> set;
  req.optimizer().GetReflection()->ListFields(req.optimizer(), &set);
  const size_t kind_set = req.optimizer().kind() != v1::OPTIMIZER_UNSPECIFIED;
  const size_t compensation_set =
      req.compensation() != v1::COMPENSATION_UNSPECIFIED;
  FUZZ_CHECK(set.size() + compensation_set == pairs.size());
  v1::NamespaceConfig config;
  *config.mutable_optimizer() = req.optimizer();
  config.set_compensation(req.compensation());
  if (!kind_set) config.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAM);
  CheckNormalize(config);
}

void FuzzOptimizerConfig(FuzzedDataProvider* in) {
  v1::NamespaceConfig config;
  if (!config.ParseFromString(in->ConsumeRemainingBytesAsString())) return;
  CheckNormalize(config);
  (void)FieldsUsedBy(config.optimizer().kind());
}

void FuzzPsctlArgs(FuzzedDataProvider* in) {
  std::vector<std::string> args = ConsumeArgs(in, 8);
  args.insert(args.begin(), "psctl");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  bool help = false;
  std::set<std::string> given;
  absl::StatusOr<std::vector<std::string>> rest = psctl::ParseArgs(
      static_cast<int>(args.size()), argv.data(), &help, &given);
  if (!rest.ok()) {
    FUZZ_CHECK(Refused(rest.status()));
    return;
  }
  // The positional arguments are a subsequence of the command line.
  size_t at = 0;
  for (const std::string& r : *rest) {
    while (at < args.size() && args[at] != r) ++at;
    FUZZ_CHECK(at < args.size());
    ++at;
  }
}

void FuzzPsrunArgs(FuzzedDataProvider* in) {
  const std::vector<std::string> args = ConsumeArgs(in, 8);
  absl::StatusOr<launch::WorkerFlagInfo> info = launch::InspectWorkerArgs(args);
  if (!info.ok()) {
    FUZZ_CHECK(Refused(info.status()));
  } else {
    FUZZ_CHECK(!info->target_accuracy.has_value() ||
               !std::isnan(*info->target_accuracy) ||
               info->evaluator_can_end);
  }
  absl::Status s = launch::RejectReserved(
      args, {"listen", "shard_index", "num_shards", "data_dir"}, "shard");
  if (!s.ok()) FUZZ_CHECK(Refused(s));
}

void FuzzLayout(FuzzedDataProvider* in) {
  const uint32_t shards = in->ConsumeIntegral<uint32_t>() % 70000;
  const uint32_t chunk_elems = in->ConsumeIntegral<uint32_t>();
  absl::StatusOr<Layout> layout = Layout::Create(shards, chunk_elems);
  if (!layout.ok()) {
    FUZZ_CHECK(Refused(layout.status()));
    return;
  }
  const uint64_t numel =
      1 + in->ConsumeIntegral<uint64_t>() % layout->MaxTensorElems();
  const uint32_t num_chunks = layout->NumChunks(numel);
  // Listing every chunk is bounded by what a test can afford.
  if (num_chunks > 100000) return;
  const std::string ns = in->ConsumeRandomLengthString(16);
  const std::string tensor = in->ConsumeRandomLengthString(16);
  const std::vector<ChunkSpan> chunks = layout->Chunks(ns, tensor, numel);
  FUZZ_CHECK(chunks.size() == num_chunks);
  uint64_t offset = 0;
  std::vector<uint64_t> per_shard(std::min<uint32_t>(shards, 64));
  for (size_t i = 0; i < chunks.size(); ++i) {
    FUZZ_CHECK(chunks[i].index == i);
    FUZZ_CHECK(chunks[i].offset == offset);
    FUZZ_CHECK(chunks[i].length > 0 && chunks[i].length <= chunk_elems);
    FUZZ_CHECK(chunks[i].shard < shards);
    if (chunks[i].shard < per_shard.size()) {
      per_shard[chunks[i].shard] += chunks[i].length;
    }
    offset += chunks[i].length;
  }
  FUZZ_CHECK(offset == numel);
  for (uint32_t s = 0; s < per_shard.size(); ++s) {
    FUZZ_CHECK(layout->ElementsOnShard(ns, tensor, numel, s) == per_shard[s]);
  }
}

void FuzzRankWorld(FuzzedDataProvider* in) {
  const int flag_rank = in->ConsumeIntegralInRange<int>(-2, 64);
  const int flag_world = in->ConsumeIntegralInRange<int>(-2, 64);
  static const char* const kVars[] = {
      "SLURM_PROCID",   "SLURM_NTASKS",        "OMPI_COMM_WORLD_RANK",
      "OMPI_COMM_WORLD_SIZE", "PMI_RANK",      "PMI_SIZE",
      "JOB_COMPLETION_INDEX", "PSKIT_WORLD_SIZE"};
  std::map<std::string, std::string> env;
  for (const char* var : kVars) {
    if (in->ConsumeBool()) env[var] = in->ConsumeRandomLengthString(12);
  }
  absl::StatusOr<worker::RankWorld> rw = worker::RankAndWorld(
      flag_rank, flag_world, [&env](const char* name) -> const char* {
        auto it = env.find(name);
        return it == env.end() ? nullptr : it->second.c_str();
      });
  if (!rw.ok()) {
    FUZZ_CHECK(Refused(rw.status()));
    return;
  }
  FUZZ_CHECK(rw->world >= 1 && rw->rank >= 0 && rw->rank < rw->world);
  FUZZ_CHECK(!rw->source.empty());
}

void FuzzExposition(FuzzedDataProvider* in) {
  const std::string name = in->ConsumeRandomLengthString(24);
  std::vector<std::string> filter;
  if (in->ConsumeBool()) filter.push_back(in->ConsumeRandomLengthString(16));
  const std::string exposition = in->ConsumeRemainingBytesAsString();
  absl::StatusOr<double> v = FindSample(exposition, name, filter);
  if (!v.ok()) {
    FUZZ_CHECK(v.status().code() == absl::StatusCode::kNotFound);
    return;
  }
  FUZZ_CHECK(exposition.find(name) != std::string::npos);
}

// Seeds: real command lines and configs of each kind.
fuzz::Seeds MakeSeeds() {
  fuzz::Seeds seeds;
  auto args = [&](const std::string& name, int mode,
                  const std::vector<std::string>& list) {
    fuzz::FuzzInputWriter w;
    w.Small(static_cast<uint8_t>(mode));
    w.Small(static_cast<uint8_t>(list.size()));
    for (const std::string& a : list) w.String(a);
    seeds.emplace_back(name, w.Finish());
  };
  args("settings", 0, {"lr=0.05", "momentum=0.8", "wd=1e-4"});
  args("settings-kind", 0,
       {"optimizer=adam", "beta1=0.9", "beta2=0.999", "eps=1e-8",
        "compensation=inverse"});
  args("settings-bad", 0, {"lr", "rho=x", "LR=1"});
  args("psctl", 2,
       {"--shards=127.0.0.1:7000,127.0.0.1:7001", "set", "--json", "job",
        "lr=0.1", "--timeout_s", "5", "--", "--id"});
  args("psctl-checkpoint", 2,
       {"checkpoint", "--id=c1", "--wait", "--nojson", "--wait_s=3"});
  args("psrun", 3,
       {"--target_accuracy=0.85", "--namespace", "job", "--eval_interval_s",
        "1.5", "-patience=3", "--", "--shards=x"});
  args("psrun-reserved", 3, {"--rank=1", "--listen", "0.0.0.0:1"});
  {
    v1::NamespaceConfig config;
    config.mutable_optimizer()->set_kind(v1::OPTIMIZER_ADAGRAD);
    config.mutable_optimizer()->set_learning_rate(0.1f);
    config.mutable_optimizer()->set_initial_accumulator(0.1f);
    config.set_compensation(v1::COMPENSATION_INVERSE);
    fuzz::FuzzInputWriter w;
    w.Small(1);
    w.Bytes(config.SerializeAsString());
    seeds.emplace_back("optimizer-config", w.Finish());
  }
  {
    fuzz::FuzzInputWriter w;
    w.Small(4);
    w.Int<uint32_t>(4);
    w.Int<uint32_t>(kDefaultChunkElems);
    w.Int<uint64_t>(784 * 512 - 1);  // numel - 1
    w.String("default");
    w.String("fc1/w");
    seeds.emplace_back("layout", w.Finish());
  }
  {
    fuzz::FuzzInputWriter w;
    w.Small(5);
    w.Small(1);  // --rank -1: not given
    w.Small(1);  // --world -1
    const char* values[] = {"3", "8", nullptr, nullptr, nullptr, nullptr,
                            "2", "4"};
    for (const char* v : values) {
      w.Small(v != nullptr);
      if (v != nullptr) w.String(v);
    }
    seeds.emplace_back("rank-env", w.Finish());
  }
  {
    fuzz::FuzzInputWriter w;
    w.Small(6);
    w.String("pskit_updates_applied_total");
    w.Small(1);
    w.String("shard=\"0\"");
    w.Bytes(
        "# HELP pskit_updates_applied_total Updates.\n"
        "# TYPE pskit_updates_applied_total counter\n"
        "pskit_updates_applied_total{shard=\"0\"} 1234 1700000000\n"
        "pskit_updates_applied_total_x 5\n"
        "pskit_memory_bytes NaN\n");
    seeds.emplace_back("exposition", w.Finish());
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
  switch (in.ConsumeIntegralInRange<int>(0, 6)) {
    case 0: pskit::FuzzSettings(&in); break;
    case 1: pskit::FuzzOptimizerConfig(&in); break;
    case 2: pskit::FuzzPsctlArgs(&in); break;
    case 3: pskit::FuzzPsrunArgs(&in); break;
    case 4: pskit::FuzzLayout(&in); break;
    case 5: pskit::FuzzRankWorld(&in); break;
    case 6: pskit::FuzzExposition(&in); break;
  }
  return 0;
}
