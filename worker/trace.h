// worker/trace.h
//
// TraceWriter: a Chrome trace-event file (JSON array of complete "X" events;
// open it in chrome://tracing or ui.perfetto.dev) of a worker's steps: data,
// compute, push, pull, pushpull and exchange spans, one process row per rank.
//
// Example:
//   PSKIT_ASSIGN_OR_RETURN(auto trace, TraceWriter::Open("w0.json", /*rank=*/0));
//   trace->Add("compute", start, absl::Now());
// (The training loop marks phases through PhaseSink, worker/worker_metrics.h,
// which feeds this file and the metrics.)
//
// Thread safety: one thread (the training loop) writes.
#ifndef PSKIT_WORKER_TRACE_H_
#define PSKIT_WORKER_TRACE_H_

#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pskit::worker {

class TraceWriter {
 public:
  // Creates (truncates) `path`. NOT_FOUND / PERMISSION_DENIED style errors
  // as INVALID_ARGUMENT naming the path.
  static absl::StatusOr<std::unique_ptr<TraceWriter>> Open(
      const std::string& path, int rank);
  // Closes the JSON array.
  ~TraceWriter();

  // Records a span [start, end) named `name` on track `track` (the trace's
  // tid): 0 the training thread, 1 the communication thread, whose spans
  // overlap the training thread's.
  void Add(const char* name, absl::Time start, absl::Time end, int track = 0);

 private:
  TraceWriter(FILE* f, int rank) : f_(f), rank_(rank) {}
  FILE* const f_;
  const int rank_;
  bool first_ = true;
};

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_TRACE_H_
