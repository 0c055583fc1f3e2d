// LoadJobData: which data a role reads, and the flags it names when
// something is missing.
#include "worker/data/data_source.h"

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pskit::worker {
namespace {

DataSourceOptions Synthetic() {
  DataSourceOptions o;  // no --dataset, no --data_path: synthetic
  o.synthetic_train = 300;
  o.synthetic_test = 100;
  o.synthetic_dim = 5;
  o.synthetic_classes = 3;
  return o;
}

TEST(LoadJobData, EachRoleReadsWhatItNeeds) {
  ASSERT_OK_AND_ASSIGN(JobData worker, LoadJobData(Synthetic(), true, false));
  EXPECT_EQ(worker.dataset, "synthetic");
  EXPECT_EQ(worker.train.size(), 300);
  EXPECT_EQ(worker.test.size(), 0);
  ASSERT_OK_AND_ASSIGN(JobData local, LoadJobData(Synthetic(), true, true));
  EXPECT_EQ(local.train.size(), 300);
  EXPECT_EQ(local.test.size(), 100);
  ASSERT_OK_AND_ASSIGN(JobData evaluator, LoadJobData(Synthetic(), false, false));
  EXPECT_EQ(evaluator.train.size(), 0);
  EXPECT_EQ(evaluator.test.size(), 100);
  // The local baseline's test set is the evaluator's.
  EXPECT_EQ(local.test.features, evaluator.test.features);
  EXPECT_EQ(local.test.labels, evaluator.test.labels);
}

// With folds every role reads the training set: the worker keeps what is
// outside the fold, the evaluator and the local baseline the fold; the test
// set is not read.
TEST(LoadJobData, FoldsSplitTheTrainingSetBetweenTheRoles) {
  DataSourceOptions o = Synthetic();
  o.folds = 4;
  o.fold = 1;
  ASSERT_OK_AND_ASSIGN(JobData full, LoadJobData(Synthetic(), true, false));
  ASSERT_OK_AND_ASSIGN(JobData worker, LoadJobData(o, true, false));
  EXPECT_EQ(worker.train.size(), 225);
  EXPECT_EQ(worker.test.size(), 0);
  ASSERT_OK_AND_ASSIGN(JobData evaluator, LoadJobData(o, false, false));
  EXPECT_EQ(evaluator.train.size(), 0);
  ASSERT_EQ(evaluator.test.size(), 75);
  EXPECT_EQ(evaluator.test_name, "validation fold 1 of 4");
  // The fold is samples 1, 5, 9, ... of the training set.
  for (int64_t k = 0; k < evaluator.test.size(); ++k) {
    EXPECT_EQ(evaluator.test.labels[k], full.train.labels[4 * k + 1]);
    EXPECT_EQ(evaluator.test.row(k)[0], full.train.row(4 * k + 1)[0]);
  }
  ASSERT_OK_AND_ASSIGN(JobData local, LoadJobData(o, true, true));
  EXPECT_EQ(local.train.size(), 225);
  EXPECT_EQ(local.test.labels, evaluator.test.labels);
  EXPECT_EQ(local.test.features, evaluator.test.features);
  // Without folds the evaluator's data is the test set.
  ASSERT_OK_AND_ASSIGN(JobData plain, LoadJobData(Synthetic(), false, false));
  EXPECT_EQ(plain.test_name, "test set");
  EXPECT_EQ(plain.test.size(), 100);
}

TEST(LoadJobData, BadFoldsAreRefused) {
  DataSourceOptions o = Synthetic();
  o.folds = 1;
  o.fold = 0;
  EXPECT_EQ(LoadJobData(o, true, false).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.folds = 0;  // --fold without --folds
  EXPECT_EQ(LoadJobData(o, false, false).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.folds = 400;  // more folds than the 300 samples
  o.fold = 0;
  absl::StatusOr<JobData> d = LoadJobData(o, false, false);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("at least 400 training samples"),
            std::string::npos)
      << d.status();
}

TEST(LoadJobData, NamesTheMissingFlag) {
  auto message = [](const DataSourceOptions& o, bool worker) {
    absl::StatusOr<JobData> d = LoadJobData(o, worker, false);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(d.status().message());
  };
  DataSourceOptions o;
  o.dataset = "idx";
  EXPECT_NE(message(o, true).find("--data_path"), std::string::npos);
  o.dataset = "csv";
  EXPECT_NE(message(o, true).find("--data_path"), std::string::npos);
  EXPECT_NE(message(o, false).find("--test_path"), std::string::npos);
  o.dataset = "parquet";
  EXPECT_NE(message(o, true).find("--dataset"), std::string::npos);
  o = Synthetic();
  o.synthetic_classes = 1;
  EXPECT_NE(message(o, true).find("classes"), std::string::npos);
}

}  // namespace
}  // namespace pskit::worker
