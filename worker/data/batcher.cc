#include "worker/data/batcher.h"

#include <algorithm>
#include <numeric>
#include <random>

namespace pskit::worker {

Batcher::Batcher(const Dataset& data, int64_t begin, int64_t end, int batch,
                 uint64_t seed, bool prefetch)
    : data_(data),
      begin_(begin),
      end_(end),
      batch_(batch),
      seed_(seed),
      prefetch_(prefetch),
      order_(end - begin),
      next_(order_.size()) {
  std::iota(order_.begin(), order_.end(), begin_);
  for (Batch& b : slots_) {
    b.x.resize(static_cast<size_t>(batch) * data.feature_dim);
    b.y.resize(batch);
  }
  if (prefetch_) thread_ = std::thread([this] { Fill(); });
}

Batcher::~Batcher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Batcher::Assemble(Batch* out) {
  if (next_ + batch_ > order_.size()) {  // a new epoch, reshuffled
    ++epoch_;
    std::mt19937_64 rng(seed_ * 1000003 + epoch_);
    std::shuffle(order_.begin(), order_.end(), rng);
    next_ = 0;
  }
  const int dim = data_.feature_dim;
  out->epoch = epoch_;
  for (int r = 0; r < batch_; ++r) {
    const int64_t idx = order_[next_ + r];
    std::copy(data_.row(idx), data_.row(idx) + dim,
              out->x.begin() + static_cast<size_t>(r) * dim);
    out->y[r] = data_.labels[idx];
  }
  next_ += batch_;
}

const Batch& Batcher::Next() {
  if (!prefetch_) {
    Assemble(&slots_[0]);
    return slots_[0];
  }
  absl::MutexLock lock(&mu_);
  int want = 0;
  if (consumer_slot_ >= 0) {
    ready_[consumer_slot_] = false;  // hand the old slot back
    want = 1 - consumer_slot_;
  }
  mu_.Await(absl::Condition(&ready_[want]));
  consumer_slot_ = want;
  return slots_[want];
}

void Batcher::Fill() {
  for (int slot = 0;; slot = 1 - slot) {
    {
      absl::MutexLock lock(&mu_);
      auto free_or_stop = [this, slot]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !ready_[slot];
      };
      mu_.Await(absl::Condition(&free_or_stop));
      if (stop_) return;
    }
    // The slot is this thread's alone until it is marked ready.
    Assemble(&slots_[slot]);
    absl::MutexLock lock(&mu_);
    ready_[slot] = true;
  }
}

}  // namespace pskit::worker
