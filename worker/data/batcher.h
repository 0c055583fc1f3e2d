// worker/data/batcher.h
//
// Batcher: the batches of one rank's slice of a Dataset, reshuffled every
// epoch from a seed, assembled by a prefetch thread while the caller trains
// on the previous batch (double buffering), so a step never waits for its
// data to be gathered.
//
// Example:
//   Batcher batches(train, begin, end, 64, seed);
//   for (;;) {
//     const Batch& b = batches.Next();
//     if (b.epoch >= epochs) break;
//     ... b.x, b.y ...
//   }
//
// Thread safety: Next() from one thread. The prefetch thread is owned and
// joined by the destructor.
#ifndef PSKIT_WORKER_DATA_BATCHER_H_
#define PSKIT_WORKER_DATA_BATCHER_H_

#include <cstdint>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "worker/data/dataset.h"

namespace pskit::worker {

struct Batch {
  int epoch = 0;
  std::vector<float> x;    // batch rows of feature_dim
  std::vector<int32_t> y;  // batch labels
};

class Batcher {
 public:
  // Batches of `batch` samples from rows [begin, end) of `data` (borrowed;
  // must outlive the Batcher); a last partial batch of an epoch is dropped.
  // With `prefetch` a thread assembles the next batch meanwhile; without,
  // Next() assembles it (same batches, same order).
  // Precondition: end - begin >= batch >= 1.
  Batcher(const Dataset& data, int64_t begin, int64_t end, int batch,
          uint64_t seed, bool prefetch);
  ~Batcher();

  // The next batch; valid until the next call. Epochs follow each other
  // without end: the caller stops.
  const Batch& Next() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // The prefetch thread's loop.
  void Fill() ABSL_LOCKS_EXCLUDED(mu_);
  // Assembles the next batch of the sequence into `out`.
  void Assemble(Batch* out);

  // Constant after construction.
  const Dataset& data_;
  const int64_t begin_;
  const int64_t end_;
  const int batch_;
  const uint64_t seed_;
  const bool prefetch_;

  // The sequence position; touched only by whoever assembles (the prefetch
  // thread, or Next() without one).
  std::vector<int64_t> order_;
  size_t next_ = 0;
  int epoch_ = -1;

  absl::Mutex mu_;
  Batch slots_[2];
  bool ready_[2] ABSL_GUARDED_BY(mu_) = {false, false};
  int consumer_slot_ ABSL_GUARDED_BY(mu_) = -1;  // slot held by the caller
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  std::thread thread_;  // the prefetcher; joined in the destructor
};

}  // namespace pskit::worker

#endif  // PSKIT_WORKER_DATA_BATCHER_H_
