#include "common/http_get.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

namespace pskit {
namespace {

// Closes the socket on every path out.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  const int fd_;
};

// Waits until `fd` is ready for `events` or the deadline passes.
absl::Status WaitFor(int fd, short events, absl::Time deadline,
                     const std::string& what) {
  while (true) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
    }
    pollfd p = {fd, events, 0};
    const int r = poll(&p, 1, static_cast<int>(left));
    if (r > 0) return absl::OkStatus();
    if (r < 0 && errno != EINTR) {
      return absl::UnavailableError(
          absl::StrCat(what, ": poll: ", std::strerror(errno)));
    }
  }
}

}  // namespace

absl::StatusOr<std::string> HttpGet(const std::string& host, int port,
                                    const std::string& path,
                                    absl::Duration timeout) {
  return HttpRequest("GET", host, port, path, "", timeout);
}

absl::StatusOr<std::string> HttpRequest(const std::string& method,
                                        const std::string& host, int port,
                                        const std::string& path,
                                        const std::string& body,
                                        absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const std::string what =
      absl::StrCat(method, " http://", host, ":", port, path);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int r = getaddrinfo(host.c_str(), std::to_string(port).c_str(),
                                &hints, &found);
      r != 0) {
    return absl::UnavailableError(
        absl::StrCat(what, ": cannot resolve ", host, ": ", gai_strerror(r)));
  }
  Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    freeaddrinfo(found);
    return absl::UnavailableError(
        absl::StrCat(what, ": socket: ", std::strerror(errno)));
  }
  const int c = connect(fd.get(), found->ai_addr, found->ai_addrlen);
  freeaddrinfo(found);
  if (c != 0 && errno != EINPROGRESS) {
    return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
  }
  if (absl::Status s = WaitFor(fd.get(), POLLOUT, deadline, what); !s.ok()) {
    return s;
  }
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(err)));
  }
  std::string request = absl::StrCat(
      method, " ", path, " HTTP/1.0\r\nHost: ", host, ":", port,
      "\r\nAccept: */*\r\nConnection: close\r\n");
  if (method != "GET") {
    absl::StrAppend(&request,
                    "Content-Type: text/plain; version=0.0.4\r\n"
                    "Content-Length: ",
                    body.size(), "\r\n");
  }
  absl::StrAppend(&request, "\r\n", body);
  size_t sent = 0;
  while (sent < request.size()) {
    if (absl::Status s = WaitFor(fd.get(), POLLOUT, deadline, what); !s.ok()) {
      return s;
    }
    const ssize_t n = send(fd.get(), request.data() + sent,
                           request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return absl::UnavailableError(
          absl::StrCat(what, ": send: ", std::strerror(errno)));
    }
    if (n > 0) sent += static_cast<size_t>(n);
  }
  std::string answer;
  char buf[16384];
  while (true) {
    if (absl::Status s = WaitFor(fd.get(), POLLIN, deadline, what); !s.ok()) {
      return s;
    }
    const ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return absl::UnavailableError(
          absl::StrCat(what, ": recv: ", std::strerror(errno)));
    }
    answer.append(buf, static_cast<size_t>(n));
  }
  const size_t head_end = answer.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    return absl::UnavailableError(
        absl::StrCat(what, ": the answer has no complete HTTP header"));
  }
  const absl::string_view status_line =
      absl::string_view(answer).substr(0, answer.find("\r\n"));
  // "HTTP/1.1 200 OK"
  const std::vector<absl::string_view> parts =
      absl::StrSplit(status_line, absl::MaxSplits(' ', 2));
  int code = 0;
  if (parts.size() < 2 || !absl::SimpleAtoi(parts[1], &code)) {
    return absl::UnavailableError(
        absl::StrCat(what, ": not an HTTP answer: ", status_line));
  }
  if (code < 200 || code >= 300) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": ", status_line));
  }
  // Chunked answers (Go's servers send them for HTTP/1.1 only; we ask 1.0)
  // are not expected.
  return answer.substr(head_end + 4);
}

absl::StatusOr<double> FindSample(const std::string& exposition,
                                  const std::string& name,
                                  const std::vector<std::string>& label_filter) {
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    if (!absl::StartsWith(line, name)) continue;
    absl::string_view rest = line.substr(name.size());
    absl::string_view labels;
    if (!rest.empty() && rest[0] == '{') {
      const size_t close = rest.find('}');
      if (close == absl::string_view::npos) continue;
      labels = rest.substr(1, close - 1);
      rest = rest.substr(close + 1);
    }
    if (rest.empty() || rest[0] != ' ') continue;  // a longer name
    bool match = true;
    for (const std::string& want : label_filter) {
      if (!absl::StrContains(labels, want)) match = false;
    }
    if (!match) continue;
    rest.remove_prefix(1);
    const std::string value(rest.substr(0, rest.find(' ')));
    double v = 0;
    if (absl::SimpleAtod(value, &v)) return v;
    if (value == "NaN" || value == "Nan") return std::nan("");
  }
  return absl::NotFoundError(absl::StrCat("no sample of ", name));
}

}  // namespace pskit
