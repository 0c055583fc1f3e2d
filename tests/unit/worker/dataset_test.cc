#include "worker/data/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit::worker {
namespace {

std::string Header(uint8_t rank, std::vector<uint32_t> dims) {
  std::string h = {0, 0, 0x08, static_cast<char>(rank)};
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>(d >> s));
  }
  return h;
}

void WritePlain(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

void WriteGzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), bytes.size()), static_cast<int>(bytes.size()));
  gzclose(f);
}

// Three 2x2 images and their labels.
const std::string kImages = Header(3, {3, 2, 2}) +
                            std::string("\x00\xff\x80\x01\x02\x03\x04\x05"
                                        "\x06\x07\x08\x09", 12);
const std::string kLabels = Header(1, {3}) + std::string("\x02\x00\x07", 3);

void ExpectTheThreeImages(const Dataset& ds) {
  ASSERT_EQ(ds.size(), 3);
  EXPECT_EQ(ds.feature_dim, 4);
  EXPECT_EQ(ds.num_classes, 8);
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{2, 0, 7}));
  EXPECT_EQ(ds.row(0)[0], 0.0f);
  EXPECT_EQ(ds.row(0)[1], 1.0f);
  EXPECT_FLOAT_EQ(ds.row(0)[2], 128.0f / 255);
  EXPECT_FLOAT_EQ(ds.row(2)[3], 9.0f / 255);
}

TEST(Idx, PlainAndGzipFilesInADirectory) {
  testing::TempDir plain, gz;
  WritePlain(plain.path() + "/train-images-idx3-ubyte", kImages);
  WritePlain(plain.path() + "/train-labels-idx1-ubyte", kLabels);
  ASSERT_OK_AND_ASSIGN(Dataset a, ReadIdxDir(plain.path(), /*train=*/true));
  ExpectTheThreeImages(a);
  WriteGzip(gz.path() + "/t10k-images-idx3-ubyte.gz", kImages);
  WriteGzip(gz.path() + "/t10k-labels-idx1-ubyte.gz", kLabels);
  ASSERT_OK_AND_ASSIGN(Dataset b, ReadIdxDir(gz.path(), /*train=*/false));
  ExpectTheThreeImages(b);
  EXPECT_EQ(ReadIdxDir(gz.path(), /*train=*/true).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(Idx, BadFilesNameTheFileAndTheProblem) {
  testing::TempDir dir;
  const std::string im = dir.path() + "/im", lb = dir.path() + "/lb";
  WritePlain(lb, kLabels);
  WritePlain(im, kImages.substr(0, kImages.size() - 1));  // truncated
  absl::Status s = ReadIdx(im, lb).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("truncated"), absl::string_view::npos) << s;
  WritePlain(im, "not an idx file at all");
  EXPECT_EQ(ReadIdx(im, lb).status().code(), absl::StatusCode::kInvalidArgument);
  WritePlain(im, Header(3, {2, 2, 2}) + std::string(8, '\0'));  // 2 images
  s = ReadIdx(im, lb).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("3 labels"), absl::string_view::npos) << s;
  WriteGzip(im, kImages);
  std::string damaged;
  {
    std::ifstream in(im, std::ios::binary);
    damaged.assign(std::istreambuf_iterator<char>(in), {});
  }
  damaged.resize(damaged.size() - 6);  // cut the gzip trailer and data
  WritePlain(im, damaged);
  EXPECT_FALSE(ReadIdx(im, lb).ok());
}

TEST(Teacher, DeterministicAndUsesEveryClass) {
  const Dataset a = MakeTeacherDataset(7, 1, 2000, 10, 5);
  const Dataset b = MakeTeacherDataset(7, 1, 2000, 10, 5);
  const Dataset c = MakeTeacherDataset(7, 2, 2000, 10, 5);
  EXPECT_EQ(a.features, b.features);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_NE(a.features, c.features);
  std::set<int32_t> classes(a.labels.begin(), a.labels.end());
  EXPECT_EQ(classes.size(), 5u);
}

TEST(SliceOf, RanksCoverEverySampleExactlyOnce) {
  for (int64_t n : {0, 1, 7, 60000, 60001}) {
    for (int world : {1, 2, 3, 8, 13}) {
      int64_t next = 0;
      for (int rank = 0; rank < world; ++rank) {
        auto [begin, end] = SliceOf(n, rank, world);
        EXPECT_EQ(begin, next) << n << " " << world << " " << rank;
        EXPECT_LE(end - begin, n / world + 1);
        EXPECT_GE(end - begin, n / world);
        next = end;
      }
      EXPECT_EQ(next, n);
    }
  }
}

// A set of n one-feature samples whose feature is the sample's index and
// whose label is given.
Dataset Indexed(const std::vector<int32_t>& labels) {
  Dataset d;
  d.feature_dim = 1;
  d.labels = labels;
  for (size_t j = 0; j < labels.size(); ++j) {
    d.features.push_back(static_cast<float>(j));
    d.num_classes = std::max(d.num_classes, labels[j] + 1);
  }
  return d;
}

TEST(SplitFold, FoldsAreDisjointCoverTheSetAndDifferByAtMostOne) {
  for (int64_t n : {2, 3, 7, 10, 101}) {
    for (int folds : {2, 3, 5, 7}) {
      if (n < folds) continue;
      Dataset d = Indexed(std::vector<int32_t>(n, 0));
      std::vector<int> seen_in_validation(n, 0);
      int64_t smallest = n, largest = 0;
      for (int fold = 0; fold < folds; ++fold) {
        ASSERT_OK_AND_ASSIGN(FoldSplit s, SplitFold(d, folds, fold));
        ASSERT_EQ(s.train.size() + s.validation.size(), n);
        EXPECT_EQ(s.validation.size(), FoldSize(n, folds, fold));
        smallest = std::min(smallest, s.validation.size());
        largest = std::max(largest, s.validation.size());
        // The rule: sample j is in fold j mod folds; the features (the
        // index) travel with their sample, in order.
        std::set<int64_t> in_fold, in_train;
        for (int64_t k = 0; k < s.validation.size(); ++k) {
          const int64_t j = static_cast<int64_t>(s.validation.row(k)[0]);
          EXPECT_EQ(j % folds, fold);
          if (k > 0) EXPECT_GT(j, s.validation.row(k - 1)[0]);
          in_fold.insert(j);
          ++seen_in_validation[j];
        }
        for (int64_t k = 0; k < s.train.size(); ++k) {
          in_train.insert(static_cast<int64_t>(s.train.row(k)[0]));
        }
        EXPECT_EQ(in_train.size(), static_cast<size_t>(s.train.size()));
        for (int64_t j : in_fold) EXPECT_EQ(in_train.count(j), 0u) << j;
      }
      EXPECT_LE(largest - smallest, 1) << n << " " << folds;
      // Across the folds, every sample is validated exactly once.
      for (int64_t j = 0; j < n; ++j) EXPECT_EQ(seen_in_validation[j], 1) << j;
    }
  }
}

TEST(SplitFold, ClassBalancedOnASetSortedByClass) {
  // 4 classes of 30 samples, sorted by class, as some files are.
  std::vector<int32_t> labels;
  for (int c = 0; c < 4; ++c) labels.insert(labels.end(), 30, c);
  const Dataset d = Indexed(labels);
  for (int fold = 0; fold < 5; ++fold) {
    ASSERT_OK_AND_ASSIGN(FoldSplit s, SplitFold(d, 5, fold));
    std::map<int32_t, int> count;
    for (int32_t l : s.validation.labels) ++count[l];
    EXPECT_EQ(count, (std::map<int32_t, int>{{0, 6}, {1, 6}, {2, 6}, {3, 6}}));
    EXPECT_EQ(s.train.num_classes, 4);
    EXPECT_EQ(s.validation.num_classes, 4);
    EXPECT_EQ(s.validation.feature_dim, 1);
  }
}

TEST(SplitFold, KeepsTheWholeSetsClassesWhenAFoldMissesOne) {
  // Only sample 3 has class 5: fold 0 of 3 holds samples 0 and 3, fold 1
  // none of class 5; the model is the whole set's either way.
  const Dataset d = Indexed({0, 1, 0, 5, 1, 0});
  ASSERT_OK_AND_ASSIGN(FoldSplit s, SplitFold(d, 3, 1));
  EXPECT_EQ(s.validation.labels, (std::vector<int32_t>{1, 1}));
  EXPECT_EQ(s.validation.num_classes, 6);
  EXPECT_EQ(s.train.labels, (std::vector<int32_t>{0, 0, 5, 0}));
}

TEST(SplitFold, BadArgumentsAreRefusedNamingTheFlag) {
  const Dataset d = Indexed({0, 1, 0, 1});
  auto message = [&](int folds, int fold) {
    absl::StatusOr<FoldSplit> s = SplitFold(d, folds, fold);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument)
        << folds << " " << fold;
    return std::string(s.status().message());
  };
  EXPECT_NE(message(1, 0).find("--folds must be at least 2"), std::string::npos);
  EXPECT_NE(message(0, 0).find("--folds"), std::string::npos);
  EXPECT_NE(message(-3, 0).find("--folds must be at least 2"), std::string::npos);
  EXPECT_NE(message(3, 3).find("--fold must be in [0, 3)"), std::string::npos);
  EXPECT_NE(message(3, -2).find("--fold must be in [0, 3)"), std::string::npos);
  EXPECT_NE(message(3, -1).find("needs --fold i"), std::string::npos);
  const std::string small = message(5, 0);
  EXPECT_NE(small.find("at least 5 training samples"), std::string::npos) << small;
  EXPECT_NE(small.find("has 4"), std::string::npos) << small;

  // The flags' check: off (0, -1) is fine, --fold alone is not.
  EXPECT_TRUE(CheckFolds(0, -1).ok());
  EXPECT_TRUE(CheckFolds(2, 1).ok());
  const absl::Status alone = CheckFolds(0, 2);
  EXPECT_EQ(alone.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(alone.message().find("--fold 2 needs --folds K"), std::string::npos)
      << alone;
}

}  // namespace
}  // namespace pskit::worker

#include "worker/launch_env.h"

namespace pskit::worker {
namespace {

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

TEST(RankAndWorld, FlagsThenSlurmThenOpenMpiThenPmiThenKubernetes) {
  ASSERT_OK_AND_ASSIGN(RankWorld rw, RankAndWorld(-1, -1, Env({})));
  EXPECT_EQ(rw.rank, 0);
  EXPECT_EQ(rw.world, 1);
  ASSERT_OK_AND_ASSIGN(rw, RankAndWorld(2, 4, Env({{"SLURM_PROCID", "1"},
                                                   {"SLURM_NTASKS", "8"}})));
  EXPECT_EQ(rw.rank, 2);
  EXPECT_EQ(rw.source, "flags");
  ASSERT_OK_AND_ASSIGN(rw, RankAndWorld(-1, -1, Env({{"SLURM_PROCID", "3"},
                                                     {"SLURM_NTASKS", "8"},
                                                     {"PMI_RANK", "0"},
                                                     {"PMI_SIZE", "2"}})));
  EXPECT_EQ(rw.rank, 3);
  EXPECT_EQ(rw.world, 8);
  EXPECT_EQ(rw.source, "SLURM");
  ASSERT_OK_AND_ASSIGN(rw, RankAndWorld(-1, -1,
                                        Env({{"OMPI_COMM_WORLD_RANK", "5"},
                                             {"OMPI_COMM_WORLD_SIZE", "6"}})));
  EXPECT_EQ(rw.source, "Open MPI");
  EXPECT_EQ(rw.rank, 5);
  ASSERT_OK_AND_ASSIGN(rw, RankAndWorld(-1, -1, Env({{"PMI_RANK", "1"},
                                                     {"PMI_SIZE", "2"}})));
  EXPECT_EQ(rw.source, "PMI");
  // A Kubernetes Indexed Job: index from Kubernetes, world from the Job's
  // pod template; after every other launcher.
  ASSERT_OK_AND_ASSIGN(rw, RankAndWorld(-1, -1,
                                        Env({{"JOB_COMPLETION_INDEX", "3"},
                                             {"PSKIT_WORLD_SIZE", "4"}})));
  EXPECT_EQ(rw.source, "Kubernetes");
  EXPECT_EQ(rw.rank, 3);
  EXPECT_EQ(rw.world, 4);
  ASSERT_OK_AND_ASSIGN(rw, RankAndWorld(-1, -1,
                                        Env({{"PMI_RANK", "1"},
                                             {"PMI_SIZE", "2"},
                                             {"JOB_COMPLETION_INDEX", "3"},
                                             {"PSKIT_WORLD_SIZE", "4"}})));
  EXPECT_EQ(rw.source, "PMI");
  ASSERT_OK_AND_ASSIGN(rw, RankAndWorld(0, 2,
                                        Env({{"JOB_COMPLETION_INDEX", "3"},
                                             {"PSKIT_WORLD_SIZE", "4"}})));
  EXPECT_EQ(rw.source, "flags");
  // PSKIT_WORLD_SIZE alone (a ConfigMap's, in the evaluator's pod too).
  ASSERT_OK_AND_ASSIGN(rw,
                       RankAndWorld(-1, -1, Env({{"PSKIT_WORLD_SIZE", "4"}})));
  EXPECT_EQ(rw.source, "default");
}

TEST(RankAndWorld, KubernetesIndexWithoutWorldSaysWhatToSet) {
  absl::StatusOr<RankWorld> rw =
      RankAndWorld(-1, -1, Env({{"JOB_COMPLETION_INDEX", "0"}}));
  ASSERT_FALSE(rw.ok());
  EXPECT_EQ(rw.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(rw.status().message().find(
                "set PSKIT_WORLD_SIZE in the pod template to the Job's "
                "completions"),
            absl::string_view::npos)
      << rw.status();
  EXPECT_EQ(RankAndWorld(-1, -1, Env({{"JOB_COMPLETION_INDEX", "4"},
                                      {"PSKIT_WORLD_SIZE", "4"}}))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RankAndWorld(-1, -1, Env({{"JOB_COMPLETION_INDEX", "1"},
                                      {"PSKIT_WORLD_SIZE", "four"}}))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RankAndWorld, RefusesHalfGivenOrOutOfRange) {
  EXPECT_FALSE(RankAndWorld(1, -1, Env({})).ok());
  EXPECT_FALSE(RankAndWorld(4, 4, Env({})).ok());
  EXPECT_FALSE(RankAndWorld(-1, -1, Env({{"SLURM_PROCID", "x"},
                                         {"SLURM_NTASKS", "2"}}))
                   .ok());
  EXPECT_FALSE(RankAndWorld(-1, -1, Env({{"PMI_RANK", "2"},
                                         {"PMI_SIZE", "2"}}))
                   .ok());
}

}  // namespace
}  // namespace pskit::worker

namespace pskit::worker {
namespace {

TEST(Csv, HeaderNamedLabelAndPlainFiles) {
  testing::TempDir dir;
  const std::string a = dir.path() + "/a.csv", b = dir.path() + "/b.csv";
  WritePlain(a, "x1,label,x2\n0.5,1,2\n\n-1,0,3.5\n");
  ASSERT_OK_AND_ASSIGN(Dataset ds, ReadCsv(a, "label"));
  ASSERT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.feature_dim, 2);
  EXPECT_EQ(ds.num_classes, 2);
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(ds.features, (std::vector<float>{0.5f, 2, -1, 3.5f}));
  ASSERT_OK_AND_ASSIGN(ds, ReadCsv(a, "1"));  // by index, header skipped
  EXPECT_EQ(ds.size(), 2);
  WriteGzip(b, "1,2,3\n4,5,6\n");
  ASSERT_OK_AND_ASSIGN(ds, ReadCsv(b, "last"));
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{3, 6}));
  EXPECT_EQ(ds.num_classes, 7);
}

TEST(Csv, MalformedFilesNameTheLine) {
  testing::TempDir dir;
  const std::string p = dir.path() + "/bad.csv";
  WritePlain(p, "1,2,0\n3,4\n");
  absl::Status s = ReadCsv(p, "last").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("line 2"), absl::string_view::npos) << s;
  WritePlain(p, "1,2,0\n3,x,1\n");
  EXPECT_EQ(ReadCsv(p, "last").status().code(), absl::StatusCode::kInvalidArgument);
  WritePlain(p, "1,2,0.5\n");
  EXPECT_EQ(ReadCsv(p, "last").status().code(), absl::StatusCode::kInvalidArgument);
  WritePlain(p, "a,b\n1,2\n");
  EXPECT_EQ(ReadCsv(p, "c").status().code(), absl::StatusCode::kInvalidArgument);
  WritePlain(p, "a,b\n");
  EXPECT_EQ(ReadCsv(p, "b").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadCsv(dir.path() + "/none.csv", "last").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace pskit::worker

#include "worker/data/batcher.h"

namespace pskit::worker {
namespace {

// With or without the prefetch thread, the same batches in the same order;
// each epoch visits every sample of the slice once (the last partial batch
// dropped), reshuffled.
TEST(Batcher, PrefetchGivesTheSameBatchesAndCoversTheSlice) {
  const Dataset data = MakeTeacherDataset(3, 4, 1000, 3, 2);
  Batcher plain(data, 100, 203, 10, 9, /*prefetch=*/false);
  Batcher ahead(data, 100, 203, 10, 9, /*prefetch=*/true);
  std::vector<std::vector<float>> epoch_rows(3);
  for (int step = 0; step < 30; ++step) {
    const Batch& a = plain.Next();
    const Batch& b = ahead.Next();
    ASSERT_EQ(a.epoch, step / 10);
    ASSERT_EQ(a.epoch, b.epoch);
    ASSERT_EQ(a.x, b.x);
    ASSERT_EQ(a.y, b.y);
    epoch_rows[a.epoch].insert(epoch_rows[a.epoch].end(), a.x.begin(), a.x.end());
  }
  std::set<float> firsts;  // first feature identifies a row here
  for (size_t i = 0; i < epoch_rows[0].size(); i += 3) firsts.insert(epoch_rows[0][i]);
  EXPECT_EQ(firsts.size(), 100u);  // 103 rows, 10 batches of 10
  for (float f : firsts) {
    bool in_slice = false;
    for (int64_t r = 100; r < 203; ++r) in_slice |= data.row(r)[0] == f;
    EXPECT_TRUE(in_slice);
  }
  EXPECT_NE(epoch_rows[0], epoch_rows[1]);  // reshuffled
}

}  // namespace
}  // namespace pskit::worker

#include "worker/trace.h"
#include "worker/worker_metrics.h"

namespace pskit::worker {
namespace {

TEST(TraceWriter, WritesAChromeTraceArray) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/t.json";
  {
    ASSERT_OK_AND_ASSIGN(auto w, TraceWriter::Open(path, 3));
    const absl::Time t0 = absl::FromUnixMicros(1000);
    w->Add("compute", t0, t0 + absl::Microseconds(250));
    PhaseSink sink(w.get(), nullptr);
    { PhaseSink::Span s(&sink, "push"); }
    PhaseSink::Span nothing(nullptr, "ignored");  // a null sink is fine
  }
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text.rfind("[\n", 0), 0u);
  EXPECT_NE(text.find("{\"name\":\"compute\",\"cat\":\"step\",\"ph\":\"X\","
                      "\"ts\":1000,\"dur\":250,\"pid\":3,\"tid\":0},\n"
                      "{\"name\":\"push\""),
            std::string::npos)
      << text;
  EXPECT_EQ(text.substr(text.size() - 3), "\n]\n");
  EXPECT_EQ(TraceWriter::Open(dir.path() + "/no/such/dir/t.json", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The value of the series of `family` whose labels include `label`=`value`
// (a histogram answers its sample count); -1 when there is none.
double SeriesValue(const std::vector<prometheus::MetricFamily>& families,
                   const std::string& family, const std::string& label,
                   const std::string& value) {
  for (const prometheus::MetricFamily& f : families) {
    if (f.name != family) continue;
    for (const prometheus::ClientMetric& m : f.metric) {
      for (const auto& l : m.label) {
        if (l.name != label || l.value != value) continue;
        switch (f.type) {
          case prometheus::MetricType::Counter: return m.counter.value;
          case prometheus::MetricType::Gauge: return m.gauge.value;
          case prometheus::MetricType::Histogram:
            return static_cast<double>(m.histogram.sample_count);
          default: return -1;
        }
      }
    }
  }
  return -1;
}

TEST(WorkerMetrics, PhaseSinkFeedsTheHistogramsAndStepsCount) {
  WorkerMetrics metrics("worker", 2);
  PhaseSink sink(nullptr, &metrics);
  const absl::Time t0 = absl::FromUnixMicros(1000);
  sink.Add("compute", t0, t0 + absl::Milliseconds(3));
  sink.Add("compute", t0, t0 + absl::Milliseconds(5));
  { PhaseSink::Span s(&sink, "pushpull"); }
  metrics.AddStep(64, 2.0f);
  metrics.AddStep(64, 1.0f);
  metrics.AddEvaluation(0.75, 0.5);  // ignored: a training worker's
  const auto families = metrics.registry()->Collect();
  EXPECT_EQ(SeriesValue(families, "pskit_worker_phase_duration_seconds",
                        "phase", "compute"), 2);
  EXPECT_EQ(SeriesValue(families, "pskit_worker_phase_duration_seconds",
                        "phase", "pushpull"), 1);
  EXPECT_EQ(SeriesValue(families, "pskit_worker_steps_total", "rank", "2"), 2);
  EXPECT_EQ(SeriesValue(families, "pskit_worker_samples_total", "role",
                        "worker"), 128);
  // Moving average: 0.99 * 2 + 0.01 * 1.
  EXPECT_NEAR(SeriesValue(families, "pskit_worker_loss", "rank", "2"), 1.99,
              1e-9);
  EXPECT_EQ(SeriesValue(families, "pskit_worker_eval_accuracy_ratio", "rank",
                        "2"), -1) << "a training worker exports no evaluations";

  WorkerMetrics evaluator("evaluator", 0);
  evaluator.AddEvaluation(0.75, 0.5);
  const auto eval_families = evaluator.registry()->Collect();
  EXPECT_EQ(SeriesValue(eval_families, "pskit_worker_eval_accuracy_ratio",
                        "role", "evaluator"), 0.75);
  EXPECT_EQ(SeriesValue(eval_families, "pskit_worker_eval_loss", "role",
                        "evaluator"), 0.5);
  EXPECT_EQ(SeriesValue(eval_families, "pskit_worker_evaluations_total",
                        "role", "evaluator"), 1);
}

}  // namespace
}  // namespace pskit::worker

#include <hdf5.h>

namespace pskit::worker {
namespace {

// Writes `name` into `file` as a dataset of `type` with `dims`.
void WriteDataset(hid_t file, const char* name, hid_t type,
                  std::vector<hsize_t> dims, const void* data) {
  hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(ds, 0);
  ASSERT_GE(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
  H5Dclose(ds);
  H5Sclose(space);
}

TEST(Hdf5, NamedFeatureAndLabelDatasetsOfAnyNumericType) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/events.h5";
  {
    hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const std::vector<double> x = {1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6.5};
    const std::vector<int64_t> y = {3, 1};
    const std::vector<int64_t> bad = {0, -1};
    WriteDataset(f, "jets", H5T_NATIVE_DOUBLE, {2, 2, 3}, x.data());
    WriteDataset(f, "is_signal", H5T_NATIVE_INT64, {2}, y.data());
    WriteDataset(f, "negative", H5T_NATIVE_INT64, {2}, bad.data());
    WriteDataset(f, "three", H5T_NATIVE_INT64, {3}, x.data());
    H5Fclose(f);
  }
  ASSERT_OK_AND_ASSIGN(Dataset ds, ReadHdf5(path, "jets", "is_signal"));
  ASSERT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.feature_dim, 6);
  EXPECT_EQ(ds.num_classes, 4);
  EXPECT_EQ(ds.labels, (std::vector<int32_t>{3, 1}));
  EXPECT_EQ(ds.row(1)[5], -6.5f);
  EXPECT_EQ(ReadHdf5(path, "nope", "is_signal").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadHdf5(path, "jets", "negative").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status s = ReadHdf5(path, "jets", "three").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("3 labels"), absl::string_view::npos) << s;
  WritePlain(dir.path() + "/not.h5", "plain text");
  EXPECT_EQ(ReadHdf5(dir.path() + "/not.h5", "a", "b").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadHdf5(dir.path() + "/none.h5", "a", "b").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace pskit::worker
