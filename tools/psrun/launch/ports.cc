#include "tools/psrun/launch/ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pskit::launch {
namespace {

// A socket bound to 127.0.0.1:`port` (0: any), or -1; `*bound` gets the port.
int BindLoopback(int port, int* bound) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return -1;
  }
  if (bound != nullptr) *bound = ntohs(addr.sin_port);
  return fd;
}

}  // namespace

bool PortIsFree(int port) {
  const int fd = BindLoopback(port, nullptr);
  if (fd < 0) return false;
  close(fd);
  return true;
}

absl::StatusOr<int> PickFreePort(const std::vector<int>& avoid) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int port = 0;
    const int fd = BindLoopback(0, &port);
    if (fd < 0) continue;
    close(fd);
    if (std::find(avoid.begin(), avoid.end(), port) == avoid.end()) return port;
  }
  return absl::UnavailableError("no free TCP port on 127.0.0.1");
}

absl::Status CheckMetricsPortBase(int base, int servers, int workers) {
  if (base < 0 || (base > 0 && servers > 99)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_port_base ", base, " with --servers ", servers,
                     ": shards take base..base+98 (at most 99 of them); use "
                     "--metrics_port_base 0 for free ports"));
  }
  if (base > 0 && base + 100 + workers - 1 > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics_port_base ", base,
                                                   " with --workers ", workers,
                                                   " runs past port 65535"));
  }
  return absl::OkStatus();
}

absl::StatusOr<MetricsPorts> ChooseMetricsPorts(int base, int servers,
                                                int workers, bool evaluator) {
  if (absl::Status s = CheckMetricsPortBase(base, servers, workers); !s.ok()) {
    return s;
  }
  MetricsPorts ports;
  std::vector<int> taken;
  auto choose = [&](int wanted, const std::string& who) -> absl::StatusOr<int> {
    if (wanted > 0 && PortIsFree(wanted)) {
      taken.push_back(wanted);
      return wanted;
    }
    absl::StatusOr<int> port = PickFreePort(taken);
    if (!port.ok()) return port.status();
    if (wanted > 0) {
      ports.warnings.push_back(absl::StrCat("metrics port ", wanted, " for ",
                                            who, " is busy; using ", *port));
    }
    taken.push_back(*port);
    return *port;
  };
  // Fixed ports first, so a free port picked for a busy one never takes
  // another process's fixed port.
  if (base > 0) {
    for (int i = 0; i < servers; ++i) taken.push_back(base + i);
    for (int j = 0; j < workers; ++j) taken.push_back(base + 100 + j);
    if (evaluator) taken.push_back(base + 99);
  }
  for (int i = 0; i < servers; ++i) {
    absl::StatusOr<int> p =
        choose(base > 0 ? base + i : 0, absl::StrCat("shard", i));
    if (!p.ok()) return p.status();
    ports.shards.push_back(*p);
  }
  for (int j = 0; j < workers; ++j) {
    absl::StatusOr<int> p =
        choose(base > 0 ? base + 100 + j : 0, absl::StrCat("worker", j));
    if (!p.ok()) return p.status();
    ports.workers.push_back(*p);
  }
  if (evaluator) {
    absl::StatusOr<int> p = choose(base > 0 ? base + 99 : 0, "the evaluator");
    if (!p.ok()) return p.status();
    ports.evaluator = *p;
  }
  return ports;
}

}  // namespace pskit::launch
