// tools/psrun/launch/monitor.h
//
// Monitor: watches a running local cluster for psrun. Every `interval` it
// asks each shard for pskit.v1.Admin/Status (all at once) and scrapes each
// running worker's Prometheus endpoint, and keeps the latest ClusterSample:
// updates applied and their rate, samples/s, the newest evaluation.
//
//   MonitorOptions o;
//   o.shards = {"127.0.0.1:40001", "127.0.0.1:40002"};
//   o.worker_metrics_ports = {9500, 9501};
//   o.wake_fd = event_fd;  // the launcher poll()s it
//   PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Monitor> m, Monitor::Start(o));
//   m->SetWorkerRunning(0, true);
//   ... ClusterSample s = m->Latest(); ...
//
// Thread safety: Latest, SetWorkerRunning and PollNow may be called
// concurrently; Stop and the destructor by the owner only. The monitor owns
// one thread, joined by Stop() or the destructor. Rounds never overlap:
// PollNow waits for a round in progress.
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_MONITOR_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_MONITOR_H_

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/admin_client.h"
#include "pskit/v1/admin.grpc.pb.h"

namespace pskit::launch {

struct MonitorOptions {
  // The shards' addresses (host:port), in shard order. Required.
  std::vector<std::string> shards;
  // Port of worker j's /metrics endpoint on 127.0.0.1, or -1 for none.
  std::vector<int> worker_metrics_ports;
  // The job's namespace, whose last evaluation is reported; when no shard
  // has it, the newest evaluation of any namespace is. Default: "default".
  std::string ns = "default";
  // Time between rounds once every shard has answered, and before.
  // Default: 1 s and 100 ms (startup waits on the first answer).
  absl::Duration interval = absl::Seconds(1);
  absl::Duration startup_interval = absl::Milliseconds(100);
  // Deadline of each Status call and each scrape. Default: 2 s and 500 ms.
  absl::Duration rpc_timeout = absl::Seconds(2);
  absl::Duration scrape_timeout = absl::Milliseconds(500);
  // When >= 0, an eventfd (or pipe) to which 8 bytes (uint64 1) are written
  // after each round, so a poll() loop wakes up. Borrowed; must stay open
  // until Stop() returns. Default: none.
  int wake_fd = -1;
  // TLS files and token of the Status calls (common/channel.h).
  // Default: plaintext, no token.
  ChannelSecurity security;
};

// What one monitoring round saw.
struct ClusterSample {
  absl::Time time = absl::InfinitePast();
  int64_t round = 0;  // 0: no round finished yet
  // Whether every shard answered Status this round, and, per shard that did
  // not, why ("shard1 127.0.0.1:4000: DEADLINE_EXCEEDED: ...").
  bool all_shards_answered = false;
  bool every_shard_answered_once = false;
  std::vector<std::string> shard_errors;
  // Sum over shards of updates_applied (chunk updates: a push of the whole
  // model counts once per chunk); nullopt unless every shard answered.
  std::optional<uint64_t> updates;
  std::optional<double> updates_per_s;
  // Over the running workers; nullopt when none runs or one of them could
  // not be scraped this round or the last (its endpoint is not up yet, say).
  std::optional<double> samples_per_s;
  // Latest value each worker's counters were seen at (kept after the
  // worker exits); nullopt if never scraped.
  std::vector<std::optional<double>> worker_samples;
  std::vector<std::optional<double>> worker_steps;
  // The newest evaluation any shard holds for the namespace.
  std::optional<v1::Evaluation> last_evaluation;
  uint32_t live_workers = 0;  // the most any shard reports
};

class Monitor {
 public:
  // Opens a channel per shard and starts the monitoring thread, which runs
  // its first round at once. INVALID_ARGUMENT without shards.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Monitor>> Start(
      MonitorOptions options);
  ~Monitor();

  // Ends the thread (a round in progress finishes first). Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // The latest round's sample.
  ClusterSample Latest() const ABSL_LOCKS_EXCLUDED(mu_);

  // Whether worker j is running: only running workers are scraped and
  // count towards samples/s. All start not running.
  void SetWorkerRunning(int j, bool running) ABSL_LOCKS_EXCLUDED(mu_);

  // Runs a round now on the calling thread (after any round in progress)
  // and returns its sample. Blocks up to about rpc_timeout + one scrape
  // timeout per running worker.
  ClusterSample PollNow() ABSL_LOCKS_EXCLUDED(round_mu_, mu_);

  // Takes checkpoint `id` on every shard, waiting at most `timeout`; one
  // result per shard. Blocks the calling thread.
  std::vector<ShardResult<v1::CheckpointResponse>> Checkpoint(
      const std::string& id, absl::Duration timeout);

 private:
  Monitor(MonitorOptions options, const AdminOptions& admin_options,
          std::unique_ptr<AdminClient> admin);
  void Loop() ABSL_LOCKS_EXCLUDED(round_mu_, mu_);
  // One round: Status from every shard, scrapes, rates; publishes the sample.
  ClusterSample Round() ABSL_EXCLUSIVE_LOCKS_REQUIRED(round_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after construction.
  const MonitorOptions options_;
  const AdminOptions admin_options_;  // admin_'s
  const std::unique_ptr<AdminClient> admin_;

  // Protected by round_mu_: what the rates are computed from.
  absl::Mutex round_mu_;
  std::optional<uint64_t> prev_updates_ ABSL_GUARDED_BY(round_mu_);
  absl::Time prev_updates_time_ ABSL_GUARDED_BY(round_mu_);
  std::vector<std::optional<double>> prev_samples_ ABSL_GUARDED_BY(round_mu_);
  std::vector<absl::Time> prev_samples_time_ ABSL_GUARDED_BY(round_mu_);
  bool answered_once_ ABSL_GUARDED_BY(round_mu_) = false;
  int64_t rounds_ ABSL_GUARDED_BY(round_mu_) = 0;

  // Protected by mu_.
  mutable absl::Mutex mu_;
  ClusterSample latest_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> running_ ABSL_GUARDED_BY(mu_);

  absl::Notification stop_;
  std::thread thread_;  // joined by Stop()
};

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_MONITOR_H_
