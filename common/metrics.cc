#include "common/metrics.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/auth_token.h"
#include "absl/time/clock.h"
#include "common/http_get.h"
#include "prometheus/text_serializer.h"
#include "spdlog/spdlog.h"

namespace pskit {

namespace {

// Whether the HTTP request's headers hold "Authorization: Bearer <token>"
// with exactly `token` (header name and scheme case-insensitive). The
// comparison takes the same time wherever the presented token differs.
bool HasBearerToken(absl::string_view request, absl::string_view token) {
  bool found = false;
  for (absl::string_view header : absl::StrSplit(request, '\n')) {
    header = absl::StripTrailingAsciiWhitespace(header);
    if (header.empty()) break;  // end of the headers
    const size_t colon = header.find(':');
    if (colon == absl::string_view::npos ||
        !absl::EqualsIgnoreCase(header.substr(0, colon), "authorization")) {
      continue;
    }
    absl::string_view value =
        absl::StripAsciiWhitespace(header.substr(colon + 1));
    if (value.size() < 7 ||
        !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
      continue;
    }
    value = absl::StripAsciiWhitespace(value.substr(7));
    if (ConstantTimeEquals(value, token)) found = true;
  }
  return found;
}

}  // namespace

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10,
          30,     60};
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& host, int port,
    std::shared_ptr<prometheus::Collectable> registry,
    std::string bearer_token) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics port ", port, " is not in [0, 65535] (0 picks a free port)"));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    // A name (localhost, this host's name): its first IPv4 address.
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 ||
        found == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metrics host '", host,
          "' is neither an IPv4 address nor a name of one (set "
          "--metrics_host: 0.0.0.0 for every interface, 127.0.0.1 for this "
          "machine only)"));
    }
    addr.sin_addr = reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr;
    freeaddrinfo(found);
  }
  auto endpoint = std::unique_ptr<MetricsEndpoint>(new MetricsEndpoint());
  endpoint->host_ = host;
  endpoint->collectable_ = std::move(registry);
  endpoint->bearer_token_ = std::move(bearer_token);
  const std::string address = absl::StrCat(host, ":", port);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("metrics socket: ", std::strerror(errno)));
  }
  endpoint->listen_fd_ = fd;  // closed by the destructor from here on
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd, 16) != 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve metrics on ", address, ": ", std::strerror(errno),
        " (pick another --metrics_port, or 0 for any free port)"));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  endpoint->port_ = ntohs(addr.sin_port);
  endpoint->stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (endpoint->stop_fd_ < 0) {
    return absl::UnavailableError(
        absl::StrCat("metrics eventfd: ", std::strerror(errno)));
  }
  endpoint->thread_ = std::thread([e = endpoint.get()] { e->Serve(); });
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (listen_fd_ >= 0) close(listen_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
}

void MetricsEndpoint::Serve() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("metrics endpoint: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int conn = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    Answer(conn);
    close(conn);
  }
}

// One request per connection (HTTP/1.0 style, "Connection: close"), as
// Prometheus, curl and psrun all handle. A client gets 5 s to send its
// request line, so a stuck one cannot hold the endpoint.
void MetricsEndpoint::Answer(int fd) {
  std::string request;
  char buf[2048];
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (request.find("\r\n\r\n") == std::string::npos &&
         request.find("\n\n") == std::string::npos && request.size() < 16384) {
    const int left = static_cast<int>(
        absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd p = {fd, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, left) <= 0) return;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return;
    request.append(buf, static_cast<size_t>(n));
  }
  const size_t line_end = request.find_first_of("\r\n");
  absl::string_view line = absl::string_view(request).substr(0, line_end);
  std::string status, body, type = "text/plain; charset=utf-8";
  std::string extra_headers;
  const bool head = absl::StartsWith(line, "HEAD ");
  if (!bearer_token_.empty() && !HasBearerToken(request, bearer_token_)) {
    status = "401 Unauthorized";
    body =
        "this endpoint requires 'Authorization: Bearer <token>' (the token "
        "in the shard's --metrics_token_file)\n";
    extra_headers = "WWW-Authenticate: Bearer\r\n";
  } else if (!absl::StartsWith(line, "GET ") && !head) {
    status = "405 Method Not Allowed";
    body = "only GET /metrics is served\n";
  } else if (absl::StartsWith(line.substr(head ? 5 : 4), "/metrics ") ||
             absl::StartsWith(line.substr(head ? 5 : 4), "/metrics?")) {
    status = "200 OK";
    type = "text/plain; version=0.0.4; charset=utf-8";
    body = prometheus::TextSerializer().Serialize(collectable_->Collect());
  } else {
    status = "404 Not Found";
    body = "pskit serves its metrics at /metrics\n";
  }
  std::string out = absl::StrCat("HTTP/1.0 ", status, "\r\nContent-Type: ",
                                 type, "\r\nContent-Length: ", body.size(),
                                 "\r\n", extra_headers,
                                 "Connection: close\r\n\r\n");
  if (!head) out += body;
  size_t sent = 0;
  while (sent < out.size()) {
    const ssize_t n =
        send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

std::string MetricsEndpoint::url() const {
  return absl::StrCat("http://", host_, ":", port_, "/metrics");
}

absl::StatusOr<std::unique_ptr<MetricsPusher>> MetricsPusher::Start(
    const std::string& url, const std::string& job,
    const prometheus::Labels& grouping,
    std::shared_ptr<prometheus::Collectable> registry, absl::Duration interval) {
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Pushgateway URL '", url,
        "' must be http://HOST:PORT (for example http://pushgw:9091)"));
  }
  absl::ConsumeSuffix(&rest, "/");
  const size_t colon = rest.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(rest.substr(colon + 1), &port) || port <= 0 ||
      port > 65535 || absl::StrContains(rest, "/")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Pushgateway URL '", url,
        "' must be http://HOST:PORT (for example http://pushgw:9091)"));
  }
  if (interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("Pushgateway interval must be positive");
  }
  auto pusher = std::unique_ptr<MetricsPusher>(new MetricsPusher());
  pusher->url_ = url;
  pusher->interval_ = interval;
  pusher->host_ = std::string(rest.substr(0, colon));
  pusher->port_ = port;
  // The grouping key in the path; base64url values, so any hostname or
  // label value is safe there.
  pusher->path_ = absl::StrCat("/metrics/job@base64/", absl::WebSafeBase64Escape(job));
  for (const auto& [name, value] : grouping) {
    absl::StrAppend(&pusher->path_, "/", name, "@base64/",
                    value.empty() ? "=" : absl::WebSafeBase64Escape(value));
  }
  pusher->collectable_ = std::move(registry);
  pusher->thread_ = std::thread([p = pusher.get()] { p->Loop(); });
  return pusher;
}

MetricsPusher::~MetricsPusher() { Stop(); }

absl::Status MetricsPusher::PushNow() {
  const std::string body =
      prometheus::TextSerializer().Serialize(collectable_->Collect());
  absl::StatusOr<std::string> r =
      HttpRequest("PUT", host_, port_, path_, body, absl::Seconds(5));
  if (!r.ok()) {
    spdlog::warn("metrics push to {} failed: {}", url_, r.status().ToString());
  }
  return r.status();
}

void MetricsPusher::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    mu_.AwaitWithTimeout(absl::Condition(&stop_), interval_);
    mu_.Unlock();
    (void)PushNow();  // logged; the next round tries again
    mu_.Lock();
  }
}

void MetricsPusher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
    stop_ = true;
  }
  // Loop pushes once more after seeing stop_: the final figures land.
  if (thread_.joinable()) thread_.join();
}

}  // namespace pskit
