// tests/testing/child_server.h
//
// ChildServer: build/bin/ps-server (or another pskit binary) run as a child
// process, for tests of what only a real process shows (the address line,
// signals, kill -9).
// The destructor SIGKILLs the child if it is still running.
//
// Thread safety: one test thread drives it.
#ifndef PSKIT_TESTS_TESTING_CHILD_SERVER_H_
#define PSKIT_TESTS_TESTING_CHILD_SERVER_H_

#include <sys/types.h>

#include <cstdio>
#include <string>
#include <vector>

namespace pskit::testing {

// build/bin/<name>: the pskit program `name` next to the test binary
// (ps-server, ps-worker, psrun, psctl); an absolute path is returned as it
// is. The one way tests find the programs they start.
std::string SiblingBinary(const std::string& name);

// Starts `path` with `args` (argv[1..]), its stdout (and with `merge_stderr`
// its stderr) on a pipe whose read end (close-on-exec) goes to *read_fd.
// `env` (if not null) is its whole environment, else it gets the caller's;
// a non-empty `stderr_file` receives its stderr (created or truncated).
// Returns the pid, or -1 (and *read_fd -1) when it could not be started.
// The one way tests start child processes.
pid_t SpawnPiped(const std::string& path, std::vector<std::string> args,
                 bool merge_stderr, int* read_fd,
                 const std::vector<std::string>* env = nullptr,
                 const std::string& stderr_file = "");

class ChildServer {
 public:
  // Starts ps-server with `args` and reads its first stdout line.
  explicit ChildServer(std::vector<std::string> args)
      : ChildServer("ps-server", std::move(args), /*merge_stderr=*/false) {}
  // Starts `binary` (a program next to the test binary, e.g. "ps-worker",
  // or an absolute path such as /usr/bin/prometheus)
  // with `args`; with `merge_stderr` its stderr joins the stdout lines
  // ReadLine returns. Reads the first line.
  ChildServer(const std::string& binary, std::vector<std::string> args,
              bool merge_stderr);
  ~ChildServer();

  const std::string& first_line() const { return first_line_; }
  // HOST:PORT from "ps-server listening on HOST:PORT", or "".
  std::string address() const;
  // The next stdout line without its newline ("" at end of output). Blocks.
  std::string ReadLine();
  // Sends `sig` (0: none) and waits; the exit status, or -1 if a signal
  // ended the process.
  int StopWith(int sig);

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  std::string first_line_;
};

}  // namespace pskit::testing

#endif  // PSKIT_TESTS_TESTING_CHILD_SERVER_H_
