// common/http_get.h
//
// HttpGet: one plain-HTTP GET (HTTP/1.0, no TLS, no redirects), for reading
// Prometheus endpoints: psrun scrapes its workers with it, tests read
// /metrics, Prometheus's API and the Pushgateway. HttpRequest: the same with
// another method and a body (MetricsPusher's PUT). Every call has a deadline:
// a peer that accepts and never answers cannot hold the caller.
//
// Example:
//   PSKIT_ASSIGN_OR_RETURN(std::string body,
//       HttpGet("127.0.0.1", 9400, "/metrics", absl::Seconds(2)));
//
// Thread safety: a free function with no shared state.
#ifndef PSKIT_COMMON_HTTP_GET_H_
#define PSKIT_COMMON_HTTP_GET_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pskit {

// GETs http://host:port/path (host an IPv4 address or a name) and returns
// the body of a 2xx answer. UNAVAILABLE when nothing answers or the
// connection breaks; DEADLINE_EXCEEDED after `timeout`; FAILED_PRECONDITION
// for another HTTP status (the message carries the status line).
[[nodiscard]] absl::StatusOr<std::string> HttpGet(const std::string& host,
                                                  int port,
                                                  const std::string& path,
                                                  absl::Duration timeout);

// The same with any method and a body (sent as Prometheus text format, as
// the Pushgateway takes it); used for PUT to a Pushgateway.
[[nodiscard]] absl::StatusOr<std::string> HttpRequest(
    const std::string& method, const std::string& host, int port,
    const std::string& path, const std::string& body, absl::Duration timeout);

// The value of the first sample of `name` in Prometheus text format
// `exposition` whose labels contain every `label="value"` pair in
// `label_filter` (e.g. {"rank=\"0\""}); NOT_FOUND when there is none.
// Summing over series is the caller's business.
[[nodiscard]] absl::StatusOr<double> FindSample(
    const std::string& exposition, const std::string& name,
    const std::vector<std::string>& label_filter = {});

}  // namespace pskit

#endif  // PSKIT_COMMON_HTTP_GET_H_
