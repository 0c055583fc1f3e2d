// server/server.h
//
// Server: one running shard (ChunkStore + WorkerRegistry + PsService) behind
// a gRPC server with health checking and reflection. ps-server's main() is a
// thin wrapper around Server::Start and Server::Shutdown; tests start shards
// in-process the same way.
//
// Example:
//   ServerOptions opts;
//   opts.listen = "127.0.0.1:0";
//   PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Server> s, Server::Start(opts));
//   std::cout << "listening on " << s->address() << "\n";
//   ...
//   s->Shutdown(absl::Seconds(10));
//
// Thread safety: Start and Shutdown from one thread; accessors from any.
#ifndef PSKIT_SERVER_SERVER_H_
#define PSKIT_SERVER_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/grpc_options.h"
#include "common/layout.h"
#include "server/admin_service.h"
#include "server/checkpoint_store.h"
#include "server/checkpointer.h"
#include "server/chunk_store.h"
#include "server/consistency.h"
#include "server/gate.h"
#include "server/ps_service.h"
#include "server/server_metrics.h"
#include "common/metrics.h"
#include "server/worker_registry.h"

namespace pskit {

struct ServerOptions {
  // host:port to listen on; port 0 picks a free port (read it back with
  // address()). Default: 127.0.0.1:0. Fixed for the server's life.
  std::string listen = "127.0.0.1:0";
  // This shard's index in [0, num_shards). Default: 0.
  uint32_t shard_index = 0;
  // Shards in the cluster. Every client and shard must agree. Default: 1.
  uint32_t num_shards = 1;
  // Maximum floats per chunk (see common/layout.h). Smaller chunks spread
  // small models better and pipeline finer, at more per-chunk overhead.
  // Default: 262144 (1 MiB).
  uint32_t chunk_elems = kDefaultChunkElems;
  // Largest gRPC message received or sent; larger requests get
  // RESOURCE_EXHAUSTED. Default: 64 MiB.
  int max_message_bytes = kDefaultMaxMessageBytes;
  // Calls one client connection may have open at once (HTTP/2
  // MAX_CONCURRENT_STREAMS); further calls wait in the client's queue, not
  // in the shard. With max_message_bytes it bounds the request bytes one
  // connection can make the shard hold at once; pskit's Client keeps far
  // fewer open (ClientOptions::max_in_flight_per_shard). Default: 32.
  int max_calls_per_connection = 32;
  // Accept NaN and Inf in gradients and values. Default: false (rejected
  // with INVALID_ARGUMENT, so one diverged worker cannot poison the model).
  bool allow_nonfinite = false;
  // Values plus optimizer slots the shard may hold; a Declare past it gets
  // RESOURCE_EXHAUSTED instead of the process being killed for memory.
  // 0 means 90% of the machine's physical memory. Default: 0.
  uint64_t max_memory_bytes = 0;
  // How long a worker's lease lasts without a heartbeat. Default: 30 s.
  absl::Duration lease = absl::Seconds(30);
  // Exactly-once (server/push_window.h): Push/PushPull/Exchange calls
  // remembered per registered worker, and bytes of their answers, so a
  // retried call is answered instead of applied again. A retry older than
  // the window is refused (FAILED_PRECONDITION). Larger windows cost memory
  // (~40 bytes a chunk; an Exchange keeps its diffs); a client retries only
  // calls in flight, so a window needs to cover those. Default: 1024 calls,
  // 256 MiB.
  uint32_t push_window = 1024;
  uint64_t push_window_bytes = uint64_t{256} << 20;
  // Directory of this shard's RocksDB checkpoint database; created if
  // missing. Empty: memory-only (state is lost when the process ends).
  // Default: empty.
  std::string data_dir;
  // Seconds between automatic checkpoints; 0 = none. Only with data_dir.
  // Default: 60 s.
  absl::Duration checkpoint_interval = absl::Seconds(60);
  // Checkpoints kept; older ones are deleted. Default: 3.
  int keep_checkpoints = 3;
  // Take a final checkpoint in Shutdown (with data_dir), "final-<unix ms>",
  // unless the state is exactly that of the newest checkpoint (a shared one
  // a coordinated shutdown took on every shard stays the newest then).
  // Default: true.
  bool checkpoint_on_shutdown = true;
  // Port of the Prometheus endpoint (http://metrics_host:PORT/metrics);
  // 0 picks a free one (read it back with metrics_port()), -1 serves none.
  // Default: -1.
  int metrics_port = -1;
  // Address the metrics endpoint binds; empty: the host of `listen`.
  // Default: empty.
  std::string metrics_host;
  // TLS: PEM files of this shard's certificate (chain) and its unencrypted
  // private key; both or neither. With them the port speaks only TLS (the
  // health service included); clients verify the certificate against their
  // --tls_ca, so it must name the host they dial (subjectAltName). Empty:
  // plaintext, for loopback and trusted networks only. Default: empty.
  std::string tls_cert;
  std::string tls_key;
  // PEM file of the CA whose certificates clients must present (mTLS): a
  // client without one, or with one of another CA, fails the handshake.
  // Needs tls_cert. Empty: no client certificate asked for. Default: empty.
  std::string tls_ca;
  // How often the three files are looked at for a new version (gRPC's
  // file-watcher provider; its minimum is 1 s): a rotated certificate is
  // served to new connections without a restart; open connections keep the
  // one they started with. Default: 60 s.
  absl::Duration tls_refresh_interval = absl::Seconds(60);
  // Token file (common/auth_token.h: "<sha256 hex> <role> [ns,...]" per
  // line): every call of ParameterServer and Admin then needs a bearer token
  // from it, with a role and namespaces that allow the call (server/gate.h).
  // Read at Start (a bad file refuses the start, naming file and line) and
  // again by ReloadTokens (ps-server: on SIGHUP). Empty: the shard is open
  // to anyone who reaches its port. Default: empty.
  std::string auth_tokens_file;
  // With auth_tokens_file, listen on a non-loopback address without TLS
  // anyway (tokens then cross the network in clear text: anyone on the path
  // can read and replay them). Default: false, and such a start is refused.
  bool allow_insecure = false;
  // File holding the token the metrics endpoint requires as
  // "Authorization: Bearer <token>" (401 without it). Empty: the endpoint is
  // open. Default: empty.
  std::string metrics_token_file;
  // Tests only: called after each Push, PushPull or Exchange that succeeded
  // (applied, or answered from the exactly-once window) with the method's
  // name; true answers UNAVAILABLE instead, as if the connection broke
  // after the shard applied the call. Default: none.
  std::function<bool(absl::string_view method)> testonly_lose_answer;
  // Source of time for leases and automatic checkpoints (their slots and
  // ids); borrowed, must outlive the server.
  // Default: the system clock.
  Clock* clock = SystemClock();
};

class Server {
 public:
  // Binds, starts serving and marks the health service SERVING.
  // INVALID_ARGUMENT for bad options; UNAVAILABLE when the address cannot be
  // bound (in use, or not an address of this host).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Server>> Start(
      const ServerOptions& options);

  // Re-reads auth_tokens_file; on error the tokens in force stay and the
  // error is returned (INVALID_ARGUMENT naming file and line). Returns the
  // number of tokens now in force (0 and OK without a token file).
  [[nodiscard]] absl::StatusOr<size_t> ReloadTokens() {
    return gate_->Reload();
  }

  // Shuts down if still running.
  ~Server();

  // The bound address, host:port, with the real port.
  const std::string& address() const { return address_; }
  int port() const { return port_; }
  // The metrics endpoint's port and URL; 0 and "" without one.
  int metrics_port() const;
  std::string metrics_url() const;
  ChunkStore& store() { return *store_; }
  // The held ssp/sync calls (server/consistency.h).
  Consistency& consistency() { return *consistency_; }
  // Null for a memory-only shard.
  CheckpointStore* checkpoints() { return checkpoints_.get(); }

  // Marks health NOT_SERVING, stops accepting calls, lets in-flight calls
  // finish for up to `grace`, cancels the rest, then (with a data_dir)
  // writes a final checkpoint. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  Server() = default;

  ServerOptions options_;
  std::string address_;
  int port_ = 0;
  std::unique_ptr<ChunkStore> store_;
  std::unique_ptr<WorkerRegistry> workers_;
  // Outlives server_ (its interceptor factory) and the endpoint (scrapes).
  std::shared_ptr<ServerMetrics> metrics_;
  std::unique_ptr<CheckpointStore> checkpoints_;
  std::unique_ptr<Checkpointer> checkpointer_;
  std::unique_ptr<Gate> gate_;
  // Outlives server_: parked calls' cancel hooks point at it.
  std::unique_ptr<Consistency> consistency_;
  std::unique_ptr<PsService> service_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;  // destroyed first
  bool shut_down_ = false;
};

}  // namespace pskit

#endif  // PSKIT_SERVER_SERVER_H_
