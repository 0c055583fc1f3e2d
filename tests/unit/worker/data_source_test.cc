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
