#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server_builder.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/auth_token.h"
#include "common/status_macros.h"
#include "common/tls_files.h"
#include "spdlog/spdlog.h"

namespace pskit {
namespace {

// Plaintext without tls_cert; otherwise TLS from gRPC's file-watcher
// provider, which re-reads the files every tls_refresh_interval so a
// rotated certificate needs no restart; with tls_ca, client certificates
// are required and verified against it (mTLS).
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(
    const ServerOptions& options) {
  if (options.tls_cert.empty()) return grpc::InsecureServerCredentials();
  const unsigned refresh_s = static_cast<unsigned>(std::max<int64_t>(
      1, absl::ToInt64Seconds(options.tls_refresh_interval)));
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          options.tls_key, options.tls_cert, options.tls_ca, refresh_s);
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (options.tls_ca.empty()) {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    tls.watch_root_certs();
    tls.set_cert_request_type(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

// A host that only this machine can reach: tokens sent to it never cross
// a network.
bool IsLoopbackHost(absl::string_view host) {
  absl::ConsumePrefix(&host, "[");
  absl::ConsumeSuffix(&host, "]");
  if (host == "localhost") return true;
  const std::string h(host);
  in_addr v4;
  in6_addr v6;
  if (inet_pton(AF_INET, h.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;  // 127.0.0.0/8
  }
  return inet_pton(AF_INET6, h.c_str(), &v6) == 1 &&
         IN6_IS_ADDR_LOOPBACK(&v6);
}

// Tokens in clear text on a network are as good as no tokens: refuse that
// start unless the operator said --allow_insecure.
absl::Status CheckTokensNeedTls(const ServerOptions& options) {
  if (options.auth_tokens_file.empty() || !options.tls_cert.empty() ||
      options.allow_insecure) {
    return absl::OkStatus();
  }
  const absl::string_view listen = options.listen;
  // A Unix socket never leaves the machine.
  if (absl::StartsWith(listen, "unix:")) return absl::OkStatus();
  const absl::string_view host = listen.substr(0, listen.rfind(':'));
  if (IsLoopbackHost(host)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "refusing to accept tokens (--auth_tokens) on ", options.listen,
      " without TLS: anyone on the network could read them and call the "
      "shard with them. Give the shard a certificate (--tls_cert and "
      "--tls_key), listen on 127.0.0.1 only, or pass --allow_insecure if "
      "the network itself is trusted"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(
    const ServerOptions& options) {
  PSKIT_ASSIGN_OR_RETURN(Layout layout,
                         Layout::Create(options.num_shards, options.chunk_elems));
  if (options.shard_index >= options.num_shards) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shard_index ", options.shard_index, " is not below num_shards ",
        options.num_shards, "; shards are numbered from 0"));
  }
  if (options.max_message_bytes < (1 << 16)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_message_bytes ", options.max_message_bytes,
        " is too small; use at least 65536"));
  }
  if (options.max_calls_per_connection < 1 ||
      options.max_calls_per_connection > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_calls_per_connection is ", options.max_calls_per_connection,
        "; use 1 to 4096"));
  }
  if (options.checkpoint_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "checkpoint_interval must be >= 0 (0 turns automatic checkpoints off)");
  }
  if (options.lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("lease must be positive");
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert and tls_key go together: give both (the shard's "
        "certificate and key) or neither");
  }
  if (!options.tls_ca.empty() && options.tls_cert.empty()) {
    return absl::InvalidArgumentError(
        "tls_ca (verify client certificates) needs tls_cert and tls_key: "
        "client certificates are only asked for over TLS");
  }
  if (!options.tls_cert.empty()) {
    PSKIT_RETURN_IF_ERROR(CheckCertAndKeyFiles(options.tls_cert, "tls_cert",
                                               options.tls_key, "tls_key"));
  }
  if (!options.tls_ca.empty()) {
    PSKIT_RETURN_IF_ERROR(CheckCaFile(options.tls_ca, "tls_ca"));
  }
  const size_t colon = options.listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address '", options.listen,
        "' is not host:port (for example 127.0.0.1:0 or 0.0.0.0:7000)"));
  }

  if (absl::Status s = CheckTokensNeedTls(options); !s.ok()) return s;
  std::string metrics_token;
  if (!options.metrics_token_file.empty()) {
    absl::StatusOr<std::string> t = ReadTokenFile(options.metrics_token_file);
    if (!t.ok()) {
      return absl::Status(t.status().code(),
                          absl::StrCat("--metrics_token_file: ",
                                       t.status().message()));
    }
    metrics_token = *std::move(t);
  }

  uint64_t max_memory = options.max_memory_bytes;
  if (max_memory == 0) {
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page = sysconf(_SC_PAGESIZE);
    max_memory = pages > 0 && page > 0
                     ? static_cast<uint64_t>(pages) * page / 10 * 9
                     : ~uint64_t{0};
  }

  auto server = std::unique_ptr<Server>(new Server());
  server->options_ = options;
  if (options.push_window < 1 || options.push_window_bytes < (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "push_window is ", options.push_window, " calls and ",
        options.push_window_bytes,
        " bytes; give at least 1 call and 1 MiB"));
  }
  PushWindowOptions window;
  window.calls_per_worker = options.push_window;
  window.bytes_per_worker = options.push_window_bytes;
  // A restarted shard keeps a worker's loaded window as long as the worker
  // could still hold a lease: that long it may come back and retry.
  window.adopt_within = options.lease;
  window.clock = options.clock;
  server->store_ = std::make_unique<ChunkStore>(
      layout, options.shard_index, options.allow_nonfinite,
      static_cast<size_t>(options.max_message_bytes), max_memory, window);
  PushWindow* push_window = &server->store_->push_window();
  ChunkStore* store_for_listener = server->store_.get();
  // The Consistency is made below, once the metrics exist; the listener
  // reaches it through the server, which outlives the registry's calls.
  Server* const self = server.get();
  WorkerListener listener;
  listener.live = [push_window, store_for_listener, self](uint64_t id) {
    push_window->Adopt(id);
    store_for_listener->WorkerLive(id);
    if (self->consistency_ != nullptr) self->consistency_->WorkerLive(id);
  };
  listener.gone = [push_window, store_for_listener, self](uint64_t id,
                                                          bool left) {
    if (self->consistency_ != nullptr) self->consistency_->WorkerGone(id, left);
    if (left) {
      push_window->DropWorker(id);
    } else {
      push_window->Orphan(id);
    }
    // The compensation's per-worker state goes either way: a worker back
    // after a lapse pulls again before it pushes.
    store_for_listener->WorkerGone(id);
  };
  server->workers_ = std::make_unique<WorkerRegistry>(
      options.clock, options.lease, std::move(listener));
  server->metrics_ = std::make_shared<ServerMetrics>(
      options.shard_index, server->store_.get(), server->workers_.get());
  if (!options.data_dir.empty()) {
    PSKIT_ASSIGN_OR_RETURN(
        server->checkpoints_,
        CheckpointStore::Open(options.data_dir, layout, options.shard_index,
                              options.keep_checkpoints));
    const absl::Time load_start = absl::Now();
    ChunkStore* store = server->store_.get();
    // The loaded state's fingerprint, so that a shard stopped without an
    // update since writes no final checkpoint of its own (Checkpointer).
    uint64_t loaded_fingerprint = 0;
    uint64_t loaded_updates = 0;
    absl::StatusOr<v1::CheckpointInfo> info = server->checkpoints_->LoadNewest(
        [store, &loaded_fingerprint, &loaded_updates](const ShardSnapshot& s) {
          loaded_fingerprint = Checkpointer::Fingerprint(s);
          loaded_updates = s.updates_applied;
          return store->Replace(s);
        });
    if (info.ok()) {
      server->metrics_->SetLastCheckpoint(*info);
      // The update count tells an operator (and tests/kill_loop.sh) how
      // many updates a crash lost: the count before it minus this one.
      spdlog::info(
          "loaded checkpoint '{}' from {} in {:.2f} s: {} chunks, {:.1f} MiB, "
          "{} updates applied, taken {:.1f} s ago",
          info->id(), options.data_dir,
          absl::ToDoubleSeconds(absl::Now() - load_start), info->chunks(),
          info->bytes() / 1048576.0, loaded_updates,
          absl::ToDoubleSeconds(absl::Now() -
                                absl::FromUnixMillis(info->time_unix_ms())));
    } else if (info.status().code() == absl::StatusCode::kNotFound) {
      spdlog::info("no loadable checkpoint in {}; starting empty",
                   options.data_dir);
    } else {
      return info.status();
    }
    server->checkpointer_ = std::make_unique<Checkpointer>(
        server->store_.get(), server->checkpoints_.get(), options.clock,
        options.checkpoint_interval,
        [metrics = server->metrics_.get()](
            const absl::StatusOr<v1::CheckpointInfo>& result) {
          metrics->RecordCheckpoint(result);
        });
    if (info.ok()) {
      server->checkpointer_->NoteLoaded(info->id(), loaded_fingerprint);
    }
  }
  if (options.auth_tokens_file.empty()) {
    server->gate_ = std::make_unique<Gate>(server->metrics_.get(),
                                           server->workers_.get());
  } else {
    absl::StatusOr<std::unique_ptr<Gate>> gate = Gate::WithTokens(
        options.auth_tokens_file, server->metrics_.get(),
        server->workers_.get());
    if (!gate.ok()) {
      return absl::Status(gate.status().code(),
                          absl::StrCat("--auth_tokens: ",
                                       gate.status().message()));
    }
    server->gate_ = *std::move(gate);
  }
  server->consistency_ = std::make_unique<Consistency>(
      server->store_.get(), server->metrics_.get(), options.clock);
  server->service_ = std::make_unique<PsService>(
      server->store_.get(), server->workers_.get(), server->gate_.get(),
      options.testonly_lose_answer, server->consistency_.get());
  server->admin_ = std::make_unique<AdminService>(
      server->store_.get(), server->workers_.get(), server->checkpoints_.get(),
      server->checkpointer_.get(), server->gate_.get(),
      server->consistency_.get());

  // Health and reflection stay outside the gate: probes carry no token, and
  // reflection serves only the .proto schema (public in the repository);
  // every call it helps a tool such as grpcurl make still passes the gate.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  ConfigureServerBuilder(options.max_message_bytes, &builder);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             options.max_calls_per_connection);
  builder.AddListeningPort(options.listen, ServerCredentials(options),
                           &server->port_);
  builder.RegisterService(server->service_.get());
  builder.RegisterService(server->admin_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(server->metrics_->InterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.listen,
        ": the port is in use or the host is not an address of this machine"));
  }
  server->address_ =
      absl::StrCat(options.listen.substr(0, colon), ":", server->port_);
  if (options.metrics_port >= 0) {
    const std::string host = options.metrics_host.empty()
                                 ? options.listen.substr(0, colon)
                                 : options.metrics_host;
    PSKIT_ASSIGN_OR_RETURN(
        server->metrics_endpoint_,
        MetricsEndpoint::Start(host, options.metrics_port, server->metrics_,
                               metrics_token));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  spdlog::info(
      "shard {} of {} serving on {} with {} ({}, max message {} bytes, "
      "memory limit {} MiB); {}",
      options.shard_index, options.num_shards, server->address_,
      options.tls_cert.empty() ? std::string("plaintext (no TLS)")
      : options.tls_ca.empty()
          ? "TLS (certificate " + options.tls_cert + ")"
          : "mTLS (certificate " + options.tls_cert +
                ", client certificates verified against " + options.tls_ca +
                ")",
      layout.ToString(), options.max_message_bytes, max_memory >> 20,
      options.data_dir.empty()
          ? std::string("memory only: state is lost when the process ends")
          : "checkpoints in " + options.data_dir);
  return server;
}

Server::~Server() { Shutdown(absl::ZeroDuration()); }

int Server::metrics_port() const {
  return metrics_endpoint_ == nullptr ? 0 : metrics_endpoint_->port();
}

std::string Server::metrics_url() const {
  return metrics_endpoint_ == nullptr ? "" : metrics_endpoint_->url();
}

void Server::Shutdown(absl::Duration grace) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  server_->GetHealthCheckService()->SetServingStatus(false);
  // The checkpointer stops first: it finishes the job in hand and answers
  // queued Checkpoint/Restore calls UNAVAILABLE, so gRPC's Shutdown has no
  // parked call to wait for (it would wait for every queued checkpoint).
  if (checkpointer_ != nullptr) checkpointer_->Stop();
  // Held ssp/sync calls are answered UNAVAILABLE now (and later ones at
  // once), so gRPC's Shutdown has none to wait for.
  consistency_->Shutdown();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  if (checkpointer_ != nullptr) {
    if (options_.checkpoint_on_shutdown) {
      // No request runs any more: this checkpoint holds every update. None
      // is taken when nothing changed since the newest one, so a shared id
      // a coordinated shutdown took on every shard stays the newest.
      (void)checkpointer_->FinalCheckpoint(
          absl::StrCat("final-", absl::ToUnixMillis(absl::Now())));
    }
  }
  spdlog::info("shard {} on {} stopped", options_.shard_index, address_);
}

}  // namespace pskit
