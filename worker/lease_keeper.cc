// worker/lease_keeper.cc: the heartbeat thread of a training worker.
#include "worker/lease_keeper.h"

#include <utility>

#include "spdlog/spdlog.h"

namespace pskit::worker {

LeaseKeeper::LeaseKeeper(Client* client, std::string ns, absl::Duration period)
    : client_(client),
      ns_(std::move(ns)),
      period_(period),
      thread_([this] { Loop(); }) {}

LeaseKeeper::~LeaseKeeper() {
  stop_.Notify();
  thread_.join();
}

void LeaseKeeper::Loop() {
  while (!stop_.WaitForNotificationWithTimeout(period_)) {
    absl::StatusOr<bool> done = client_->Heartbeat(ns_);
    if (!done.ok()) {
      spdlog::warn("heartbeat: {}", done.status().ToString());
    } else if (*done) {
      done_.store(true);
    }
  }
}

}  // namespace pskit::worker
