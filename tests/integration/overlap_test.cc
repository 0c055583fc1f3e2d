// Downpour's overlap of communication with compute, with real ps-server and
// ps-worker processes: a 2-worker job with the overlap (the default) and one
// with --overlap=false both train until the evaluator ends them at its
// target, and their Chrome traces show the exchanges running beside the
// next step's compute only with the overlap.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/child_server.h"
#include "tests/testing/cluster.h"

namespace pskit {
namespace {

using testing::ChildServer;

struct Span {
  std::string name;
  long long start = 0;
  long long end = 0;
  int track = 0;
};

// The spans of a trace file written by ps-worker --trace_file.
std::vector<Span> ReadTrace(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  const std::string all = text.str();
  static const std::regex kSpan(
      R"re(\{"name":"([a-z_]+)".*?"ts":(\d+),"dur":(\d+),"pid":\d+,"tid":(\d+)\})re");
  std::vector<Span> spans;
  for (auto it = std::sregex_iterator(all.begin(), all.end(), kSpan);
       it != std::sregex_iterator(); ++it) {
    Span s;
    s.name = (*it)[1];
    s.start = std::stoll((*it)[2]);
    s.end = s.start + std::stoll((*it)[3]);
    s.track = std::stoi((*it)[4]);
    spans.push_back(s);
  }
  return spans;
}

// How many exchange spans (pushpull, push, pull) run during a compute span.
int ExchangesBesideCompute(const std::vector<Span>& spans) {
  std::vector<const Span*> compute;
  for (const Span& s : spans) {
    if (s.name == "compute") compute.push_back(&s);
  }
  int n = 0;
  for (const Span& s : spans) {
    if (s.name != "pushpull" && s.name != "push" && s.name != "pull") continue;
    n += std::any_of(compute.begin(), compute.end(), [&](const Span* c) {
      return c->start < s.end && s.start < c->end;
    });
  }
  return n;
}

struct WorkerRun {
  int exit = -1;
  std::string summary;
  std::string output;
};

WorkerRun Finish(ChildServer* child) {
  WorkerRun r;
  for (std::string line = child->first_line(); !line.empty();
       line = child->ReadLine()) {
    r.output += line + "\n";
    if (line.find("worker summary:") != std::string::npos) r.summary = line;
  }
  r.exit = child->StopWith(0);
  return r;
}

// One shard, two downpour workers and an evaluator (target 0.85 on the
// synthetic teacher set), the workers given `overlap_flag`; returns the
// spans of each worker's trace after checking that everyone ended well.
std::vector<std::vector<Span>> TrainToTarget(const std::string& overlap_flag) {
  testing::TempDir dir;
  ChildServer shard({"--listen", "127.0.0.1:0", "--log_level", "warn"});
  const std::string address = shard.address();
  EXPECT_FALSE(address.empty()) << shard.first_line();
  const std::vector<std::string> common = {
      "--shards", address, "--synthetic_train", "20000", "--synthetic_test",
      "2000", "--synthetic_dim", "16", "--synthetic_classes", "4",
      "--layers", "16,64,4", "--optimizer", "adam", "--lr", "0.003", "--log_interval_s",
      "100", "--max_seconds", "60", "--timeout_s", "30"};
  std::vector<std::unique_ptr<ChildServer>> workers;
  for (int r = 0; r < 2; ++r) {
    std::vector<std::string> args = common;
    for (const std::string& a :
         {std::string("--rank"), std::to_string(r), std::string("--world"),
          std::string("2"), std::string("--epochs"), std::string("1000"),
          std::string("--trace_file"),
          dir.path() + "/w" + std::to_string(r) + ".json", overlap_flag}) {
      args.push_back(a);
    }
    workers.push_back(std::make_unique<ChildServer>("ps-worker", args,
                                                    /*merge_stderr=*/true));
  }
  std::vector<std::string> eval_args = common;
  for (const char* a : {"--role", "evaluator", "--target_accuracy", "0.85",
                        "--eval_interval_s", "0.2"}) {
    eval_args.push_back(a);
  }
  ChildServer evaluator("ps-worker", eval_args, /*merge_stderr=*/true);
  std::string eval_out;
  for (std::string line = evaluator.first_line(); !line.empty();
       line = evaluator.ReadLine()) {
    eval_out += line + "\n";
  }
  EXPECT_EQ(evaluator.StopWith(0), 0) << eval_out;  // 0: target reached
  std::vector<std::vector<Span>> traces;
  for (int r = 0; r < 2; ++r) {
    WorkerRun w = Finish(workers[r].get());
    EXPECT_EQ(w.exit, 0) << w.output;
    EXPECT_NE(w.summary.find("ended by the evaluator"), std::string::npos)
        << w.output;
    traces.push_back(ReadTrace(dir.path() + "/w" + std::to_string(r) + ".json"));
  }
  EXPECT_EQ(shard.StopWith(SIGTERM), 0);
  return traces;
}

TEST(DownpourOverlap, TwoOverlappedWorkersReachTheTargetExchangingBesideCompute) {
  for (const std::vector<Span>& spans : TrainToTarget("--overlap=true")) {
    ASSERT_FALSE(spans.empty());
    int on_comm_track = 0;
    for (const Span& s : spans) on_comm_track += s.track == 1;
    EXPECT_GT(on_comm_track, 0);
    // Every exchange starts after one step's compute and runs while the
    // next one computes; at least some must be seen doing so.
    EXPECT_GT(ExchangesBesideCompute(spans), 0);
  }
}

TEST(DownpourOverlap, WithoutOverlapWorkersReachTheTargetExchangingInTurn) {
  for (const std::vector<Span>& spans : TrainToTarget("--overlap=false")) {
    ASSERT_FALSE(spans.empty());
    for (const Span& s : spans) EXPECT_EQ(s.track, 0) << s.name;
    EXPECT_EQ(ExchangesBesideCompute(spans), 0);
  }
}

}  // namespace
}  // namespace pskit
