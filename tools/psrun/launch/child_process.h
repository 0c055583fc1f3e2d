// tools/psrun/launch/child_process.h
//
// The process plumbing of psrun: starting a program as a child whose stdout
// and stderr come back on two pipes, cutting what arrives on a pipe into
// whole lines, and describing how a child ended.
//
//   PSKIT_ASSIGN_OR_RETURN(
//       SpawnedChild c,
//       SpawnChild("/opt/pskit/bin/ps-server", {"--listen", "127.0.0.1:0"}));
//   // poll() c.stdout_fd and c.stderr_fd (both non-blocking); feed what
//   // read() returns to a LineSplitter per pipe; waitpid(c.pid, ...).
//
// Thread safety: SpawnChild may be called from any thread, but the child's
// PR_SET_PDEATHSIG fires when the *thread* that called it exits, so call it
// from a thread that lives as long as the children should (psrun: main).
// LineSplitter is not thread-safe (one per pipe, one reader).
#ifndef PSKIT_TOOLS_PSRUN_LAUNCH_CHILD_PROCESS_H_
#define PSKIT_TOOLS_PSRUN_LAUNCH_CHILD_PROCESS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pskit::launch {

// A started child. The caller owns both descriptors (close them) and must
// reap `pid` with waitpid.
struct SpawnedChild {
  pid_t pid = -1;
  int stdout_fd = -1;  // read end, O_NONBLOCK and O_CLOEXEC
  int stderr_fd = -1;  // read end, O_NONBLOCK and O_CLOEXEC
};

// One change to the environment a child inherits: `name` set to `value`,
// or removed (nullopt).
struct EnvChange {
  std::string name;
  std::optional<std::string> value;
};

// Starts `path` with `args` (argv[1..]) and the launcher's environment
// with `env` applied (later changes of a name win). The child:
//   - gets SIGTERM when the calling thread dies (PR_SET_PDEATHSIG), and exits
//     at once if that already happened, so nothing outlives its launcher,
//     even one killed with SIGKILL;
//   - leads its own process group, so a terminal's Ctrl-C reaches only the
//     launcher, which then stops the children in order;
//   - has stdin on /dev/null, an empty signal mask and default signal
//     dispositions (the launcher blocks and ignores some; exec keeps both).
// INVALID_ARGUMENT if `path` is not an executable file; INTERNAL if pipe,
// fork or exec fails (the message says which and why). Nothing is left open
// or running on error.
[[nodiscard]] absl::StatusOr<SpawnedChild> SpawnChild(
    const std::string& path, const std::vector<std::string>& args,
    const std::vector<EnvChange>& env = {});

// "exited with status 1", "exited normally" (status 0), "was killed by
// signal 9 (Killed)", from a waitpid status.
std::string DescribeWaitStatus(int wait_status);

// Cuts a byte stream into lines. Append returns the whole lines completed by
// `data` (without '\n'; a trailing '\r' is dropped too); the rest waits for
// more. A line longer than `max_line` is cut there, so one endless line
// cannot eat memory. Finish returns what is left (a last line without its
// newline), if anything.
class LineSplitter {
 public:
  explicit LineSplitter(size_t max_line = 64 << 10) : max_line_(max_line) {}

  std::vector<std::string> Append(absl::string_view data);
  std::vector<std::string> Finish();

 private:
  size_t max_line_;
  std::string partial_;
};

}  // namespace pskit::launch

#endif  // PSKIT_TOOLS_PSRUN_LAUNCH_CHILD_PROCESS_H_
