#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"

namespace pskit {

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
  if (options.checkpoint_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "checkpoint_interval must be >= 0 (0 turns automatic checkpoints off)");
  }
  if (options.lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("lease must be positive");
  }
  const size_t colon = options.listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address '", options.listen,
        "' is not host:port (for example 127.0.0.1:0 or 0.0.0.0:7000)"));
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
  WorkerListener listener;
  listener.live = [push_window](uint64_t id) { push_window->Adopt(id); };
  listener.gone = [push_window](uint64_t id) { push_window->DropWorker(id); };
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
    absl::StatusOr<v1::CheckpointInfo> info = server->checkpoints_->LoadNewest(
        [store](const ShardSnapshot& s) { return store->Replace(s); });
    if (info.ok()) {
      server->metrics_->SetLastCheckpoint(*info);
      spdlog::info(
          "loaded checkpoint '{}' from {} in {:.2f} s: {} chunks, {:.1f} MiB, "
          "taken {:.1f} s ago",
          info->id(), options.data_dir,
          absl::ToDoubleSeconds(absl::Now() - load_start), info->chunks(),
          info->bytes() / 1048576.0,
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
  }
  server->service_ = std::make_unique<PsService>(
      server->store_.get(), server->workers_.get(),
      options.testonly_lose_answer);
  server->admin_ = std::make_unique<AdminService>(
      server->store_.get(), server->workers_.get(), server->checkpoints_.get(),
      server->checkpointer_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  ConfigureServerBuilder(options.max_message_bytes, &builder);
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
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
        MetricsEndpoint::Start(host, options.metrics_port, server->metrics_));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  spdlog::info(
      "shard {} of {} serving on {} ({}, max message {} bytes, memory limit "
      "{} MiB); {}",
      options.shard_index, options.num_shards, server->address_,
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
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  if (checkpointer_ != nullptr) {
    if (options_.checkpoint_on_shutdown) {
      // No request runs any more: this checkpoint holds every update.
      (void)checkpointer_->CheckpointNow(
          absl::StrCat("final-", absl::ToUnixMillis(absl::Now())));
    }
  }
  spdlog::info("shard {} on {} stopped", options_.shard_index, address_);
}

}  // namespace pskit
