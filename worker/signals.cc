// worker/signals.cc: the stop handler, its pipe and its thread.
#include "worker/signals.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>

#include "spdlog/spdlog.h"

namespace pskit::worker {

StopOnSignal::StopOnSignal() {
  if (pipe2(fds_, O_CLOEXEC) != 0) {
    spdlog::warn("no pipe for signals: SIGTERM ends the process at once");
    return;
  }
  write_fd_.store(fds_[1]);
  struct sigaction sa = {};
  sa.sa_handler = &StopOnSignal::Handle;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  thread_ = std::thread([this] { Watch(); });
}

StopOnSignal::~StopOnSignal() {
  if (!thread_.joinable()) return;
  const char quit = 'q';
  (void)!write(fds_[1], &quit, 1);
  thread_.join();
}

void StopOnSignal::Handle(int sig) {
  if (signalled_.exchange(true)) _exit(128 + sig);
  const char stop = 's';
  (void)!write(write_fd_.load(), &stop, 1);
}

void StopOnSignal::Watch() {
  char c = 0;
  while (read(fds_[0], &c, 1) < 0 && errno == EINTR) {
  }
  if (c != 's') return;
  spdlog::warn("stop signal: finishing the step in hand, then leaving "
               "(signal again to stop at once)");
  stop_.Notify();
  // A call that is retrying a dead shard would hold the stop until its
  // deadline (--timeout_s); give the step in hand kGrace, then go.
  pollfd p = {fds_[0], POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(kGrace))) == 0) {
    spdlog::error("still busy {} s after the stop signal (a call to the "
                  "shards is retrying?); exiting now",
                  absl::ToInt64Seconds(kGrace));
    std::fflush(stdout);
    _exit(128 + SIGTERM);
  }
}

}  // namespace pskit::worker
