#include "tools/psrun/launch/child_process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

extern char** environ;

namespace pskit::launch {
namespace {

void CloseIfOpen(int* fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

// Runs in the forked child: only async-signal-safe calls until exec (the
// launcher has other threads, whose locks the child may have inherited
// held). Never returns.
[[noreturn]] void ExecChild(pid_t parent, int null_fd, int out_w, int err_w,
                            int exec_error_w, const char* path,
                            char* const* argv, char* const* envp) {
  // Nothing may outlive the launcher: SIGTERM (shards checkpoint on it) when
  // the launching thread dies; and if it died before this line, go now.
  if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) _exit(127);
  setpgid(0, 0);
  if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(out_w, STDOUT_FILENO) < 0 ||
      dup2(err_w, STDERR_FILENO) < 0) {
    const int e = errno;
    (void)!write(exec_error_w, &e, sizeof(e));
    _exit(127);
  }
  // Ignored dispositions and the blocked mask survive exec.
  struct sigaction dfl;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGQUIT}) {
    sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  execve(path, argv, envp);
  const int e = errno;
  (void)!write(exec_error_w, &e, sizeof(e));
  _exit(127);
}

}  // namespace

absl::StatusOr<SpawnedChild> SpawnChild(const std::string& path,
                                        const std::vector<std::string>& args,
                                        const std::vector<EnvChange>& env) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
      access(path.c_str(), X_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not an executable file"));
  }
  // Everything the child needs is built before fork: it may not allocate.
  std::vector<std::string> owned;
  owned.reserve(args.size() + 1);
  owned.push_back(path);
  owned.insert(owned.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : owned) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The environment: this process's, with `env` applied.
  std::map<std::string, std::optional<std::string>, std::less<>> changes;
  for (const EnvChange& c : env) changes[c.name] = c.value;
  std::vector<std::string> owned_env;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    const absl::string_view name = entry.substr(0, entry.find('='));
    if (!changes.contains(name)) owned_env.emplace_back(entry);
  }
  for (const auto& [name, value] : changes) {
    if (value.has_value()) owned_env.push_back(absl::StrCat(name, "=", *value));
  }
  std::vector<char*> envp;
  for (std::string& e : owned_env) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out[2] = {-1, -1}, err[2] = {-1, -1}, exec_error[2] = {-1, -1};
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto close_all = [&] {
    for (int* fd : {&out[0], &out[1], &err[0], &err[1], &exec_error[0],
                    &exec_error[1], &null_fd}) {
      CloseIfOpen(fd);
    }
  };
  if (null_fd < 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 ||
      pipe2(exec_error, O_CLOEXEC) != 0) {
    const int e = errno;
    close_all();
    return absl::InternalError(
        absl::StrCat("cannot create pipes for ", path, ": ", strerror(e)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int e = errno;
    close_all();
    return absl::InternalError(
        absl::StrCat("cannot fork for ", path, ": ", strerror(e)));
  }
  if (pid == 0) {
    ExecChild(parent, null_fd, out[1], err[1], exec_error[1], argv[0],
              argv.data(), envp.data());
  }
  CloseIfOpen(&out[1]);
  CloseIfOpen(&err[1]);
  CloseIfOpen(&exec_error[1]);
  CloseIfOpen(&null_fd);
  // EOF here means exec succeeded (the write end is close-on-exec).
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(exec_error[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  CloseIfOpen(&exec_error[0]);
  if (n > 0) {
    waitpid(pid, nullptr, 0);
    close_all();
    return absl::InternalError(
        absl::StrCat("cannot execute ", path, ": ", strerror(child_errno)));
  }
  for (int fd : {out[0], err[0]}) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  SpawnedChild child;
  child.pid = pid;
  child.stdout_fd = out[0];
  child.stderr_fd = err[0];
  return child;
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) {
    const int code = WEXITSTATUS(wait_status);
    return code == 0 ? "exited normally"
                     : absl::StrCat("exited with status ", code);
  }
  if (WIFSIGNALED(wait_status)) {
    const int sig = WTERMSIG(wait_status);
    const char* name = strsignal(sig);
    return absl::StrCat("was killed by signal ", sig,
                        name != nullptr ? absl::StrCat(" (", name, ")") : "");
  }
  return absl::StrCat("ended with wait status ", wait_status);
}

std::vector<std::string> LineSplitter::Append(absl::string_view data) {
  std::vector<std::string> lines;
  while (!data.empty()) {
    const size_t nl = data.find('\n');
    const size_t take = nl == absl::string_view::npos ? data.size() : nl;
    const size_t room = max_line_ - partial_.size();
    if (take > room) {
      // Too long: cut it here and go on with the rest as a new line.
      partial_.append(data.data(), room);
      lines.push_back(std::move(partial_));
      partial_.clear();
      data.remove_prefix(room);
      continue;
    }
    partial_.append(data.data(), take);
    if (nl == absl::string_view::npos) break;
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    lines.push_back(std::move(partial_));
    partial_.clear();
    data.remove_prefix(nl + 1);
  }
  return lines;
}

std::vector<std::string> LineSplitter::Finish() {
  std::vector<std::string> lines;
  if (!partial_.empty()) lines.push_back(std::move(partial_));
  partial_.clear();
  return lines;
}

}  // namespace pskit::launch
