// SSP and sync (server/consistency.h) with real ps-server and ps-worker
// processes: the bound holds, sync applies once per round and drops
// stragglers with backup workers, a killed worker holds nobody forever;
// and, in process, a held call cancelled by its deadline or a shutdown is
// answered.
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "common/http_get.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/testing/child_server.h"
#include "tests/testing/status_matchers.h"

namespace pskit {
namespace {

using testing::ChildServer;

// A ps-server with a 2 s lease and a metrics endpoint.
struct Shard {
  Shard()
      : process({"--listen", "127.0.0.1:0", "--log_level", "warn",
                 "--lease_s", "2", "--metrics_port", "0"}) {
    const std::string line = process.ReadLine();
    const char* key = "metrics on http://127.0.0.1:";
    const size_t at = line.find(key);
    metrics_port = at == std::string::npos
                       ? 0
                       : std::atoi(line.c_str() + at + std::strlen(key));
  }
  double Sample(const std::string& name,
                const std::vector<std::string>& labels = {}) {
    absl::StatusOr<std::string> text =
        HttpGet("127.0.0.1", metrics_port, "/metrics", absl::Seconds(10));
    if (!text.ok()) return -1;
    absl::StatusOr<double> v = FindSample(*text, name, labels);
    return v.ok() ? *v : -1;
  }
  // The largest chunk version of namespace "default".
  uint64_t MaxVersion() {
    ClientOptions o;
    o.timeout = absl::Seconds(10);
    auto client = Client::Connect({process.address()}, o);
    if (!client.ok()) return 0;
    auto status = (*client)->Status();
    if (!status.ok()) return 0;
    uint64_t v = 0;
    for (const auto& ns : (*status)[0].namespaces()) {
      for (const auto& t : ns.tensors()) v = std::max(v, t.max_version());
    }
    return v;
  }
  ChildServer process;
  int metrics_port = 0;
};

std::unique_ptr<ChildServer> StartWorker(const Shard& shard, int rank,
                                         int world,
                                         const std::string& consistency,
                                         int epochs,
                                         const std::string& log_s = "100",
                                         double max_seconds = 0,
                                         const std::string& overlap =
                                             "--overlap=false") {
  return std::make_unique<ChildServer>(
      "ps-worker",
      std::vector<std::string>{overlap,
          "--shards", shard.process.address(), "--rank", std::to_string(rank),
          "--world", std::to_string(world), "--consistency", consistency,
          "--epochs", std::to_string(epochs), "--synthetic_train", "12000",
          "--optimizer", "sgd", "--lr", "0.05", "--log_interval_s", log_s,
          "--max_seconds", absl::StrCat(max_seconds),
          // Held calls wait at most a lease (2 s) for a dead worker.
          "--timeout_s", "20"},
      /*merge_stderr=*/true);
}

// Workers that train for `seconds` each (more epochs than they can do):
// they overlap for most of their run however late each process starts (an
// epoch of this data takes well under a second, so epoch-bound workers
// started one after another may barely meet).
constexpr double kTimedSeconds = 3;
constexpr int kManyEpochs = 100000;

// Reads the worker's output to its end; its steps (from the summary) and
// exit status.
struct Finished {
  int64_t steps = -1;
  int exit = -1;
};
Finished Finish(ChildServer* w) {
  Finished f;
  for (std::string line = w->first_line(); !line.empty();
       line = w->ReadLine()) {
    const size_t at = line.find("worker summary: rank ");
    if (at == std::string::npos) continue;
    const size_t colon = line.find(": ", at + 16);
    if (colon != std::string::npos) f.steps = std::atoll(line.c_str() + colon + 2);
  }
  f.exit = w->StopWith(0);
  return f;
}

// Under ssp:S with N workers, a gradient's chunk moves on at most
// (N-1)(2S+1) versions between its pull and its push: each other worker
// pushes at most 2S+1 times meanwhile (it may start S behind and end one
// push past S ahead, then waits).
TEST(Consistency, SspKeepsStalenessWithinItsBoundAndTrains) {
  for (const auto& [s, bucket] :
       {std::pair<int, const char*>{0, "2"}, {2, "16"}}) {
    SCOPED_TRACE(absl::StrCat("ssp:", s));
    Shard shard;
    ASSERT_GT(shard.metrics_port, 0);
    std::vector<std::unique_ptr<ChildServer>> workers;
    for (int r = 0; r < 3; ++r) {
      workers.push_back(StartWorker(shard, r, 3, absl::StrCat("ssp:", s), 2));
    }
    for (auto& w : workers) {
      Finished f = Finish(w.get());
      EXPECT_EQ(f.exit, 0);
      EXPECT_GT(f.steps, 0);
    }
    const double all = shard.Sample("pskit_server_staleness_updates_count");
    const double within = shard.Sample("pskit_server_staleness_updates_bucket",
                                       {absl::StrCat("le=\"", bucket, "\"")});
    EXPECT_GT(all, 0);
    EXPECT_EQ(within, all) << "some gradient was staler than ssp:" << s
                           << " allows";
    EXPECT_GT(shard.Sample("pskit_server_held_seconds_count",
                           {"consistency=\"ssp\""}),
              0);
    EXPECT_EQ(shard.Sample("pskit_server_held_calls"), 0);
  }
}

// Sync with 2 workers: each round applies the mean once, so the versions
// count rounds, about one worker's steps (async would apply both workers'
// pushes: twice that). Staleness is 0 for every applied gradient.
TEST(Consistency, SyncAppliesOnceARound) {
  // With downpour's overlap too: a worker's next gradient computes while
  // its round is held, and each round still takes one push per worker.
  for (const char* overlap : {"--overlap=false", "--overlap=true"}) {
    SCOPED_TRACE(overlap);
    Shard shard;
    std::vector<std::unique_ptr<ChildServer>> workers;
    for (int r = 0; r < 2; ++r) {
      workers.push_back(
          StartWorker(shard, r, 2, "sync", kManyEpochs, "100", kTimedSeconds,
                      overlap));
    }
    int64_t steps = 0, total = 0;
    for (auto& w : workers) {
      Finished f = Finish(w.get());
      EXPECT_EQ(f.exit, 0);
      steps = std::max(steps, f.steps);
      total += f.steps;
    }
    ASSERT_GT(steps, 10);
    const uint64_t version = shard.MaxVersion();
    EXPECT_GE(version, static_cast<uint64_t>(steps));
    // Async applies every step of both workers (version == total). Sync
    // applies one update a round: while both train, their gradients share
    // rounds; only the steps a worker took alone (before the other's first
    // pull, after the other stopped) are rounds of one. How many those are
    // depends on how late the second process started (seconds on a loaded
    // machine), so the bound only says that rounds were shared.
    EXPECT_LT(version, static_cast<uint64_t>(total))
        << "sync applied more than once a round";
    EXPECT_EQ(shard.Sample("pskit_server_staleness_updates_sum"), 0);
    EXPECT_GT(shard.Sample("pskit_server_held_seconds_count",
                           {"consistency=\"sync\""}),
              0);
  }
}

// sync:1 with 3 workers: each round applies once 2 have pushed; the third's
// gradient, computed on the version before, is dropped and counted, and
// everyone finishes.
TEST(Consistency, SyncWithABackupWorkerDropsStragglers) {
  Shard shard;
  std::vector<std::unique_ptr<ChildServer>> workers;
  for (int r = 0; r < 3; ++r) {
    workers.push_back(
        StartWorker(shard, r, 3, "sync:1", kManyEpochs, "100", kTimedSeconds));
  }
  for (auto& w : workers) EXPECT_EQ(Finish(w.get()).exit, 0);
  EXPECT_GT(shard.Sample("pskit_server_late_gradients_dropped_total"), 0);
}

// A worker SIGKILLed mid-training under ssp:0 and under sync: its lease
// lapses (2 s) and the others, held for it meanwhile, are released and
// finish (their calls' deadline, 20 s, would fail them otherwise).
TEST(Consistency, AKilledWorkerHoldsNobodyForever) {
  for (const auto& [consistency, overlap] :
       std::vector<std::pair<const char*, const char*>>{
           {"ssp:0", "--overlap=false"},
           {"sync", "--overlap=false"},
           {"sync", "--overlap=true"}}) {
    SCOPED_TRACE(absl::StrCat(consistency, " ", overlap));
    Shard shard;
    std::vector<std::unique_ptr<ChildServer>> workers;
    for (int r = 0; r < 2; ++r) {
      workers.push_back(
          StartWorker(shard, r, 3, consistency, 6, "100", 0, overlap));
    }
    auto victim =
        StartWorker(shard, 2, 3, consistency, 1000, "0.1", 0, overlap);
    // Wait for a progress line: the victim is a member, training.
    std::string line = victim->first_line();
    while (!line.empty() && line.find("samples/s") == std::string::npos) {
      line = victim->ReadLine();
    }
    ASSERT_FALSE(line.empty()) << "the victim ended before training";
    EXPECT_EQ(victim->StopWith(SIGKILL), -1);
    for (auto& w : workers) EXPECT_EQ(Finish(w.get()).exit, 0);
    EXPECT_EQ(shard.Sample("pskit_server_held_calls"), 0);
  }
}

// Bad settings stop ps-worker before it touches a shard, naming the flag.
TEST(Consistency, PsWorkerRefusesBackupWorkersNotBelowWorldAndNegativeBounds) {
  for (const auto& [consistency, says] :
       {std::pair<const char*, const char*>{"sync:2", "--world (2)"},
        {"ssp:-1", "--consistency"}}) {
    ChildServer worker("ps-worker",
                       {"--shards", "127.0.0.1:1", "--rank", "0", "--world",
                        "2", "--consistency", consistency},
                       /*merge_stderr=*/true);
    std::string all;
    for (std::string line = worker.first_line(); !line.empty();
         line = worker.ReadLine()) {
      all += line + "\n";
    }
    EXPECT_NE(worker.StopWith(0), 0) << consistency;
    EXPECT_NE(all.find(says), std::string::npos) << all;
  }
}

// In process: a held call whose client deadline passes is answered and
// removed, the shard goes on; a shutdown answers the held calls.
TEST(Consistency, CancelledAndShutdownHeldCallsAreAnswered) {
  ServerOptions so;
  ASSERT_OK_AND_ASSIGN(auto server, Server::Start(so));
  ClientOptions co;
  co.timeout = absl::Seconds(1);
  ASSERT_OK_AND_ASSIGN(auto a, Client::Connect({server->address()}, co));
  co.timeout = absl::Seconds(3);
  ASSERT_OK_AND_ASSIGN(auto b, Client::Connect({server->address()}, co));
  ASSERT_OK(a->RegisterWorker("a").status());
  ASSERT_OK(b->RegisterWorker("b").status());
  v1::NamespaceConfig config;
  config.mutable_optimizer()->set_kind(v1::OPTIMIZER_SGD);
  config.mutable_optimizer()->set_learning_rate(0.1f);
  config.set_consistency(v1::CONSISTENCY_SSP);
  config.mutable_staleness()->set_ssp_bound(0);
  TensorDecl decl;
  decl.spec.set_name("w");
  decl.spec.add_shape(4);
  decl.spec.mutable_init()->set_kind(v1::INIT_ZEROS);
  ASSERT_OK(a->Declare("s", config, {decl}));
  std::vector<float> wa(4), wb(4), g(4, 1.0f);
  const TensorBuffer buf_a[] = {{"w", absl::MakeSpan(wa)}};
  const TensorBuffer buf_b[] = {{"w", absl::MakeSpan(wb)}};
  const ConstTensorBuffer grad[] = {{"w", absl::MakeConstSpan(g)}};
  ASSERT_OK(a->Pull("s", buf_a));  // both members, clocks 0
  ASSERT_OK(b->Pull("s", buf_b));
  // a pushes (clock 1 > 0 + 0): its values wait for b, past a's deadline.
  absl::StatusOr<PushResult> held = a->PushPull("s", grad, buf_a);
  EXPECT_EQ(held.status().code(), absl::StatusCode::kDeadlineExceeded)
      << held.status();
  // b catches up without waiting; nothing stays parked.
  ASSERT_OK(b->PushPull("s", grad, buf_b).status());
  EXPECT_EQ(server->consistency().held(), 0u);
  // b pushes again (clock 2 > a's 1): parked, until the shutdown answers
  // it (b's client then retries the dead shard until its deadline).
  absl::Notification done;
  absl::Status parked_status;
  std::thread t([&] {
    parked_status = b->PushPull("s", grad, buf_b).status();
    done.Notify();
  });
  for (int i = 0; i < 200 && server->consistency().held() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(server->consistency().held(), 1u);
  // gRPC's Shutdown waits for calls in flight up to its grace: an hour,
  // so a held call that nobody answered would hang the test.
  server->Shutdown(absl::Hours(1));
  EXPECT_EQ(server->consistency().held(), 0u);
  done.WaitForNotification();
  t.join();
  EXPECT_FALSE(parked_status.ok()) << "the held call was answered OK";
}

}  // namespace
}  // namespace pskit
