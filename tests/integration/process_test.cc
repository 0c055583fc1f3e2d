// ps-server and ps-worker as child processes: the address line on stdout,
// the --address_file, real traffic, SIGTERM ending each with exit status 0,
// and ps-worker's k-fold flags (--folds, --fold).
#include <signal.h>

#include <fstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/testing/child_server.h"
#include "tests/testing/cluster.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::ChildServer;

TEST(PsServerProcess, PrintsAddressServesAndExitsZeroOnSigterm) {
  ChildServer server({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  const std::string address = server.address();
  ASSERT_FALSE(address.empty()) << "first line: " << server.first_line();
  ASSERT_NE(address.substr(address.rfind(':') + 1), "0");

  ClientOptions opts;
  opts.timeout = absl::Seconds(20);
  ASSERT_OK_AND_ASSIGN(auto client, Client::Connect({address}, opts));
  ASSERT_OK(client->Declare("", testing::SgdConfig(1.0f),
                            {testing::ZerosTensor("w", 1000)}));
  std::vector<float> g(1000, 2.0f), w(1000);
  ASSERT_OK(client->PushPull("", {{"w", g}}, {{"w", absl::MakeSpan(w)}}));
  EXPECT_EQ(w[999], -2.0f);

  EXPECT_EQ(server.StopWith(SIGTERM), 0);
}

// --address_file: once serving, the file holds the address to dial (the
// listen host, or --advertise_host) and a newline; a client reaches the
// shard through it. A missing directory stops ps-server before it serves.
TEST(PsServerProcess, WritesItsAddressFile) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/shard0";
  ChildServer server({"--listen", "127.0.0.1:0", "--address_file", path,
                      "--log_level", "warn"});
  const std::string address = server.address();
  ASSERT_FALSE(address.empty()) << server.first_line();
  // ps-server writes the file before it prints the address line.
  std::string line;
  std::getline(std::ifstream(path), line);
  EXPECT_EQ(line, address);
  ClientOptions opts;
  opts.timeout = absl::Seconds(20);
  ASSERT_OK_AND_ASSIGN(auto client, Client::Connect({line}, opts));
  ASSERT_OK(client->Declare("", testing::SgdConfig(1.0f),
                            {testing::ZerosTensor("w", 10)}));
  EXPECT_EQ(server.StopWith(SIGTERM), 0);

  // --advertise_host replaces the listen host; "localhost" is dialled too.
  ChildServer advertised({"--listen", "127.0.0.1:0", "--address_file", path,
                          "--advertise_host", "localhost", "--log_level",
                          "warn"});
  const std::string port =
      advertised.address().substr(advertised.address().rfind(':') + 1);
  ASSERT_FALSE(port.empty()) << advertised.first_line();
  std::getline(std::ifstream(path), line);
  EXPECT_EQ(line, "localhost:" + port);
  ASSERT_OK_AND_ASSIGN(client, Client::Connect({line}, opts));
  ASSERT_OK(client->Declare("", testing::SgdConfig(1.0f),
                            {testing::ZerosTensor("w", 10)}));
  EXPECT_EQ(advertised.StopWith(SIGTERM), 0);

  ChildServer missing({"--listen", "127.0.0.1:0", "--address_file",
                       dir.path() + "/no/such/dir/shard0"});
  EXPECT_TRUE(missing.address().empty());
  EXPECT_EQ(missing.StopWith(0), 2);
}

TEST(PsServerProcess, SigintAlsoExitsZero) {
  ChildServer server({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  ASSERT_FALSE(server.address().empty()) << server.first_line();
  EXPECT_EQ(server.StopWith(SIGINT), 0);
}

TEST(PsServerProcess, BadFlagExitsNonZeroWithAMessage) {
  ChildServer server({"--shard_index", "4", "--num_shards", "2"});
  EXPECT_TRUE(server.address().empty());
  EXPECT_EQ(server.StopWith(0), 1);
}

// A shard name that never resolves (*.invalid, RFC 6761): the worker's first
// contact asks again until --timeout_s, saying which name it waits for, and
// then fails (exit 1) naming it.
TEST(PsWorkerProcess, WaitsForAShardNameUntilTheTimeoutThenNamesIt) {
  ChildServer worker("ps-worker",
                     {"--shards", "pskit-shard.invalid:7000", "--timeout_s",
                      "3", "--log_level", "info"},
                     /*merge_stderr=*/true);
  std::string all = worker.first_line() + "\n";
  for (std::string line = worker.ReadLine(); !line.empty();
       line = worker.ReadLine()) {
    all += line + "\n";
  }
  EXPECT_EQ(worker.StopWith(0), 1) << all;
  EXPECT_NE(all.find("pskit-shard.invalid:7000"), std::string::npos) << all;
  // Where DNS answers (here it does), gRPC says the name has no address:
  // then the wait is logged and the failure says so. Without any DNS
  // server the lookup itself runs into the deadline ("could not connect").
  if (all.find("DNS resolution failed") != std::string::npos) {
    EXPECT_NE(all.find("waiting for shard pskit-shard.invalid:7000: the name "
                       "does not resolve yet"),
              std::string::npos)
        << all;
    EXPECT_NE(all.find("the name 'pskit-shard.invalid' of shard 0 "
                       "(pskit-shard.invalid:7000) did not resolve within 3s"),
              std::string::npos)
        << all;
  }
}

// The evaluator's exit status is its verdict: 0 when its --target_accuracy
// was reached, 3 when the job ended without it (here its time limit), so
// compose's --exit-code-from, a Kubernetes Job and a SLURM step see it.
TEST(PsWorkerProcess, EvaluatorExitsZeroAtItsTargetAndThreeWithout) {
  ChildServer server({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  const std::string address = server.address();
  ASSERT_FALSE(address.empty()) << server.first_line();
  for (const auto& [target, ns, code, words] :
       std::vector<std::tuple<std::string, std::string, int, std::string>>{
           {"0.9999", "missed", 3, "target not reached"},
           {"0.01", "reached", 0, "target reached after"}}) {
    ChildServer evaluator(
        "ps-worker",
        {"--shards", address, "--namespace", ns, "--role", "evaluator",
         "--target_accuracy", target, "--eval_interval_s", "0.2",
         "--max_seconds", "2", "--log_level", "warn"},
        /*merge_stderr=*/true);
    std::string all = evaluator.first_line() + "\n";
    for (std::string line = evaluator.ReadLine(); !line.empty();
         line = evaluator.ReadLine()) {
      all += line + "\n";
    }
    EXPECT_EQ(evaluator.StopWith(0), code) << all;
    EXPECT_NE(all.find(words), std::string::npos) << all;
  }
  EXPECT_EQ(server.StopWith(SIGTERM), 0);
}

// All of a ChildServer's output lines (after the first).
std::string ReadAll(ChildServer& child) {
  std::string all = child.first_line() + "\n";
  for (std::string line = child.ReadLine(); !line.empty();
       line = child.ReadLine()) {
    all += line + "\n";
  }
  return all;
}

// A small synthetic job as ps-worker flags: 1,000 training samples.
std::vector<std::string> SmallSyntheticJob(std::vector<std::string> more) {
  std::vector<std::string> args = {
      "--dataset", "synthetic", "--synthetic_train", "1000",
      "--synthetic_test", "300", "--synthetic_dim", "8",
      "--synthetic_classes", "3", "--layers", "8,16,3",
      "--backend", "cpu", "--log_level", "info"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// k-fold cross-validation: the evaluator with --folds 4 --fold 1 scores fold
// 1 of the training set (250 of its 1,000 samples; the test set has 300),
// says so in its lines, and reports that many samples to the shards.
TEST(PsWorkerProcess, FoldsTheEvaluatorScoresTheValidationFold) {
  ChildServer server({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  const std::string address = server.address();
  ASSERT_FALSE(address.empty()) << server.first_line();
  ChildServer evaluator(
      "ps-worker",
      SmallSyntheticJob({"--shards", address, "--namespace", "fold1",
                         "--role", "evaluator", "--folds", "4", "--fold", "1",
                         "--eval_interval_s", "0.2", "--max_seconds", "1"}),
      /*merge_stderr=*/true);
  const std::string all = ReadAll(evaluator);
  EXPECT_EQ(evaluator.StopWith(0), 0) << all;
  EXPECT_NE(all.find("eval: scoring validation fold 1 of 4 (250 samples)"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find(") on validation fold 1 of 4"), std::string::npos) << all;
  EXPECT_NE(all.find("; scored on validation fold 1 of 4"), std::string::npos)
      << all;

  ClientOptions opts;
  opts.timeout = absl::Seconds(20);
  ASSERT_OK_AND_ASSIGN(auto client, Client::Connect({address}, opts));
  ASSERT_OK_AND_ASSIGN(auto status, client->Status());
  bool found = false;
  for (const auto& ns : status[0].namespaces()) {
    if (ns.name() != "fold1") continue;
    found = true;
    EXPECT_EQ(ns.last_evaluation().samples(), 250u);
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(server.StopWith(SIGTERM), 0);
}

// --algorithm local with folds trains on the other folds (600 of 900) and
// scores itself on the fold.
TEST(PsWorkerProcess, FoldsTheLocalBaselineValidatesOnTheFold) {
  std::vector<std::string> args = SmallSyntheticJob(
      {"--algorithm", "local", "--synthetic_train", "900", "--folds", "3",
       "--fold", "2", "--epochs", "100000", "--max_seconds", "1",
       "--eval_interval_s", "0.2"});
  ChildServer local("ps-worker", args, /*merge_stderr=*/true);
  const std::string all = ReadAll(local);
  EXPECT_EQ(local.StopWith(0), 0) << all;
  EXPECT_NE(all.find("local on 600 samples (all but validation fold 2 of 3)"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find(" s validation fold 2 of 3 accuracy "), std::string::npos)
      << all;
}

// Bad folds are a usage error (exit 2) saying what to give.
TEST(PsWorkerProcess, BadFoldsExitTwoWithAReason) {
  for (const auto& [more, says] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--folds", "1", "--fold", "0"}, "--folds must be at least 2"},
           {{"--fold", "3"}, "--fold 3 needs --folds K"},
           {{"--folds", "5"}, "needs --fold i"},
           {{"--folds", "5", "--fold", "5"}, "--fold must be in [0, 5)"},
           {{"--folds", "2000", "--fold", "0"},
            "needs at least 2000 training samples"}}) {
    std::vector<std::string> args = SmallSyntheticJob(
        {"--algorithm", "local", "--epochs", "1"});
    args.insert(args.end(), more.begin(), more.end());
    ChildServer worker("ps-worker", args, /*merge_stderr=*/true);
    const std::string all = ReadAll(worker);
    EXPECT_EQ(worker.StopWith(0), 2) << all;
    EXPECT_NE(all.find(says), std::string::npos) << says << "\n" << all;
  }
}

// SIGTERM to a training ps-worker: it finishes the step in hand, leaves the
// shards (its lease is gone at once, not after it lapses), prints its
// summary and exits 0.
TEST(PsWorkerProcess, SigtermLeavesAndExitsZeroWithASummary) {
  ChildServer server({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  const std::string address = server.address();
  ASSERT_FALSE(address.empty()) << server.first_line();
  ChildServer worker("ps-worker",
                     {"--shards", address, "--epochs", "1000000",
                      "--log_interval_s", "0.1"},
                     /*merge_stderr=*/true);
  // Wait for a progress line: training is under way.
  std::string line = worker.first_line();
  while (!line.empty() && line.find("samples/s loss") == std::string::npos) {
    line = worker.ReadLine();
  }
  ASSERT_FALSE(line.empty()) << "the worker ended before training";
  EXPECT_EQ(worker.StopWith(SIGTERM), 0);
  std::string summary;
  for (line = worker.ReadLine(); !line.empty(); line = worker.ReadLine()) {
    if (line.rfind("worker summary:", 0) == 0) summary = line;
  }
  EXPECT_NE(summary.find("stopped by a signal"), std::string::npos) << summary;

  ClientOptions opts;
  opts.timeout = absl::Seconds(20);
  ASSERT_OK_AND_ASSIGN(auto client, Client::Connect({address}, opts));
  ASSERT_OK_AND_ASSIGN(auto status, client->Status());
  EXPECT_EQ(status[0].live_workers(), 0u);
  EXPECT_EQ(server.StopWith(SIGTERM), 0);
}

// With its shard gone, a worker's call retries until --timeout_s; SIGTERM
// then ends it after the grace period instead of that deadline, exit 143.
TEST(PsWorkerProcess, SigtermWhileRetryingADeadShardEndsAfterTheGrace) {
  ChildServer server({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  const std::string address = server.address();
  ASSERT_FALSE(address.empty()) << server.first_line();
  ChildServer worker("ps-worker",
                     {"--shards", address, "--epochs", "1000000",
                      "--log_interval_s", "0.1", "--timeout_s", "600"},
                     /*merge_stderr=*/true);
  std::string line = worker.first_line();
  while (!line.empty() && line.find("samples/s loss") == std::string::npos) {
    line = worker.ReadLine();
  }
  ASSERT_FALSE(line.empty()) << "the worker ended before training";
  server.StopWith(SIGKILL);
  absl::SleepFor(absl::Milliseconds(300));  // let it start retrying
  EXPECT_EQ(worker.StopWith(SIGTERM), 143);
  std::string all;
  for (line = worker.ReadLine(); !line.empty(); line = worker.ReadLine()) {
    all += line + "\n";
  }
  EXPECT_NE(all.find("exiting now"), std::string::npos) << all;
}

}  // namespace
}  // namespace pskit
