// ps-server: one shard of a pskit cluster.
//
//   ps-server --listen 0.0.0.0:7000 --shard_index 0 --num_shards 2
//       --tls_cert shard0.pem --tls_key shard0.key --tls_ca ca.pem
//
// With --tls_cert/--tls_key the port speaks TLS (certificates re-read when
// their files change); with --tls_ca as well, clients must present a
// certificate that CA signed (mTLS).
//
// Prints "ps-server listening on HOST:PORT" on stdout once serving (scripts
// read the port from it when --listen ends in :0). With --data_dir the shard
// first loads its newest complete checkpoint. SIGTERM or SIGINT: health goes
// NOT_SERVING, in-flight calls finish, a final checkpoint is written (with
// --data_dir), exit 0.
//
// With --auth_tokens FILE every call needs a bearer token listed (hashed)
// in FILE; SIGHUP re-reads FILE (a bad file is logged and the old tokens
// stay in force).
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
ABSL_FLAG(int32_t, max_calls_per_connection, 32,
          "calls one client connection may have open at once; more wait in "
          "the client (bounds the request bytes a connection holds here)");
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
ABSL_FLAG(std::string, tls_cert, "",
          "PEM file of this shard's certificate (chain): serve TLS only. It "
          "must name the host clients dial (subjectAltName). With --tls_key. "
          "Re-read when the file changes. Empty: plaintext");
ABSL_FLAG(std::string, tls_key, "",
          "PEM file of this shard's private key (unencrypted), with "
          "--tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM file of the CA that signs client certificates: require and "
          "verify one from every client (mTLS). Needs --tls_cert");
ABSL_FLAG(double, tls_refresh_s, 60,
          "seconds between looks at the TLS files for a new version (at "
          "least 1); a rotated certificate serves new connections");
ABSL_FLAG(std::string, auth_tokens, "",
          "token file: one '<sha256 hex of a token> <reader|worker|admin> "
          "[ns1,ns2]' per line (psctl token new prints such lines); every "
          "call then needs 'authorization: Bearer <token>' with a role and "
          "namespaces that allow it. SIGHUP re-reads it. Empty: open shard");
ABSL_FLAG(bool, allow_insecure, false,
          "accept --auth_tokens on a non-loopback --listen address without "
          "TLS (tokens then travel in clear text); refused by default");
ABSL_FLAG(std::string, metrics_token_file, "",
          "file holding a token the /metrics endpoint then requires as "
          "'Authorization: Bearer <token>' (401 otherwise). Empty: open");
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
  sigaddset(&stop_signals, SIGHUP);  // re-read --auth_tokens
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
  options.max_calls_per_connection =
      absl::GetFlag(FLAGS_max_calls_per_connection);
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
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  options.tls_refresh_interval =
      absl::Seconds(absl::GetFlag(FLAGS_tls_refresh_s));
  options.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens);
  options.allow_insecure = absl::GetFlag(FLAGS_allow_insecure);
  options.metrics_token_file = absl::GetFlag(FLAGS_metrics_token_file);
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
  while (sigwait(&stop_signals, &sig) == 0 && sig == SIGHUP) {
    absl::StatusOr<size_t> n = (*server)->ReloadTokens();
    if (!n.ok()) {
      spdlog::error("SIGHUP: token file not reloaded, the old tokens stay: {}",
                    n.status().ToString());
    } else if (!options.auth_tokens_file.empty()) {
      spdlog::info("SIGHUP: reloaded {} tokens from {}", *n,
                   options.auth_tokens_file);
    }
  }
  spdlog::info("got {}; draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s)));
  return 0;
}
