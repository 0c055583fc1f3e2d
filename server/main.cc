// ps-server: one shard of a pskit cluster.
//
//   ps-server --listen 0.0.0.0:7000 --shard_index 0 --num_shards 2
//
// Prints "ps-server listening on HOST:PORT" on stdout once serving (scripts
// read the port from it when --listen ends in :0). With --data_dir the shard
// first loads its newest complete checkpoint. SIGTERM or SIGINT: health goes
// NOT_SERVING, in-flight calls finish, a final checkpoint is written (with
// --data_dir), exit 0.
//
// For a job script's rendezvous (SLURM: shards on nodes chosen at run time):
//   ps-server --listen 0.0.0.0:0 --address_file /shared/rdv/shard0
// writes "node17:41234\n" (this machine's hostname, or --advertise_host)
// atomically once serving; workers wait until every shard's file exists.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/flags.h"
#include "common/grpc_options.h"
#include "common/layout.h"
#include "common/logging.h"
#include "common/malloc_tuning.h"
#include "server/address_file.h"
#include "server/server.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port to serve on; port 0 picks a free one");
ABSL_FLAG(uint32_t, shard_index, 0, "this shard's index, 0..num_shards-1");
ABSL_FLAG(uint32_t, num_shards, 1, "number of shards in the cluster");
ABSL_FLAG(uint32_t, chunk_elems, pskit::kDefaultChunkElems,
          "maximum floats per chunk; every process must agree");
ABSL_FLAG(int32_t, max_message_bytes, pskit::kDefaultMaxMessageBytes,
          "largest gRPC message accepted or sent");
ABSL_FLAG(bool, allow_nonfinite, false,
          "accept NaN/Inf in gradients (rejected by default)");
ABSL_FLAG(uint64_t, max_memory_mib, 0,
          "MiB of values and optimizer slots this shard may hold; a Declare "
          "past it is refused. 0: 90% of physical memory");
ABSL_FLAG(std::string, data_dir, "",
          "directory of this shard's checkpoint database (RocksDB); empty: "
          "memory only");
ABSL_FLAG(double, checkpoint_interval_s, 60,
          "seconds between automatic checkpoints; 0 = none");
ABSL_FLAG(int32_t, keep_checkpoints, 3, "newest checkpoints kept");
ABSL_FLAG(double, lease_s, 30.0,
          "seconds a worker's lease lasts without a heartbeat");
ABSL_FLAG(uint32_t, push_window, 1024,
          "exactly-once: Push/PushPull/Exchange calls remembered per worker, "
          "so a retried call is answered instead of applied again; a retry "
          "older than that is refused");
ABSL_FLAG(uint64_t, push_window_mib, 256,
          "exactly-once: MiB of remembered answers per worker (an Exchange "
          "keeps its diffs); older calls leave the window to stay under it");
ABSL_FLAG(double, shutdown_grace_s, 10.0,
          "seconds in-flight calls get to finish on SIGTERM");
ABSL_FLAG(int32_t, testonly_hold_checkpoint, 0,
          "tests only: hold the N-th checkpoint between building its batch "
          "and committing it, after printing 'ps-server: holding checkpoint' "
          "on stdout (a test then kills the process there)");
ABSL_FLAG(int32_t, metrics_port, -1,
          "port of the Prometheus endpoint (/metrics); 0 picks a free one, "
          "-1 serves none");
ABSL_FLAG(std::string, metrics_host, "",
          "address the metrics endpoint binds; empty: the host of --listen");
ABSL_FLAG(std::string, address_file, "",
          "once serving, write HOST:PORT and a newline to this file, "
          "atomically (a temporary file renamed over it), for a job script's "
          "rendezvous directory; its directory must exist. HOST: "
          "--advertise_host, else the host of --listen, else (0.0.0.0 or "
          "[::]) this machine's hostname. Empty: none");
ABSL_FLAG(std::string, advertise_host, "",
          "the host others dial, written into --address_file (a DNS name or "
          "address of this machine). Empty: see --address_file");
ABSL_FLAG(std::string, log_level, "info",
          "trace, debug, info, warn, error or off");

int main(int argc, char** argv) {
  pskit::ParseFlags(argc, argv,
      "one shard of a pskit parameter-server cluster.\n"
      "  ps-server --listen 0.0.0.0:7000 --shard_index 0 --num_shards 2");
  pskit::TuneMallocForLargeMessages();
  if (absl::Status s = pskit::SetupLogging(
          "ps-server", absl::GetFlag(FLAGS_log_level));
      !s.ok()) {
    std::fprintf(stderr, "ps-server: %s\n", s.ToString().c_str());
    return 2;
  }

  // Block the stop signals before gRPC starts its threads, so they all
  // inherit the mask and only sigwait() below sees the signal.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // A missing rendezvous directory is found before the shard loads
  // anything, not after.
  const std::string address_file = absl::GetFlag(FLAGS_address_file);
  if (!address_file.empty()) {
    if (absl::Status s = pskit::CheckAddressFileDir(address_file); !s.ok()) {
      std::fprintf(stderr, "ps-server: %s\n", s.ToString().c_str());
      return 2;
    }
  }

  pskit::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.shard_index = absl::GetFlag(FLAGS_shard_index);
  options.num_shards = absl::GetFlag(FLAGS_num_shards);
  options.chunk_elems = absl::GetFlag(FLAGS_chunk_elems);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.allow_nonfinite = absl::GetFlag(FLAGS_allow_nonfinite);
  options.lease = absl::Seconds(absl::GetFlag(FLAGS_lease_s));
  options.push_window = absl::GetFlag(FLAGS_push_window);
  options.push_window_bytes = absl::GetFlag(FLAGS_push_window_mib) << 20;
  options.max_memory_bytes = absl::GetFlag(FLAGS_max_memory_mib) << 20;
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.checkpoint_interval =
      absl::Seconds(absl::GetFlag(FLAGS_checkpoint_interval_s));
  options.keep_checkpoints = absl::GetFlag(FLAGS_keep_checkpoints);
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  options.metrics_host = absl::GetFlag(FLAGS_metrics_host);
  auto server = pskit::Server::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "ps-server: %s\n",
                 server.status().ToString().c_str());
    return 1;
  }
  if (const int hold = absl::GetFlag(FLAGS_testonly_hold_checkpoint);
      hold > 0 && (*server)->checkpoints() != nullptr) {
    auto count = std::make_shared<int>(0);
    (*server)->checkpoints()->SetBeforeCommitHook([hold, count] {
      if (++*count != hold) return;
      std::printf("ps-server: holding checkpoint\n");
      std::fflush(stdout);
      absl::Notification never;
      never.WaitForNotification();
    });
  }
  // The address file is written before the address line, so whoever read
  // the line finds the file.
  if (!address_file.empty()) {
    const std::string listen_host =
        options.listen.substr(0, options.listen.rfind(':'));
    char hostname[256] = {};
    if (gethostname(hostname, sizeof(hostname) - 1) != 0) hostname[0] = '\0';
    const std::string advertised = pskit::AdvertisedAddress(
        listen_host, (*server)->port(), absl::GetFlag(FLAGS_advertise_host),
        hostname);
    if (absl::Status s = pskit::WriteAddressFile(address_file, advertised);
        !s.ok()) {
      std::fprintf(stderr, "ps-server: --address_file: %s\n",
                   s.ToString().c_str());
      (*server)->Shutdown(absl::ZeroDuration());
      return 1;
    }
    spdlog::info("wrote {} to {}", advertised, address_file);
  }

  // The address line comes first: scripts and tests read it as line one.
  std::printf("ps-server listening on %s\n", (*server)->address().c_str());
  if ((*server)->metrics_port() != 0) {
    std::printf("ps-server metrics on %s\n", (*server)->metrics_url().c_str());
  }
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("got {}; draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s)));
  return 0;
}
