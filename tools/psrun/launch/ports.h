// tools/psrun/launch/ports.h
//
// Choosing psrun's metrics ports: the fixed layout a fixed Prometheus config
// scrapes (deploy/prometheus), with free TCP ports on 127.0.0.1 where a fixed
// one is busy.
//
//   PSKIT_ASSIGN_OR_RETURN(MetricsPorts p,
//                          ChooseMetricsPorts(9400, 2, 2, true));
//   // p.shards {9400, 9401}, p.evaluator 9499, p.workers {9500, 9501}
//
// Thread safety: every function may be called from any thread.
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_PORTS_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_PORTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pskit::launch {

// Whether a TCP socket can bind 127.0.0.1:`port` right now (with
// SO_REUSEADDR, as servers bind). The answer can be stale by the time the
// port is used; a child that then fails to bind says so itself.
bool PortIsFree(int port);

// A port the kernel hands out for 127.0.0.1:0, not in `avoid`.
// UNAVAILABLE if none could be found.
[[nodiscard]] absl::StatusOr<int> PickFreePort(const std::vector<int>& avoid);

// The metrics ports of a local cluster, and what fell back.
struct MetricsPorts {
  std::vector<int> shards;   // shard i
  std::vector<int> workers;  // worker j
  int evaluator = -1;        // -1 without an evaluator
  // One line per port that was busy and replaced by a free one.
  std::vector<std::string> warnings;
};

// Fixed ports from `base` so a fixed Prometheus config finds the cluster:
// shard i at base+i, the evaluator at base+99, worker j at base+100+j. A busy
// port is replaced by a free one (and a warning). `base` 0: free ports for
// all. INVALID_ARGUMENT when the layout does not fit (servers > 99, or a
// port past 65535); UNAVAILABLE when no free port can be found.
// INVALID_ARGUMENT when the fixed layout from `base` does not fit (over 99
// shards, or past port 65535); OK for base 0 (free ports).
[[nodiscard]] absl::Status CheckMetricsPortBase(int base, int servers,
                                                int workers);

[[nodiscard]] absl::StatusOr<MetricsPorts> ChooseMetricsPorts(int base,
                                                              int servers,
                                                              int workers,
                                                              bool evaluator);

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_PORTS_H_
