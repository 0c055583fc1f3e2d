// tools/psrun/launch/startup.cc
//
// Launcher's startup: the run directory, metrics ports and Prometheus
// targets, the signalfd, and spawning shards, workers and the evaluator (or,
// with --workers 0, announcing the shards that serve alone).
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/auth_token.h"
#include "tools/psrun/launch/child_process.h"
#include "tools/psrun/launch/ports.h"
#include "tools/psrun/launch/progress.h"
#include "tools/psrun/launch/supervisor.h"
#include "tools/psrun/launch/throwaway_ca.h"
#include "tools/psrun/launch/worker_command.h"

namespace pskit::launch {

namespace fs = std::filesystem;

bool Launcher::Prepare() {
  std::error_code ec;
  if (options_.data_dir.empty()) {
    std::string tmpl = options_.temp_root + "/psrun-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      console_.Err(absl::StrCat("psrun: cannot create a directory under ",
                                options_.temp_root, ": ", strerror(errno)));
      return false;
    }
    run_dir_ = tmpl;
    remove_run_dir_ = !options_.keep_data;
  } else {
    run_dir_ = options_.data_dir;
  }
  for (int i = 0; i < options_.servers; ++i) {
    const std::string dir = absl::StrCat(run_dir_, "/shard-", i);
    fs::create_directories(dir, ec);
    if (ec) {
      console_.Err(
          absl::StrCat("psrun: cannot create ", dir, ": ", ec.message()));
      return false;
    }
  }
  Note(absl::StrCat("shard data in ", run_dir_, "/shard-{0..",
                    options_.servers - 1, "}",
                    options_.data_dir.empty()
                        ? (options_.keep_data ? " (a fresh directory, kept)"
                                              : " (a fresh directory, removed "
                                                "at the end; --keep_data "
                                                "keeps it)")
                        : ""));

  absl::StatusOr<MetricsPorts> ports =
      ChooseMetricsPorts(options_.metrics_port_base, options_.servers,
                         options_.workers, options_.evaluator);
  if (!ports.ok()) {
    console_.Err(absl::StrCat("psrun: ", ports.status().message()));
    return false;
  }
  ports_ = *std::move(ports);
  for (const std::string& w : ports_.warnings)
    console_.Err("psrun: warning: " + w);

  // Prometheus file_sd: the same ports a fixed config would scrape.
  auto targets = [](const std::vector<int>& list) {
    std::vector<std::string> quoted;
    for (int p : list) quoted.push_back(absl::StrCat("\"127.0.0.1:", p, "\""));
    return absl::StrJoin(quoted, ", ");
  };
  std::vector<int> worker_ports = ports_.workers;
  if (ports_.evaluator > 0) worker_ports.push_back(ports_.evaluator);
  const std::string json = absl::StrCat(
      "[\n  {\"targets\": [", targets(ports_.shards),
      "], \"labels\": {\"job\": \"pskit-server\"}},\n  {\"targets\": [",
      targets(worker_ports),
      "], \"labels\": {\"job\": \"pskit-worker\"}}\n]\n");
  const std::string path = options_.prometheus_targets.empty()
                               ? run_dir_ + "/prometheus_targets.json"
                               : options_.prometheus_targets;
  {
    // Prometheus may read the file at any moment: write a sibling, rename.
    std::error_code ec;
    const std::filesystem::path parent =
        std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    const std::string tmp = path + ".tmp";
    std::ofstream out(tmp, std::ios::trunc);
    out << json;
    out.close();
    if (!out || std::rename(tmp.c_str(), path.c_str()) != 0) {
      std::remove(tmp.c_str());
      console_.Err("psrun: warning: cannot write " + path);
    } else {
      Note("Prometheus targets (file_sd): " + path);
    }
  }
  return PrepareSecurity();
}

bool Launcher::PrepareSecurity() {
  security_ = options_.security;
  client_flags_ = options_.client_flags;
  if (options_.auth && !PrepareTokens()) return false;
  if (!options_.tls) return true;
  const std::string dir = run_dir_ + "/tls";
  absl::StatusOr<ThrowawayTlsFiles> files = WriteThrowawayTls(dir, {});
  if (!files.ok()) {
    console_.Err(absl::StrCat("psrun: --tls: ", files.status().message()));
    return false;
  }
  server_security_flags_.insert(
      server_security_flags_.end(),
      {"--tls_cert", files->shard_cert, "--tls_key", files->shard_key,
       "--tls_ca", files->ca});
  security_.tls_ca = files->ca;
  security_.tls_cert = files->client_cert;
  security_.tls_key = files->client_key;
  client_flags_.insert(client_flags_.end(),
                       {"--tls_ca", files->ca, "--tls_cert",
                        files->client_cert, "--tls_key", files->client_key});
  Note(absl::StrCat("mTLS with a throw-away CA: certificates and keys in ",
                    dir));
  return true;
}

bool Launcher::Spawn(Role role, int index, const std::string& program,
                     const std::vector<std::string>& args,
                     const std::vector<EnvChange>& env) {
  auto c = std::make_unique<Child>();
  c->role = role;
  c->index = index;
  c->name = role == Role::kShard    ? absl::StrCat("shard", index)
            : role == Role::kWorker ? absl::StrCat("worker", index)
                                    : "evaluator";
  absl::StatusOr<SpawnedChild> spawned = SpawnChild(program, args, env);
  if (!spawned.ok()) {
    Fail(absl::StrCat("cannot start ", c->name, ": ",
                      spawned.status().message()),
         nullptr);
    return false;
  }
  c->pid = spawned->pid;
  c->fds[0] = spawned->stdout_fd;
  c->fds[1] = spawned->stderr_fd;
  c->started = absl::Now();
  c->running = true;
  c->args = args;
  Note(absl::StrCat("started ", c->name, " (pid ", c->pid, ")"));
  children_.push_back(std::move(c));
  return true;
}

bool Launcher::PrepareTokens() {
  const std::string dir = run_dir_ + "/auth";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || chmod(dir.c_str(), 0700) != 0) {
    console_.Err(absl::StrCat("psrun: --auth: cannot create ", dir));
    return false;
  }
  absl::StatusOr<std::string> admin = GenerateToken();
  absl::StatusOr<std::string> worker = GenerateToken();
  if (!admin.ok() || !worker.ok()) {
    console_.Err(absl::StrCat(
        "psrun: --auth: ",
        (admin.ok() ? worker.status() : admin.status()).message()));
    return false;
  }
  const std::string tokens = dir + "/tokens";
  const std::string admin_file = dir + "/admin.token";
  const std::string worker_file = dir + "/worker.token";
  const std::string lines = absl::StrCat(
      "# psrun's throw-away tokens (", dir, "/*.token), this run only\n",
      TokenFileLine(*admin, TokenRole::kAdmin, {}), "\n",
      TokenFileLine(*worker, TokenRole::kWorker, {}), "\n");
  for (const auto& [path, content] :
       std::vector<std::pair<std::string, std::string>>{
           {tokens, lines},
           {admin_file, *admin + "\n"},
           {worker_file, *worker + "\n"}}) {
    if (absl::Status s = WritePrivateFile(path, content, 0600); !s.ok()) {
      console_.Err(absl::StrCat("psrun: --auth: ", s.message()));
      return false;
    }
  }
  server_security_flags_.insert(server_security_flags_.end(),
                                {"--auth_tokens", tokens});
  security_.token = *admin;
  worker_token_flags_ = {"--token_file", worker_file};
  psctl_token_flags_ = {"--token_file", admin_file};
  Note(absl::StrCat("tokens: admin ", admin_file, ", worker ", worker_file,
                    " (shards: --auth_tokens ", tokens, ")"));
  return true;
}

bool Launcher::StartShards() {
  start_deadline_ = absl::Now() + options_.start_timeout;
  for (int i = 0; i < options_.servers; ++i) {
    std::vector<std::string> args = {
        "--listen",       "127.0.0.1:0",
        "--shard_index",  absl::StrCat(i),
        "--num_shards",   absl::StrCat(options_.servers),
        "--data_dir",     absl::StrCat(run_dir_, "/shard-", i),
        "--metrics_port", absl::StrCat(ports_.shards[i])};
    args.insert(args.end(), server_security_flags_.begin(),
                server_security_flags_.end());
    args.insert(args.end(), options_.server_args.begin(),
                options_.server_args.end());
    if (!Spawn(Role::kShard, i, options_.bin_dir + "/ps-server", args)) {
      return false;
    }
  }
  return true;
}

void Launcher::WorkerLaunch(int rank, const std::string& shards,
                            std::vector<std::string>* args,
                            std::vector<EnvChange>* env) const {
  const bool evaluator = rank < 0;
  const int port = evaluator ? ports_.evaluator : ports_.workers[rank];
  if (!options_.worker_command.empty()) {
    // The command's own arguments, then those after `--`; what ps-worker
    // gets as flags goes in the environment (worker_command.h).
    args->assign(options_.worker_command.begin() + 1,
                 options_.worker_command.end());
    args->insert(args->end(), options_.worker_args.begin(),
                 options_.worker_args.end());
    WorkerEnvironmentInput in;
    in.shards = absl::StrSplit(shards, ',');
    in.evaluator = evaluator;
    in.rank = std::max(rank, 0);
    in.world = options_.workers;
    in.ns = options_.ns;
    in.metrics_port = port;
    std::vector<std::string> flags = client_flags_;
    flags.insert(flags.end(), worker_token_flags_.begin(),
                 worker_token_flags_.end());
    for (size_t i = 0; i + 1 < flags.size(); i += 2) {
      const std::string& value = flags[i + 1];
      if (flags[i] == "--tls_ca") in.tls_ca = value;
      if (flags[i] == "--tls_cert") in.tls_cert = value;
      if (flags[i] == "--tls_key") in.tls_key = value;
      if (flags[i] == "--token_file") in.token_file = value;
    }
    in.pythonunbuffered_inherited = options_.inherited_pythonunbuffered;
    *env = WorkerEnvironment(in);
    return;
  }
  // --rank/--world for the evaluator too: they keep a launcher's
  // environment (SLURM_PROCID, ...) from reaching it.
  *args = {"--shards",       shards,
           "--rank",         absl::StrCat(evaluator ? 0 : rank),
           "--world",        absl::StrCat(evaluator ? 1 : options_.workers),
           "--metrics_port", absl::StrCat(port),
           "--metrics_host", "127.0.0.1"};
  if (evaluator) args->insert(args->begin(), {"--role", "evaluator"});
  if (!options_.ns.empty())
    args->insert(args->end(), {"--namespace", options_.ns});
  args->insert(args->end(), client_flags_.begin(), client_flags_.end());
  args->insert(args->end(), worker_token_flags_.begin(),
               worker_token_flags_.end());
  args->insert(args->end(), options_.worker_args.begin(),
               options_.worker_args.end());
  env->clear();
}

std::string Launcher::PsctlCommand(const std::string& shards) const {
  std::vector<std::string> words = {"psctl", "--shards", shards};
  words.insert(words.end(), client_flags_.begin(), client_flags_.end());
  words.insert(words.end(), psctl_token_flags_.begin(),
               psctl_token_flags_.end());
  words.push_back("status");
  return absl::StrJoin(words, " ");
}

void Launcher::StartServing() {
  std::vector<std::string> shards;
  for (const auto& c : children_) {
    if (c->role == Role::kShard) shards.push_back(c->address);
  }
  const std::string list = absl::StrJoin(shards, ",");
  // The line a script reads (pstune's users, tests): exactly this form.
  console_.Out("shards: " + list);
  Note("psctl for this cluster: " + PsctlCommand(list));
  if (!worker_token_flags_.empty()) {
    Note(absl::StrCat("workers' token: --token_file ",
                      worker_token_flags_[1]));
  }
  Note(absl::StrCat("every shard answers; serving until SIGINT or SIGTERM "
                    "(Ctrl-C), which stops the shards cleanly"));
  phase_ = Phase::kRunning;
  next_status_ = absl::Now() + options_.status_interval;
}

void Launcher::StartWorkers() {
  std::vector<std::string> shards;
  for (const auto& c : children_) {
    if (c->role == Role::kShard) shards.push_back(c->address);
  }
  const std::string list = absl::StrJoin(shards, ",");
  std::string what;
  if (options_.worker_command.empty()) {
    what = absl::StrCat("ps-worker --shards ", list, " --rank J --world ",
                        options_.workers, " ",
                        absl::StrJoin(options_.worker_args, " "));
  } else {
    // The file FindProgram found, its words and the args after `--`.
    std::vector<std::string> words = {worker_program_};
    words.insert(words.end(), options_.worker_command.begin() + 1,
                 options_.worker_command.end());
    words.insert(words.end(), options_.worker_args.begin(),
                 options_.worker_args.end());
    what = absl::StrCat(
        absl::StrJoin(words, " "), " with PSKIT_SHARDS=", list,
        " RANK=J WORLD_SIZE=", options_.workers,
        options_.ns.empty() ? "" : " PSKIT_NAMESPACE=", options_.ns);
  }
  Note(absl::StrCat("every shard answers; starting ", options_.workers,
                    options_.workers == 1 ? " worker" : " workers",
                    options_.evaluator ? " and the evaluator" : "", ": ",
                    what));
  if (!client_flags_.empty() || !psctl_token_flags_.empty()) {
    // What a person needs to reach this cluster from another shell.
    Note("psctl for this cluster: " + PsctlCommand(list));
  }
  workers_started_ = absl::Now();
  for (int j = 0; j < options_.workers; ++j) {
    std::vector<std::string> args;
    std::vector<EnvChange> env;
    WorkerLaunch(j, list, &args, &env);
    if (!Spawn(Role::kWorker, j, worker_program_, args, env)) return;
    monitor_->SetWorkerRunning(j, true);
  }
  if (options_.evaluator) {
    std::vector<std::string> args;
    std::vector<EnvChange> env;
    WorkerLaunch(-1, list, &args, &env);
    if (!Spawn(Role::kEvaluator, 0, worker_program_, args, env)) return;
  }
  phase_ = Phase::kRunning;
  next_status_ = absl::Now() + options_.status_interval;
}

}  // namespace pskit::launch
