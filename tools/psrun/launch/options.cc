#include "tools/psrun/launch/options.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "tools/psrun/launch/ports.h"
#include "tools/psrun/launch/worker_command.h"
#include "tools/psrun/launch/worker_flags.h"

namespace pskit::launch {

absl::Status ValidateLauncherOptions(const LauncherOptions& o) {
  if (o.servers < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--servers must be at least 1, got ", o.servers));
  }
  if (o.workers < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--workers must be at least 1 (the job ends when every worker has "
        "exited), or 0 to serve the shards only, got ",
        o.workers));
  }
  if (o.workers == 0) {
    // Shards only: nothing of a job may be given.
    std::string refused;
    if (o.evaluator) {
      refused = "--evaluator";
    } else if (!o.worker_command.empty()) {
      refused = "--worker_command";
    } else if (!o.ns.empty()) {
      refused = "--namespace";
    } else if (!o.worker_args.empty()) {
      refused = absl::StrCat("worker flags after -- ('", o.worker_args[0], "')");
    }
    if (!refused.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--workers 0 serves the shards only (no workers, no evaluator), so ",
          refused,
          " has nothing to run; drop it, or give --workers N to run a job"));
    }
  }
  if (o.metrics_port_base < 0 || o.metrics_port_base > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics_port_base must be 0 (free ports) or a port, got ",
        o.metrics_port_base));
  }
  if (absl::Status s =
          CheckMetricsPortBase(o.metrics_port_base, o.servers, o.workers);
      !s.ok()) {
    return s;
  }
  if (o.restart_shards < 0 || o.restart_backoff < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--restart_shards must be >= 0 (restarts per shard; 0: a dead shard "
        "fails the job) and --restart_backoff_s >= 0, got ",
        o.restart_shards, " and ", absl::ToDoubleSeconds(o.restart_backoff)));
  }
  if (o.kill_timeout < absl::ZeroDuration() ||
      o.start_timeout <= absl::ZeroDuration() ||
      o.status_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--kill_timeout_s and --status_interval_s must be >= 0 and "
        "--start_timeout_s > 0");
  }
  if (o.final_eval_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--final_eval_timeout_s must be >= 0 (0: automatic)");
  }
  if (absl::Status s = RejectReserved(
          o.server_args,
          {"listen", "shard_index", "num_shards", "data_dir", "metrics_port"},
          "server");
      !s.ok()) {
    return s;
  }
  if (!o.worker_command.empty()) {
    absl::StatusOr<std::string> program =
        FindProgram(o.worker_command[0], o.search_path);
    if (!program.ok()) return program.status();
  } else {
    absl::StatusOr<WorkerFlagInfo> info = InspectWorkerArgs(o.worker_args);
    if (!info.ok()) return info.status();
    if (o.evaluator && !info->evaluator_can_end) {
      return absl::InvalidArgumentError(
          "--evaluator needs --target_accuracy, --patience or --max_seconds "
          "among the flags after -- (otherwise it never ends)");
    }
    if (absl::Status s = RejectReserved(
            o.worker_args, {"tls_ca", "tls_cert", "tls_key", "token_file"},
            "worker");
        !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          s.message(),
          ": give --tls_ca, --tls_cert, --tls_key and "
          "--token_file to psrun itself, before --; it passes them on and its "
          "monitor uses them too"));
    }
    if (!o.ns.empty()) {
      if (absl::Status s =
              RejectReserved(o.worker_args, {"namespace"}, "worker");
          !s.ok()) {
        return absl::InvalidArgumentError(
            "--namespace is given twice: to psrun and after --; keep one");
      }
    }
  }
  if (o.tls) {
    if (!o.security.tls_ca.empty() || !o.security.tls_cert.empty()) {
      return absl::InvalidArgumentError(
          "--tls makes its own CA and certificates; drop --tls_ca, --tls_cert "
          "and --tls_key, or drop --tls to use your own");
    }
    if (absl::Status s = RejectReserved(
            o.server_args, {"tls_ca", "tls_cert", "tls_key"}, "server");
        !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          s.message(), " (--tls makes the shards' certificates)"));
    }
  }
  if (o.auth) {
    for (const std::string& f : o.client_flags) {
      if (f == "--token_file") {
        return absl::InvalidArgumentError(
            "--auth makes its own tokens; drop --token_file, or drop --auth "
            "to use your own");
      }
    }
    if (absl::Status s = RejectReserved(o.server_args, {"auth_tokens"},
                                        "server");
        !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(s.message(), " (--auth makes the shards' tokens)"));
    }
  }
  for (const char* binary : {"ps-server", "ps-worker"}) {
    if ((!o.worker_command.empty() || o.workers == 0) &&
        std::string(binary) == "ps-worker") {
      continue;
    }
    const std::string path = o.bin_dir + "/" + binary;
    if (access(path.c_str(), X_OK) != 0) {
      return absl::NotFoundError(absl::StrCat(
          binary, " not found at ", path,
          " (psrun runs the ps-server and ps-worker next to its own binary; "
          "build them: cmake --build build --target ps-server ps-worker)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace pskit::launch
