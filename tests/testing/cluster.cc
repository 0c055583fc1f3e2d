#include "tests/testing/cluster.h"

#include "common/status_macros.h"

namespace pskit::testing {

absl::StatusOr<std::unique_ptr<TestCluster>> TestCluster::Start(
    uint32_t num_shards, ServerOptions base) {
  base.num_shards = num_shards;
  auto cluster = std::unique_ptr<TestCluster>(new TestCluster(base));
  for (uint32_t i = 0; i < num_shards; ++i) {
    ServerOptions o = base;
    o.listen = "127.0.0.1:0";
    o.shard_index = i;
    PSKIT_ASSIGN_OR_RETURN(std::unique_ptr<Server> s, Server::Start(o));
    cluster->addresses_.push_back(s->address());
    cluster->servers_.push_back(std::move(s));
  }
  return cluster;
}

absl::StatusOr<std::unique_ptr<Client>> TestCluster::NewClient(
    ClientOptions options) const {
  options.chunk_elems = base_.chunk_elems;
  if (options.timeout == ClientOptions{}.timeout) {
    options.timeout = absl::Seconds(20);
  }
  return Client::Connect(addresses_, options);
}

void TestCluster::Stop(int i) {
  if (servers_[i] != nullptr) servers_[i]->Shutdown(absl::ZeroDuration());
  servers_[i].reset();
}

absl::Status TestCluster::Restart(int i) {
  Stop(i);
  ServerOptions o = base_;
  o.listen = addresses_[i];
  o.shard_index = i;
  PSKIT_ASSIGN_OR_RETURN(servers_[i], Server::Start(o));
  return absl::OkStatus();
}

}  // namespace pskit::testing
