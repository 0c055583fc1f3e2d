// tools/psrun/launch/worker_command.cc
//
// psrun's worker command: splitting it into argv, finding its program, and
// the environment contract (see worker_command.h).
#include "tools/psrun/launch/worker_command.h"

#include <sys/stat.h>
#include <unistd.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace pskit::launch {

absl::StatusOr<std::vector<std::string>> SplitCommandLine(
    absl::string_view command) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;  // a word has started (even an empty '' one)
  bool plain_word = true;  // the word so far is unquoted name characters
  const absl::string_view how =
      "; psrun runs the worker command without a shell: quote the character, "
      "or run a shell yourself: --worker_command \"sh -c '...'\"";
  for (size_t i = 0; i < command.size(); ++i) {
    const char c = command[i];
    if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      plain_word = true;
      continue;
    }
    if (!in_word && c == '~') {
      return absl::InvalidArgumentError(absl::StrCat(
          "--worker_command has a word starting with an unquoted '~', which "
          "only a shell would turn into a home directory: write the path in "
          "full (your shell expands $HOME in --worker_command \"$HOME/...\") "
          "or quote the '~' to mean the character",
          how));
    }
    if (c == '=' && words.empty() && plain_word && in_word) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--worker_command starts with the assignment '", word,
          "=...', which only a shell would put in the environment: set the "
          "variable in psrun's own environment (workers inherit it), or run "
          "--worker_command \"env ",
          word, "=... PROGRAM ...\""));
    }
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_') ||
        (!in_word && absl::ascii_isdigit(static_cast<unsigned char>(c)))) {
      plain_word = false;
    }
    in_word = true;
    if (c == '\'') {
      const size_t end = command.find('\'', i + 1);
      if (end == absl::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--worker_command has an unterminated ' quote: ", command));
      }
      absl::StrAppend(&word, command.substr(i + 1, end - i - 1));
      i = end;
    } else if (c == '"') {
      size_t j = i + 1;
      for (; j < command.size() && command[j] != '"'; ++j) {
        if (command[j] == '\\' && j + 1 < command.size() &&
            absl::string_view("\"\\$`").find(command[j + 1]) !=
                absl::string_view::npos) {
          ++j;
        } else if (command[j] == '$' || command[j] == '`') {
          return absl::InvalidArgumentError(absl::StrCat(
              "--worker_command has an unescaped '", std::string(1, command[j]),
              "' in double quotes, which only a shell would expand", how));
        }
        word.push_back(command[j]);
      }
      if (j >= command.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--worker_command has an unterminated \" quote: ", command));
      }
      i = j;
    } else if (c == '\\') {
      if (i + 1 >= command.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--worker_command ends in a lone backslash: ", command));
      }
      word.push_back(command[++i]);
    } else if (absl::string_view("|&;<>()$`").find(c) !=
               absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--worker_command has an unquoted '", std::string(1, c),
          "', which only a shell would act on (pipes, redirections, "
          "variables)",
          how));
    } else {
      word.push_back(c);
    }
  }
  if (in_word) words.push_back(std::move(word));
  if (words.empty()) {
    return absl::InvalidArgumentError(
        "--worker_command is empty: give the program and its arguments, "
        "e.g. --worker_command \"/usr/bin/python3 examples/python/train.py\"");
  }
  return words;
}

namespace {

// OK when `file` is an executable regular file; otherwise why not.
absl::Status CheckExecutable(const std::string& file) {
  struct stat st;
  if (stat(file.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("no such file: ", file));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, " is a directory, not a program"));
  }
  if (!S_ISREG(st.st_mode) || access(file.c_str(), X_OK) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        file,
        " is not executable (chmod +x it, or name its interpreter first: "
        "--worker_command \"/usr/bin/python3 ",
        file, "\")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> FindProgram(const std::string& program,
                                        std::optional<std::string> path) {
  if (program.empty()) {
    return absl::InvalidArgumentError("--worker_command's program is empty");
  }
  if (program.find('/') != std::string::npos) {
    if (absl::Status s = CheckExecutable(program); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("--worker_command: ", s.message()));
    }
    return program;
  }
  const std::string dirs = path.value_or("/bin:/usr/bin");
  std::string first_problem;
  for (absl::string_view dir : absl::StrSplit(dirs, ':')) {
    // An empty entry is the working directory, as for execvp.
    const std::string file =
        absl::StrCat(dir.empty() ? "." : dir, "/", program);
    struct stat st;
    if (stat(file.c_str(), &st) != 0) continue;
    absl::Status s = CheckExecutable(file);
    if (s.ok()) return file;
    if (first_problem.empty()) first_problem = std::string(s.message());
  }
  if (!first_problem.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--worker_command: ", first_problem));
  }
  return absl::NotFoundError(absl::StrCat(
      "--worker_command: program '", program, "' not found in PATH (", dirs,
      "); give its path (./train.sh, /usr/bin/python3)"));
}

std::vector<EnvChange> WorkerEnvironment(const WorkerEnvironmentInput& in) {
  const std::string rank = in.evaluator ? "0" : absl::StrCat(in.rank);
  const std::string world = in.evaluator ? "1" : absl::StrCat(in.world);
  std::vector<EnvChange> env = {
      {"PSKIT_SHARDS", absl::StrJoin(in.shards, ",")},
      {"RANK", rank},
      {"WORLD_SIZE", world},
      {"LOCAL_RANK", rank},
      {"LOCAL_WORLD_SIZE", world},
      {"PSKIT_ROLE", in.evaluator ? "evaluator" : "worker"},
      {"PSKIT_METRICS_PORT", absl::StrCat(in.metrics_port)},
      {"PSKIT_METRICS_HOST", in.metrics_host},
  };
  auto set_or_remove = [&env](const char* name, const std::string& value) {
    env.push_back({name, value.empty() ? std::nullopt
                                       : std::optional<std::string>(value)});
  };
  set_or_remove("PSKIT_NAMESPACE", in.ns);
  set_or_remove("PSKIT_TLS_CA", in.tls_ca);
  set_or_remove("PSKIT_TLS_CERT", in.tls_cert);
  set_or_remove("PSKIT_TLS_KEY", in.tls_key);
  if (!in.token_file.empty()) {
    env.push_back({"PSKIT_TOKEN_FILE", in.token_file});
    env.push_back({"PSKIT_TOKEN", std::nullopt});
  }
  if (!in.pythonunbuffered_inherited) {
    env.push_back({"PYTHONUNBUFFERED", "1"});
  }
  for (const char* other :
       {"SLURM_PROCID", "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "JOB_COMPLETION_INDEX",
        "PSKIT_WORLD_SIZE"}) {
    env.push_back({other, std::nullopt});
  }
  return env;
}

}  // namespace pskit::launch
