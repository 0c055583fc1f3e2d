#include "tests/testing/child_server.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

extern char** environ;

namespace pskit::testing {

std::string SiblingBinary(const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string self(buf, n > 0 ? n : 0);
  return self.substr(0, self.rfind('/')) + "/" + name;
}

pid_t SpawnPiped(const std::string& path, std::vector<std::string> args,
                 bool merge_stderr, int* read_fd,
                 const std::vector<std::string>* env,
                 const std::string& stderr_file) {
  *read_fd = -1;
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  if (merge_stderr) posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  if (!stderr_file.empty()) {
    posix_spawn_file_actions_addopen(&actions, 2, stderr_file.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  std::vector<std::string> env_strings;
  std::vector<char*> envp;
  if (env != nullptr) {
    env_strings = *env;
    for (std::string& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
  args.insert(args.begin(), path);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(),
                  env != nullptr ? envp.data() : environ) != 0) {
    pid = -1;
  }
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (pid < 0) {
    close(out[0]);
    return -1;
  }
  *read_fd = out[0];
  return pid;
}

ChildServer::ChildServer(const std::string& binary,
                         std::vector<std::string> args, bool merge_stderr) {
  int fd = -1;
  pid_ = SpawnPiped(SiblingBinary(binary), std::move(args), merge_stderr, &fd);
  if (fd >= 0) out_ = fdopen(fd, "r");
  first_line_ = ReadLine();
}

ChildServer::~ChildServer() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (out_ != nullptr) fclose(out_);
}

std::string ChildServer::ReadLine() {
  char line[1024];
  if (out_ == nullptr || fgets(line, sizeof(line), out_) == nullptr) return "";
  std::string s = line;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string ChildServer::address() const {
  const std::string prefix = "ps-server listening on ";
  if (first_line_.rfind(prefix, 0) != 0) return "";
  return first_line_.substr(prefix.size());
}

int ChildServer::StopWith(int sig) {
  if (pid_ <= 0) return -1;
  if (sig != 0) kill(pid_, sig);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace pskit::testing
